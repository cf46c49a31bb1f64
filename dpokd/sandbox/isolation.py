"""How a sample is cut off from the machine, with kernel mechanisms rather than checks of our own.

Layers, each applied where the kernel has it (``probe`` says which; the harness applies them):

* **Namespaces**: a user namespace (so a user without root gets them too), mount, PID, IPC,
  network and UTS namespaces of the sample's own. The PID namespace's init is the checker: when
  it exits, the kernel kills every process left in it, however it detached.
* **A filesystem view** built in the mount namespace and entered with ``pivot_root``: the
  standard library and the system's shared libraries read-only, with every site-packages folder
  covered, four device files, and a private tmpfs for ``/tmp``. Nothing else exists: no home, no
  project, no caches, no host sockets.
* **Landlock**: the same allow-list again, enforced by the kernel on every path lookup, plus no
  TCP, and (ABI 6) no signal or abstract socket reaching outside the sample's domain. The program
  gets a domain nested in the checker's, so it cannot signal or trace the checker either.
* **seccomp**: the calls Docker's default profile denies (kernel keyrings, ``ptrace``, ``bpf``,
  ``mount``, ``unshare``...), plus ``socket``, ``execve``, ``setsid`` and ``setpgid``.
* **No capabilities**, not dumpable, no new privileges, and a parent-death signal.

Imported by the harness before it isolates itself, so it uses the standard library alone, but for
the two bindings it is handed (``landlockpy``, ``pyseccomp``).
"""

import ctypes
import errno
import os
import platform
import resource
import signal

libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
NAMESPACES = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME = 16384, 262144, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

# Denied to everything that runs in a sample: Docker's default profile's list, and what a program
# judged on its return values never needs (sockets, exec, leaving its session or process group).
DENIED = (
    "keyctl add_key request_key ptrace process_vm_readv process_vm_writev kcmp bpf perf_event_open "
    "userfaultfd mount umount2 pivot_root chroot unshare setns fsopen fsconfig fsmount fspick open_tree "
    "move_mount mount_setattr open_by_handle_at name_to_handle_at reboot swapon swapoff init_module "
    "finit_module delete_module kexec_load kexec_file_load acct settimeofday clock_settime clock_adjtime "
    "adjtimex iopl ioperm quotactl lookup_dcookie syslog vhangup fanotify_init io_uring_setup io_uring_enter "
    "io_uring_register sethostname setdomainname socket execve execveat setsid setpgid"
).split()


def _check(result, what):
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, "%s: %s" % (what, os.strerror(code)))


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), "mount " + target)


def prctl(option, value):
    _check(libc.prctl(option, value, 0, 0, 0), "prctl")


def enter_namespaces(user):
    """Unshare every namespace; ``user``: a user namespace too, for a caller without root."""
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(NAMESPACES | (CLONE_NEWUSER if user else 0)), "unshare")
    if user:
        map_own_ids(uid, gid)


def new_user_namespace(proc):
    """A user namespace of the caller's own: per-user kernel state (keyrings) starts empty.

    ``proc``: the caller's ``/proc/PID`` folder, opened before its view hid ``/proc``.
    """
    uid, gid = os.getuid(), os.getgid()
    prctl(PR_SET_DUMPABLE, 1)  # else /proc/PID stays root's after the uid change; drop_privileges clears it
    _check(libc.unshare(CLONE_NEWUSER), "unshare")
    map_own_ids(uid, gid, proc)


def map_own_ids(uid, gid, proc=None):
    for name, line in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)), ("gid_map", "%d %d 1" % (gid, gid))):
        fd = os.open(name if proc is not None else "/proc/self/" + name, os.O_WRONLY, dir_fd=proc)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _locked_flags(path):
    """The flags a bind of ``path`` must keep: a user namespace may not clear them."""
    st = os.statvfs(path).f_flag
    flags = 0
    for st_flag, ms_flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                             (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                             (os.ST_RELATIME, MS_RELATIME)):
        if st & st_flag:
            flags |= ms_flag
    return flags


