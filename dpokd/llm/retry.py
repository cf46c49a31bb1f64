"""The retry policy every API call of the LLM client follows, live answers and batch calls alike.

Which failures are retried (429, 5xx, timeouts, broken connections), how long to wait between
attempts (the provider's Retry-After up to ``max_retry_wait``, else exponential backoff with
jitter), and the rpm/tpm limiter that spaces requests.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import random
import socket
import time
from collections import deque
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, Iterator
from urllib.parse import urlsplit

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# The provider refused the key: asking again cannot help, and the user must change something.
FATAL_STATUS = frozenset({401, 403})
# Connection failures that mean nothing listens there, or no route leads there (names that do not
# resolve are socket.gaierror); a reset or a timeout may be a busy server and is not among them.
UNREACHABLE_ERRNO = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH})


@dataclass(frozen=True)
class Failure:
    """One failed call, classified: ``fatal`` (the key was refused) or ``retryable``, and why.

    ``unreachable`` holds the OS's words when no connection was made (``connection refused``), and
    ``url`` where the call went: litellm reports these as an HTTP 500 of its own, which they are not.
    """

    exc: BaseException
    status: int | None
    retryable: bool
    unreachable: str | None = None
    url: str | None = None

    @property
    def fatal(self) -> bool:
        return self.status in FATAL_STATUS

    @property
    def reason(self) -> str:
        """``RateLimitError (HTTP 429)``: the error's class and status, never its text (it may echo a key);
        ``could not connect to URL: connection refused`` where no connection was made."""
        if self.unreachable:
            return f"could not connect to {self.url or 'the server'}: {self.unreachable}"
        name = type(self.exc).__name__
        return f"{name} (HTTP {self.status})" if self.status else name


def classify(exc: BaseException, *, once: bool = False) -> Failure:
    """Classify an exception from a litellm call (litellm maps every provider error onto openai's classes).

    ``once``: a call that must not be repeated blindly (creating a batch): a timeout or a broken
    connection may hide a request that took effect, so only an explicit refusal is retried.
    """
    status = getattr(exc, "status_code", None)
    retryable = status is None or status in RETRYABLE_STATUS
    if once and retryable and (status is None or _unanswered(exc)):
        retryable = False
    return Failure(exc=exc, status=status, retryable=retryable, unreachable=unreachable(exc), url=_url(exc))


def unreachable(exc: BaseException) -> str | None:
    """The OS's words, lower-cased, for a connection that could not be made (``connection refused``,
    ``name or service not known``), found anywhere in ``exc``'s chain; None for any other failure."""
    for cause in _chain(exc):
        if isinstance(cause, socket.gaierror):
            words = cause.strerror or str(cause)
        elif isinstance(cause, OSError) and cause.errno in UNREACHABLE_ERRNO:
            words = os.strerror(cause.errno)  # aiohttp's own text names the address, not the error
        else:
            continue
        return words[:1].lower() + words[1:]
    return None


def _url(exc: BaseException) -> str | None:
    """Where the failed call went, from the innermost request in the chain (litellm's outer errors carry a
    placeholder), without credentials or query string: it may hold a key."""
    found = None
    for cause in _chain(exc):
        try:
            url = urlsplit(str(cause.request.url))  # httpx raises, not returns None, for a missing request
        except Exception:
            continue
        if url.scheme and url.netloc:
            found = f"{url.scheme}://{url.netloc.rpartition('@')[2]}{url.path}"
    return found


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _unanswered(exc: BaseException) -> bool:
    """A timeout or a broken connection: litellm gives these a status (408, 500) of their own."""
    from litellm import APIConnectionError, Timeout  # litellm is loaded: the call that failed came from it

    return isinstance(exc, (APIConnectionError, Timeout))


@dataclass(frozen=True)
class GaveUp:
    """How a call that never succeeded ended: its last failure, and whether it was worth retrying."""

    failure: Failure
    attempts: int
    wait_too_long: bool = False  # the provider asked for a wait longer than max_retry_wait


