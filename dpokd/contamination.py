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


def _texts(example: Example) -> list[str]:
    # The task input, not the prompt: a shared prompt template is not contamination.
    return [t for t in (example.input or example.prompt, example.reference) if t]


def overlapping(train: list[Example], evaluation: list[Example]) -> list[str]:
    """Ids of eval examples sharing a 13-gram (or their whole normalized text) with a train input or reference."""
    seen: set[tuple[str, ...]] = set()
    whole: set[str] = set()
    for example in train:
        for text in _texts(example):
            seen |= _grams(text)
            whole.add(" ".join(_words(text)))
    whole.discard("")
    hits = []
    for example in evaluation:
        if any(_grams(t) & seen or " ".join(_words(t)) in whole for t in _texts(example)):
            hits.append(example.id)
    return hits
