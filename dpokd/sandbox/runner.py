"""The dpokd side of the sandbox: a harness server per worker, the jobs it is sent, their results."""

from __future__ import annotations

import functools
import marshal
import os
import queue
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from .cgroups import Cgroups

Status = Literal["passed", "failed", "timeout", "error"]

OUTPUT_LIMIT = 64 * 1024  # bytes kept of stdout and stderr each
OUTPUT_KILL = 4 * 1024 * 1024  # a program printing more than this is stopped
UID_BASE = 61000  # unprivileged uids for sandboxed programs, one per parallel worker
UNISOLATED_ENV = "DPOKD_SANDBOX_UNISOLATED"
# Mechanisms to act as if this host lacked (comma-separated: user-namespaces, landlock-scope,
# autogroup), so that the tests can walk the fallbacks on a host that has everything.
_WITHOUT_ENV = "_DPOKD_SANDBOX_WITHOUT"
HARNESS = Path(__file__).with_name("harness.py")
# What the program's process is started with: nothing of dpokd's environment, whatever its names.
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
# Imported once by each harness instead of once by each sample: the prompts' usual imports.
PRELOAD = ("typing", "math", "collections", "itertools", "functools", "heapq", "string", "re", "bisect",
           "statistics", "fractions", "decimal", "hashlib", "random", "copy", "operator", "datetime", "json")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# Names of environment variables that hold credentials, for the one case where a program could
# still read dpokd's environment (no namespaces and no Landlock): a refusal to run beside them.
_SECRET = re.compile(r"(?<!^GPG_)(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PWD|PAT|CREDENTIALS?|URL|DSN)S?(_\d+)?$", re.I)


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
    helpers, such as HumanEval's ``poly``). Neither reaches the program's process.
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


def _mode() -> str:
    if not sys.platform.startswith("linux"):
        return "none"
    return "root" if os.geteuid() == 0 else "user"


