"""The `llm-rubric` judge over real litellm and real HTTP: ratings scaled to [0, 1], the reference shown
to the grader, unusable ratings neither scored nor cached, failed answers rated lowest, offline replay."""

import json

import pydantic
import pytest

import dpokd
from dpokd import Completion, Context, Example, Outcome, Score, System
from dpokd.plugins.judges.rubric import RUBRIC, SYSTEM_PROMPT, RubricJudge, parse_rating
from dpokd.scoring import mean_ci
from dpokd.testing import LoopbackServer

from .conftest import run_cli

EXAMPLES = [Example(id="q0", prompt="What is 6 * 7?", reference="42"),
            Example(id="q1", prompt="Name the capital of France.", reference="Paris"),
            Example(id="q2", prompt="Write a haiku about rain."),
            Example(id="q3", prompt="Summarise this code.", input="def f(x): return x")]


class Given(dpokd.Task):
    name = "given"

    def examples(self, split):
        return EXAMPLES if split == "eval" else []


def constant(prefix):
    return lambda exs: [Completion.of(e, f"{prefix} answer to {e.id}") for e in exs]


SYSTEMS = {"good": System("good", constant("good")), "bad": System("bad", constant("bad"))}


def answer_in(body) -> str:
    text = body["messages"][-1]["content"]
    return text.split("[The Start of Assistant's Answer]\n")[1].split("\n[The End of Assistant's Answer]")[0]


def grades(body) -> str:
    """A grader that rates good answers 9 and bad ones 2."""
    return "Correct and clear.\nRating: [[9]]" if answer_in(body).startswith("good") else "Wrong.\nRating: [[2]]"


def judge(server, tmp_path, offline=False, **options) -> RubricJudge:
    return RubricJudge(RubricJudge.Options(model="openai/grader", api_base=server.url, **options),
                       Context(cache_dir=tmp_path / "cache", offline=offline))


def split(results):
    outcomes = {(o.system, o.example_id): o for o in results if isinstance(o, Outcome)}
    scores = {(s.system, s.metric): s for s in results if isinstance(s, Score)}
    return outcomes, scores


def test_ratings_are_parsed_from_the_last_bracketed_number():
    assert parse_rating("Good.\nRating: [[7]]") == 7
    assert parse_rating("[[3]] at first, on reflection Rating: [[ 8 ]]") == 8
    assert parse_rating("Rating: 8/10") is None and parse_rating("") is None


def test_ratings_are_scaled_to_the_unit_interval_and_averaged(tmp_path):
    with LoopbackServer(grades) as server:
        outcomes, scores = split(judge(server, tmp_path).evaluate(SYSTEMS, Given()))
        assert len(server.requests) == 8  # four prompts, two systems, one grading each
    assert all(outcomes[("good", e.id)].value == pytest.approx(8 / 9) for e in EXAMPLES)
    assert all(outcomes[("bad", e.id)].value == pytest.approx(1 / 9) for e in EXAMPLES)
    good = outcomes[("good", "q0")]
    assert good.metric == "rubric" and good.label == "9" and good.detail == "Correct and clear.\nRating: [[9]]"
    assert good.answer == "good answer to q0"
    rubric, rating = scores[("good", "rubric")], scores[("good", "rating")]
    assert rubric.value == pytest.approx(8 / 9) and rubric.n == 4
    assert rubric.ci == mean_ci([8 / 9] * 4) and rubric.ci[0] < 8 / 9 < rubric.ci[1]
    assert rating.value == pytest.approx(9.0) and rating.n == 4
    assert scores[("bad", "rating")].value == pytest.approx(2.0)
    assert scores[("bad", "failed_answers")].value == 0
    assert scores[("good", "answer_chars")].value == len("good answer to q0") and scores[("good", "answer_chars")].n == 4


def test_the_grader_sees_the_rubric_the_scale_the_input_and_the_reference_where_there_is_one(tmp_path):
    with LoopbackServer(lambda body: "Rating: [[3]]") as server:
        j = judge(server, tmp_path, rubric="Only brevity counts.", scale_min=0, scale_max=4)
        outcomes, _ = split(j.evaluate({"good": SYSTEMS["good"]}, Given()))
        asked = {answer_in(b).split()[-1]: b["messages"] for b in server.requests}
    assert all(o.value == 0.75 for o in outcomes.values())  # 3 on 0..4
    system, user = asked["q0"][0]["content"], asked["q0"][1]["content"]
    assert system == SYSTEM_PROMPT and "Only brevity counts." in user and RUBRIC not in user
    assert "[The Start of Reference Answer]\n42\n[The End of Reference Answer]" in user
    assert "integer from 0 to 4" in user and user.rstrip().endswith('"Rating: [[2]]".')
    assert "Reference Answer" not in asked["q2"][1]["content"]
    assert "Summarise this code.\n\ndef f(x): return x" in asked["q3"][1]["content"]

    with LoopbackServer(lambda body: "Rating: [[3]]") as server:
        judge(server, tmp_path / "other", use_reference=False).evaluate({"good": SYSTEMS["good"]}, Given())
        assert not any("Reference Answer" in b["messages"][-1]["content"] for b in server.requests)
        assert all(RUBRIC in b["messages"][-1]["content"] for b in server.requests)


@pytest.mark.parametrize("reply", ["I would rate it highly.", "Rating: [[11]]", "Rating: [[0]]"])
def test_unusable_ratings_are_no_verdict_and_are_not_cached(tmp_path, reply):
    with LoopbackServer(lambda body: reply) as server:
        j = judge(server, tmp_path, max_failure_share=1.0)
        outcomes, scores = split(j.evaluate({"good": SYSTEMS["good"]}, Given()))
        assert all(o.value is None and o.label == "no verdict" for o in outcomes.values())
        assert scores[("good", "rubric")].value is None and scores[("good", "rubric")].n == 0
        assert scores[("good", "rubric")].ci is None and scores[("good", "rating")].value is None
        server.reset()
        j.evaluate({"good": SYSTEMS["good"]}, Given())
        assert len(server.requests) == 4  # asked again: nothing unusable was cached
    with LoopbackServer(grades) as server:
        outcomes, _ = split(judge(server, tmp_path).evaluate({"good": SYSTEMS["good"]}, Given()))
        assert len(server.requests) == 4 and all(o.label == "9" for o in outcomes.values())


def test_unusable_ratings_beyond_the_failure_share_stop_the_stage(tmp_path):
    with LoopbackServer(lambda body: "Rating: [[11]]") as server:
        with pytest.raises(dpokd.StageFailed, match="rating 11 outside 1..10"):
            judge(server, tmp_path).evaluate({"good": SYSTEMS["good"]}, Given())


def test_failed_answers_get_the_lowest_rating_and_are_counted(tmp_path):
    def flaky(exs):
        return [Completion.failed(e, "blocked (finish_reason=content_filter)") if e.id == "q1"
                else Completion.of(e, f"good answer to {e.id}") for e in exs]

    with LoopbackServer(grades) as server:
        outcomes, scores = split(judge(server, tmp_path).evaluate({"flaky": System("flaky", flaky)}, Given()))
        assert len(server.requests) == 3  # the failed answer is not graded
    failed = outcomes[("flaky", "q1")]
    assert failed.value == 0.0 and failed.label == "failed"
    assert failed.detail == "flaky gave no answer (blocked (finish_reason=content_filter))"
    assert scores[("flaky", "failed_answers")].value == 1 and not scores[("flaky", "failed_answers")].higher_is_better
    assert scores[("flaky", "rubric")].value == pytest.approx(3 * (8 / 9) / 4) and scores[("flaky", "rubric")].n == 4
    assert scores[("flaky", "rating")].value == pytest.approx((3 * 9 + 1) / 4)
    assert scores[("flaky", "answer_chars")].n == 3


def test_limit_grades_the_first_prompts_only(tmp_path):
    with LoopbackServer(grades) as server:
        outcomes, scores = split(judge(server, tmp_path, limit=2).evaluate(SYSTEMS, Given()))
        assert len(server.requests) == 4
    assert sorted(outcomes) == [("bad", "q0"), ("bad", "q1"), ("good", "q0"), ("good", "q1")]
    assert scores[("good", "rubric")].n == 2


