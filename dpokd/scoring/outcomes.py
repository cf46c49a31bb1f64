"""Every judge's outcomes on disk: ``eval/<judge>-<system>.jsonl``, one :class:`~dpokd.Outcome` per line.

A judge returns scores and outcomes; :func:`record` writes both, adding a score (the mean, with a
interval, Wilson's for values in [0, 1]) for each metric the judge gave outcomes of but no score. Whatever reads a run
reads outcomes through :func:`read_outcomes` and :func:`per_example`, never a judge's own format.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

from pydantic import ValidationError

from ..errors import DpokdError
from ..records import Outcome, Score
from ..runs import RunDir, damaged, read_jsonl, write_jsonl
from .stats import mean_ci

AGAIN = "delete results.json and re-run the spec to evaluate again (answers come from the cache)"


def eval_path(run_dir: Path, judge: str, system: str) -> Path:
    """Where a judge's outcomes for one system are.

    System names come from specs: quoted, a name is one file name, and two names never share one.
    """
    return Path(run_dir) / "eval" / quote(f"{judge}-{system}.jsonl", safe="@+-_.,=")


def split_results(results: Iterable[Score | Outcome]) -> tuple[list[Score], list[Outcome]]:
    """A judge's results as (scores, outcomes); anything else is the judge's mistake, named."""
    scores, outcomes = [], []
    for item in results:
        if isinstance(item, Outcome):
            outcomes.append(item)
        elif isinstance(item, Score):
            scores.append(item)
        else:
            raise DpokdError(f"a judge returned a {type(item).__name__}; judges return Score and Outcome records")
    return scores, outcomes


def summarise(scores: Sequence[Score], outcomes: Sequence[Outcome]) -> list[Score]:
    """The scores, plus one for each (judge, system, metric) that has outcomes but no score."""
    have = {(s.judge, s.system, s.metric) for s in scores}
    groups: dict[tuple[str, str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.judge, o.system, o.metric), []).append(o)
    added = []
    for (judge, system, metric), found in groups.items():
        if (judge, system, metric) in have:
            continue
        values = list(per_example(found).values())
        added.append(Score(judge=judge, system=system, metric=metric, value=sum(values) / len(values) if values else None,
                           ci=mean_ci(values), n=len(values), higher_is_better=found[0].higher_is_better))
    return [*scores, *added]


def record(run_dir: Path, results: Iterable[Score | Outcome]) -> list[Score]:
    """Write the judges' outcomes, then ``results.json`` (which marks the evaluation done); the scores."""
    scores, outcomes = split_results(results)
    by_file: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        by_file.setdefault((o.judge, o.system), []).append(o)
    for (judge, system), found in by_file.items():
        write_jsonl(eval_path(run_dir, judge, system), [o.model_dump(mode="json") for o in found])
    scores = summarise(scores, outcomes)
    RunDir(run_dir).write_results(scores)
    return scores


def read_outcomes(run_dir: Path, judge: str, system: str) -> list[Outcome] | None:
    """The judge's outcomes for ``system``, checked; None when it wrote none."""
    path = eval_path(run_dir, judge, system)
    if not path.exists():
        return None
    found = []
    for n, row in enumerate(read_jsonl(path, remedy=AGAIN), 1):
        if not isinstance(row, dict) or "metric" not in row:
            raise damaged(path, f"line {n} is not an outcome (written by an older dpokd?)", AGAIN)
        try:
            found.append(Outcome.model_validate(row))
        except (ValidationError, DpokdError) as exc:
            raise damaged(path, f"line {n} is not an outcome: {str(exc).splitlines()[0]}", AGAIN) from None
    return found


def per_example(outcomes: Iterable[Outcome], metric: str | None = None) -> dict[str, float]:
    """Each example's mean over its samples (of ``metric``, else of every outcome), in first-seen order;
    examples with no verdict at all are left out."""
    sums: dict[str, list[float]] = {}
    for o in outcomes:
        if (metric is None or o.metric == metric) and o.score is not None:
            seen = sums.setdefault(o.example_id, [0.0, 0])
            seen[0] += o.score
            seen[1] += 1
    return {i: total / n for i, (total, n) in sums.items()}


def passed(share: float) -> bool:
    """One pass or fail per example: more than half of its samples passed (with one sample: it passed)."""
    return share > 0.5


def metrics_of(outcomes: Iterable[Outcome]) -> list[str]:
    """The metrics among ``outcomes``, in first-seen order."""
    return list(dict.fromkeys(o.metric for o in outcomes))


def is_binary(outcomes: Iterable[Outcome]) -> bool:
    """Whether every verdict is a pass or a fail (so an example can be called passed or failed)."""
    return all(isinstance(o.value, bool) for o in outcomes if o.value is not None)
