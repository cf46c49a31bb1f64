"""The quickstart does what the README says: on a CPU, the student learns from the teacher."""

import json

import pytest

from .conftest import run_cli

pytestmark = pytest.mark.slow


def test_quickstart_student_beats_its_base_by_far(quickstart_run):
    home, run, out = quickstart_run
    board = run_cli("leaderboard", str(run), "--format", "json", cwd=home)
    rows = {r["system"]: r for r in json.loads(board.stdout)}
    assert rows["teacher"]["pass@1"] == 1.0
    # The loop may stop before iteration 3 when the student has nothing left to learn.
    last = rows[max((s for s in rows if s.startswith("student@iter_")), key=lambda s: int(s.split("_")[1]))]
    assert last["pass@1"] > rows["student@base"]["pass@1"] + 0.3
    assert last["teacher_nll"] < rows["student@base"]["teacher_nll"]
    assert (run / "curves.png").exists()
    # precompute_ref_log_probs: TRL draws that pass's bar itself, whatever disable_tqdm says
    assert "Computing reference log probs" not in out.stdout + out.stderr
