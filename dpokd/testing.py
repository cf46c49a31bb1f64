"""A loopback OpenAI-compatible server for testing plugins against real litellm over real HTTP.

Point litellm at it with ``model="openai/NAME", api_base=server.url``. Each request can be
scripted (a delay, a 429 with Retry-After, a 500, a hang, malformed JSON, a safety-blocked empty
answer); the server records every request and the most it had in flight at once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from typing import Any, Callable


def _last_user(body: dict[str, Any]) -> str:
    return next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")


class LoopbackServer:
    """``with LoopbackServer() as server: ...``; runs an aiohttp app in a thread on 127.0.0.1."""

    def __init__(self, responder: Callable[[dict[str, Any]], str] | None = None, *, latency: float = 0.0,
                 model_id: str | None = None, port: int = 0):
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

    # -- scripting -----------------------------------------------------------------------------
    def plan(self, *behaviours: dict[str, Any]) -> None:
        """Behaviours for the next requests, in order: ``{"status": 429, "retry_after": 1}``,
        ``{"status": 500}``, ``{"delay": 0.2}``, ``{"hang": True}``, ``{"malformed": True}``,
        ``{"blocked": True}``, ``{"finish_reason": "length"}``."""
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- serving -------------------------------------------------------------------------------
    async def _handle(self, request):
        from aiohttp import web

        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            behaviour = self._plan.popleft() if self._plan else {}
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        for predicate, rule in self._rules:
            if predicate(body):
                behaviour = {**rule, **behaviour}
        try:
            await asyncio.sleep(behaviour.get("delay", self.latency))
            if behaviour.get("hang"):
                await self._stopping.wait()  # until the server stops: the client must time out first
            status = behaviour.get("status", 200)
            if status != 200:
                headers = {"Retry-After": str(behaviour["retry_after"])} if "retry_after" in behaviour else {}
                error = {"error": {"message": behaviour.get("message", f"scripted {status}"), "type": "scripted", "code": status}}
                return web.json_response(error, status=status, headers=headers)
            if behaviour.get("malformed"):
                return web.Response(text='{"id": "x", "choices": [{"message": ', content_type="application/json")
            text = "" if behaviour.get("blocked") else self.responder(body)
            finish = "content_filter" if behaviour.get("blocked") else behaviour.get("finish_reason", "stop")
            prompt_tokens = sum(len(m.get("content", "").split()) for m in body.get("messages", []))
            completion_tokens = len(text.split())
            return web.json_response({
                "id": f"cmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model_id or body.get("model", "loopback"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            })
        finally:
            with self._lock:
                self.in_flight -= 1

    def _serve(self) -> None:
        from aiohttp import web

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/chat/completions", self._handle)
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
