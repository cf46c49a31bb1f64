"""The litellm teacher and the shared client, against a loopback OpenAI-compatible server."""

import os
import signal
import subprocess
import sys
import time

import pytest

from dpokd.errors import BudgetExceeded, ConfigError, OfflineCacheMiss, StageFailed
from dpokd.interfaces import Context
from dpokd.plugins.teachers.litellm import LiteLLMTeacher
from dpokd.records import Example
from dpokd.testing import LoopbackServer

SECRET = "sk-test-9f8e7d6c5b4a-never-store-me"


@pytest.fixture
def server():
    with LoopbackServer(latency=0.01) as s:
        yield s


def examples(n, prefix="p"):
    return [Example(id=f"{prefix}{i}", prompt=f"prompt number {i}") for i in range(n)]


def teacher(server, tmp_path, offline=False, **options):
    opts = {"model": "openai/loopback", "api_base": server.url, "max_retries": 4, "timeout": 5, **options}
    return LiteLLMTeacher(LiteLLMTeacher.Options(**opts), Context(cache_dir=tmp_path / "cache", offline=offline))


def test_concurrency_is_bounded_and_each_prompt_is_asked_once(server, tmp_path):
    server.latency = 0.03
    answers = teacher(server, tmp_path, max_concurrency=8).answer(examples(200))
    assert [a.text for a in answers] == [f"echo: prompt number {i}" for i in range(200)]
    assert server.max_in_flight == 8
    asked = [r["messages"][-1]["content"] for r in server.requests]
    assert len(asked) == 200 and len(set(asked)) == 200


def test_rerun_and_offline_replay_make_no_requests(tmp_path):
    with LoopbackServer() as server:
        first = teacher(server, tmp_path).answer(examples(20))
        server.reset()
        again = teacher(server, tmp_path).answer(examples(20))
        assert server.requests == []
        url = server.url
    replay = LiteLLMTeacher(LiteLLMTeacher.Options(model="openai/loopback", api_base=url),
                            Context(cache_dir=tmp_path / "cache", offline=True)).answer(examples(20))
    assert [a.text for a in first] == [a.text for a in again] == [a.text for a in replay]
    assert all(a.cached for a in replay)


def test_offline_miss_names_the_missing_examples(server, tmp_path):
    teacher(server, tmp_path).answer(examples(2))
    server.reset()
    with pytest.raises(OfflineCacheMiss) as info:
        teacher(server, tmp_path, offline=True).answer(examples(9))
    assert info.value.missing == 7 and info.value.example_ids[:2] == ["p2", "p3"]
    assert info.value.exit_code == 3 and server.requests == []


def test_429_and_500_are_retried_then_succeed(server, tmp_path):
    server.plan({"status": 429, "retry_after": "0.2"}, {"status": 500}, {"status": 503})
    start = time.monotonic()
    answers = teacher(server, tmp_path, max_concurrency=1).answer(examples(1))
    assert answers[0].ok and answers[0].text == "echo: prompt number 0"
    assert len(server.requests) == 4
    assert time.monotonic() - start >= 0.2  # Retry-After was honoured


def test_timeouts_are_retried(server, tmp_path):
    server.plan({"hang": True})
    answers = teacher(server, tmp_path, timeout=0.5, max_concurrency=1).answer(examples(1))
    assert answers[0].ok and len(server.requests) == 2


def test_malformed_and_blocked_answers_are_reported_and_not_cached(server, tmp_path):
    server.when(lambda b: b["messages"][-1]["content"].endswith(" 3"), {"malformed": True})
    server.when(lambda b: b["messages"][-1]["content"].endswith(" 5"), {"blocked": True})
    t = teacher(server, tmp_path, max_retries=1, max_failure_share=0.5)
    answers = t.answer(examples(10))
    failed = {a.example_id: a.error for a in answers if not a.ok}
    assert set(failed) == {"p3", "p5"}
    assert "content_filter" in failed["p5"]
    assert t.usage()["failed"] == 2
    server.reset()
    teacher(server, tmp_path, max_failure_share=0.5).answer(examples(10))
    assert sorted(r["messages"][-1]["content"] for r in server.requests) == ["prompt number 3", "prompt number 5"]


def test_too_many_failures_stop_the_stage(server, tmp_path):
    server.when(lambda b: True, {"blocked": True})
    with pytest.raises(StageFailed, match="10 of 10 answers failed"):
        teacher(server, tmp_path).answer(examples(10))


