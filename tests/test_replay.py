"""Replay through `dpokd run`: Gemini refusals cached and replayed, replay bundles, the run's budget.

The teacher and the pairwise judge are litellm's real ``gemini/`` adapter talking to the loopback
server's ``generateContent`` endpoint, which blocks some prompts in both of Gemini's ways.
"""

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from dpokd.cache import ResponseCache
from dpokd.plugins.tasks.synthetic import SyntheticCodegen
from dpokd.testing import LoopbackServer, _last_user

from .conftest import run_cli

TASK = dict(n_train=6, n_eval=4, levels=[1], seed=3)
MODEL = "gemini/gemini-2.5-flash"  # in litellm's price map: answers cost money, and results carry it


def spec_text(url: str, *, name: str, cache: str = "cache", teacher_extra: str = "") -> str:
    return f"""
[run]
name = "{name}"
seed = 0
output_dir = "runs"
cache_dir = "{cache}"

[task]
plugin = "synthetic-codegen"
n_train = {TASK['n_train']}
n_eval = {TASK['n_eval']}
levels = {TASK['levels']}
seed = {TASK['seed']}

[teacher]
plugin = "litellm"
model = "{MODEL}"
api_base = "{url}"
max_failure_share = 0.5
{teacher_extra}

[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
epochs = 1
batch_size = 8
max_length = 96
max_new_tokens = 8
gen_batch_size = 16

[[judges]]
plugin = "execution"

[[judges]]
plugin = "llm-pairwise"
model = "{MODEL}"
api_base = "{url}"
max_failure_share = 0.5
"""


TRAIN = SyntheticCodegen(SyntheticCodegen.Options(**TASK)).examples("train")
EVAL = SyntheticCodegen(SyntheticCodegen.Options(**TASK)).examples("eval")
REFUSED_TRAIN = [TRAIN[1].prompt, TRAIN[2].prompt]


@pytest.fixture(scope="module")
def gemini():
    """Answers train and eval prompts with their reference solutions, and judge prompts with [[A]]."""
    answers = {e.prompt: e.reference for e in TRAIN + EVAL}
    with LoopbackServer(lambda body: answers.get(_last_user(body), "[[A]]")) as server:
        yield server


def fresh_requests(server, blocks: bool = True) -> None:
    """Forget the requests so far; with ``blocks``, block train prompt 1 (finishReason SAFETY), train
    prompt 2 (promptFeedback.blockReason), eval prompt 0, and every verdict on eval prompt 1."""
    server.reset()
    if not blocks:
        return

    def asks(prompt):
        return lambda body: _last_user(body) == prompt

    server.when(asks(TRAIN[1].prompt), {"blocked": True})
    server.when(asks(TRAIN[2].prompt), {"prompt_blocked": True})
    server.when(asks(EVAL[0].prompt), {"blocked": True})
    server.when(lambda body: f"[User Question]\n{EVAL[1].prompt}\n" in _last_user(body), {"prompt_blocked": True})


def asked(server) -> list[str]:
    return [_last_user(body) for body in server.requests]


