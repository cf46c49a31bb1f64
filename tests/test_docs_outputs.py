"""What the README and the docs show of a run is what dpokd prints for it: `make docs` writes those
outputs with cog, and this fails when they drift: the quickstart's (which the suite runs anyway) and the
paper page's plan."""

import os
import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.slow
@pytest.mark.parametrize("page", ["README.md", "docs/report.md"])
def test_the_quickstarts_outputs_are_what_dpokd_prints(quickstart_run, page):
    home, _, _ = quickstart_run
    done = subprocess.run([sys.executable, "-m", "cogapp", "--check", "-I", str(ROOT / "docs"), str(ROOT / page)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "DPOKD_DOCS_RUNS": str(home / "runs")})
    assert done.returncode == 0, f"{page} drifted from what dpokd prints; run `make docs`:\n{done.stdout}{done.stderr}"


def test_the_plan_the_paper_page_shows_is_what_dpokd_plan_prints():
    done = subprocess.run([sys.executable, "-m", "cogapp", "--check", "-I", str(ROOT / "docs"), str(ROOT / "docs" / "paper.md")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, f"docs/paper.md drifted from what dpokd prints; run `make docs`:\n{done.stdout}{done.stderr}"