def test_401_fails_fast_naming_the_env_var(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server.when(lambda b: True, {"status": 401})
    with pytest.raises(ConfigError) as info:
        teacher(server, tmp_path).answer(examples(3))
    assert "OPENAI_API_KEY" in str(info.value) and SECRET not in str(info.value)
    assert len(server.requests) <= 3  # one attempt per prompt at most, no retries


def test_400_is_not_retried(server, tmp_path):
    server.plan({"status": 400})
    answers = teacher(server, tmp_path, max_failure_share=1.0).answer(examples(1))
    assert not answers[0].ok and len(server.requests) == 1


def test_missing_key_fails_before_any_request(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    t = LiteLLMTeacher(LiteLLMTeacher.Options(), Context(cache_dir=tmp_path))
    with pytest.raises(ConfigError, match="GEMINI_API_KEY.*--offline.*quickstart"):
        t.preflight()


def test_api_key_never_reaches_the_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    teacher(server, tmp_path).answer(examples(5))
    assert server.headers[0]["Authorization"] == f"Bearer {SECRET}"  # it was really used
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_max_usd_stops_at_the_budget_and_a_rerun_resumes(server, tmp_path):
    server.responder = lambda body: "one two three four five six seven eight nine ten"
    priced = dict(max_concurrency=1, usd_per_million_input=0.0, usd_per_million_output=1000.0)  # $0.01 per answer
    with pytest.raises(BudgetExceeded, match="budget of \\$0.0500"):
        teacher(server, tmp_path, max_usd=0.05, **priced).answer(examples(20))
    assert len(server.requests) == 5
    server.reset()
    answers = teacher(server, tmp_path, max_usd=1.0, **priced).answer(examples(20))
    assert len(server.requests) == 15 and sum(a.cached for a in answers) == 5
    assert sum(a.cost_usd for a in answers) == pytest.approx(0.20)


def test_litellm_price_map_costs_a_known_model(server, tmp_path):
    answers = teacher(server, tmp_path, model="openai/gpt-4o-mini").answer(examples(2))
    assert all(a.cost_usd > 0 for a in answers)


KILL_SCRIPT = """
import sys
from pathlib import Path
from dpokd.interfaces import Context
from dpokd.plugins.teachers.litellm import LiteLLMTeacher
from dpokd.records import Example
t = LiteLLMTeacher(LiteLLMTeacher.Options(model="openai/loopback", api_base=sys.argv[1], max_concurrency=4),
                   Context(cache_dir=Path(sys.argv[2])))
t.answer([Example(id=f"p{i}", prompt=f"prompt number {i}") for i in range(200)])
"""


def test_sigkill_halfway_loses_nothing_paid_for(server, tmp_path):
    server.latency = 0.05
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, server.url, str(tmp_path / "cache")],
                            env={**os.environ})
    deadline = time.monotonic() + 60
    while len(server.requests) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {r["messages"][-1]["content"] for r in server.requests}
    assert 100 <= len(first) < 200
    from dpokd.cache import ResponseCache

    cached = ResponseCache(tmp_path / "cache").stats()["entries"]
    server.reset()
    server.latency = 0.0
    teacher(server, tmp_path).answer(examples(200))
    second = [r["messages"][-1]["content"] for r in server.requests]
    assert len(second) == len(set(second)) == 200 - cached
    # Only the requests whose answers had not arrived were made again.
    assert len(set(second) & first) == len(first) - cached


def test_rpm_limit_spaces_requests(server, tmp_path, monkeypatch):
    import dpokd.llm as llm

    # A 60 s window is too long for a test: shrink the clock's minute to 1 s.
    real = llm.time.monotonic
    monkeypatch.setattr(llm.time, "monotonic", lambda: real() * 60)
    start = real()
    teacher(server, tmp_path, rpm=5, max_concurrency=8).answer(examples(10))
    assert real() - start >= 0.9  # the second five waited for the window to pass
    assert len(server.requests) == 10


def test_cache_stats_and_clear(server, tmp_path, cli):
    teacher(server, tmp_path).answer(examples(3))
    from dpokd.cache import ResponseCache

    store = ResponseCache(tmp_path / "cache")
    store.get("v1:missing")
    store.save_counts()
    stats = cli("cache", "stats", "--cache-dir", str(tmp_path / "cache"))
    assert stats.returncode == 0
    assert "entries: 3" in stats.stdout and "last_run_misses: 1" in stats.stdout
    cleared = cli("cache", "clear", "--yes", "--cache-dir", str(tmp_path / "cache"))
    assert cleared.returncode == 0 and "deleted 3 entries" in cleared.stdout
    assert ResponseCache(tmp_path / "cache").stats()["entries"] == 0
