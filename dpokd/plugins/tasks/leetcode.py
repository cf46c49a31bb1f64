"""``leetcode-summary`` and ``leetcode-codegen``: the reference experiment's two tasks.

2,360 Python LeetCode problems with solutions (``greengerong/leetcode`` on the HF hub, or a local
.jsonl/.parquet/.csv with the same columns), loaded through ``datasets`` either way.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import dpokd
from dpokd import CODEGEN_TEMPLATE, SUMMARY_TEMPLATE, Example

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
        revision: str | None = dpokd.Field(None, description="hub dataset revision (branch, tag or commit) to pin the "
                                           "data to; recorded in the run's manifest; hub datasets only")
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

        @dpokd.field_validator("revision")
        @classmethod
        def _hub_only(cls, value: str | None, info) -> str | None:
            dataset = info.data.get("dataset", "")
            if value is not None and Path(dataset).suffix.lower() in LOCAL_SUFFIXES:
                raise ValueError(f"applies to a hub dataset only; {dataset} is a local file")
            return value

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
        data = self._dataset()
        missing = [c for c in (o.id_column, o.problem_column, o.solution_column) if c not in data.column_names]
        if missing:
            raise dpokd.ConfigError(f"task: dataset {o.dataset!r} has no column {missing[0]!r} (columns: "
                                    f"{', '.join(map(str, data.column_names))}); set task.{_option_for(o, missing[0])}")
        if len(data) == 0:
            raise dpokd.ConfigError(f"task.dataset: {o.dataset} has no rows")
        rows, self.dropped, seen = [], 0, {}
        for n, row in enumerate(data, 1):
            pid = _problem_id(row[o.id_column])
            if pid is None:
                raise dpokd.ConfigError(f"task.id_column: row {n} of {o.dataset} has id {row[o.id_column]!r} in column "
                                        f"{o.id_column!r}; ids must be text or whole numbers")
            if pid in seen:
                raise dpokd.ConfigError(f"task.id_column: id {pid!r} is in rows {seen[pid]} and {n} of {o.dataset}; "
                                        "ids must be unique")
            seen[pid] = n
            problem = _text(row[o.problem_column], "problem_column", o, n)
            code = strip_fence(_text(row[o.solution_column], "solution_column", o, n))
            if not problem.strip() or not code.strip():
                self.dropped += 1
                continue
            rows.append({"id": pid, "problem": problem.strip(), "code": code})
            if o.limit and len(rows) >= o.limit:
                break
        if self.dropped:
            self.context.log(f"task: dropped {self.dropped} problem(s) with an empty statement or solution")
        return rows

    def _dataset(self):
        o = self.options
        suffix = Path(o.dataset).suffix.lower()
        local = suffix in LOCAL_SUFFIXES
        if local:
            path = Path(o.dataset)
            if not path.is_file():
                raise dpokd.ConfigError(f"task.dataset: no such file {o.dataset}")
            if path.stat().st_size == 0:
                raise dpokd.ConfigError(f"task.dataset: {o.dataset} is empty; expected one problem per row with "
                                        f"the columns {o.id_column}, {o.problem_column} and {o.solution_column}")
        try:
            from datasets import load_dataset

            if local:
                return load_dataset(LOCAL_SUFFIXES[suffix], data_files=o.dataset, split="train")
            return load_dataset(o.dataset, split=o.split, revision=o.revision)
        except Exception as exc:
            if local and "corresponds to no data" in str(exc):  # datasets' words for a file of headers alone
                raise dpokd.ConfigError(f"task.dataset: {o.dataset} has no rows") from None
            if local:
                raise dpokd.ConfigError(f"task.dataset: cannot read {o.dataset} as {suffix[1:]} ({_reason(exc)}); "
                                        "fix the file, or save it again as .jsonl, .parquet or .csv") from None
            raise dpokd.ConfigError(
                f"task.dataset: cannot load {o.dataset!r} ({_reason(exc)}). "
                "If the hub cannot be reached and it is not in the local HF cache, download it elsewhere and point "
                'the spec at the file: dataset = "data/leetcode.jsonl" (.jsonl, .parquet or .csv)') from None

    def examples(self, split: str) -> list[Example]:
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        o = self.options
        want_eval = split == "eval"
        return [self._example(r) for r in self.rows() if in_eval(r["id"], self.seed, o.eval_fraction) == want_eval]

    def _example(self, row: dict) -> Example:
        raise NotImplementedError


def _problem_id(value) -> str | None:
    """A row's id as text; CSV readers turn whole-number columns with gaps into floats."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else None
    if isinstance(value, (int, str)) and str(value).strip():
        return str(value)
    return None


def _text(value, option: str, options, row: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        column = getattr(options, option)
        raise dpokd.ConfigError(f"task.{option}: column {column!r} of {options.dataset} holds {type(value).__name__} "
                                f"values (row {row}: {str(value)[:60]!r}), expected text; point task.{option} at the "
                                "column that holds it")
    return value


def _reason(exc: BaseException) -> str:
    """The most specific words in an exception chain (``datasets`` wraps the reader's error in its own)."""
    reasons = []
    while exc is not None and len(reasons) < 10:
        text = str(exc).strip()
        reasons.append(f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    return reasons[1] if len(reasons) > 1 and "occurred while generating" in reasons[0] else reasons[0]


def _check_template(template: str | None, field: str) -> str | None:
    """A template fills ``{field}`` alone; anything else would fail on the first example, after validate."""
    if template is not None:
        try:
            template.format(**{field: "x"})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"not a template with the one field {{{field}}} ({type(exc).__name__}: {exc}); "
                             f"got {template!r}") from None
    return template


def _option_for(options, column: str) -> str:
    return next(name for name in ("id_column", "problem_column", "solution_column") if getattr(options, name) == column)


class LeetCodeSummary(_LeetCode):
    """Summarize a LeetCode solution. The dataset has no summaries: an LLM teacher writes them."""

    name = "leetcode-summary"

    class Options(_LeetCode.Options):
        @dpokd.field_validator("template")
        @classmethod
        def _template_fields(cls, v: str | None) -> str | None:
            return _check_template(v, "code")

    def _example(self, row: dict) -> Example:
        template = self.options.template or SUMMARY_TEMPLATE
        return Example(id=f"leetcode/{row['id']}", prompt=template.format(code=row["code"]), input=row["code"],
                       reference=None)


class LeetCodeCodegen(_LeetCode):
    """Solve a LeetCode problem from its statement; the dataset's solution is the reference."""

    name = "leetcode-codegen"

    class Options(_LeetCode.Options):
        @dpokd.field_validator("template")
        @classmethod
        def _template_fields(cls, v: str | None) -> str | None:
            return _check_template(v, "problem")

    def _example(self, row: dict) -> Example:
        template = self.options.template or CODEGEN_TEMPLATE
        return Example(id=f"leetcode/{row['id']}", prompt=template.format(problem=row["problem"]),
                       input=row["problem"], reference=row["code"])


@dpokd.hookimpl
def register_tasks(register):
    register(LeetCodeSummary)
    register(LeetCodeCodegen)
