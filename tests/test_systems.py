"""[[systems]] and eval-only runs: any student or teacher plugin judged beside (or instead of) a run's own.

A small online run trains two tiny checkpoints with an API model (the loopback server) judged beside
them; an eval-only spec then scores those checkpoints, the reference teacher and the API model, and
replays offline with the server stopped.
"""

import json
from pathlib import Path

import pytest

from dpokd.plugins.tasks.synthetic import SyntheticCodegen
from dpokd.spec import load_spec
from dpokd.testing import LoopbackServer

from .conftest import ROOT, run_cli
from .runs_on_disk import rewrite_tensors

TASK = dict(n_train=16, n_eval=8, levels=[1], seed=3)
TASK_TOML = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TASK.items())
# The student's options: an adapter judged as a system loads onto the same model, and answers the same.
STUDENT = """model = "dpokd:tiny"
learning_rate = 1e-3
lora_alpha = 64
epochs = 2
batch_size = 4
loss = ["sigmoid", "sft"]
max_length = 96
max_new_tokens = 24
gen_batch_size = 16"""
JUDGE_PROMPT = "[User Question]"


def api_system(url: str, name: str = "api-coder") -> str:
    return f'[[systems]]\nname = "{name}"\nplugin = "litellm"\nmodel = "openai/loopback-coder"\napi_base = "{url}"\n'


@pytest.fixture(scope="module")
def server():
    """An API model that solves every problem, and an LLM judge that always prefers the first answer."""
    task = SyntheticCodegen(SyntheticCodegen.Options(**TASK))
    answers = {e.prompt: e.reference for split in ("train", "eval") for e in task.examples(split)}

    def respond(body):
        prompt = body["messages"][-1]["content"]
        return "A looks better. [[A]]" if prompt.startswith(JUDGE_PROMPT) else answers[prompt]

    with LoopbackServer(respond) as s:
        yield s


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    """An online run of two iterations with an API model in [[systems]]: its directory."""
    home = tmp_path_factory.mktemp("trained")
    spec = home / "trained.toml"
    spec.write_text(f"""
[run]
name = "trained"
mode = "online"
iterations = 2
output_dir = "runs"
cache_dir = "cache"

[task]
plugin = "synthetic-codegen"
{TASK_TOML}

[teacher]
plugin = "reference"

[student]
plugin = "hf-qlora"
{STUDENT}

{api_system(server.url)}

[[judges]]
plugin = "execution"

[[judges]]
plugin = "teacher-likelihood"
""")
    out = run_cli("run", str(spec))
    assert out.returncode == 0, out.stderr[-3000:]
    return home / "runs" / "trained"


def eval_spec(home: Path, run_dir: Path, url: str, cache: str = "cache") -> Path:
    spec = home / "scoreboard.toml"
    spec.write_text(f"""
[run]
name = "scoreboard"
mode = "eval"
output_dir = "runs"
cache_dir = "{cache}"

[task]
plugin = "synthetic-codegen"
{TASK_TOML}

[[systems]]
name = "tiny-iter1"
plugin = "hf-qlora"
adapter = "{run_dir / 'iter_1' / 'adapter'}"
{STUDENT}

[[systems]]
name = "tiny-iter2"
plugin = "hf-qlora"
adapter = "{run_dir / 'iter_2' / 'adapter'}"
{STUDENT}

[[systems]]
name = "reference"
plugin = "reference"

{api_system(url)}

[[judges]]
plugin = "execution"

[[judges]]
plugin = "teacher-likelihood"
teacher = "reference"

[[judges]]
plugin = "llm-pairwise"
model = "openai/loopback-judge"
api_base = "{url}"
baseline = "reference"
""")
    return spec


def board(run_dir: Path) -> dict[str, dict]:
    out = run_cli("leaderboard", str(run_dir), "--format", "json")
    assert out.returncode == 0, out.stderr
    return {r["system"]: r for r in json.loads(out.stdout)}


