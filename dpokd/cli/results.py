"""Commands that read finished runs: the leaderboard in the terminal, the HTML report."""

from __future__ import annotations

from pathlib import Path

import click

from ._console import console


@click.command("leaderboard")
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "md", "csv", "json"]), default="table", show_default=True)
@click.option("--against", metavar="SYSTEM", default=None,
              help="The reference of every Δpass@1 (default: student@base); each checkpoint is also compared with the one before.")
def leaderboard_command(run_dirs: tuple[Path, ...], fmt: str, against: str | None) -> None:
    """Show the results of RUN_DIRS (default: every run under runs/)."""
    from ..leaderboard import render
    from ..scoring.rows import load_rows

    if not run_dirs:
        run_dirs = tuple(sorted(p.parent for p in Path("runs").glob("*/results.json")))
        if not run_dirs:
            raise click.UsageError("no finished runs under runs/; pass RUN_DIR")
    render(load_rows(list(run_dirs), against=against), fmt, console(wide_pipe=False))


@click.command("view")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True,
                type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The HTML file to write (default: RUN_DIR/report.html for one run, ./report.html for several).")
@click.option("--against", metavar="SYSTEM", default=None, help="The reference of every Δpass@1 (default: student@base).")
@click.option("--versus", metavar="B[:SYSTEM]", default=None,
              help="Also show each seed group's Δ against this run or seed group over seeds (as `dpokd compare`).")
@click.option("--open", "open_it", is_flag=True, help="Open the report in the default browser.")
def view_command(run_dirs: tuple[Path, ...], output: Path | None, against: str | None, versus: str | None,
                 open_it: bool) -> None:
    """Write one self-contained HTML report of RUN_DIRS: leaderboard, curves, every answer, the pairs.

    It needs no server and no network: open it from disk, mail it, attach it to a paper.
    """
    from ..report import write_report

    if output is None:
        output = run_dirs[0] / "report.html" if len(run_dirs) == 1 else Path("report.html")
    path = write_report(list(run_dirs), output, against=against, versus=versus)
    click.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if open_it:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


@click.command("compare")
@click.argument("a", metavar="A[:SYSTEM]")
@click.argument("b", metavar="B[:SYSTEM]")
@click.option("--metric", default="pass@1", show_default=True, help="The per-example metric compared.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def compare_command(a: str, b: str, metric: str, fmt: str) -> None:
    """Δ of A's system over B's across the seeds both ran, paired example by example within each seed.

    A and B are each a run directory or a seed group: runs/x stands for runs/x and runs/x-seed1,
    runs/x-seed2, ... (what `dpokd run SPEC --seed N` makes). SYSTEM defaults to each run's last
    student checkpoint. The Δ is the mean of the per-seed paired Δs, with the t-interval over seeds.
    """
    import json

    from ..leaderboard import render_group_delta
    from ..scoring.groups import group_delta, parse_side

    found = group_delta(parse_side(a), parse_side(b), metric)
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
        return
    render_group_delta(found, console(wide_pipe=False))
