"""``llm-pairwise``: an LLM judge comparing each system with a baseline, MT-Bench style.

Every comparison is judged in both orders; a pair the orders disagree on is a tie, and the share
of agreeing pairs is reported as position consistency, with each side's mean answer length (judges
are known to favour the first position and longer answers). A prompt a system failed or refused to
answer is a loss for it, and counted, so a system that fails on the hard prompts is not judged on
the easy ones alone.
"""

from __future__ import annotations

import re
from typing import Literal

import dpokd
from dpokd import Example, Outcome, Score
from dpokd.llm import LLMClient, LLMOptions, check_key, check_server
from dpokd.scoring import mean_ci

SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user question displayed below. You should choose the assistant that follows the user's instructions and "
    "answers the user's question better. Your evaluation should consider factors such as the helpfulness, relevance, "
    "accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by comparing the two "
    "responses and provide a short explanation. Avoid any position biases and ensure that the order in which the "
    "responses were presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After "
    'providing your explanation, output your final verdict by strictly following this format: "[[A]]" if assistant '
    'A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
USER_TEMPLATE = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]"
)
FLOATING_ALIASES = {"gpt-4", "gpt-4-turbo", "gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "claude-3-opus", "gemini-pro",
                    "gemini-1.0-pro", "gemini-1.5-pro"}
_VERDICT = re.compile(r"\[\[([ABC])\]\]")


def parse_verdict(text: str) -> str | None:
    """The last ``[[A]]``/``[[B]]``/``[[C]]`` in the text, or None."""
    found = _VERDICT.findall(text or "")
    return found[-1] if found else None


