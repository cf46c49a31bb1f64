"""The leaderboard: one row per (run, system), one column per metric, the best of each highlighted.

Execution scores are paired (every system answers the same examples), so each student checkpoint
also gets its Δpass@1 against a reference (``student@base`` unless ``--against``) and against the
previous checkpoint, with a paired bootstrap CI and McNemar's exact p. Where an LLM pairwise judge
ran beside an execution judge, its calibration against execution is shown too.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from .errors import DpokdError
from .outcomes import execution_rows, pairwise_rows, pass_shares, passed
from .runs import RunDir, read_jsonl
from .stats import calibration, compare

# Columns first in this order; any other metric follows alphabetically.
ORDER = ("pass@1", "pass@10", "pass@100", "win_rate", "consistency", "teacher_nll", "answer_chars", "tokens", "cost_usd")
REFERENCE = "student@base"
PAIRED_METRIC = "pass@1"
# Row keys that are not metric columns: the paired comparisons and the judge's calibration.
EXTRAS = ("vs_ref", "vs_prev", "judge_calibration")
_CHECKPOINT = re.compile(r"student@iter_(\d+)")


def load_rows(run_dirs: list[Path], against: str | None = None) -> list[dict[str, Any]]:
    """The rows of every run, each with its comparisons; ``against`` names the reference system."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    better: dict[str, bool] = {}
    for run_dir in run_dirs:
        run = RunDir(run_dir)
        if not (run.path / "results.json").exists():
            raise DpokdError(f"{run_dir}: no results.json; the run has not finished (re-run its spec to resume)")
        judges: dict[str, str] = {}  # system -> the judge whose pass@1 the row shows
        pairwise: dict[str, tuple[str, str]] = {}  # system -> (pairwise judge, its baseline)
        for score in run.results():
            row = rows.setdefault((run.path.name, score.system), {"run": run.path.name, "system": score.system})
            row[score.metric] = score.value
            if score.ci is not None:
                row[f"{score.metric}_ci"] = list(score.ci)
            better[score.metric] = score.higher_is_better
            if score.metric == PAIRED_METRIC:
                judges[score.system] = score.judge
            if score.metric == "win_rate" and isinstance(score.details.get("baseline"), str):
                pairwise[score.system] = (score.judge, score.details["baseline"])
        of_run = {system: row for (name, system), row in rows.items() if name == run.path.name}
        _add_comparisons(run.path, of_run, judges, against)
        _add_calibration(run.path, of_run, judges, pairwise)
    out = list(rows.values())
    for row in out:
        row["_better"] = better
    return out


def _add_comparisons(run_dir: Path, rows: dict[str, dict[str, Any]], judges: dict[str, str], against: str | None) -> None:
    """Δpass@1 of each system against the reference, and of each checkpoint against the one before it."""
    if against is not None and against not in rows:
        raise DpokdError(f"leaderboard --against: run {run_dir.name} has no system {against!r} "
                         f"(its systems: {', '.join(rows)})")
    reference = against or REFERENCE
    shares = {}
    for system, judge in judges.items():
        found = execution_rows(run_dir, judge, system)
        if found is not None:
            shares[system] = (judge, pass_shares(found))
    if reference not in shares:
        return
    ref_judge, ref_shares = shares[reference]
    for system, (judge, own) in shares.items():
        if system == reference or judge != ref_judge:
            continue
        if against is not None or _CHECKPOINT.fullmatch(system):
            found = compare(own, ref_shares, reference, PAIRED_METRIC)
            if found is not None:
                rows[system]["vs_ref"] = found.as_dict()
        previous = _previous_checkpoint(system, shares)
        if previous is not None and shares[previous][0] == judge:
            found = compare(own, shares[previous][1], previous, PAIRED_METRIC)
            if found is not None:
                rows[system]["vs_prev"] = found.as_dict()


def _previous_checkpoint(system: str, systems) -> str | None:
    """``student@iter_K``'s previous checkpoint among ``systems``: the latest iteration before K, else the base."""
    match = _CHECKPOINT.fullmatch(system)
    if not match:
        return None
    k = int(match.group(1))
    earlier = [int(m.group(1)) for s in systems if (m := _CHECKPOINT.fullmatch(s)) and int(m.group(1)) < k]
    if earlier:
        return f"student@iter_{max(earlier)}"
    return REFERENCE if REFERENCE in systems else None


