"""The quickstart does what the README says: on a CPU, the student learns from the teacher."""

import json
import subprocess

import pytest

from .conftest import ROOT, run_cli

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


def _make(*args: str) -> str:
    """What `make ARGS` would run, without running it (-n), as if nothing were built yet (-B)."""
    done = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_installs_the_pinned_torch_from_the_index_the_user_names():
    default = [line for line in _make(".venv/bin/dpokd").splitlines() if "torch" in line]
    assert default == [".venv/bin/pip install -q torch==2.13.0"]  # pip's own index: PyPI, or what pip.conf says
    cpu = "https://download.pytorch.org/whl/cpu"
    chosen = [line for line in _make(".venv/bin/dpokd", f"TORCH_INDEX={cpu}").splitlines() if "torch" in line]
    assert chosen == [f".venv/bin/pip install -q torch==2.13.0 --index-url {cpu}"]
