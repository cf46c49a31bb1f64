"""What both generation paths of a student (in-process transformers, a vLLM server) do to an answer."""

from __future__ import annotations


def clean_generation(text: str, prompt: str, stop: list[str]) -> tuple[str, bool]:
    """Strip an echoed prompt and cut at the first stop string."""
    if prompt.strip() and text.lstrip().startswith(prompt.strip()):
        text = text.lstrip()[len(prompt.strip()) :]
    cuts = [text.index(s) for s in stop if s and s in text]
    if cuts:
        return text[: min(cuts)], True
    return text, False
