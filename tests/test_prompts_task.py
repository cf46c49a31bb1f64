"""The ``prompts`` task: your own data in any of four formats, mapped, templated, split and checked
before anything is paid for."""

import csv
import json
from pathlib import Path

import pytest

from dpokd import ConfigError
from dpokd.interfaces import Context
from dpokd.plugins.tasks.prompts import PromptsTask

from .conftest import ROOT, run_cli

ROWS = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i), "qid": f"q{i}"} for i in range(40)]


def write(path: Path, rows: list[dict]) -> Path:
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        from datasets import Dataset

        Dataset.from_list(rows).to_parquet(str(path))
    return path


def task(path: Path, **options) -> PromptsTask:
    return PromptsTask(PromptsTask.Options(dataset=str(path), **options), Context(seed=0))


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_format_gives_the_same_records(tmp_path, suffix):
    t = task(write(tmp_path / f"qa{suffix}", ROWS), fields={"prompt": "question", "reference": "answer", "id": "qid"})
    every = t.examples("train") + t.examples("eval")
    assert sorted((e.id, e.prompt, e.reference) for e in every) == sorted(
        (r["qid"], r["question"], r["answer"]) for r in ROWS)
    assert 0 < len(t.examples("eval")) < 12  # about a tenth held out


def hub_cache(home: Path, repo: str, splits: dict[str, list[dict]]) -> Path:
    """The datasets cache a download of hub dataset ``repo`` leaves (``owner___name/default/0.0.0/HASH``),
    made here from local files because the hub cannot be reached: read offline, it is the hub dataset."""
    import shutil

    from datasets.packaged_modules.json.json import Json

    files = {split: str(write(home / f"{split}.jsonl", rows)) for split, rows in splits.items()}
    owner, name = repo.split("/")
    built = Json(cache_dir=str(home / "build"), dataset_name=name, data_files=files, hash="0123abcd")
    built.download_and_prepare()
    cache = home / "hf-datasets"
    shutil.move(built.cache_dir, cache / f"{owner}___{name}" / "default" / "0.0.0" / "0123abcd")
    return cache


def test_a_hub_dataset_is_read_by_split_from_the_local_cache(tmp_path, monkeypatch):
    import datasets

    test_rows = [{"question": f"What is {i} times 3?", "answer": str(3 * i), "qid": f"t{i}"} for i in range(5)]
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hub_cache(tmp_path, "someone/sums",
                                                                          {"train": ROWS, "test": test_rows}))
    fields = {"prompt": "question", "reference": "answer", "id": "qid"}
    t = PromptsTask(PromptsTask.Options(dataset="someone/sums", revision="main", eval_dataset="test", fields=fields),
                    Context(seed=0))
    assert [(e.id, e.prompt, e.reference) for e in t.examples("train")] == [
        (r["qid"], r["question"], r["answer"]) for r in ROWS]
    assert [e.id for e in t.examples("eval")] == [r["qid"] for r in test_rows]
    held = PromptsTask(PromptsTask.Options(dataset="someone/sums", split="test", fields=fields, eval_fraction=0.4),
                       Context(seed=0))
    assert sorted(e.id for split in ("train", "eval") for e in held.examples(split)) == [r["qid"] for r in test_rows]
    with pytest.raises(ConfigError, match="task.dataset: cannot load 'someone/elsewhere' .*point the spec at the file"):
        task("someone/elsewhere").preflight()


def test_a_template_builds_the_prompt_from_several_columns(tmp_path):
    t = task(write(tmp_path / "qa.jsonl", ROWS), template="Q {qid}: {question}\nA:", fields={"reference": "answer"})
    e = t.examples("train")[0]
    row = next(r for r in ROWS if r["question"] in e.prompt)
    assert e.prompt == f"Q {row['qid']}: {row['question']}\nA:" and e.reference == row["answer"]
    with pytest.raises(ConfigError, match="task.template: .*\\{nope\\}|task.template: .*nope"):
        task(write(tmp_path / "qb.jsonl", ROWS), template="{nope}").examples("train")


def test_ids_and_the_split_do_not_change_when_rows_are_added_or_reordered(tmp_path):
    rows = [{"prompt": r["question"], "reference": r["answer"]} for r in ROWS]
    first = task(write(tmp_path / "a.jsonl", rows))
    later = task(write(tmp_path / "b.jsonl", [{"prompt": "A new question?"}] + rows[::-1]))
    ids = {e.prompt: (e.id, split) for split in ("train", "eval") for e in first.examples(split)}
    again = {e.prompt: (e.id, split) for split in ("train", "eval") for e in later.examples(split)}
    assert all(again[p] == ids[p] for p in ids) and len(again) == len(ids) + 1


