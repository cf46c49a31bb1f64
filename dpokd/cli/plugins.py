"""``dpokd plugins``: the installed plugins, and the packages that failed to load."""

from __future__ import annotations

import json

import click

from ._console import console, escape


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: {\"plugins\": [...], \"broken\": [...]}; each plugin's option_details has every "
                   "option's type, default and description.")
@click.option("--traceback", "-v", "show_traceback", is_flag=True, help="Show the full traceback of each plugin that failed to load.")
def plugins_command(as_json: bool, show_traceback: bool) -> None:
    """List installed tasks, teachers, students and judges, and plugins that failed to load."""
    from ..errors import PluginError
    from ..registry import KINDS, STRICT_ENV, registry, strict_mode

    reg = registry()
    rows = [
        {"kind": e.kind, "name": e.name, "package": e.package, "version": e.version,
         "aliases": list(e.aliases), "description": _described(e.cls), "options": list(e.cls.Options.model_fields),
         "option_details": e.option_details()}
        for kind in KINDS
        for e in reg.entries(kind)
    ]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "broken": [b.as_dict() for b in reg.broken]}, indent=2))
    else:
        _print_tables(rows, reg.broken, show_traceback)
    if reg.broken and strict_mode():
        raise PluginError(f"{len(reg.broken)} plugin package(s) failed to load and {STRICT_ENV}=1 is set")


def _described(cls) -> str:
    """A plugin's one line: the first line of its class's docstring."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0].strip().replace("``", "`") if doc else ""


def _print_tables(rows: list[dict], broken: list, show_traceback: bool) -> None:
    """The plugins as a table, then the broken packages and (asked for) their tracebacks."""
    from rich.table import Table

    out = console()
    table = Table("kind", "name", "package", "what it does")
    for r in rows:
        name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
        table.add_row(r["kind"], escape(name), escape(f"{r['package']} {r['version']}"), escape(r["description"]))
    out.print(table)
    out.print("`dpokd plugins --json` lists each plugin's options, with their types, defaults and descriptions",
              style="dim")
    if not broken:
        return
    failed = Table("package", "version", "error", title="failed to load (their plugins are not available)")
    for b in broken:
        failed.add_row(escape(b.package), escape(b.version), escape(b.error))
    out.print(failed)
    if show_traceback:
        for b in broken:
            out.print(f"\n[bold]{escape(b.label)}[/] (entry point {escape(b.entry_point)})")
            out.out(b.traceback, end="", highlight=False)
    else:
        out.print("`dpokd plugins --traceback` shows why each failed")
