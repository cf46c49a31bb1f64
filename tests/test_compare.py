"""``dpokd compare``: Δ between two seed groups, checked against the arithmetic written out by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dpokd.runs import write_json

from .conftest import run_cli
from .runs_on_disk import make_run

# Passes of 4 problems per (seed, system); "stale" is an earlier checkpoint compare must not pick.
A = {0: [1, 1, 1, 0], 1: [1, 1, 0, 0], 2: [1, 1, 0, 1]}
B = {0: [1, 0, 0, 0], 1: [1, 1, 0, 0], 2: [0, 1, 1, 0]}
STALE = [0, 0, 0, 0]


def group(root: Path, name: str, passing: dict[int, list[int]]) -> Path:
    for seed, passes in passing.items():
        path = root / (name if seed == 0 else f"{name}-seed{seed}")
        table = {"student@iter_1": STALE, "student@iter_2": passes}
        make_run(path, systems=list(table), problems=4, passes=lambda s, i, j, table=table: bool(table[s][i]))
        spec = {"run": {"name": path.name, "seed": seed}, "student": {"loss": name}}  # groups differ but in the seed
        write_json(path / "manifest.json", {"spec": spec, "seed": seed})
    return root / name


def test_delta_over_seeds_is_the_mean_of_per_seed_paired_deltas_with_a_t_interval(tmp_path):
    a, b = group(tmp_path, "dpo", A), group(tmp_path, "sft", B)
    out = run_cli("compare", str(a), str(b), "--format", "json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    # Per seed: A's pass@1 minus B's, on the same 4 problems: 3/4 - 1/4, 2/4 - 2/4, 3/4 - 2/4.
    deltas = [0.5, 0.0, 0.25]
    assert [r["delta"] for r in found["seeds"]] == pytest.approx(deltas)
    assert {r["a_system"] for r in found["seeds"]} == {"student@iter_2"}
    mean = (0.5 + 0.0 + 0.25) / 3
    sd = (((0.5 - mean) ** 2 + (0.0 - mean) ** 2 + (0.25 - mean) ** 2) / 2) ** 0.5  # 0.25
    half = 4.302652729749464 * sd / 3**0.5  # t(0.975, 2 degrees of freedom) * sd / sqrt(3 seeds)
    assert found["delta"] == pytest.approx(mean)
    assert found["ci"] == pytest.approx([mean - half, mean + half])
    assert (found["a_mean"], found["b_mean"]) == pytest.approx((2 / 3, 5 / 12))

    table = run_cli("compare", str(a), f"{b}:student@iter_1")
    assert table.returncode == 0, table.stderr
    # Against the all-failing checkpoint: Δ is A's own pass@1 each seed, 0.75, 0.5, 0.75: mean 0.667, sd
    # 0.144, half-width 4.3027 * 0.144 / sqrt(3) = 0.359, cut at 1 (the most a Δ of rates can be).
    assert "+0.667 [+0.308, +1.000]" in table.stdout and "t-interval over 3 seeds" in table.stdout


def test_seeds_that_all_gave_one_delta_get_newcombes_interval_over_their_examples_not_a_point(tmp_path):
    # Every seed: A passes 3 of 4, B 1 of 4, so every per-seed Δ is +0.5 and a t-interval would be (0.5, 0.5).
    from dpokd.scoring.stats import paired_ci

    same_a = {0: [1, 1, 1, 0], 1: [1, 0, 1, 1], 2: [0, 1, 1, 1]}
    same_b = {0: [1, 0, 0, 0], 1: [0, 0, 0, 1], 2: [0, 1, 0, 0]}
    a, b = group(tmp_path, "dpo", same_a), group(tmp_path, "sft", same_b)
    found = json.loads(run_cli("compare", str(a), str(b), "--format", "json").stdout)
    assert [r["delta"] for r in found["seeds"]] == [0.5, 0.5, 0.5] and found["delta"] == 0.5
    pooled = paired_ci([float(x) for s in (0, 1, 2) for x in same_a[s]], [float(y) for s in (0, 1, 2) for y in same_b[s]])
    assert found["ci"] == pytest.approx(list(pooled)) and found["ci"][0] < 0.5 < found["ci"][1]
    assert found["method"] == "all 3 seeds gave this Δ: Newcombe's paired interval over their 12 examples together"


def test_one_seed_gives_its_paired_interval_and_missing_seeds_are_named(tmp_path):
    a, b = group(tmp_path, "dpo", {0: A[0]}), group(tmp_path, "sft", {1: B[1]})
    out = run_cli("compare", str(a), str(b))
    assert out.returncode == 2 and "none in common" in out.stderr and "Traceback" not in out.stderr
    b = group(tmp_path, "sft", {0: B[0]})
    found = json.loads(run_cli("compare", str(a), str(b), "--format", "json").stdout)
    assert found["delta"] == pytest.approx(0.5) and found["ci"] == found["seeds"][0]["ci"]
    assert found["ci"][0] < 0.5 < found["ci"][1]


def test_examples_only_one_side_answered_are_left_out_counted_and_warned_of(tmp_path):
    a = group(tmp_path, "dpo", {0: A[0]})
    b = tmp_path / "sft"  # B answered only the first 3 of A's 4 problems
    make_run(b, systems=["student@iter_2"], problems=3, passes=lambda s, i, j: bool(B[0][i]))
    write_json(b / "manifest.json", {"spec": {"run": {"name": "sft", "seed": 0}}, "seed": 0})
    found = json.loads(run_cli("compare", str(a), str(b), "--format", "json").stdout)
    # Over problems 0-2 alone: A 3/3, B 1/3.
    assert found["seeds"][0]["n"] == 3 and found["seeds"][0]["unpaired"] == 1
    assert found["delta"] == pytest.approx(1 - 1 / 3)
    table = run_cli("compare", str(a), str(b))
    assert "1 example(s) answered by one side only are left out" in " ".join(table.stdout.split())
    full = json.loads(run_cli("compare", str(a), str(group(tmp_path, "ipo", {0: B[0]})), "--format", "json").stdout)
    assert full["seeds"][0]["unpaired"] == 0


def test_the_report_shows_each_seed_group_against_the_versus_group(tmp_path):
    a, b = group(tmp_path, "dpo", A), group(tmp_path, "sft", B)
    runs = sorted(str(p) for p in tmp_path.iterdir() if (p / "results.json").exists())
    out = run_cli("view", *runs, "--versus", str(b), "-o", str(tmp_path / "r.html"))
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "r.html").read_text()
    rows = re.findall(r'<tr class="versus-row" data-run="([^"]*)" data-delta="([^"]*)" data-ci="([^"]*)"', html)
    found = json.loads(run_cli("compare", str(a), str(b), "--format", "json").stdout)
    assert [(r[0], json.loads(r[1]), json.loads(r[2])) for r in rows] == [("dpo", found["delta"], found["ci"])]
    assert "seed 2: +0.250 (4 examples)" in html