def scores(run_dir: Path) -> dict:
    data = json.loads((run_dir / "results.json").read_text())
    return {(s["judge"], s["system"], s["metric"]): s["value"] for s in data["scores"]}


# -- the spec ---------------------------------------------------------------------------------------

def test_broken_systems_are_all_reported_with_their_field_paths(tmp_path, cli):
    spec = tmp_path / "broken.toml"
    spec.write_text(f"""
[run]
mode = "eval"
[task]
plugin = "synthetic-codegen"
[[systems]]
name = "twin"
plugin = "reference"
[[systems]]
name = "twin"
plugin = "reference"
[[systems]]
name = "typo"
plugin = "hf-qlor"
[[systems]]
name = "api"
plugin = "litellm"
model = "openai/x"
adapter = "{tmp_path}"
[[systems]]
name = "file"
plugin = "hf-qlora"
model = "dpokd:tiny"
adapter = "broken.toml"
[[systems]]
name = "student@iter_1"
plugin = "reference"
[[judges]]
plugin = "execution"
""")
    out = cli("validate", str(spec))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr + out.stdout
    lines = [line for line in out.stderr.splitlines() if str(spec) in line]
    expected = [
        "systems[1].name: 'twin' is already the name of systems[0]",
        "systems[2].plugin: unknown student or teacher plugin 'hf-qlor'; did you mean 'hf-qlora'?",
        "systems[3].adapter: unknown key",
        "systems[4].adapter: " + repr(str(spec)) + " is not a directory",
        "systems[5].name: 'student@iter_1' is the name of one of the run's own systems",
    ]
    assert len(lines) == len(expected)
    for line, fragment in zip(lines, expected):
        assert fragment in line
    assert "'adapter' is an option of the student plugin 'hf-qlora', and 'litellm' is a teacher plugin" in lines[2]


def test_an_adapter_that_holds_no_weights_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    spec = tmp_path / "s.toml"
    spec.write_text('[run]\nmode = "eval"\n[task]\nplugin = "synthetic-codegen"\n'
                    '[[systems]]\nname = "x"\nplugin = "hf-qlora"\nadapter = "empty"\n')
    with pytest.raises(Exception) as info:
        load_spec(spec)
    assert f"systems[0].adapter: '{tmp_path / 'empty'}' holds no adapter_model.safetensors" in str(info.value)


def test_an_adapter_another_spec_trains_is_a_note_to_validate_and_plan_and_an_error_to_run(tmp_path, cli):
    # A fresh clone: specs/humaneval_eval.toml judges the adapter specs/codegen_offline.toml has not trained yet.
    spec = tmp_path / "specs" / "humaneval_eval.toml"
    spec.parent.mkdir()
    spec.write_text((ROOT / "specs" / "humaneval_eval.toml").read_text())
    adapter = repr(str(tmp_path / "runs" / "codegen-offline" / "iter_1" / "adapter"))
    note = f"note {spec}: systems[1].adapter: {adapter} does not exist yet; `dpokd run` needs it"
    for command in ("validate", "plan"):
        out = cli(command, str(spec), cwd=tmp_path, env={"COLUMNS": "400"})
        assert out.returncode == 0, out.stderr
        assert note in out.stderr, command
        assert command == "plan" or f"ok {spec}" in out.stdout

    out = cli("run", str(spec), "--offline", cwd=tmp_path, env={"COLUMNS": "400"})
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert f"error: {spec}: systems[1].adapter: {adapter} does not exist; point it at a trained adapter" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["specs"]  # refused before anything was made


