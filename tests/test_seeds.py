"""Seeds: `dpokd run SPEC --seed N` runs into NAME-seedN; the leaderboard groups runs that differ only
in their seed (mean, min–max, 95% t-interval, number of seeds) and never merges any other runs."""

import csv
import io
import json
import statistics
from pathlib import Path

import pytest

from dpokd.runs import write_json

from .conftest import run_cli
from .runs_on_disk import make_run
from .test_convergence import ANSWER, spec_text

SYSTEMS = ["teacher", "student@base", "student@iter_1", "student@iter_2"]
SPEC = {"run": {"mode": "online", "iterations": 2, "seed": 0, "name": "q", "output_dir": "runs"},
        "task": {"plugin": "synthetic-codegen", "n_train": 96},
        "student": {"plugin": "hf-qlora", "learning_rate": 0.003}}


def seeded_run(path: Path, seed: int, passing: dict[str, int], **changes) -> Path:
    """A finished run of 8 problems whose manifest records SPEC with ``seed`` (and ``changes``, "table.key": value)."""
    make_run(path, systems=[s for s in SYSTEMS if s in passing], problems=8, passes=lambda s, i, j: i < passing[s],
             iterations=2)
    spec = json.loads(json.dumps(SPEC))
    spec["run"].update(seed=seed, name=path.name)
    for key, value in changes.items():
        table, field = key.split(".")
        spec[table][field] = value
    write_json(path / "manifest.json", {"spec": spec, "seed": seed, "versions": {"dpokd": "0.1.0"}})
    return path


def board(*runs: Path, fmt: str = "json"):
    out = run_cli("leaderboard", *map(str, runs), "--format", fmt)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if fmt == "json" else out.stdout


def t_interval(xs: list[float]) -> list[float]:
    """scipy's 95% t-interval of the mean, cut to [0, 1]: the range of a rate."""
    from scipy import stats

    low, high = stats.t.interval(0.95, len(xs) - 1, loc=statistics.mean(xs), scale=stats.sem(xs))
    return [max(0.0, low), min(1.0, high)]


# iter_1 passes 4, 2 and 5 of 8 problems under seeds 0, 1 and 2; iter_2 6, 8 and 7.
PASSING = {0: {"teacher": 8, "student@base": 0, "student@iter_1": 4, "student@iter_2": 6},
           1: {"teacher": 8, "student@base": 0, "student@iter_1": 2, "student@iter_2": 8},
           2: {"teacher": 8, "student@base": 1, "student@iter_1": 5, "student@iter_2": 7}}


@pytest.fixture
def three_seeds(tmp_path):
    return [seeded_run(tmp_path / "runs" / ("q" if seed == 0 else f"q-seed{seed}"), seed, PASSING[seed])
            for seed in (0, 1, 2)]


def test_runs_that_differ_only_in_their_seed_show_mean_spread_and_n_in_every_format(three_seeds):
    rows = board(*three_seeds)
    own = [r for r in rows if "seeds" not in r]
    assert [(r["run"], r["system"]) for r in own] == [(run.name, s) for run in three_seeds for s in SYSTEMS]
    grouped = {r["system"]: r for r in rows if "seeds" in r}
    assert list(grouped) == SYSTEMS
    it1 = grouped["student@iter_1"]
    xs = [4 / 8, 2 / 8, 5 / 8]
    assert (it1["run"], it1["seeds"], it1["n_seeds"], it1["runs"]) == ("q", [0, 1, 2], 3, ["q", "q-seed1", "q-seed2"])
    assert it1["pass@1"] == pytest.approx(statistics.mean(xs))
    spread = it1["pass@1_seeds"]
    assert (spread["min"], spread["max"], spread["n"]) == (0.25, 0.625, 3)
    assert spread["t95"] == pytest.approx(t_interval(xs))
    assert spread["by_seed"] == {"0": 0.5, "1": 0.25, "2": 0.625}
    # Every group number is the mean of the runs' own rows.
    for system, row in grouped.items():
        assert row["pass@1"] == pytest.approx(statistics.mean(r["pass@1"] for r in own if r["system"] == system))

    table = list(csv.DictReader(io.StringIO(board(*three_seeds, fmt="csv"))))
    by = {r["system"]: r for r in table if r["n_seeds"]}
    assert by["student@iter_1"]["seeds"] == "0 1 2" and by["student@iter_1"]["n_seeds"] == "3"
    assert float(by["student@iter_1"]["pass@1_min"]) == 0.25 and float(by["student@iter_1"]["pass@1_max"]) == 0.625
    assert float(by["student@iter_1"]["pass@1_t95_low"]) == pytest.approx(t_interval(xs)[0])
    assert len(table) == 12 + 4

    low, high = t_interval(xs)
    assert low == 0.0 and spread["clipped"]  # the t-interval reaches below 0: a rate cannot
    it2 = grouped["student@iter_2"]["pass@1_seeds"]  # 6, 8 and 7 of 8: the t-interval reaches above 1
    assert it2["t95"] == pytest.approx(t_interval([0.75, 1.0, 0.875])) and it2["t95"][1] == 1.0 and it2["clipped"]
    assert all(0.0 <= end <= 1.0 for r in grouped.values() for end in r["pass@1_seeds"]["t95"] or ())
    shown = f"0.458 ({low:.2f}–{high:.2f}) | {0.25:.2f}–{0.625:.2f}"
    md = board(*three_seeds, fmt="md")
    assert "**q over seeds 0, 1, 2**" in md
    assert f"| q | student@iter_1 | 3 | {shown} |" in md
    text = " ".join(board(*three_seeds, fmt="table").split())
    assert "dpokd leaderboard: q over seeds 0, 1, 2" in text
    assert f"student@iter_1 │ 3 │ {shown.replace('|', '│')}" in text


