"""The leaderboard reads results.json: one row per (run, system), the best of each column marked."""

import csv
import io
import json

import pytest

from dpokd.records import Score
from dpokd.runs import RunDir
from dpokd.scoring import record

from .conftest import run_cli


def make_run(path, pass_base, pass_tuned):
    run = RunDir(path)
    run.create(fresh=True)
    run.write_results([
        Score(judge="execution", system="student@base", metric="pass@1", value=pass_base, ci=(0.0, 0.2), n=32),
        Score(judge="execution", system="student@iter_1", metric="pass@1", value=pass_tuned, ci=(0.6, 0.9), n=32),
        Score(judge="teacher-likelihood", system="student@base", metric="teacher_nll", value=7.9, higher_is_better=False),
        Score(judge="teacher-likelihood", system="student@iter_1", metric="teacher_nll", value=0.4, higher_is_better=False),
    ])


def test_json_csv_and_markdown(tmp_path):
    make_run(tmp_path / "a", 0.1, 0.8)
    make_run(tmp_path / "b", 0.0, 0.5)
    out = run_cli("leaderboard", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "json")
    rows = json.loads(out.stdout)
    assert [(r["run"], r["system"]) for r in rows] == [("a", "student@base"), ("a", "student@iter_1"),
                                                        ("b", "student@base"), ("b", "student@iter_1")]
    assert rows[1]["pass@1"] == 0.8 and rows[1]["pass@1_ci"] == [0.6, 0.9] and rows[0]["teacher_nll"] == 7.9
    table = list(csv.DictReader(io.StringIO(run_cli("leaderboard", str(tmp_path / "a"), "--format", "csv").stdout)))
    assert table[0]["system"] == "student@base" and float(table[1]["pass@1"]) == 0.8
    md = run_cli("leaderboard", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "md").stdout
    # The best pass@1 (highest) and the best teacher_nll (lowest) are marked.
    assert "| a | student@iter_1 | **0.800 [0.60, 0.90]** | **0.400** |" in md


def test_unfinished_run_is_a_clear_error(tmp_path):
    (tmp_path / "r").mkdir()
    out = run_cli("leaderboard", str(tmp_path / "r"))
    assert out.returncode == 2 and "no results.json" in out.stderr and "Traceback" not in out.stderr


# -- paired comparisons --------------------------------------------------------------------------
def paired_run(path):
    """32 problems: the base passes 0-7, iter_1 passes 0-19, iter_2 passes 0-15 and 20-23."""
    from .runs_on_disk import make_run as make_eval_run

    passing = {"teacher": range(32), "student@base": range(8), "student@iter_1": range(20),
               "student@iter_2": [*range(16), *range(20, 24)]}
    return make_eval_run(path, systems=list(passing), problems=32, passes=lambda s, i, j: i in passing[s])


def test_checkpoints_get_delta_with_paired_ci_and_mcnemar_p_in_every_format(tmp_path):
    from scipy.stats import binomtest

    run = paired_run(tmp_path / "r")
    rows = {r["system"]: r for r in json.loads(run_cli("leaderboard", str(run), "--format", "json").stdout)}
    last = rows["student@iter_2"]
    assert last["vs_ref"]["against"] == "student@base" and last["vs_prev"]["against"] == "student@iter_1"
    assert last["vs_ref"]["delta"] == pytest.approx(rows["student@iter_2"]["pass@1"] - rows["student@base"]["pass@1"])
    assert last["vs_ref"]["delta"] == pytest.approx(12 / 32)
    # iter_2 against iter_1: 4 examples only iter_2 passes (20-23), 4 only iter_1 (16-19).
    assert (last["vs_prev"]["only_a"], last["vs_prev"]["only_b"]) == (4, 4)
    assert last["vs_prev"]["p"] == pytest.approx(binomtest(4, 8, 0.5).pvalue) and last["vs_prev"]["delta"] == 0.0
    assert last["vs_ref"]["p"] == pytest.approx(binomtest(12, 12, 0.5).pvalue)
    low, high = last["vs_ref"]["ci"]
    assert 0 < low < 12 / 32 < high
    assert "vs_ref" not in rows["teacher"] and "vs_ref" not in rows["student@base"]
    assert rows["student@iter_1"]["vs_prev"]["against"] == "student@base"

    md = run_cli("leaderboard", str(run), "--format", "md").stdout
    assert "Δpass@1 vs student@base" in md
    assert f"| +0.375 [{low:+.2f}, {high:+.2f}] p=0.000 |" not in md  # p below 0.001 is written in full
    assert f"+0.375 [{low:+.2f}, {high:+.2f}] p=4.9e-04" in md
    table = list(csv.DictReader(io.StringIO(run_cli("leaderboard", str(run), "--format", "csv").stdout)))
    by = {r["system"]: r for r in table}
    assert by["student@iter_2"]["prev"] == "student@iter_1" and float(by["student@iter_2"]["delta_ref"]) == 0.375
    out = run_cli("leaderboard", str(run)).stdout
    assert "Δ vs base" in out and "+0.375" in out and "McNemar" in out


