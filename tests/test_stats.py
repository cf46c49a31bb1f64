"""Intervals, paired comparisons and judge agreement agree with reference implementations."""

import itertools

import numpy as np
import pytest
from scipy.stats import binomtest, permutation_test

from dpokd.scoring.stats import (calibration, cohen_kappa, compare, mcnemar_exact, mean_ci, paired_ci, sign_flip_p,
                                 wilson)


@pytest.mark.parametrize("only_a, only_b", [(0, 0), (1, 0), (0, 5), (3, 3), (2, 9), (12, 4), (40, 17), (0, 30),
                                            (700, 650)])
def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs(only_a, only_b):
    n = only_a + only_b
    expected = 1.0 if n == 0 else binomtest(only_a, n, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("k, n", [(0, 32), (32, 32), (5, 20), (1, 1), (0, 1), (13, 164)])
def test_wilson_is_scipys_wilson_interval_and_never_a_point(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson(k / n, n)
    assert (low, high) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12))
    assert high - low > 0.05
    assert mean_ci([1.0] * k + [0.0] * (n - k)) == (low, high)


def test_an_unbounded_metric_gets_students_t_interval():
    from scipy import stats

    values = [2.5, 3.1, 2.9, 4.0]
    ref = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean_ci(values) == (pytest.approx(ref[0]), pytest.approx(ref[1]))


def _pairs(both, only_a, only_b, neither):
    a = [1.0] * both + [1.0] * only_a + [0.0] * only_b + [0.0] * neither
    b = [1.0] * both + [0.0] * only_a + [1.0] * only_b + [0.0] * neither
    return a, b


def test_paired_interval_is_newcombes_square_and_add():
    # Cavo et al. (2012), as Fagerland, Lydersen and Laake's contingencytables reports it:
    # estimate -0.0621, 95% CI -0.1186 to -0.0046.
    a, b = _pairs(59, 6, 16, 80)
    low, high = paired_ci(a, b)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def scipy_wilson(k: int, n: int) -> tuple[float, float]:
    found = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return found.low, found.high


