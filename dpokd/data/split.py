"""The train/eval split: membership from a seeded hash of each record's id."""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

SPLITS = ("train", "eval")


def in_eval(record_id: str, seed: int, fraction: float) -> bool:
    """Whether ``record_id`` is held out for evaluation.

    A hash of the id rather than a shuffle of positions: a record stays on its side whatever
    ``limit`` is, or whatever else the dataset holds, and the split is deterministic per seed.
    """
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_rows(rows: Iterable[Mapping[str, Any]], split: str, *, seed: int, fraction: float,
               key: str = "id") -> list[Mapping[str, Any]]:
    """The rows of ``split`` (``"train"`` or ``"eval"``), in their order, by ``in_eval`` on ``row[key]``."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    want_eval = split == "eval"
    return [row for row in rows if in_eval(row[key], seed, fraction) == want_eval]
