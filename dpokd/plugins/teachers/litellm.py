"""``litellm``: any model litellm reaches (Gemini, GPT-4, Claude, Ollama, vLLM) as the teacher."""

from __future__ import annotations

import dpokd
from dpokd.llm import LLMClient, LLMOptions, check_key
from dpokd.records import Completion, Example


class LiteLLMTeacher(dpokd.Teacher):
    """Asks a model through the shared client: cached, retried, rate-limited and budgeted."""

    name = "litellm"

    class Options(LLMOptions):
        pass

    def __init__(self, options=None, context=None):
        super().__init__(options, context)
        self.client = LLMClient(self.options, self.context, field="teacher")

    def preflight(self) -> None:
        check_key(self.options, "teacher", self.context.offline)

    def answer(self, examples: list[Example]) -> list[Completion]:
        return self.client.complete(examples, label="teacher")

    def usage(self) -> dict[str, float]:
        return vars(self.client.usage)


@dpokd.hookimpl
def register_teachers(register):
    register(LiteLLMTeacher)
