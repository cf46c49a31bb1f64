"""The litellm teacher and the shared client, against a loopback OpenAI-compatible server."""

import os
import signal
import subprocess
import sys
import time

import pytest

import dpokd

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


def teacher(server, tmp_path, offline=False, run_dir=None, retry_refused=False, **options):
    opts = {"model": "openai/loopback", "api_base": server.url, "max_retries": 4, "timeout": 5, **options}
    return LiteLLMTeacher(LiteLLMTeacher.Options(**opts), Context(cache_dir=tmp_path / "cache", offline=offline,
                                                                  run_dir=run_dir, retry_refused=retry_refused))


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


def test_malformed_answers_are_asked_again_and_refusals_are_replayed(server, tmp_path):
    server.when(lambda b: b["messages"][-1]["content"].endswith(" 3"), {"malformed": True})
    server.when(lambda b: b["messages"][-1]["content"].endswith(" 5"), {"blocked": True})
    t = teacher(server, tmp_path, max_retries=1, max_failure_share=0.5)
    answers = t.answer(examples(10))
    failed = {a.example_id: a.error for a in answers if not a.ok}
    assert set(failed) == {"p3", "p5"}
    assert "content_filter" in failed["p5"]
    assert t.usage()["failed"] == 2
    server.reset()
    # The malformed answer is asked again; the refusal is the provider's answer, replayed as it was.
    again = teacher(server, tmp_path, max_failure_share=0.5).answer(examples(10))
    assert [r["messages"][-1]["content"] for r in server.requests] == ["prompt number 3"]
    assert not again[5].ok and again[5].cached and again[5].error == answers[5].error
    assert again[5].model_dump(exclude={"cached"}) == answers[5].model_dump(exclude={"cached"})
    server.reset()
    teacher(server, tmp_path, retry_refused=True, max_failure_share=0.5).answer(examples(10))
    assert [r["messages"][-1]["content"] for r in server.requests] == ["prompt number 5"]


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


# $0.01 per answer of ten words, and at most that: max_tokens is 10.
PRICED = dict(usd_per_million_input=0.0, usd_per_million_output=1000.0, max_tokens=10)
TEN_WORDS = "one two three four five six seven eight nine ten"


def test_max_usd_stops_at_the_budget_and_a_rerun_resumes(server, tmp_path):
    server.responder = lambda body: TEN_WORDS
    with pytest.raises(BudgetExceeded, match="budget of \\$0.0500") as info:
        teacher(server, tmp_path, max_usd=0.05, max_concurrency=1, **PRICED).answer(examples(20))
    assert len(server.requests) == 5
    assert info.value.exit_code == 4 and "5 of 20 answers are cached" in str(info.value)
    server.reset()
    answers = teacher(server, tmp_path, max_usd=1.0, **PRICED).answer(examples(20))
    assert len(server.requests) == 15 and sum(a.cached for a in answers) == 5
    assert sum(a.cost_usd for a in answers) == pytest.approx(0.20)


@pytest.mark.parametrize("direct_http", [True, False], ids=["direct", "through-litellm"])
def test_max_usd_reserves_each_requests_worst_case_before_sending(server, tmp_path, direct_http):
    """With 16 requests in flight, none may start unless the budget covers it at its worst case."""
    server.latency = 0.2
    server.responder = lambda body: TEN_WORDS
    t = teacher(server, tmp_path, max_usd=0.05, max_concurrency=16, direct_http=direct_http, **PRICED)
    with pytest.raises(BudgetExceeded):
        t.answer(examples(40))
    assert len(server.requests) == 5 and server.max_in_flight == 5
    assert t.usage()["cost_usd"] == pytest.approx(0.05)


def test_max_usd_waits_for_answers_cheaper_than_their_worst_case(server, tmp_path):
    """Answers of 2 tokens cost a fifth of the reservation: the budget pays for 25, not 5."""
    server.responder = lambda body: "two words"
    t = teacher(server, tmp_path, max_usd=0.05, max_concurrency=8, **PRICED)
    with pytest.raises(BudgetExceeded):
        t.answer(examples(40))
    assert len(server.requests) == 21  # after 21 answers ($0.042), a 22nd could cost up to $0.052
    assert t.usage()["cost_usd"] <= 0.05


def test_max_usd_counts_what_earlier_invocations_of_the_run_spent(server, tmp_path):
    server.responder = lambda body: TEN_WORDS
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    with pytest.raises(BudgetExceeded):
        teacher(server, tmp_path, run_dir=run_dir, max_usd=0.05, **PRICED).answer(examples(20))
    assert len(server.requests) == 5
    server.reset()
    # A new process of the same run: the budget is spent, nothing is asked.
    with pytest.raises(BudgetExceeded, match="\\$0.0500 of it in earlier invocations") as info:
        teacher(server, tmp_path, run_dir=run_dir, max_usd=0.05, **PRICED).answer(examples(20))
    assert server.requests == [] and "5 of 20 answers are cached" in str(info.value)
    # Another run has a budget of its own, and reuses the cached answers for free.
    answers = teacher(server, tmp_path, run_dir=tmp_path, max_usd=0.08, **PRICED).answer(examples(8))
    assert len(server.requests) == 3 and all(a.ok for a in answers)


def test_max_usd_needs_a_price_and_a_longest_answer(server, tmp_path):
    with pytest.raises(ConfigError, match="teacher.max_usd: litellm has no price for 'openai/loopback'.*usd_per_million"):
        teacher(server, tmp_path, max_usd=1.0, max_tokens=10).answer(examples(3))
    with pytest.raises(ConfigError, match="teacher.max_usd: .*set teacher.max_tokens"):
        teacher(server, tmp_path, max_usd=1.0, usd_per_million_output=1.0).answer(examples(3))
    assert server.requests == []
    # A model in litellm's map: its price and its longest answer (max_output_tokens) come from there.
    answers = teacher(server, tmp_path, model="openai/gpt-4o-mini", max_usd=1.0).answer(examples(3))
    assert all(a.ok for a in answers)


@pytest.mark.parametrize("retry_after", ["inf", "nan", "3600", "Wed, 21 Oct 2099 07:28:00 GMT"])
def test_a_retry_after_longer_than_max_retry_wait_fails_the_answer_at_once(server, tmp_path, retry_after):
    server.plan({"status": 429, "retry_after": retry_after})
    start = time.monotonic()
    answers = teacher(server, tmp_path, max_concurrency=1, max_failure_share=1.0).answer(examples(2))
    assert time.monotonic() - start < 5
    assert not answers[0].ok and "longer than teacher.max_retry_wait = 60 s" in answers[0].error
    assert answers[1].ok and len(server.requests) == 2  # the failed answer was not retried
    server.reset()
    assert teacher(server, tmp_path).answer(examples(2))[0].ok  # and not cached: a re-run asks again


def test_max_retry_wait_is_an_option(server, tmp_path):
    server.plan({"status": 429, "retry_after": "0.3"}, {"status": 429, "retry_after": "0.3"})
    answers = teacher(server, tmp_path, max_concurrency=1, max_retry_wait=0.2, max_failure_share=1.0).answer(examples(1))
    assert not answers[0].ok and "after 0.3 s" in answers[0].error and len(server.requests) == 1
    server.reset()
    server.plan({"status": 429, "retry_after": "0.3"})
    assert teacher(server, tmp_path, max_retry_wait=0.5).answer(examples(1))[0].ok
    assert len(server.requests) == 2


def test_litellm_price_map_costs_a_known_model(server, tmp_path):
    answers = teacher(server, tmp_path, model="openai/gpt-4o-mini").answer(examples(2))
    assert all(a.cost_usd > 0 for a in answers)


def test_a_model_with_no_known_price_costs_unknown_not_zero(server, tmp_path):
    t = teacher(server, tmp_path, model="openai/a-model-litellm-cannot-price")
    answers = t.answer(examples(2))
    assert [a.cost_usd for a in answers] == [None, None] and t.usage()["unpriced"] == 2
    again = teacher(server, tmp_path, model="openai/a-model-litellm-cannot-price").answer(examples(2))
    assert [a.cost_usd for a in again] == [None, None] and all(a.cached for a in again)  # replayed as unknown too


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
    import dpokd.llm.retry as llm

    # A 60 s window is too long for a test: shrink the limiter's minute to 1 s.
    monkeypatch.setattr(llm, "WINDOW", 1.0)
    arrived = []
    server.responder = lambda body: arrived.append(time.monotonic()) or "ok"
    start = time.monotonic()
    teacher(server, tmp_path, rpm=5, max_concurrency=8).answer(examples(10))
    assert time.monotonic() - start >= 0.9  # the second five waited for the window to pass
    assert len(server.requests) == 10
    # measured at the server: no more than 5 requests in any (shrunk) minute
    assert all(later - earlier >= 0.95 for earlier, later in zip(sorted(arrived), sorted(arrived)[5:]))


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


def test_the_old_seed_name_still_sets_the_provider_seed_with_the_same_cache_key(server, tmp_path):
    """`seed` was renamed `provider_seed` (it never fell back to [run] seed); specs that say `seed` keep
    their answers in the cache and resume their runs."""
    from dpokd.runs import RunDir

    with pytest.warns(FutureWarning, match="`seed` of a model-calling plugin is now `provider_seed`"):
        old = teacher(server, tmp_path, seed=7)
    new = teacher(server, tmp_path, provider_seed=7)
    assert old.options.provider_seed == 7
    example = examples(1)[0]
    assert old.client.request(example.prompt, example) == new.client.request(example.prompt, example)
    assert new.client.request(example.prompt, example)["seed"] == 7  # the key's field keeps its name
    with pytest.raises(ValueError, match="set only `provider_seed`"):
        teacher(server, tmp_path, seed=7, provider_seed=7)

    run = RunDir(tmp_path / "runs" / "s")
    run.create(fresh=False)
    recorded = {"run": {"name": "s"}, "teacher": {"plugin": "litellm", "seed": 7}}
    run.write_manifest(recorded, {})
    now = {"run": {"name": "s"}, "teacher": {"plugin": "litellm", "provider_seed": 7}}
    run.check_spec(now, tmp_path / "s.toml", {"teacher.provider_seed"})  # resumes
    with pytest.raises(dpokd.SpecError, match=r"changed: teacher.provider_seed"):
        run.check_spec({**now, "teacher": {"plugin": "litellm", "provider_seed": 8}}, tmp_path / "s.toml",
                       {"teacher.provider_seed"})


def test_the_progress_lines_show_the_rate_and_an_eta(server, tmp_path):
    import io
    import re

    from rich.console import Console

    out = io.StringIO()
    t = LiteLLMTeacher(LiteLLMTeacher.Options(model="openai/loopback", api_base=server.url),
                       Context(cache_dir=tmp_path / "cache", console=Console(file=out, width=200)))
    t.answer(examples(40))
    lines = [line for line in out.getvalue().splitlines() if line.startswith("teacher: ") and "%)" in line]
    assert len(lines) == 4
    assert re.search(r"10/40 \(25%\) [\d.]+s [\d.]+/s ETA \d+s", lines[0]), lines[0]
    assert re.search(r"40/40 \(100%\) [\d.]+s [\d.]+/s", lines[-1]) and "ETA" not in lines[-1]
