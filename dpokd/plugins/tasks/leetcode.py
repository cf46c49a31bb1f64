"""``leetcode-summary`` and ``leetcode-codegen``: the reference experiment's two tasks.

2,360 Python LeetCode problems with solutions (``greengerong/leetcode`` on the HF hub, or a local
.jsonl/.parquet/.csv with the same columns), loaded through ``datasets`` either way.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import dpokd
from dpokd.prompts import CODEGEN_TEMPLATE, SUMMARY_TEMPLATE
from dpokd.records import Example

LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_+-]*\s*\n(.*?)\n?```\s*$", re.S)


def strip_fence(code: str) -> str:
    """The code inside a markdown fence (the dataset's ``python`` column is fenced)."""
    match = _FENCE.match(code or "")
    return (match.group(1) if match else (code or "")).strip("\n")


def in_eval(problem_id: str, seed: int, fraction: float) -> bool:
    """Split membership from a hash of the id: stable whatever ``limit`` is, deterministic per seed."""
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class _LeetCode(dpokd.Task):
    class Options(dpokd.Options):
        dataset: str = dpokd.Field("greengerong/leetcode", description="HF hub id, or a local .jsonl/.parquet/.csv file")
        split: str = dpokd.Field("train", description="dataset split to read")
        id_column: str = dpokd.Field("id", description="column with a unique problem id")
        problem_column: str = dpokd.Field("content", description="column with the problem statement")
        solution_column: str = dpokd.Field("python", description="column with the Python solution (fenced or not)")
        template: str | None = dpokd.Field(None, description="prompt template; default: the reference experiment's")
        limit: int | None = dpokd.Field(None, ge=1, description="use only the first N problems")
        eval_fraction: float = dpokd.Field(0.1, gt=0, lt=1, description="share of problems held out for evaluation")
        seed: int | None = dpokd.Field(None, description="seed of the train/eval split; default: [run] seed")

        @dpokd.field_validator("dataset")
        @classmethod
        def _resolve_local(cls, value: str, info) -> str:
            # A local file is relative to the spec; a hub id is left as written.
            return str(dpokd.spec_path(value, info)) if Path(value).suffix.lower() in LOCAL_SUFFIXES else value

    def __init__(self, options=None, context=None):
        super().__init__(options, context)
        self._rows: list[dict] | None = None
        self.dropped = 0

    def preflight(self) -> None:
        self.rows()

    def rows(self) -> list[dict]:
        if self._rows is None:
            self._rows = self._load()
        return self._rows

    def _load(self) -> list[dict]:
        o = self.options
        try:
            from datasets import load_dataset

            suffix = Path(o.dataset).suffix.lower()
            if suffix in LOCAL_SUFFIXES:
                if not Path(o.dataset).exists():
                    raise dpokd.ConfigError(f"task.dataset: no such file {o.dataset}")
                data = load_dataset(LOCAL_SUFFIXES[suffix], data_files=o.dataset, split="train")
            else:
                data = load_dataset(o.dataset, split=o.split)
        except dpokd.DpokdError:
            raise
        except Exception as exc:
            raise dpokd.ConfigError(
                f"task.dataset: cannot load {o.dataset!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
                "If the hub cannot be reached and it is not in the local HF cache, download it elsewhere and point "
                'the spec at the file: dataset = "data/leetcode.jsonl" (.jsonl, .parquet or .csv)') from None
        missing = [c for c in (o.id_column, o.problem_column, o.solution_column) if c not in data.column_names]
        if missing:
            raise dpokd.ConfigError(f"task: dataset {o.dataset!r} has no column {missing[0]!r} (columns: "
                                    f"{', '.join(data.column_names)}); set task.{_option_for(o, missing[0])}")
        rows, self.dropped = [], 0
        for row in data:
            problem = (row[o.problem_column] or "").strip()
            code = strip_fence(row[o.solution_column] or "")
            if not problem or not code.strip():
                self.dropped += 1
                continue
            rows.append({"id": str(row[o.id_column]), "problem": problem, "code": code})
            if o.limit and len(rows) >= o.limit:
                break
        if self.dropped:
            self.context.log(f"task: dropped {self.dropped} problem(s) with an empty statement or solution")
        return rows

    def examples(self, split: str) -> list[Example]:
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        o = self.options
        want_eval = split == "eval"
        return [self._example(r) for r in self.rows() if in_eval(r["id"], self.seed, o.eval_fraction) == want_eval]

    def _example(self, row: dict) -> Example:
        raise NotImplementedError


def _option_for(options, column: str) -> str:
    return next(name for name in ("id_column", "problem_column", "solution_column") if getattr(options, name) == column)


class LeetCodeSummary(_LeetCode):
    """Summarize a LeetCode solution. The dataset has no summaries: an LLM teacher writes them."""

    name = "leetcode-summary"

    def _example(self, row: dict) -> Example:
        template = self.options.template or SUMMARY_TEMPLATE
        return Example(id=f"leetcode/{row['id']}", prompt=template.format(code=row["code"]), input=row["code"],
                       reference=None)


class LeetCodeCodegen(_LeetCode):
    """Solve a LeetCode problem from its statement; the dataset's solution is the reference."""

    name = "leetcode-codegen"

    def _example(self, row: dict) -> Example:
        template = self.options.template or CODEGEN_TEMPLATE
        return Example(id=f"leetcode/{row['id']}", prompt=template.format(problem=row["problem"]),
                       input=row["problem"], reference=row["code"])


@dpokd.hookimpl
def register_tasks(register):
    register(LeetCodeSummary)
    register(LeetCodeCodegen)
