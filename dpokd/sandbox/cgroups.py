"""Per-sample cgroups: memory, processes and CPU, where this process may make them (as root)."""

from __future__ import annotations

import atexit
import errno
import itertools
import os
import threading
import time
from pathlib import Path


class Cgroups:
    """A memory, a pids and a cpu cgroup per sample, made under this process's own (cgroup v1 or v2).

    The cpu cgroup caps the whole sample at one CPU, so a program that forks spinning processes
    (in new sessions or not) slows only itself, never a correct sample beside it.
    """

    _serial = itertools.count()

    def __init__(self, memory: Path, pids: Path, cpu: Path | None, v2: bool):
        self.memory, self.pids, self.cpu, self.v2 = memory, pids, cpu, v2
        self._pending: list[Path] = []
        self._lock = threading.Lock()
        atexit.register(self.flush)

    @classmethod
    def find(cls) -> Cgroups | None:
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
                    wanted = [c for c in controllers.split(",") if c in ("memory", "pids", "cpu") and c in options]
                elif fstype == "cgroup2" and not controllers:
                    wanted = ["memory", "pids", "cpu"]
                else:
                    continue
                root = Path(m[4]) / os.path.relpath(path, m[3])
                for c in wanted:
                    dirs.setdefault(c, root)
        if "memory" not in dirs or "pids" not in dirs:
            return None
        found = cls(dirs["memory"], dirs["pids"], dirs.get("cpu"), v2=dirs["memory"] == dirs["pids"])
        found.sweep()
        try:
            found.remove(found.make(64, 8))  # proves the controllers work here
        except OSError:
            return None
        return found

    def sweep(self) -> None:
        """Remove what a killed dpokd left: empty cgroups named for a process that is gone."""
        for parent in {self.memory, self.pids, self.cpu} - {None}:
            for d in parent.glob("dpokd-sandbox-*"):
                pid = d.name.split("-")[2]
                if not Path(f"/proc/{pid}").exists():
                    self.remove([d])

    def make(self, memory_mb: int, processes: int) -> list[Path]:
        name = f"dpokd-sandbox-{os.getpid()}-{next(self._serial)}"
        made: list[Path] = []
        try:
            for parent in dict.fromkeys(p for p in (self.memory, self.pids, self.cpu) if p):
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
            if self.cpu:
                self._cap_cpu(self.cpu / name)
        except OSError:
            self.remove(made)
            raise
        return made

    def _cap_cpu(self, cpu: Path) -> None:
        try:
            if self.v2:
                (cpu / "cpu.max").write_text("100000 100000")
            else:
                (cpu / "cpu.cfs_period_us").write_text("100000")
                (cpu / "cpu.cfs_quota_us").write_text("100000")
        except OSError:  # no cpu controller enabled in this v2 subtree: the others still apply
            pass

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

