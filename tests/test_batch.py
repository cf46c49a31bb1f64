"""The provider batch-API path of the LLM client, against the loopback server's /v1/batches."""

import os
import signal
import subprocess
import sys
import time

import pydantic
import pytest

from dpokd.cache import ResponseCache
from dpokd.cache import PendingBatches
from dpokd.interfaces import Context
from dpokd.plugins.teachers.litellm import LiteLLMTeacher
from dpokd.records import Example
from dpokd.testing import LoopbackServer

MODEL = "openai/gpt-4o-mini"  # priced in litellm's map, with a batch price


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


def examples(n):
    return [Example(id=f"p{i}", prompt=f"prompt number {i}") for i in range(n)]


def teacher(server, cache_dir, offline=False, retry_refused=False, **options):
    opts = {"model": MODEL, "api_base": server.url, "batch": True, "batch_poll_seconds": 0.02, "max_retries": 2,
            "timeout": 5, **options}
    return LiteLLMTeacher(LiteLLMTeacher.Options(**opts), Context(cache_dir=cache_dir, offline=offline,
                                                                  retry_refused=retry_refused))


def test_one_batch_answers_every_prompt_at_half_the_live_price(server, tmp_path):
    batch_teacher = teacher(server, tmp_path / "batch")
    answers = batch_teacher.answer(examples(30))
    assert [a.text for a in answers] == [f"echo: prompt number {i}" for i in range(30)]
    assert list(server.batches) == ["batch_1"] and server.batches["batch_1"]["request_counts"]["total"] == 30
    assert {r["model"] for r in server.requests} == {"gpt-4o-mini"}  # the provider's name, without the prefix

    server.reset()
    live_teacher = teacher(server, tmp_path / "live", batch=False)
    live = live_teacher.answer(examples(30))
    assert [a.text for a in live] == [a.text for a in answers]
    assert live_teacher.usage()["cost_usd"] > 0
    assert batch_teacher.usage()["cost_usd"] == pytest.approx(live_teacher.usage()["cost_usd"] / 2)

    server.reset()
    again = teacher(server, tmp_path / "batch").answer(examples(30))
    assert server.batches == {} and server.files == {}
    assert all(a.cached for a in again) and [a.text for a in again] == [a.text for a in answers]
    assert len(PendingBatches(tmp_path / "batch")) == 0


def test_extra_body_fields_are_on_each_batch_lines_body_as_live_requests_have_them(server, tmp_path):
    extra = {"top_k": 5, "chat_template_kwargs": {"enable_thinking": False}}
    teacher(server, tmp_path / "batch", extra_body=extra).answer(examples(3))
    teacher(server, tmp_path / "live", extra_body=extra, batch=False).answer(examples(3))
    assert len(server.requests) == 6
    assert all({k: r.get(k) for k in extra} == extra and "extra_body" not in r for r in server.requests)


def test_failed_lines_are_resubmitted_alone_and_refusals_replayed(server, tmp_path):
    server.when(lambda body: body["messages"][-1]["content"].endswith(" 3"), {"blocked": True})
    server.when(lambda body: body["messages"][-1]["content"].endswith(" 5"), {"status": 500})
    answers = teacher(server, tmp_path, max_failure_share=0.5).answer(examples(10))
    failed = {a.example_id: a.error for a in answers if not a.ok}
    assert set(failed) == {"p3", "p5"}
    assert "blocked" in failed["p3"] and "500" in failed["p5"]
    stats = ResponseCache(tmp_path).stats()
    assert stats["entries"] == 9 and stats["refusals"] == 1  # the 500 is not an answer; the refusal is

    server.reset()
    retried = teacher(server, tmp_path, max_failure_share=0.5).answer(examples(10))
    assert [a.example_id for a in retried if not a.ok] == ["p3"] and retried[3].error == failed["p3"]
    assert [r["messages"][-1]["content"] for r in server.requests] == ["prompt number 5"]

    server.reset()
    cleared = teacher(server, tmp_path, retry_refused=True).answer(examples(10))
    assert all(a.ok for a in cleared)
    assert [r["messages"][-1]["content"] for r in server.requests] == ["prompt number 3"]


