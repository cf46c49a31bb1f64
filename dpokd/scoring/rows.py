"""The leaderboard's rows: one per (run, system), one key per metric, with the paired comparisons
and the LLM judge's calibration. Data only; ``dpokd.leaderboard`` renders them, the report shows them.

Every judge's outcomes are paired (every system answers the same examples), so each student
checkpoint also gets its Δ against a reference (``student@base`` unless ``--against``) and against
the previous checkpoint, with Newcombe's paired interval and an exact sign-flip test (McNemar's, for
passes and fails). The Δ is of ``pass@1`` where a judge gave pass@1 outcomes, else of the first metric
with outcomes. Where a judge compared systems with a baseline (a pairwise judge) beside a pass or
fail judge, its calibration against that judge is shown too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import DpokdError
from ..records import Outcome
from ..runs import RunDir, read_json
from .outcomes import is_binary, per_example, passed, read_outcomes
from .stats import calibration, compare

# Columns first in this order; any other metric follows alphabetically.
ORDER = ("pass@1", "pass@10", "pass@100", "win_rate", "consistency", "teacher_nll", "answer_chars", "tokens", "cost_usd", "truncated")
REFERENCE = "student@base"
PAIRED_METRIC = "pass@1"  # the Δ's metric wherever a judge gave pass@1 outcomes
# Row keys that are not metric columns: the paired comparisons, the judge's calibration, where an
# online loop stopped, and a seed group's members.
EXTRAS = ("vs_ref", "vs_prev", "judge_calibration", "converged_at")
SEED_KEYS = ("seeds", "n_seeds", "runs")
SPREAD = "_seeds"  # "pass@1_seeds": a metric's spread over a group's seeds
_CHECKPOINT = re.compile(r"student@iter_(\d+)")


def run_labels(run_dirs: list[Path]) -> dict[Path, str]:
    """Each run's name in the rows: its directory's name, or the path given where two runs share a name."""
    paths = {Path(d).resolve(): Path(d) for d in run_dirs}
    names = [p.name for p in paths]
    return {p: p.name if names.count(p.name) == 1 else str(given) for p, given in paths.items()}


def converged(run_dir: Path) -> int | None:
    """The last iteration an online loop trained, where it stopped early for want of new pairs."""
    for path in sorted(Path(run_dir).glob("iter_*/pairs_stats.json"), key=lambda p: int(p.parent.name[5:])):
        stats = read_json(path)
        if isinstance(stats, dict) and stats.get("ends_loop"):
            return int(path.parent.name[5:]) - 1
    return None


def run_outcomes(run_dir: Path, scores=None) -> dict[tuple[str, str], list[Outcome]]:
    """Every ``(judge, system)``'s outcomes in a finished run, in the order of its scores."""
    scores = RunDir(run_dir).results() if scores is None else scores
    found = {}
    for judge, system in dict.fromkeys((s.judge, s.system) for s in scores):
        outcomes = read_outcomes(run_dir, judge, system)
        if outcomes:
            found[(judge, system)] = outcomes
    return found


def load_rows(run_dirs: list[Path], against: str | None = None) -> list[dict[str, Any]]:
    """The rows of every run, each with its comparisons; ``against`` names the reference system.

    Rows are keyed by the run's path: two runs of one name in different folders stay apart.
    """
    rows: dict[tuple[Path, str], dict[str, Any]] = {}
    better: dict[str, bool] = {}
    labels = run_labels(run_dirs)
    for given in run_dirs:
        path = Path(given).resolve()
        if path not in labels:
            continue  # given twice
        label = labels.pop(path)
        run = RunDir(path)
        if not (run.path / "results.json").exists():
            raise DpokdError(f"{given}: no results.json; the run has not finished (re-run its spec to resume)")
        stopped = converged(path)
        scores = run.results()
        for score in scores:
            row = rows.setdefault((path, score.system), {"run": label, "system": score.system, "_path": path})
            if stopped is not None:
                row["converged_at"] = stopped
            row[score.metric] = score.value
            if score.ci is not None:
                row[f"{score.metric}_ci"] = list(score.ci)
            if score.n is not None:
                row[f"{score.metric}_n"] = score.n
            better[score.metric] = score.higher_is_better
        of_run = {system: row for (where, system), row in rows.items() if where == path}
        outcomes = run_outcomes(path, scores)
        paired = paired_shares(outcomes)
        add_comparisons(path.name, of_run, paired, against)
        add_calibration(of_run, outcomes, paired)
    out = list(rows.values())
    for row in out:
        row["_better"] = better
    return out


