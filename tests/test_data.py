"""dpokd.data: local files of every format read alike, columns mapped with clear errors, ids that
survive reordering and `limit`, a seeded split that holds its fraction, and templates checked."""

import csv
import json
import subprocess
import sys

import pytest

import dpokd.data
from dpokd.data import (FieldSpec, UniqueIds, check_template, in_eval, load_rows, prompt_id, render, split_rows,
                        strip_fence)
from dpokd.errors import ConfigError

from .conftest import ROOT

ROWS = [
    {"qid": 3, "question": "Add one to x.", "answer": "```python\ndef f(x):\n    return x + 1\n```"},
    {"qid": 10, "question": "Double x.", "answer": "def f(x):\n    return 2 * x"},
    {"qid": 42, "question": "Negate x.", "answer": "def f(x):\n    return -x"},
]
FIELDS = FieldSpec({"id": "qid", "prompt": "question", "reference": "answer"})


def _write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# -- loading ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_local_format_gives_the_same_records(tmp_path, suffix):
    data = load_rows(str(_write(tmp_path / f"rows{suffix}", ROWS)), FIELDS)
    ids = UniqueIds("rows", "qid")
    records = [{**FIELDS.record(row), "id": ids(row, n)} for n, row in enumerate(data, 1)]
    assert records == [{"id": str(r["qid"]), "prompt": r["question"], "reference": r["answer"]} for r in ROWS]


def test_a_local_file_is_read_without_a_progress_bar(tmp_path, capfd):
    from datasets.utils.logging import is_progress_bar_enabled

    path = tmp_path / "rows.jsonl"
    _write(path, ROWS * 50)  # a file datasets has not cached: it generates the split, with a bar by default
    assert len(load_rows(str(path), FIELDS)) == 150
    captured = capfd.readouterr()
    assert "Generating train split" not in captured.err + captured.out
    assert is_progress_bar_enabled()  # a hub download still shows its progress


def test_a_local_file_that_cannot_be_used_says_why_under_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"^prompts.dataset: no such file .*missing.jsonl"):
        load_rows(str(tmp_path / "missing.jsonl"), option="prompts.dataset")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ConfigError, match="empty.csv is empty; expected .* the columns qid, question and answer"):
        load_rows(str(tmp_path / "empty.csv"), FIELDS)
    (tmp_path / "header.csv").write_text("qid,question,answer\n")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    for name in ("header.csv", "blank.jsonl"):
        with pytest.raises(ConfigError, match=f"{name} has no rows"):
            load_rows(str(tmp_path / name), FIELDS if name.endswith(".csv") else None)


# -- fields -----------------------------------------------------------------------------------------
def test_a_missing_column_is_named_with_the_columns_there_are_and_the_option_to_set(tmp_path):
    path = str(_write(tmp_path / "rows.jsonl", ROWS))
    fields = FieldSpec({"id": "qid", "prompt": "content"}, {"prompt": "task.prompt_column"})
    with pytest.raises(ConfigError) as caught:
        load_rows(path, fields)
    assert str(caught.value) == (f"task: dataset {path!r} has no column 'content' (columns: qid, question, answer); "
                                 "set task.prompt_column")
    with pytest.raises(ConfigError, match="no column 'content' .*map the field 'prompt' onto one of them"):
        load_rows(path, FieldSpec({"prompt": "content"}))


def test_a_text_field_holding_numbers_is_refused_naming_the_column_and_row():
    fields = FieldSpec({"prompt": "qid"}, {"prompt": "task.prompt_column"})
    assert fields.text({"qid": None}, "prompt", "d.csv", 1) == ""
    with pytest.raises(ConfigError, match=r"task.prompt_column: column 'qid' of d.csv holds int values \(row 2: '7'\)"):
        fields.text({"qid": 7}, "prompt", "d.csv", 2)


# -- ids --------------------------------------------------------------------------------------------
def test_ids_are_the_same_across_loads_orders_and_limits(tmp_path):
    full = load_rows(str(_write(tmp_path / "all.jsonl", ROWS)))
    cut = load_rows(str(_write(tmp_path / "cut.jsonl", ROWS[:2][::-1])))  # a limit, and another order
    by_prompt = {r["question"]: UniqueIds("all")(r, n, r["question"]) for n, r in enumerate(full, 1)}
    again = {r["question"]: UniqueIds("cut")(r, n, r["question"]) for n, r in enumerate(cut, 1)}
    assert again == {q: by_prompt[q] for q in again} and len(set(by_prompt.values())) == 3
    assert by_prompt["Double x."] == prompt_id("Double x.") != prompt_id([{"role": "user", "content": "Double x."}])
    assert prompt_id([{"role": "user", "content": "Hi"}]) == prompt_id([{"content": "Hi", "role": "user"}])
    column = [UniqueIds("all", "qid")(r, n) for n, r in enumerate(full, 1)]
    assert column == ["3", "10", "42"]


