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
from typing import TYPE_CHECKING, Any

from ..cache import PendingBatches
from ..errors import StageFailed
from ..progress_bar import progress
from ..records import Completion, Example
from .retry import GaveUp, with_retries

if TYPE_CHECKING:
    from .client import LLMClient

# The providers litellm has a batch API for (``litellm.acreate_batch``).
BATCH_PROVIDERS = frozenset({"openai", "azure", "vertex_ai", "bedrock", "hosted_vllm", "litellm_proxy", "mistral", "xai"})
FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
ENDPOINT = "/v1/chat/completions"


class BatchRunner:
    """Answers one ``complete`` call's uncached requests through the provider's batch API.

    It uses only the client's public methods; ``run`` returns the answers by index, and
    ``failed`` counts the requests that failed (each distinct request once).
    """

    def __init__(self, client: LLMClient, litellm, label: str, validate):
        self.client, self.litellm, self.label, self.validate = client, litellm, label, validate
        self.options = client.options
        self.pending = PendingBatches(client.context.cache_dir)
        self.failed = 0
        model_name, provider, _, _ = litellm.get_llm_provider(self.options.model, api_base=self.options.api_base)
        self.model_name = model_name
        self.credentials = {"custom_llm_provider": provider, **{k: v for k, v in {
            "api_base": self.options.api_base, "api_key": client.api_key()}.items() if v is not None}}
        self.waiting: dict[str, list[str]] = {}  # batch id -> the request keys it answers
        self.shown: dict[str, int] = {}  # batch id -> answers counted on the progress bar
        self.results: dict[int, Completion] = {}

    async def run(self, examples: list[Example], prompts: list[str], keys: list[str],
                  todo: list[int]) -> dict[int, Completion]:
        self.examples, self.prompts = examples, prompts
        self.indices: dict[str, list[int]] = {}
        for i in todo:
            self.indices.setdefault(keys[i], []).append(i)
        fresh = self._resumed()
        with progress(self.client.context, f"{self.label} (batch)", len(self.indices)) as advance:
            await self._wait(advance)
            if self.options.max_usd is None:
                step = self.options.batch_max_requests
                for start in range(0, len(fresh), step):
                    await self._submit(fresh[start:start + step])
                await self._wait(advance)
            else:
                await self._one_at_a_time(fresh, advance)
        return self.results

    def _resumed(self) -> list[str]:
        """Take up the batches an earlier run submitted; returns the keys no batch holds yet."""
        fresh: list[str] = []
        for key in self.indices:
            batch_id = self.pending.get(key)
            (self.waiting.setdefault(batch_id, []) if batch_id else fresh).append(key)
        if self.waiting:
            self.client.context.log(f"{self.label}: resuming {len(self.waiting)} batch(es) with "
                                    f"{sum(map(len, self.waiting.values()))} requests submitted by an earlier run")
        return fresh

    async def _one_at_a_time(self, queue: list[str], advance) -> None:
        # A batch's cost is known only when it ends: under a budget, batches go one at a time,
        # each as large as the remaining budget covers at its requests' worst case.
        while queue:
            chunk = self._affordable(queue[:self.options.batch_max_requests])
            if not chunk:
                break
            queue = queue[len(chunk):]
            await self._submit(chunk)
            await self._wait(advance)

    def _affordable(self, keys: list[str]) -> list[str]:
        """The longest prefix of ``keys`` whose worst-case batch cost the run's remaining budget covers."""
        budget = self.client.budget
        room = budget.room()
        chunk: list[str] = []
        for key in keys:
            need = self.client.worst_case(self.litellm, self.prompts[self.indices[key][0]], batch=True)
            if need > room:
                budget.block(need)
                break
            room -= need
            chunk.append(key)
        return chunk

    async def _submit(self, chunk: list[str]) -> None:
        lines = []
        for key in chunk:
            i = self.indices[key][0]
            sampling = self.client.sampling(self.prompts[i], self.examples[i])
            extra = sampling.pop("extra_body", None) or {}  # on the body's top level
            body = {"model": self.model_name, "messages": self.client.messages(self.prompts[i]), **sampling, **extra}
            lines.append(json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}))
        data = ("\n".join(lines) + "\n").encode()
        file = await self._call(self.litellm.acreate_file, file=("dpokd-batch.jsonl", data), purpose="batch")
        batch = await self._call(self.litellm.acreate_batch, once=True, completion_window="24h", endpoint=ENDPOINT,
                                 input_file_id=file.id, metadata={"dpokd": self.label})
        self.pending.add(chunk, batch.id)
        self.waiting[batch.id] = chunk
        self.client.context.log(f"{self.label}: submitted batch {batch.id} with {len(chunk)} requests; "
                                "stopping now is safe, a re-run resumes it")

    async def _wait(self, advance) -> None:
        while self.waiting:
            for batch_id in list(self.waiting):
                await self._poll(batch_id, advance)
            if self.waiting:
                await asyncio.sleep(self.options.batch_poll_seconds)

    async def _poll(self, batch_id: str, advance) -> None:
        # None: the provider no longer has it, and its requests are submitted again next run.
        batch = await self._call(self.litellm.aretrieve_batch, gone_ok=True, batch_id=batch_id)
        counts = getattr(batch, "request_counts", None)
        done = (counts.completed or 0) + (counts.failed or 0) if counts else 0
        advance(max(0, done - self.shown.get(batch_id, 0)), status=f"{batch_id}: {getattr(batch, 'status', 'gone')}")
        self.shown[batch_id] = max(done, self.shown.get(batch_id, 0))
        if batch is not None and batch.status not in FINISHED:
            return
        answered = await self._collect(batch)
        status = batch.status if batch is not None else "gone from the provider"
        ours = self.waiting.pop(batch_id)
        for key in ours:
            if key not in answered:
                self.failed += 1
                for i in self.indices[key]:
                    self.results[i] = Completion.failed(self.examples[i], f"not answered: batch {batch_id} {status}")
        self.pending.remove(set(ours) | answered)
        advance(max(0, len(ours) - self.shown[batch_id]))
        self.client.context.log(f"{self.label}: batch {batch_id} {status}, {len(answered)} answered")

    async def _collect(self, batch) -> set[str]:
        """Cache every answer of a finished batch; keep the ones asked for. Returns the keys answered."""
        answered: set[str] = set()
        for file_id in (batch.output_file_id, batch.error_file_id) if batch is not None else ():
            if not file_id:
                continue
            content = await self._call(self.litellm.afile_content, file_id=file_id)
            for line in content.content.decode().splitlines():
                if line.strip():
                    answered.add(self._answer(json.loads(line)))
        return answered

    def _answer(self, row: dict[str, Any]) -> str:
        """One line of a batch's output or error file: cached if it is an answer or a refusal; returns its key."""
        key, response = row["custom_id"], row.get("response") or {}
        asked = [self.examples[i] for i in self.indices.get(key, [])]
        body = response.get("body") if response.get("status_code") == 200 else None
        if body is None:
            error = row.get("error") or (response.get("body") or {}).get("error") or {}
            completions = [Completion.failed(e, f"batch error {error.get('code') or ''}: "
                                                f"{error.get('message', '?')}") for e in asked]
            self.failed += 1
        else:
            choice = body["choices"][0]
            fields = self.client.answer_fields(self.litellm, choice["message"].get("content"),
                                               choice.get("finish_reason"), body.get("model"),
                                               body.get("usage") or {}, batch=True)
            completions = [self.client.verdict(e, fields, self.validate) for e in asked or [Example(id=key, prompt="")]]
            self.client.store(key, completions[0])  # an answer or a refusal
            if not completions[0].ok:
                self.failed += 1
        for i, completion in zip(self.indices.get(key, []), completions):
            self.results[i] = completion
        return key

    async def _call(self, fn, *, gone_ok: bool = False, once: bool = False, **kwargs) -> Any:
        """One batch-API call under the client's retry policy: a refused key is the client's ConfigError,
        a 404 None where ``gone_ok``, and a call that never succeeds a StageFailed.

        ``once``: a call that must not be repeated blindly (creating a batch): a timeout or a broken
        connection may hide a batch that was created, so only an explicit refusal is retried.
        """
        o = self.options
        # max_retries=0: the OpenAI SDK would otherwise retry a timed-out create on its own.
        result = await with_retries(lambda: fn(timeout=o.timeout, max_retries=0, **kwargs, **self.credentials),
                                    max_retries=o.max_retries, max_retry_wait=o.max_retry_wait, once=once)
        if not isinstance(result, GaveUp):
            return result
        failure = result.failure
        if failure.fatal:
            raise self.client.refused_key(failure.status) from None
        if failure.status == 404 and gone_ok:
            return None
        if result.wait_too_long:
            why = self.client.too_long(failure.exc)
        elif failure.unreachable:
            why = failure.reason
        else:
            why = f"{type(failure.exc).__name__}{f' (HTTP {failure.status})' if failure.status else ''}: {str(failure.exc)[:200]}"
        raise StageFailed(f"{self.client.field}: the batch API call {fn.__name__} failed: {why}. Submitted batches "
                          "are recorded in the cache directory; re-run to resume them") from None
