"""The terminal leaderboard fits the console: at 80, 100 and 120 columns every line fits, no value is cut,
the main metric and its interval stay in the first table and the columns that did not fit follow in
further tables; a one-line verdict sums up each run, in the terminal and at the top of the report."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from dpokd.records import Score
from dpokd.runs import RunDir

from .conftest import ROOT, run_cli
from .runs_on_disk import make_run
from .test_report import parse
from .test_seeds import PASSING, seeded_run

LONG = "teacher@gpt-4o-mini-2024-07-18"  # a long system name, which a cut would shorten
# iter_1 passes problems 0-11 of 32, iter_2 0-23 (a gain over iter_1 and the base), the base 0-3.
PASSING_UP_TO = {"teacher": 32, LONG: 30, "student@base": 4, "student@iter_1": 12, "student@iter_2": 24}
# Every column header of the wide run's table: all must be shown somewhere, in one table or another.
HEADERS = {"pass@1", "95% CI", "teacher_nll", "answer_chars", "tokens", "cost_usd", "Δ vs base", "Δ vs prev"}


def with_more_metrics(path: Path) -> Path:
    """Add teacher_nll and answer_chars to every system of a run: a table wider than 120 columns."""
    run = RunDir(path)
    scores = run.results()
    for n, system in enumerate(dict.fromkeys(s.system for s in scores if s.system != "teacher")):
        scores += [Score(judge="teacher-likelihood", system=system, metric="teacher_nll", value=7.9 / (n + 1),
                         higher_is_better=False),
                   Score(judge="execution", system=system, metric="answer_chars", value=123.4 + n,
                         higher_is_better=False)]
    run.write_results(scores)
    return path


def wide_run(path: Path) -> Path:
    return with_more_metrics(make_run(path, systems=list(PASSING_UP_TO), problems=32, iterations=2,
                                      passes=lambda s, i, j: i < PASSING_UP_TO[s]))


def json_rows(*runs: Path) -> list[dict]:
    out = run_cli("leaderboard", *map(str, runs), "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def table(*runs: Path, width: int | None) -> str:
    out = run_cli("leaderboard", *map(str, runs), env={"COLUMNS": None if width is None else str(width)})
    assert out.returncode == 0, out.stderr
    return out.stdout


def tables(out: str) -> list[list[str]]:
    """The output's tables, each as its lines from the header row to the last row."""
    found, current = [], None
    for line in out.splitlines():
        if line.startswith("┏"):
            current = []
            found.append(current)
        elif line.startswith("└"):
            current = None
        elif current is not None and line.startswith(("┃", "│")):
            current.append(line)
    return found


def cells(line: str) -> list[str]:
    return [c.strip() for c in re.split("[│┃]", line)[1:-1]]


def assert_fits(out: str, width: int) -> None:
    too_long = [line for line in out.splitlines() if len(line) > width]
    assert too_long == [], f"lines over {width} columns: {too_long}"
    assert "…" not in out


def assert_first_table_shows(lines: list[str], rows: list[dict]) -> None:
    """Each row of the first table, one line each: the system's full name, its pass@1 and its interval as
    JSON gives them."""
    main = [cells(line) for line in lines]
    assert main[0][:3] == ["system", "pass@1", "95% CI"]
    assert [c[0] for c in main[1:]] == [r["system"] for r in rows]
    for shown, row in zip(main[1:], rows):
        low, high = row["pass@1_ci"]
        assert shown[1:3] == [f"{row['pass@1']:.3f}", f"{low:.2f}–{high:.2f}"], row["system"]


def verdict_text(row: dict) -> str:
    """The verdict as the issue words it: ``student@iter_2 vs student@base: pass@1 +1.000 [0.85, 1.00], p = 4.7e-10``,
    from the row's ``vs_ref`` in JSON."""
    d = row["vs_ref"]
    p = f"{d['p']:.3f}" if d["p"] >= 0.001 else f"{d['p']:.1e}"
    low, high = d["ci"]
    return f"{row['system']} vs {d['against']}: {d['metric']} {d['delta']:+.3f} [{low:.2f}, {high:.2f}], p = {p}"


@pytest.mark.parametrize("width", [80, 100, 120])
def test_the_table_fits_the_width_and_keeps_names_the_main_metric_and_its_interval_whole(tmp_path, width):
    run = wide_run(tmp_path / "r")
    rows = json_rows(run)
    out = table(run, width=width)
    assert_fits(out, width)
    found = tables(out)
    assert_first_table_shows(found[0], rows)
    # The full table is wider than 120 columns: some columns moved, to further tables that name them.
    headers = [set(cells(t[0])) for t in found]
    assert not HEADERS <= headers[0] and len(found) > 1
    assert set().union(*headers) >= HEADERS
    for later in found[1:]:
        assert [c[0] for c in map(cells, later[1:])] == [r["system"] for r in rows]
    # What goes first is the least important: tokens and cost before Δ vs the base.
    assert "tokens" not in headers[0] and "cost_usd" not in headers[0]
    if width >= 100:
        assert "Δ vs base" in headers[0]


