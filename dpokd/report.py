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

from pydantic import ValidationError

from .curves import curves_png
from .errors import DpokdError
from .leaderboard import (SEED_NOTE, fmt_calibration, fmt_delta, fmt_spread, fmt_value, fmt_verdict, seed_title,
                          short_name, spread_headers)
from .records import TRUNCATED_FINISH_REASONS, Example, Outcome, PreferencePair
from .runs import RunDir, read_json, read_jsonl, write_jsonl
from .scoring.outcomes import AGAIN, eval_path, passed
from .scoring.rows import (EXTRAS, SPREAD, convergence_notes, delta_metric, load_rows, metric_columns, paired_shares,
                           plain_rows, previous_checkpoint, reference_names, run_labels, run_outcomes, truth_names,
                           verdicts)
from .scoring.groups import SEEDED, Side, group_delta, parse_side
from .scoring.seeds import plain_seed_rows, seed_groups, seed_rows

EXAMPLES_FILE = "examples.jsonl"  # under eval/: the prompts the judges asked, by id
MAX_CHARS = 20_000  # per shown text; the eval files keep every character
MAX_PAIRS = 300  # kept and dropped pairs shown per iteration; the JSONL files hold all
_ITER = re.compile(r"iter_(\d+)")
# What an answer's badge colour says (report.html colours these statuses; any other label is grey).
BADGE_MEANINGS = {
    "passed": "it passed the judge's check (every test, for code)",
    "failed": "it failed the check",
    "error": "the code could not be run or checked (it did not load, ran out of memory, printed too much)",
    "timeout": "stopped at the time limit",
}


def record_examples(run_dir: Path, examples: list[Example]) -> None:
    """Write the judged examples' prompts to ``eval/examples.jsonl``, so the report can show them."""
    seen: dict[str, dict[str, Any]] = {}
    for e in examples:
        seen.setdefault(e.id, {"id": e.id, "prompt": e.prompt, "input": e.input})
    write_jsonl(Path(run_dir) / "eval" / EXAMPLES_FILE, list(seen.values()))


def write_report(run_dirs: list[Path], output: Path, against: str | None = None, versus: str | None = None) -> Path:
    """Render the report of ``run_dirs`` to ``output``; returns ``output``."""
    html = render_report(run_dirs, against, versus)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(output)
    return output