@functools.lru_cache(maxsize=None)
def _view() -> dict:
    """What a sample may see of the filesystem: the standard library and the shared libraries.

    ``binds`` and ``hide`` build the mount namespace's view; ``readable`` is the same allow-list
    for Landlock, which cannot exclude a folder inside one it allows, so it lists the standard
    library's entries one by one, leaving out every site-packages.
    """
    import site

    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    dynload = {os.path.realpath(sysconfig.get_config_var("DESTSHARED") or stdlib)}
    dynload |= {os.path.realpath(p) for p in sys.path if p.endswith("lib-dynload") and os.path.isdir(p)}
    libs = {os.path.realpath(p) for p in ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/lib32") if os.path.isdir(p)}
    packages = set(sys.path) | set(site.getsitepackages()) | {site.getusersitepackages()}
    packages = {os.path.realpath(p) for p in packages if p and os.path.isdir(p)}
    hide = {p for p in packages if p != stdlib and not p.startswith(tuple(d + "/" for d in dynload)) and p not in dynload}
    hide |= {os.path.join(stdlib, name) for name in ("site-packages", "dist-packages")}
    for lib in libs:  # another Python's packages beside the system libraries (Debian's /usr/lib/python3)
        for entry in os.scandir(lib):
            path = os.path.realpath(entry.path)
            if entry.name.startswith("python") and path != stdlib and not stdlib.startswith(path + "/"):
                hide.add(path)
    hide = {p for p in hide if os.path.isdir(p)}
    binds = sorted({stdlib} | dynload | libs) + list(DEVICES)
    readable: list[str] = []
    for folder in sorted({stdlib} | dynload | libs):
        for entry in os.scandir(folder):
            path = os.path.realpath(entry.path)
            if not any(path == h or path.startswith(h + "/") or h.startswith(path + "/") for h in hide):
                readable.append(entry.path)
            elif not any(path == h for h in hide) and entry.is_dir():
                readable += [e.path for e in os.scandir(path) if os.path.realpath(e.path) not in hide]
    links = {p: os.readlink(p) for p in ("/lib", "/lib64", "/lib32", "/libx32") if os.path.islink(p)}
    return {"binds": binds, "hide": sorted(hide), "links": links, "readable": readable}


class _Server:
    """One harness process, started once, that runs the jobs of one worker one at a time."""

    def __init__(self, config: dict):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        import landlockpy
        import pyseccomp

        paths = [str(HARNESS.parent)] + [str(Path(m.__file__).resolve().parent.parent if m.__name__ == "landlockpy"
                                             else Path(m.__file__).resolve().parent) for m in (landlockpy, pyseccomp)]
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", "-X", "utf8", str(HARNESS), str(child.fileno())],
            pass_fds=(child.fileno(),), env=ENVIRONMENT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, cwd="/", start_new_session=True)
        child.close()
        self.sock = parent
        self.sock.send(marshal.dumps(dict(config, paths=list(dict.fromkeys(paths)))))
        self.found = self._receive(30.0)

    def _receive(self, timeout: float):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except (TimeoutError, OSError):
            data = b""
        if not data:
            self.close()
            stderr = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
            raise RuntimeError(f"the sandbox's harness stopped: {stderr.strip() or 'no message'}")
        return marshal.loads(data)

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            if self.proc.stderr:
                self.proc.stderr.close()

    def run(self, job: Job, workdir: str | None, cgroups: list[Path], timeout: float) -> tuple[str, bytes, bytes, bytes, int]:
        """Send the job; read its output and verdict until it ends or ``timeout``."""
        code_r, code_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        request = {"entry_point": job.entry_point, "workdir": workdir,
                   "cgroups": [str(d / "cgroup.procs") for d in cgroups]}
        try:
            socket.send_fds(self.sock, [marshal.dumps(request)], [code_r, out_w, err_w, verdict_w])
        finally:
            for fd in (code_r, out_w, err_w, verdict_w):
                os.close(fd)
        start = time.monotonic()
        try:
            _, pid = self._receive(10.0)
            payload = _frame(job.code.encode("utf-8", "surrogatepass")) + _frame(
                marshal.dumps({"tests": job.tests, "context": job.context}))
            outcome, out, err, verdict, ended = _collect(self.sock, code_w, payload, out_r, err_r, verdict_r,
                                                          start + timeout)
            if ended is None:
                for kill in (os.killpg, os.kill):  # the sample's session, and its process
                    try:
                        kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                ended = self._receive(10.0)[1]
        finally:
            for fd in (code_w, out_r, err_r, verdict_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
        return outcome, out, err, verdict, ended


class Sandbox:
    """Runs jobs with bounded parallelism, each worker through a harness of its own."""

    def __init__(self, limits: Limits | None = None, workers: int | None = None, log=None, *, refuse: bool = True):
        self.limits = limits or Limits()
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.mode = _mode()
        self._log = log or (lambda message: print(message, file=sys.stderr))
        self._without = [w for w in os.environ.get(_WITHOUT_ENV, "").split(",") if w]
        if self.mode != "root":
            _set_dumpable(False)  # the program, running as this user, must not trace dpokd
        self._cgroups = Cgroups.find() if self.mode == "root" else None
        self.processes = self.limits.processes if self._cgroups else _processes_that_fit(self.limits, self.workers)
        # One uid per worker, leased from the others dpokd processes on this machine hold.
        self._leases = _lease_uids(self.workers) if self.mode == "root" else {}
        self._uids = list(self._leases) or [os.getuid()] * self.workers
        self._started: list[_Server] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shutdown, self._started, dict(self._leases))
        # Workers' harnesses start on first use but the first, which says what this host offers.
        first = self._server(0)
        self._servers: queue.Queue[_Server | int] = queue.Queue()
        for server in [first, *range(1, self.workers)]:
            self._servers.put(server)
        self.found = first.found
        self.isolate = bool(self.found["namespaces"])
        if refuse:
            self._check(self.found)

    def _config(self, index: int) -> dict:
        limits = self.limits
        rlimits = {"RLIMIT_AS": limits.memory_mb * 2**20, "RLIMIT_CPU": int(limits.timeout) + 1,
                   "RLIMIT_FSIZE": limits.file_mb * 2**20, "RLIMIT_NOFILE": limits.open_files, "RLIMIT_CORE": 0,
                   "RLIMIT_NPROC": self.processes}
        view = _view()
        return {"mode": self.mode, "uid": self._uids[index], "rlimits": rlimits, "tmp_mb": limits.file_mb,
                "view": {k: view[k] for k in ("binds", "hide", "links")}, "readable": view["readable"],
                "devices": list(DEVICES), "preload": list(PRELOAD),
                "without": self._without}

    def _server(self, index: int) -> _Server:
        server = _Server(self._config(index))
        server.index = index
        with self._lock:
            self._started.append(server)
        return server

    def _check(self, found: dict) -> None:
        """Say once what is missing; refuse where a program could read dpokd's secrets."""
        missing = []
        if not found["namespaces"]:
            missing.append("namespaces" if self.mode == "root" else "unprivileged user namespaces")
        if not found["landlock"]:
            missing.append("Landlock")
        elif found["landlock"] < 6:
            missing.append(f"Landlock signal scoping (ABI {found['landlock']} < 6)")
        if not found["seccomp"]:
            missing.append("seccomp (libseccomp)")
        if self.mode == "root" and found["namespaces"] and not found["user_namespace"]:
            missing.append("user namespace per sample")
        if not (self._cgroups and self._cgroups.cpu) and not found["autogroup"]:
            missing.append("CPU share between samples (no cpu cgroup, scheduler autogroups off)")
        if missing:
            self._log(f"sandbox: no {', no '.join(missing)} here; generated code runs less isolated")
        if not found["namespaces"] and not found["landlock"] and os.environ.get(UNISOLATED_ENV) != "1":
            if self.mode == "root":
                self.close()
                raise ConfigError(f"sandbox: neither namespaces nor Landlock are available here, so generated code "
                                  f"would run unisolated; set {UNISOLATED_ENV}=1 to accept the risk")
            try:
                check_isolation(found)
            except ConfigError:
                self.close()
                raise

    def close(self) -> None:
        """Stop the harnesses (they stop by themselves when dpokd exits)."""
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, job: Job) -> Result:
        server = self._servers.get()
        try:
            if isinstance(server, int):
                server = self._server(server)
            try:
                return self._run(server, job)
            except (OSError, RuntimeError) as exc:  # the harness died: start another for the next job
                server.close()
                with self._lock:
                    self._started.remove(server)
                index = server.index
                server = index
                return Result("error", f"the sandbox's harness failed: {exc}")
        finally:
            self._servers.put(server)

    def run_many(self, jobs: list[Job], on_done=None) -> list[Result]:
        """Results in order; ``on_done()`` is called as each job finishes (progress bars)."""

        def one(job: Job) -> Result:
            result = self.run(job)
            if on_done is not None:
                on_done()
            return result

        try:
            with ThreadPoolExecutor(self.workers) as pool:
                return list(pool.map(one, jobs))
        finally:
            if self._cgroups:
                self._cgroups.flush()

    def self_test(self) -> None:
        """Refuse limits under which even a correct program cannot pass: every score would be 0."""
        probe = self.run(Job("from typing import List\ndef probe(xs: List[int]) -> int:\n    return sum(xs)\n",
                             "def check(candidate):\n    assert candidate([1, 2]) == 3\n", "probe"))
        if not probe.passed:
            raise ConfigError(f"sandbox: a correct program does not pass under these limits ({probe.reason}); "
                              f"raise `memory_mb` (now {self.limits.memory_mb}) or `timeout` (now {self.limits.timeout:g})")

    def _run(self, server: _Server, job: Job) -> Result:
        limits = self.limits
        workdir = None if self.isolate else tempfile.mkdtemp(prefix="dpokd-sandbox-")
        cgroups = self._cgroups.make(limits.memory_mb, self.processes) if self._cgroups else []
        out_of_memory = False
        start = time.monotonic()
        try:
            outcome, out, err, verdict, status = server.run(job, workdir, cgroups, limits.timeout)
        finally:
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            if cgroups:
                out_of_memory = self._cgroups.out_of_memory(cgroups)
                self._cgroups.release(cgroups)
        if self.mode == "root" and outcome != "done":
            # Killed mid-run, its processes may still be dying (a PID namespace's are zapped after
            # its init): gone before the uid runs the next sample, whose process cap they would share.
            _kill_uid(self._uids[server.index])
        code = os.waitstatus_to_exitcode(status)
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        status_, reason = self._decide(outcome, verdict, code, out_of_memory)
        return Result(status_, reason, stdout, stderr, time.monotonic() - start)

    def _decide(self, outcome: str, verdict: bytes, code: int, out_of_memory: bool) -> tuple[Status, str]:
        """The status: from the checker's verdict, which only the checker could write, else from how it ended."""
        if outcome == "timeout":
            return "timeout", f"killed after {self.limits.timeout:g}s"
        if outcome == "output":
            return "error", f"printed more than {OUTPUT_KILL // 2**20} MB"
        try:
            decided = marshal.loads(verdict) if verdict else None
        except (EOFError, ValueError, TypeError):
            decided = None
        if isinstance(decided, dict) and decided.get("status") == "passed":
            return "passed", ""
        if isinstance(decided, dict):
            return "failed", str(decided.get("reason", ""))[:300]
        if out_of_memory:
            return "error", f"out of memory (the sample's {self.limits.memory_mb} MB)"
        return "error", f"the checker died: {_exit_reason(code)}"


