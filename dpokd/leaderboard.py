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


def _fmt(value: Any, ci: Any = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.3f}" if isinstance(value, float) and abs(value) < 1000 else f"{value:,.0f}"
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
    cells = [[r["run"], r["system"], *[_fmt(r.get(c), r.get(f"{c}_ci")) for c in columns]] for r in rows]
    if fmt == "md":
        lines = ["| run | system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
        for r, row in zip(rows, cells):
            marked = [f"**{v}**" if i >= 2 and best.get(columns[i - 2]) == id(r) else v for i, v in enumerate(row)]
            lines.append("| " + " | ".join(marked) + " |")
        console.out("\n".join(lines), highlight=False)
        return
    from rich.table import Table

    table = Table("run", "system", *columns, title="dpokd leaderboard")
    for r, row in zip(rows, cells):
        table.add_row(*[f"[bold green]{v}[/]" if i >= 2 and best.get(columns[i - 2]) == id(r) else v
                        for i, v in enumerate(row)])
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