def render_report(run_dirs: list[Path], against: str | None = None, versus: str | None = None) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    rows = load_rows(list(run_dirs), against=against)
    plain = plain_rows(rows)
    groups, skipped = seed_groups(rows)
    by_seed = plain_seed_rows(seed_rows(rows, groups))
    runs = [_run_view(path, label, [r for r in plain if r["run"] == label]) for path, label in run_labels(run_dirs).items()]
    env = Environment(loader=PackageLoader("dpokd", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda value, metric="": fmt_value(value, metric=metric)
    env.filters["clip"] = _clip
    env.filters["jsonattr"] = lambda value: json.dumps(value)  # for data- attributes; autoescaped like any text
    # The page's one script is allowed by its hash (CSP): no other inline script or handler could run.
    script = env.loader.get_source(env, "report.js")[0]
    script_hash = "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    systems = list(dict.fromkeys(s for run in runs for s in run.systems))
    statuses = sorted({a.status for run in runs for e in run.examples for a in e.answers if a.status})
    return env.get_template("report.html").render(
        title="dpokd report: " + ", ".join(run.name for run in runs),
        columns=metric_columns(rows), rows=plain, runs=runs, systems=systems, statuses=statuses,
        fmt_delta=fmt_delta, fmt_calibration=fmt_calibration, short_name=short_name, extras=EXTRAS,
        has=lambda key: any(r.get(key) for r in plain), reference=reference_names(rows), truth=truth_names(rows),
        delta_metric=delta_metric(rows),
        data={"previous": {run.name: run.previous for run in runs}}, script=script, script_hash=script_hash,
        notes=convergence_notes(rows) + skipped, seeds=by_seed, seed_columns=metric_columns(by_seed), spread_key=SPREAD,
        spread_headers=spread_headers, fmt_spread=fmt_spread, seed_title=seed_title(by_seed) if by_seed else "",
        seed_note=SEED_NOTE, seed_groups=len(groups), legend=badge_legend(statuses, runs),
        verdicts=[(v, fmt_verdict(v, with_run=len(runs) > 1)) for v in verdicts(rows)],
        versus=_versus(groups, versus),
    )


def _versus(groups: list[list[tuple[int, Path]]], versus: str | None) -> list[dict[str, Any]]:
    """Each seed group's last checkpoint against ``versus`` (``dpokd compare``'s B), the group itself left out."""
    if versus is None:
        return []
    b = parse_side(versus)
    found = []
    for members in groups:
        runs = dict(members)
        if set(runs.values()) & {p.resolve() for p in b.runs.values()}:
            continue
        found.append(group_delta(Side(SEEDED.sub("", runs[min(runs)].name), runs, None), b))
    return found


def badge_legend(statuses: list[str], runs: list[RunView]) -> list[tuple[str, str]]:
    """(status, meaning) of each badge colour the page shows: a number alone tells a first-time reader nothing."""
    legend = [(s, f"{s}: {BADGE_MEANINGS[s]}") for s in BADGE_MEANINGS if s in statuses]
    others = [s for s in statuses if s not in BADGE_MEANINGS]
    grey = [f"the judge's own label ({', '.join(others)})"] if others else []
    if any(a.status is None for run in runs for e in run.examples for a in e.answers):
        grey.append("not run (the judge has no tests)")
    return legend + ([("none", "grey: " + " or ".join(grey))] if grey else [])


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
    verdict: str | None  # "ours", "base", "tie", "disagree" (the orders disagreed), or None: no verdict
    words: str  # the judge's own words


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
        if not pairs_path.exists() and not stats_path.exists():
            continue
        # An iteration with no pairs has no pairs.jsonl, only its counts.
        rows = [_as_text(r) for r in read_jsonl(pairs_path)] if pairs_path.exists() else []
        kept = [r for r in rows if not r.get("previous")]
        kept_ids = {r.get("example_id") for r in kept}
        stats = read_json(stats_path) if stats_path.exists() else {}
        dropped = []
        if rejected_path.exists() and teacher:
            for r in read_jsonl(rejected_path):
                i = r.get("example_id")
                good = teacher.get(i)
                if i in kept_ids or good is None:
                    continue
                dropped.append({"example_id": i, "reason": _drop_reason(good, r, stats), "chosen": good.get("text", ""),
                                "rejected": r.get("text", "")})
        out.append({"iteration": k, "stats": stats,
                    "kept": kept[:MAX_PAIRS], "kept_total": len(kept),
                    "previous": len(rows) - len(kept), "dropped": dropped[:MAX_PAIRS], "dropped_total": len(dropped)})
    return out


def _drop_reason(good: dict[str, Any], bad: dict[str, Any], stats: Any) -> str:
    """Why the engine left this train prompt out of the pairs, in the order it asks (``engine._dropped``).

    Truncation is a reason only where the iteration dropped for it: not with ``run.keep_truncated``,
    nor in runs an older dpokd made, whose ``pairs_stats.json`` has no ``teacher_truncated``."""
    if not good.get("ok", True):
        return "teacher failure: " + str(good.get("error") or "no answer")
    dropped_truncated = isinstance(stats, dict) and stats.get("teacher_truncated")
    if dropped_truncated and good.get("finish_reason") in TRUNCATED_FINISH_REASONS:
        return "truncated: the teacher's answer hit max_tokens"
    if str(good.get("text", "")).strip() == str(bad.get("text", "")).strip():
        return "identical: the student already answers as the teacher"
    return "unverified: the teacher's code does not pass or the student's does"


def _as_text(row: dict[str, Any]) -> dict[str, Any]:
    """A pair as the page shows it: a conversational pair's messages as text (the pairs file keeps them)."""
    try:
        pair = PreferencePair.model_validate(row)
    except (ValidationError, DpokdError):  # a row the page shows as it is
        return row
    return {**row, "prompt": pair.text_prompt, "chosen": pair.chosen, "rejected": pair.rejected}


def _examples(run_dir: Path, scores, systems: list[str]) -> tuple[list[ExampleView], dict[str, str]]:
    """Every judged example with each system's answers, verdicts, and the checkpoints that regressed or fixed it."""
    outcomes = run_outcomes(run_dir, scores)
    prompts = _prompts(run_dir)
    views: dict[str, ExampleView] = {}

    def view(i: str) -> ExampleView:
        if i not in views:
            views[i] = ExampleView(id=i, prompt=prompts.get(i))
        return views[i]

    for (judge, system), items in outcomes.items():  # answers first: a comparison's copies only fill gaps
        source = eval_path(run_dir, judge, system).name
        for o in items:
            if o.against is None:
                view(o.example_id).answers.append(Answer(
                    system=system, judge=judge, sample=o.sample, status=_status(o), reason=o.detail, text=o.answer,
                    source=source))
    for (judge, system), items in outcomes.items():
        for o in items:
            if o.against is not None:
                _add_verdict(view(o.example_id), o, eval_path(run_dir, judge, system).name)
    previous = _regressions(paired_shares(outcomes), view)
    order = {s: n for n, s in enumerate(systems)}
    for v in views.values():
        v.answers.sort(key=lambda a: (order.get(a.system, len(order)), a.judge, a.sample))
    return list(views.values()), previous


def _status(o: Outcome) -> str | None:
    """The answer's badge: a pass or fail is coloured as one, unless its label is a status of its own
    (the sandbox's timeout or error); any other outcome shows its label."""
    if isinstance(o.value, bool) and o.label not in BADGE_MEANINGS:
        return "passed" if o.value else "failed"
    return o.label


def _add_verdict(v: ExampleView, o: Outcome, source: str) -> None:
    """A comparing judge's verdict, and the answers it compared where no other judge showed them."""
    v.verdicts.append(Verdict(system=o.system, baseline=o.against or "", verdict=o.label, words=o.detail))
    for system, text in ((o.system, o.answer), (o.against, o.against_answer)):
        if system and not any(a.system == system for a in v.answers):  # a task without tests: the judge's copy
            v.answers.append(Answer(system=system, judge=o.judge, sample=0, status=None, reason="", text=text or "",
                                    source=source))


def _regressions(shares, view) -> dict[str, str]:
    """The examples each checkpoint regressed or fixed against the one before it, by the paired pass or
    fail metric; each checkpoint's previous one."""
    previous: dict[str, str] = {}
    for system, (judge, _, own, binary) in shares.items():
        before = previous_checkpoint(system, shares)
        if before is None or not binary or shares[before][0] != judge:
            continue
        previous[system] = before
        for i, share in own.items():
            if i in shares[before][2]:
                was, now = passed(shares[before][2][i]), passed(share)
                if was and not now:
                    view(i).regressed.append(system)
                elif now and not was:
                    view(i).fixed.append(system)
    return previous


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
