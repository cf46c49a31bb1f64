"""``report.html``: one self-contained page per run (or runs), to look into an evaluation.

The leaderboard (the very rows ``dpokd leaderboard --format json`` prints), the training curves,
tokens and cost, the manifest, every eval example with each system's answers, their sandbox
status and the pairwise judge's verdicts, and each iteration's kept and dropped pairs.

Everything a model wrote is hostile: the page is rendered by Jinja2 with autoescaping, the one
JSON block is escaped for a ``<script>`` context, and nothing is loaded from the network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DpokdError
from .leaderboard import (EXTRAS, SEED_NOTE, SPREAD, _columns, _fmt, _previous_checkpoint, _reference_names,
                          convergence_notes, curves_png, fmt_calibration, fmt_delta, fmt_spread, load_rows,
                          plain_rows, plain_seed_rows, run_labels, seed_groups, seed_rows, seed_title, short_name,
                          spread_headers)
from .outcomes import AGAIN, eval_path, execution_rows, pairwise_rows, pass_shares, passed
from .records import Example
from .runs import RunDir, read_json, read_jsonl, write_jsonl

EXAMPLES_FILE = "examples.jsonl"  # under eval/: the prompts the judges asked, by id
MAX_CHARS = 20_000  # per shown text; the eval files keep every character
MAX_PAIRS = 300  # kept and dropped pairs shown per iteration; the JSONL files hold all
_ITER = re.compile(r"iter_(\d+)")


def record_examples(run_dir: Path, examples: list[Example]) -> None:
    """Write the judged examples' prompts to ``eval/examples.jsonl``, so the report can show them."""
    seen: dict[str, dict[str, Any]] = {}
    for e in examples:
        seen.setdefault(e.id, {"id": e.id, "prompt": e.prompt, "input": e.input})
    write_jsonl(Path(run_dir) / "eval" / EXAMPLES_FILE, list(seen.values()))


def write_report(run_dirs: list[Path], output: Path, against: str | None = None) -> Path:
    """Render the report of ``run_dirs`` to ``output``; returns ``output``."""
    html = render_report(run_dirs, against)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(output)
    return output


