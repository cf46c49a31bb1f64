"""``prompts``: distil on your own prompts, from a local file or a hub dataset.

A record's fields, by convention: ``prompt`` (text, or chat messages in TRL's conversational
format), and optionally ``id``, ``reference`` (the expected answer), ``system``, ``tests`` and
``entry_point``. ``fields`` maps other column names onto these (as inspect_ai's ``FieldSpec``
does); ``template``, in Python's format syntax, builds the prompt from any of the row's columns.
MBPP's rows (``text``, ``code``, ``test_list``) work with ``fields = { prompt = "text",
reference = "code", tests = "test_list" }``: the assertions become the tests, and the entry point
is the function the reference code defines.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dpokd
from dpokd import ConfigError, Example
from dpokd.data import (FieldSpec, UniqueIds, check_template, conversation_text, in_eval, is_local, load_rows,
                        render)

FIELDS = ("id", "prompt", "reference", "system", "tests", "entry_point")
ROLES = ("system", "user", "assistant")
_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.M)


class PromptsTask(dpokd.Task):
    """Your own prompts, from a JSONL, JSON, CSV or Parquet file or a hub dataset."""

    name = "prompts"

    class Options(dpokd.Options):
        dataset: str = dpokd.Field(description="a local .jsonl/.json/.csv/.parquet file (relative to the spec) or "
                                   "a hub dataset id")
        split: str = dpokd.Field("train", description="the hub dataset's split to read")
        revision: str | None = dpokd.Field(None, description="the hub dataset's revision (branch, tag or commit)")
        eval_dataset: str | None = dpokd.Field(None, description="the eval prompts: a local file of the same "
                                               "format, or another split of the hub dataset; default: hold out "
                                               "`eval_fraction` of `dataset`")
        eval_fraction: float = dpokd.Field(0.1, gt=0, lt=1, description="share of the records held out for "
                                           "evaluation, by a seeded hash of each id (without `eval_dataset`)")
        seed: int | None = dpokd.Field(None, description="seed of the train/eval split; default: [run] seed")
        limit: int | None = dpokd.Field(None, ge=1, description="use only the first N records of each file")
        fields: dict[str, str] = dpokd.Field(default_factory=dict, description="record field -> the column that "
                                             f"holds it, for columns not named {', '.join(FIELDS)}")
        template: str | None = dpokd.Field(None, description="builds each prompt from the row's columns, in "
                                           "Python's format syntax: \"Question: {question}\\nAnswer:\"")

        @dpokd.field_validator("dataset", "eval_dataset")
        @classmethod
        def _resolve_local(cls, value: str | None, info) -> str | None:
            return str(dpokd.spec_path(value, info)) if value is not None and is_local(value) else value

        @dpokd.field_validator("fields")
        @classmethod
        def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
            unknown = sorted(set(value) - set(FIELDS))
            if unknown:
                raise ValueError(f"no record field {', '.join(map(repr, unknown))}; the fields are {', '.join(FIELDS)}")
            return value

    def __init__(self, options=None, context=None):
        super().__init__(options, context)
        self._records: dict[str, list[Example]] = {}

    def preflight(self) -> None:
        for split in ("train", "eval"):  # bad data stops the run here, before anything is paid for
            self.examples(split)

    def examples(self, split: str) -> list[Example]:
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        if split not in self._records:
            o = self.options
            if o.eval_dataset is None:
                every = self._read(o.dataset, o.split, "task.dataset")
                held = [in_eval(e.id, self.seed, o.eval_fraction) for e in every]
                self._records = {"train": [e for e, h in zip(every, held) if not h],
                                 "eval": [e for e, h in zip(every, held) if h]}
            else:
                local = is_local(o.eval_dataset)
                self._records = {"train": self._read(o.dataset, o.split, "task.dataset"),
                                 "eval": self._read(o.eval_dataset if local else o.dataset,
                                                    o.split if local else o.eval_dataset, "task.eval_dataset")}
        return self._records[split]

    def _read(self, dataset: str, split: str, option: str) -> list[Example]:
        o = self.options
        columns = {name: o.fields.get(name, name) for name in FIELDS}
        data = load_rows(dataset, None, split=split, revision=o.revision if not is_local(dataset) else None,
                         option=option, suggest="data/prompts.jsonl")
        present = {name: column for name, column in columns.items() if column in data.column_names}
        required = [] if o.template else ["prompt"]
        missing = [f for f in required + sorted(o.fields) if f not in present]
        if missing:
            FieldSpec({f: columns[f] for f in missing}, {f: f"task.fields.{f}" for f in missing}).check(
                data.column_names, dataset)
        if o.template:
            try:
                check_template(o.template, data.column_names)
            except ValueError as exc:
                raise ConfigError(f"task.template: {exc} (the columns of {dataset})") from None
        reader = _Rows(dataset, present, o.template)
        ids = UniqueIds(dataset, present.get("id"), "task.fields.id" if "id" in o.fields else option)
        out = []
        for n, row in enumerate(data, 1):
            out.append(reader.example(row, n, ids))
            if o.limit and len(out) >= o.limit:
                break
        return out


class _Rows:
    """Turns one file's rows into examples, naming the file and the line of anything wrong."""

    def __init__(self, dataset: str, columns: dict[str, str], template: str | None):
        self.dataset, self.columns, self.template = dataset, columns, template
        self.unit = "line" if Path(dataset).suffix.lower() == ".jsonl" else "row"

    def fail(self, n: int, problem: str) -> ConfigError:
        return ConfigError(f"task.dataset: {self.unit} {n} of {self.dataset}: {problem}")

    def value(self, row: dict[str, Any], name: str) -> Any:
        column = self.columns.get(name)
        return None if column is None else row.get(column)

    def example(self, row: dict[str, Any], n: int, ids: UniqueIds) -> Example:
        prompt = render(self.template, row) if self.template else self.value(row, "prompt")
        system = self._text(row, "system", n)
        messages = self._messages(prompt, system, n)
        text = conversation_text(messages) if messages else prompt
        reference = self._text(row, "reference", n)
        tests, entry = self._tests(row, reference, n)
        return Example(id=ids(row, n, messages or text), prompt=text, messages=messages, reference=reference,
                       tests=tests, entry_point=entry)

    def _text(self, row: dict[str, Any], name: str, n: int) -> str | None:
        value = self.value(row, name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a numeric answer
        raise self.fail(n, f"{name} is a {type(value).__name__}, not text")

    def _messages(self, prompt: Any, system: str | None, n: int) -> list[dict[str, str]] | None:
        """The prompt as chat messages where it is a list or the record has a system prompt; None for plain text."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise self.fail(n, "the prompt is empty")
            return [{"role": "system", "content": system}, {"role": "user", "content": prompt}] if system else None
        if not isinstance(prompt, list) or not prompt:
            raise self.fail(n, "the prompt is neither text nor a list of chat messages" if prompt is not None
                            else "there is no prompt")
        messages = []
        for i, m in enumerate(prompt):
            if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
                raise self.fail(n, f"message {i + 1} is not {{\"role\": one of {', '.join(ROLES)}, \"content\": text}}")
            messages.append({"role": m["role"], "content": m["content"]})
        if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
            raise self.fail(n, "the last message must be the user's, and not empty")
        if system and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
        return messages

    def _tests(self, row: dict[str, Any], reference: str | None, n: int) -> tuple[str | None, str | None]:
        """The tests as code defining ``check(candidate)``, and the function they call."""
        tests, entry = self.value(row, "tests"), self._text(row, "entry_point", n)
        if tests is None:
            return None, entry
        if entry is None:
            found = _DEF.search(reference or "")
            if found is None:
                raise self.fail(n, "the tests need an entry_point, or a reference that defines the function")
            entry = found.group(1)
        if isinstance(tests, list):  # MBPP's test_list: assertions that call the function by its name
            if not all(isinstance(t, str) for t in tests):
                raise self.fail(n, "tests is a list of something other than assertions")
            tests = "def check(candidate):\n" + "".join(f"    {t.strip()}\n" for t in tests) + "    pass\n"
        if not isinstance(tests, str) or "def check" not in tests:
            raise self.fail(n, "tests must define check(candidate) or be a list of assertions")
        return tests, entry


@dpokd.hookimpl
def register_tasks(register):
    register(PromptsTask)
