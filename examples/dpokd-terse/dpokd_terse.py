"""A third-party teacher that calls a model: any litellm model, asked for a short answer.

It uses only dpokd's public API: the shared client (``dpokd.llm``) gives it the cache, retries, rate limits,
``--offline`` replay and the run's ``max_usd`` budget, and its options are every LLM option.
"""

import functools

import dpokd
from dpokd.llm import LLMClient, LLMOptions, check_key


@dpokd.hookimpl
def register_teachers(register):
    register(TerseTeacher)


class TerseTeacher(dpokd.Teacher):
    name = "terse"

    class Options(LLMOptions):
        template: str = dpokd.Field("Answer in at most {words} words.\n\n{prompt}",
                                    description="the message sent for each prompt; {prompt} and {words} are filled in")
        words: int = dpokd.Field(50, ge=1, description="the most words asked for")

    @functools.cached_property
    def client(self) -> LLMClient:
        return LLMClient(self.options, self.context, field=self.field)

    def preflight(self):
        check_key(self.options, self.field, self.context.offline)

    def answer(self, examples):
        prompts = [self.options.template.format(prompt=e.prompt, words=self.options.words) for e in examples]
        return self.client.complete(examples, prompts, label=self.field)

    def usage(self):
        return vars(self.client.usage)