def test_the_report_shows_the_seed_groups_numbers(three_seeds, tmp_path):
    out = run_cli("view", *map(str, three_seeds), "-o", str(tmp_path / "report.html"))
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "report.html").read_text()
    grouped = {r["system"]: r for r in board(*three_seeds) if "seeds" in r}
    assert page.count('<tr class="seed-row"') == 4
    spread = grouped["student@iter_1"]["pass@1_seeds"]
    assert f'data-metric="pass@1" data-value="{json.dumps(spread["mean"])}"' in page
    assert f'data-t95="{json.dumps(spread["t95"])}"' in page
    assert f'data-metric="pass@1.range" data-value="{json.dumps([spread["min"], spread["max"]])}"' in page
    assert 'data-metric="n_seeds" data-value="3"' in page and "q over seeds 0, 1, 2" in page


def test_seeds_that_all_gave_one_value_show_no_interval(tmp_path):
    same = {"teacher": 8, "student@base": 0, "student@iter_1": 4, "student@iter_2": 6}
    runs = [seeded_run(tmp_path / "runs" / ("q" if seed == 0 else f"q-seed{seed}"), seed, same) for seed in (0, 1, 2)]
    grouped = {r["system"]: r for r in board(*runs) if "seeds" in r}
    spread = grouped["student@iter_1"]["pass@1_seeds"]
    assert spread["t95"] is None and spread["distinct"] == 1 and spread["n"] == 3
    assert "| q | student@iter_1 | 3 | 0.500 (all 3 equal) | 0.50–0.50 |" in board(*runs, fmt="md")


def test_seed_intervals_stay_in_each_metrics_range():
    from dpokd.scoring.seeds import bounds, spread

    rate = spread({0: 0.95, 1: 1.0, 2: 0.9}, bounds("win_rate", []))
    assert rate["t95"][1] == 1.0 and rate["clipped"] and 0.0 <= rate["t95"][0] < 0.9
    nll = spread({0: 0.001, 1: 0.005, 2: 0.1}, bounds("teacher_nll", []))  # a t-interval below 0
    assert nll["t95"][0] == 0.0 and nll["clipped"] and nll["t95"][1] > 0.1
    free = spread({0: -1.0, 1: 0.0, 2: 2.0}, bounds("some_score", []))  # no known range: uncut
    assert free["t95"][0] < -1.0 and not free["clipped"]
    one = spread({0: 0.3}, bounds("win_rate", []))
    assert one["t95"] is None and one["n"] == 1


def test_runs_that_differ_in_anything_but_the_seed_are_never_merged(three_seeds, tmp_path):
    other_lr = seeded_run(tmp_path / "runs" / "q-seed3", 3, PASSING[0], **{"student.learning_rate": 0.001})
    other_task = seeded_run(tmp_path / "runs" / "q-seed4", 4, PASSING[0], **{"task.n_train": 32})
    rows = board(*three_seeds, other_lr, other_task)
    grouped = [r for r in rows if "seeds" in r]
    assert {tuple(r["seeds"]) for r in grouped} == {(0, 1, 2)}
    assert {r["run"] for r in rows if "seeds" not in r} == {"q", "q-seed1", "q-seed2", "q-seed3", "q-seed4"}
    # Only the two that differ only in their seed (3 and 5) make a second group.
    also = seeded_run(tmp_path / "runs" / "q-seed5", 5, PASSING[1], **{"student.learning_rate": 0.001})
    grouped = [r for r in board(*three_seeds, other_lr, other_task, also) if "seeds" in r]
    assert sorted({tuple(r["seeds"]) for r in grouped}) == [(0, 1, 2), (3, 5)]


