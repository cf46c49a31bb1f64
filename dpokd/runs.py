"""The run directory: manifest, finished stages, results. What makes a run resumable.

A directory is a run only when it carries the marker file: ``--fresh`` deletes nothing else, and
within a run only the files a run writes. One process at a time works in a run (a lock file).
Every file read back is checked, and a damaged one is an error naming it and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import DpokdError, SpecError
from .records import Example, Score

MARKER = ".dpokd-run"
LOCK = ".dpokd-run.lock"
HOLDER = ".dpokd-run.pid"  # the PID holding the lock, for the message a second run prints
RESULTS_SCHEMA = 1

# Everything a run writes at its top level; ``--fresh`` removes these and nothing else.
RUN_FILES = ("state.json", "manifest.json", "results.json", "teacher.jsonl", "run.log", "curves.png", "report.html",
             "vllm.log", "cache_keys.txt", "spend.jsonl", "eval")
# Options that change how answers are fetched, never what they are: a resume may change them (raise
# a spent `max_usd`, say). Matched by name in any table.
# Options renamed since a run may have recorded its spec: old name -> new name.
RENAMED_OPTIONS = {"seed": "provider_seed"}
RENAMED_VALUES = {("run.mode", '"offline"'): '"static"'}  # as _flatten writes them
RESUMABLE_OPTIONS = {"max_concurrency", "rpm", "tpm", "max_retries", "timeout", "max_retry_wait", "max_usd",
                     "max_failure_share", "batch_poll_seconds", "batch_max_requests", "workers", "direct_http"}
_RUN_PATTERNS = (re.compile(r"iter_\d+"), re.compile(r".*\.tmp"))

FRESH = "re-run with --fresh to start this run over (answers already paid for come from the cache)"
RETRAIN = "train it again: `dpokd run SPEC --fresh` with the spec that trained it (answers come from the cache)"

Record = TypeVar("Record", bound=BaseModel)


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    # -- what the directory is --------------------------------------------------------------------
    def check_location(self, fresh: bool, spec_path: Path | None = None) -> None:
        """Refuse a run path under a file, or one that is a directory some other program made."""
        where = str(spec_path) if spec_path else None
        for path in (self.path, *self.path.parents):
            if path.exists():
                if not path.is_dir():
                    field = "run.output_dir" if path != self.path else "run.name"
                    raise SpecError(f"{path} is a file, not a directory; point `run.output_dir` at a directory "
                                    "(or choose another [run] name)", path=where, field=field)
                break
        if not self.path.is_dir() or self.is_marked():
            return
        others = self._entries()
        if fresh and others:
            raise SpecError(f"--fresh would delete {self.path}, which is not marked as a dpokd run (it has no "
                            f"{MARKER} file); delete it yourself if it is one, or set another [run] name",
                            path=where, field="run.name")
        if others and not (self.path / "manifest.json").exists():
            raise SpecError(f"{self.path} already exists and is not a dpokd run directory (it has no {MARKER} "
                            "file); set another [run] name or `run.output_dir`", path=where, field="run.name")

    def is_marked(self) -> bool:
        return (self.path / MARKER).is_file()

    def _entries(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if p.name not in (LOCK, HOLDER))

    def create(self, fresh: bool) -> list[str]:
        """Make (or, with ``fresh``, empty) the run directory; returns what ``fresh`` left in place."""
        kept: list[str] = []
        if fresh and self.path.is_dir():
            if not self.is_marked() and self._entries():
                raise DpokdError(f"{self.path} is not marked as a dpokd run (no {MARKER}); not deleting it")
            for name in self._entries():
                entry = self.path / name
                if name == MARKER:
                    continue
                if name in RUN_FILES or any(p.fullmatch(name) for p in _RUN_PATTERNS):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                else:
                    kept.append(name)
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.is_marked():
            write_json(self.path / MARKER, {"dpokd_run": 1, "name": self.path.name})
        return kept

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run for this process; a second ``dpokd run`` of it is refused, naming the holder."""
        from filelock import FileLock, Timeout

        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise DpokdError(f"{self.path} is in use by another dpokd process (PID {self._holder()}); wait for it "
                             "to finish or stop it, then re-run") from None
        holder = self.path / HOLDER
        try:
            holder.write_text(f"{os.getpid()}\n")
            yield
        finally:
            holder.unlink(missing_ok=True)
            lock.release()

    def _holder(self) -> str:
        try:
            return (self.path / HOLDER).read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    # -- state ------------------------------------------------------------------------------------
    def finished(self) -> list[str]:
        if not self.state_file.exists():
            return []
        data = read_json(self.state_file)
        stages = data.get("finished") if isinstance(data, dict) else None
        if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
            raise damaged(self.state_file, 'has no list of finished stages ("finished")')
        return stages

    def is_done(self, stage: str) -> bool:
        return stage in self.finished()

    def mark_done(self, stage: str) -> None:
        finished = self.finished()
        if stage not in finished:
            finished.append(stage)
        write_json(self.state_file, {"finished": finished})

    def unmark(self, *stages: str) -> None:
        write_json(self.state_file, {"finished": [s for s in self.finished() if s not in stages]})

    # -- manifest ---------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        path = self.path / "manifest.json"
        if not path.exists():
            return None
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
            raise damaged(path, 'has no "spec" table')
        return data

    def check_spec(self, resolved: dict[str, Any], spec_path: Path, written: set[str] = frozenset()) -> None:
        """Refuse to continue a run whose spec changed, naming the changed fields.

        An option only one side has, in a table naming the same plugin on both sides, and not
        written in the spec, is a default another dpokd version added or dropped: no change.
        """
        manifest = self.manifest()
        if manifest is None:
            return
        before, now = _renamed(_flatten(manifest["spec"]), _flatten(resolved)), _flatten(resolved)
        fields = []
        for key in sorted(before.keys() | now.keys()):
            table, _, option = key.partition(".")
            if option in RESUMABLE_OPTIONS and not (option == "timeout" and table.startswith("judges")):
                continue  # an execution judge's timeout decides which programs pass
            if key in before and key in now:
                if before[key] != now[key]:
                    fields.append(key)
                continue
            same_table = table == "run" or before.get(f"{table}.plugin", 0) == now.get(f"{table}.plugin", 1)
            if not same_table or key in written:
                fields.append(key)
        if fields:
            raise SpecError(
                f"the run in {self.path} was started with a different spec; changed: {', '.join(fields)}. "
                "Re-run with --fresh to start over, or give the run a new [run] name",
                path=str(spec_path))

    def check_data(self, data: dict[str, dict[str, Any]]) -> None:
        """Refuse to continue a run on other data than it was built from, naming the splits that changed."""
        before = (self.manifest() or {}).get("data")
        if not isinstance(before, dict):
            return  # a run started before dpokd recorded its data
        changes = [f"{split} split: {change}" for split, now in data.items()
                   if (change := data_changes(before.get(split), now))]
        if changes:
            raise DpokdError(f"the task's data changed since the run in {self.path} started ({'; '.join(changes)}); "
                             "restore the data it was built from, or re-run with --fresh to start over")

    def write_manifest(self, resolved: dict[str, Any], extra: dict[str, Any]) -> None:
        import importlib.metadata as md

        versions = {}
        for package in ("dpokd", "torch", "transformers", "trl", "peft", "bitsandbytes", "litellm", "datasets"):
            try:
                versions[package] = md.version(package)
            except md.PackageNotFoundError:
                versions[package] = None
        write_json(self.path / "manifest.json", {
            "spec": resolved, "versions": versions, "git_commit": _git_commit(),
            "platform": platform.platform(), "python": platform.python_version(), **extra})

    # -- results ----------------------------------------------------------------------------------
    def write_results(self, scores: list[Score]) -> None:
        write_json(self.path / "results.json", {"schema_version": RESULTS_SCHEMA,
                                                "scores": [s.model_dump(mode="json") for s in scores]})

    def results(self) -> list[Score]:
        path = self.path / "results.json"
        again = "delete it and re-run the spec to evaluate again (answers come from the cache)"
        data = read_json(path, remedy=again)
        if not isinstance(data, dict):
            raise damaged(path, "is not a JSON object", again)
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise damaged(path, f"has no integer schema_version (found {version!r})", again)
        if version > RESULTS_SCHEMA:
            raise DpokdError(f"{path}: written by a newer dpokd (results schema {version}; this dpokd reads "
                             f"{RESULTS_SCHEMA}); upgrade dpokd to read it")
        scores = data.get("scores")
        if not isinstance(scores, list):
            raise damaged(path, 'has no list of "scores"', again)
        out = []
        for i, row in enumerate(scores):
            try:
                out.append(Score.model_validate(row))
            except (ValidationError, DpokdError) as exc:
                raise damaged(path, f"score {i} is not valid ({_first_error(exc)})", again) from None
        return out