def test_eval_spec_needs_no_teacher_or_student_but_a_system(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[run]\nmode = "eval"\n[task]\nplugin = "synthetic-codegen"\n'
                    '[[systems]]\nname = "ref"\nplugin = "reference"\n')
    loaded = load_spec(spec)
    assert loaded.teacher is None and loaded.student is None
    assert [(s.name, s.kind, s.field) for s in loaded.systems] == [("ref", "teacher", "systems[0]")]
    assert loaded.resolved()["systems"] == [{"name": "ref", "plugin": "reference"}]
    assert "teacher" not in loaded.resolved()

    spec.write_text('[run]\nmode = "eval"\n[task]\nplugin = "synthetic-codegen"\n')
    with pytest.raises(Exception, match=r"\[\[systems\]\]: an eval run judges its \[\[systems\]\]"):
        load_spec(spec)
    # Outside eval mode the teacher and student stay required.
    spec.write_text('[task]\nplugin = "synthetic-codegen"\n[[systems]]\nname = "ref"\nplugin = "reference"\n')
    with pytest.raises(Exception, match=r"\[teacher\]: missing table"):
        load_spec(spec)


def test_a_pairwise_baseline_may_name_a_system_and_only_a_system(tmp_path, cli):
    spec = tmp_path / "s.toml"
    text = ('[run]\nmode = "eval"\noutput_dir = "runs"\n[task]\nplugin = "synthetic-codegen"\nn_train = 4\nn_eval = 2\n'
            '[[systems]]\nname = "ref"\nplugin = "reference"\n'
            '[[judges]]\nplugin = "llm-pairwise"\nmodel = "openai/j"\napi_base = "http://127.0.0.1:9/v1"\n'
            'baseline = "{}"\n')
    spec.write_text(text.format("student@base"))
    out = cli("run", str(spec))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "judges[0].baseline: 'student@base' is not a system of this run; the systems are ref" in out.stderr
    assert not (tmp_path / "runs").exists()  # refused before the run directory was made


def test_plan_of_an_eval_spec_counts_the_api_systems_requests(tmp_path, cli):
    spec = tmp_path / "s.toml"
    spec.write_text('[run]\nmode = "eval"\n[task]\nplugin = "synthetic-codegen"\nn_train = 4\nn_eval = 3\n'
                    '[[systems]]\nname = "ref"\nplugin = "reference"\n'
                    + api_system("http://127.0.0.1:9/v1") + '[[judges]]\nplugin = "execution"\n')
    out = cli("plan", str(spec), "--format", "json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert [(r["stage"], r["what"], r["requests"]) for r in plan["requests"]] == [
        ("evaluate", "systems[1]: judges[0] (execution)", 3)]
    assert plan["student"] is None


# -- runs -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_systems_beside_a_run_are_judged_by_the_same_judges(trained):
    rows = board(trained)
    assert list(rows) == ["teacher", "student@base", "student@iter_1", "student@iter_2", "api-coder"]
    assert rows["api-coder"]["pass@1"] == 1.0  # the loopback model answers every problem correctly
    got = scores(trained)
    assert {s for j, s, m in got if (j, m) == ("execution", "pass@1")} == set(rows)
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["spec"]["systems"][0]["name"] == "api-coder"


