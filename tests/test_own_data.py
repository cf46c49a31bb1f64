"""The shipped "your own data" specs run from a clean clone, on a CPU with no key, and each
leaderboard has its judge's metric for the teacher (where the judge scores it), the base student
and every iteration."""

import json

import pytest

from .conftest import ROOT, run_cli

SPECS = {"own_code": ("own-code", ["pass@1"]), "own_chat": ("own-chat", ["teacher_nll", "match"]),
         "own_numeric": ("own-numeric", ["match"])}


@pytest.mark.slow
@pytest.mark.parametrize("spec", sorted(SPECS))
def test_a_shipped_spec_distils_on_its_own_data(tmp_path, spec):
    name, metrics = SPECS[spec]
    out = run_cli("run", str(ROOT / "specs" / f"{spec}.toml"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    board = run_cli("leaderboard", str(tmp_path / "runs" / name), "--format", "json", cwd=tmp_path)
    rows = {r["system"]: r for r in json.loads(board.stdout)}
    assert list(rows) == ["teacher", "student@base", "student@iter_1", "student@iter_2"]
    for metric in metrics:
        scored = [s for s in rows if s != "teacher" or metric != "teacher_nll"]  # the teacher's own NLL is not asked
        assert all(isinstance(rows[s][metric], float) for s in scored), (metric, rows)
        if metric != "teacher_nll":
            assert rows["teacher"][metric] == 1.0 and rows["teacher"][f"{metric}_n"] >= 6
    # The answer-checking metric feeds the paired Δ of each checkpoint against the base.
    paired = rows["student@iter_2"]["vs_ref"]
    assert (paired["metric"], paired["against"], paired["n"]) == (metrics[-1], "student@base",
                                                                   rows["student@iter_2"][f"{metrics[-1]}_n"])
    # The student moved toward the teacher: it passes the tests, finds the teacher's replies likely, or
    # (the tiny student does no arithmetic) answers in the teacher's form and length.
    base, last = rows["student@base"], rows["student@iter_2"]
    if spec == "own_code":
        assert last["pass@1"] > base["pass@1"]
    elif spec == "own_chat":
        assert last["teacher_nll"] < base["teacher_nll"] / 4
        # The pairs stay in TRL's conversational format, the record's system prompt first.
        pairs = [json.loads(line) for line in (tmp_path / "runs" / name / "iter_1" / "pairs.jsonl").open()]
        assert pairs and all(p["prompt"][0] == {"role": "system", "content": "Answer in one short sentence."}
                             and p["prompt"][-1]["role"] == "user" and p["chosen"][0]["role"] == "assistant"
                             for p in pairs)
    else:
        teacher = rows["teacher"]["answer_chars"]
        assert abs(last["answer_chars"] - teacher) < abs(base["answer_chars"] - teacher)


@pytest.mark.slow
def test_the_api_teacher_and_rubric_spec_runs_against_a_loopback_server_and_replays_offline(tmp_path):
    import shutil

    from dpokd.testing import LoopbackServer

    rows = [json.loads(line) for line in (ROOT / "specs" / "data" / "chat.jsonl").read_text().splitlines()]
    replies = {tuple(m["content"] for m in r["messages"]): r["reference"] for r in rows}

    def respond(body):
        conversation = tuple(m["content"] for m in body["messages"] if m["role"] != "system")
        return replies.get(conversation, "A fair reply.\nRating: [[7]]")  # else it grades

    shutil.copytree(ROOT / "specs" / "data", tmp_path / "specs" / "data")
    spec = tmp_path / "specs" / "own_rubric.toml"
    with LoopbackServer(respond) as server:
        text = (ROOT / "specs" / "own_rubric.toml").read_text()
        text = text.replace('model = "gemini/gemini-4-argon"', f'model = "openai/loopback"\napi_base = "{server.url}"')
        text = text.replace('plugin = "llm-rubric"', f'plugin = "llm-rubric"\nmodel = "openai/grader"\napi_base = "{server.url}"')
        spec.write_text(text)
        out = run_cli("run", str(spec), cwd=tmp_path, env={"OPENAI_API_KEY": "sk-loopback"})
        assert out.returncode == 0, out.stderr[-3000:]
        asked = len(server.requests)
    board = lambda: {r["system"]: r for r in json.loads(  # noqa: E731
        run_cli("leaderboard", str(tmp_path / "runs" / "own-rubric"), "--format", "json", cwd=tmp_path).stdout)}
    first = board()
    assert list(first) == ["teacher", "student@base", "student@iter_1", "student@iter_2"] and asked > 0
    assert all(r["rubric"] == pytest.approx(6 / 9) and r["rubric_n"] >= 6 for r in first.values())
    assert all(isinstance(r["match"], float) and r["match_n"] == first["teacher"]["rubric_n"] for r in first.values())
    assert first["teacher"]["match"] == 1.0
    again = run_cli("run", str(spec), "--offline", "--fresh", cwd=tmp_path, env={"OPENAI_API_KEY": None})
    assert again.returncode == 0, again.stderr[-3000:]
    assert {s: (r["rubric"], r["match"]) for s, r in board().items()} == {
        s: (r["rubric"], r["match"]) for s, r in first.items()}
