"""The quickstart does what the README says: on a CPU, the student learns from the teacher."""

import json
import subprocess
import sys

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
    # No interval is a point, not even at 0/32 or 32/32, nor the Δ of a checkpoint that passes all.
    for system, row in rows.items():
        low, high = row["pass@1_ci"]
        assert low <= row["pass@1"] <= high and high - low > 0.1 and row["pass@1_n"] == 32, system
    assert rows["teacher"]["pass@1_ci"][0] < 0.9 and rows["student@base"]["pass@1_ci"][1] > 0.1
    delta = last["vs_ref"]
    assert delta["against"] == "student@base" and delta["ci"][0] < delta["delta"] - 0.05 and delta["p"] < 0.05
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


def test_make_demo_ends_with_the_next_commands_as_they_run_from_the_repository(tmp_path):
    # A stand-in for .venv/bin/dpokd, newer than pyproject.toml so make does not install: the run itself
    # is the quickstart tests above; this checks what `make demo` prints after it.
    fake = tmp_path / "bin" / "dpokd"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"dpokd $*\"\n")
    fake.chmod(0o755)
    done = subprocess.run(["make", "-s", "-C", str(ROOT), "demo", f"BIN={fake.parent}"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "dpokd run specs/quickstart.toml"
    assert f"  {fake.parent}/dpokd leaderboard runs/quickstart" in lines
    assert f"  {fake.parent}/dpokd view runs/quickstart --open" in lines
    assert lines[-1] == f"(or 'source {fake.parent}/activate' once, then plain 'dpokd ...')"
    assert ".venv/bin/dpokd view runs/quickstart --open" in _make("demo")  # what a user's BIN prints


def test_the_package_builds_without_a_deprecation_warning(tmp_path):
    # The project as setuptools sees it at install time (`pip install -e .` prepares the same metadata).
    for name in ("pyproject.toml", "README.md", "dpokd"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "out").mkdir()
    script = ("import sys; from setuptools import build_meta; "
              "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-W", "always", "-c", script, str(tmp_path / "out")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "deprecated" not in done.stderr.lower(), done.stderr
    metadata = (tmp_path / "out" / done.stdout.split()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()


def test_the_log_and_the_report_count_new_and_repeated_pairs_alike(quickstart_run):
    """mix_previous: the log says how many pairs are new and how many come from the iteration before,
    and their sum is the pairs the report's training table shows."""
    import re

    home, run, out = quickstart_run
    said = re.search(r"iter 2: (\d+) new pairs .*; (\d+) to train on with (\d+) from iteration 1", out.stdout + out.stderr)
    assert said, (out.stdout + out.stderr)[-2000:]
    new, total, repeated = map(int, said.groups())
    assert new + repeated == total
    assert json.loads((run / "iter_2" / "train_metrics.json").read_text())["pairs"] == total
    assert "the Pairs section below counts them apart" in (run / "report.html").read_text()
