"""The leaderboard reads results.json: one row per (run, system), the best of each column marked."""

import csv
import io
import json

from dpokd.records import Score
from dpokd.runs import RunDir

from .conftest import run_cli


def make_run(path, pass_base, pass_tuned):
    run = RunDir(path)
    run.create(fresh=True)
    run.write_results([
        Score(judge="execution", system="student@base", metric="pass@1", value=pass_base, ci=(0.0, 0.2), n=32),
        Score(judge="execution", system="student@iter_1", metric="pass@1", value=pass_tuned, ci=(0.6, 0.9), n=32),
        Score(judge="teacher-likelihood", system="student@base", metric="teacher_nll", value=7.9, higher_is_better=False),
        Score(judge="teacher-likelihood", system="student@iter_1", metric="teacher_nll", value=0.4, higher_is_better=False),
    ])


def test_json_csv_and_markdown(tmp_path):
    make_run(tmp_path / "a", 0.1, 0.8)
    make_run(tmp_path / "b", 0.0, 0.5)
    out = run_cli("leaderboard", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "json")
    rows = json.loads(out.stdout)
    assert [(r["run"], r["system"]) for r in rows] == [("a", "student@base"), ("a", "student@iter_1"),
                                                        ("b", "student@base"), ("b", "student@iter_1")]
    assert rows[1]["pass@1"] == 0.8 and rows[1]["pass@1_ci"] == [0.6, 0.9] and rows[0]["teacher_nll"] == 7.9
    table = list(csv.DictReader(io.StringIO(run_cli("leaderboard", str(tmp_path / "a"), "--format", "csv").stdout)))
    assert table[0]["system"] == "student@base" and float(table[1]["pass@1"]) == 0.8
    md = run_cli("leaderboard", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "md").stdout
    # The best pass@1 (highest) and the best teacher_nll (lowest) are marked.
    assert "| a | student@iter_1 | **0.800 [0.60, 0.90]** | **0.400** |" in md


def test_unfinished_run_is_a_clear_error(tmp_path):
    (tmp_path / "r").mkdir()
    out = run_cli("leaderboard", str(tmp_path / "r"))
    assert out.returncode == 2 and "no results.json" in out.stderr and "Traceback" not in out.stderr
