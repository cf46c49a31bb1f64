"""bench/gpu.py is ready for a GPU machine: its dry run takes every measurement's path on a CPU."""

import os
import subprocess
import sys

import pytest

from .conftest import ROOT

GPU_BENCH = ROOT / "bench" / "gpu.py"


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GPU_BENCH), *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=600)


def test_without_cuda_it_says_so_in_one_line_and_exits_0():
    out = bench()
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines() == [
        "bench/gpu.py: no CUDA device on this machine, nothing measured (--dry-run checks the script on a CPU)"]


@pytest.mark.slow
def test_dry_run_takes_one_step_of_every_measurement():
    out = bench("--dry-run")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()

    def figure(label: str) -> float:
        found = [l for l in lines if l.startswith(label + ": ")]
        assert len(found) == 1, (label, out.stdout)
        return float(found[0][len(label) + 2 :].split()[0])  # "label: value unit (ratio vs baseline)"

    for label in ("plain TRL: QLoRA DPO steps/s", "dpokd train_dpo: QLoRA DPO steps/s",
                  "plain TRL, gradient checkpointing: QLoRA DPO steps/s",
                  "dpokd train_dpo, gradient checkpointing: QLoRA DPO steps/s",
                  "generation, one prompt at a time", "generation, gen_batch_size 2"):
        assert figure(label) > 0
    assert any("(" in l and "x vs plain TRL)" in l for l in lines if l.startswith("dpokd train_dpo: "))
    assert lines[-1] == "dry run: figures not saved"
