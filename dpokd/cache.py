"""The response cache: every paid answer, stored the moment it arrives, keyed by its request.

The key is a versioned hash of the canonical request (model, api_base, messages, sampling
parameters). Nothing that leaves the answer unchanged (timeouts, retries, concurrency) and no
secret is part of it. Student generations share the cache, keyed by the student's fingerprint.

A provider's refusal (a safety block) is a deterministic answer too: it is cached, marked
``refused``, and replayed as a failed answer until asked again (``--retry-refused``). Within a
run, every key read or written is appended to the run's ``cache_keys.txt``: exactly what
``dpokd export`` puts in a replay bundle.

Runs that share a cache ask each request once: before asking, a process claims the request's key
(a ``claim:`` entry in the same store naming its owner and a lease, taken in one transaction);
another process finding a live claim waits for the answer, and takes the claim over only once the
lease has run out or its owner is gone. The answer and the claim's release are one transaction.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import ConfigError

KEY_VERSION = "v1"
# The sampling parameters that change an answer; everything else is left out of the key.
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "stop", "seed", "n")
KEY_PATTERN = re.compile(r"^v1:[0-9a-f]{64}$")
CLAIM = "claim:"  # prefix of an in-flight marker's key
JOURNAL = "cache_keys.txt"
PAGE_CACHE_PAGES = 256  # SQLite pages (4 KB each) a connection to the store keeps in memory
# What reading a damaged entry raises: SQLite's errors, and JSON's (a ValueError) on a garbled value.
_UNREADABLE = (sqlite3.DatabaseError, ValueError, TypeError)


class PickledEntry(Exception):
    """A stored key or value is a Python pickle, which dpokd does not load: loading one can run code."""


@functools.cache
def json_disk():
    """diskcache's ``Disk`` storing values as JSON text and refusing to load a pickle.

    diskcache pickles any value that is not a string, number or bytes, and unpickles whatever its
    database holds: a cache folder from elsewhere could run code when read. Keys are strings, which
    it stores as they are; values go in as JSON strings.
    """
    import diskcache
    from diskcache.core import MODE_PICKLE, UNKNOWN

    class JSONValues(diskcache.Disk):
        def get(self, key, raw):
            if not raw:
                raise PickledEntry("a key")
            return super().get(key, raw)

        def store(self, value, read, key=UNKNOWN):
            return super().store(value if read else json.dumps(value, ensure_ascii=False), read, key=key)

        def fetch(self, mode, filename, value, read):
            if mode == MODE_PICKLE:
                raise PickledEntry("a value")
            data = super().fetch(mode, filename, value, read)
            return json.loads(data) if isinstance(data, str) else data

    return JSONValues


def _open(path: Path):
    import diskcache

    # SQLite's page cache and memory map per connection, kept small: with diskcache's defaults (32 MB
    # and 64 MB) a process holds a growing share of a large store, and its memory grows with the number
    # of answers. The OS caches the file either way.
    return diskcache.Cache(str(path), disk=json_disk(), sqlite_cache_size=PAGE_CACHE_PAGES, sqlite_mmap_size=0)


def upgrade(cache_dir: str | Path) -> tuple[int, int]:
    """Rewrite the pickled entries of a cache written by an earlier dpokd as JSON, in place: for a cache
    the user trusts (this reads its pickles). Returns (converted, entries)."""
    import diskcache

    converted = total = 0
    layout = CacheLayout(cache_dir)
    for path in (layout.responses, layout.batches):
        if not (path / "cache.db").exists():
            continue
        with diskcache.Cache(str(path)) as store, store.transact():
            for key in list(store.iterkeys()):
                total += 1
                value = store.get(key)
                if not isinstance(value, str):  # a JSON entry reads back as its text here
                    store.set(key, json.dumps(value, ensure_ascii=False))
                    converted += 1
    return converted, total


class CacheLayout:
    """Where each kind of thing lives under a cache directory; no other module spells these names.

    ``responses/`` every API answer, ``batches/`` requests waiting in a provider's batch, ``models/``
    models built here (the tiny student), ``adapters/`` adapters saved for a vLLM server to load.
    """

    def __init__(self, root: str | Path, run_dir: Path | None = None):
        self.root = Path(root)
        self.run_dir = run_dir

    @property
    def responses(self) -> Path:
        return self.root / "responses"

    @property
    def batches(self) -> Path:
        return self.root / "batches"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    def exists(self) -> bool:
        """Whether a cache was made here: answers, or requests waiting in a batch."""
        return self.responses.is_dir() or self.batches.is_dir()

    @property
    def last_run(self) -> Path:
        """Hits and misses of the last run, for ``dpokd cache stats``."""
        return self.root / "last_run.json"

    @property
    def vllm_log(self) -> Path:
        """The log of a vLLM server dpokd starts: in the run directory, else in the cache."""
        return (self.run_dir or self.root) / "vllm.log"


def request_key(request: dict[str, Any]) -> str:
    """``v1:<sha256>`` of the request as canonical JSON (sorted keys, no whitespace)."""
    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"{KEY_VERSION}:{hashlib.sha256(blob.encode()).hexdigest()}"


def chat_request(model: str, api_base: str | None, messages: list[dict[str, str]], **sampling: Any) -> dict[str, Any]:
    """The canonical form of a chat request: only what determines the answer."""
    params = {k: sampling[k] for k in SAMPLING_KEYS if sampling.get(k) is not None}
    return {"kind": "chat", "model": model, "api_base": api_base, "messages": messages, **params}


def text_request(model: str, api_base: str | None, prompt: str, **sampling: Any) -> dict[str, Any]:
    """The canonical form of a text completion request (a base model continuing a prompt)."""
    params = {k: sampling[k] for k in SAMPLING_KEYS if sampling.get(k) is not None}
    return {"kind": "text", "model": model, "api_base": api_base, "prompt": prompt, **params}


def entry_problem(value: Any) -> str | None:
    """What is wrong with a cached value, or None: every entry has a ``text``; a refusal, its ``error``."""
    if not isinstance(value, dict):
        return f"not a record but a {type(value).__name__}"
    if not isinstance(value.get("text"), str):
        return "missing its 'text' field" if "text" not in value else "a 'text' that is not a string"
    if value.get("refused") and not isinstance(value.get("error"), str):
        return "a refusal without its 'error' field"
    return None


def is_refusal(value: dict[str, Any]) -> bool:
    return value.get("refused") is True


class ResponseCache:
    """A diskcache store under ``cache_dir/responses``, with hit and miss counts per process.

    ``journal``: a file each key read or written is appended to, once (a run's ``cache_keys.txt``).
    """

    def __init__(self, cache_dir: str | Path, journal: Path | None = None):
        self.dir = Path(cache_dir)
        self.layout = CacheLayout(self.dir)
        self.responses = self.layout.responses
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ConfigError(f"{self.dir}: the cache directory is a file; point run.cache_dir (or --cache-dir) "
                              "at a directory") from None
        try:
            self._store = _open(self.responses)
        except sqlite3.DatabaseError as exc:
            raise self._broken(exc) from None
        self.journal = journal
        self._journaled: set[str] = set()
        self.hits = 0
        self.misses = 0

    def _broken(self, exc: Exception) -> ConfigError:
        return ConfigError(
            f"{self.responses / 'cache.db'}: the response cache is not a readable SQLite database ({exc}). Delete "
            f"the folder {self.responses} to start an empty cache (its answers are asked again, and paid for), "
            "or point run.cache_dir (or --cache-dir) at another folder")

    def _read(self, key: str) -> Any:
        try:
            return self._store.get(key)
        except sqlite3.DatabaseError as exc:
            raise self._broken(exc) from None
        except PickledEntry:
            raise pickled(self.dir) from None
        except _UNREADABLE as exc:
            raise self._bad_entry(key, f"unreadable ({type(exc).__name__}: {exc})") from None

    def _bad_entry(self, key: str, problem: str) -> ConfigError:
        return ConfigError(
            f"{self.responses}: the cached entry {key} is {problem}. Remove it with `dpokd cache clear --key {key} "
            f"--cache-dir {self.dir}` and re-run: that one answer is asked again")

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._read(key)
        if value is None:
            self.misses += 1
            return None
        if (problem := entry_problem(value)) is not None:
            raise self._bad_entry(key, problem)
        self.hits += 1
        self._record(key)
        return value

    def put(self, key: str, value: dict[str, Any], *, owner: str | None = None) -> None:
        """Store one answer durably (diskcache commits each write to SQLite), releasing ``owner``'s claim
        on it in the same transaction."""
        try:
            with self._store.transact():
                self._store.set(key, {**value, "stored_at": time.time()})
                if owner is not None:
                    self._unclaim(key, owner, None)
        except sqlite3.DatabaseError as exc:
            raise self._broken(exc) from None
        self._record(key)

    def transaction(self):
        """``with cache.transaction():`` the writes inside commit together, or not at all."""
        return self._store.transact()

    # -- claims: a request in flight once, across processes -----------------------------------------
    def claim(self, key: str, owner: str, lease: float, *, seen: str | None = None, alive=None,
              accept=None) -> tuple[str, dict[str, Any] | None]:
        """Claim ``key`` for ``owner`` for ``lease`` seconds, in one transaction. Returns ``("ours", None)``,
        ``("answered", entry)``, ``("held", claim)`` while another owner's claim is live, or ``("failed",
        claim)`` where the owner ``seen`` holding it gave up (its failure is the answer waited for).

        A claim whose lease ran out, or whose owner ``alive(owner)`` says is gone, is taken over; an
        entry ``accept(entry)`` refuses (a refusal to ask again) is asked again."""
        now = time.time()
        try:
            with self._store.transact():
                if (entry := self._read(key)) is not None and (accept is None or accept(entry)):
                    self._record(key)  # this run used it: its replay bundle holds it
                    return "answered", entry
                held = self._store.get(CLAIM + key)
                if isinstance(held, dict) and held.get("owner") != owner:
                    if held.get("failed") is not None and held["owner"] == seen:
                        return "failed", held
                    live = held.get("failed") is None and held.get("until", 0) > now
                    if live and (alive is None or alive(held["owner"])):
                        return "held", held
                self._store.set(CLAIM + key, {"owner": owner, "until": now + lease})
        except sqlite3.DatabaseError as exc:
            raise self._broken(exc) from None
        return "ours", None

    def renew(self, keys: Iterable[str], owner: str, lease: float) -> None:
        """Extend ``owner``'s live claims on ``keys``; one taken over meanwhile stays the other's."""
        until = time.time() + lease
        with self._store.transact():
            for key in keys:
                held = self._store.get(CLAIM + key)
                if isinstance(held, dict) and held.get("owner") == owner and held.get("failed") is None:
                    self._store.set(CLAIM + key, {**held, "until": until})

    def unclaim(self, key: str, owner: str, failure: str | None = None) -> None:
        """Give up ``owner``'s claim: simply, or leaving ``failure`` for the processes waiting on it."""
        with self._store.transact():
            self._unclaim(key, owner, failure)

    def _unclaim(self, key: str, owner: str, failure: str | None) -> None:
        held = self._store.get(CLAIM + key)
        if not isinstance(held, dict) or held.get("owner") != owner:
            return  # taken over: the claim is the new owner's
        if failure is None:
            self._store.delete(CLAIM + key)
        else:
            self._store.set(CLAIM + key, {"owner": owner, "failed": failure, "until": time.time()})

    def claims(self, keys: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """The claim on each of ``keys`` (None: unclaimed), as it is now."""
        return {key: self._store.get(CLAIM + key) for key in keys}

    def _record(self, key: str) -> None:
        if self.journal is None or key in self._journaled or not self.journal.parent.is_dir():
            return
        self._journaled.add(key)
        with open(self.journal, "a", encoding="utf-8") as fh:
            fh.write(key + "\n")

    # -- whole-cache operations -------------------------------------------------------------------
    def items(self, keys: Iterable[str]) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """The stored values of ``keys`` as they are (None where absent), checked, not counted."""
        for key in keys:
            value = self._read(key)
            if value is not None and (problem := entry_problem(value)) is not None:
                raise self._bad_entry(key, problem)
            yield key, value

    def add(self, entries: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Store entries as given (a replay bundle's), in one transaction. Returns how many."""
        n = 0
        with self._store.transact():
            for key, value in entries:
                self._store.set(key, value)
                n += 1
        return n

    def delete(self, keys: Iterable[str]) -> int:
        """Remove these entries; returns how many were there (a damaged one included)."""
        return sum(bool(self._store.delete(key)) for key in keys)

    def refused_keys(self) -> list[str]:
        keys = []
        try:
            stored = list(self._store.iterkeys())
        except PickledEntry:
            raise pickled(self.dir) from None
        for key in stored:
            try:
                value = self._store.get(key)
            except PickledEntry:
                raise pickled(self.dir) from None
            except _UNREADABLE:
                continue
            if isinstance(value, dict) and is_refusal(value):
                keys.append(key)
        return keys

    def save_counts(self) -> None:
        """Record this run's hits and misses for ``dpokd cache stats``."""
        self.layout.last_run.write_text(json.dumps({"hits": self.hits, "misses": self.misses}))

    def stats(self) -> dict[str, Any]:
        last_file = self.layout.last_run
        try:
            last = json.loads(last_file.read_text()) if last_file.exists() else {}
        except ValueError:
            last = {}
        try:
            claims = [key for key in self._store.iterkeys() if key.startswith(CLAIM)]
            entries, volume = len(self._store) - len(claims), self._store.volume()
            in_flight = sum(_live(self._store.get(key)) for key in claims)
        except sqlite3.DatabaseError as exc:
            raise self._broken(exc) from None
        return {
            "directory": str(self.dir),
            "entries": entries,
            "refusals": len(self.refused_keys()),
            "size_bytes": volume,
            "last_run_hits": last.get("hits", 0),
            "last_run_misses": last.get("misses", 0),
            "requests_in_flight": in_flight,
            "requests_waiting_in_batches": self._waiting_in_batches(),
        }

    def _waiting_in_batches(self) -> int:
        """Requests submitted to a provider's batch API whose answers have not been collected yet."""
        if not self.layout.batches.exists():
            return 0
        return len(PendingBatches(self.dir))

    def clear(self) -> None:
        """Delete every answer; batches still waiting are kept, so a re-run collects them unpaid."""
        self._store.clear()
        self.layout.last_run.unlink(missing_ok=True)


def _live(claim: Any) -> bool:
    """A claim whose owner is asking now: not given up, its lease not run out."""
    return isinstance(claim, dict) and claim.get("failed") is None and claim.get("until", 0) > time.time()


def pickled(cache_dir: Path) -> ConfigError:
    return ConfigError(
        f"{cache_dir}: holds entries stored as Python pickles (an earlier dpokd wrote them so), and loading a "
        "pickle can run code, so dpokd does not. If this cache is your own, convert it once with `dpokd cache "
        f"upgrade --cache-dir {cache_dir}`; otherwise point run.cache_dir (or --cache-dir) at another folder")


class PendingBatches:
    """Which batch each submitted request is waiting in: ``cache_dir/batches``, kept by ``cache clear``."""

    def __init__(self, cache_dir: str | Path):
        path = CacheLayout(cache_dir).batches
        self._cache_dir = Path(cache_dir)
        try:
            self._store = _open(path)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path / 'cache.db'}: the record of submitted batches is not a readable SQLite "
                              f"database ({exc}). Delete the folder {path} (batches still running are then submitted "
                              "and paid for again), or point run.cache_dir at another folder") from None

    def get(self, key: str) -> str | None:
        try:
            record = self._store.get(key)
        except PickledEntry:
            raise pickled(self._cache_dir) from None
        return record["batch_id"] if record else None

    def add(self, keys: list[str], batch_id: str) -> None:
        with self._store.transact():
            for key in keys:
                self._store.set(key, {"batch_id": batch_id, "submitted_at": time.time()})

    def remove(self, keys) -> None:
        with self._store.transact():
            for key in keys:
                self._store.delete(key)

    def __len__(self) -> int:
        return len(self._store)
