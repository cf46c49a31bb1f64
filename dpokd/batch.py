"""The provider batch-API path of the LLM client: about half the price, answers within a day.

The uncached requests go up as one JSONL file per batch in OpenAI's batch format, which litellm
translates for Azure, Vertex AI and Bedrock. Each request's batch id is recorded in the cache
directory the moment the batch exists, so a run stopped while it waits (Ctrl-C, a crash, a
closed laptop) resumes polling the same batch on the next run instead of paying for it twice.
Every answer in a finished batch is cached, even one no longer asked for: it was paid for.
Under ``max_usd`` a batch holds only as many requests as the run's remaining budget covers at
their worst case (prompt plus ``max_tokens`` at the batch price), and batches go one at a time.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError, StageFailed
from .progress import progress

# The providers litellm has a batch API for (``litellm.acreate_batch``).
BATCH_PROVIDERS = frozenset({"openai", "azure", "vertex_ai", "bedrock", "hosted_vllm", "litellm_proxy", "mistral", "xai"})
FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
ENDPOINT = "/v1/chat/completions"


class PendingBatches:
    """Which batch each submitted request is waiting in: ``cache_dir/batches``, kept by ``cache clear``."""

    def __init__(self, cache_dir: str | Path):
        import sqlite3

        import diskcache

        path = Path(cache_dir) / "batches"
        try:
            self._store = diskcache.Cache(str(path))
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path / 'cache.db'}: the record of submitted batches is not a readable SQLite "
                              f"database ({exc}). Delete the folder {path} (batches still running are then submitted "
                              "and paid for again), or point run.cache_dir at another folder") from None

    def get(self, key: str) -> str | None:
        record = self._store.get(key)
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


async def run_batches(client, litellm, examples, prompts, keys, todo, results, label, validate) -> None:
    """Fill ``results[i]`` for every ``i`` in ``todo`` through the provider's batch API."""
    o = client.options
    pending = PendingBatches(client.context.cache.dir)
    indices: dict[str, list[int]] = {}
    for i in todo:
        indices.setdefault(keys[i], []).append(i)
    model_name, provider, _, _ = litellm.get_llm_provider(o.model, api_base=o.api_base)
    credentials = {"custom_llm_provider": provider, **{k: v for k, v in
                   {"api_base": o.api_base, "api_key": client.api_key()}.items() if v is not None}}
    call = _Caller(client)

    waiting: dict[str, list[str]] = {}
    fresh: list[str] = []
    for key in indices:
        batch_id = pending.get(key)
        (waiting.setdefault(batch_id, []) if batch_id else fresh).append(key)
    if waiting:
        client.context.log(f"{label}: resuming {len(waiting)} batch(es) with {sum(map(len, waiting.values()))} "
                           "requests submitted by an earlier run")

    async def submit(chunk: list[str]) -> None:
        lines = []
        for key in chunk:
            i = indices[key][0]
            body = {"model": model_name, "messages": client.messages(prompts[i]),
                    **{k: v for k, v in client.request(prompts[i], examples[i]).items()
                       if k not in {"kind", "model", "api_base", "messages", "sample"}}}
            lines.append(json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}))
        data = ("\n".join(lines) + "\n").encode()
        file = await call(litellm.acreate_file, file=("dpokd-batch.jsonl", data), purpose="batch", **credentials)
        batch = await call(litellm.acreate_batch, once=True, completion_window="24h", endpoint=ENDPOINT,
                           input_file_id=file.id, metadata={"dpokd": label}, **credentials)
        pending.add(chunk, batch.id)
        waiting[batch.id] = chunk
        client.context.log(f"{label}: submitted batch {batch.id} with {len(chunk)} requests; "
                           "stopping now is safe, a re-run resumes it")

    shown: dict[str, int] = {}

    async def wait(advance) -> None:
        while waiting:
            for batch_id in list(waiting):
                # None: the provider no longer has it, and its requests are submitted again next run.
                batch = await call(litellm.aretrieve_batch, gone_ok=True, batch_id=batch_id, **credentials)
                counts = getattr(batch, "request_counts", None)
                done = (counts.completed or 0) + (counts.failed or 0) if counts else 0
                advance(max(0, done - shown.get(batch_id, 0)), status=f"{batch_id}: {getattr(batch, 'status', 'gone')}")
                shown[batch_id] = max(done, shown.get(batch_id, 0))
                if batch is None or batch.status in FINISHED:
                    answered = await _collect(client, litellm, call, credentials, batch, indices, examples,
                                              results, validate)
                    status = batch.status if batch is not None else "gone from the provider"
                    ours = waiting.pop(batch_id)
                    for key in ours:
                        if key not in answered:
                            client.usage.failed += 1
                            for i in indices[key]:
                                results[i] = _failed(examples[i], f"not answered: batch {batch_id} {status}")
                    pending.remove(set(ours) | answered)
                    advance(max(0, len(ours) - shown[batch_id]))
                    client.context.log(f"{label}: batch {batch_id} {status}, {len(answered)} answered")
            if waiting:
                await asyncio.sleep(o.batch_poll_seconds)

    chunks = [fresh[start:start + o.batch_max_requests] for start in range(0, len(fresh), o.batch_max_requests)]
    with progress(client.context, f"{label} (batch)", len(indices)) as advance:
        await wait(advance)
        if o.max_usd is None:
            for chunk in chunks:
                await submit(chunk)
            await wait(advance)
        else:
            # A batch's cost is known only when it ends: under a budget, batches go one at a time,
            # each as large as the remaining budget covers at its requests' worst case.
            queue = fresh
            while queue:
                chunk = _affordable(client, litellm, queue[:o.batch_max_requests], indices, prompts)
                if not chunk:
                    break
                queue = queue[len(chunk):]
                await submit(chunk)
                await wait(advance)