def newcombe_from_the_table(both, only_a, only_b, neither):
    """Newcombe (1998), method 10, as the paper writes it: from the 2x2 table's cells and scipy's
    Wilson intervals of the two proportions, phi continuity-corrected where AD > BC."""
    n = both + only_a + only_b + neither
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    (l1, u1), (l2, u2) = scipy_wilson(both + only_a, n), scipy_wilson(both + only_b, n)
    ad_bc = both * neither - only_a * only_b
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    if ad_bc > 0:
        ad_bc = max(ad_bc - n / 2, 0)
    phi = ad_bc / margins**0.5 if margins else 0.0
    delta = p1 - p2
    low = delta - ((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2) ** 0.5
    high = delta + ((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2) ** 0.5
    return low, high


@pytest.mark.parametrize("table", [(59, 6, 16, 80), (0, 32, 0, 0), (0, 0, 32, 0), (0, 0, 0, 32), (32, 0, 0, 0),
                                   (20, 5, 3, 4), (1, 0, 0, 9), (3, 0, 7, 0)])
def test_paired_interval_is_newcombes_formula_on_scipys_wilson_intervals(table):
    # Every case a 0/n or n/n margin or a constant difference: (0, 32, 0, 0) is 32/32 against 0/32.
    low, high = paired_ci(*_pairs(*table))
    ref = newcombe_from_the_table(*table)
    assert (low, high) == (pytest.approx(ref[0], abs=1e-12), pytest.approx(ref[1], abs=1e-12))
    assert high - low > 0.1


def test_a_constant_difference_of_shares_is_newcombes_interval_with_no_correlation():
    # 20 examples, each 0.75 against 0.25: neither side varies, so phi is 0 and the interval is
    # Δ minus and plus the two Wilson intervals' arms added in quadrature (scipy's, at 15/20 and 5/20).
    (l1, u1), (l2, u2) = scipy_wilson(15, 20), scipy_wilson(5, 20)
    expected = (0.5 - ((0.75 - l1) ** 2 + (u2 - 0.25) ** 2) ** 0.5, 0.5 + ((u1 - 0.75) ** 2 + (0.25 - l2) ** 2) ** 0.5)
    low, high = paired_ci([0.75] * 20, [0.25] * 20)
    assert (low, high) == (pytest.approx(expected[0], abs=1e-12), pytest.approx(expected[1], abs=1e-12))
    assert 0.15 < low < 0.5 < high < 0.85


@pytest.mark.parametrize("a, b", [([1.0] * 32, [0.0] * 32), ([0.0] * 32, [0.0] * 32), ([0.75] * 10, [0.25] * 10)])
def test_a_constant_difference_does_not_collapse_the_interval(a, b):
    low, high = paired_ci(a, b)
    delta = sum(a) / len(a) - sum(b) / len(b)
    assert low < delta or delta == -1 and -1 <= low
    assert high > delta or delta == 1
    assert high - low > 0.1 and -1 <= low and high <= 1


def test_the_paired_interval_of_shares_covers_the_true_difference():
    # 40 examples, 4 samples each, per-example pass rates drawn at random: 95% should cover.
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        pa, pb = rng.uniform(0.2, 1.0, 40), rng.uniform(0.0, 0.8, 40)
        a, b = rng.binomial(4, pa) / 4, rng.binomial(4, pb) / 4
        low, high = paired_ci(list(a), list(b))
        covered += low <= pa.mean() - pb.mean() <= high
    assert covered / 400 >= 0.93


def test_sign_flip_p_is_mcnemar_for_passes_and_an_exact_permutation_test_for_shares():
    assert sign_flip_p([1, 1, -1, 0, 1, 1, 1, 1]) == pytest.approx(binomtest(6, 7, 0.5).pvalue)
    d = [0.5, 0.25, -0.25, 0.75, 0.5, 0.0, 0.25, -0.5, 0.25, 0.5]
    brute = [abs(sum(s * x for s, x in zip(signs, d))) >= abs(sum(d)) - 1e-12
             for signs in itertools.product([1, -1], repeat=len(d))]
    assert sign_flip_p(d) == pytest.approx(sum(brute) / len(brute))
    ref = permutation_test((np.array(d), np.zeros(len(d))), lambda x, y: np.mean(x - y), vectorized=False,
                           permutation_type="samples", n_resamples=np.inf).pvalue
    assert sign_flip_p(d) == pytest.approx(ref)
    many = [0.25 * (1 + i % 3) * (1 if i % 4 else -1) for i in range(40)]  # beyond exact enumeration
    ref = permutation_test((np.array(many), np.zeros(40)), lambda x, y: np.mean(x - y), vectorized=False,
                           permutation_type="samples", n_resamples=20000, random_state=1).pvalue
    assert sign_flip_p(many) == pytest.approx(ref, abs=0.02)


def test_compare_tells_one_story_from_each_examples_difference():
    ours = {f"e{i}": float(i < 20) for i in range(32)}
    base = {f"e{i}": float(i < 12 or 20 <= i < 22) for i in range(32)}
    found = compare(ours, base, "student@base")
    assert found.delta == pytest.approx(20 / 32 - 14 / 32, abs=1e-15)
    assert (found.only_a, found.only_b, found.n) == (8, 2, 32)
    assert found.p == pytest.approx(binomtest(8, 10, 0.5).pvalue)
    assert found.ci == paired_ci(list(ours.values()), list(base.values()))
    # Several samples per example: Δ, its interval and p all come from the per-example shares, so a
    # difference of +0.5 on every one of 10 examples is significant, not p = 0.25.
    found = compare({f"e{i}": 0.75 for i in range(10)}, {f"e{i}": 0.25 for i in range(10)}, "b")
    assert found.delta == pytest.approx(0.5) and (found.only_a, found.only_b) == (10, 0)
    assert found.p == pytest.approx(2 / 2**10) and found.ci[0] > 0
    assert compare({"x": 1.0}, {"y": 1.0}, "b") is None  # nothing in common: no comparison


def test_cohen_kappa_against_a_hand_computed_table():
    # 50 items: both "yes" 20, both "no" 15, x yes / y no 5, x no / y yes 10.
    x = ["yes"] * 20 + ["no"] * 15 + ["yes"] * 5 + ["no"] * 10
    y = ["yes"] * 20 + ["no"] * 15 + ["no"] * 5 + ["yes"] * 10
    observed = 35 / 50
    expected = (25 / 50) * (30 / 50) + (25 / 50) * (20 / 50)
    assert cohen_kappa(x, y) == pytest.approx((observed - expected) / (1 - expected))
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # chance agreement is certain: undefined


def test_calibration_of_a_perfect_a_silent_and_a_one_sided_judge():
    truth = ["ours", "base", "ours", "base"]
    assert calibration(truth, truth).as_dict() == {"pairs": 4, "accuracy": 1.0, "kappa": 1.0}
    assert calibration(truth, ["tie"] * 4).as_dict() == {"pairs": 4, "accuracy": 0.0, "kappa": 0.0}
    assert calibration(["ours"] * 3, ["ours"] * 3).kappa is None
    assert calibration([], []).as_dict() == {"pairs": 0, "accuracy": None, "kappa": None}