KILL_SCRIPT = """
import sys
from pathlib import Path
from dpokd.interfaces import Context
from dpokd.plugins.teachers.litellm import LiteLLMTeacher
from dpokd.records import Example
options = LiteLLMTeacher.Options(model="openai/gpt-4o-mini", api_base=sys.argv[1], batch=True, batch_poll_seconds=0.02)
LiteLLMTeacher(options, Context(cache_dir=Path(sys.argv[2]))).answer(
    [Example(id=f"p{i}", prompt=f"prompt number {i}") for i in range(40)])
"""


def test_a_run_killed_while_waiting_resumes_the_same_batch(server, tmp_path):
    server.hold_batches.set()
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, server.url, str(tmp_path)], env={**os.environ})
    deadline = time.monotonic() + 60
    while server.batch_polls < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(server.batches) == ["batch_1"] and server.batches["batch_1"]["status"] == "in_progress"
    assert ResponseCache(tmp_path).stats()["requests_waiting_in_batches"] == 40

    server.hold_batches.clear()
    answers = teacher(server, tmp_path).answer(examples(40))
    assert [a.text for a in answers] == [f"echo: prompt number {i}" for i in range(40)]
    assert list(server.batches) == ["batch_1"] and len(server.files) == 2  # the input and its output: nothing new
    assert len(PendingBatches(tmp_path)) == 0


def test_a_refused_key_fails_fast_naming_the_env_var(server, tmp_path):
    from dpokd.errors import ConfigError

    server.plan({"status": 401})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        teacher(server, tmp_path).answer(examples(3))
    assert server.batches == {}


def test_creating_a_batch_is_retried_only_when_refused(server, tmp_path):
    from dpokd.errors import StageFailed

    server.plan({}, {"status": 503}, {})  # upload, a refused create, then a create that works
    assert all(a.ok for a in teacher(server, tmp_path / "a").answer(examples(3)))
    assert server.batch_creates == 2 and len(server.batches) == 1

    server.reset()
    server.plan({}, {"hang": True})  # no answer: a batch may exist, so creating another could pay twice
    with pytest.raises(StageFailed, match="acreate_batch"):
        teacher(server, tmp_path / "b", timeout=0.5).answer(examples(3))
    assert server.batch_creates == 1


def test_a_batch_holds_only_what_the_remaining_budget_covers(server, tmp_path):
    from dpokd.errors import BudgetExceeded

    # $0.01 at most per request (10 tokens at $1000 per million); each answer is 4 tokens, $0.004.
    priced = dict(usd_per_million_input=0.0, usd_per_million_output=1000.0, max_tokens=10)
    t = teacher(server, tmp_path, max_usd=0.05, **priced)
    with pytest.raises(BudgetExceeded, match="max_usd"):
        t.answer(examples(30))
    sizes = [b["request_counts"]["total"] for b in server.batches.values()]
    assert sizes == [5, 3, 1, 1, 1]  # each batch's worst case fits what the earlier ones left
    assert t.usage()["cost_usd"] == pytest.approx(0.044) and ResponseCache(tmp_path).stats()["entries"] == 11


def test_a_long_retry_after_stops_the_batch_call_at_once(server, tmp_path):
    from dpokd.errors import StageFailed

    server.plan({"status": 429, "retry_after": "inf"})
    start = time.monotonic()
    with pytest.raises(StageFailed, match="retry after inf s, longer than teacher.max_retry_wait = 60 s"):
        teacher(server, tmp_path).answer(examples(3))
    assert time.monotonic() - start < 5 and server.files == {}


def test_offline_replay_never_submits(server, tmp_path):
    teacher(server, tmp_path).answer(examples(5))
    server.reset()
    replay = teacher(server, tmp_path, offline=True).answer(examples(5))
    assert all(a.cached for a in replay) and server.files == {} and server.batches == {}


def test_batch_needs_a_provider_with_a_batch_api():
    with pytest.raises(pydantic.ValidationError, match="vertex_ai"):
        LiteLLMTeacher.Options(model="gemini/gemini-1.0-pro", batch=True)
    assert LiteLLMTeacher.Options(model="vertex_ai/gemini-1.5-pro", batch=True).batch
