"""``llm-rubric``: an LLM grades each answer on its own against a rubric, MT-Bench's single-answer grading.

Where there is no baseline worth comparing with, or the question is how good an answer is rather
than which of two is better. The example's reference answer, when it has one, is shown to the
grader, which makes correctness checkable rather than guessed. Ratings are scaled to [0, 1], so
they are averaged, compared between systems and given intervals as every other [0, 1] metric is.
A prompt a system failed or refused to answer gets the lowest rating, and is counted, so a system
that fails on the hard prompts is not graded on the easy ones alone.
"""

from __future__ import annotations

import re

import dpokd
from dpokd import Example, Outcome, Score
from dpokd.llm import LLMClient, LLMOptions, check_key, check_server
from dpokd.scoring import mean_ci

SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to the "
    "user question displayed below, following the rubric you are given. Begin your evaluation with a short "
    "explanation. Be as objective as possible, and do not let the length of the response influence your rating."
)
RUBRIC = ("Rate the response on helpfulness, relevance, correctness, depth and level of detail. A response that is "
          "wrong, or does not do what was asked, gets a low rating however well it is written.")
TEMPLATE = (
    "[Rubric]\n{rubric}\n\n[Question]\n{question}\n\n{reference}[The Start of Assistant's Answer]\n{answer}\n"
    "[The End of Assistant's Answer]\n\nAfter your explanation, rate the response with an integer from {low} to "
    "{high}, giving it as the last line in exactly this format: \"Rating: [[N]]\", for example \"Rating: [[{example}]]\"."
)
REFERENCE = ("[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\nCompare the assistant's "
             "answer with the reference answer, and count any mistake against it.\n\n")
_RATING = re.compile(r"\[\[\s*([+-]?\d+)\s*\]\]")


def parse_rating(text: str) -> int | None:
    """The last ``[[N]]`` in the text, or None."""
    found = _RATING.findall(text or "")
    return int(found[-1]) if found else None


class RubricJudge(dpokd.Judge):
    """Each system's answers graded one at a time by an LLM against a rubric (and the reference)."""

    name = "llm-rubric"

    class Options(LLMOptions):
        model: str = dpokd.Field("gpt-5.5-2026-04-23", description="the grading model (any litellm model string); "
                                 "a dated snapshot, so the grader does not change under a finished run")
        system_prompt: str | None = dpokd.Field(SYSTEM_PROMPT, description="the grader's instructions")
        max_tokens: int | None = dpokd.Field(1024, ge=1, description="most tokens per grading")
        rubric: str = dpokd.Field(RUBRIC, min_length=1, description="what a good answer is, shown to the grader")
        scale_min: int = dpokd.Field(1, description="the lowest rating (scaled to 0)")
        scale_max: int = dpokd.Field(10, description="the highest rating (scaled to 1)")
        use_reference: bool = dpokd.Field(True, description="show the grader the example's reference answer where it has one")
        limit: int | None = dpokd.Field(None, ge=1, description="judge only the first N eval prompts")

        @dpokd.field_validator("scale_max")
        @classmethod
        def _above_min(cls, v: int, info) -> int:
            low = info.data.get("scale_min")
            if low is not None and v <= low:
                raise ValueError(f"`scale_max` must be above `scale_min`, got scale_min = {low}, scale_max = {v}")
            return v

    def __init__(self, options=None, context=None):
        super().__init__(options, context)
        self.client = LLMClient(self.options, self.context, field="judges.llm-rubric")

    def preflight(self) -> None:
        check_key(self.options, "judges.llm-rubric", self.context.offline)
        check_server(self.options, "judges.llm-rubric", self.context.offline)

    def evaluate(self, systems: dict[str, dpokd.System], task: dpokd.Task) -> list[Score | Outcome]:
        examples = self.eval_examples(task)[: self.options.limit]
        results: list[Score | Outcome] = []
        for name, system in systems.items():
            results += self._grade(name, examples, system.answer(examples))
        return results

    def prompt(self, example: Example, answer: str) -> str:
        """The grader's request for one answer."""
        o = self.options
        question = example.prompt if not example.input or example.input in example.prompt else \
            f"{example.prompt}\n\n{example.input}"
        reference = REFERENCE.format(reference=example.reference) if o.use_reference and example.reference else ""
        return TEMPLATE.format(rubric=o.rubric, question=question, reference=reference, answer=answer,
                               low=o.scale_min, high=o.scale_max, example=(o.scale_min + o.scale_max) // 2)

    def _invalid(self, text: str) -> str | None:
        """Why a grading cannot be used (it is then neither scored nor cached), or None."""
        rating = parse_rating(text)
        if rating is None:
            return "no Rating: [[N]] line"
        if not self.options.scale_min <= rating <= self.options.scale_max:
            return f"rating {rating} outside {self.options.scale_min}..{self.options.scale_max}"
        return None

    def _grade(self, name: str, examples: list[Example], answers) -> list[Score | Outcome]:
        answered = [(e, a) for e, a in zip(examples, answers) if a.ok]
        keys = [Example(id=f"{e.id}:{name}:rubric", prompt="") for e, _ in answered]
        gradings = self.client.complete(keys, [self.prompt(e, a.text) for e, a in answered],
                                        label=f"grade {name}", validate=self._invalid)
        outcomes = [self._outcome(name, e, a.text, g) for (e, a), g in zip(answered, gradings)]
        outcomes += [self._failed(name, e, a) for e, a in zip(examples, answers) if not a.ok]
        details = {"judge_model": sorted({g.model for g in gradings if g.model}),
                   "scale": [self.options.scale_min, self.options.scale_max]}
        return [*outcomes, *self._scores(name, outcomes, [a.text for _, a in answered], details)]

    def _outcome(self, name: str, example: Example, answer: str, grading) -> Outcome:
        """One answer's grade, scaled to [0, 1]; no verdict where the grader gave none."""
        o = self.options
        common = dict(system=name, example_id=example.id, judge=self.name, metric="rubric", answer=answer)
        if not grading.ok:
            return Outcome(value=None, label="no verdict", detail=grading.error or "", **common)
        rating = parse_rating(grading.text)
        return Outcome(value=(rating - o.scale_min) / (o.scale_max - o.scale_min), label=str(rating),
                       detail=grading.text, **common)

    def _failed(self, name: str, example: Example, answer) -> Outcome:
        """A prompt the system failed or refused to answer: the lowest rating."""
        return Outcome(system=name, example_id=example.id, judge=self.name, metric="rubric", value=0.0,
                       label="failed", detail=f"{name} gave no answer ({answer.error})", answer=answer.text)

    def _scores(self, name: str, outcomes: list[Outcome], texts: list[str], details) -> list[Score]:
        """The scaled mean with its interval, the mean rating on the rubric's own scale, failures, lengths."""
        o = self.options
        values = [x.value for x in outcomes if x.value is not None]
        ratings = [o.scale_min + v * (o.scale_max - o.scale_min) for v in values]
        n = len(values)
        common = dict(judge=self.name, system=name, details=details)
        return [
            Score(metric="rubric", value=sum(values) / n if n else None, ci=mean_ci(values), n=n, **common),
            Score(metric="rating", value=sum(ratings) / n if n else None, ci=mean_ci(ratings), n=n, **common),
            Score(metric="failed_answers", value=float(sum(x.label == "failed" for x in outcomes)),
                  higher_is_better=False, **common),
            Score(metric="answer_chars", value=sum(map(len, texts)) / len(texts) if texts else None,
                  higher_is_better=False, n=len(texts), **common),
        ]


@dpokd.hookimpl
def register_judges(register):
    register(RubricJudge)
