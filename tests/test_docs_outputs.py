"""What the README and the docs show of dpokd is what dpokd prints: `make docs` writes those outputs with
cog (docs/outputs.py), and these fail when they drift. The quickstart's outputs are checked against the run
the suite makes anyway; the seed and ablation tables against the committed results of those runs
(tests/fixtures/seed_runs), whose seed-0 run must be today's quickstart; the rest are made on the spot."""

import json
import os
import re
import struct
import subprocess
import sys

import pytest

from .conftest import FIXTURES, ROOT

sys.path.insert(0, str(ROOT / "docs"))
import outputs  # noqa: E402  (docs/outputs.py: the functions cog calls)

SEED_RUNS = FIXTURES / "seed_runs"


def cog_check(page: str, runs=None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"DPOKD_DOCS_RUNS": str(runs)} if runs else {})}
    return subprocess.run([sys.executable, "-m", "cogapp", "--check", "-I", str(ROOT / "docs"), str(ROOT / page)],
                          capture_output=True, text=True, cwd=ROOT, env=env)


def drifted(page: str, done: subprocess.CompletedProcess) -> str:
    return f"{page} drifted from what dpokd prints; run `make docs`:\n{done.stdout}{done.stderr}"


@pytest.mark.slow
@pytest.mark.parametrize("page", ["README.md", "docs/report.md"])
def test_the_quickstarts_outputs_are_what_dpokd_prints(quickstart_run, page):
    home, _, _ = quickstart_run
    done = cog_check(page, home / "runs")
    assert done.returncode == 0, drifted(page, done)


@pytest.mark.parametrize("page", ["docs/paper.md", "docs/specs.md", "docs/judges.md", "docs/methods.md"])
def test_the_plan_the_validate_errors_and_humaneval_shown_are_what_dpokd_prints(page):
    done = cog_check(page)
    assert done.returncode == 0, drifted(page, done)


def test_the_seed_and_ablation_tables_are_what_dpokd_prints_of_the_committed_runs():
    done = cog_check("docs/results.md", SEED_RUNS)
    assert done.returncode == 0, drifted("docs/results.md", done)


@pytest.mark.slow
def test_the_committed_seed_runs_are_todays_quickstart(quickstart_run):
    """Seeds 1 and 2 and the ablations are too slow to train in the suite; seed 0 is the quickstart itself."""
    _, run_dir, _ = quickstart_run
    committed = json.loads((SEED_RUNS / "quickstart" / "results.json").read_text())
    assert committed == json.loads((run_dir / "results.json").read_text()), (
        "tests/fixtures/seed_runs is stale: run the quickstart's and the ablations' seeds, then `make docs`")
    assert sorted(p.name for p in SEED_RUNS.iterdir()) == sorted(outputs.SEED_RUNS)


@pytest.mark.slow
def test_the_replay_shown_is_what_export_and_an_offline_replay_print():
    done = cog_check("docs/replay.md")
    assert done.returncode == 0, drifted("docs/replay.md", done)


@pytest.mark.slow
def test_the_report_screenshot_was_taken_of_todays_quickstart_and_report_page(quickstart_run):
    _, run_dir, _ = quickstart_run
    png = (ROOT / "docs" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1280, 1000)
    recorded = json.loads((ROOT / "docs" / "report.json").read_text())
    assert recorded == outputs.taken_from(run_dir), "docs/report.png is stale: run `make docs`"


def test_every_output_block_in_the_docs_is_generated():
    """A fenced block outside cog's markers must be something a user types (bash, toml, python...), never output."""
    typed = {"bash", "toml", "python", "bibtex", "yaml", "json"}
    hand_made = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        outside = re.sub(r"\[\[\[cog.*?\[\[\[end\]\]\]", "", page.read_text(), flags=re.S)
        fences = re.findall(r"^```(\w*)$", outside, flags=re.M)[::2]  # opening fences
        hand_made += [f"{page.name}: ```{lang}" for lang in fences if lang not in typed]
    assert hand_made == []