async def _collect(client, litellm, call, credentials, batch, indices, examples, results, validate) -> set[str]:
    """Cache every answer of a finished batch; fill the results asked for. Returns the keys answered."""
    from .records import Completion, Example

    answered: set[str] = set()
    for file_id in (batch.output_file_id, batch.error_file_id) if batch is not None else ():
        if not file_id:
            continue
        content = await call(litellm.afile_content, file_id=file_id, **credentials)
        for line in content.content.decode().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            key, response = row["custom_id"], row.get("response") or {}
            answered.add(key)
            asked = [examples[i] for i in indices.get(key, [])]
            body = response.get("body") if response.get("status_code") == 200 else None
            if body is None:
                error = row.get("error") or (response.get("body") or {}).get("error") or {}
                completions = [Completion.failed(e, f"batch error {error.get('code') or ''}: "
                                                    f"{error.get('message', '?')}") for e in asked]
                client.usage.failed += 1
            else:
                choice = body["choices"][0]
                fields = client.answer_fields(litellm, choice["message"].get("content"), choice.get("finish_reason"),
                                              body.get("model"), body.get("usage") or {}, batch=True)
                completions = [client.verdict(e, fields, validate) for e in asked or [Example(id=key, prompt="")]]
                client.store(key, completions[0])  # an answer or a refusal
                if not completions[0].ok:
                    client.usage.failed += 1
            for i, completion in zip(indices.get(key, []), completions):
                results[i] = completion
    return answered


def _affordable(client, litellm, keys: list[str], indices, prompts) -> list[str]:
    """The longest prefix of ``keys`` whose worst-case batch cost the run's remaining budget covers."""
    from .llm import BUDGET_SLACK

    room = client.options.max_usd * (1 + BUDGET_SLACK) - client.spent()
    chunk: list[str] = []
    for key in keys:
        need = client.worst_case(litellm, prompts[indices[key][0]], batch=True)
        if need > room:
            client._blocked_need = need
            break
        room -= need
        chunk.append(key)
    return chunk


def _failed(example, reason):
    from .records import Completion

    return Completion.failed(example, reason)


class _Caller:
    """One batch-API call with the client's retry policy: 429/5xx/connection errors retried with
    backoff, a refused key the client's ConfigError, a 404 None where ``gone_ok``, anything else a StageFailed.

    ``once``: a call that must not be repeated blindly (creating a batch): a timeout or a broken
    connection may hide a batch that was created, so only an explicit refusal is retried.
    """

    def __init__(self, client):
        self.client = client

    async def __call__(self, fn, *, gone_ok: bool = False, once: bool = False, **kwargs) -> Any:
        from litellm import APIConnectionError, Timeout

        from .llm import FATAL_STATUS, RETRYABLE_STATUS

        o = self.client.options
        for attempt in range(o.max_retries + 1):
            try:
                # max_retries=0: the OpenAI SDK would otherwise retry a timed-out create on its own.
                return await fn(timeout=o.timeout, max_retries=0, **kwargs)
            except Exception as exc:  # litellm maps provider errors onto openai's classes
                status = getattr(exc, "status_code", None)
                if status in FATAL_STATUS:
                    raise self.client.refused_key(status) from None
                if status == 404 and gone_ok:
                    return None
                # litellm gives its timeouts and broken connections a status (408, 500) of their own.
                unanswered = status is None or isinstance(exc, (APIConnectionError, Timeout))
                retryable = not (once and unanswered) and (status is None or status in RETRYABLE_STATUS)
                if not retryable or attempt == o.max_retries:
                    raise StageFailed(
                        f"{self.client.field}: the batch API call {fn.__name__} failed: {type(exc).__name__}"
                        f"{f' (HTTP {status})' if status else ''}: {str(exc)[:200]}. Submitted batches are recorded "
                        "in the cache directory; re-run to resume them") from None
                wait = self.client._backoff(attempt, exc)
                if wait is None:
                    raise StageFailed(f"{self.client.field}: the batch API call {fn.__name__} failed: "
                                      f"{self.client.too_long(exc)}. Submitted batches are recorded in the cache "
                                      "directory; re-run to resume them") from None
                await asyncio.sleep(wait)
