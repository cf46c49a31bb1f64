"""The leaderboard: one row per (run, system), one column per metric, the best of each highlighted."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .errors import DpokdError
from .runs import RunDir, read_jsonl

# Columns first in this order; any other metric follows alphabetically.
ORDER = ("pass@1", "pass@10", "pass@100", "win_rate", "consistency", "teacher_nll", "answer_chars", "tokens", "cost_usd")


def load_rows(run_dirs: list[Path]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    better: dict[str, bool] = {}
    for run_dir in run_dirs:
        run = RunDir(run_dir)
        if not (run.path / "results.json").exists():
            raise DpokdError(f"{run_dir}: no results.json; the run has not finished (re-run its spec to resume)")
        for score in run.results():
            row = rows.setdefault((run.path.name, score.system), {"run": run.path.name, "system": score.system})
            row[score.metric] = score.value
            if score.ci is not None:
                row[f"{score.metric}_ci"] = list(score.ci)
            better[score.metric] = score.higher_is_better
    out = list(rows.values())
    for row in out:
        row["_better"] = better
    return out


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    metrics = {k for r in rows for k in r if k not in ("run", "system", "_better") and not k.endswith("_ci")}
    return [m for m in ORDER if m in metrics] + sorted(metrics - set(ORDER))


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
    plain = [{"run": r["run"], "system": r["system"],
              **{c: r.get(c) for c in columns}, **{f"{c}_ci": r[f"{c}_ci"] for c in columns if f"{c}_ci" in r}}
             for r in rows]
    if fmt == "json":
        console.out(json.dumps(plain, indent=2), highlight=False)
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["run", "system", *columns])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if not k.endswith("_ci")} for r in plain)
        console.out(buffer.getvalue().rstrip(), highlight=False)
        return
    best = _best(rows, columns)
    cells = [[r["run"], r["system"], *[_fmt(r.get(c), r.get(f"{c}_ci"), c) for c in columns]] for r in rows]
    if fmt == "table":
        return _table(rows, columns, best, console)
    if fmt == "md":
        lines = ["| run | system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
        for r, row in zip(rows, cells):
            marked = [f"**{v}**" if i >= 2 and best.get(columns[i - 2]) == id(r) else v for i, v in enumerate(row)]
            lines.append("| " + " | ".join(marked) + " |")
        console.out("\n".join(lines), highlight=False)
        return


def _table(rows: list[dict[str, Any]], columns: list[str], best: dict[str, int], console) -> None:
    """The terminal table: a confidence interval gets a column of its own, so that rows stay one line."""
    from rich.table import Table

    runs = sorted({r["run"] for r in rows})
    one_run = len(runs) == 1
    table = Table(title=f"dpokd leaderboard: {runs[0]}" if one_run else "dpokd leaderboard")
    for name in (["system"] if one_run else ["run", "system"]):
        table.add_column(name, no_wrap=True)
    with_ci = {c for c in columns if any(f"{c}_ci" in r for r in rows)}
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
        if column in with_ci:
            table.add_column("95% CI", justify="right", no_wrap=True, style="dim")
    for r in rows:
        cells = [] if one_run else [r["run"]]
        cells.append(r["system"])
        for column in columns:
            text = _fmt(r.get(column), metric=column)
            cells.append(f"[bold green]{text}[/]" if best.get(column) == id(r) else text)
            if column in with_ci:
                ci = r.get(f"{column}_ci")
                cells.append(f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "")
        table.add_row(*cells)
    console.print(table)


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
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
