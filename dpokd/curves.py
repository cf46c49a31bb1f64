"""The training curves: DPO loss and reward margin per step, one line per iteration."""

from __future__ import annotations

import io
from pathlib import Path

from .runs import read_jsonl


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
    # A Figure of its own with the Agg canvas, not pyplot: no global figure state, no GUI backend
    # chosen, and pyplot's import (half a second) skipped.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
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
    return buffer.getvalue()