def test_ids_are_normalised_to_text_and_must_be_unique():
    ids = UniqueIds("d.csv", "id", "task.id_column")
    assert [ids({"id": 7.0}, 1), ids({"id": "a-1"}, 2)] == ["7", "a-1"]
    with pytest.raises(ConfigError, match="task.id_column: id '7' is in rows 1 and 3 of d.csv; ids must be unique"):
        ids({"id": 7}, 3)
    for bad in (True, 1.5, None, " "):
        with pytest.raises(ConfigError, match="ids must be text or whole numbers"):
            UniqueIds("d.csv", "id")({"id": bad}, 1)
    hashed = UniqueIds("d.csv")
    hashed({}, 1, "same")
    with pytest.raises(ConfigError, match="the same prompt .* is in rows 1 and 2"):
        hashed({}, 2, "same")


# -- split ------------------------------------------------------------------------------------------
def test_the_split_is_deterministic_per_seed_and_holds_its_fraction():
    rows = [{"id": f"p{i}"} for i in range(4000)]
    held = {r["id"] for r in split_rows(rows, "eval", seed=0, fraction=0.2)}
    train = {r["id"] for r in split_rows(rows, "train", seed=0, fraction=0.2)}
    assert not held & train and len(held | train) == 4000
    assert 0.18 < len(held) / 4000 < 0.22  # 3 standard deviations either side
    assert held == {r["id"] for r in split_rows(rows, "eval", seed=0, fraction=0.2)}
    assert len(held ^ {r["id"] for r in split_rows(rows, "eval", seed=1, fraction=0.2)}) > 1000
    # Stable whatever limit is: the first 500 rows split as they do among the 4000.
    first = {r["id"] for r in split_rows(rows[:500], "eval", seed=0, fraction=0.2)}
    assert first == held & {f"p{i}" for i in range(500)}
    with pytest.raises(ValueError, match="'train' or 'eval'"):
        split_rows(rows, "test", seed=0, fraction=0.2)


def test_the_split_of_existing_runs_does_not_move():
    # A changed hash would move records between train and eval under runs already made.
    assert [i for i in map(str, range(1, 41)) if in_eval(i, 0, 0.25)] == ["7", "15", "18", "20", "25", "36"]
    assert [i for i in map(str, range(1, 41)) if in_eval(i, 1, 0.25)] == ["7", "11", "27", "29", "30", "33", "35",
                                                                          "38", "39"]


# -- templates and text -----------------------------------------------------------------------------
def test_a_template_renders_from_the_columns_and_one_naming_another_column_is_refused():
    template = "Q: {question}\nA:"
    assert check_template(template, ["qid", "question"]) == template and check_template(None, ["question"]) is None
    assert render(template, ROWS[1]) == "Q: Double x.\nA:"
    with pytest.raises(ValueError, match=r"not a template with the fields \{qid\}, \{question\} \(KeyError: 'title'\)"):
        check_template("{title}", ["qid", "question"])
    for bad in ("{0}", "{question", "{question:d}"):
        with pytest.raises(ValueError, match="not a template with the one field"):
            check_template(bad, ["question"])
    with pytest.raises(ConfigError, match=r"needs the field \{title\}, not among qid, question, answer"):
        render("{title}", ROWS[0])


def test_strip_fence_unwraps_a_fenced_block_and_leaves_plain_code():
    assert strip_fence(ROWS[0]["answer"]) == "def f(x):\n    return x + 1"
    assert strip_fence(ROWS[1]["answer"]) == ROWS[1]["answer"]
    assert strip_fence("\n```\nx = 1\n```\n") == "x = 1" and strip_fence("\nx = 1\n\n") == "x = 1"
    assert strip_fence(None) == ""


# -- the public face --------------------------------------------------------------------------------
def test_every_public_name_exists_and_is_documented():
    section = (ROOT / "docs" / "plugins.md").read_text().split("## Reading data (`dpokd.data`)")[1].split("\n## ")[0]
    for name in dpokd.data.__all__:
        assert hasattr(dpokd.data, name), name
        assert f"- `{name}`" in section, name


def test_importing_the_data_layer_does_not_import_datasets():
    code = "import sys, dpokd.data, dpokd.plugins.tasks.leetcode; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr
