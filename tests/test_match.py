"""The `match` judge: answers checked against references in each mode and with each option a user sets,
failed answers and missing references, and its metric in the leaderboard of an evaluation-only run."""

import hashlib
import json

import pydantic
import pytest

import dpokd
from dpokd import Completion, Example, Outcome, Score, System
from dpokd.plugins.judges.match import MatchJudge
from dpokd.plugins.tasks.synthetic import SyntheticCodegen
from dpokd.testing import LoopbackServer

from .conftest import run_cli


class Given(dpokd.Task):
    """An eval split made by the test."""

    name = "given"

    def __init__(self, examples):
        super().__init__()
        self.given = examples

    def examples(self, split):
        return self.given if split == "eval" else []


def judged(pairs, **options) -> list[Score | Outcome]:
    """The judge's results for one system giving ``answer`` to a question whose reference is ``reference``,
    for each (reference, answer) pair; an answer that is a Completion is given as it is (a failure)."""
    examples = [Example(id=f"q{i}", prompt="question", reference=ref) for i, (ref, _) in enumerate(pairs)]
    given = {e.id: answer for e, (_, answer) in zip(examples, pairs)}

    def answer(exs):
        return [given[e.id] if isinstance(given[e.id], Completion) else Completion.of(e, given[e.id]) for e in exs]

    return MatchJudge(MatchJudge.Options(**options)).evaluate({"s": System("s", answer)}, Given(examples))


def verdict(reference, answer, **options) -> Outcome:
    [outcome] = [r for r in judged([(reference, answer)], **options) if isinstance(r, Outcome)]
    assert outcome.metric == "match" and outcome.judge == "match" and outcome.answer == answer
    return outcome


CASES = [
    # exact: case and runs of whitespace ignored by default, punctuation kept
    ("Paris", "  paris \n", {}, True),
    ("Paris", "paris", {"ignore_case": False}, False),
    ("New York", "New \t York", {}, True),
    ("New York", "New  York", {"ignore_whitespace": False}, False),
    ("Paris.", "Paris", {}, False),
    ("Paris.", "Paris!", {"ignore_punctuation": True}, True),
    ("Paris", "The capital is PARIS.", {}, False),
    # contains
    ("Paris", "The capital is PARIS.", {"mode": "contains"}, True),
    ("Paris", "The capital is Lyon.", {"mode": "contains"}, False),
    ("new york", "I love New\nYork!", {"mode": "contains"}, True),
    ("new york", "I love New\nYork!", {"mode": "contains", "ignore_whitespace": False}, False),
    # regex: the reference is a pattern found anywhere in the answer
    (r"\b(4|four)\b", "The answer is Four.", {"mode": "regex"}, True),
    (r"\bfour\b", "The answer is Four.", {"mode": "regex", "ignore_case": False}, False),
    (r"\b(4|four)\b", "The answer is 14.", {"mode": "regex"}, False),
    (r"^4$", "it is 4", {"mode": "regex"}, False),
    # numeric: the last number of each side, commas dropped, a trailing period ignored
    ("1,234", "The total is $1234.", {"mode": "numeric"}, True),
    ("72", "So 70 + 2 = 72.", {"mode": "numeric"}, True),
    ("72", "72 is wrong, it is 71.", {"mode": "numeric"}, False),
    ("The answer is #### 18", "18", {"mode": "numeric"}, True),
    ("-3", "-3.0", {"mode": "numeric"}, True),
    ("1e3", "1000", {"mode": "numeric"}, True),
    ("0.3", "0.3000001", {"mode": "numeric"}, True),
    ("0.3", "0.301", {"mode": "numeric"}, False),
    ("0.3", "0.301", {"mode": "numeric", "tolerance": 0.01}, True),
    ("1000", "1005", {"mode": "numeric"}, False),
    ("1000", "1005", {"mode": "numeric", "relative": 0.01}, True),
    ("1000", "1011", {"mode": "numeric", "relative": 0.01}, False),
    # extract: applied to the answer first, its last match (group 1, else the whole match) compared
    ("72", "Natalia sold 48/2 = 24 clips in May.\n#### 72", {"extract": r"#### (.+)"}, True),
    ("72", "Natalia sold 48/2 = 24 clips in May.\n#### 72", {}, False),
    ("yes", "answer: no, on reflection answer: yes", {"extract": r"answer: (\w+)"}, True),
    ("b)", "Either A) or B)", {"extract": r"[A-D]\)"}, True),
    ("1234", "First 5, then 1,234.", {"mode": "numeric", "extract": r"(-?\d[\d,]*\.?\d*)"}, True),
    ("5", "First 5, then 1,234.", {"mode": "numeric", "extract": r"(-?\d[\d,]*\.?\d*)"}, False),
    ("72", "Answer:\n72\nDone", {"extract": r"^Answer:\n(.+)$"}, True),
]