def paired_metric(outcomes: dict[tuple[str, str], list[Outcome]]) -> str | None:
    """The metric the Δ is of: pass@1 where a judge gave it, else the first with outcomes (in column order)."""
    metrics = {o.metric for found in outcomes.values() for o in found if o.against is None}
    ranked = [m for m in (PAIRED_METRIC, *ORDER) if m in metrics] + sorted(metrics)
    return ranked[0] if ranked else None


def paired_shares(outcomes: dict[tuple[str, str], list[Outcome]]) -> dict[str, tuple[str, str, dict[str, float], bool]]:
    """``system -> (judge, metric, each example's mean, whether pass/fail)`` of the paired metric;
    where two judges gave it, the later one's (as the row's column shows)."""
    metric = paired_metric(outcomes)
    found = {}
    for (judge, system), items in outcomes.items():
        own = [o for o in items if o.metric == metric and o.against is None]
        if own:
            found[system] = (judge, metric, per_example(own), is_binary(own))
    return found


def add_comparisons(run: str, rows: dict[str, dict[str, Any]], shares, against: str | None) -> None:
    """Δ of each system against the reference, and of each checkpoint against the one before it."""
    if against is not None and against not in rows:
        raise DpokdError(f"leaderboard --against: run {run} has no system {against!r} "
                         f"(its systems: {', '.join(rows)})")
    reference = against or REFERENCE
    if reference not in shares:
        return
    ref_judge = shares[reference][0]
    for system, (judge, metric, own, _) in shares.items():
        if system == reference or judge != ref_judge:
            continue
        if against is not None or _CHECKPOINT.fullmatch(system):
            found = compare(own, shares[reference][2], reference, metric)
            if found is not None:
                rows[system]["vs_ref"] = found.as_dict()
        previous = previous_checkpoint(system, shares)
        if previous is not None and shares[previous][0] == judge:
            found = compare(own, shares[previous][2], previous, metric)
            if found is not None:
                rows[system]["vs_prev"] = found.as_dict()


def previous_checkpoint(system: str, systems) -> str | None:
    """``student@iter_K``'s previous checkpoint among ``systems``: the latest iteration before K, else the base."""
    match = _CHECKPOINT.fullmatch(system)
    if not match:
        return None
    k = int(match.group(1))
    earlier = [int(m.group(1)) for s in systems if (m := _CHECKPOINT.fullmatch(s)) and int(m.group(1)) < k]
    if earlier:
        return f"student@iter_{max(earlier)}"
    return REFERENCE if REFERENCE in systems else None


def add_calibration(rows: dict[str, dict[str, Any]], outcomes: dict[tuple[str, str], list[Outcome]], shares) -> None:
    """Where exactly one of a system and its baseline passes (by the paired pass or fail judge), how
    often a comparing judge prefers the passing one (accuracy) and its agreement with the tests (κ);
    for a grading judge, how often its grade agrees with each answer's pass or fail."""
    for (judge, system), items in outcomes.items():
        compared = [o for o in items if o.against is not None]
        if not compared or system not in shares or not shares[system][3]:
            continue
        baseline = compared[0].against
        execution, _, ours, _ = shares[system]
        if baseline not in shares or shares[baseline][0] != execution:
            continue
        base = shares[baseline][2]
        truth, said = [], []
        for o in compared:
            i = o.example_id
            if o.value is None or o.label == "failed" or i not in ours or i not in base:  # no judge's verdict
                continue
            a, b = passed(ours[i]), passed(base[i])
            if a != b:
                truth.append("ours" if a else "base")
                said.append("ours" if o.score > 0.5 else "base" if o.score < 0.5 else "tie")
        if not truth and not any(o.example_id in ours for o in compared):
            continue  # the two judges scored different examples (e.g. HumanEval beside a summary task)
        rows[system]["judge_calibration"] = {"judge": judge, "execution": execution, "baseline": baseline,
                                             **calibration(truth, said).as_dict()}
    for (judge, system), items in outcomes.items():
        if system in shares and "judge_calibration" not in rows[system]:
            found = grading_calibration(judge, items, shares[system])
            if found is not None:
                rows[system]["judge_calibration"] = found


