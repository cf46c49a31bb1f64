"""``reference``: the task's own reference answers as the teacher. No network, no key, no cost."""

from __future__ import annotations

import dpokd
from dpokd import Completion, Example


class ReferenceTeacher(dpokd.Teacher):
    """Answers each prompt with the task's reference answer (a dataset's solution)."""

    name = "reference"

    class Options(dpokd.Options):
        pass

    def answer(self, examples: list[Example]) -> list[Completion]:
        missing = [e.id for e in examples if not e.reference]
        if missing:
            raise dpokd.ConfigError(
                f"teacher.plugin: the `reference` teacher needs reference answers, and {len(missing)} of "
                f"{len(examples)} examples have none (first: {missing[0]}); this task ships no references "
                "for its prompts, so use an LLM teacher such as plugin = \"litellm\""
            )
        return [Completion.of(e, e.reference, model="reference", finish_reason="stop") for e in examples]


@dpokd.hookimpl
def register_teachers(register):
    register(ReferenceTeacher)
