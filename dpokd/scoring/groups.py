"""Δ between two groups of runs over seeds: one system of each, paired example by example within a seed.

Each seed gives one paired Δ: the difference of the two systems' mean scores over the examples both
answered (within a seed both groups draw the same examples). The Δ over seeds is the mean of the
per-seed Δs, and its interval Student's t-interval of them. A seed's Δ already carries the noise of
its examples (which are redrawn with the seed) and of its training, so the spread of the per-seed Δs
holds both, and the seeds are independent replicates; a bootstrap over five seeds would be narrower
than the t-interval, which is what a handful of replicates calls for. With one seed there is no
spread over seeds: the interval is that seed's paired interval over examples (Newcombe's); nor where
every seed gave the same Δ, whose interval is Newcombe's over all the seeds' examples together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DpokdError
from ..runs import RunDir
from .outcomes import per_example
from .rows import PAIRED_METRIC, run_outcomes
from .stats import paired_ci, sign_flip_p, t_interval

_CHECKPOINT = re.compile(r"student@iter_(\d+)$")
SEEDED = re.compile(r"-seed\d+$")


@dataclass
class Side:
    """One side of a comparison: the runs of a group by seed, and the system compared."""

    label: str
    runs: dict[int, Path]
    system: str | None  # None: each run's last student checkpoint


def parse_side(text: str) -> Side:
    """``RUN_OR_GROUP[:SYSTEM]``: a run directory, or a group's stem (``runs/x`` for ``runs/x`` and
    ``runs/x-seed1``, ``runs/x-seed2``, ...; ``runs/x-seed1`` alone names its group too)."""
    where, _, system = text.partition(":") if ":" in Path(text).name else (text, "", "")
    stem = Path(SEEDED.sub("", where.rstrip("/")))
    candidates = [stem, *sorted(stem.parent.glob(f"{stem.name}-seed*"))]
    runs: dict[int, Path] = {}
    for path in candidates:
        if not (path / "results.json").exists() or SEEDED.sub("", path.name) != stem.name:
            continue
        seed = run_seed(path)
        if seed in runs:
            raise DpokdError(f"{text}: {runs[seed]} and {path} both ran seed {seed}; name one run, or move one away")
        runs[seed] = path
    if not runs:
        raise DpokdError(f"{text}: no finished run at {stem} nor at {stem}-seedN")
    return Side(label=str(stem) + (f":{system}" if system else ""), runs=dict(sorted(runs.items())), system=system or None)


def run_seed(path: Path) -> int:
    manifest = RunDir(path).manifest() or {}
    seed = (manifest.get("spec") or {}).get("run", {}).get("seed", manifest.get("seed"))
    if not isinstance(seed, int):
        raise DpokdError(f"{path}: its manifest.json records no seed (not a dpokd run?)")
    return seed


def scores_of(path: Path, system: str | None, metric: str) -> tuple[str, dict[str, float]]:
    """(the system, its per-example ``metric`` in the run at ``path``); the last checkpoint by default."""
    found = run_outcomes(path)
    systems = list(dict.fromkeys(s for _, s in found))
    if system is None:
        checkpoints = sorted((int(m.group(1)), s) for s in systems if (m := _CHECKPOINT.match(s)))
        if not checkpoints:
            raise DpokdError(f"{path}: no student checkpoint was judged; name a system (RUN:SYSTEM) among {systems}")
        system = checkpoints[-1][1]
    for (_, s), outcomes in found.items():
        scores = per_example(outcomes, metric) if s == system else {}
        if scores:
            return system, scores
    raise DpokdError(f"{path}: no {metric} outcomes of {system!r} (systems with outcomes: {', '.join(systems)})")


def _seed_pairs(a: Side, b: Side, metric: str) -> list[tuple[int, str, str, list[float], list[float], int]]:
    """Per seed both sides ran: (seed, A's system, B's system, A's and B's scores on the examples both answered,
    how many examples only one side answered, which the paired Δ leaves out)."""
    seeds = [s for s in a.runs if s in b.runs]
    if not seeds:
        raise DpokdError(f"{a.label} ran seeds {sorted(a.runs)} and {b.label} seeds {sorted(b.runs)}: none in common")
    found = []
    for seed in seeds:
        (sa, xa), (sb, xb) = scores_of(a.runs[seed], a.system, metric), scores_of(b.runs[seed], b.system, metric)
        ids = [i for i in xa if i in xb]
        if not ids:
            raise DpokdError(f"seed {seed}: {a.runs[seed]} and {b.runs[seed]} share no example; compare runs of one task")
        found.append((seed, sa, sb, [xa[i] for i in ids], [xb[i] for i in ids], len(xa) + len(xb) - 2 * len(ids)))
    return found


def _seed_row(seed: int, sa: str, sb: str, xs: list[float], ys: list[float], unpaired: int) -> dict[str, Any]:
    delta = sum(xs) / len(xs) - sum(ys) / len(ys)
    return {"seed": seed, "a_system": sa, "b_system": sb, "a": sum(xs) / len(xs), "b": sum(ys) / len(ys),
            "delta": delta, "ci": list(paired_ci(xs, ys) or (delta, delta)),
            "p": sign_flip_p([x - y for x, y in zip(xs, ys)]), "n": len(xs), "unpaired": unpaired}


def seed_deltas(a: Side, b: Side, metric: str) -> list[dict[str, Any]]:
    """One row per seed both sides ran: each side's system and mean score, their paired Δ and its interval."""
    return [_seed_row(*found) for found in _seed_pairs(a, b, metric)]


def group_delta(a: Side, b: Side, metric: str = PAIRED_METRIC) -> dict[str, Any]:
    """A's system against B's over their common seeds: the mean of the per-seed Δs and its interval.

    Seeds that all gave the same Δ show no spread to make a t-interval of (it would be a point):
    the interval is then Newcombe's over every seed's examples together, and ``method`` says so."""
    pairs = _seed_pairs(a, b, metric)
    rows = [_seed_row(*found) for found in pairs]
    deltas = [r["delta"] for r in rows]
    mean = sum(deltas) / len(deltas)
    if len(rows) == 1:
        ci, method = rows[0]["ci"], "one seed: Newcombe's paired interval over its examples"
    elif len(set(deltas)) == 1:
        xs, ys = [x for *_, xs, _, _ in pairs for x in xs], [y for *_, ys, _ in pairs for y in ys]
        ci = list(paired_ci(xs, ys))
        method = (f"all {len(rows)} seeds gave this Δ: Newcombe's paired interval over their {len(xs)} examples "
                  "together")
    else:
        ci = list(t_interval(deltas))
        if all(0 <= r[side] <= 1 for r in rows for side in ("a", "b")):  # a Δ of rates lies in [-1, 1]
            ci = [max(-1.0, ci[0]), min(1.0, ci[1])]
        method = f"t-interval over {len(rows)} seeds' paired Δs"
    return {"a": a.label, "b": b.label, "metric": metric, "delta": mean, "ci": ci, "method": method,
            "a_mean": sum(r["a"] for r in rows) / len(rows), "b_mean": sum(r["b"] for r in rows) / len(rows),
            "seeds": rows}
