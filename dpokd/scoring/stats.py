"""Intervals, paired comparisons of systems scored on the same examples, and agreement between two judges.

Plain functions over plain lists: the leaderboard and the report call them with per-example
outcomes read from a run's ``eval/`` files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from math import comb, sqrt
from statistics import NormalDist


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(mean: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``mean`` of ``n``: never a point, even at 0/n or n/n.

    It serves any mean of values in [0, 1] (pass@1 over several samples, a win rate with ties): no
    such mean has a larger variance than a proportion's, p(1 − p)/n, so the interval stays wide enough.
    """
    z = _z(level)
    centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
    half = z * sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student's t-interval of the mean (None for fewer than two values)."""
    n = len(values)
    if n < 2:
        return None
    from scipy.special import stdtrit

    mean = sum(values) / n
    sd = (sum((x - mean) ** 2 for x in values) / (n - 1)) ** 0.5
    half = float(stdtrit(n - 1, 0.5 + level / 2)) * sd / n**0.5
    return (mean - half, mean + half)


def unit(values: Sequence[float]) -> bool:
    """Whether every value lies in [0, 1] (a rate, a share, a pass or fail)."""
    return all(0.0 <= v <= 1.0 for v in values)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The interval of a mean: Wilson's for values in [0, 1], else Student's t; None without data."""
    if not values:
        return None
    if unit(values):
        return wilson(sum(values) / len(values), len(values), level)
    return t_interval(values, level)


def paired_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The interval of mean(a) − mean(b) over paired examples.

    For values in [0, 1]: Newcombe's square-and-add interval (1998, method 10) from the two means'
    Wilson intervals and their correlation (the continuity-corrected phi for passes and fails, the
    same formula on covariances for shares); it does not collapse when every difference is the same.
    Otherwise Student's t-interval of the differences.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} and {len(b)})")
    n = len(a)
    if n == 0:
        return None
    if not (unit(a) and unit(b)):
        return t_interval([x - y for x, y in zip(a, b)], level)
    p1, p2 = sum(a) / n, sum(b) / n
    (l1, u1), (l2, u2) = wilson(p1, n, level), wilson(p2, n, level)
    psi = _correlation(a, b, p1, p2)
    delta = p1 - p2
    low = delta - sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * psi * (p1 - l1) * (u2 - p2)))
    high = delta + sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * psi * (p2 - l2) * (u1 - p1)))
    return (max(-1.0, low), min(1.0, high))


def _correlation(a: Sequence[float], b: Sequence[float], p1: float, p2: float) -> float:
    """Newcombe's phi: the correlation of the pairs, a positive one reduced by 1/(2n) of covariance."""
    n = len(a)
    var_a = sum((x - p1) ** 2 for x in a) / n
    var_b = sum((y - p2) ** 2 for y in b) / n
    if var_a == 0 or var_b == 0:
        return 0.0
    cov = sum((x - p1) * (y - p2) for x, y in zip(a, b)) / n
    if cov > 1 / (2 * n):
        cov -= 1 / (2 * n)
    elif cov >= 0:
        return 0.0
    return cov / sqrt(var_a * var_b)


def sign_flip_p(differences: Sequence[float], *, rounds: int = 20000, seed: int = 0) -> float:
    """Two-sided p of a paired sign-flip permutation test on the mean difference.

    Where every non-zero difference has the same size (passes and fails, one sample each) it is
    exactly McNemar's test; otherwise exact over every sign pattern up to 16 non-zero differences,
    and a seeded Monte Carlo estimate beyond.
    """
    nonzero = [d for d in differences if d != 0]
    if not nonzero:
        return 1.0
    sizes = {abs(d) for d in nonzero}
    if len(sizes) == 1:
        return mcnemar_exact(sum(d > 0 for d in nonzero), sum(d < 0 for d in nonzero))
    import numpy as np

    d = np.abs(np.asarray(nonzero, dtype=float))
    observed = abs(sum(nonzero)) - 1e-9 * d.sum()
    m = len(d)
    if m <= 16:
        signs = 1 - 2 * ((np.arange(2**m)[:, None] >> np.arange(m)) & 1)
        return float((np.abs(signs @ d) >= observed).mean())
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(rounds, m))
    return float((1 + (np.abs(signs @ d) >= observed).sum()) / (rounds + 1))


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
    only_a: int  # examples where A scored higher (A passed and B failed, for passes and fails)
    only_b: int  # examples where B scored higher

    def as_dict(self) -> dict:
        return {"against": self.against, "metric": self.metric, "delta": self.delta, "ci": list(self.ci),
                "p": self.p, "n": self.n, "only_a": self.only_a, "only_b": self.only_b}


def compare(a: dict[str, float], b: dict[str, float], against: str, metric: str = "pass@1") -> Comparison | None:
    """Compare per-example scores (example id -> mean over its samples) of A and of reference B.

    One quantity tells the whole story: each example's difference of means. Δ is their mean (the
    difference of the two scores where both cover the same examples), the interval is
    :func:`paired_ci`'s and p is :func:`sign_flip_p`'s (McNemar's for passes and fails).
    """
    ids = [i for i in a if i in b]
    if not ids:
        return None
    xs, ys = [a[i] for i in ids], [b[i] for i in ids]
    delta = sum(xs) / len(xs) - sum(ys) / len(ys)
    diffs = [x - y for x, y in zip(xs, ys)]
    return Comparison(against=against, metric=metric, delta=delta, ci=paired_ci(xs, ys) or (delta, delta),
                      p=sign_flip_p(diffs), n=len(ids), only_a=sum(d > 0 for d in diffs),
                      only_b=sum(d < 0 for d in diffs))


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
