"""Prompt templates in Python's format syntax: checked against the fields there are, then filled."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..errors import ConfigError


def check_template(template: str | None, fields: Iterable[str]) -> str | None:
    """``template`` if it fills from ``fields`` alone, else ``ValueError`` (call it from an option's validator).

    Checked when the spec is validated, since a field the data lacks would otherwise fail on the
    first example, after ``dpokd validate`` said yes. ``None`` (no template given) passes.
    """
    if template is None:
        return None
    names = list(fields)
    try:
        template.format(**{name: "x" for name in names})
    except (KeyError, IndexError, ValueError) as exc:
        braced = ", ".join(f"{{{name}}}" for name in names)
        what = f"the one field {braced}" if len(names) == 1 else f"the fields {braced}" if names else "no fields"
        raise ValueError(f"not a template with {what} ({type(exc).__name__}: {exc}); got {template!r}") from None
    return template


def render(template: str, values: Mapping[str, Any]) -> str:
    """``template`` filled from ``values``; a field missing from them is a ``ConfigError`` naming those there are."""
    try:
        return template.format(**values)
    except KeyError as exc:
        raise ConfigError(f"the template {template[:60]!r} needs the field {{{exc.args[0]}}}, not among "
                          f"{', '.join(map(str, values)) or 'no fields'}") from None