def test_a_pipe_without_columns_gets_80_and_a_terminal_its_own_width(tmp_path):
    run = wide_run(tmp_path / "r")
    piped = table(run, width=None)
    assert_fits(piped, 80)
    assert piped == table(run, width=80)

    # A real terminal (a pseudo-terminal 90 columns wide): the table fits it, in colour.
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 90, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "dpokd", "leaderboard", str(run)], stdin=follower, stdout=follower,
                            stderr=follower, env=env, cwd=ROOT, close_fds=True)
    os.close(follower)
    raw = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        raw += chunk
    assert proc.wait(timeout=120) == 0
    os.close(leader)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode()).replace("\r", "")
    assert "\x1b[" in raw.decode() and "student@iter_2" in shown  # a terminal: rich coloured it
    assert_fits(shown, 90)
    found = tables(shown)
    assert_first_table_shows(found[0], json_rows(run))
    assert len(found) > 1 and not HEADERS <= set(cells(found[0][0]))


@pytest.mark.parametrize("width", [80, 100])
def test_the_seed_groups_table_fits_too(tmp_path, width):
    runs = [with_more_metrics(seeded_run(tmp_path / "runs" / ("q" if seed == 0 else f"q-seed{seed}"), seed,
                                         PASSING[seed])) for seed in (0, 1, 2)]
    by_seed = [r for r in json_rows(*runs) if "n_seeds" in r]
    out = table(*runs, width=width)
    assert_fits(out, width)
    found = tables(out)
    groups = [t for t in found if cells(t[0])[0] == "system"]  # the runs' own tables start with their name
    first = [cells(line) for line in groups[0]]
    assert first[0][:3] == ["system", "seeds", "pass@1"]
    assert [c[0] for c in first[1:]] == [r["system"] for r in by_seed]
    for shown, row in zip(first[1:], by_seed):
        assert shown[1] == str(row["n_seeds"]) and shown[2].startswith(f"{row['pass@1_seeds']['mean']:.3f}")
    headers = [set(cells(t[0])) for t in groups]
    assert len(groups) > 1 and "answer_chars" not in headers[0]
    assert set().union(*headers) >= {"pass@1", "min–max", "teacher_nll", "answer_chars", "tokens", "cost_usd"}


# -- the verdict -----------------------------------------------------------------------------------
def test_the_verdict_is_the_last_checkpoint_against_the_reference_in_the_table_and_the_report(tmp_path):
    run = wide_run(tmp_path / "r")
    last = {r["system"]: r for r in json_rows(run)}["student@iter_2"]
    expected = verdict_text(last)
    assert expected.startswith("student@iter_2 vs student@base: pass@1 +0.625 [")
    out = table(run, width=80)
    assert expected in out.splitlines()
    assert "student@iter_1 vs student@base" not in out

    assert run_cli("view", str(run)).returncode == 0
    page = parse((run / "report.html").read_text())
    headline = page.find_all("p", cls="headline")
    assert [p.text for p in headline] == [expected]
    assert json.loads(headline[0].attrs["data-value"]) == last["vs_ref"]["delta"]
    h1 = page.find_all("h1")[0]
    body = page.find_all("body")[0].children
    assert body.index(headline[0]) == body.index(h1) + 1  # at the top, under the title


def test_several_runs_get_a_verdict_each_named_by_run(tmp_path):
    runs = [wide_run(tmp_path / "a"), make_run(tmp_path / "b", systems=["student@base", "student@iter_1"], problems=8,
                                               passes=lambda s, i, j: s == "student@iter_1" or i == 0)]
    rows = json_rows(*runs)
    out = table(*runs, width=100)
    lines = out.splitlines()
    for run, system in (("a", "student@iter_2"), ("b", "student@iter_1")):
        row = next(r for r in rows if r["run"] == run and r["system"] == system)
        assert f"{run}: {verdict_text(row)}" in lines


def test_no_comparison_no_verdict(tmp_path):
    run = make_run(tmp_path / "r", systems=["teacher", "student@base"], problems=8,
                   passes=lambda s, i, j: s == "teacher")
    assert not any("vs_ref" in r for r in json_rows(run))
    out = table(run, width=80)
    assert " vs " not in out and "p = " not in out
    assert run_cli("view", str(run)).returncode == 0
    assert parse((run / "report.html").read_text()).find_all(cls="headline") == []


def test_the_report_explains_the_answer_badges(tmp_path):
    run = make_run(tmp_path / "r", systems=["teacher", "student@base"], problems=4, passes=lambda s, i, j: i % 2 == 0)
    assert run_cli("view", str(run)).returncode == 0
    page = parse((run / "report.html").read_text())
    legend = page.find_all(id="badge-legend")[0]
    assert "numbered" in legend.text and "order" in legend.text
    # One entry per colour the page shows, each saying what it means; none for a status no answer has.
    shown = {b.attrs["class"].split()[1] for span in page.find_all("span", cls="badges") for b in span.children}
    explained = [b.attrs["class"].split()[1] for b in legend.find_all("span", cls="badge")]
    assert sorted(explained) == sorted(shown) == ["failed", "passed"]
    assert "passed: it passed the judge's check (every test, for code)" in legend.text and "failed: it failed the check" in legend.text
    assert "timeout" not in legend.text
