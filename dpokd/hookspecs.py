"""The hooks a dpokd plugin can implement. Each takes a ``register`` callback, as in ``llm``."""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("dpokd")
hookimpl = pluggy.HookimplMarker("dpokd")

Register = Callable[..., None]

# -- components a spec can name --------------------------------------------------------------


@hookspec
def register_tasks(register: Register) -> None:
    """Register Task classes: ``register(cls, aliases=())``."""


@hookspec
def register_teachers(register: Register) -> None:
    """Register Teacher classes: ``register(cls, aliases=())``."""


@hookspec
def register_students(register: Register) -> None:
    """Register Student classes: ``register(cls, aliases=())``."""


@hookspec
def register_judges(register: Register) -> None:
    """Register Judge classes: ``register(cls, aliases=())``."""


# -- the command line ------------------------------------------------------------------------


@hookspec
def register_commands(cli: Any) -> None:
    """Add click commands to the ``dpokd`` group: ``@cli.command()``."""
