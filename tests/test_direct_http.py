"""The direct HTTP path to OpenAI-compatible endpoints answers, fails and prices as litellm's path does."""

import asyncio
import json
import socket
import time

import pytest

from dpokd.interfaces import Context
from dpokd.llm import LLMClient, LLMOptions, import_litellm
from dpokd.llm.client import LITELLM_CALLBACKS
from dpokd.llm.direct import DirectHTTP
from dpokd.llm.retry import classify, retry_after
from dpokd.records import Example
from dpokd.testing import LoopbackServer

MODEL = "openai/gpt-4o-mini"  # priced in litellm's map
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


def failure_of(coroutine):
    async def run():
        try:
            await coroutine()
        except Exception as exc:  # what each path raises, compared below
            return exc
        raise AssertionError("no error")

    return asyncio.run(run())


def via_litellm(url):
    litellm = import_litellm()
    return lambda: litellm.acompletion(model=MODEL, api_base=url, api_key="x", messages=MESSAGES, timeout=5,
                                       num_retries=0, max_retries=0)


def via_direct(url):
    async def call():
        async with DirectHTTP(import_litellm(), MODEL, url, "x", text=False) as http:
            return await http.call(timeout=5, messages=MESSAGES)

    return call


@pytest.mark.parametrize("behaviour", [{"status": 429, "retry_after": "0.2"}, {"status": 400}, {"status": 401},
                                       {"status": 500}, {"status": 503, "retry_after": "7"}, {"malformed": True}],
                         ids=["429", "400", "401", "500", "503", "malformed"])
def test_an_error_is_the_exception_litellm_raises(server, behaviour):
    server.plan(behaviour, behaviour)
    theirs, ours = failure_of(via_litellm(server.url)), failure_of(via_direct(server.url))
    assert type(ours) is type(theirs)
    assert (getattr(ours, "status_code", None), retry_after(ours)) == (getattr(theirs, "status_code", None),
                                                                      retry_after(theirs))
    a, b = classify(ours), classify(theirs)
    assert (a.reason, a.retryable, a.fatal) == (b.reason, b.retryable, b.fatal)


def test_a_refused_connection_is_litellms_error_naming_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    theirs, ours = failure_of(via_litellm(url)), failure_of(via_direct(url))
    assert type(ours) is type(theirs)
    assert classify(ours).reason == classify(theirs).reason == \
        f"could not connect to {url}/chat/completions: connection refused"


PRICED = {"usd_per_million_input": 1.0, "usd_per_million_output": 2.0}


@pytest.mark.parametrize(("text", "model"), [
    (False, {"model": MODEL}),
    (False, {"model": "hosted_vllm/served-model", **PRICED}),
    # A text completion goes to /completions for a base model litellm does not know (a vLLM server's).
    (True, {"model": "openai/base-model", **PRICED}),
    # What a server takes beyond the OpenAI API goes on the body's top level, on either path.
    (True, {"model": "hosted_vllm/served-model", "extra_body": {"add_special_tokens": False, "top_k": 5}, **PRICED}),
], ids=["chat", "vllm-chat", "text", "vllm-text-extra"])
def test_answers_and_prices_are_litellms(server, tmp_path, text, model):
    prompts = [Example(id=f"p{i}", prompt=f"prompt number {i}") for i in range(6)]
    answers = {}
    for direct in (False, True):
        options = LLMOptions(api_base=server.url, direct_http=direct, max_tokens=50, **model)
        client = LLMClient(options, Context(cache_dir=tmp_path / str(direct)), text=text)
        answers[direct] = client.complete(prompts)
    assert [a.text for a in answers[True]] == [a.text for a in answers[False]] == \
        [f"echo: prompt number {i}" for i in range(6)]
    for ours, theirs in zip(answers[True], answers[False]):
        assert (ours.prompt_tokens, ours.completion_tokens, ours.finish_reason, ours.model) == \
            (theirs.prompt_tokens, theirs.completion_tokens, theirs.finish_reason, theirs.model)
        assert ours.cost_usd == pytest.approx(theirs.cost_usd) and ours.cost_usd > 0
    bodies = sorted(json.dumps(r, sort_keys=True) for r in server.requests)
    assert len(bodies) == 12 and bodies[0::2] == bodies[1::2]  # the same bodies on the wire
    extra = model.get("extra_body", {})
    assert all(r.get(k) == v for r in server.requests for k, v in extra.items()) and "extra_body" not in bodies[0]


def test_the_environments_proxy_carries_the_requests(tmp_path, monkeypatch):
    """HTTP_PROXY and NO_PROXY, read once for the whole round, as a session trusting the environment reads them."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://localhost:{s.getsockname()[1]}/v1"  # nothing listens: only a proxy can answer
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    options = LLMOptions(model=MODEL, api_base=closed, max_retries=0, max_failure_share=1.0)
    with LoopbackServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/v1"))
        [answer] = LLMClient(options, Context(cache_dir=tmp_path / "proxied")).complete([Example(id="a", prompt="hi")])
        assert answer.text == "echo: hi" and len(proxy.requests) == 1
        monkeypatch.setenv("NO_PROXY", "localhost")
        [answer] = LLMClient(options, Context(cache_dir=tmp_path / "direct")).complete([Example(id="a", prompt="hi")])
        assert not answer.ok and "connection refused" in answer.error and len(proxy.requests) == 1


def test_a_callback_registered_with_litellm_sees_every_request(server, tmp_path, monkeypatch):
    """A logging integration hooked into litellm would miss the direct path's requests: with one
    registered, the requests go through litellm, which calls it."""
    from litellm.integrations.custom_logger import CustomLogger

    class Seen(CustomLogger):
        def __init__(self):
            super().__init__()
            self.models: list[str] = []

        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
            self.models.append(kwargs["model"])

    litellm = import_litellm()
    seen = Seen()
    # litellm copies `callbacks` into its other registries in place: each gets a copy of its own, restored after.
    for name in LITELLM_CALLBACKS:
        monkeypatch.setattr(litellm, name, list(getattr(litellm, name)))
    litellm.callbacks.append(seen)
    prompts = [Example(id=f"p{i}", prompt=f"prompt number {i}") for i in range(4)]
    options = LLMOptions(model=MODEL, api_base=server.url, max_tokens=50)
    answers = LLMClient(options, Context(cache_dir=tmp_path / "logged")).complete(prompts)
    assert [a.text for a in answers] == [f"echo: prompt number {i}" for i in range(4)]
    for _ in range(50):  # litellm calls its success callbacks in tasks of their own, just after the answer
        if len(seen.models) == 4:
            break
        time.sleep(0.1)
    assert len(seen.models) == 4
