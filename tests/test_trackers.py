"""Experiment trackers: a run with ``report_to = ["tensorboard"]`` leaves event files that
TensorBoard's own reader reads back, holding the DPO loss and reward margins of every step of
every iteration and the judges' pass@1 of every checkpoint, with the values the run recorded."""

import importlib.util
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dpokd.trackers import TRACKERS

from .conftest import run_cli
from .tracked_run import SPEC, tracked_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tracked_run(tmp_path_factory)[0]


def scalars(log_dir) -> dict[str, dict[int, float]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def test_each_iteration_logs_its_dpo_loss_and_reward_margins_per_step(run):
    for k in (1, 2):
        logged = scalars(run / f"iter_{k}" / "tensorboard")
        steps = [json.loads(line) for line in (run / f"iter_{k}" / "train_log.jsonl").read_text().splitlines()]
        assert [s["step"] for s in steps] == [1, 2]  # 8 pairs, batch 4, one epoch
        for key in ("loss", "rewards/margins", "rewards/accuracies"):
            assert logged[f"train/{key}"] == pytest.approx({s["step"]: s[key] for s in steps}, abs=1e-6), (k, key)
    assert scalars(run / "iter_2" / "tensorboard")["train/rewards/margins"][2] != 0  # trained, not the initial 0


def test_the_judges_scores_of_every_checkpoint_are_logged_with_the_iteration_as_step(run):
    results = json.loads((run / "results.json").read_text())["scores"]
    pass1 = {s["system"]: s for s in results if s["judge"] == "execution" and s["metric"] == "pass@1"}
    logged = scalars(run / "eval" / "tensorboard")
    assert logged["execution/pass@1"] == pytest.approx(
        {0: pass1["student@base"]["value"], 1: pass1["student@iter_1"]["value"], 2: pass1["student@iter_2"]["value"]})
    assert logged["execution/pass@1/teacher"] == {0: pass1["teacher"]["value"]} == {0: 1.0}
    final_ci = pass1["student@iter_2"]["ci"]
    assert (logged["execution/pass@1/ci_low"][2], logged["execution/pass@1/ci_high"][2]) == pytest.approx(tuple(final_ci))


def test_a_tracker_whose_package_is_missing_is_refused_before_the_run_starts(tmp_path):
    missing = next((name for name, (module, _) in TRACKERS.items() if importlib.util.find_spec(module) is None), None)
    if missing is None:
        pytest.skip("every tracker package is installed here")
    package = TRACKERS[missing][1]
    (tmp_path / "run.toml").write_text(SPEC.replace('report_to = ["tensorboard"]', f'report_to = ["{missing}"]'))
    out = run_cli("run", str(tmp_path / "run.toml"), cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    message = " ".join(out.stderr.split())
    assert f"student.report_to: '{missing}' needs the '{package}' package" in message
    assert f"pip install {package}" in message and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # refused before the run directory was made


def test_an_unknown_tracker_is_a_spec_error_with_the_nearest_name(tmp_path):
    (tmp_path / "run.toml").write_text(SPEC.replace('["tensorboard"]', '["tensorbord"]'))
    out = run_cli("validate", str(tmp_path / "run.toml"))
    assert out.returncode == 2
    message = " ".join(out.stderr.split())
    assert "student.report_to" in message and "did you mean 'tensorboard'" in message, message