def test_against_picks_the_reference_and_an_unknown_one_is_named(tmp_path):
    run = paired_run(tmp_path / "r")
    rows = {r["system"]: r for r in json.loads(
        run_cli("leaderboard", str(run), "--format", "json", "--against", "teacher").stdout)}
    assert rows["student@base"]["vs_ref"]["against"] == "teacher"
    assert rows["student@base"]["vs_ref"]["delta"] == pytest.approx(-24 / 32)
    assert "vs_ref" not in rows["teacher"]
    out = run_cli("leaderboard", str(run), "--against", "student@iter_9")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--against: run r has no system 'student@iter_9'" in out.stderr and "student@iter_2" in out.stderr


def test_a_damaged_eval_file_is_a_clear_error(tmp_path):
    run = paired_run(tmp_path / "r")
    (run / "eval" / "execution-student@iter_1.jsonl").write_text('{"example_id": "task/0", "status": "passed"}\n{"exa')
    out = run_cli("leaderboard", str(run))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "execution-student@iter_1.jsonl: line 2 is not valid JSON" in out.stderr and "results.json" in out.stderr


def test_a_run_whose_eval_files_an_older_dpokd_wrote_is_refused_naming_the_file(tmp_path):
    run = paired_run(tmp_path / "r")
    (run / "eval" / "execution-student@iter_1.jsonl").write_text(
        '{"example_id": "task/0", "status": "passed", "reason": "", "sample": 0, "completion": "x"}\n')
    for command in (["leaderboard", str(run)], ["view", str(run)]):
        out = run_cli(*command)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert "execution-student@iter_1.jsonl: line 1 is not an outcome (written by an older dpokd?)" in out.stderr
        assert "re-run the spec" in out.stderr


# -- judge calibration ---------------------------------------------------------------------------
def _judged_run(path, responder, model):
    """student@base passes eval examples 0, 2 and 4; student@iter_1 passes 0 and 3; judged by execution
    in the real sandbox and by llm-pairwise over real litellm against the loopback server."""
    from dpokd.interfaces import Context, System
    from dpokd.plugins.judges.execution import ExecutionJudge
    from dpokd.plugins.judges.pairwise import PairwiseJudge
    from dpokd.plugins.tasks.synthetic import SyntheticCodegen
    from dpokd.records import Completion
    from dpokd.testing import LoopbackServer

    task = SyntheticCodegen(SyntheticCodegen.Options(n_train=4, n_eval=6, levels=[1]))
    order = [e.id for e in task.examples("eval")]

    def system(name, passing):
        def answer(examples):
            return [Completion.of(e, e.reference if order.index(e.id) in passing
                                  else f"def {e.entry_point}(*args):\n    return None  # wrong\n") for e in examples]
        return System(name, answer)

    systems = {"student@base": system("student@base", {0, 2, 4}), "student@iter_1": system("student@iter_1", {0, 3})}
    run = RunDir(path)
    run.create(fresh=True)
    context = Context(cache_dir=path.parent / f"cache-{model}", run_dir=path)
    with LoopbackServer(responder) as server:
        results = ExecutionJudge(context=context).evaluate(systems, task)
        results += PairwiseJudge(PairwiseJudge.Options(model=f"openai/{model}", api_base=server.url), context).evaluate(
            systems, task)
    record(path, results)
    return path


def _prefers_passing(body):
    text = body["messages"][-1]["content"]
    a = text.split("[The Start of Assistant A's Answer]\n")[1].split("[The End of Assistant A's Answer]")[0]
    return "[[B]]" if "# wrong" in a else "[[A]]"


def test_judge_calibration_is_kappa_1_for_a_right_judge_and_0_for_one_that_always_says_a(tmp_path):
    right = _judged_run(tmp_path / "right", _prefers_passing, "judge-right")
    rows = {r["system"]: r for r in json.loads(run_cli("leaderboard", str(right), "--format", "json").stdout)}
    # Exactly one passes on examples 2 and 4 (the base) and 3 (iter_1).
    assert rows["student@iter_1"]["judge_calibration"] == {
        "judge": "llm-pairwise", "execution": "execution", "baseline": "student@base",
        "pairs": 3, "accuracy": 1.0, "kappa": 1.0}
    verdicts = [json.loads(line) for line in (right / "eval" / "llm-pairwise-student@iter_1.jsonl").read_text().splitlines()]
    assert len(verdicts) == 6 and {v["label"] for v in verdicts} <= {"ours", "base", "tie", "disagree"}
    # The report shows the same calibration, and each example's verdict beside the answers.
    assert run_cli("view", str(right)).returncode == 0
    page = (right / "report.html").read_text()
    assert 'data-metric="judge_calibration.kappa" data-value="1.0"' in page
    assert 'data-metric="judge_calibration.pairs" data-value="3"' in page
    assert page.count('<div class="verdict" data-system="student@iter_1">') == 6

    always_a = _judged_run(tmp_path / "always-a", lambda body: "[[A]]", "judge-a")
    rows = {r["system"]: r for r in json.loads(run_cli("leaderboard", str(always_a), "--format", "json").stdout)}
    assert rows["student@iter_1"]["judge_calibration"]["kappa"] == 0.0
    assert rows["student@iter_1"]["judge_calibration"]["accuracy"] == 0.0
    table = run_cli("leaderboard", str(always_a)).stdout
    assert "judge acc" in table and "κ" in table


