"""Training runs unchanged under torchrun: two CPU ranks (gloo), each on half the pairs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dpokd.plugins.tasks.synthetic import SyntheticCodegen

from .conftest import ROOT

pytestmark = pytest.mark.slow

SPEC = """
[run]
cache_dir = "cache"
[task]
plugin = "synthetic-codegen"
n_train = 32
n_eval = 4
levels = [1]
[teacher]
plugin = "reference"
[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
epochs = 1
batch_size = 2
max_length = 96
"""


def test_torchrun_two_ranks_each_train_half_and_rank0_saves(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    task = SyntheticCodegen(SyntheticCodegen.Options(n_train=32, n_eval=4, levels=[1]))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"example_id": e.id, "prompt": e.prompt, "chosen": e.reference,
                                         "rejected": "    pass\n"}) + "\n" for e in task.examples("train")))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "dpokd", "train", str(spec), "--pairs", str(pairs),
                          "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    reports = sorted((json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")), key=lambda r: r["rank"])
    assert [r["rank"] for r in reports] == [0, 1] and all(r["world_size"] == 2 for r in reports)
    assert [r["pairs_seen"] for r in reports] == [16, 16]
    assert [r["saved_adapter"] for r in reports] == [True, False]
    adapters = list((tmp_path / "out").rglob("adapter_model.safetensors"))
    assert adapters == [tmp_path / "out" / "adapter" / "adapter_model.safetensors"]
