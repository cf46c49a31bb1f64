"""Experiment trackers: the student's ``report_to`` names them, TRL logs the training curves, and
the judges' scores of every checkpoint are logged here at the end of each evaluation.

Each iteration is its own tracker run, grouped under the dpokd run's name (``NAME/iter_K``;
TensorBoard: ``iter_K/tensorboard``), and the judge scores go to one more run (``NAME/eval``;
TensorBoard: ``eval/tensorboard``) with the iteration as the step, so a checkpoint's score sits
at the same step number as the iteration that trained it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Iterable

from .errors import ConfigError
from .records import Score

# transformers' integration name -> (the module it imports, the package to install).
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
    "mlflow": ("mlflow", "mlflow"),
    "comet_ml": ("comet_ml", "comet-ml"),
    "clearml": ("clearml", "clearml"),
    "neptune": ("neptune", "neptune"),
    "dvclive": ("dvclive", "dvclive"),
    "swanlab": ("swanlab", "swanlab"),
    "codecarbon": ("codecarbon", "codecarbon"),
}
# Trackers the judge scores are sent to; the others get the training curves only.
SCORE_TRACKERS = ("tensorboard", "wandb", "trackio")
TENSORBOARD_DIR = "tensorboard"
_CHECKPOINT = re.compile(r"student@iter_(\d+)")


def check_available(report_to: Iterable[str], field: str = "student.report_to") -> None:
    """A tracker whose package is missing fails here, before anything is paid for, not after training."""
    for name in report_to:
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"{field}: {name!r} needs the {package!r} package, which is not installed; "
                              f"`pip install {package}`, or remove {name!r} from {field}")


def iteration_run(output_dir: Path, run_dir: Path | None) -> tuple[str, str]:
    """``(group, run name)`` of one training call: ``("NAME", "NAME/iter_K")`` within a run."""
    group = (run_dir or output_dir.parent).name or "dpokd"
    return group, f"{group}/{output_dir.name}"


def log_scores(run_dir: Path, report_to: Iterable[str], scores: list[Score], log=None) -> None:
    """Log each judge's scores of each system, the student's checkpoints as steps 0 (base) to K."""
    wanted = [name for name in report_to if name in SCORE_TRACKERS]
    skipped = [name for name in report_to if name not in SCORE_TRACKERS]
    if skipped and log is not None:
        log(f"judge scores are not sent to {', '.join(skipped)} (only the training curves are)")
    if not wanted:
        return
    by_step = scalars(scores)
    group = run_dir.name
    for name in wanted:
        if name == "tensorboard":
            _tensorboard(run_dir / "eval" / TENSORBOARD_DIR, by_step)
        elif name == "wandb":
            _wandb(group, by_step)
        elif name == "trackio":
            _trackio(group, by_step)


def scalars(scores: list[Score]) -> dict[int, dict[str, float]]:
    """``{step: {tag: value}}``: ``judge/metric`` for the student at ``student@iter_K`` (step K) and
    ``student@base`` (step 0); ``judge/metric/SYSTEM`` at step 0 for every other system (the teacher)."""
    out: dict[int, dict[str, float]] = {}
    for s in scores:
        if s.judge == "run" or s.value is None:  # the run's bookkeeping (tokens, dollars); nothing measured
            continue
        match = _CHECKPOINT.fullmatch(s.system)
        if match or s.system == "student@base":
            step, tag = int(match.group(1)) if match else 0, f"{s.judge}/{s.metric}"
        else:
            step, tag = 0, f"{s.judge}/{s.metric}/{s.system}"
        out.setdefault(step, {})[tag] = s.value
        if s.ci is not None:
            out[step][f"{tag}/ci_low"], out[step][f"{tag}/ci_high"] = s.ci
    return dict(sorted(out.items()))


def _tensorboard(log_dir: Path, by_step: dict[int, dict[str, float]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for step, values in by_step.items():
            for tag, value in values.items():
                writer.add_scalar(tag, value, step)
    finally:
        writer.close()


def _wandb(group: str, by_step: dict[int, dict[str, float]]) -> None:
    import wandb

    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "huggingface"), name=f"{group}/eval", group=group)
    try:
        for step, values in by_step.items():
            run.log(values, step=step)
    finally:
        run.finish()


def _trackio(group: str, by_step: dict[int, dict[str, float]]) -> None:
    import trackio

    trackio.init(project=group, name="eval")
    try:
        for step, values in by_step.items():
            trackio.log(values, step=step)
    finally:
        trackio.finish()