def _shutdown(servers: list[_Server], leases: dict[int, int]) -> None:
    for server in list(servers):
        try:
            server.close()
        except OSError:
            pass
    servers.clear()
    for uid in leases:  # the next holder of a uid starts with none of this one's processes
        if _has_processes(uid, zombies=True):
            _kill_uid(uid)
    _release(list(leases.values()))


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def _collect(ctl: socket.socket, code_w: int, payload: bytes, out_r: int, err_r: int, verdict_r: int,
             deadline: float) -> tuple[str, bytes, bytes, bytes, int | None]:
    """Feed the checker its program and tests; read stdout, stderr and the verdict until the sample
    ends, the deadline passes, or it prints too much. The sample's exit status is None unless it ended."""
    sel = selectors.DefaultSelector()
    buffers = {out_r: bytearray(), err_r: bytearray(), verdict_r: bytearray()}
    total = dict.fromkeys(buffers, 0)
    for fd in (*buffers, code_w):
        os.set_blocking(fd, False)
    for fd in buffers:
        sel.register(fd, selectors.EVENT_READ)
    sel.register(code_w, selectors.EVENT_WRITE)
    ctl.setblocking(False)
    sel.register(ctl, selectors.EVENT_READ)
    outcome, ended, written = "done", None, 0
    try:
        while ended is None or verdict_r in sel.get_map() or out_r in sel.get_map() or err_r in sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome = "done" if ended is not None or (verdict_r not in sel.get_map() and buffers[verdict_r]) else "timeout"
                break
            if ended is not None:  # a process the program left may hold stdout open: do not wait for it
                deadline = min(deadline, time.monotonic() + 0.1)
            for key, _ in sel.select(min(remaining, 0.5)):
                if key.fd == code_w:
                    written = _feed(sel, code_w, payload, written)
                elif key.fd == ctl.fileno():
                    ended = _ended(sel, ctl, ended)
                elif _read(sel, key.fd, buffers, total) and key.fd != verdict_r:
                    outcome = "output"
                    break
            if outcome == "output":
                break
    finally:
        sel.close()
        ctl.setblocking(True)
    if outcome != "done":
        ended = None
    return outcome, bytes(buffers[out_r]), bytes(buffers[err_r]), bytes(buffers[verdict_r]), ended