class PairwiseJudge(dpokd.Judge):
    """Win rate of each system against ``baseline``, judged by an LLM in both orders."""

    name = "llm-pairwise"

    class Options(LLMOptions):
        model: str = dpokd.Field("gpt-5.5-2026-04-23", description="the judge model (any litellm model string); "
                                 "a dated snapshot, so the judge does not change under a finished run")
        system_prompt: str | None = dpokd.Field(SYSTEM_PROMPT, description="the judge's instructions")
        max_tokens: int | None = dpokd.Field(1024, ge=1, description="most tokens per verdict")
        baseline: str = dpokd.Field("student@base", description="the system every other system is compared with")
        limit: int | None = dpokd.Field(None, ge=1, description="judge only the first N eval prompts")
        failed: Literal["lose", "skip"] = dpokd.Field(
            "lose", description="an answer that failed or was refused: `lose` counts it as a loss for its system "
            "(a tie where both failed), `skip` leaves the prompt out of the win rate")

    def __init__(self, options=None, context=None):
        super().__init__(options, context)
        self.client = LLMClient(self.options, self.context, field="judges.llm-pairwise")

    def preflight(self) -> None:
        check_key(self.options, "judges.llm-pairwise", self.context.offline)
        check_server(self.options, "judges.llm-pairwise", self.context.offline)
        model = self.options.model.split("/", 1)[-1]
        if model in FLOATING_ALIASES:
            self.context.log(f"[yellow]warning:[/] judge model {self.options.model!r} is a floating alias; its results "
                             "may drift as the provider updates it (pin a dated version to compare runs)")

    def systems_named(self) -> dict[str, str]:
        return {"baseline": self.options.baseline}

    def evaluate(self, systems: dict[str, dpokd.System], task: dpokd.Task) -> list[Score | Outcome]:
        o = self.options
        if o.baseline not in systems:
            raise dpokd.ConfigError(f"judges: llm-pairwise.baseline {o.baseline!r} is not a system ({', '.join(systems)})")
        examples = task.examples("eval")[: o.limit]
        answers = {name: system.answer(examples) for name, system in systems.items()}
        base = answers[o.baseline]
        scores = []
        for name in systems:
            if name == o.baseline:
                continue
            scores += self._compare(name, examples, answers[name], base)
        return scores

    def _compare(self, name: str, examples: list[Example], ours, base) -> list[Score | Outcome]:
        o = self.options
        items = [(e, a.text, b.text) for e, a, b in zip(examples, ours, base) if a.ok and b.ok]
        prompts, keys = [], []
        for e, a, b in items:
            question = e.prompt if not e.input or e.input in e.prompt else f"{e.prompt}\n\n{e.input}"
            prompts += [USER_TEMPLATE.format(question=question, a=a, b=b), USER_TEMPLATE.format(question=question, a=b, b=a)]
            keys += [Example(id=f"{e.id}:{name}:AB", prompt=""), Example(id=f"{e.id}:{name}:BA", prompt="")]
        verdicts = self.client.complete(keys, prompts, label=f"judge {name} vs {o.baseline}",
                                        validate=lambda t: None if parse_verdict(t) else "no [[A]]/[[B]]/[[C]] verdict")
        outcomes = [self._outcome(name, e, a, b, verdicts[2 * i], verdicts[2 * i + 1]) for i, (e, a, b) in enumerate(items)]
        outcomes += [self._failed(name, e, a, b) for e, a, b in zip(examples, ours, base) if not (a.ok and b.ok)]
        details = {"judge_model": sorted({v.model for v in verdicts if v.model}), "baseline": o.baseline}
        failed = sum(not a.ok for a in ours)
        return [*outcomes, *self._scores(name, outcomes, failed, items, details)]

    def _scores(self, name: str, outcomes: list[Outcome], failed: int, items, details) -> list[Score]:
        """The win rate over the verdicts (None where there is none), its counts and the answers' lengths."""
        values = [x.value for x in outcomes if x.value is not None]
        judged = [x for x in outcomes if x.value is not None and x.label != "failed"]
        n = len(values)
        common = dict(judge=self.name, system=name, n=n, details=details)
        counts = dict(judge=self.name, system=name, details=details)
        return [
            Score(metric="win_rate", value=sum(values) / n if n else None, ci=mean_ci(values), **common),
            Score(metric="wins", value=float(sum(x == 1.0 for x in values)), **counts),
            Score(metric="ties", value=float(sum(x == 0.5 for x in values)), **counts),
            Score(metric="losses", value=float(sum(x == 0.0 for x in values)), higher_is_better=False, **counts),
            Score(metric="failed_answers", value=float(failed), higher_is_better=False, **counts),
            Score(metric="consistency", value=sum(x.label != "disagree" for x in judged) / len(judged) if judged else None,
                  n=len(judged), **counts),
            Score(metric="answer_chars", value=sum(len(a) for _, a, _ in items) / len(items) if items else None,
                  higher_is_better=False, n=len(items), **counts),
            Score(metric="baseline_chars", value=sum(len(b) for _, _, b in items) / len(items) if items else None,
                  higher_is_better=False, n=len(items), **counts),
        ]

    def _failed(self, name: str, example: Example, ours, base) -> Outcome:
        """A prompt one side failed or refused to answer: a loss for that side, a tie where both did
        (no verdict at all with ``failed = "skip"``)."""
        value = 0.5 if not (ours.ok or base.ok) else 0.0 if not ours.ok else 1.0
        if self.options.failed == "skip":
            value = None
        who = " and ".join(n for n, a in ((name, ours), (self.options.baseline, base)) if not a.ok)
        why = "; ".join(f"{n}: {a.error}" for n, a in ((name, ours), (self.options.baseline, base)) if not a.ok)
        return Outcome(system=name, example_id=example.id, judge=self.name, metric="win_rate", value=value,
                       label="failed", detail=f"{who} gave no answer ({why})", answer=ours.text,
                       against=self.options.baseline, against_answer=base.text)

    def _outcome(self, name: str, example: Example, ours: str, base: str, first, second) -> Outcome:
        """One example's verdict from both orders: 1 where ours wins in both, 0 where the baseline
        does, 0.5 for a tie or where the orders disagree (labelled so); None without both verdicts."""
        words = "\n\n".join(f"[{order}]\n{v.text if v.ok else v.error}" for order, v in
                             (("ours as A", first), ("ours as B", second)))
        common = dict(system=name, example_id=example.id, judge=self.name, metric="win_rate", answer=ours,
                      against=self.options.baseline, against_answer=base, detail=words)
        if not (first.ok and second.ok):
            return Outcome(value=None, **common)
        # Order 1: ours is A. Order 2: ours is B. Map both to "ours", "base" or "tie".
        r1 = {"A": "ours", "B": "base", "C": "tie"}[parse_verdict(first.text)]
        r2 = {"A": "base", "B": "ours", "C": "tie"}[parse_verdict(second.text)]
        if r1 != r2:
            return Outcome(value=0.5, label="disagree", **common)
        return Outcome(value={"ours": 1.0, "base": 0.0, "tie": 0.5}[r1], label=r1, **common)


@dpokd.hookimpl
def register_judges(register):
    register(PairwiseJudge)
