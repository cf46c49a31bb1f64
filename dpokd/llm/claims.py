"""A request in flight once across the processes that share a cache: the client's side of the
cache's claims (``ResponseCache.claim``).

A process's claims name it as host, pid, the process's start time (a reused pid is not its owner)
and a token of its own. They are renewed every third of the lease while the process lives, so a
slow provider causes no takeover; a claim whose owner is gone from this host is taken over at once,
one from another host when its lease runs out. A process waiting on claims polls them together,
one read per claim, at an interval that grows with how many it waits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Self

from ..cache import ResponseCache
from ..errors import ConfigError

LEASE_ENV = "DPOKD_CLAIM_LEASE"
DEFAULT_LEASE = 60.0  # seconds a claim lives without renewal
POLL = 0.1  # seconds between looks at the claims waited on, plus a little per claim
POLL_PER_CLAIM = 0.0005


def lease_seconds() -> float:
    """The claims' lease: ``DPOKD_CLAIM_LEASE`` seconds, else a minute."""
    value = os.environ.get(LEASE_ENV)
    if value is None:
        return DEFAULT_LEASE
    try:
        lease = float(value)
    except ValueError:
        lease = 0.0
    if not lease > 0:
        raise ConfigError(f"{LEASE_ENV}={value!r}: the claims' lease must be a positive number of seconds")
    return lease


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), None if there is no such process; "" where
    the platform does not say (no /proc): then only the lease tells a dead owner."""
    if not os.path.isdir("/proc/self"):
        return ""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


HOST = socket.gethostname().replace("/", "_")


def new_owner() -> str:
    return f"{HOST}/{os.getpid()}/{_started(os.getpid())}/{secrets.token_hex(4)}"


def alive(owner: str) -> bool:
    """Whether a claim's owner may still be asking: False only for a process of this host that is gone."""
    try:
        host, pid, started, _ = owner.split("/")
        pid_number = int(pid)
    except ValueError:
        return True
    if host != HOST or started == "":
        return True
    return _started(pid_number) == started


class Claims:
    """This process's claims on one cache, for one round of requests: ``with Claims(cache) as claims``.

    The cache's reads and writes for the round run on a thread of their own, off the event loop: the
    operations that queue up while one transaction commits go together in the next (each answer is
    stored before its ``store`` returns). The same thread renews the claims every third of the lease.
    """

    def __init__(self, cache: ResponseCache, lease: float | None = None):
        self.cache = cache
        self.lease = lease if lease is not None else lease_seconds()
        self.owner = new_owner()
        self._mine: set[str] = set()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="dpokd-cache", daemon=True)
        self._waiting: dict[str, list[asyncio.Future]] = {}
        self._watcher: asyncio.Task | None = None
        self._storing: set[asyncio.Future] = set()
        self._store_failed: BaseException | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._queue.put(None)
        self._thread.join()
        left, self._mine = list(self._mine), set()
        for key in left:  # an interrupted round: free its claims for the others, and for a resume
            self.cache.unclaim(key, self.owner)

    # -- the cache's thread -----------------------------------------------------------------------
    def _work(self) -> None:
        renewed = time.monotonic()
        while True:
            try:
                first = self._queue.get(timeout=self.lease / 3)
            except queue.Empty:
                first = ()
            batch = [first]
            while first is not None and not self._queue.empty():
                batch.append(item := self._queue.get())
                if item is None:
                    break
            jobs = [job for job in batch if job]
            if jobs:
                self._run(jobs)
            if time.monotonic() - renewed >= self.lease / 3 and self._mine:
                # A busy or failing database: tried again at the next pass, while the lease allows.
                with contextlib.suppress(Exception):
                    self.cache.renew(list(self._mine), self.owner, self.lease)
                    renewed = time.monotonic()
            if None in batch:
                return

    def _run(self, jobs: list[tuple]) -> None:
        outcomes = []
        try:
            with self.cache.transaction():
                for fn, args, _, _ in jobs:
                    try:
                        outcomes.append((True, fn(*args)))
                    except Exception as exc:  # this operation's own failure, raised where it was awaited
                        outcomes.append((False, exc))
        except Exception as exc:  # the transaction failed: nothing in it happened
            outcomes = [(False, exc)] * len(jobs)
        for (_, _, future, loop), (ok, value) in zip(jobs, outcomes):
            if future is not None:
                loop.call_soon_threadsafe(_settle, future, ok, value)

    def _do(self, fn, *args) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((fn, args, future, loop))
        return future

    # -- one request ------------------------------------------------------------------------------
    async def take(self, key: str, seen: str | None, accept: Callable[[dict[str, Any]], bool]) -> tuple[str, Any]:
        """``ResponseCache.claim`` for this process; a claim taken is renewed until stored or given up.
        Raises the failure of an answer's storing, so no request is asked after one."""
        self._check_stored()
        state, found = await self._do(self._claim, key, seen, accept)
        self._check_stored()
        return state, found

    def _claim(self, key, seen, accept):
        state, found = self.cache.claim(key, self.owner, self.lease, seen=seen, alive=alive, accept=accept)
        if state == "ours":
            self._mine.add(key)
        return state, found

    def store(self, key: str, value: dict[str, Any], then: Callable[[], None]) -> None:
        """Store the answer and release the claim, in one transaction, queued now: committed with the cache
        thread's next transaction, without the asker waiting for it; ``then()`` is called once it is. A
        failure is raised by every ``take`` after it and by ``stored``."""
        future = self._do(self._store, key, value)
        self._storing.add(future)
        future.add_done_callback(functools.partial(self._settled_store, then))

    def _settled_store(self, then: Callable[[], None], future: asyncio.Future) -> None:
        self._storing.discard(future)
        if future.cancelled():
            return
        if future.exception() is None:
            then()
        elif self._store_failed is None:
            self._store_failed = future.exception()

    async def stored(self) -> None:
        """Wait until every answer queued by ``store`` is committed; raise the first failure."""
        if self._storing:
            await asyncio.wait(set(self._storing))
        self._check_stored()

    def _check_stored(self) -> None:
        if self._store_failed is not None:
            raise self._store_failed

    def _store(self, key, value):
        self.cache.put(key, value, owner=self.owner)
        self._mine.discard(key)

    def give_up(self, key: str, failure: str | None = None) -> None:
        """Release the claim (queued: safe where the caller is being cancelled); ``failure`` is left for
        the processes waiting on it, as their answer."""
        self._queue.put((self._give_up, (key, failure), None, None))

    def _give_up(self, key, failure):
        self.cache.unclaim(key, self.owner, failure)
        self._mine.discard(key)

    async def freed(self, key: str) -> None:
        """Wait until the claim on ``key`` is released, given up, expired, or its owner is gone."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch())
        await future

    async def _watch(self) -> None:
        while self._waiting:
            await asyncio.sleep(POLL + POLL_PER_CLAIM * len(self._waiting))
            held = await self._do(self.cache.claims, list(self._waiting))
            now = time.time()
            for key, claim in held.items():
                live = (isinstance(claim, dict) and claim.get("failed") is None and claim.get("until", 0) > now
                        and alive(claim.get("owner", "")))
                if not live:
                    for future in self._waiting.pop(key, ()):
                        if not future.done():
                            future.set_result(None)


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.done():  # its awaiter was cancelled
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
