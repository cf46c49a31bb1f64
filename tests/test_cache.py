"""The response cache stores JSON, never loads a pickle, and converts a cache an earlier dpokd wrote."""

import os
import sqlite3
from pathlib import Path

import diskcache

from dpokd.cache import ResponseCache

from .conftest import run_cli

KEY = "v1:" + "a" * 64
LONG_KEY = "v1:" + "b" * 64  # a value long enough for diskcache to keep it in a file of its own


class RunsCode:
    """Unpickling this runs a shell command: what a cache folder from elsewhere could hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def old_cache(cache_dir: Path, values: dict) -> None:
    """A cache as an earlier dpokd wrote it: diskcache's default Disk, which pickles dicts."""
    with diskcache.Cache(str(cache_dir / "responses")) as store:
        for key, value in values.items():
            store.set(key, value)


def modes(cache_dir: Path) -> set[int]:
    with sqlite3.connect(cache_dir / "responses" / "cache.db") as db:
        return {mode for (mode,) in db.execute("SELECT mode FROM Cache")}


def test_answers_are_stored_as_json_text_and_read_back_equal(tmp_path):
    cache = ResponseCache(tmp_path)
    answers = {KEY: {"text": "def f():\n    return '☃'\n", "finish_reason": "stop"},
               LONG_KEY: {"text": "x" * 100_000, "refused": True, "error": "blocked"}}
    for key, value in answers.items():
        cache.put(key, value)
    fresh = ResponseCache(tmp_path)
    for key, value in answers.items():
        stored = fresh.get(key)
        assert {k: stored[k] for k in value} == value
    assert fresh.refused_keys() == [LONG_KEY]
    assert 4 not in modes(tmp_path)  # diskcache's MODE_PICKLE


def test_a_cache_holding_a_pickle_is_refused_without_loading_it(tmp_path):
    marker = tmp_path / "the-pickle-ran"
    old_cache(tmp_path / "cache", {KEY: RunsCode(marker)})
    for args in (["cache", "stats"], ["cache", "clear", "--refused", "--yes"]):
        out = run_cli(*args, "--cache-dir", str(tmp_path / "cache"))
        message = " ".join(out.stderr.split())
        assert out.returncode == 2, out.stderr[-2000:]
        assert "holds entries stored as Python pickles" in message and "dpokd cache upgrade" in message
        assert "Traceback" not in out.stderr
    assert not marker.exists()


def test_upgrade_converts_an_earlier_dpokds_cache_and_keeps_every_answer(tmp_path):
    answers = {KEY: {"text": "an answer paid for", "finish_reason": "stop", "stored_at": 1.0},
               LONG_KEY: {"text": "y" * 100_000, "finish_reason": "length", "stored_at": 2.0}}
    old_cache(tmp_path, answers)
    assert 4 in modes(tmp_path)
    out = run_cli("cache", "upgrade", "--cache-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert f"converted 2 of 2 entries to JSON in {tmp_path}" in out.stdout
    assert 4 not in modes(tmp_path)
    cache = ResponseCache(tmp_path)
    assert {key: cache.get(key) for key in answers} == answers
    again = run_cli("cache", "upgrade", "--cache-dir", str(tmp_path))
    assert "converted 0 of 2 entries" in again.stdout
    assert cache.stats()["entries"] == 2


def test_stats_and_clear_where_there_is_no_cache_say_so_and_make_nothing(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "README.md").write_text("what a fresh clone's cache/ holds")
    for args in (["cache", "stats"], ["cache", "clear", "--yes"], ["cache", "stats", "--cache-dir", "elsewhere"]):
        out = run_cli(*args, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        where = args[-1] if "--cache-dir" in args else "cache"
        assert out.stdout.startswith(f"no dpokd cache at {where}/ (no responses/ or batches/ folder)"), out.stdout
        assert "entries" not in out.stdout and "deleted" not in out.stdout
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["cache", "cache/README.md"]
