"""Progress bars: a rich bar on a terminal; elsewhere (CI logs, ``| tee``) a few plain lines.

A redrawn bar in a log file is a wall of control codes, so off a terminal each bar becomes one
line at every quarter of the way and one at the end.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from .interfaces import Context

Advance = Callable[..., None]
PLAIN_MARKS = 4  # lines per bar off a terminal (at 25 %, 50 %, 75 % and done)


@contextmanager
def progress(context: Context, label: str, total: int) -> Iterator[Advance]:
    """``with progress(ctx, "teacher", n) as advance: advance(1, status="$0.01")``."""
    console = context.console
    if not total or console is None:
        yield lambda n=1, status="": None
        return
    if not console.is_terminal:
        yield _plain(console, label, total)
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _rate_column(),
                   TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=console, transient=True)
    task = bar.add_task(label, total=total, status="")
    with bar:
        yield lambda n=1, status="": bar.update(task, advance=n, status=status)


def _plain(console, label: str, total: int) -> Advance:
    start = time.monotonic()
    state = {"done": 0, "mark": 0}

    def advance(n: int = 1, status: str = "") -> None:
        state["done"] = min(total, state["done"] + n)
        mark = state["done"] * PLAIN_MARKS // total
        if mark > state["mark"]:
            state["mark"] = mark
            tail = f" {status}" if status else ""
            elapsed = time.monotonic() - start
            rate = state["done"] / elapsed if elapsed > 0 else 0.0
            eta = f" ETA {(total - state['done']) / rate:.0f}s" if rate and state["done"] < total else ""
            console.print(f"{label}: {state['done']}/{total} ({100 * state['done'] // total}%) "
                          f"{elapsed:.1f}s {rate:.1f}/s{eta}{tail}", markup=False, highlight=False)

    return advance


def _rate_column():
    """Items a second, as rich measures them (over the last 30 s)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f}/s" if task.speed else "")

    return Rate()
