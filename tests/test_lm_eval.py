"""The ``lm-eval`` judge: lm-evaluation-harness tasks on every checkpoint of a real run, cached, and
equal to what lm-eval itself reports for the same model and adapter."""

import json
from pathlib import Path

import pytest

from .conftest import run_cli

MC_DATA = [{"q": f"{a} + {b} =", "choices": [str(a + b), str(a + b + 1), str(a * b + 3)], "answer": 0}
           for a, b in [(1, 2), (3, 4), (2, 2), (5, 1), (6, 3), (4, 4)]]
GEN_DATA = [{"q": f"def f(): return {n}\n# f() ==", "a": str(n)} for n in (1, 2, 3, 4)]
MC_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{q}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""
GEN_YAML = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{q}}}}"
doc_to_target: "{{{{a}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
metric_list:
  - metric: exact_match
"""
SPEC = """
[run]
name = "bench"
mode = "online"
iterations = 2
output_dir = "runs"
cache_dir = "cache"

[task]
plugin = "synthetic-codegen"
n_train = 8
n_eval = 4
levels = [1]

[teacher]
plugin = "reference"

[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
learning_rate = 3e-3
epochs = 1
batch_size = 4
loss = ["sigmoid", "sft"]
max_length = 96
max_new_tokens = 16
chat_template = false

[[judges]]
plugin = "lm-eval"
tasks = ["tasks/mc.yaml", "tasks/gen.yaml"]
"""
# Loaded at start-up where LM_EVAL_CALLS is set: every lm_eval.simple_evaluate call is a line in that file.
COUNTER = """
import os

if os.environ.get("LM_EVAL_CALLS"):
    import lm_eval

    _real = lm_eval.simple_evaluate

    def simple_evaluate(*args, **kwargs):
        with open(os.environ["LM_EVAL_CALLS"], "a") as fh:
            fh.write(str(kwargs["model_args"].get("peft", "base")) + "\\n")
        return _real(*args, **kwargs)

    lm_eval.simple_evaluate = simple_evaluate
"""
COLUMNS = ("lm-eval/tiny_mc/acc", "lm-eval/tiny_gen/exact_match")
CHECKPOINTS = ("student@base", "student@iter_1", "student@iter_2")


def write_tasks(folder: Path) -> None:
    folder.mkdir()
    for name, data, yaml in (("mc", MC_DATA, MC_YAML), ("gen", GEN_DATA, GEN_YAML)):
        (folder / f"{name}.json").write_text(json.dumps(data))
        (folder / f"{name}.yaml").write_text(yaml.format(data=folder / f"{name}.json"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    home = tmp_path_factory.mktemp("lm-eval")
    write_tasks(home / "tasks")
    (home / "bench.toml").write_text(SPEC)
    (home / "site").mkdir()
    (home / "site" / "sitecustomize.py").write_text(COUNTER)
    calls = home / "calls.txt"
    env = {"PYTHONPATH": str(home / "site"), "LM_EVAL_CALLS": str(calls)}
    out = run_cli("run", "bench.toml", cwd=home, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "not a git repository" not in out.stderr  # lm-eval's `git describe`, outside a repository
    return home, home / "runs" / "bench", env, calls


def board(home: Path, run_dir: Path) -> dict[str, dict]:
    out = run_cli("leaderboard", str(run_dir), "--format", "json", cwd=home)
    assert out.returncode == 0, out.stderr
    return {r["system"]: r for r in json.loads(out.stdout)}


def test_every_checkpoint_has_each_tasks_metric_with_an_interval_and_a_rerun_calls_lm_eval_no_more(run):
    home, run_dir, env, calls = run
    adapters = calls.read_text().splitlines()
    assert adapters == ["base", str(run_dir / "iter_1" / "adapter"), str(run_dir / "iter_2" / "adapter")]
    rows = board(home, run_dir)
    for system in CHECKPOINTS:
        for column in COLUMNS:
            value, (low, high) = rows[system][column], rows[system][f"{column}_ci"]
            assert 0 <= low <= value <= high <= 1
    assert rows["student@base"]["lm-eval/tiny_mc/acc_n"] == len(MC_DATA)
    assert rows["teacher"].get(COLUMNS[0]) is None  # an API system has no weights to evaluate
    assert rows["student@iter_2"]["vs_prev"]["metric"] in COLUMNS  # paired Δ from lm-eval's per-sample results
    outcomes = [json.loads(line) for line in (run_dir / "eval" / "lm-eval-student@iter_1.jsonl").read_text().splitlines()]
    assert {o["example_id"] for o in outcomes} == {f"tiny_mc/{i}" for i in range(6)} | {f"tiny_gen/{i}" for i in range(4)}
    assert all(isinstance(o["value"], bool) for o in outcomes)

    (run_dir / "results.json").unlink()  # evaluate again: every result comes from the cache
    again = run_cli("run", "bench.toml", cwd=home, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert calls.read_text().splitlines() == adapters
    assert board(home, run_dir) == rows


def test_a_checkpoints_numbers_are_lm_evals_own(run):
    import lm_eval
    from lm_eval.tasks import TaskManager

    home, run_dir, _, _ = run
    [model] = (home / "cache" / "models").glob("tiny-*")
    adapter = run_dir / "iter_2" / "adapter"
    direct = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model},dtype=float32,peft={adapter},device=cpu",
                                     tasks=["tiny_mc", "tiny_gen"], log_samples=True,
                                     task_manager=TaskManager(include_path=str(home / "tasks"), include_defaults=False))
    scores = {s["metric"]: s for s in json.loads((run_dir / "results.json").read_text())["scores"]
              if s["system"] == "student@iter_2" and s["judge"] == "lm-eval"}
    outcomes = [json.loads(line) for line in (run_dir / "eval" / "lm-eval-student@iter_2.jsonl").read_text().splitlines()]
    for task, metric in (("tiny_mc", "acc"), ("tiny_gen", "exact_match")):
        ours = scores[f"lm-eval/{task}/{metric}"]
        assert ours["value"] == direct["results"][task][f"{metric},none"]
        assert ours["details"]["stderr"] == direct["results"][task][f"{metric}_stderr,none"]
        per_doc = {f"{task}/{s['doc_id']}": bool(s[metric]) for s in direct["samples"][task]}
        assert {o["example_id"]: o["value"] for o in outcomes if o["example_id"].startswith(task)} == per_doc


def test_an_unknown_task_or_a_broken_yaml_is_refused_at_validate_naming_it(tmp_path):
    write_tasks(tmp_path / "tasks")
    (tmp_path / "tasks" / "broken.yaml").write_text("task: broken\ndoc_to_text: [unclosed\n")
    for name, tasks in (("unknown", '["hellaswag", "hellaswagg"]'), ("broken", '["tasks/mc.yaml", "tasks/broken.yaml"]')):
        (tmp_path / f"{name}.toml").write_text(SPEC.replace('["tasks/mc.yaml", "tasks/gen.yaml"]', tasks))
    out = run_cli("validate", "unknown.toml", "broken.toml", cwd=tmp_path)
    assert out.returncode == 2
    assert "judges[0].tasks" in out.stderr
    assert "unknown lm-eval task 'hellaswagg'; did you mean 'hellaswag'?" in " ".join(out.stderr.split())
    assert "'tasks/broken.yaml'" in out.stderr and "not a task YAML" in out.stderr
    assert "'tasks/mc.yaml'" not in out.stderr