def _add_calibration(run_dir: Path, rows: dict[str, dict[str, Any]], judges: dict[str, str],
                     pairwise: dict[str, tuple[str, str]]) -> None:
    """On the examples where exactly one of a system and its baseline passes the tests, how often the
    pairwise judge prefers the passing one (accuracy) and its agreement with execution (Cohen's κ)."""
    for system, (judge, baseline) in pairwise.items():
        verdicts = pairwise_rows(run_dir, judge, system)
        execution = judges.get(system)
        if verdicts is None or execution is None or judges.get(baseline) != execution:
            continue
        ours, base = execution_rows(run_dir, execution, system), execution_rows(run_dir, execution, baseline)
        if ours is None or base is None:
            continue
        ours_pass, base_pass = pass_shares(ours), pass_shares(base)
        truth, said = [], []
        for row in verdicts:
            i = row["example_id"]
            if row["verdict"] is None or i not in ours_pass or i not in base_pass:
                continue
            a, b = passed(ours_pass[i]), passed(base_pass[i])
            if a != b:
                truth.append("ours" if a else "base")
                said.append(row["verdict"])
        if not truth and not any(row["example_id"] in ours_pass for row in verdicts):
            continue  # the two judges scored different examples (e.g. HumanEval beside a summary task)
        rows[system]["judge_calibration"] = {"judge": judge, "execution": execution, "baseline": baseline,
                                             **calibration(truth, said).as_dict()}


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    metrics = {k for r in rows for k in r
               if k not in ("run", "system", *EXTRAS) and not k.startswith("_") and not k.endswith("_ci")}
    return [m for m in ORDER if m in metrics] + sorted(metrics - set(ORDER))


def plain_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as ``--format json`` prints them (the report shows exactly these numbers)."""
    columns = _columns(rows)
    return [{"run": r["run"], "system": r["system"], **{c: r.get(c) for c in columns},
             **{f"{c}_ci": r[f"{c}_ci"] for c in columns if f"{c}_ci" in r},
             **{k: r[k] for k in EXTRAS if k in r}}
            for r in rows]


def fmt_delta(comparison: dict[str, Any] | None) -> tuple[str, str, str]:
    """(Δ, its CI, McNemar's p) as the leaderboard prints them."""
    if not comparison:
        return ("", "", "")
    low, high = comparison["ci"]
    return (f"{comparison['delta']:+.3f}", f"{low:+.2f}–{high:+.2f}", fmt_p(comparison["p"]))


def fmt_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_calibration(found: dict[str, Any] | None) -> tuple[str, str, str]:
    """(accuracy, κ, pairs) of the judge's calibration; κ reads "undefined" where it is."""
    if not found:
        return ("", "", "")
    accuracy = "-" if found["accuracy"] is None else f"{found['accuracy']:.3f}"
    kappa = "undefined" if found["kappa"] is None else f"{found['kappa']:.3f}"
    return (accuracy, kappa, str(found["pairs"]))


def short_name(system: str) -> str:
    """``student@iter_2`` -> ``iter_2``: for narrow headers, where the student is understood."""
    return system.removeprefix("student@")


def _reference_names(rows: list[dict[str, Any]]) -> str:
    names = sorted({r["vs_ref"]["against"] for r in rows if r.get("vs_ref")})
    return " / ".join(names) or REFERENCE


INTEGER_METRICS = {"tokens", "wins", "ties", "losses"}


def _fmt(value: Any, ci: Any = None, metric: str = "") -> str:
    if value is None:
        return "-"
    if metric in INTEGER_METRICS or abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.4f}" if metric == "cost_usd" else f"{value:.3f}"
    if ci:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def render(rows: list[dict[str, Any]], fmt: str, console) -> None:
    columns = _columns(rows)
    plain = plain_rows(rows)
    if fmt == "json":
        console.out(json.dumps(plain, indent=2), highlight=False)
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["run", "system", *columns, *_csv_extras(rows)])
        writer.writeheader()
        writer.writerows({**{k: v for k, v in r.items() if k not in EXTRAS and not k.endswith("_ci")}, **_csv_extra(r)}
                         for r in plain)
        console.out(buffer.getvalue().rstrip(), highlight=False)
        return
    best = _best(rows, columns)
    cells = [[r["run"], r["system"], *[_fmt(r.get(c), r.get(f"{c}_ci"), c) for c in columns]] for r in rows]
    if fmt == "table":
        return _table(rows, columns, best, console)
    if fmt == "md":
        extra = _extra_headers(rows)
        lines = ["| run | system | " + " | ".join(columns + extra) + " |", "|---" * (len(columns) + len(extra) + 2) + "|"]
        for r, row in zip(rows, cells):
            marked = [f"**{v}**" if i >= 2 and best.get(columns[i - 2]) == id(r) else v for i, v in enumerate(row)]
            lines.append("| " + " | ".join(marked + _md_extra(r, extra)) + " |")
        console.out("\n".join(lines), highlight=False)
        return


def _extra_headers(rows: list[dict[str, Any]]) -> list[str]:
    headers = []
    if any(r.get("vs_ref") for r in rows):
        headers.append(f"Δ{PAIRED_METRIC} vs {_reference_names(rows)}")
    if any(r.get("vs_prev") for r in rows):
        headers.append(f"Δ{PAIRED_METRIC} vs previous")
    if any(r.get("judge_calibration") for r in rows):
        headers.append("judge vs execution")
    return headers


def _md_extra(r: dict[str, Any], headers: list[str]) -> list[str]:
    cells = []
    for header in headers:
        if header == "judge vs execution":
            accuracy, kappa, pairs = fmt_calibration(r.get("judge_calibration"))
            cells.append(f"accuracy {accuracy}, κ {kappa} ({pairs} pairs)" if pairs else "")
        else:
            found = r.get("vs_prev" if header.endswith("previous") else "vs_ref")
            if not found:
                cells.append("")
                continue
            low, high = found["ci"]
            against = f" (vs {found['against']})" if header.endswith("previous") else ""
            cells.append(f"{found['delta']:+.3f} [{low:+.2f}, {high:+.2f}] p={fmt_p(found['p'])}{against}")
    return cells