async def with_retries(call: Callable[[], Awaitable[Any]], *, max_retries: int, max_retry_wait: float,
                       once: bool = False) -> Any:
    """``await call()`` until it succeeds; a GaveUp (returned, not raised) when it does not.

    A fatal failure, a failure not worth retrying and the last attempt's failure end it at once.
    """
    for attempt in range(max_retries + 1):
        try:
            return await call()
        except Exception as exc:  # classified below; the caller decides what a give-up means
            failure = classify(exc, once=once)
        if failure.fatal or not failure.retryable or attempt == max_retries:
            return GaveUp(failure, attempt + 1)
        wait = backoff(attempt, failure.exc, max_retry_wait)
        if wait is None:
            return GaveUp(failure, attempt + 1, wait_too_long=True)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable: the last attempt returns")


def backoff(attempt: int, exc: BaseException, max_retry_wait: float) -> float | None:
    """Seconds to wait before retrying: the provider's Retry-After, else exponential backoff with
    jitter. None when the provider asks for longer than ``max_retry_wait``: not worth waiting for."""
    wait = retry_after(exc)
    if wait is None:
        return min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.5)
    return wait if wait <= max_retry_wait else None


def too_long(exc: BaseException, field: str, max_retry_wait: float) -> str:
    return (f"the provider asked to retry after {retry_after(exc):g} s, longer than "
            f"{field}.max_retry_wait = {max_retry_wait:g} s")


def retry_after(exc: BaseException) -> float | None:
    """The wait in seconds a provider's error asks for (``Retry-After``, or ``retry-after-ms``), or None.

    litellm keeps the headers on ``exc.response`` for OpenAI-style providers and in
    ``litellm_response_headers`` for others (Gemini). An unreadable or non-finite value reads as
    infinitely long, so that it is never waited for.
    """
    response = getattr(exc, "response", None)
    for headers in (getattr(response, "headers", None), getattr(exc, "litellm_response_headers", None)):
        if not headers:
            continue
        if (ms := headers.get("retry-after-ms")) is not None:
            try:
                return _finite(float(ms) / 1000)
            except ValueError:
                return math.inf
        if (value := headers.get("retry-after")) is not None:
            return _seconds(value)
    return None


def _seconds(value: str) -> float:
    """A Retry-After value: seconds, or an HTTP date."""
    try:
        return _finite(float(value))
    except ValueError:
        pass
    try:
        return _finite(parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return math.inf


def _finite(seconds: float) -> float:
    return max(0.0, seconds) if math.isfinite(seconds) else math.inf


WINDOW = 60.0  # seconds: the minute of rpm and tpm


class Limiter:
    """Requests-per-minute and tokens-per-minute over a sliding 60 s window.

    Only a limit that is set keeps its window's requests (a start time, or a start time and a token
    estimate), with a running total of the tokens: each request costs the same however many are in
    the window, and nothing is kept where no limit is set."""

    def __init__(self, rpm: int | None, tpm: int | None):
        self.rpm = rpm
        self.tpm = tpm
        self.starts: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self.in_window = 0  # the tokens of ``tokens``

    async def acquire(self, estimate: int) -> None:
        if not (self.rpm or self.tpm):
            return
        while True:
            now = time.monotonic()
            self._forget(now)
            waits = []
            if self.rpm and len(self.starts) >= self.rpm:
                waits.append(WINDOW - (now - self.starts[0]))
            if self.tpm and self.tokens and self.in_window + estimate > self.tpm:
                waits.append(WINDOW - (now - self.tokens[0][0]))
            if not waits:
                if self.rpm:
                    self.starts.append(now)
                if self.tpm:
                    self.tokens.append((now, estimate))
                    self.in_window += estimate
                return
            await asyncio.sleep(max(0.01, min(waits)))

    def _forget(self, now: float) -> None:
        """Drop the requests that have left the window."""
        while self.starts and now - self.starts[0] >= WINDOW:
            self.starts.popleft()
        while self.tokens and now - self.tokens[0][0] >= WINDOW:
            self.in_window -= self.tokens.popleft()[1]
