"""Ctrl-C that stops a run even when a library swallowed its KeyboardInterrupt.

Python only prints an exception raised in a finalizer or a ``__del__``, so a Ctrl-C that lands
there is lost and the run would go on. The CLI's handler also remembers it, and the engine checks
at every stage boundary.
"""

from __future__ import annotations

import signal
import sys
import threading

_pressed = threading.Event()


def install() -> None:
    """Let Ctrl-C raise KeyboardInterrupt, as Python's own handler does, and remember it."""

    def handler(signum, frame):
        _pressed.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    default = sys.unraisablehook

    def unraisable(info):
        if not issubclass(info.exc_type, KeyboardInterrupt):  # remembered: no traceback for it
            default(info)

    sys.unraisablehook = unraisable


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, whoever swallowed it."""
    if _pressed.is_set():
        raise KeyboardInterrupt