def _feed(sel, code_w: int, payload: bytes, written: int) -> int:
    """Write the next part of the program and tests; how much is written (all of it once the pipe broke)."""
    try:
        written += os.write(code_w, payload[written:written + 65536])
    except BlockingIOError:
        return written
    except BrokenPipeError:
        written = len(payload)
    if written >= len(payload):
        sel.unregister(code_w)
    return written


def _ended(sel, ctl: socket.socket, ended: int | None) -> int | None:
    """The sample's exit status, once the harness reports it."""
    try:
        data = ctl.recv(1 << 16)
    except BlockingIOError:
        return ended
    sel.unregister(ctl)
    return marshal.loads(data)[1] if data else 0


def _read(sel, fd: int, buffers: dict[int, bytearray], total: dict[int, int]) -> bool:
    """Read what ``fd`` has, keeping up to OUTPUT_LIMIT; whether it has now printed too much."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return False
    if not chunk:
        sel.unregister(fd)
        return False
    total[fd] += len(chunk)
    buf = buffers[fd]
    if len(buf) < OUTPUT_LIMIT:
        buf += chunk[: OUTPUT_LIMIT - len(buf)]
    return total[fd] > OUTPUT_KILL


UID_RANGE = 4096  # uids UID_BASE .. UID_BASE + UID_RANGE - 1 are the sandbox's


def _lease_uids(count: int) -> dict[int, int]:
    """``count`` uids no other sandbox holds, each kept by a lock for this object's lifetime.

    Two dpokd processes on one machine must not share a uid: a uid's process cap is shared, and
    one's clean-up (kill every process of the uid) would kill the other's samples.
    """
    run = Path("/run")
    folder = (run if os.access(run, os.W_OK) else Path(tempfile.gettempdir())) / "dpokd-sandbox-uids"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.geteuid():
        raise ConfigError(f"sandbox: {folder} belongs to another user; remove it")
    leases = hold_free(folder, range(UID_BASE, UID_BASE + UID_RANGE), count)
    if len(leases) < count:
        _release(list(leases.values()))
        raise ConfigError(f"sandbox: all {UID_RANGE} sandbox uids are in use by other dpokd processes")
    return leases


def hold_free(folder: Path, ids: range, count: int) -> dict[int, int]:
    """Up to ``count`` of ``ids`` that no other process holds: each held by a lock on its file in ``folder``
    for as long as its descriptor (the value) stays open."""
    import fcntl

    held: dict[int, int] = {}
    for i in ids:
        fd = os.open(folder / str(i), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held[i] = fd
        if len(held) == count:
            break
    return held


def _release(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


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


def _exit_reason(code: int) -> str:
    if code < 0 or code >= 128:
        signum = -code if code < 0 else code - 128
        try:
            return f"killed by {signal.Signals(signum).name}"
        except ValueError:
            pass
    return f"exit status {code}"


def check_isolation(found: dict | None = None) -> None:
    """Refuse to run generated code where it could read this user's secrets.

    With namespaces or Landlock, the program sees nothing of dpokd's environment nor of any
    process's, whatever the variables are called. Without either, it runs as this user and could
    read any of the user's processes' environments: then dpokd refuses while credentials are in
    its environment, unless ``DPOKD_SANDBOX_UNISOLATED=1`` says the risk is accepted. Called by
    the sandbox, and by its users' preflights so that the refusal comes before any paid call.
    """
    if os.environ.get(UNISOLATED_ENV) == "1":
        return
    found = found or probe()
    if found["namespaces"] or found["landlock"]:
        return
    secrets = sorted(name for name, value in os.environ.items() if value and _SECRET.search(name))
    if secrets:
        raise ConfigError(
            f"sandbox: generated code cannot be isolated here (no user namespaces and no Landlock), and "
            f"{', '.join(secrets[:4])}{' ...' if len(secrets) > 4 else ''} is set, where that code could read it. "
            f"Unset the keys where no API is called (`dpokd humaneval`, an offline replay), or set "
            f"{UNISOLATED_ENV}=1 to accept the risk")


@functools.lru_cache(maxsize=None)
def probe() -> dict:
    """Which isolation mechanisms this host gives a sample (asked of a harness once per process)."""
    with Sandbox(workers=1, log=lambda message: None, refuse=False) as sandbox:
        return dict(sandbox.found)


def _set_dumpable(flag: bool) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(4, int(flag), 0, 0, 0)  # PR_SET_DUMPABLE


def _processes_that_fit(limits: Limits, workers: int) -> int:
    """Without a cgroup, memory is capped per process: cap processes so that all of them fit."""
    try:
        with open("/proc/meminfo") as fh:
            available = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return limits.processes
    return max(3, min(limits.processes, available // (workers * limits.memory_mb * 2**20)))


