"""One small finished online run with TensorBoard on, built once per test session and shared by the
tracker, card and push tests: two iterations of a tiny student on generated problems, the
reference teacher, graded by execution. About 25 s on two cores."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .conftest import run_cli

NAME = "tracked"
SPEC = f"""
[run]
name = "{NAME}"
mode = "online"
iterations = 2
seed = 0
output_dir = "runs"
cache_dir = "cache"

[task]
plugin = "synthetic-codegen"
n_train = 8
n_eval = 4
levels = [1]

[teacher]
plugin = "reference"

[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
tiny_hidden = 64
tiny_layers = 1
lora_r = 4
epochs = 1
batch_size = 4
max_length = 96
max_new_tokens = 8
gen_batch_size = 8
report_to = ["tensorboard"]

[[judges]]
plugin = "execution"
"""


def tracked_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The finished run's directory and the `dpokd run` that made it (its output was a pipe)."""
    base = tmp_path_factory.getbasetemp() / "tracked_run"
    done = base / "runs" / NAME / "results.json"
    if not done.exists():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir()
        (base / "run.toml").write_text(SPEC)
        out = run_cli("run", str(base / "run.toml"), cwd=base)
        assert out.returncode == 0, out.stderr[-3000:]
        (base / "stdout.txt").write_text(out.stdout)
        (base / "stderr.txt").write_text(out.stderr)
    out = subprocess.CompletedProcess(["dpokd", "run"], 0, (base / "stdout.txt").read_text(),
                                      (base / "stderr.txt").read_text())
    return base / "runs" / NAME, out
