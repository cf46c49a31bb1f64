"""A new judge is one file: a plugin that returns outcomes, installed as a third-party package, shows
its metric in the leaderboard, the paired Δ, the seed groups and the report with nothing else added."""

import json
from pathlib import Path

import pytest

from .conftest import run_cli

PLUGIN = '''
import hashlib

import dpokd


class Exact(dpokd.Judge):
    """Whether an answer is the reference, character for character."""

    name = "exact"

    def evaluate(self, systems, task):
        examples = self.eval_examples(task)
        return [dpokd.Outcome(system=name, example_id=e.id, judge=self.name, metric="exact",
                              value=a.ok and a.text.strip() == (e.reference or "").strip(), answer=a.text)
                for name, system in systems.items() for e, a in zip(examples, system.answer(examples))]


class Guess(dpokd.Teacher):
    """The reference for about half the prompts (which half depends on the seed), else a wrong answer."""

    name = "guess"

    def answer(self, examples):
        def lucky(e):
            return hashlib.sha256(f"{self.seed}:{e.id}".encode()).digest()[0] % 2 == 0
        return [dpokd.Completion.of(e, e.reference if lucky(e) else "def wrong(): pass") for e in examples]


@dpokd.hookimpl
def register_judges(register):
    register(Exact)


@dpokd.hookimpl
def register_teachers(register):
    register(Guess)
'''

SPEC = """
[run]
name = "exact"
mode = "eval"
output_dir = "runs"
cache_dir = "cache"

[task]
plugin = "synthetic-codegen"
n_train = 4
n_eval = 24
levels = [1]

[[systems]]
name = "right"
plugin = "reference"

[[systems]]
name = "guess"
plugin = "guess"

[[judges]]
plugin = "exact"
"""


def install(site: Path) -> None:
    """The plugin as pip would leave it: a module and its distribution's entry point."""
    (site / "exact_judge.py").write_text(PLUGIN)
    info = site / "exact_judge-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: exact-judge\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dpokd]\nexact = exact_judge\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    home = tmp_path_factory.mktemp("new-judge")
    install(home)
    (home / "exact.toml").write_text(SPEC)
    env = {"PYTHONPATH": str(home)}
    for seed in ("0", "1"):  # the spec's own seed (its run is "exact"), then another
        done = run_cli("run", "exact.toml", "--seed", seed, cwd=home, env=env)
        assert done.returncode == 0, done.stderr
    return home, env, [home / "runs" / "exact", home / "runs" / "exact-seed1"]


def test_its_metric_and_paired_delta_are_in_the_leaderboard(runs):
    home, env, dirs = runs
    out = run_cli("leaderboard", *map(str, dirs), "--against", "right", "--format", "json", cwd=home, env=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    own = {(r["run"], r["system"]): r for r in rows if "seeds" not in r}
    outcomes = [json.loads(line) for line in (dirs[0] / "eval" / "exact-guess.jsonl").read_text().splitlines()]
    share = sum(o["value"] for o in outcomes) / len(outcomes)
    assert len(outcomes) == 24 and 0 < share < 1
    assert own[("exact", "right")]["exact"] == 1.0
    assert own[("exact", "guess")]["exact"] == pytest.approx(share)
    low, high = own[("exact", "guess")]["exact_ci"]
    assert low <= share <= high and high - low > 0
    delta = own[("exact", "guess")]["vs_ref"]
    assert delta["metric"] == "exact" and delta["against"] == "right"
    assert delta["delta"] == pytest.approx(share - 1.0) and delta["only_b"] == round(24 * (1 - share))
    table = run_cli("leaderboard", str(dirs[0]), "--against", "right", cwd=home, env=env).stdout
    assert "exact" in table and "Δ vs right" in table and "the paired difference in exact" in table


def test_its_metric_is_grouped_over_seeds(runs):
    home, env, dirs = runs
    rows = json.loads(run_cli("leaderboard", *map(str, dirs), "--format", "json", cwd=home, env=env).stdout)
    [group] = [r for r in rows if r.get("seeds") and r["system"] == "guess"]
    each = {r["run"]: r["exact"] for r in rows if "seeds" not in r and r["system"] == "guess"}
    assert group["seeds"] == [0, 1] and group["exact"] == pytest.approx(sum(each.values()) / 2)
    assert group["exact_seeds"]["by_seed"] == {"0": each["exact"], "1": each["exact-seed1"]}


def test_its_outcomes_are_in_the_report(runs):
    home, env, dirs = runs
    out = run_cli("view", str(dirs[0]), cwd=home, env=env)
    assert out.returncode == 0, out.stderr
    page = (dirs[0] / "report.html").read_text()
    outcomes = [json.loads(line) for line in (dirs[0] / "eval" / "exact-guess.jsonl").read_text().splitlines()]
    failed = sum(not o["value"] for o in outcomes)
    assert page.count('<div class="answer failed" data-system="guess"') == failed
    assert page.count('<div class="answer passed" data-system="right"') == 24
    assert "exact" in page and "def wrong(): pass" in page