def test_the_split_follows_the_runs_seed_and_limit_takes_the_first_records(tmp_path):
    path = write(tmp_path / "qa.jsonl", [{"prompt": r["question"]} for r in ROWS])
    held = {seed: [e.prompt for e in PromptsTask(PromptsTask.Options(dataset=str(path), eval_fraction=0.25),
                                                 Context(seed=seed)).examples("eval")] for seed in (0, 1)}
    again = [e.prompt for e in task(path, eval_fraction=0.25).examples("eval")]
    assert held[0] == again and held[1] != held[0]  # the run's seed draws the split, the same each time
    pinned = task(path, eval_fraction=0.25, seed=1)  # the task's own seed over the run's
    assert [e.prompt for e in pinned.examples("eval")] == held[1]
    first = task(path, limit=12)
    assert sorted(e.prompt for s in ("train", "eval") for e in first.examples(s)) == sorted(
        r["question"] for r in ROWS[:12])


def test_a_repeated_id_names_both_lines(tmp_path):
    rows = [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"id": "a", "prompt": "z"}]
    with pytest.raises(ConfigError, match="id 'a' is in rows 1 and 3 of .*ids.jsonl"):
        task(write(tmp_path / "ids.jsonl", rows)).examples("train")


def test_chat_messages_and_a_system_prompt_reach_an_api_teacher_as_messages(tmp_path):
    from dpokd.plugins.teachers.litellm import LiteLLMTeacher
    from dpokd.testing import LoopbackServer

    rows = [{"id": "chat", "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                      {"role": "user", "content": "Name a prime."}], "system": "Be terse."},
            {"id": "plain", "prompt": "Name an even number.", "system": "Be terse."}]
    examples = task(write(tmp_path / "chat.jsonl", rows), eval_fraction=0.01).examples("train")
    assert examples[0].messages[0] == {"role": "system", "content": "Be terse."} and len(examples[0].messages) == 4
    assert examples[0].prompt.startswith("System: Be terse.\n\nUser: Hi")
    with LoopbackServer(lambda body: "2") as server:
        teacher = LiteLLMTeacher(LiteLLMTeacher.Options(model="openai/loopback", api_base=server.url),
                                 Context(cache_dir=tmp_path / "cache"))
        assert [a.text for a in teacher.answer(examples)] == ["2", "2"]
        sent = sorted((r["messages"] for r in server.requests), key=len)
    assert sent[0] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name an even number."}]
    assert sent[1] == examples[0].messages


def test_the_pairwise_judge_compares_answers_to_a_conversation_it_is_shown_whole(tmp_path):
    from dpokd.interfaces import System
    from dpokd.plugins.judges.pairwise import PairwiseJudge
    from dpokd.records import Completion, Score
    from dpokd.testing import LoopbackServer

    path = ROOT / "specs" / "data" / "chat.jsonl"
    t = task(path, fields={"prompt": "messages"}, eval_fraction=0.25)
    examples = t.examples("eval")
    right = System("tuned", lambda exs: [Completion.of(e, e.reference) for e in exs])
    vague = System("base", lambda exs: [Completion.of(e, "I am not sure.") for e in exs])

    def prefers_the_reference(body):
        text = body["messages"][-1]["content"]
        a = text.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
        return "[[B]]" if a == "I am not sure." else "[[A]]"

    with LoopbackServer(prefers_the_reference) as server:
        judge = PairwiseJudge(PairwiseJudge.Options(model="openai/judge", api_base=server.url, baseline="base"),
                              Context(cache_dir=tmp_path / "cache"))
        results = judge.evaluate({"base": vague, "tuned": right}, t)
        questions = [r["messages"][-1]["content"] for r in server.requests]
    scores = {s.metric: s.value for s in results if isinstance(s, Score)}
    assert scores["win_rate"] == 1.0 and scores["wins"] == len(examples) >= 6 and scores["consistency"] == 1.0
    # The judge is shown each whole conversation, the system prompt and earlier turns included.
    shown = {q.split("[User Question]\n")[1].split("\n\n[The Start of")[0] for q in questions}
    assert shown == {e.prompt for e in examples}
    assert any(p.startswith("System: Answer in one short sentence.\n\nUser: ") and "\n\nAssistant: " in p
               for p in shown)


def test_mbpp_rows_run_their_assertions_in_the_sandbox(tmp_path):
    from dpokd.interfaces import System
    from dpokd.plugins.judges.execution import ExecutionJudge
    from dpokd.records import Completion, Score

    rows = [{"task_id": 11, "text": "Write a function to remove the first and last occurrence of a character.",
             "code": "def remove_Occ(s, ch):\n    s = s.replace(ch, '', 1)\n    return s[::-1].replace(ch, '', 1)[::-1]",
             "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\"", "assert remove_Occ(\"abcda\",\"a\") == \"bcd\""]},
            {"task_id": 12, "text": "Write a function to square a number.", "code": "def square(x):\n    return x * x",
             "test_list": ["assert square(3) == 9", "assert square(-2) == 4"]}]
    t = task(write(tmp_path / "mbpp.jsonl", rows), fields={"id": "task_id", "prompt": "text", "reference": "code",
                                                            "tests": "test_list"}, eval_fraction=0.99)
    examples = t.examples("eval")
    assert [e.entry_point for e in examples] == ["remove_Occ", "square"]
    right = System("right", lambda exs: [Completion.of(e, e.reference) for e in exs])
    wrong = System("wrong", lambda exs: [Completion.of(e, f"def {e.entry_point}(*a):\n    return None") for e in exs])
    results = ExecutionJudge(context=Context(cache_dir=tmp_path)).evaluate({"right": right, "wrong": wrong}, t)
    scores = {(s.system, s.metric): s.value for s in results if isinstance(s, Score)}
    assert scores[("right", "pass@1")] == 1.0 and scores[("wrong", "pass@1")] == 0.0