def grading_calibration(judge: str, items: list[Outcome], truth) -> dict[str, Any] | None:
    """A grading judge (an LLM rubric: grades in [0, 1]) against a pass or fail judge on the same
    answers: a grade of at least half the scale says "pass"; its accuracy and κ against the truth."""
    truth_judge, _, passes, binary = truth
    graded = [o for o in items if o.against is None and o.value is not None and not isinstance(o.value, bool)
              and o.label != "failed" and 0 <= o.value <= 1]
    if not graded or not binary or truth_judge == judge:
        return None
    grades = per_example(graded)
    ids = [i for i in grades if i in passes]
    if not ids:
        return None
    said = ["pass" if grades[i] >= 0.5 else "fail" for i in ids]
    real = ["pass" if passed(passes[i]) else "fail" for i in ids]
    return {"judge": judge, "execution": truth_judge, "baseline": None, **calibration(real, said).as_dict()}


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The metric columns of ``rows``: the usual ones first, then the rest alphabetically."""
    metrics = {k for r in rows for k in r if k not in ("run", "system", *EXTRAS, *SEED_KEYS)
               and not k.startswith("_") and not k.endswith("_ci") and not k.endswith(SPREAD)
               and not (k.endswith("_n") and k[:-2] in r)}
    return [m for m in ORDER if m in metrics] + sorted(metrics - set(ORDER))


def plain_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as ``--format json`` prints them (the report shows exactly these numbers): each metric,
    its interval and how many examples it rests on (``_n``); None where nothing was measured."""
    found = metric_columns(rows)
    return [{"run": r["run"], "system": r["system"], **{c: r.get(c) for c in found},
             **{f"{c}_ci": r[f"{c}_ci"] for c in found if f"{c}_ci" in r},
             **{f"{c}_n": r[f"{c}_n"] for c in found if f"{c}_n" in r},
             **{k: r[k] for k in EXTRAS if k in r}}
            for r in rows]


def reference_names(rows: list[dict[str, Any]]) -> str:
    """The reference(s) the rows' Δ are against."""
    names = sorted({r["vs_ref"]["against"] for r in rows if r.get("vs_ref")})
    return " / ".join(names) or REFERENCE


def truth_names(rows: list[dict[str, Any]]) -> str:
    """The pass or fail judge(s) the rows' judge calibration is against (``execution``, ``match``, ...)."""
    names = sorted({r["judge_calibration"]["execution"] for r in rows if r.get("judge_calibration")})
    return " / ".join(names) or "execution"


def delta_metric(rows: list[dict[str, Any]]) -> str:
    """The metric the rows' Δ are of."""
    found = [r[key]["metric"] for r in rows for key in ("vs_ref", "vs_prev") if r.get(key)]
    return found[0] if found else PAIRED_METRIC


def main_metric(rows: list[dict[str, Any]]) -> str | None:
    """The metric a reader looks at first: the one the paired comparisons are of, where there are any (a
    judge's ``match`` rather than the ``teacher_nll`` before it), else the first column."""
    compared = [r[key]["metric"] for r in rows for key in ("vs_ref", "vs_prev") if r.get(key)]
    columns = metric_columns(rows)
    return compared[0] if compared and compared[0] in columns else next(iter(columns), None)


def convergence_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per run whose online loop stopped early."""
    stopped = {r["run"]: r["converged_at"] for r in rows if isinstance(r.get("converged_at"), int)}
    return [f"{run}: the online loop converged at iteration {k}: iteration {k + 1} had no new pairs "
            f"(run.stop_when_no_pairs); checkpoints after it were not trained" for run, k in stopped.items()]


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run's headline: its last student checkpoint's comparison with the reference (``vs_ref``: against,
    metric, delta, ci, p), with ``run`` and ``system``; the one number a newcomer asks of a run. A run with
    no such comparison has none."""
    last: dict[str, tuple[int, dict[str, Any]]] = {}
    for r in rows:
        match = _CHECKPOINT.fullmatch(r["system"])
        if match and r.get("vs_ref") and (r["run"] not in last or int(match.group(1)) > last[r["run"]][0]):
            last[r["run"]] = (int(match.group(1)), r)
    return [{"run": run, "system": r["system"], **r["vs_ref"]} for run, (_, r) in last.items()]
