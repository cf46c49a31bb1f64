"""End to end: a litellm teacher on the loopback server, offline then online; kill, resume, replay."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpokd.plugins.tasks.synthetic import SyntheticCodegen
from dpokd.testing import LoopbackServer

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

TASK = dict(n_train=16, n_eval=8, levels=[1], seed=3)


def spec_text(server_url: str, *, name: str, mode: str, iterations: int, cache: str) -> str:
    return f"""
[run]
name = "{name}"
mode = "{mode}"
iterations = {iterations}
seed = 0
output_dir = "runs"
cache_dir = "{cache}"

[task]
plugin = "synthetic-codegen"
n_train = {TASK['n_train']}
n_eval = {TASK['n_eval']}
levels = {TASK['levels']}
seed = {TASK['seed']}

[teacher]
plugin = "litellm"
model = "openai/loopback-teacher"
api_base = "{server_url}"
max_concurrency = 4

[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
learning_rate = 1e-3
lora_alpha = 64
epochs = 2
batch_size = 4
loss = ["sigmoid", "sft"]
max_length = 96
max_new_tokens = 24
gen_batch_size = 16

[[judges]]
plugin = "execution"

[[judges]]
plugin = "teacher-likelihood"
"""


@pytest.fixture(scope="module")
def teacher_server():
    examples = SyntheticCodegen(SyntheticCodegen.Options(**TASK))
    answers = {e.prompt: e.reference for split in ("train", "eval") for e in examples.examples(split)}
    with LoopbackServer(lambda body: answers[body["messages"][-1]["content"]]) as server:
        yield server


def results(run_dir: Path) -> dict:
    data = json.loads((run_dir / "results.json").read_text())
    return {(s["judge"], s["system"], s["metric"]): s["value"] for s in data["scores"]}


def prompts_asked(server) -> list[str]:
    return [r["messages"][-1]["content"] for r in server.requests]


def test_offline_mode_scores_every_judge_and_system(teacher_server, tmp_path):
    spec = tmp_path / "offline.toml"
    spec.write_text(spec_text(teacher_server.url, name="off", mode="static", iterations=1, cache="cache"))
    teacher_server.reset()
    out = run_cli("run", str(spec))
    assert out.returncode == 0, out.stderr[-3000:]
    got = results(tmp_path / "runs" / "off")
    systems = {"teacher", "student@base", "student@iter_1"}
    assert {s for j, s, m in got if (j, m) == ("execution", "pass@1")} == systems
    assert {s for j, s, m in got if j == "teacher-likelihood"} == systems - {"teacher"}
    assert got[("execution", "teacher", "pass@1")] == 1.0
    # litellm has no price for the loopback model: its cost is unknown, not $0, wherever it shows.
    assert got[("run", "teacher", "cost_usd")] is None and got[("run", "teacher", "tokens")] > 0
    board = json.loads(run_cli("leaderboard", str(tmp_path / "runs" / "off"), "--format", "json").stdout)
    assert [r["cost_usd"] for r in board if r["system"] == "teacher"] == [None]
    # Each train and eval prompt was asked once.
    assert sorted(prompts_asked(teacher_server)) == sorted(set(prompts_asked(teacher_server)))
    assert len(teacher_server.requests) == TASK["n_train"] + TASK["n_eval"]
    run_dir = tmp_path / "runs" / "off"
    pairs = [json.loads(l) for l in (run_dir / "iter_1" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and {"prompt", "chosen", "rejected"} <= set(pairs[0])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["spec"]["student"]["lora_r"] == 64 and manifest["versions"]["trl"]
    assert manifest["contamination"]["task eval split"]["overlapping"] == 0
    assert (run_dir / "curves.png").stat().st_size > 0


def test_online_run_killed_mid_training_resumes_to_the_same_results(teacher_server, tmp_path):
    killed = tmp_path / "killed.toml"
    killed.write_text(spec_text(teacher_server.url, name="killed", mode="online", iterations=2, cache="cache"))
    teacher_server.reset()
    proc = subprocess.Popen([sys.executable, "-m", "dpokd", "run", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "runs" / "killed" / "iter_2" / "train_log.jsonl"
    deadline = time.monotonic() + 300
    while not log.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((tmp_path / "runs" / "killed" / "state.json").read_text())["finished"]
    assert "iter_1/train" in state and "iter_2/train" not in state
    resumed = run_cli("run", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # No teacher request was made twice across the kill.
    asked = prompts_asked(teacher_server)
    assert len(asked) == len(set(asked)) == TASK["n_train"] + TASK["n_eval"]
    resumed_results = results(tmp_path / "runs" / "killed")

    # A finished run prints its leaderboard again without work.
    teacher_server.reset()
    assert run_cli("run", str(killed)).returncode == 0 and teacher_server.requests == []

    # The reference: the same run uninterrupted, --offline with the server gone, in a fresh interpreter
    # (another string-hash seed), from the cache alone. It equals the run that was killed and resumed.
    offline = run_cli("run", str(killed), "--offline", "--fresh", env={"OPENAI_API_KEY": ""}, fresh=True)
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert teacher_server.requests == []
    reference = results(tmp_path / "runs" / "killed")
    assert resumed_results.keys() == reference.keys()
    for key, value in reference.items():
        if key[0] != "run":
            assert resumed_results[key] == pytest.approx(value, abs=1e-6), key
    board = run_cli("leaderboard", str(tmp_path / "runs" / "killed"), "--format", "json")
    rows = json.loads(board.stdout)
    assert {r["system"] for r in rows} == {"teacher", "student@base", "student@iter_1", "student@iter_2"}
    assert all({"run", "system", "pass@1"} <= set(r) for r in rows)


def test_offline_replay_miss_exits_3(teacher_server, tmp_path):
    spec = tmp_path / "miss.toml"
    spec.write_text(spec_text(teacher_server.url, name="miss", mode="static", iterations=1, cache="empty-cache"))
    out = run_cli("run", str(spec), "--offline")
    assert out.returncode == 3 and "not in the cache" in out.stderr and "Traceback" not in out.stderr


def test_changed_spec_is_refused_naming_the_fields(teacher_server, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text(teacher_server.url, name="s", mode="static", iterations=1, cache="cache"))
    from dpokd.runs import RunDir
    from dpokd.spec import load_spec

    loaded = load_spec(spec)
    run = RunDir(tmp_path / "runs" / "s")
    run.create(fresh=False)
    run.write_manifest(loaded.resolved(), {})
    spec.write_text(spec.read_text().replace("lora_alpha = 64", "lora_alpha = 32").replace("epochs = 2", "epochs = 1"))
    out = run_cli("run", str(spec))
    assert out.returncode == 2
    assert "student.epochs" in out.stderr and "student.lora_alpha" in out.stderr and "--fresh" in out.stderr


def test_options_an_upgrade_added_or_dropped_do_not_block_a_resume(teacher_server, tmp_path):
    """A default only one dpokd version knows is no change; an option the author wrote, or a new judge, is."""
    import pytest

    from dpokd.errors import SpecError
    from dpokd.runs import RunDir
    from dpokd.spec import load_spec

    spec = tmp_path / "s.toml"
    spec.write_text(spec_text(teacher_server.url, name="s", mode="static", iterations=1, cache="cache"))
    loaded = load_spec(spec)
    run = RunDir(tmp_path / "runs" / "s")
    run.create(fresh=False)
    older = loaded.resolved()
    del older["student"]["report_to"]  # an option this dpokd added
    older["student"]["an_option_since_dropped"] = 1
    older["run"]["mode"] = "offline"  # the old name of "static"
    run.write_manifest(older, {})
    run.check_spec(loaded.resolved(), spec, loaded.written())  # resumes

    raised = loaded.resolved()
    raised["teacher"].update(max_usd=5.0, max_concurrency=2)  # how answers are fetched, not what: resumable
    run.check_spec(raised, spec, loaded.written() | {"teacher.max_usd", "teacher.max_concurrency"})

    spec.write_text(spec.read_text().replace("[student]\n", '[student]\nreport_to = ["tensorboard"]\n'))
    written = load_spec(spec)
    with pytest.raises(SpecError, match=r"changed: student.report_to"):
        run.check_spec(written.resolved(), spec, written.written())
    spec.write_text(spec_text(teacher_server.url, name="s", mode="static", iterations=1, cache="cache")
                    + '\n[[judges]]\nplugin = "teacher-likelihood"\n')
    more = load_spec(spec)
    with pytest.raises(SpecError, match=r"judges\[\d\]\.plugin"):
        run.check_spec(more.resolved(), spec, more.written())


def test_online_run_generating_on_a_vllm_server_loads_each_iterations_adapter(teacher_server, tmp_path):
    """The student's generations go to a vLLM server (the loopback server serving vLLM's surface)."""
    with LoopbackServer(lambda body: f"    return 0  # {body['model']}", served_model="tiny-base") as vllm:
        spec = tmp_path / "vllm.toml"
        text = spec_text(teacher_server.url, name="vllm", mode="online", iterations=2, cache="cache")
        spec.write_text(text.replace('[student]\n', f'[student]\ngeneration = "vllm"\nvllm_url = "{vllm.url}"\n'))
        out = run_cli("run", str(spec))
        assert out.returncode == 0, out.stderr[-3000:]
        run_dir = tmp_path / "runs" / "vllm"
        assert sorted(vllm.adapters.values()) == [str((run_dir / f"iter_{k}" / "adapter").resolve()) for k in (1, 2)]

        def rejected_by(k):
            return {json.loads(line)["rejected"].split("# ")[-1]
                    for line in (run_dir / f"iter_{k}" / "pairs.jsonl").read_text().splitlines()}

        # Iteration 1 regenerates with the base, iteration 2 with iteration 1's adapter.
        assert rejected_by(1) == {"tiny-base"}
        iter_1 = next(name for name, path in vllm.adapters.items() if "iter_1" in path)
        assert rejected_by(2) == {iter_1}
        got = results(run_dir)
        assert {s for j, s, m in got if (j, m) == ("execution", "pass@1")} == {
            "teacher", "student@base", "student@iter_1", "student@iter_2"}
        assert got[("execution", "student@iter_2", "pass@1")] == 0.0  # "return 0" passes no test
