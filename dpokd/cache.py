"""The response cache: every paid answer, stored the moment it arrives, keyed by its request.

The key is a versioned hash of the canonical request (model, api_base, messages, sampling
parameters). Nothing that leaves the answer unchanged (timeouts, retries, concurrency) and no
secret is part of it. Student generations share the cache, keyed by the student's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

KEY_VERSION = "v1"
# The sampling parameters that change an answer; everything else is left out of the key.
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "stop", "seed", "n")


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


class ResponseCache:
    """A diskcache store under ``cache_dir/responses``, with hit and miss counts per process."""

    def __init__(self, cache_dir: str | Path):
        import diskcache

        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._store = diskcache.Cache(str(self.dir / "responses"))
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._store.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store one answer durably (diskcache commits each write to SQLite)."""
        self._store.set(key, {**value, "stored_at": time.time()})

    def save_counts(self) -> None:
        """Record this run's hits and misses for ``dpokd cache stats``."""
        (self.dir / "last_run.json").write_text(json.dumps({"hits": self.hits, "misses": self.misses}))

    def stats(self) -> dict[str, Any]:
        last_file = self.dir / "last_run.json"
        last = json.loads(last_file.read_text()) if last_file.exists() else {"hits": 0, "misses": 0}
        return {
            "directory": str(self.dir),
            "entries": len(self._store),
            "size_bytes": self._store.volume(),
            "last_run_hits": last["hits"],
            "last_run_misses": last["misses"],
            "requests_waiting_in_batches": self._waiting_in_batches(),
        }

    def _waiting_in_batches(self) -> int:
        """Requests submitted to a provider's batch API whose answers have not been collected yet."""
        if not (self.dir / "batches").exists():
            return 0
        from .batch import PendingBatches

        return len(PendingBatches(self.dir))

    def clear(self) -> None:
        """Delete every answer; batches still waiting are kept, so a re-run collects them unpaid."""
        self._store.clear()
        (self.dir / "last_run.json").unlink(missing_ok=True)
