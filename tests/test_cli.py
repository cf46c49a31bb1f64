"""The command line: version, help, exit codes, and the start-up path staying light."""

import json
import signal
import subprocess
import sys
import time

import pytest

import dpokd
from dpokd.testing import LoopbackServer

from .conftest import ROOT, run_cli

HEAVY = ("torch", "transformers", "trl", "peft", "bitsandbytes", "litellm")


def test_version_and_help(cli):
    assert cli("--version").stdout.strip() == f"dpokd, version {dpokd.__version__}"
    for flag in ("-h", "--help"):
        result = cli(flag)
        assert result.returncode == 0
        for command in ("run", "validate", "plugins", "leaderboard", "humaneval", "cache"):
            assert command in result.stdout


def test_usage_error_exits_2_without_traceback(cli):
    result = cli("validate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = cli("run", "does/not/exist.toml")
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr


def test_startup_path_imports_no_heavy_library():
    spec = ROOT / "specs" / "quickstart.toml"
    script = f"""
import sys, json
import dpokd, dpokd.cli, dpokd.spec
from dpokd.cli import cli
codes = []
for args in (["validate", r"{spec}"], ["plugins", "--json"], ["--help"]):
    try:
        codes.append(cli.main(args=args, standalone_mode=False) or 0)
    except SystemExit as exit_:
        codes.append(exit_.code or 0)
print(json.dumps([codes, sorted(m for m in {HEAVY!r} if m in sys.modules)]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[0, 0, 0], []]


def test_reference_specs_without_keys_stop_before_any_work(tmp_path):
    import os

    unset = {k: None for k in os.environ if k.endswith("_API_KEY")}
    for name in ("codegen_offline", "codegen_online", "summary_offline", "summary_online"):
        out = run_cli("run", str(ROOT / "specs" / f"{name}.toml"), env=unset, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        for fragment in ("GEMINI_API_KEY", "--offline", "quickstart"):
            assert fragment in out.stderr
        assert "Traceback" not in out.stderr
        assert not (tmp_path / "runs").exists()  # nothing was started


# -- specs that validate but cannot run: refused before the teacher is asked anything ------------

LEETCODE = ROOT / "tests" / "fixtures" / "leetcode.jsonl"
CHAT = ROOT / "specs" / "data" / "chat.jsonl"
SYNTHETIC = 'plugin = "synthetic-codegen"\nn_train = 8\nn_eval = 4\nlevels = [1]'


def small_spec(url: str, *, name: str, task: str = SYNTHETIC, run: str = "", student: str = "max_length = 64",
               judge: str = "") -> str:
    return f"""
[run]
name = "{name}"
{run}
[task]
{task}
[teacher]
plugin = "litellm"
model = "openai/loopback-teacher"
api_base = "{url}"
[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
epochs = 1
batch_size = 4
max_new_tokens = 16
{student}
[[judges]]
plugin = "teacher-likelihood"
{judge}
"""


@pytest.fixture
def teacher():
    with LoopbackServer(lambda body: "def f(x):\n    return x\n") as server:
        yield server


@pytest.mark.parametrize("case, expected", [
    (dict(student="max_length = 8"), "student.max_length: 8 tokens leave no room for an answer after any train prompt"),
    (dict(student='target_modules = ["qkv_proj"]'),
     "student.target_modules: Target modules {'qkv_proj'} not found in the base model"),
    (dict(task=f'plugin = "leetcode-codegen"\ndataset = "{LEETCODE}"\neval_fraction = 0.01'),
     "task: the eval split is empty, so judges[0] (teacher-likelihood) has nothing to judge"),
    (dict(task=f'plugin = "leetcode-codegen"\ndataset = "{LEETCODE}"', run="verified_pairs = true"),
     "run.verified_pairs: the task's examples carry no tests"),
    (dict(judge='teacher = "student@iter_3"'),
     "judges[0].teacher: 'student@iter_3' is not a system of this run; the systems are teacher, student@base, "
     "student@iter_1"),
    (dict(task=f'plugin = "prompts"\ndataset = "{CHAT}"\nfields = {{ prompt = "messages" }}',
          student="chat_template = false"),
     "student.chat_template: the task gives prompts as chat messages (first: chat"),
], ids=["max_length", "target_modules", "empty_eval_split", "verified_pairs_without_tests", "judge_names_no_system",
        "messages_without_chat_template"])
def test_spec_the_data_cannot_serve_stops_before_any_paid_call(case, expected, teacher, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(small_spec(teacher.url, name="s", **case))
    assert run_cli("validate", str(spec)).returncode == 0  # only the data shows the problem
    out = run_cli("run", str(spec), cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"{spec}: {expected}" in out.stderr
    assert "Traceback" not in out.stderr
    assert teacher.requests == []
    # Nothing recorded: the corrected spec starts the run rather than being refused as a changed one.
    assert not (tmp_path / "runs" / "s" / "manifest.json").exists()


# -- Ctrl-C ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_mid_run_exits_130_and_the_same_command_resumes(teacher, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(small_spec(teacher.url, name="s"))
    command = [sys.executable, "-m", "dpokd", "run", str(spec)]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "runs" / "s" / "state.json"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if state.exists() and '"teacher"' in state.read_text():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends; the student's stage is under way
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "interrupted; re-run the same command to resume"
    assert "Traceback" not in stderr and "Aborted" not in stderr
    finished = json.loads(state.read_text())["finished"]
    assert "teacher" in finished and "report" not in finished
    asked = len(teacher.requests)
    assert asked == 8  # the train prompts

    resumed = run_cli("run", str(spec), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "teacher done" not in resumed.stdout and "report done" in resumed.stdout
    assert len(teacher.requests) == asked + 4  # only the eval prompts, for the judge
    assert (tmp_path / "runs" / "s" / "results.json").exists()


def test_declined_confirmation_is_not_an_interruption(tmp_path):
    from dpokd.cache import ResponseCache

    ResponseCache(tmp_path / "c").put("k", {"text": "an answer", "finish_reason": "stop"})
    out = subprocess.run([sys.executable, "-m", "dpokd", "cache", "clear", "--cache-dir", str(tmp_path / "c")],
                         input="n\n", capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == "aborted"
    assert ResponseCache(tmp_path / "c").stats()["entries"] == 1


@pytest.mark.slow
def test_ctrl_c_while_the_teacher_answers_exits_130_and_asks_again_only_what_was_in_flight(tmp_path):
    with LoopbackServer(lambda body: "def f(x):\n    return x\n", latency=0.5) as teacher:
        spec = tmp_path / "s.toml"
        spec.write_text(small_spec(teacher.url, name="s").replace("[student]", "max_concurrency = 2\n[student]"))
        command = [sys.executable, "-m", "dpokd", "run", str(spec)]
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while len(teacher.requests) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)  # inside litellm's event loop, two requests in flight
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr[-3000:]
        assert stderr.strip().splitlines()[-1] == "interrupted; re-run the same command to resume"
        assert "Traceback" not in stderr

        resumed = run_cli("run", str(spec), cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        asked = [r["messages"][-1]["content"] for r in teacher.requests]
        assert len(set(asked)) == 8 + 4  # every train prompt, then the eval prompts for the judge
        assert len(asked) <= 8 + 4 + 2  # at most the two in flight were asked twice