def test_a_system_only_some_seeds_have_counts_only_those(three_seeds, tmp_path):
    # Seed 3's loop converged at iteration 1: it has no iter_2.
    stopped = seeded_run(tmp_path / "runs" / "q-seed3", 3, {s: n for s, n in PASSING[0].items() if s != "student@iter_2"})
    write_json(stopped / "iter_2" / "pairs_stats.json", {"pairs": 0, "ends_loop": True})
    grouped = {r["system"]: r for r in board(*three_seeds, stopped) if "seeds" in r}
    assert grouped["student@iter_1"]["n_seeds"] == 4 and grouped["student@iter_2"]["n_seeds"] == 3
    assert grouped["student@iter_2"]["seeds"] == [0, 1, 2]
    assert grouped["student@iter_2"]["pass@1_seeds"]["t95"] == pytest.approx(t_interval([6 / 8, 8 / 8, 7 / 8]))
    assert grouped["student@iter_1"]["converged_at"] == {"0": None, "1": None, "2": None, "3": 1}


def test_runs_of_one_name_in_two_folders_stay_apart(tmp_path):
    a = seeded_run(tmp_path / "a" / "q", 0, PASSING[0])
    b = seeded_run(tmp_path / "b" / "q", 1, PASSING[1])
    rows = board(a, b)
    own = [r for r in rows if "seeds" not in r]
    assert [(r["run"], r["system"], r["pass@1"]) for r in own if r["system"] == "student@iter_1"] == [
        (str(a), "student@iter_1", 0.5), (str(b), "student@iter_1", 0.25)]
    assert {tuple(r["seeds"]) for r in rows if "seeds" in r} == {(0, 1)}
    # The same seed twice is one experiment run twice: not a spread over seeds.
    c = seeded_run(tmp_path / "c" / "q", 0, PASSING[2])
    out = board(a, c, fmt="table")
    assert not [r for r in board(a, c) if "seeds" in r]
    assert f"not aggregated over seeds: {a} and {c} are the same spec with the same seed (0)" in " ".join(out.split())
    # A run given twice is one run.
    assert len(board(a, a)) == len(SYSTEMS)


def test_seed_on_a_bundle_is_a_usage_error(tmp_path):
    bundle = tmp_path / "run.tar.gz"
    import tarfile

    with tarfile.open(bundle, "w:gz"):
        pass
    out = run_cli("run", str(bundle), "--seed", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr


@pytest.mark.slow
def test_run_with_seed_goes_to_its_own_directory_and_resumes_replays_and_starts_over_there(tmp_path):
    from dpokd.testing import LoopbackServer

    with LoopbackServer(lambda body: ANSWER) as teacher:
        spec = tmp_path / "conv.toml"
        spec.write_text(spec_text(teacher.url, name="s"))
        env = {"OPENAI_API_KEY": "x"}
        out = run_cli("run", str(spec), "--seed", "7", cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        run_dir = tmp_path / "runs" / "s-seed7"
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert (manifest["spec"]["run"]["seed"], manifest["spec"]["run"]["name"], manifest["seed"]) == (7, "s-seed7", 7)
        assert not (tmp_path / "runs" / "s").exists()
        results = (run_dir / "results.json").read_text()

        teacher.reset()
        again = run_cli("run", str(spec), "--seed", "7", cwd=tmp_path, env=env)
        assert again.returncode == 0 and "is finished" in again.stderr + again.stdout
        offline = run_cli("run", str(spec), "--seed", "7", "--offline", "--fresh", cwd=tmp_path, env=env, fresh=True)
        assert offline.returncode == 0, offline.stderr[-3000:]
        assert teacher.requests == []
        assert (run_dir / "results.json").read_text() == results
        rows = board(tmp_path / "runs" / "s-seed7")
        stopped = {r["converged_at"] for r in rows}  # where this seed's loop converged, the same in every row
        assert {r["run"] for r in rows} == {"s-seed7"} and len(stopped) == 1 and isinstance(stopped.pop(), int)


@pytest.mark.parametrize("seed, directory", [("3", "s-seed3"), ("0", "s")], ids=["another_seed", "the_specs_own"])
def test_the_seed_picks_the_run_directory_and_its_lock(seed, directory, tmp_path):
    from filelock import FileLock

    from dpokd.runs import LOCK

    from dpokd.testing import LoopbackServer

    spec = tmp_path / "s.toml"
    held = tmp_path / "runs" / directory
    held.mkdir(parents=True)
    with LoopbackServer() as teacher, FileLock(str(held / LOCK), timeout=0):  # the preflight connects to it
        spec.write_text(spec_text(teacher.url, name="s"))
        out = run_cli("run", str(spec), "--seed", seed, cwd=tmp_path, env={"OPENAI_API_KEY": "x"})
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"runs/{directory} is in use by another dpokd process" in " ".join(out.stderr.split())
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [directory]