_CSV_EXTRAS = {
    "vs_ref": ("ref", "delta_ref", "delta_ref_low", "delta_ref_high", "p_ref"),
    "vs_prev": ("prev", "delta_prev", "delta_prev_low", "delta_prev_high", "p_prev"),
    "judge_calibration": ("judge_pairs", "judge_accuracy", "judge_kappa"),
}


def _csv_extras(rows: list[dict[str, Any]]) -> list[str]:
    return [name for key, names in _CSV_EXTRAS.items() if any(r.get(key) for r in rows) for name in names]


def _csv_extra(r: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("vs_ref", "vs_prev"):
        if found := r.get(key):
            out.update(zip(_CSV_EXTRAS[key], (found["against"], found["delta"], *found["ci"], found["p"])))
    if found := r.get("judge_calibration"):
        out.update(zip(_CSV_EXTRAS["judge_calibration"], (found["pairs"], found["accuracy"], found["kappa"])))
    return out


def _table(rows: list[dict[str, Any]], columns: list[str], best: dict[str, int], console) -> None:
    """The terminal table: a confidence interval gets a column of its own, so that rows stay one line."""
    from rich.markup import escape
    from rich.table import Table

    runs = sorted({r["run"] for r in rows})
    one_run = len(runs) == 1
    table = Table(title=f"dpokd leaderboard: {escape(runs[0])}" if one_run else "dpokd leaderboard")
    for name in (["system"] if one_run else ["run", "system"]):
        table.add_column(name, no_wrap=True)
    with_ci = {c for c in columns if any(f"{c}_ci" in r for r in rows)}
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
        if column in with_ci:
            table.add_column("95% CI", justify="right", no_wrap=True, style="dim")
    deltas = [key for key in ("vs_ref", "vs_prev") if any(r.get(key) for r in rows)]
    for key in deltas:
        against = escape(short_name(_reference_names(rows))) if key == "vs_ref" else "prev"
        table.add_column(f"Δ vs {against}", justify="right", no_wrap=True)
        table.add_column("95% CI", justify="right", no_wrap=True, style="dim")
        table.add_column("p", justify="right", no_wrap=True)
    judged = any(r.get("judge_calibration") for r in rows)
    if judged:
        for name in ("judge acc", "κ", "pairs"):
            table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        cells = [] if one_run else [escape(r["run"])]  # names may hold [brackets], which rich reads as markup
        cells.append(escape(r["system"]))
        for column in columns:
            text = _fmt(r.get(column), metric=column)
            cells.append(f"[bold green]{text}[/]" if best.get(column) == id(r) else text)
            if column in with_ci:
                ci = r.get(f"{column}_ci")
                cells.append(f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "")
        for key in deltas:
            cells += fmt_delta(r.get(key))
        if judged:
            cells += fmt_calibration(r.get("judge_calibration"))
        table.add_row(*cells)
    console.print(table)
    if deltas:
        console.print(f"Δ: the paired difference in {PAIRED_METRIC} on the same examples, its 95% paired bootstrap CI "
                      f"and McNemar's exact p; against {escape(_reference_names(rows))} and, for each checkpoint, the one "
                      "before it (prev)", style="dim")
    if judged:
        console.print("judge acc, κ: where exactly one of a system's and its baseline's answers passes the tests, how "
                      "often the LLM judge prefers the passing one, and Cohen's κ against execution", style="dim")


def _best(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, int]:
    best = {}
    for c in columns:
        scored = [r for r in rows if r.get(c) is not None]
        if len(scored) > 1 and c not in ("tokens", "cost_usd"):
            higher = rows[0]["_better"].get(c, True)
            pick = max(scored, key=lambda r: r[c]) if higher else min(scored, key=lambda r: r[c])
            best[c] = id(pick)
    return best


def plot_curves(run_dir: Path) -> Path | None:
    """Loss and reward margin per step, one line per iteration, saved as curves.png."""
    png = _curves(run_dir)
    if png is None:
        return None
    out = run_dir / "curves.png"
    out.write_bytes(png)
    return out


def curves_png(run_dir: Path) -> bytes | None:
    """The run's curves.png, drawn from its train logs when the file is not there."""
    path = Path(run_dir) / "curves.png"
    return path.read_bytes() if path.is_file() else _curves(Path(run_dir))


def _curves(run_dir: Path) -> bytes | None:
    logs = sorted(run_dir.glob("iter_*/train_log.jsonl"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not logs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for path in logs:
        rows = read_jsonl(path)
        steps = list(range(1, len(rows) + 1))
        for ax, key in zip(axes, ("loss", "rewards/margins")):
            ax.plot(steps, [r.get(key) for r in rows], label=path.parent.name)
    for ax, title in zip(axes, ("DPO loss", "reward margin")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
