"""``match``: each answer checked against its example's reference answer, with no model and no sandbox.

For tasks whose answers can be checked by their text: a final number (GSM8K), a choice, a label, a
name. An optional ``extract`` pattern picks the answer out of a model's working first, so a chain
of reasoning is not compared with a bare reference. Every verdict says what was compared, so a
surprising score can be traced to the extraction or the normalisation behind it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Literal

import dpokd
from dpokd import Example, Outcome, Score

# A number as models write it: a sign, thousands separators, a decimal part, an exponent.
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_SHOWN = 90  # characters of each side shown in a verdict's detail, which stays near 200 in all


def _short(text: str) -> str:
    """The text as a verdict shows it: quoted, and cut so a long answer does not swamp the report."""
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…")


def _number(x: float) -> str:
    """A parsed number as the data wrote it: 1234, not 1234.0 or 1.234e+03."""
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else repr(x)


def parse_number(text: str) -> float | None:
    """The last number in the text (commas dropped, a trailing period ignored), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", "").rstrip("."))
    except ValueError:  # a lone "," or "." caught by the pattern's looser parts
        return None


def extract(pattern: re.Pattern, text: str) -> str | None:
    """The last match's group 1 where the pattern has a group, else the whole last match; None without one."""
    last = None
    for last in pattern.finditer(text):
        pass
    if last is None:
        return None
    return last.group(1) if pattern.groups else last.group(0)


class MatchJudge(dpokd.Judge):
    """Whether each answer matches the reference: equal, containing it, matching it as a pattern, or the same number."""

    name = "match"

    class Options(dpokd.Options):
        mode: Literal["exact", "contains", "regex", "numeric"] = dpokd.Field(
            "exact", description="`exact`: equal to the reference once both are normalised; `contains`: the "
            "reference appears in the answer; `regex`: the reference is a pattern found somewhere in the answer; "
            "`numeric`: the last number of each is the same within `tolerance` and `relative`")
        extract: str | None = dpokd.Field(
            None, description="a regular expression applied to the answer first: its last match's group 1 (or the "
            "whole match, without a group) is compared, e.g. `#### (.+)` for GSM8K or `(-?\\d[\\d,]*\\.?\\d*)` for "
            "the last number; ^ and $ match at every line; an answer it does not match fails")
        ignore_case: bool = dpokd.Field(True, description="compare without regard to case (`regex`: match ignoring case)")
        ignore_whitespace: bool = dpokd.Field(True, description="collapse runs of whitespace to one space and strip both ends")
        ignore_punctuation: bool = dpokd.Field(False, description="drop punctuation characters before comparing")
        tolerance: float = dpokd.Field(1e-6, ge=0, description="`numeric`: the absolute difference allowed")
        relative: float = dpokd.Field(0.0, ge=0, description="`numeric`: the difference allowed relative to the "
                                      "larger of the two magnitudes (either tolerance is enough)")
        limit: int | None = dpokd.Field(None, ge=1, description="judge only the first N eval examples")

        @dpokd.field_validator("extract")
        @classmethod
        def _compiles(cls, v: str | None) -> str | None:
            if v is not None:
                try:
                    re.compile(v)
                except re.error as exc:
                    raise ValueError(f"`extract` is not a regular expression: {exc}") from None
            return v

    def eval_examples(self, task: dpokd.Task) -> list[Example]:
        examples = task.examples("eval")[: self.options.limit]
        missing = [e.id for e in examples if not (e.reference or "").strip()]
        if missing:
            raise dpokd.ConfigError(
                f"judges: the `match` judge compares answers with reference answers, and {len(missing)} of "
                f"{len(examples)} eval examples of task {task.name!r} have none (first: {missing[0]}); use a task "
                "whose data carries references, or a judge that needs none (`llm-rubric`, `llm-pairwise`)")
        if self.options.mode == "regex":
            for e in examples:
                try:
                    re.compile(e.reference)
                except re.error as exc:
                    raise dpokd.ConfigError(f"judges: match.mode = \"regex\" reads references as regular expressions, "
                                            f"and example {e.id!r}'s is not one ({exc})") from None
        return examples

    def evaluate(self, systems: dict[str, dpokd.System], task: dpokd.Task) -> list[Score | Outcome]:
        examples = self.eval_examples(task)
        results: list[Score | Outcome] = []
        for name, system in systems.items():
            answers = system.answer(examples)
            for e, a in zip(examples, answers):
                value, label, detail = self.judge(a.text, e.reference) if a.ok else (False, "failed", f"no answer: {a.error}")
                results.append(Outcome(system=name, example_id=e.id, judge=self.name, metric="match", value=value,
                                       label=label, detail=detail, answer=a.text))
            lengths = [len(a.text) for a in answers if a.ok]
            results.append(Score(judge=self.name, system=name, metric="answer_chars", higher_is_better=False,
                                 value=sum(lengths) / len(lengths) if lengths else None, n=len(lengths)))
        return results

    def judge(self, answer: str, reference: str) -> tuple[bool, str, str]:
        """(verdict, label, why) for one answer."""
        o = self.options
        if o.extract is not None:
            found = extract(re.compile(o.extract, re.MULTILINE), answer)
            if found is None:
                return False, "not extracted", f"`extract` found nothing in {_short(answer)}"
            answer = found
        if o.mode == "numeric":
            return self._numeric(answer, reference)
        text = self.normalise(answer)
        if o.mode == "regex":
            ok = re.search(reference, text, re.IGNORECASE if o.ignore_case else 0) is not None
            why = f"{_short(text)} {'matches' if ok else 'does not match'} reference {_short(reference)}"
            return ok, "matched" if ok else "different", why
        ref = self.normalise(reference)
        ok = ref in text if o.mode == "contains" else text == ref
        verb = {("contains", True): "contains", ("contains", False): "does not contain",
                ("exact", True): "equals", ("exact", False): "differs from"}[(o.mode, ok)]
        return ok, "matched" if ok else "different", f"{_short(text)} {verb} reference {_short(ref)}"

    def _numeric(self, answer: str, reference: str) -> tuple[bool, str, str]:
        got, want = parse_number(answer), parse_number(reference)
        if got is None or want is None:
            side = "the answer" if got is None else "the reference"
            return False, "no number", f"no number in {side} ({_short(answer if got is None else reference)})"
        ok = math.isclose(got, want, rel_tol=self.options.relative, abs_tol=self.options.tolerance)
        why = f"{_number(got)} {'=' if ok else '≠'} reference {_number(want)} (from {_short(answer)})"
        return ok, "matched" if ok else "different", why

    def normalise(self, text: str) -> str:
        """The text as the options compare it: case-folded, punctuation dropped, whitespace collapsed."""
        o = self.options
        if o.ignore_case:
            text = text.casefold()
        if o.ignore_punctuation:
            text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
        if o.ignore_whitespace:
            text = " ".join(text.split())
        return text


@dpokd.hookimpl
def register_judges(register):
    register(MatchJudge)
