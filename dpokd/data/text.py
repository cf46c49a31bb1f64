"""Cleaning a text column before it reaches a prompt or a reference."""

from __future__ import annotations

import re

_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_+-]*\s*\n(.*?)\n?```\s*$", re.S)


def strip_fence(code: str | None) -> str:
    """The code inside a markdown fence, or the text itself where it is not fenced.

    Datasets often store solutions fenced (LeetCode's ``python`` column is); a fenced reference
    would reach a model and a test runner with its backticks.
    """
    match = _FENCE.match(code or "")
    return (match.group(1) if match else (code or "")).strip("\n")
