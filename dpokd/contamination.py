"""Train/eval contamination: 13-gram overlap, as in the GPT-3 paper's analysis, plus exact matches."""

from __future__ import annotations

import re

from .records import Example

N = 13


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _grams(text: str) -> set[tuple[str, ...]]:
    words = _words(text)
    return {tuple(words[i : i + N]) for i in range(len(words) - N + 1)}


def _task_input(example: Example) -> str:
    """The task input, not the prompt: a shared prompt template is not contamination, and neither is a
    conversation's system prompt, which a dataset's records share as they would a template."""
    if example.input:
        return example.input
    if example.messages:
        return "\n".join(m["content"] for m in example.messages if m["role"] != "system")
    return example.prompt


def _texts(example: Example) -> list[str]:
    return [t for t in (_task_input(example), example.reference) if t]


def overlapping(train: list[Example], evaluation: list[Example]) -> list[str]:
    """Ids of eval examples that share a 13-gram with a train input or reference, or whose input is one.

    Only a text of at least 13 words can share a 13-gram. A shorter one counts only as an eval
    example's whole input: different questions often have the same short answer ("The answer is 4."),
    and that is not a leak of the question.
    """
    seen: set[tuple[str, ...]] = set()
    whole: set[str] = set()
    for example in train:
        for text in _texts(example):
            seen |= _grams(text)
            whole.add(" ".join(_words(text)))
    whole.discard("")
    hits = []
    for example in evaluation:
        task_input = " ".join(_words(_task_input(example)))
        if task_input in whole or any(_grams(t) & seen for t in _texts(example)):
            hits.append(example.id)
    return hits