def test_a_replay_offline_gives_the_same_outcomes_without_the_server(tmp_path):
    with LoopbackServer(grades) as server:
        first = judge(server, tmp_path).evaluate(SYSTEMS, Given())
        assert len(server.requests) == 8
    # The same spec, so the same api_base, with nothing listening there any more.
    replayed = judge(server, tmp_path, offline=True).evaluate(SYSTEMS, Given())
    dump = [r.model_dump() for r in first]
    assert [r.model_dump() for r in replayed] == dump
    assert any(r.get("label") == "9" for r in dump)
    other = {"other": System("other", constant("other"))}
    with pytest.raises(dpokd.OfflineCacheMiss):  # offline asks nothing: an answer not graded before is a miss
        judge(server, tmp_path, offline=True).evaluate(other, Given())


def test_the_scale_must_run_upwards():
    with pytest.raises(pydantic.ValidationError, match="`scale_max` must be above `scale_min`"):
        RubricJudge.Options(scale_min=5, scale_max=5)
    assert RubricJudge.Options().model == "gpt-5.5-2026-04-23"


def test_preflight_names_the_missing_key_unless_offline(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    options = RubricJudge.Options(model="openai/gpt-5.5-2026-04-23")
    with pytest.raises(dpokd.ConfigError, match="judges.llm-rubric.model: .* set the environment variable OPENAI_API_KEY"):
        RubricJudge(options).preflight()
    RubricJudge(options, Context(offline=True)).preflight()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with LoopbackServer(lambda body: "Rating: [[5]]") as server:  # the key set and the grader's server up
        RubricJudge(options.model_copy(update={"api_base": server.url})).preflight()


def test_a_plan_does_not_pass_over_the_grader_in_silence(tmp_path):
    (tmp_path / "spec.toml").write_text("""
[run]
mode = "eval"
[task]
plugin = "synthetic-codegen"
n_train = 4
n_eval = 6
[[systems]]
name = "right"
plugin = "reference"
[[judges]]
plugin = "llm-rubric"
model = "openai/grader"
api_base = "http://127.0.0.1:9/v1"
""")
    plan = run_cli("plan", "spec.toml", "--format", "json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    assert any("llm-rubric" in r["what"] for r in planned["requests"]) or \
        any(u.startswith("judges[0] (llm-rubric)") for u in planned["unknown"])


def test_an_eval_run_shows_the_rubric_and_its_paired_difference_in_the_leaderboard(tmp_path):
    def respond(body):
        text = body["messages"][-1]["content"]
        if not text.startswith("[Rubric]"):  # an API system asked to solve a problem
            return "def wrong(): pass"
        return "Rating: [[2]]" if answer_in(body) == "def wrong(): pass" else "Rating: [[9]]"

    with LoopbackServer(respond) as server:
        (tmp_path / "spec.toml").write_text(f"""
[run]
name = "rubric"
mode = "eval"
output_dir = "runs"
cache_dir = "cache"
[task]
plugin = "synthetic-codegen"
n_train = 4
n_eval = 8
levels = [1]
[[systems]]
name = "right"
plugin = "reference"
[[systems]]
name = "api"
plugin = "litellm"
model = "openai/loopback-coder"
api_base = "{server.url}"
[[judges]]
plugin = "llm-rubric"
model = "openai/grader"
api_base = "{server.url}"
""")
        done = run_cli("run", "spec.toml", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    out = run_cli("leaderboard", str(tmp_path / "runs" / "rubric"), "--against", "right", "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {r["system"]: r for r in json.loads(out.stdout)}
    assert rows["right"]["rubric"] == pytest.approx(8 / 9) and rows["right"]["rating"] == pytest.approx(9.0)
    assert rows["api"]["rubric"] == pytest.approx(1 / 9) and rows["api"]["rubric_n"] == 8
    delta = rows["api"]["vs_ref"]
    assert delta["metric"] == "rubric" and delta["delta"] == pytest.approx(1 / 9 - 8 / 9)