@pytest.mark.slow
def test_refusals_replay_offline_under_another_name_and_a_bundle_reproduces_the_run(gemini, tmp_path):
    fresh_requests(gemini)
    (tmp_path / "live.toml").write_text(spec_text(gemini.url, name="live"))
    live = run_cli("run", "live.toml", cwd=tmp_path, env={"GEMINI_API_KEY": ""})
    assert live.returncode == 0, live.stderr[-3000:]
    run_dir = tmp_path / "runs" / "live"
    teacher = [json.loads(line) for line in (run_dir / "teacher.jsonl").read_text().splitlines()]
    assert sum(a["finish_reason"] == "content_filter" for a in teacher) == 2  # both kinds of block
    assert {*REFUSED_TRAIN, EVAL[0].prompt} <= set(asked(gemini))
    expected = (run_dir / "results.json").read_bytes()
    stats = ResponseCache(tmp_path / "cache").stats()
    blocked = {p for p in asked(gemini) if p in {*REFUSED_TRAIN, EVAL[0].prompt} or f"\n{EVAL[1].prompt}\n" in p}
    assert stats["refusals"] == len(blocked) >= 4  # teacher prompts and verdicts, each cached once

    # Another run name, offline, same cache: no request, exit 0, the same results.json.
    fresh_requests(gemini)
    (tmp_path / "again.toml").write_text(spec_text(gemini.url, name="again"))
    again = run_cli("run", "again.toml", "--offline", cwd=tmp_path, env={"GEMINI_API_KEY": ""})
    assert again.returncode == 0, again.stderr[-3000:]
    assert gemini.requests == []
    assert (tmp_path / "runs" / "again" / "results.json").read_bytes() == expected

    # The bundle holds exactly what the run read, not an unrelated answer sharing its cache.
    ResponseCache(tmp_path / "cache").put("v1:" + "0" * 64, {"text": "another run's answer"})
    out = run_cli("export", "runs/live", "-o", "live.tar.gz", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    keys = set((run_dir / "cache_keys.txt").read_text().split())
    with tarfile.open(tmp_path / "live.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["bundle.json", "cache.jsonl", "manifest.json", "results.json", "spec.json"]
        entries = [json.loads(line) for line in tar.extractfile("cache.jsonl").read().decode().splitlines()]
    assert {e["key"] for e in entries} == keys and len(entries) == len(keys) == stats["entries"]
    assert f"{len(keys)} cache entries ({len(blocked)} refusals)" in out.stdout

    # No cache at all, no key, the server silent: the bundle alone reproduces results.json.
    shutil.rmtree(tmp_path / "cache")
    fresh_requests(gemini)
    replay = run_cli("run", "live.tar.gz", "--offline", cwd=tmp_path, env={"GEMINI_API_KEY": ""}, fresh=True)
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert gemini.requests == []
    replayed = tmp_path / "live.replay" / "runs" / "live" / "results.json"
    assert replayed.read_bytes() == expected
    assert "identical to the exported run's" in replay.stdout


@pytest.mark.slow
def test_retry_refused_and_cache_clear_refused_ask_the_refused_prompts_again(gemini, tmp_path):
    """The teacher stage alone: a failure share it cannot meet stops the run there (exit 4)."""
    fresh_requests(gemini)
    spec = spec_text(gemini.url, name="s").replace("max_failure_share = 0.5\n", "max_failure_share = 0.0\n", 1)
    (tmp_path / "s.toml").write_text(spec)
    first = run_cli("run", "s.toml", cwd=tmp_path)
    assert first.returncode == 4 and "--retry-refused asks again" in first.stderr, first.stderr[-2000:]
    assert len(gemini.requests) == TASK["n_train"]

    fresh_requests(gemini)
    retried = run_cli("run", "s.toml", "--retry-refused", cwd=tmp_path)
    assert retried.returncode == 4
    assert sorted(asked(gemini)) == sorted(REFUSED_TRAIN)  # exactly the two refused train prompts

    cleared = run_cli("cache", "clear", "--refused", "--yes", "--cache-dir", "cache", cwd=tmp_path)
    assert cleared.returncode == 0 and "deleted 2 refusals" in cleared.stdout
    stats = ResponseCache(tmp_path / "cache").stats()
    assert stats["refusals"] == 0 and stats["entries"] == TASK["n_train"] - 2

    both = run_cli("run", "s.toml", "--retry-refused", "--offline", cwd=tmp_path)
    assert both.returncode == 2 and "--offline" in both.stderr


@pytest.mark.slow
def test_the_budget_stops_the_stage_unfinished_and_counts_earlier_invocations(gemini, tmp_path):
    fresh_requests(gemini, blocks=False)
    # $0.01 at most per answer (10 tokens); each reference answer is 6 tokens, $0.006.
    budget = ("max_usd = 0.02\nmax_tokens = 10\nmax_concurrency = 6\n"
              "usd_per_million_input = 0.0\nusd_per_million_output = 1000.0")
    (tmp_path / "b.toml").write_text(spec_text(gemini.url, name="b", teacher_extra=budget))
    first = run_cli("run", "b.toml", cwd=tmp_path)
    assert first.returncode == 4, first.stderr[-2000:]
    assert "teacher.max_usd" in first.stderr and "Traceback" not in first.stderr
    # Two fit at their worst case; after them ($0.012), a third could reach $0.022.
    assert len(gemini.requests) == 2
    state = json.loads((tmp_path / "runs" / "b" / "state.json").read_text())["finished"]
    assert "teacher" not in state and not (tmp_path / "runs" / "b" / "teacher.jsonl").exists()

    fresh_requests(gemini, blocks=False)
    second = run_cli("run", "b.toml", cwd=tmp_path)
    assert second.returncode == 4 and "in earlier invocations" in second.stderr
    assert gemini.requests == []  # what the first invocation spent still counts


def test_a_cache_that_is_not_a_database_exits_2_naming_it(tmp_path):
    (tmp_path / "cache" / "responses").mkdir(parents=True)
    (tmp_path / "cache" / "responses" / "cache.db").write_bytes(b"not a database, just bytes " * 100)
    out = run_cli("cache", "stats", "--cache-dir", str(tmp_path / "cache"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cache.db" in out.stderr and "not a readable SQLite database" in out.stderr
    assert "Delete the folder" in out.stderr


def test_a_cached_value_missing_its_text_exits_2_naming_the_entry_and_the_fix(gemini, tmp_path):
    fresh_requests(gemini)
    (tmp_path / "c.toml").write_text(spec_text(gemini.url, name="c"))
    from dpokd.spec import load_spec

    spec = load_spec(tmp_path / "c.toml")
    from dpokd.interfaces import Context

    teacher = spec.teacher.build(Context(cache_dir=tmp_path / "cache"))
    example = SyntheticCodegen(SyntheticCodegen.Options(**TASK)).examples("train")[0]
    from dpokd.cache import request_key

    key = request_key(teacher.client.request(example.prompt, example))
    ResponseCache(tmp_path / "cache").put(key, {"finish_reason": "stop", "model": "x"})
    out = run_cli("run", "c.toml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert f"the cached entry {key} is missing its 'text' field" in out.stderr
    assert f"dpokd cache clear --key {key}" in out.stderr

    cleared = run_cli("cache", "clear", "--key", key, "--cache-dir", "cache", cwd=tmp_path)
    assert cleared.returncode == 0 and "deleted 1 of 1 entries" in cleared.stdout
    assert ResponseCache(tmp_path / "cache").get(key) is None


def evil_bundle(path: Path, name: str, *, symlink: bool = False) -> None:
    with tarfile.open(path, "w:gz") as tar:
        member = tarfile.TarInfo(name)
        if symlink:
            member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(member)
        else:
            data = b"pwned"
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


@pytest.mark.parametrize("name, symlink", [("../escaped.txt", False), ("/tmp/dpokd-escaped.txt", False),
                                           ("spec.json", True), ("extra.py", False)])
def test_a_bundle_with_foreign_members_is_refused_unpacked(tmp_path, name, symlink):
    evil_bundle(tmp_path / "evil.tar.gz", name, symlink=symlink)
    (tmp_path / "work").mkdir()
    out = run_cli("run", "../evil.tar.gz", "--offline", cwd=tmp_path / "work")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "not part of a dpokd bundle" in out.stderr and "refusing to unpack" in out.stderr
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/dpokd-escaped.txt").exists()
    assert not (tmp_path / "evil.replay" / "bundle").exists()


def test_export_of_a_run_without_its_record_of_reads_says_what_to_do(tmp_path):
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"spec": {"run": {"name": "old", "cache_dir": "cache"}}}))
    (run_dir / "results.json").write_text(json.dumps({"schema_version": 1, "scores": []}))
    out = run_cli("export", str(run_dir), "-o", str(tmp_path / "old.tar.gz"))
    assert out.returncode == 2 and "cache_keys.txt" in out.stderr and "--fresh" in out.stderr
    assert not (tmp_path / "old.tar.gz").exists()