def test_names_with_brackets_show_as_written_in_the_terminal_table(tmp_path):
    run = RunDir(tmp_path / "[red]run")
    run.create(fresh=True)
    run.write_results([Score(judge="execution", system="[bold]x[/bold]", metric="pass@1", value=0.5, n=4)])
    out = run_cli("leaderboard", str(run.path))
    assert out.returncode == 0, out.stderr
    assert "[bold]x[/bold]" in out.stdout and "[red]run" in out.stdout


def test_a_grading_judge_is_calibrated_against_a_pass_or_fail_judge(tmp_path):
    """match says pass or fail; a rubric grades the same answers: its agreement and κ are shown."""
    from dpokd.records import Outcome

    truth = [True, True, False, False, True, False]
    grades = [0.9, 0.6, 0.2, 0.7, 0.1, 0.0]  # agrees on 0, 1, 2 and 5; wrong on 3 and 4
    run = RunDir(tmp_path / "graded")
    run.create(fresh=True)
    results = [Outcome(system="s", example_id=f"e{i}", judge="match", metric="match", value=t) for i, t in enumerate(truth)]
    results += [Outcome(system="s", example_id=f"e{i}", judge="llm-rubric", metric="rubric", value=g, label=str(g))
                for i, g in enumerate(grades)]
    record(run.path, results)
    rows = {r["system"]: r for r in json.loads(run_cli("leaderboard", str(run.path), "--format", "json").stdout)}
    found = rows["s"]["judge_calibration"]
    assert (found["judge"], found["execution"], found["pairs"], found["accuracy"]) == ("llm-rubric", "match", 6, 4 / 6)
    # Cohen's κ of [p, p, f, f, p, f] against [p, p, f, p, f, f]: observed 4/6, chance 1/2.
    assert found["kappa"] == pytest.approx((4 / 6 - 0.5) / 0.5)
    assert rows["s"]["match"] == 0.5 and rows["s"]["rubric"] == pytest.approx(sum(grades) / 6)
    # Every format names the judge it is calibrated against: match here, not execution.
    markdown = run_cli("leaderboard", str(run.path), "--format", "md").stdout
    assert "judge vs match" in markdown and "execution" not in markdown
    terminal = " ".join(run_cli("leaderboard", str(run.path), env={"COLUMNS": "200"}).stdout.split())
    assert "Cohen's κ against match" in terminal and "execution" not in terminal
    assert run_cli("view", str(run.path)).returncode == 0
    assert "Cohen's κ against match (undefined" in (run.path / "report.html").read_text()


def test_what_was_not_measured_is_missing_in_every_format_never_zero(tmp_path):
    """A pairwise judge with no verdict and a teacher whose model has no known price."""
    run = RunDir(tmp_path / "r")
    run.create(fresh=True)
    run.write_results([
        Score(judge="run", system="teacher", metric="cost_usd", value=None, higher_is_better=False),
        Score(judge="execution", system="student@iter_1", metric="pass@1", value=0.5, ci=(0.3, 0.7), n=20),
        Score(judge="llm-pairwise", system="student@iter_1", metric="win_rate", value=None, n=0),
        Score(judge="llm-pairwise", system="student@iter_1", metric="consistency", value=None, n=0),
    ])
    rows = {r["system"]: r for r in json.loads(run_cli("leaderboard", str(run.path), "--format", "json").stdout)}
    assert rows["teacher"]["cost_usd"] is None
    tuned = rows["student@iter_1"]
    assert (tuned["win_rate"], tuned["win_rate_n"], tuned["consistency"], tuned["pass@1_n"]) == (None, 0, None, 20)
    assert "win_rate_ci" not in tuned
    md = run_cli("leaderboard", str(run.path), "--format", "md").stdout
    assert "| r | teacher | - | - | - | - |" in md and "| r | student@iter_1 | 0.500 [0.30, 0.70] | - | - | - |" in md
    table = list(csv.DictReader(io.StringIO(run_cli("leaderboard", str(run.path), "--format", "csv").stdout)))
    assert [(r["win_rate"], r["win_rate_n"], r["consistency"], r["cost_usd"]) for r in table] == [
        ("", "", "", ""), ("", "0", "", "")]
    text = run_cli("leaderboard", str(run.path)).stdout
    assert "│ student@iter_1 │ 0.500 │ 0.30–0.70 │ - │ - │ - │" in " ".join(text.split()) and "0.000" not in text
    assert run_cli("view", str(run.path)).returncode == 0
    page = (run.path / "report.html").read_text()
    for metric in ("win_rate", "consistency", "cost_usd"):
        assert page.count(f'<td data-metric="{metric}" data-value="null">-</td>') == 2, metric
