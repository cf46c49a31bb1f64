"""The plain records that flow between stages and are written to disk.

Each carries ``schema_version``: a file written by a newer dpokd is refused with a clear
message instead of being misread.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from .errors import DpokdError

SCHEMA_VERSION = 1
# Finish reasons of an answer cut off at its token limit: litellm maps every provider's own word
# (Gemini's MAX_TOKENS, Anthropic's max_tokens) to "length"; the others are read as written.
TRUNCATED_FINISH_REASONS = frozenset({"length", "max_tokens", "MAX_TOKENS"})


class Record(BaseModel):
    """Base of every on-disk record."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION

    @model_validator(mode="before")
    @classmethod
    def _check_version(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise DpokdError(
                f"this {cls.__name__} was written by a newer dpokd (schema "
                f"{data['schema_version']}, this one reads {SCHEMA_VERSION}); upgrade dpokd"
            )
        return data


def conversation_text(messages: list[dict[str, str]]) -> str:
    """A conversation as one text, for what reads a prompt as text (a base model, an LLM judge's question)."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


class Example(Record):
    """One prompt of a task; code tasks carry hidden tests run by the sandbox."""

    id: str
    prompt: str
    messages: list[dict[str, str]] | None = Field(None, description="the prompt as chat messages (TRL's "
                                                  "conversational format) where the record gave them; `prompt` is "
                                                  "then the conversation as one text")
    reference: str | None = None
    input: str | None = Field(None, description="the task input a judge should see (e.g. the code to summarize)")
    tests: str | None = Field(None, description="Python test code defining check(candidate)")
    entry_point: str | None = None
    code_prompt: str | None = Field(None, description="the code prefix tests are appended to (HumanEval's prompt)")
    sample: int = Field(0, ge=0, description="index of a repeated sample of this prompt (pass@k); part of cache keys")
    temperature: float | None = Field(None, ge=0, description="a judge's sampling temperature, overriding the system's")
    meta: dict[str, Any] = Field(default_factory=dict)

    def samples(self, n: int, temperature: float | None = None) -> list["Example"]:
        """``n`` repeated samples of this prompt, each answered (and cached) on its own."""
        return [self.model_copy(update={"sample": j, "temperature": temperature}) for j in range(n)]


class Completion(Record):
    """An answer to one Example; ``ok`` is False for a failed answer, with ``error`` saying why."""

    example_id: str
    text: str = ""
    ok: bool = True
    error: str | None = None
    finish_reason: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = Field(0.0, description="None: the model has no known price")
    cached: bool = False

    @property
    def truncated(self) -> bool:
        """Cut off by the token limit: the answer may stop mid-sentence or mid-function. Derived from
        ``finish_reason``, so answers cached or written before this property existed read the same."""
        return self.finish_reason in TRUNCATED_FINISH_REASONS

    @classmethod
    def of(cls, example: Example, text: str, **fields: Any) -> "Completion":
        return cls(example_id=example.id, text=text, **fields)

    @classmethod
    def failed(cls, example: Example, error: str, **fields: Any) -> "Completion":
        return cls(example_id=example.id, ok=False, error=error, **fields)


class PreferencePair(Record):
    """One DPO pair in TRL's preference format, with where it came from: conversational (the prompt
    as messages, each answer as an assistant message) when the prompt was given as messages."""

    example_id: str
    prompt: str | list[dict[str, str]]
    chosen: str
    rejected: str
    iteration: int = 0
    previous: bool = Field(False, description="repeated from the previous iteration's pairs (run.mix_previous)")

    @model_validator(mode="before")
    @classmethod
    def _answers_as_text(cls, data: Any) -> Any:
        # A conversational pair's answers are one assistant message each; held here as their text.
        if isinstance(data, dict):
            for side in ("chosen", "rejected"):
                if isinstance(data.get(side), list) and len(data[side]) == 1 and isinstance(data[side][0], dict):
                    data = {**data, side: data[side][0].get("content")}
        return data

    @model_serializer(mode="wrap")
    def _only_marked(self, handler):
        # Only a repeated pair carries the key: a pairs file stays TRL's preference format, plain or
        # conversational as the prompt is.
        row = handler(self)
        if not self.previous:
            row.pop("previous", None)
        if isinstance(self.prompt, list):
            for side in ("chosen", "rejected"):
                row[side] = [{"role": "assistant", "content": row[side]}]
        return row

    @property
    def text_prompt(self) -> str:
        """The prompt as one text (a conversation's turns one after another)."""
        return self.prompt if isinstance(self.prompt, str) else conversation_text(self.prompt)


class Score(Record):
    """One metric of one system from one judge: what the leaderboard reads."""

    judge: str
    system: str
    metric: str
    value: float | None = Field(description="None where nothing was measured (no verdict, no data, no price)")
    ci: tuple[float, float] | None = None
    n: int | None = None
    higher_is_better: bool = True
    details: dict[str, Any] = Field(default_factory=dict)


class Outcome(Record):
    """One judged answer: what a judge found for one sample of one example of one system.

    Every judge's outcomes are written the same way (``eval/<judge>-<system>.jsonl``) and read by
    the leaderboard, the paired comparisons, the seed groups and the report without knowing which
    judge made them. A system's score on a metric is the mean over examples of each example's mean
    over its samples (for ``pass@1`` outcomes that is exactly the unbiased pass@1).
    """

    system: str
    example_id: str
    sample: int = Field(0, ge=0)
    judge: str
    metric: str
    value: bool | float | None = Field(description="True/False, or a number; None where the judge gave no verdict")
    label: str | None = Field(None, description="a short category: the sandbox's status, a pairwise verdict")
    detail: str = Field("", description="why: the sandbox's reason, the judge's own words")
    answer: str = Field("", description="the answer that was judged")
    against: str | None = Field(None, description="the system this answer was compared with (a pairwise baseline)")
    against_answer: str | None = None
    higher_is_better: bool = True

    @property
    def score(self) -> float | None:
        """The value as a number (True is 1.0); None where there was no verdict."""
        return None if self.value is None else float(self.value)