# -- reading and writing ------------------------------------------------------------------------
def damaged(path: Path, what: str, remedy: str = FRESH) -> DpokdError:
    return DpokdError(f"{path}: {what}; {remedy}")


def _read_text(path: Path, remedy: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise damaged(path, "is missing", remedy) from None
    except UnicodeDecodeError:
        raise damaged(path, "is not text", remedy) from None


def read_json(path: Path, remedy: str = FRESH) -> Any:
    text = _read_text(path, remedy)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        what = "is empty" if not text.strip() else f"is not valid JSON (line {exc.lineno}: {exc.msg}); it may be cut short"
        raise damaged(path, what, remedy) from None


def read_jsonl(path: Path, remedy: str = FRESH) -> list[dict[str, Any]]:
    text = _read_text(path, remedy)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise damaged(path, f"line {n} is not valid JSON ({exc.msg})", remedy) from None
        if not isinstance(row, dict):
            raise damaged(path, f"line {n} is not a JSON object", remedy)
        rows.append(row)
    return rows


def read_records(path: Path, model: type[Record]) -> list[Record]:
    """Each line of a JSONL file as ``model``; a line that is not one is an error naming the file and line."""
    out = []
    for n, row in enumerate(read_jsonl(path), 1):
        try:
            out.append(model.model_validate(row))
        except (ValidationError, DpokdError) as exc:
            raise damaged(path, f"record {n} is not a valid {model.__name__} ({_first_error(exc)})") from None
    return out


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}"
    return str(exc)


