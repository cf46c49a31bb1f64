"""A Sandbox in a process of an unprivileged uid, as a user without root runs dpokd.

The process is made with ``setpriv``: a uid of its own, no capability. A user runs the
interpreter they can reach; where this one lies under a folder others cannot enter (a 700
``/root``), the process gets a mount namespace of its own in which that folder is covered by one
others may enter, holding the interpreter, the environment and the project at their own paths.
Nothing on the machine changes: no permission, no mount outside that process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from dpokd.sandbox import Job, Limits, Result, Sandbox

from .conftest import ROOT

SERVER = r"""
import json, os, sys
from dpokd.sandbox import Job, Limits, Sandbox
said = []
box = Sandbox(Limits(**json.loads(sys.argv[1])), workers=int(sys.argv[2]), log=said.append)
print(json.dumps({"found": box.found, "isolate": box.isolate, "pid": os.getpid(), "processes": box.processes,
                  "cgroups": box._cgroups is not None, "said": said}), flush=True)
for line in sys.stdin:
    jobs = [Job(**j) for j in json.loads(line)]
    print(json.dumps([r.__dict__ for r in box.run_many(jobs)]), flush=True)
"""


_HELD: dict[int, int] = {}  # offset: the uid this test process holds


def user_uid(offset: int = 0) -> int:
    """A uid for this test process alone (and ``offset``), so process counts and clean-ups see only its
    own: the first of its hundred that no other test process holds, by a lock kept while this one
    lives, as suites from two checkouts may run at once."""
    import tempfile

    from dpokd.sandbox.runner import hold_free

    if offset not in _HELD:
        folder = Path(tempfile.gettempdir()) / "dpokd-test-uids"
        folder.mkdir(exist_ok=True)
        # The descriptor stays open: the lock lasts as long as this process.
        [uid] = hold_free(folder, range(60500 + 100 * offset, 60600 + 100 * offset), 1) or [None]
        if uid is None:
            raise RuntimeError(f"all test uids from {60500 + 100 * offset} are held by other test processes")
        _HELD[offset] = uid
    return _HELD[offset]


def closed_above(path: Path) -> Path | None:
    """The topmost folder above ``path`` that other users may not enter, if any."""
    return next((folder for folder in reversed(path.parents) if not folder.stat().st_mode & 0o001), None)


# Run as root before ``setpriv``: a mount namespace of its own where each closed folder is covered
# by a tmpfs others may enter, holding the paths needed (argv[1]: {path: its closed folder}).
REACHABLE = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def check(result, what):
    if result != 0:
        raise OSError(ctypes.get_errno(), what)
closed = json.loads(sys.argv[1])
check(libc.unshare(0x00020000), "unshare")  # CLONE_NEWNS
check(libc.mount(None, b"/", None, 16384 | 262144, None), "mount")  # MS_REC | MS_PRIVATE: nothing leaks out
sources = {path: os.open(path, os.O_PATH) for path in closed}  # before their folder is covered
for top in sorted(set(closed.values())):
    check(libc.mount(b"tmpfs", top.encode(), b"tmpfs", 2 | 4, b"mode=711"), "mount " + top)
for path, fd in sources.items():
    os.makedirs(path, mode=0o711, exist_ok=True)
    check(libc.mount(b"/proc/self/fd/%d" % fd, path.encode(), None, 4096 | 16384, None), "bind " + path)
    os.close(fd)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def reachable(python: str) -> list[str]:
    """The command that makes ``python`` and the project reachable to the user's process, before
    ``setpriv`` runs; none where they already are."""
    needed = {Path(p).resolve() for p in (Path(python).parent.parent, Path(python).resolve().parent.parent, ROOT)}
    closed = {str(path): str(closed_above(path)) for path in needed if closed_above(path)}
    return [sys.executable, "-I", "-S", "-c", REACHABLE, json.dumps(closed)] if closed else []


class UserSandbox:
    """``run`` and ``run_many`` of a Sandbox living in a process of ``user_uid()``."""

    def __init__(self, limits: Limits, workers: int = 2, env: dict | None = None, shell_env: dict | None = None,
                 uid: int | None = None, python: str = sys.executable):
        uid = uid or user_uid()
        environment = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "PYTHONPATH": str(ROOT),
                       "LANG": "C.UTF-8", **(env or {})}
        command = [python, "-c", SERVER, json.dumps(asdict(limits)), str(workers)]
        if shell_env:  # a shell holding variables that dpokd was started without (`env -u KEY dpokd`)
            environment.update(shell_env)
            command = ["sh", "-c", "".join(f"unset {k}; " for k in shell_env) + '"$@"; exit $?', "sh", *command]
        self.proc = subprocess.Popen(
            [*reachable(python), "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment, cwd="/")
        hello = json.loads(self.proc.stdout.readline())
        self.found, self.isolate, self.pid = hello["found"], hello["isolate"], hello["pid"]
        self.processes, self.cgroups, self.said = hello["processes"], hello["cgroups"], hello["said"]
        self.uid = uid

    def run_many(self, jobs: list[Job]) -> list[Result]:
        self.proc.stdin.write(json.dumps([asdict(j) for j in jobs]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the sandbox's process died")
        return [Result(**r) for r in json.loads(line)]

    def run(self, job: Job) -> Result:
        return self.run_many([job])[0]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module", params=["root", "user"])
def any_sandbox(request):
    """Both kinds: as dpokd runs as root, and as a user without root runs it (an unprivileged uid)."""
    limits = Limits(timeout=2.0, memory_mb=512)
    if request.param == "root" and os.geteuid() != 0:
        pytest.skip("the suite runs without root: the user's sandbox is the other case")
    if request.param == "root" or os.geteuid() != 0:
        with Sandbox(limits, workers=2) as box:
            yield box
        return
    box = UserSandbox(limits, workers=2)
    yield box
    box.close()
