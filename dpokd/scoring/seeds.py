"""Runs whose specs differ only in ``run.seed`` (and so ``run.name``), as one group per spec: each
system's mean over the seeds, min–max and a 95% t-interval of the mean within the metric's range."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..runs import RunDir
from .rows import SEED_KEYS, SPREAD, metric_columns
from .stats import t_interval

_SEED_SUFFIX = re.compile(r"-seed\d+$")


def _seed_key(path: Path) -> tuple[str, int] | None:
    """(the run's resolved spec without its seed and name, its seed); None for a run without a manifest."""
    manifest = RunDir(path).manifest()
    if manifest is None:
        return None
    spec = dict(manifest["spec"])
    run = dict(spec.get("run") or {})
    seed = run.pop("seed", None)
    run.pop("name", None)
    if not isinstance(seed, int) or isinstance(seed, bool):
        return None
    return json.dumps({**spec, "run": run}, sort_keys=True), seed


def seed_groups(rows: list[dict[str, Any]]) -> tuple[list[list[tuple[int, Path]]], list[str]]:
    """The runs among ``rows`` that differ only in their seed, as groups of (seed, path), seeds ascending;
    and a note for each group not aggregated because two of its runs share a seed."""
    labels = {r["_path"]: r["run"] for r in rows if "_path" in r}
    found: dict[str, list[tuple[int, Path]]] = {}
    for path in labels:
        key = _seed_key(path)
        if key is not None:
            found.setdefault(key[0], []).append((key[1], path))
    groups, notes = [], []
    for members in found.values():
        if len(members) < 2:
            continue
        seeds = [seed for seed, _ in members]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            same = [labels[p] for s, p in members if s == repeated[0]]
            notes.append(f"not aggregated over seeds: {' and '.join(same)} are the same spec with the same seed "
                         f"({repeated[0]})")
            continue
        groups.append(sorted(members))
    return groups, notes


def seed_rows(rows: list[dict[str, Any]], groups: list[list[tuple[int, Path]]]) -> list[dict[str, Any]]:
    """One row per (seed group, system): each metric's mean over the seeds that have it, and its spread."""
    out = []
    for members in groups:
        seed_of = {path: seed for seed, path in members}
        runs = [r for r in rows if r.get("_path") in seed_of]
        labels = list(dict.fromkeys(r["run"] for r in runs))
        stems = {_SEED_SUFFIX.sub("", label) for label in labels}
        name = stems.pop() if len(stems) == 1 else labels[0]
        by_system: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(runs, key=lambda r: seed_of[r["_path"]]):
            by_system.setdefault(r["system"], []).append(r)
        for system, found in by_system.items():
            row: dict[str, Any] = {"run": name, "system": system, "seeds": [seed_of[r["_path"]] for r in found],
                                   "n_seeds": len(found), "runs": [r["run"] for r in found], "_better": runs[0]["_better"]}
            for metric in metric_columns(found):
                values = {seed_of[r["_path"]]: r[metric] for r in found if r.get(metric) is not None}
                if values:
                    row[metric] = sum(values.values()) / len(values)
                    row[metric + SPREAD] = spread(values, bounds(metric, found))
            stopped = {str(seed_of[r["_path"]]): r.get("converged_at") for r in found}
            if any(v is not None for v in stopped.values()):
                row["converged_at"] = stopped
            out.append(row)
    return out


def spread(values: dict[int, float], bounds: tuple[float | None, float | None] = (None, None)) -> dict[str, Any]:
    """Mean, min, max and the 95% t-interval of the mean of one metric over seeds, kept within the
    metric's ``bounds`` (a rate in [0, 1], an NLL at least 0). No interval from one seed, nor from
    seeds that all gave the same value: ``distinct`` says how many different values there were."""
    xs = list(values.values())
    n, mean = len(xs), sum(xs) / len(xs)
    distinct = len(set(xs))
    interval = t_interval(xs) if distinct > 1 else None
    clipped = False
    if interval is not None:
        low, high = bounds
        kept = [max(low, interval[0]) if low is not None else interval[0],
                min(high, interval[1]) if high is not None else interval[1]]
        clipped, interval = kept != list(interval), kept
    return {"n": n, "mean": mean, "min": min(xs), "max": max(xs), "t95": interval, "clipped": clipped,
            "distinct": distinct, "by_seed": {str(seed): v for seed, v in values.items()}}


RATES = ("win_rate", "consistency")
NON_NEGATIVE = ("teacher_nll", "answer_chars", "baseline_chars", "tokens", "cost_usd", "truncated", "wins", "ties",
                "losses", "failed_answers")


def bounds(metric: str, rows: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """The range a metric's values can take: [0, 1] for pass@k and rates (any metric whose every
    interval lies in [0, 1], as Wilson's do), [0, ∞) for lengths, counts, costs and NLLs."""
    cis = [r.get(f"{metric}_ci") for r in rows if r.get(metric) is not None]
    if metric.startswith("pass@") or metric in RATES or (cis and all(ci and 0 <= ci[0] <= ci[1] <= 1 for ci in cis)):
        return (0.0, 1.0)
    if metric in NON_NEGATIVE:
        return (0.0, None)
    return (None, None)


def plain_seed_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The seed groups' rows as ``--format json`` prints them, after the runs' own rows."""
    columns = metric_columns(rows)
    return [{"run": r["run"], "system": r["system"], **{k: r[k] for k in SEED_KEYS},
             **{c: r.get(c) for c in columns}, **{c + SPREAD: r[c + SPREAD] for c in columns if c + SPREAD in r},
             **({"converged_at": r["converged_at"]} if "converged_at" in r else {})}
            for r in rows]
