"""A loopback OpenAI-compatible server for testing plugins against real litellm over real HTTP.

Point litellm at it with ``model="openai/NAME", api_base=server.url``. Each request can be
scripted (a delay, a 429 with Retry-After, a 500, a hang, malformed JSON, a safety-blocked empty
answer); the server records every request and the most it had in flight at once.

It also serves OpenAI's batch API (``/v1/files`` and ``/v1/batches``): a batch answers its lines
with the same responder and rules, and ``hold_batches`` keeps batches in progress until released.
And it serves what a vLLM server adds: text completions (``/v1/completions``), ``/v1/models`` and
runtime LoRA loading (``/v1/load_lora_adapter``, recorded in ``adapters``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable


def _last_user(body: dict[str, Any]) -> str:
    """The last user message of a chat request (OpenAI or Gemini shape), or a text completion's prompt."""
    if "prompt" in body:
        return body["prompt"]
    if "contents" in body:
        return next(("".join(p.get("text", "") for p in c.get("parts", []))
                     for c in reversed(body["contents"]) if c.get("role", "user") == "user"), "")
    return next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")


class LoopbackServer:
    """``with LoopbackServer() as server: ...``; runs an aiohttp app in a thread on 127.0.0.1."""

    def __init__(self, responder: Callable[[dict[str, Any]], str] | None = None, *, latency: float = 0.0,
                 model_id: str | None = None, port: int = 0, served_model: str = "loopback"):
        self.responder = responder or (lambda body: "echo: " + _last_user(body))
        self.latency = latency
        self.model_id = model_id
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._plan: deque[dict[str, Any]] = deque()
        self._rules: list[tuple[Callable[[dict[str, Any]], bool], dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_polls = 0
        self.batch_creates = 0
        self.hold_batches = threading.Event()  # set: batches stay in progress
        self.served_model = served_model
        self.adapters: dict[str, str] = {}  # LoRA name -> path, as loaded at runtime

    # -- scripting -----------------------------------------------------------------------------
    def plan(self, *behaviours: dict[str, Any]) -> None:
        """Behaviours for the next requests, in order: ``{"status": 429, "retry_after": 1}``,
        ``{"status": 500}``, ``{"delay": 0.2}``, ``{"hang": True}``, ``{"malformed": True}``,
        ``{"blocked": True}``, ``{"prompt_blocked": True}`` (Gemini only), ``{"finish_reason": "length"}``."""
        with self._lock:
            self._plan.extend(behaviours)

    def when(self, predicate: Callable[[dict[str, Any]], bool], behaviour: dict[str, Any]) -> None:
        """Apply ``behaviour`` to every request whose JSON body matches ``predicate``."""
        self._rules.append((predicate, behaviour))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.headers.clear()
            self.max_in_flight = 0
            self._plan.clear()
            self._rules.clear()
            self.files.clear()
            self.batches.clear()
            self.batch_polls = 0
            self.batch_creates = 0
            self.adapters.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- serving -------------------------------------------------------------------------------
    def _behaviour(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            behaviour = self._plan.popleft() if self._plan else {}
        for predicate, rule in self._rules:
            if predicate(body):
                behaviour = {**rule, **behaviour}
        return behaviour

    def _reply(self, body: dict[str, Any], behaviour: dict[str, Any]) -> tuple[int, dict[str, Any] | str, dict]:
        """(status, JSON body or raw text, headers) for one chat or text completion request."""
        status = behaviour.get("status", 200)
        if status != 200:
            headers = {"Retry-After": str(behaviour["retry_after"])} if "retry_after" in behaviour else {}
            error = {"error": {"message": behaviour.get("message", f"scripted {status}"), "type": "scripted", "code": status}}
            return status, error, headers
        if behaviour.get("malformed"):
            return 200, '{"id": "x", "choices": [{"message": ', {}
        text = "" if behaviour.get("blocked") else self.responder(body)
        finish = "content_filter" if behaviour.get("blocked") else behaviour.get("finish_reason", "stop")
        prompt_tokens = len(_last_user(body).split()) if "prompt" in body else \
            sum(len(m.get("content", "").split()) for m in body.get("messages", []))
        completion_tokens = len(text.split())
        if "prompt" in body:
            kind, choice = "text_completion", {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        else:
            kind, choice = "chat.completion", {"index": 0, "message": {"role": "assistant", "content": text},
                                               "finish_reason": finish}
        return 200, {
            "id": f"cmpl-{len(self.requests)}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model_id or body.get("model", "loopback"),
            "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }, {}

    def _gemini_reply(self, body: dict[str, Any], behaviour: dict[str, Any]) -> tuple[int, dict[str, Any] | str, dict]:
        """The same, in Gemini's ``generateContent`` shape, with its two kinds of block:
        ``blocked`` (a candidate with ``finishReason: SAFETY`` and no content) and
        ``prompt_blocked`` (no candidate, ``promptFeedback.blockReason``)."""
        status, payload, headers = self._reply(body, {k: v for k, v in behaviour.items() if k != "blocked"})
        if status != 200 or isinstance(payload, str):
            if isinstance(payload, dict):
                payload = {"error": {"code": status, "message": payload["error"]["message"], "status": "SCRIPTED"}}
            return status, payload, headers
        prompt_tokens = len(_last_user(body).split())
        usage = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
        ratings = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]
        if behaviour.get("prompt_blocked"):
            return 200, {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": ratings}, "usageMetadata": usage,
                         "modelVersion": self.model_id or "loopback"}, {}
        if behaviour.get("blocked"):
            candidate = {"finishReason": "SAFETY", "index": 0, "safetyRatings": ratings}
        else:
            text = payload["choices"][0]["message"]["content"]
            usage = {**usage, "candidatesTokenCount": len(text.split()), "totalTokenCount": prompt_tokens + len(text.split())}
            finish = {"stop": "STOP", "length": "MAX_TOKENS"}.get(behaviour.get("finish_reason", "stop"), "OTHER")
            candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish, "index": 0}
        return 200, {"candidates": [candidate], "usageMetadata": usage, "modelVersion": self.model_id or "loopback"}, {}

    async def _gemini(self, request):
        """``POST {api_base}/models/MODEL:generateContent``, where litellm's ``gemini/`` adapter sends."""
        return await self._handle(request, gemini=True)

    async def _handle(self, request, gemini: bool = False):
        from aiohttp import web

        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        behaviour = self._behaviour(body)
        try:
            await asyncio.sleep(behaviour.get("delay", self.latency))
            if behaviour.get("hang"):
                await self._stopping.wait()  # until the server stops: the client must time out first
            status, payload, headers = (self._gemini_reply if gemini else self._reply)(body, behaviour)
            if isinstance(payload, str):
                return web.Response(text=payload, status=status, content_type="application/json")
            return web.json_response(payload, status=status, headers=headers)
        finally:
            with self._lock:
                self.in_flight -= 1

    # -- what a vLLM server adds -------------------------------------------------------------------
    async def _models(self, request):
        from aiohttp import web

        names = [self.served_model, *self.adapters]
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "owned_by": "vllm", "root": self.adapters.get(name, self.served_model)}
            for name in names]})

    async def _load_lora_adapter(self, request):
        from aiohttp import web

        body = await request.json()
        name, path = body["lora_name"], body["lora_path"]
        if name in self.adapters:  # vLLM's answer to a second load of one name
            return web.json_response({"error": {"message": f"The lora adapter '{name}' has already been loaded."}},
                                     status=400)
        if not (Path(path) / "adapter_config.json").exists():
            return web.json_response({"error": {"message": f"No adapter found for {path}"}}, status=404)
        self.adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    # -- the batch API ---------------------------------------------------------------------------
    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}

    async def _create_file(self, request):
        from aiohttp import web

        form = await request.post()
        upload = form["file"]
        self.headers.append(dict(request.headers))
        with self._lock:
            behaviour = self._plan.popleft() if self._plan else {}
        status, payload, headers = self._reply({}, behaviour)
        if status != 200:  # a planned failure: the plan applies to uploads too, the rules do not
            return web.json_response(payload, status=status, headers=headers)
        return web.json_response(self._store_file(upload.file.read(), upload.filename, form.get("purpose", "batch")))

    async def _file_content(self, request):
        from aiohttp import web

        data = self.files.get(request.match_info["file_id"])
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create_batch(self, request):
        from aiohttp import web

        body = await request.json()
        self.headers.append(dict(request.headers))
        self.batch_creates += 1
        with self._lock:
            behaviour = self._plan.popleft() if self._plan else {}
        if behaviour.get("hang"):
            await self._stopping.wait()
        status, payload, headers = self._reply({}, behaviour)
        if status != 200:
            return web.json_response(payload, status=status, headers=headers)
        lines = [json.loads(line) for line in self.files[body["input_file_id"]].decode().splitlines() if line.strip()]
        batch = {"id": f"batch_{len(self.batches) + 1}", "object": "batch", "endpoint": body["endpoint"],
                 "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                 "status": "in_progress", "created_at": int(time.time()), "metadata": body.get("metadata"),
                 "output_file_id": None, "error_file_id": None,
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
        self.batches[batch["id"]] = batch
        batch["_lines"] = lines
        return web.json_response({k: v for k, v in batch.items() if not k.startswith("_")})

    def _finish_batch(self, batch: dict[str, Any]) -> None:
        """Answer every line the way the chat endpoint would, into an output and an error file."""
        output, errors = [], []
        for line in batch.pop("_lines"):
            body = line["body"]
            with self._lock:
                self.requests.append(body)
            status, payload, _ = self._reply(body, self._behaviour(body))
            if isinstance(payload, str) or status != 200:
                error = payload["error"] if isinstance(payload, dict) else {"message": "malformed"}
                errors.append({"id": f"resp-{len(errors)}", "custom_id": line["custom_id"], "response": None,
                               "error": {"code": str(status), "message": error["message"]}})
            else:
                output.append({"id": f"resp-{len(output)}", "custom_id": line["custom_id"], "error": None,
                               "response": {"status_code": 200, "request_id": "r", "body": payload}})
        for name, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                data = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[name] = self._store_file(data, f"{batch['id']}_{name}.jsonl", "batch_output")["id"]
        batch["request_counts"].update(completed=len(output), failed=len(errors))
        batch["status"] = "completed"

    async def _retrieve_batch(self, request):
        from aiohttp import web

        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        self.batch_polls += 1
        if batch["status"] == "in_progress" and not self.hold_batches.is_set():
            self._finish_batch(batch)
        return web.json_response({k: v for k, v in batch.items() if not k.startswith("_")})

    def _serve(self) -> None:
        from aiohttp import web

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/chat/completions", self._handle)
        app.router.add_post("/v1/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/models/{target}", self._gemini)
        app.router.add_post("/v1/load_lora_adapter", self._load_lora_adapter)
        app.router.add_post("/v1/files", self._create_file)
        app.router.add_get("/v1/files/{file_id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches/{batch_id}", self._retrieve_batch)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> "LoopbackServer":
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
    """``python -m dpokd.testing [PORT] [LATENCY]``: serve until interrupted (for manual trials)."""
    import sys

    server = LoopbackServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0,
                            latency=float(sys.argv[2]) if len(sys.argv) > 2 else 0.0).start()
    print(json.dumps({"url": server.url}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
