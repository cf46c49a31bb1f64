"""``litellm``: any model litellm reaches (Gemini, GPT-4, Claude, Ollama, vLLM) as the teacher."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import dpokd
from dpokd import Completion, Example
from dpokd.llm import LLMClient, LLMOptions, check_key, check_server


class LiteLLMTeacher(dpokd.Teacher):
    """Asks a model through the shared client: cached, retried, rate-limited and budgeted."""

    name = "litellm"

    class Options(LLMOptions):
        pass

    @functools.cached_property
    def client(self) -> LLMClient:
        # Built on first use, once the spec has set `field` (a [[systems]] entry has its own budget).
        return LLMClient(self.options, self.context, field=self.field)

    def preflight(self) -> None:
        check_key(self.options, self.field, self.context.offline)
        check_server(self.options, self.field, self.context.offline)

    def answer(self, examples: list[Example]) -> Sequence[Completion]:
        return self.client.complete(examples, label=self.field)

    def usage(self) -> dict[str, float]:
        return vars(self.client.usage)


@dpokd.hookimpl
def register_teachers(register):
    register(LiteLLMTeacher)
