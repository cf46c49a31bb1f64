"""An online loop stops at the first iteration with no new pairs (`run.stop_when_no_pairs`).

The real run: a loopback teacher gives every train prompt one short answer, which the tiny
student learns in its first iteration; iteration 2 then finds no new pair, and the loop ends.
"""

import json
import shutil
from pathlib import Path

import pytest

from dpokd.runs import write_json
from dpokd.testing import LoopbackServer

from .conftest import run_cli
from .runs_on_disk import make_run

ANSWER = "def f(x):\n    return x\n"


def spec_text(url: str, *, name: str = "conv", run: str = "", judge: str = "") -> str:
    return f"""
[run]
name = "{name}"
mode = "online"
iterations = 3
output_dir = "runs"
cache_dir = "cache"
{run}
[task]
plugin = "synthetic-codegen"
n_train = 8
n_eval = 4
levels = [1]

[teacher]
plugin = "litellm"
model = "openai/loopback-teacher"
api_base = "{url}"

[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
tiny_hidden = 64
tiny_layers = 1
lora_r = 8
learning_rate = 3e-3
epochs = 30
batch_size = 8
loss = ["sigmoid", "sft"]
max_length = 96
max_new_tokens = 16

[[judges]]
plugin = "execution"

[[judges]]
plugin = "teacher-likelihood"
{judge}
"""


@pytest.fixture(scope="module")
def teacher():
    with LoopbackServer(lambda body: ANSWER) as server:
        yield server


def finished(run_dir: Path) -> list[str]:
    return json.loads((run_dir / "state.json").read_text())["finished"]


def scores(run_dir: Path) -> dict:
    data = json.loads((run_dir / "results.json").read_text())
    return {(s["judge"], s["system"], s["metric"]): s["value"] for s in data["scores"]}