def test_a_separate_eval_file(tmp_path):
    t = task(write(tmp_path / "train.jsonl", [{"prompt": "a"}, {"prompt": "b"}]),
             eval_dataset=str(write(tmp_path / "eval.jsonl", [{"prompt": "c"}])))
    assert [e.prompt for e in t.examples("train")] == ["a", "b"] and [e.prompt for e in t.examples("eval")] == ["c"]


BAD = {
    "a missing field": ([{"question": "x"}], {"fields": {"prompt": "text"}},
                        "has no column 'text' \\(columns: question\\); set task.fields.prompt"),
    "no prompt column": ([{"question": "x"}], {}, "has no column 'prompt' \\(columns: question\\)"),
    "a record without a prompt": ([{"prompt": "x"}, {"prompt": "y"}, {"question": "z"}], {},
                                  "line 3 of .*bad.jsonl: there is no prompt"),
    "an empty prompt": ([{"prompt": "x"}, {"prompt": "  "}], {}, "line 2 of .*bad.jsonl: the prompt is empty"),
    "a malformed message list": ([{"prompt": [{"role": "user", "content": "x"}]},
                                  {"prompt": [{"role": "robot", "content": "x"}]}], {},
                                 "line 2 of .*bad.jsonl: message 1 is not"),
    "a conversation ending with the assistant": ([{"prompt": [{"role": "user", "content": "x"},
                                                              {"role": "assistant", "content": "y"}]}], {},
                                                 "line 1 of .*: the last message must be the user's"),
    "tests without an entry point": ([{"prompt": "x", "tests": ["assert f(1) == 1"]}], {},
                                     "line 1 of .*: the tests need an entry_point"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_refused_naming_the_file_and_the_line(tmp_path, case):
    rows, options, message = BAD[case]
    t = task(write(tmp_path / "bad.jsonl", rows), **options)
    with pytest.raises(ConfigError, match=message):
        t.preflight()


def test_an_empty_file_and_a_file_not_in_utf8_are_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match="empty.jsonl is empty"):
        task(tmp_path / "empty.jsonl").preflight()
    (tmp_path / "latin.jsonl").write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(ConfigError, match="latin.jsonl is not UTF-8 \\(line 2"):
        task(tmp_path / "latin.jsonl").preflight()


def test_an_unknown_field_in_the_mapping_is_a_spec_error(tmp_path):
    with pytest.raises(ValueError, match="no record field 'answer'; the fields are id, prompt"):
        PromptsTask.Options(dataset="x.jsonl", fields={"answer": "a"})


@pytest.mark.parametrize("data, message", [
    (b'{"prompt": "Name a prime."}\n{"prompt": ""}\n', "task.dataset: line 2 of {path}: the prompt is empty"),
    (b'{"prompt": "Name a prime."}\n{"prompt": "caf\xe9?"}\n', "task.dataset: {path} is not UTF-8 (line 2"),
], ids=["empty_prompt", "not_utf8"])
def test_dpokd_run_on_bad_data_exits_2_before_the_teacher_is_asked(tmp_path, data, message):
    from dpokd.testing import LoopbackServer

    path = tmp_path / "mine.jsonl"
    path.write_bytes(data)
    with LoopbackServer(lambda body: "2") as server:
        (tmp_path / "spec.toml").write_text(f"""
[run]
name = "mine"
[task]
plugin = "prompts"
dataset = "mine.jsonl"
[teacher]
plugin = "litellm"
model = "openai/loopback"
api_base = "{server.url}"
[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
[[judges]]
plugin = "teacher-likelihood"
""")
        out = run_cli("run", "spec.toml", cwd=tmp_path, env={"OPENAI_API_KEY": "sk-loopback"})
        assert server.requests == []
    assert out.returncode == 2 and message.format(path=path) in out.stderr, out.stderr
    assert "error: spec.toml: task.dataset: " in out.stderr  # named by the spec, as its own errors are
    assert "Traceback" not in out.stderr and not (tmp_path / "runs" / "mine").exists()
