"""Runs that share a cache buy each answer once: a request is claimed before it is asked, and a run
finding another's live claim waits for that answer (a refusal or a failure included)."""

import json
import multiprocessing
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from dpokd.cache import CLAIM, ResponseCache, request_key
from dpokd.errors import BudgetExceeded
from dpokd.interfaces import Context
from dpokd.llm import import_litellm
from dpokd.llm.budget import SPEND_FILE
from dpokd.plugins.teachers.litellm import LiteLLMTeacher
from dpokd.records import Example
from dpokd.testing import LoopbackServer


@pytest.fixture
def server():
    with LoopbackServer(latency=0.3) as s:
        yield s


def examples(n):
    return [Example(id=f"p{i}", prompt=f"prompt number {i}") for i in range(n)]


def teacher(url, cache, run_dir=None, **options):
    opts = {"model": "openai/loopback", "api_base": url, "max_retries": 1, "timeout": 20, **options}
    return LiteLLMTeacher(LiteLLMTeacher.Options(**opts), Context(cache_dir=Path(cache), run_dir=run_dir))


def _answer(url, cache, run_dir, n, options):
    answers = teacher(url, cache, Path(run_dir), **options).answer(examples(n))
    (Path(run_dir) / "answers.json").write_text(json.dumps([a.model_dump(mode="json") for a in answers]))


def start(url, cache, run_dir, n, **options):
    """A run in a process of its own (forked: litellm is already imported here)."""
    import_litellm()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    process = multiprocessing.get_context("fork").Process(target=_answer, args=(url, str(cache), str(run_dir), n, options))
    process.start()
    return process


def asked(server):
    return Counter(r["messages"][-1]["content"] for r in server.requests)


def test_two_runs_started_together_ask_each_request_once(server, tmp_path, monkeypatch):
    # A lease shorter than an answer takes: only its renewal keeps the other run waiting.
    monkeypatch.setenv("DPOKD_CLAIM_LEASE", "0.9")
    server.latency = 1.2
    runs = [start(server.url, tmp_path / "cache", tmp_path / name, 24, max_concurrency=6) for name in ("a", "b")]
    for run in runs:
        run.join(60)
        assert run.exitcode == 0
    counts = asked(server)
    assert len(counts) == 24 and set(counts.values()) == {1}
    for name in ("a", "b"):
        answers = json.loads((tmp_path / name / "answers.json").read_text())
        assert [a["text"] for a in answers] == [f"echo: prompt number {i}" for i in range(24)]
    assert ResponseCache(tmp_path / "cache").stats()["requests_in_flight"] == 0


def test_a_run_killed_mid_stage_leaves_its_claims_to_the_next(server, tmp_path):
    first = start(server.url, tmp_path / "cache", tmp_path / "a", 30, max_concurrency=4)
    deadline = time.monotonic() + 30
    while len(server.requests) - server.in_flight < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    first.join()
    store = ResponseCache(tmp_path / "cache")
    stats = store.stats()
    assert stats["requests_in_flight"] > 0  # the killed run's requests in flight are still claimed
    server.reset()
    answers = teacher(server.url, tmp_path / "cache").answer(examples(30))
    assert [a.text for a in answers] == [f"echo: prompt number {i}" for i in range(30)]
    again = asked(server)
    assert set(again.values()) == {1} and len(again) == 30 - stats["entries"]  # each missing one, once
    assert ResponseCache(tmp_path / "cache").stats()["requests_in_flight"] == 0


def test_a_claim_of_another_host_is_taken_over_when_its_lease_runs_out(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DPOKD_CLAIM_LEASE", "5")
    server.latency = 0.01
    t = teacher(server.url, tmp_path / "cache")
    requests = [t.client.request(e.prompt, e) for e in examples(4)]
    store = ResponseCache(tmp_path / "cache")
    for request in requests[:2]:  # claimed by a process on another machine, whose lease ends in 1 s
        store._store.set(CLAIM + request_key(request), {"owner": "elsewhere/1/1/ab", "until": time.time() + 1.0})
    begin = time.monotonic()
    answers = t.answer(examples(4))
    assert all(a.ok for a in answers) and time.monotonic() - begin >= 0.9
    assert set(asked(server).values()) == {1} and len(server.requests) == 4


FAILS = "prompt number 3"


def test_a_failure_is_shared_with_the_run_waiting_for_it(server, tmp_path):
    server.latency = 0.05
    server.when(lambda b: b["messages"][-1]["content"] == FAILS, {"status": 400, "delay": 1.5})
    first = start(server.url, tmp_path / "cache", tmp_path / "a", 6, max_failure_share=1.0)
    deadline = time.monotonic() + 30
    while FAILS not in asked(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    answers = teacher(server.url, tmp_path / "cache", max_failure_share=1.0).answer(examples(6))
    first.join(30)
    assert first.exitcode == 0
    assert asked(server)[FAILS] == 1
    assert not answers[3].ok and "400" in answers[3].error
    mine = json.loads((tmp_path / "a" / "answers.json").read_text())
    assert mine[3]["error"] == answers[3].error


def test_a_run_that_waited_did_not_pay_and_its_spend_record_says_so(server, tmp_path):
    priced = {"usd_per_million_input": 0.0, "usd_per_million_output": 1000.0, "max_tokens": 10, "max_usd": 1.0}
    first = start(server.url, tmp_path / "cache", tmp_path / "a", 4, max_concurrency=4, **priced)
    deadline = time.monotonic() + 30
    while len(server.requests) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    second = teacher(server.url, tmp_path / "cache", tmp_path, **priced)
    answers = second.answer(examples(4))
    first.join(30)
    assert len(server.requests) == 4 and all(a.ok for a in answers)
    assert second.usage()["cost_usd"] == 0 and second.usage()["shared"] == 4
    rows = [json.loads(line) for line in (tmp_path / SPEND_FILE).read_text().splitlines()]
    assert len(rows) == 4 and all(r["usd"] == 0 and r["paid_by_another_run"] > 0 for r in rows)
    # the answers it used are its own run's too: `dpokd export` puts them in its bundle
    assert len(set((tmp_path / "cache_keys.txt").read_text().split())) == 4


def test_the_budget_message_shows_a_small_amount_as_it_is(server, tmp_path):
    # $0.00004 at most a request: a budget of $0.0001 covers two.
    priced = {"usd_per_million_input": 0.0, "usd_per_million_output": 4.0, "max_tokens": 10, "max_usd": 0.0001}
    server.responder = lambda body: "one two three four five six seven eight nine ten"
    with pytest.raises(BudgetExceeded) as info:
        teacher(server.url, tmp_path / "cache", max_concurrency=1, **priced).answer(examples(5))
    assert "could cost up to $0.000040" in str(info.value) and "$0.0000 " not in str(info.value)
    assert "budget of $0.00010" in str(info.value)


def test_a_lease_that_is_not_a_number_of_seconds_is_refused(server, tmp_path, monkeypatch):
    from dpokd.errors import ConfigError

    monkeypatch.setenv("DPOKD_CLAIM_LEASE", "soon")
    with pytest.raises(ConfigError, match="DPOKD_CLAIM_LEASE='soon'"):
        teacher(server.url, tmp_path / "cache").answer(examples(2))
    assert server.requests == []
