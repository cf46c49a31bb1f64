"""Stable record ids: the dataset's own where it has them, else a hash of the prompt.

Records join by id, never by position, so an id must not depend on the row's place in the file,
on ``limit`` or on the split, and must be unique.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from ..errors import ConfigError


def normalise_id(value: Any) -> str | None:
    """An id as text, or ``None`` where it cannot be one; CSV readers turn whole-number columns with
    gaps into floats, so ``7.0`` is ``"7"``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else None
    if isinstance(value, (int, str)) and str(value).strip():
        return str(value)
    return None


def prompt_id(prompt: Any) -> str:
    """An id for a record that has none: a hash of its prompt (text, or chat messages as canonical JSON)."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class UniqueIds:
    """Hands out each row's id, refusing one that is not text or a whole number, or that repeats.

    ``column`` holds the ids; without it, an id is the hash of the prompt the caller passes.
    ``option`` is the spec option that chose the column, named in errors.
    """

    def __init__(self, dataset: str, column: str | None = None, option: str | None = None):
        self.dataset, self.column, self.option = dataset, column, option
        self._seen: dict[str, int] = {}

    def __call__(self, row: Mapping[str, Any], number: int, prompt: Any = None) -> str:
        """The id of ``row``, the ``number``-th of the dataset (counted from 1, for messages)."""
        where = f"{self.option}: " if self.option else ""
        if self.column is None:
            if prompt is None:
                raise ValueError("without an id column, pass the row's prompt: its hash is the id")
            rid = prompt_id(prompt)
        else:
            rid = normalise_id(row[self.column])
            if rid is None:
                raise ConfigError(f"{where}row {number} of {self.dataset} has id {row[self.column]!r} in column "
                                  f"{self.column!r}; ids must be text or whole numbers")
        if rid in self._seen:
            what = f"id {rid!r} is" if self.column else f"the same prompt (id {rid!r}) is"
            raise ConfigError(f"{where}{what} in rows {self._seen[rid]} and {number} of {self.dataset}; "
                              "ids must be unique")
        self._seen[rid] = number
        return rid
