"""A teacher's answer cut off by max_tokens is recorded as truncated, left out of the pairs unless
`run.keep_truncated`, and counted in pairs_stats.json, the leaderboard's teacher row and the report.

The teacher is litellm over real HTTP to the loopback server, which answers each synthetic problem
with its reference solution and says `finish_reason: "length"` (Gemini: `MAX_TOKENS`) for some."""

import html
import json

import pytest

from dpokd.engine import Engine
from dpokd.interfaces import Context
from dpokd.plugins.tasks.synthetic import SyntheticCodegen
from dpokd.plugins.teachers.litellm import LiteLLMTeacher
from dpokd.records import Completion
from dpokd.report import _iterations
from dpokd.runs import write_jsonl
from dpokd.spec import load_spec
from dpokd.testing import LoopbackServer

from .conftest import run_cli

TASK = dict(n_train=8, n_eval=4, levels=[1], seed=5)
TRAIN = SyntheticCodegen(SyntheticCodegen.Options(**TASK)).examples("train")
CUT = {TRAIN[1].id, TRAIN[4].id}  # the examples whose answers the server cuts off
REASON = "truncated: the teacher's answer hit max_tokens"


def _prompt(body) -> str:
    if "contents" in body:  # Gemini's shape
        return body["contents"][-1]["parts"][0]["text"]
    return body["messages"][-1]["content"]


@pytest.fixture(scope="module")
def server():
    answers = {e.prompt: e.reference for split in ("train", "eval")
               for e in SyntheticCodegen(SyntheticCodegen.Options(**TASK)).examples(split)}
    cut = {e.prompt for e in TRAIN if e.id in CUT}
    with LoopbackServer(lambda body: answers[_prompt(body)]) as s:
        s.when(lambda body: _prompt(body) in cut, {"finish_reason": "length"})
        yield s


def spec_text(url: str, name: str, run: str = "") -> str:
    task = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TASK.items())
    return f"""
[run]
name = "{name}"
output_dir = "runs"
cache_dir = "cache"
{run}
[task]
plugin = "synthetic-codegen"
{task}

[teacher]
plugin = "litellm"
model = "openai/loopback-teacher"
api_base = "{url}"

[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
tiny_hidden = 64
tiny_layers = 1
lora_r = 8
epochs = 1
batch_size = 8
loss = ["sigmoid", "sft"]
max_length = 96
max_new_tokens = 16
"""


@pytest.mark.parametrize("model", ["openai/loopback", "gemini/loopback"])
def test_an_answer_cut_off_by_max_tokens_is_truncated_live_and_replayed_from_the_cache(server, tmp_path, model):
    def answers():
        teacher = LiteLLMTeacher(LiteLLMTeacher.Options(model=model, api_base=server.url),
                                 Context(cache_dir=tmp_path / "cache"))
        return teacher.answer(TRAIN)

    live = answers()
    assert all(a.ok and not a.cached for a in live)
    assert {a.example_id for a in live if a.truncated} == CUT
    again = answers()
    assert all(a.cached for a in again)
    assert {a.example_id for a in again if a.truncated} == CUT
    # Written to teacher.jsonl and read back, the answer is still truncated: derived, not stored.
    assert "truncated" not in live[0].model_dump()
    assert [Completion.model_validate_json(a.model_dump_json()).truncated for a in live] == [a.truncated for a in live]


@pytest.mark.parametrize("keep", [False, True], ids=["dropped_by_default", "kept_with_keep_truncated"])
def test_pairs_leave_out_truncated_chosen_answers_unless_kept_and_the_report_says_why(server, tmp_path, keep):
    spec = tmp_path / "t.toml"
    spec.write_text(spec_text(server.url, "t", "keep_truncated = true" if keep else ""))
    engine = Engine(load_spec(spec))
    engine.run.create(fresh=True)
    train = engine.task.examples("train")
    chosen = engine.teach(train)
    # The student's answers are all cut off too: that never drops a pair.
    rejected = [Completion.of(e, "def f(x):\n    return", finish_reason="length") for e in train]
    write_jsonl(engine.run.path / "iter_1" / "rejected.jsonl", [r.model_dump(mode="json") for r in rejected])
    counts = engine.pairs(1, train, chosen, rejected)

    stats = json.loads((engine.run.path / "iter_1" / "pairs_stats.json").read_text())
    assert stats == counts
    assert stats["teacher_truncated"] == (0 if keep else len(CUT))
    assert stats["pairs"] == len(train) - stats["teacher_truncated"]
    paired = {json.loads(line)["example_id"] for line in (engine.run.path / "iter_1" / "pairs.jsonl").open()}
    assert paired == ({e.id for e in train} if keep else {e.id for e in train} - CUT)
    reasons = {d["example_id"]: d["reason"] for d in _iterations(engine.run.path)[0]["dropped"]}
    assert reasons == ({} if keep else {i: REASON for i in CUT})


@pytest.mark.slow
def test_a_run_drops_truncated_answers_and_counts_them_in_stats_leaderboard_and_report(server, tmp_path):
    (tmp_path / "t.toml").write_text(spec_text(server.url, "t"))
    out = run_cli("run", "t.toml", cwd=tmp_path, env={"OPENAI_API_KEY": "x"})
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "runs" / "t"
    stats = json.loads((run_dir / "iter_1" / "pairs_stats.json").read_text())
    assert (stats["teacher_truncated"], stats["pairs"]) == (len(CUT), len(TRAIN) - len(CUT))
    paired = {json.loads(line)["example_id"] for line in (run_dir / "iter_1" / "pairs.jsonl").open()}
    assert paired == {e.id for e in TRAIN} - CUT

    board = run_cli("leaderboard", str(run_dir), "--format", "json")
    assert board.returncode == 0, board.stderr
    rows = {r["system"]: r for r in json.loads(board.stdout)}
    assert rows["teacher"]["truncated"] == len(CUT)

    page = html.unescape((run_dir / "report.html").read_text())
    for example_id in CUT:
        assert f'<span class="id">{example_id}</span> {REASON}</summary>' in page
    assert page.count(REASON) == len(CUT)
