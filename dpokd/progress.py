"""Progress bars: a rich bar on a terminal, nothing elsewhere (logs and CI stay clean)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from .interfaces import Context

Advance = Callable[..., None]


@contextmanager
def progress(context: Context, label: str, total: int) -> Iterator[Advance]:
    """``with progress(ctx, "teacher", n) as advance: advance(1, status="$0.01")``."""
    console = context.console
    if not total or console is None or not console.is_terminal:
        yield lambda n=1, status="": None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=True)
    task = bar.add_task(label, total=total, status="")
    with bar:
        yield lambda n=1, status="": bar.update(task, advance=n, status=status)