@pytest.mark.slow
def test_a_loop_with_nothing_left_to_learn_stops_evaluates_what_exists_and_resumes_without_the_rest(teacher, tmp_path):
    spec = tmp_path / "conv.toml"
    spec.write_text(spec_text(teacher.url))
    out = run_cli("run", str(spec), cwd=tmp_path, env={"OPENAI_API_KEY": "x"})
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "runs" / "conv"
    assert "iter 2: no new pairs; the loop converged at iteration 1" in out.stderr + out.stdout
    stats = json.loads((run_dir / "iter_2" / "pairs_stats.json").read_text())
    assert (stats["pairs"], stats["identical"], stats["ends_loop"]) == (0, 8, True)
    # No empty pairs file (`datasets` cannot read one); every pairs file the run wrote loads as a dataset.
    assert not (run_dir / "iter_2" / "pairs.jsonl").exists()
    from datasets import load_dataset

    written = sorted(run_dir.glob("iter_*/pairs.jsonl"))
    assert [p.parent.name for p in written] == ["iter_1"]
    for path in written:
        assert len(load_dataset("json", data_files=str(path), split="train")) > 0
    # Iteration 2 was never trained, iteration 3 never started, and only what exists was judged.
    assert "iter_2/train" not in finished(run_dir) and not (run_dir / "iter_2" / "adapter").exists()
    assert not (run_dir / "iter_3").exists()
    judged = {s for (j, s, m) in scores(run_dir) if j == "execution"}
    assert judged == {"teacher", "student@base", "student@iter_1"}

    board = run_cli("leaderboard", str(run_dir), "--format", "json", cwd=tmp_path)
    rows = {r["system"]: r for r in json.loads(board.stdout)}
    assert set(rows) == {"teacher", "student@base", "student@iter_1"}
    assert {r["converged_at"] for r in rows.values()} == {1}
    table = run_cli("leaderboard", str(run_dir), cwd=tmp_path).stdout
    assert "conv: the online loop converged at iteration 1: iteration 2 had no new pairs" in " ".join(table.split())
    assert "converged at iteration 1" in (run_dir / "report.html").read_text()

    # Stopped after iteration 2's answers, before its pairs: the resumed run ends the loop there too.
    reference = scores(run_dir)
    state = finished(run_dir)
    (run_dir / "state.json").write_text(json.dumps({"finished": state[: state.index("iter_2/student") + 1]}))
    (run_dir / "results.json").unlink()
    teacher.reset()
    again = run_cli("run", str(spec), cwd=tmp_path, env={"OPENAI_API_KEY": "x"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "iter_2/train" not in finished(run_dir) and "iter_2/pairs" in finished(run_dir)
    assert not (run_dir / "iter_3").exists() and not (run_dir / "iter_2" / "adapter").exists()
    assert "iter_1/train done" not in again.stderr + again.stdout  # nothing trained again
    assert teacher.requests == []  # the teacher's answers came from the cache
    assert scores(run_dir).keys() == reference.keys()
    for key, value in reference.items():
        if value is None:  # what was not measured (the loopback model's price) stays unknown
            assert scores(run_dir)[key] is None, key
            continue
        # A student loaded in a fresh process scores a teacher NLL a little (about 0.2%) off the first one.
        assert scores(run_dir)[key] == pytest.approx(value, rel=1e-2 if key[2] == "teacher_nll" else 1e-9), key


@pytest.mark.slow
def test_without_stop_when_no_pairs_the_loop_runs_every_iteration(teacher, tmp_path):
    spec = tmp_path / "all.toml"
    spec.write_text(spec_text(teacher.url, name="all", run="stop_when_no_pairs = false"))
    out = run_cli("run", str(spec), cwd=tmp_path, env={"OPENAI_API_KEY": "x"})
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "runs" / "all"
    assert json.loads((run_dir / "iter_2" / "pairs_stats.json").read_text())["pairs"] == 0
    assert {f"iter_{k}/train" for k in (1, 2, 3)} <= set(finished(run_dir))
    assert {s for (j, s, m) in scores(run_dir) if j == "execution"} == {
        "teacher", "student@base", "student@iter_1", "student@iter_2", "student@iter_3"}
    rows = json.loads(run_cli("leaderboard", str(run_dir), "--format", "json", cwd=tmp_path).stdout)
    assert not any("converged_at" in r for r in rows)


def test_a_judge_naming_a_checkpoint_the_loop_may_never_train_is_refused_before_any_call(teacher, tmp_path):
    spec = tmp_path / "named.toml"
    spec.write_text(spec_text(teacher.url, name="named", judge='teacher = "student@iter_2"'))
    teacher.reset()
    out = run_cli("run", str(spec), cwd=tmp_path, env={"OPENAI_API_KEY": "x"})
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    message = " ".join(out.stderr.split())
    assert (f"{spec}: judges[1].teacher: 'student@iter_2' may not exist: the loop ends at the first iteration with no "
            "new pairs (`run.stop_when_no_pairs`)") in message
    assert "stop_when_no_pairs = false" in message
    assert teacher.requests == [] and not (tmp_path / "runs" / "named").exists()


def test_the_leaderboard_csv_and_the_report_say_where_the_loop_converged(tmp_path):
    run = make_run(tmp_path / "r", systems=["teacher", "student@base", "student@iter_1", "student@iter_2"],
                   problems=4, passes=lambda s, i, j: s != "student@base", iterations=2)
    write_json(run / "iter_3" / "pairs_stats.json", {"examples": 4, "teacher_failed": 0, "identical": 4,
                                                      "not_verified": 0, "pairs": 0, "ends_loop": True})
    rows = json.loads(run_cli("leaderboard", str(run), "--format", "json").stdout)
    assert [r["converged_at"] for r in rows] == [2, 2, 2, 2]
    md = run_cli("leaderboard", str(run), "--format", "md").stdout
    assert "r: the online loop converged at iteration 2: iteration 3 had no new pairs" in md
    csv_lines = run_cli("leaderboard", str(run), "--format", "csv").stdout.splitlines()
    header = csv_lines[0].split(",")
    assert {line.split(",")[header.index("converged_at")] for line in csv_lines[1:]} == {"2"}
    assert run_cli("view", str(run)).returncode == 0
    assert "r: the online loop converged at iteration 2" in (run / "report.html").read_text()
    # A run whose loop ran every iteration says nothing of the kind.
    shutil.rmtree(run / "iter_3")
    rows = json.loads(run_cli("leaderboard", str(run), "--format", "json").stdout)
    assert not any("converged_at" in r for r in rows)
