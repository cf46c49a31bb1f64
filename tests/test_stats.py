"""Paired comparisons and judge agreement agree with independent computations."""

import random

import pytest
from scipy.stats import binomtest

from dpokd.scoring.stats import calibration, cohen_kappa, compare, mcnemar_exact, paired_bootstrap_ci


@pytest.mark.parametrize("only_a, only_b", [(0, 0), (1, 0), (0, 5), (3, 3), (2, 9), (12, 4), (40, 17), (0, 30),
                                            (700, 650)])
def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs(only_a, only_b):
    n = only_a + only_b
    expected = 1.0 if n == 0 else binomtest(only_a, n, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def _plain_bootstrap(a, b, rounds, seed):
    """The textbook loop: draw n examples with replacement, keep the mean difference, take percentiles."""
    rng = random.Random(seed)
    n = len(a)
    means = []
    for _ in range(rounds):
        picks = [rng.randrange(n) for _ in range(n)]
        means.append(sum(a[i] - b[i] for i in picks) / n)
    means.sort()
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def test_paired_bootstrap_ci_matches_a_plain_resampling_loop():
    # 32 problems: A passes 20, B passes 14; they share 12 passes (paired: the CI is narrower than unpaired).
    a = [1.0] * 20 + [0.0] * 12
    b = [1.0] * 12 + [0.0] * 8 + [1.0] * 2 + [0.0] * 10
    low, high = paired_bootstrap_ci(a, b, rounds=20000)
    ref_low, ref_high = _plain_bootstrap(a, b, rounds=20000, seed=1)
    assert low == pytest.approx(ref_low, abs=0.02) and high == pytest.approx(ref_high, abs=0.02)
    assert low < 0.1875 < high


def test_compare_gives_the_difference_of_means_and_mcnemar_on_examples():
    ours = {f"e{i}": float(i < 20) for i in range(32)}
    base = {f"e{i}": float(i < 12 or 20 <= i < 22) for i in range(32)}
    found = compare(ours, base, "student@base")
    assert found.delta == pytest.approx(20 / 32 - 14 / 32, abs=1e-15)
    assert (found.only_a, found.only_b, found.n) == (8, 2, 32)
    assert found.p == pytest.approx(binomtest(8, 10, 0.5).pvalue)
    # Several samples per example: the Δ uses the shares; McNemar, whether most samples passed.
    found = compare({"x": 0.75, "y": 0.25}, {"x": 0.25, "y": 0.25}, "b")
    assert found.delta == pytest.approx(0.25) and (found.only_a, found.only_b) == (1, 0)
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