class DiskFull(DpokdError):
    """The disk filled while a stage wrote its output; nothing half-written was kept."""

    def __init__(self, path: str | os.PathLike | None):
        where = f" while writing {path}" if path else ""
        super().__init__(f"no space left on the device{where}; free some space and re-run the same command "
                         "to resume (finished stages are kept)")


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _write_atomic(path: Path, text: str | Iterable[str]) -> None:
    """A killed process, a full disk or a failure while ``text``'s pieces are made leaves the old file or
    the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines([text] if isinstance(text, str) else text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise DiskFull(path) from None
        raise


def write_json(path: Path, data: Any) -> None:
    _write_atomic(path, json.dumps(data, indent=2, default=str))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON line per row, written as the rows come (a generator's rows are never all in memory)."""
    _write_atomic(path, (json.dumps(r) + "\n" for r in rows))


# -- checksums of what a stage saved --------------------------------------------------------------
CARD = "README.md"  # rewritten with scores after evaluation: not part of what a checksum covers


def checksum_file(directory: Path) -> Path:
    """Where :func:`record_checksums` writes: ``iter_1/adapter.sha256`` for ``iter_1/adapter``."""
    return directory.with_name(directory.name + ".sha256")


def _file_digests(directory: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CARD):
        with open(path, "rb") as fh:
            digests[path.relative_to(directory.parent).as_posix()] = hashlib.file_digest(fh, "sha256").hexdigest()
    return digests


def record_checksums(directory: Path) -> None:
    """The sha256 of every file in ``directory`` (its card aside), beside it in sha256sum's format:
    ``sha256sum -c iter_1/adapter.sha256``, run in the run directory's ``iter_1``, checks it too."""
    lines = [f"{digest}  {name}\n" for name, digest in _file_digests(directory).items()]
    _write_atomic(checksum_file(directory), "".join(lines))


def verify_checksums(directory: Path, what: str, *, required: bool = False, remedy: str = FRESH) -> None:
    """Refuse ``directory`` when a file differs from what :func:`record_checksums` recorded: weights
    changed on disk can be finite and still wrong, and every score built on them would be too.

    ``what`` completes "has changed since ...". Without a record there is nothing to check (an
    adapter saved elsewhere, or by a dpokd that kept no checksums), unless ``required``.
    """
    record = checksum_file(directory)
    if not record.exists():
        if required:
            raise damaged(record, f"is missing: the checksums of {directory} were recorded when {what}", remedy)
        return
    expected: dict[str, str] = {}
    for number, line in enumerate(_read_text(record, remedy).splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise damaged(record, f"line {number} is not `<sha256>  <file>`", remedy)
        expected[name] = digest
    actual = _file_digests(directory)
    changed = [name for name, digest in expected.items() if actual.get(name) != digest]
    if changed:
        state = "is missing" if changed[0] not in actual else "has changed"
        raise damaged(directory.parent / changed[0], f"{state} since {what} (its sha256 is in {record})", remedy)


# -- what data a run was built from ---------------------------------------------------------------
def data_fingerprint(examples: list[Example]) -> dict[str, Any]:
    """A digest of each example (id, prompt, reference, tests), keyed by id, and one of the whole split."""
    items = {e.id: hashlib.sha256(json.dumps([e.prompt, e.reference, e.tests, e.entry_point]).encode()).hexdigest()[:16]
             for e in examples}
    digest = hashlib.sha256(json.dumps(sorted(items.items())).encode()).hexdigest()
    return {"examples": len(examples), "sha256": digest, "items": items}


def data_changes(before: Any, now: dict[str, Any]) -> str | None:
    """How a split differs from when the run started, in words; None when it is the same."""
    if not isinstance(before, dict) or not isinstance(before.get("items"), dict):
        return None if before is None else "its recorded fingerprint is unreadable"
    old, new = before["items"], now["items"]
    edited = sum(1 for k in old.keys() & new.keys() if old[k] != new[k])
    added, gone = len(new.keys() - old.keys()), len(old.keys() - new.keys())
    if not (edited or added or gone):
        return None
    return f"{edited + added + gone} of {len(old)} examples changed ({edited} edited, {added} new, {gone} gone)"


def _renamed(before: dict[str, str], now: dict[str, str]) -> dict[str, str]:
    """A recorded spec with the options and values renamed since under their new names."""
    out = dict(before)
    for key in before:
        table, _, option = key.partition(".")
        new = RENAMED_OPTIONS.get(option)
        if new and f"{table}.{new}" in now and key not in now:
            out[f"{table}.{new}"] = out.pop(key)
    for (key, value), renamed in RENAMED_VALUES.items():
        if out.get(key) == value:
            out[key] = renamed
    return out


def _flatten(data: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        out = {}
        for i, value in enumerate(data):
            out.update(_flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: json.dumps(data, sort_keys=True)}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None