@pytest.mark.parametrize("reference, answer, options, expected", CASES)
def test_each_mode_and_option(reference, answer, options, expected):
    outcome = verdict(reference, answer, **options)
    assert outcome.value is expected
    assert outcome.label == ("matched" if expected else "different")


def test_the_detail_shows_what_was_compared():
    outcome = verdict("72", "Natalia sold 48/2 = 24 clips in May.\n#### 71", extract=r"#### (.+)")
    assert outcome.detail == "'71' differs from reference '72'"
    assert verdict("72", "so 72.", mode="numeric").detail == "72 = reference 72 (from 'so 72.')"
    long = verdict("x", "word " * 400)
    assert long.value is False and len(long.detail) <= 220 and long.detail.endswith("reference 'x'")


@pytest.mark.parametrize("reference, answer, side", [("42", "I do not know.", "the answer"),
                                                     ("about forty", "42", "the reference")])
def test_numeric_without_a_number_fails_and_says_which_side(reference, answer, side):
    outcome = verdict(reference, answer, mode="numeric")
    assert outcome.value is False and outcome.label == "no number"
    assert outcome.detail.startswith(f"no number in {side}")


def test_an_answer_the_extract_pattern_misses_fails():
    outcome = verdict("72", "The answer is 72", extract=r"#### (.+)")
    assert outcome.value is False and outcome.label == "not extracted"
    assert outcome.detail == "`extract` found nothing in 'The answer is 72'"


def test_failed_answers_fail_with_their_error_and_are_not_counted_in_the_length():
    failed = Completion(example_id="q2", ok=False, error="blocked (finish_reason=content_filter)")
    results = judged([("abc", "abc"), ("abcde", "abcdx"), ("Paris", failed)])
    outcomes = {o.example_id: o for o in results if isinstance(o, Outcome)}
    assert [outcomes[i].value for i in ("q0", "q1", "q2")] == [True, False, False]
    assert outcomes["q2"].label == "failed"
    assert outcomes["q2"].detail == "no answer: blocked (finish_reason=content_filter)"
    [length] = [s for s in results if isinstance(s, Score)]
    assert length.metric == "answer_chars" and length.value == 4.0 and length.n == 2 and not length.higher_is_better


def test_a_missing_reference_is_a_config_error_naming_the_task_before_any_answer_is_asked():
    examples = [Example(id="a", prompt="p", reference="1"), Example(id="b", prompt="p")]

    def never(exs):
        raise AssertionError("asked for answers")

    judge = MatchJudge()
    with pytest.raises(dpokd.ConfigError, match=r"1 of 2 eval examples of task 'given' have none \(first: b\)"):
        judge.evaluate({"s": System("s", never)}, Given(examples))
    with pytest.raises(dpokd.ConfigError, match="task 'given'"):
        judge.eval_examples(Given(examples))
    assert [e.id for e in MatchJudge(MatchJudge.Options(limit=1)).eval_examples(Given(examples))] == ["a"]