@pytest.mark.slow
def test_eval_run_scores_checkpoints_teacher_and_api_model_and_replays_offline(trained, tmp_path):
    # A server of its own, so that stopping it proves the replay needs none.
    task = SyntheticCodegen(SyntheticCodegen.Options(**TASK))
    answers = {e.prompt: e.reference for e in task.examples("eval")}
    with LoopbackServer(lambda b: "[[A]]" if b["messages"][-1]["content"].startswith(JUDGE_PROMPT)
                        else answers[b["messages"][-1]["content"]]) as server:
        spec = eval_spec(tmp_path, trained, server.url)
        out = run_cli("run", str(spec))
        assert out.returncode == 0, out.stderr[-3000:]
        # 8 answers from the API model, then each of 3 systems against the reference in both orders.
        asked = len(server.requests)
        assert asked == TASK["n_eval"] + 3 * TASK["n_eval"] * 2
    run_dir = tmp_path / "runs" / "scoreboard"
    rows = board(run_dir)
    assert list(rows) == ["tiny-iter1", "tiny-iter2", "reference", "api-coder"]
    assert rows["reference"]["pass@1"] == rows["api-coder"]["pass@1"] == 1.0
    # An adapter judged as a system answers as the checkpoint did in the run that trained it.
    run_rows = board(trained)
    for k in (1, 2):
        assert rows[f"tiny-iter{k}"]["pass@1"] == run_rows[f"student@iter_{k}"]["pass@1"]
        # (A model that went through training computes its forward a little differently.)
        assert rows[f"tiny-iter{k}"]["teacher_nll"] == pytest.approx(run_rows[f"student@iter_{k}"]["teacher_nll"],
                                                                    rel=1e-3)
    assert {s for (j, s, m) in scores(run_dir) if m == "win_rate"} == {"tiny-iter1", "tiny-iter2", "api-coder"}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["data"]["eval"]["examples"] == TASK["n_eval"]  # an eval run records its data too
    state = json.loads((run_dir / "state.json").read_text())["finished"]
    assert state[:2] == ["prepare", "evaluate"] and not any(s.startswith("iter_") or s == "teacher" for s in state)
    before = scores(run_dir)

    # The server is gone: --offline --fresh evaluates again from the cache alone, to the same numbers.
    again = run_cli("run", str(spec), "--offline", "--fresh", fresh=True)  # another interpreter, another hash seed
    assert again.returncode == 0, again.stderr[-3000:]
    assert scores(run_dir) == before
    assert len(server.requests) == asked


def test_a_runs_adapter_changed_since_training_is_refused_as_a_system(trained, tmp_path):
    """An eval spec pointing at a run's iter_K/adapter checks the checksums its train stage recorded."""
    import shutil

    copy = tmp_path / "iter_1"
    copy.mkdir()
    shutil.copytree(trained / "iter_1" / "adapter", copy / "adapter")
    shutil.copy(trained / "iter_1" / "adapter.sha256", copy)
    weights = copy / "adapter" / "adapter_model.safetensors"
    rewrite_tensors(weights, bytes)  # zeroed: finite, and the base model's
    spec = tmp_path / "s.toml"
    spec.write_text(f'[run]\nmode = "eval"\noutput_dir = "runs"\n[task]\nplugin = "synthetic-codegen"\n{TASK_TOML}\n'
                    f'[[systems]]\nname = "tiny-iter1"\nplugin = "hf-qlora"\nadapter = "{copy / "adapter"}"\n{STUDENT}\n'
                    '[[judges]]\nplugin = "teacher-likelihood"\nteacher = "tiny-iter1"\n')
    out = run_cli("run", str(spec))
    message = " ".join(out.stderr.split())
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"{weights}: has changed since its train stage saved it" in message and "Traceback" not in message


@pytest.mark.slow
def test_one_student_system_is_in_memory_at_a_time(trained, tmp_path):
    from dpokd.engine import Engine

    spec = tmp_path / "two.toml"
    spec.write_text(f"""
[run]
name = "two"
mode = "eval"
output_dir = "runs"
cache_dir = "{trained.parent.parent / 'cache'}"
[task]
plugin = "synthetic-codegen"
{TASK_TOML}
[[systems]]
name = "a"
plugin = "hf-qlora"
adapter = "{trained / 'iter_1' / 'adapter'}"
{STUDENT}
[[systems]]
name = "b"
plugin = "hf-qlora"
adapter = "{trained / 'iter_2' / 'adapter'}"
{STUDENT}
[[judges]]
plugin = "execution"
""")
    engine = Engine(load_spec(spec))
    a, b = engine.extra["a"], engine.extra["b"]
    loaded = []  # which students hold a model whenever one loads
    for student in (a, b):
        ensure = student._ensure_model

        def watched(ensure=ensure):
            model = ensure()
            loaded.append({name for name, s in (("a", a), ("b", b)) if s.model is not None})
            return model

        student._ensure_model = watched
    engine.execute()
    assert {"a"} in loaded and {"b"} in loaded
    assert all(len(held) == 1 for held in loaded), loaded
