"""Per-example outcomes of a finished run, read from its ``eval/`` folder.

Execution judges write one row per sample (``example_id``, ``sample``, ``status``, ``reason``,
``completion``); the pairwise judge one row per compared example (``example_id``, ``baseline``,
``verdict``, both answers). Records join by ``example_id``, never by position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from .evaluation import pass_at_k
from .runs import damaged, read_jsonl

AGAIN = "delete results.json and re-run the spec to evaluate again (answers come from the cache)"
PAIRWISE_VERDICTS = ("ours", "base", "tie")


def eval_path(run_dir: Path, judge: str, system: str) -> Path:
    """Where a judge's per-example rows for one system are (the judges write them under this name).

    System names come from specs: quoted, a name is one file name, and two names never share one.
    """
    return Path(run_dir) / "eval" / quote(f"{judge}-{system}.jsonl", safe="@+-_.,=")


def execution_rows(run_dir: Path, judge: str, system: str) -> list[dict[str, Any]] | None:
    """The judge's per-sample rows for ``system``, checked; None when the judge wrote none."""
    path = eval_path(run_dir, judge, system)
    if not path.exists():
        return None
    rows = read_jsonl(path, remedy=AGAIN)
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("example_id"), str) or not isinstance(row.get("status"), str):
            raise damaged(path, f"line {n} has no example_id or status", AGAIN)
    return rows


def pass_shares(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Each example's pass@1 estimate (passed samples / samples), in the order the judge scored them.

    Computed with the judge's own pass@k, so their mean is exactly the pass@1 in results.json.
    """
    counts: dict[str, list[int]] = {}
    for row in rows:
        seen = counts.setdefault(row["example_id"], [0, 0])
        seen[0] += 1
        seen[1] += row["status"] == "passed"
    return {i: pass_at_k(n, c, 1) for i, (n, c) in counts.items()}


def passed(share: float) -> bool:
    """One pass or fail per example: more than half of its samples passed (with one sample: it passed)."""
    return share > 0.5


def pairwise_rows(run_dir: Path, judge: str, system: str) -> list[dict[str, Any]] | None:
    """The pairwise judge's verdicts on ``system`` against its baseline, checked; None when it wrote none."""
    path = eval_path(run_dir, judge, system)
    if not path.exists():
        return None
    rows = read_jsonl(path, remedy=AGAIN)
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("example_id"), str) or row.get("verdict") not in (*PAIRWISE_VERDICTS, None):
            raise damaged(path, f"line {n} has no example_id or a verdict other than ours/base/tie/null", AGAIN)
    return rows