def build_view(view, tmp_mb):
    """Replace the mount namespace's root by a tmpfs holding only ``view``, read-only.

    ``view``: ``binds`` (folders and files shown at their own paths), ``hide`` (folders inside
    those covered by an empty one), ``links`` (symbolic links at the root, as ``/lib``).
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Opened before anything is covered: the sources may live under the folder the new root hides.
    sources = []
    for path in view["binds"]:
        sources.append((path, os.open(path, os.O_PATH | os.O_CLOEXEC), _locked_flags(path)))
    root = "/tmp"
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path, fd, locked in sources:
        target = root + path
        if os.path.isdir("/proc/self/fd/%d" % fd):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        mount("/proc/self/fd/%d" % fd, target, None, MS_BIND)
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | locked)
        os.close(fd)
    for path in view["hide"]:
        if os.path.isdir(root + path):
            mount("tmpfs", root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=555")
    for link, target in view["links"].items():
        if not os.path.lexists(root + link):
            os.symlink(target, root + link)
    os.makedirs(root + "/tmp", exist_ok=True)
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=1777" % tmp_mb)
    os.makedirs(root + "/dev", exist_ok=True)
    os.symlink("/tmp", root + "/dev/shm")
    os.chdir(root)
    _check(libc.syscall(PIVOT_ROOT[platform.machine()], b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "umount2")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir("/tmp")


def set_limits(rlimits):
    for name, value in rlimits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def die_with_parent():
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def drop_privileges():
    """No capabilities (in any namespace), not dumpable, no new privileges."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    _check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")
    prctl(PR_SET_DUMPABLE, 0)
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def landlock(readable, writable, devices):
    """Enforce a Landlock domain: read ``readable``, read and write ``writable`` and ``devices``.

    Every right the kernel knows is handled, so everything not granted here is denied: other
    files, TCP, and (ABI 6) signals and abstract Unix sockets outside the domain. Called again by
    a process already in a domain, it nests a new one inside.
    """
    import landlockpy

    fs = landlockpy.AccessFS
    read_file = fs.READ_FILE | fs.EXECUTE
    with landlockpy.Ruleset(scoped=landlockpy.Scope.ABSTRACT_UNIX_SOCKET | landlockpy.Scope.SIGNAL) as ruleset:
        for path in readable:
            try:
                ruleset.allow_path(path, read_file | fs.READ_DIR if os.path.isdir(path) else read_file)
            except OSError:
                continue
        for path in devices:
            try:
                ruleset.allow_path(path, fs.READ_FILE | fs.WRITE_FILE)
            except OSError:
                continue
        for path in writable:
            ruleset.allow_path(path, fs.READ_FILE | fs.WRITE_FILE | fs.READ_DIR | fs.REMOVE_DIR | fs.REMOVE_FILE
                               | fs.MAKE_DIR | fs.MAKE_REG | fs.MAKE_FIFO | fs.MAKE_SYM | fs.REFER | fs.TRUNCATE)
        ruleset.restrict()


def landlock_scope():
    """A Landlock domain nested in the caller's that adds only scoping: the caller is outside it,
    so no signal from inside reaches it; the files allowed stay those of the outer domain."""
    import landlockpy

    scope = landlockpy.Scope.ABSTRACT_UNIX_SOCKET | landlockpy.Scope.SIGNAL
    with landlockpy.Ruleset(handled_fs=landlockpy.AccessFS.NONE, handled_net=landlockpy.AccessNet.NONE,
                            scoped=scope) as ruleset:
        if ruleset.scoped:
            ruleset.restrict()


def syscall_filter():
    """The seccomp filter, built once per harness and loaded by each sample."""
    import pyseccomp

    denied = pyseccomp.ERRNO(errno.EPERM)
    f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in DENIED:
        try:
            f.add_rule(denied, name)
        except (OSError, RuntimeError, ValueError):
            continue  # a call this kernel or libseccomp does not know
    for flag in (CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS):
        f.add_rule(denied, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
    try:
        f.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags are out of reach: libc falls back to clone
    except (OSError, RuntimeError, ValueError):
        pass
    return f


def probe_namespaces(flags, uid=None):
    """Whether this process (as ``uid``, when given) may unshare ``flags``, tried in a child."""
    pid = os.fork()
    if pid == 0:
        try:
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            _check(libc.unshare(flags), "unshare")
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
