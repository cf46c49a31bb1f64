"""What every command prints with: a rich console and escaping of user text."""

from __future__ import annotations


def escape(text: str) -> str:
    """User text may contain [brackets] (``[student]``) that rich would take for markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def console(stderr: bool = False, wide_pipe: bool = True):
    """A console on stdout (or stderr) that keeps rows on one line when output is piped. Without
    ``wide_pipe``, a pipe keeps the width rich reports (COLUMNS, else 80): for tables that fit any width."""
    from rich.console import Console

    made = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if wide_pipe and not made.is_terminal:
        made.width = 160  # a pipe or a log file has no width: keep tables on one line per row
    return made