def render_report(run_dirs: list[Path], against: str | None = None) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    rows = load_rows(list(run_dirs), against=against)
    plain = plain_rows(rows)
    groups, skipped = seed_groups(rows)
    by_seed = plain_seed_rows(seed_rows(rows, groups))
    runs = [_run_view(path, label, [r for r in plain if r["run"] == label]) for path, label in run_labels(run_dirs).items()]
    env = Environment(loader=PackageLoader("dpokd", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda value, metric="": _fmt(value, metric=metric)
    env.filters["clip"] = _clip
    env.filters["jsonattr"] = lambda value: json.dumps(value)  # for data- attributes; autoescaped like any text
    # The page's one script is allowed by its hash (CSP): no other inline script or handler could run.
    script = env.loader.get_source(env, "report.js")[0]
    script_hash = "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    systems = list(dict.fromkeys(s for run in runs for s in run.systems))
    statuses = sorted({a.status for run in runs for e in run.examples for a in e.answers if a.status})
    return env.get_template("report.html").render(
        title="dpokd report: " + ", ".join(run.name for run in runs),
        columns=_columns(rows), rows=plain, runs=runs, systems=systems, statuses=statuses,
        fmt_delta=fmt_delta, fmt_calibration=fmt_calibration, short_name=short_name, extras=EXTRAS,
        has=lambda key: any(r.get(key) for r in plain), reference=_reference_names(rows),
        data={"previous": {run.name: run.previous for run in runs}}, script=script, script_hash=script_hash,
        notes=convergence_notes(rows) + skipped, seeds=by_seed, seed_columns=_columns(by_seed), spread_key=SPREAD,
        spread_headers=spread_headers, fmt_spread=fmt_spread, seed_title=seed_title(by_seed) if by_seed else "",
        seed_note=SEED_NOTE, seed_groups=len(groups),
    )


def _clip(text: str | None) -> dict[str, Any]:
    text = text or ""
    return {"text": text[:MAX_CHARS], "more": max(0, len(text) - MAX_CHARS)}


@dataclass
class Answer:
    system: str
    judge: str
    sample: int
    status: str | None
    reason: str
    text: str
    source: str  # the file with the full text


@dataclass
class Verdict:
    system: str
    baseline: str
    verdict: str | None
    judge_ab: str | None
    judge_ba: str | None


@dataclass
class ExampleView:
    id: str
    prompt: str | None = None
    answers: list[Answer] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    regressed: list[str] = field(default_factory=list)  # checkpoints that fail here where the one before passed
    fixed: list[str] = field(default_factory=list)


@dataclass
class RunView:
    name: str
    path: str
    manifest: dict[str, Any] | None
    curves: str | None
    usage: list[dict[str, Any]]
    training: list[dict[str, Any]]
    iterations: list[dict[str, Any]]
    examples: list[ExampleView]
    systems: list[str]
    previous: dict[str, str]


def _run_view(run_dir: Path, label: str, rows: list[dict[str, Any]]) -> RunView:
    run = RunDir(run_dir)
    systems = [r["system"] for r in rows]
    png = curves_png(run.path)
    examples, previous = _examples(run.path, run.results(), systems)
    return RunView(
        name=label, path=str(run.path), manifest=run.manifest(),
        curves="data:image/png;base64," + base64.b64encode(png).decode() if png else None,
        usage=[{"system": r["system"], "tokens": r.get("tokens"), "cost_usd": r.get("cost_usd")}
               for r in rows if r.get("tokens") is not None or r.get("cost_usd") is not None],
        training=_training(run.path), iterations=_iterations(run.path), examples=examples, systems=systems,
        previous=previous)


def _iteration_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in run_dir.glob("iter_*") if p.is_dir() and (m := _ITER.fullmatch(p.name))]
    return sorted(found)


def _training(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for k, path in _iteration_dirs(run_dir):
        metrics = path / "train_metrics.json"
        if metrics.exists():
            data = read_json(metrics)
            if isinstance(data, dict):
                out.append({"iteration": k, "metrics": {key: v for key, v in data.items()
                                                        if isinstance(v, (int, float, str, bool)) or v is None}})
    return out


def _iterations(run_dir: Path) -> list[dict[str, Any]]:
    """Per iteration: pairs_stats.json, the kept pairs, and each dropped example with its reason."""
    teacher_path = run_dir / "teacher.jsonl"
    teacher = {r.get("example_id"): r for r in read_jsonl(teacher_path)} if teacher_path.exists() else {}
    out = []
    for k, path in _iteration_dirs(run_dir):
        stats_path, pairs_path, rejected_path = path / "pairs_stats.json", path / "pairs.jsonl", path / "rejected.jsonl"
        if not pairs_path.exists():
            continue
        rows = read_jsonl(pairs_path)
        kept = [r for r in rows if not r.get("previous")]
        kept_ids = {r.get("example_id") for r in kept}
        dropped = []
        if rejected_path.exists() and teacher:
            for r in read_jsonl(rejected_path):
                i = r.get("example_id")
                good = teacher.get(i)
                if i in kept_ids or good is None:
                    continue
                if not good.get("ok", True):
                    reason = "teacher failure: " + str(good.get("error") or "no answer")
                elif str(good.get("text", "")).strip() == str(r.get("text", "")).strip():
                    reason = "identical: the student already answers as the teacher"
                else:
                    reason = "unverified: the teacher's code does not pass or the student's does"
                dropped.append({"example_id": i, "reason": reason, "chosen": good.get("text", ""),
                                "rejected": r.get("text", "")})
        out.append({"iteration": k, "stats": read_json(stats_path) if stats_path.exists() else {},
                    "kept": kept[:MAX_PAIRS], "kept_total": len(kept),
                    "previous": len(rows) - len(kept), "dropped": dropped[:MAX_PAIRS], "dropped_total": len(dropped)})
    return out


def _examples(run_dir: Path, scores, systems: list[str]) -> tuple[list[ExampleView], dict[str, str]]:
    """Every judged example with each system's answers, verdicts, and the checkpoints that regressed or fixed it."""
    execution_judges = list(dict.fromkeys(s.judge for s in scores if s.metric.startswith("pass@")))
    pairwise_judges = list(dict.fromkeys(s.judge for s in scores if s.metric == "win_rate"))
    prompts = _prompts(run_dir)
    views: dict[str, ExampleView] = {}

    def view(i: str) -> ExampleView:
        if i not in views:
            views[i] = ExampleView(id=i, prompt=prompts.get(i))
        return views[i]

    previous: dict[str, str] = {}
    for judge in execution_judges:
        _execution_answers(run_dir, judge, systems, view, previous)
    for judge in pairwise_judges:
        _pairwise_answers(run_dir, judge, systems, view)
    order = {s: n for n, s in enumerate(systems)}
    for v in views.values():
        v.answers.sort(key=lambda a: (order.get(a.system, len(order)), a.judge, a.sample))
    return list(views.values()), previous


def _execution_answers(run_dir: Path, judge: str, systems: list[str], view, previous: dict[str, str]) -> None:
    """An execution judge's samples of each system, and the examples each checkpoint regressed or fixed
    against the one before it (recorded in ``previous``)."""
    shares: dict[str, dict[str, float]] = {}
    for system in systems:
        rows = execution_rows(run_dir, judge, system)
        if rows is None:
            continue
        shares[system] = pass_shares(rows)
        source = eval_path(run_dir, judge, system).name
        for row in rows:
            sample = row.get("sample", 0)
            view(row["example_id"]).answers.append(Answer(
                system=system, judge=judge, sample=sample if isinstance(sample, int) else 0, status=row["status"],
                reason=str(row.get("reason") or ""), text=str(row.get("completion") or ""), source=source))
    for system in shares:
        before = _previous_checkpoint(system, shares)
        if before is None:
            continue
        previous[system] = before
        for i, share in shares[system].items():
            if i in shares[before]:
                was, now = passed(shares[before][i]), passed(share)
                if was and not now:
                    view(i).regressed.append(system)
                elif now and not was:
                    view(i).fixed.append(system)


def _pairwise_answers(run_dir: Path, judge: str, systems: list[str], view) -> None:
    """A pairwise judge's verdicts, and the answers it compared where no execution judge showed them."""
    for system in systems:
        rows = pairwise_rows(run_dir, judge, system)
        for row in rows or ():
            v = view(row["example_id"])
            v.verdicts.append(Verdict(system=system, baseline=str(row.get("baseline", "")), verdict=row["verdict"],
                                      judge_ab=row.get("judge_ab"), judge_ba=row.get("judge_ba")))
            if not any(a.system == system for a in v.answers):  # a task without tests: the judge's copy
                v.answers.append(Answer(system=system, judge=judge, sample=0, status=None, reason="",
                                        text=str(row.get("completion") or ""), source=eval_path(run_dir, judge, system).name))
            baseline = str(row.get("baseline", ""))
            if baseline and not any(a.system == baseline for a in v.answers):
                v.answers.append(Answer(system=baseline, judge=judge, sample=0, status=None, reason="",
                                        text=str(row.get("baseline_completion") or ""),
                                        source=eval_path(run_dir, judge, system).name))


def _prompts(run_dir: Path) -> dict[str, str]:
    path = run_dir / "eval" / EXAMPLES_FILE
    if not path.exists():
        return {}
    out = {}
    for n, row in enumerate(read_jsonl(path, remedy=AGAIN), 1):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("prompt"), str):
            raise DpokdError(f"{path}: line {n} has no id or prompt; {AGAIN}")
        prompt = row["prompt"]
        if isinstance(row.get("input"), str) and row["input"] and row["input"] not in prompt:
            prompt += "\n\n" + row["input"]
        out[row["id"]] = prompt
    return out