def test_limit_judges_the_first_examples_only():
    results = judged([("1", "1"), ("2", "2"), ("3", "3")], limit=2)
    assert sorted(o.example_id for o in results if isinstance(o, Outcome)) == ["q0", "q1"]


def test_bad_patterns_are_refused_before_anything_is_judged():
    with pytest.raises(pydantic.ValidationError, match="`extract` is not a regular expression"):
        MatchJudge.Options(extract="(unclosed")
    examples = [Example(id="a", prompt="p", reference="ok"), Example(id="b", prompt="p", reference="[0-")]
    with pytest.raises(dpokd.ConfigError, match="example 'b'"):
        MatchJudge(MatchJudge.Options(mode="regex")).eval_examples(Given(examples))
    assert len(MatchJudge().eval_examples(Given(examples))) == 2  # a plain string elsewhere


# -- an evaluation-only run ---------------------------------------------------------------------------

TASK = dict(n_train=4, n_eval=12, levels=[1], seed=0)


def lucky(prompt: str) -> bool:
    return hashlib.sha256(prompt.encode()).digest()[0] % 2 == 0


@pytest.fixture(scope="module")
def server():
    """An API model that gives the reference solution, upper-cased, to about half the problems."""
    task = SyntheticCodegen(SyntheticCodegen.Options(**TASK))
    answers = {e.prompt: e.reference for split in ("train", "eval") for e in task.examples(split)}

    def respond(body):
        prompt = body["messages"][-1]["content"]
        return answers[prompt].upper() if lucky(prompt) else "def wrong(): pass"

    with LoopbackServer(respond) as s:
        yield s


def test_an_eval_run_is_planned_and_puts_match_with_its_interval_in_the_leaderboard(tmp_path, server):
    (tmp_path / "spec.toml").write_text(f"""
[run]
name = "match"
mode = "eval"
output_dir = "runs"
cache_dir = "cache"

[task]
plugin = "synthetic-codegen"
n_train = {TASK['n_train']}
n_eval = {TASK['n_eval']}
levels = {TASK['levels']}
seed = {TASK['seed']}

[[systems]]
name = "right"
plugin = "reference"

[[systems]]
name = "api"
plugin = "litellm"
model = "openai/loopback-coder"
api_base = "{server.url}"

[[judges]]
plugin = "match"
""")
    plan = run_cli("plan", "spec.toml", "--format", "json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    [asked] = json.loads(plan.stdout)["requests"]  # the API system answers each eval problem once
    assert asked["what"] == "systems[1]: judges[0] (match)" and asked["requests"] == TASK["n_eval"]
    done = run_cli("run", "spec.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "runs" / "match"
    out = run_cli("leaderboard", str(run_dir), "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {r["system"]: r for r in json.loads(out.stdout)}
    outcomes = [json.loads(line) for line in (run_dir / "eval" / "match-api.jsonl").read_text().splitlines()]
    share = sum(o["value"] for o in outcomes) / len(outcomes)
    eval_prompts = [e.prompt for e in SyntheticCodegen(SyntheticCodegen.Options(**TASK)).examples("eval")]
    assert len(outcomes) == 12 and share == sum(map(lucky, eval_prompts)) / 12 and 0 < share < 1
    assert rows["right"]["match"] == 1.0 and rows["right"]["match_n"] == 12
    low, high = rows["right"]["match_ci"]
    assert 0.7 < low < 1.0 and high == pytest.approx(1.0)  # Wilson's: 12 of 12 is not certainty
    assert rows["api"]["match"] == pytest.approx(share) and rows["api"]["match_n"] == 12
    low, high = rows["api"]["match_ci"]
    assert low < share < high
    assert rows["api"]["answer_chars"] > 0
    page = (run_dir / "report.html").read_text()  # badges coloured by the verdict, whatever its label
    assert page.count('<div class="answer passed" data-system="right"') == 12
    assert page.count('<div class="answer failed" data-system="api"') == round(12 * (1 - share))
