"""Intervals, paired comparisons of systems scored on the same examples, and agreement between two judges.

Plain functions over plain lists: the leaderboard and the report call them with per-example
outcomes read from a run's ``eval/`` files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from math import comb


def bootstrap_ci(values: Sequence[float], *, seed: int = 0, rounds: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    import numpy as np

    if not values:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    means = data[rng.integers(0, len(data), size=(rounds, len(data)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], *, seed: int = 0, rounds: int = 4000,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a - b), resampling examples (so each keeps its pair)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} and {len(b)})")
    if not a:
        return (0.0, 0.0)
    import numpy as np

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(rounds, len(diff)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts.

    ``only_a``: examples only the first system passed; ``only_b``: only the second. Under the null
    each discordant example goes either way with probability 1/2, so the p-value is a binomial
    test; with no discordant example there is no evidence of a difference (p = 1).
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers: no underflow before the final division


def cohen_kappa(x: Sequence[Hashable], y: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None when chance agreement is 1 (undefined)."""
    if len(x) != len(y):
        raise ValueError(f"the raters labelled different numbers of items ({len(x)} and {len(y)})")
    n = len(x)
    if n == 0:
        return None
    observed = sum(p == q for p, q in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    expected = sum(cx[label] * cy[label] for label in cx) / n**2
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


@dataclass
class Comparison:
    """System A against reference B on the examples both answered: Δ of the mean, its CI and McNemar's p."""

    against: str
    metric: str
    delta: float
    ci: tuple[float, float]
    p: float
    n: int
    only_a: int  # examples A passed and B failed (or, for a numeric metric, where A scored higher)
    only_b: int  # examples B passed and A failed

    def as_dict(self) -> dict:
        return {"against": self.against, "metric": self.metric, "delta": self.delta, "ci": list(self.ci),
                "p": self.p, "n": self.n, "only_a": self.only_a, "only_b": self.only_b}


def compare(a: dict[str, float], b: dict[str, float], against: str, metric: str = "pass@1",
            binary: bool = True) -> Comparison | None:
    """Compare per-example scores (example id -> mean over its samples) of A and of reference B.

    Δ is the difference of the means over the examples both have, so it equals the difference of
    the two scores when both cover the same examples. The p-value is an exact sign test on the
    examples where A and B differ: for a ``binary`` metric that is McNemar's test, with an example
    counted as passed when more than half of its samples pass.
    """
    ids = [i for i in a if i in b]
    if not ids:
        return None
    xs, ys = [a[i] for i in ids], [b[i] for i in ids]
    delta = sum(xs) / len(xs) - sum(ys) / len(ys)
    if binary:
        only_a = sum(1 for x, y in zip(xs, ys) if x > 0.5 >= y)
        only_b = sum(1 for x, y in zip(xs, ys) if y > 0.5 >= x)
    else:
        only_a, only_b = sum(x > y for x, y in zip(xs, ys)), sum(y > x for x, y in zip(xs, ys))
    return Comparison(against=against, metric=metric, delta=delta, ci=paired_bootstrap_ci(xs, ys),
                      p=mcnemar_exact(only_a, only_b), n=len(ids), only_a=only_a, only_b=only_b)


@dataclass
class Calibration:
    """How often an LLM judge picks the answer that passes, where exactly one of the two passes."""

    pairs: int
    accuracy: float | None
    kappa: float | None  # None: undefined (execution put every pair on one side, and so did the judge)

    def as_dict(self) -> dict:
        return {"pairs": self.pairs, "accuracy": self.accuracy, "kappa": self.kappa}


def calibration(execution: Sequence[str], judge: Sequence[str]) -> Calibration:
    """Labels per pair: execution's is "ours" or "base" (the side that passes); the judge's is
    "ours", "base" or "tie". A tie is never right."""
    n = len(execution)
    if n == 0:
        return Calibration(0, None, None)
    accuracy = sum(e == j for e, j in zip(execution, judge)) / n
    return Calibration(n, accuracy, cohen_kappa(execution, judge))
