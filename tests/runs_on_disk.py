"""Finished run directories written straight to disk, in the layout the engine and the judges write.

For tests of what reads a run (leaderboard, report) at sizes no model could produce quickly here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from dpokd.scoring import eval_path, mean_ci, pass_at_k
from dpokd.records import Outcome, Score
from dpokd.runs import RunDir, write_json, write_jsonl

Passes = Callable[[str, int, int], bool]  # (system, problem, sample) -> passed


def make_run(path: Path, *, systems: list[str], problems: int, samples: int = 1, passes: Passes,
             text: Callable[[str, int, int], str] = lambda s, i, j: f"def f(x):\n    return x  # {s} {i} {j}\n",
             judge: str = "execution", iterations: int = 0, prompt: Callable[[int], str] | None = None,
             reason: Callable[[str, int], str] = lambda s, i: f"AssertionError: check(task/{i}) failed") -> Path:
    """A run whose ``judge`` scored every system on ``problems`` problems, ``samples`` samples each."""
    run = RunDir(path)
    run.create(fresh=True)
    ids = [f"task/{i}" for i in range(problems)]
    scores = [Score(judge="run", system="teacher", metric="tokens", value=float(problems * 100), higher_is_better=False),
              Score(judge="run", system="teacher", metric="cost_usd", value=0.0123, higher_is_better=False)]
    for system in systems:
        rows, per_problem = [], []
        for i, example_id in enumerate(ids):
            outcomes = [passes(system, i, j) for j in range(samples)]
            per_problem.append(pass_at_k(samples, sum(outcomes), 1))
            rows += [Outcome(system=system, example_id=example_id, sample=j, judge=judge, metric="pass@1", value=ok,
                             label="passed" if ok else "failed", detail="" if ok else reason(system, i),
                             answer=text(system, i, j)).model_dump(mode="json") for j, ok in enumerate(outcomes)]
        out = eval_path(path, judge, system)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        scores.append(Score(judge=judge, system=system, metric="pass@1", value=sum(per_problem) / len(per_problem),
                            ci=mean_ci(per_problem), n=problems))
    run.write_results(scores)
    write_jsonl(path / "eval" / "examples.jsonl",
                [{"id": e, "prompt": prompt(i) if prompt else f"Write f for problem {i}.", "input": None}
                 for i, e in enumerate(ids)])
    write_json(path / "manifest.json", {"spec": {"run": {"name": path.name, "seed": 0}}, "seed": 0,
                                        "versions": {"dpokd": "0.1.0"}, "contamination": {
                                            "task eval split": {"overlapping": 0, "of": problems, "examples": []}}})
    teacher = [{"example_id": f"train/{i}", "text": f"def f(x):\n    return {i}\n", "ok": True} for i in range(4)]
    write_jsonl(path / "teacher.jsonl", teacher)
    for k in range(1, iterations + 1):
        it = path / f"iter_{k}"
        rejected = [{"example_id": f"train/{i}", "text": teacher[i]["text"] if i < k else "pass", "ok": True}
                    for i in range(4)]
        write_jsonl(it / "rejected.jsonl", rejected)
        kept = [{"example_id": r["example_id"], "prompt": f"train prompt {r['example_id']}", "chosen": t["text"],
                 "rejected": r["text"], "iteration": k} for r, t in zip(rejected, teacher) if r["text"] != t["text"]]
        write_jsonl(it / "pairs.jsonl", kept)
        write_json(it / "pairs_stats.json", {"examples": 4, "teacher_failed": 0, "identical": min(k, 4),
                                             "not_verified": 0, "pairs": len(kept)})
        write_jsonl(it / "train_log.jsonl", [{"loss": 1.0 / (s + 1), "rewards/margins": float(s)} for s in range(5)])
        write_json(it / "train_metrics.json", {"pairs": len(kept), "steps": 5, "loss": 0.5})
    return path


def rewrite_tensors(path: Path, tensors_bytes: Callable[[int], bytes]) -> None:
    """Rewrite a safetensors file's tensor data (``tensors_bytes(size)``), keeping its header: a
    damaged adapter that still parses."""
    raw = path.read_bytes()
    start = 8 + int.from_bytes(raw[:8], "little")
    path.write_bytes(raw[:start] + tensors_bytes(len(raw) - start))
