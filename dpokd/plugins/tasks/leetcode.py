"""``leetcode-summary`` and ``leetcode-codegen``: the reference experiment's two tasks.

2,360 Python LeetCode problems with solutions (``greengerong/leetcode`` on the HF hub, or a local
.jsonl/.parquet/.csv with the same columns), loaded through ``datasets`` either way.
"""

from __future__ import annotations

import dpokd
from dpokd import Example
from dpokd.data import FieldSpec, UniqueIds, check_template, is_local, load_rows, render, split_rows, strip_fence

from .templates import CODEGEN_TEMPLATE, SUMMARY_TEMPLATE


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
            return str(dpokd.spec_path(value, info)) if is_local(value) else value

        @dpokd.field_validator("revision")
        @classmethod
        def _hub_only(cls, value: str | None, info) -> str | None:
            dataset = info.data.get("dataset", "")
            if value is not None and is_local(dataset):
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

    def _fields(self) -> FieldSpec:
        o = self.options
        return FieldSpec({"id": o.id_column, "problem": o.problem_column, "code": o.solution_column},
                         {"id": "task.id_column", "problem": "task.problem_column", "code": "task.solution_column"})

    def _load(self) -> list[dict]:
        o, fields = self.options, self._fields()
        data = load_rows(o.dataset, fields, split=o.split, revision=o.revision, suggest="data/leetcode.jsonl")
        ids, rows, self.dropped = UniqueIds(o.dataset, o.id_column, "task.id_column"), [], 0
        for n, row in enumerate(data, 1):
            pid = ids(row, n)
            problem = fields.text(row, "problem", o.dataset, n)
            code = strip_fence(fields.text(row, "code", o.dataset, n))
            if not problem.strip() or not code.strip():
                self.dropped += 1
                continue
            rows.append({"id": pid, "problem": problem.strip(), "code": code})
            if o.limit and len(rows) >= o.limit:
                break
        if self.dropped:
            self.context.log(f"task: dropped {self.dropped} problem(s) with an empty statement or solution")
        return rows

    def examples(self, split: str) -> list[Example]:
        rows = split_rows(self.rows(), split, seed=self.seed, fraction=self.options.eval_fraction)
        return [self._example(r) for r in rows]

    def _example(self, row: dict) -> Example:
        raise NotImplementedError


class LeetCodeSummary(_LeetCode):
    """Summarize a LeetCode solution. The dataset has no summaries: an LLM teacher writes them."""

    name = "leetcode-summary"

    class Options(_LeetCode.Options):
        @dpokd.field_validator("template")
        @classmethod
        def _template_fields(cls, v: str | None) -> str | None:
            return check_template(v, ["code"])

    def _example(self, row: dict) -> Example:
        template = self.options.template or SUMMARY_TEMPLATE
        return Example(id=f"leetcode/{row['id']}", prompt=render(template, {"code": row["code"]}), input=row["code"],
                       reference=None)


class LeetCodeCodegen(_LeetCode):
    """Solve a LeetCode problem from its statement; the dataset's solution is the reference."""

    name = "leetcode-codegen"

    class Options(_LeetCode.Options):
        @dpokd.field_validator("template")
        @classmethod
        def _template_fields(cls, v: str | None) -> str | None:
            return check_template(v, ["problem"])

    def _example(self, row: dict) -> Example:
        template = self.options.template or CODEGEN_TEMPLATE
        return Example(id=f"leetcode/{row['id']}", prompt=render(template, {"problem": row["problem"]}),
                       input=row["problem"], reference=row["code"])


@dpokd.hookimpl
def register_tasks(register):
    register(LeetCodeSummary)
    register(LeetCodeCodegen)
