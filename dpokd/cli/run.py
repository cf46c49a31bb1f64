"""Commands that take a spec: run it, train once on its pairs, check it, plan its cost."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import DpokdError
from ._console import console, escape


@click.command("run")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--offline", is_flag=True, envvar="DPOKD_OFFLINE", help="Replay every API answer from the cache; a miss is an error (exit 3).")
@click.option("--fresh", is_flag=True, help="Discard an existing run directory of this spec and start over.")
@click.option("--retry-refused", is_flag=True, help="Ask again where the cache holds a provider's refusal (a safety block).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None,
              help="Run SPEC with this seed instead of its [run] seed, into its own run directory NAME-seedN.")
def run_command(spec: Path, offline: bool, fresh: bool, retry_refused: bool, seed: int | None) -> None:
    """Run the experiment SPEC end to end (resumes an unfinished run).

    SPEC may be a replay bundle from `dpokd export` (run.tar.gz): it is replayed into run.replay/
    beside it, from the bundle's cache, and its results are compared with the exported ones.
    `dpokd leaderboard` shows runs that differ only in their seed as one group too.
    """
    from ..bundle import compare, is_bundle, open_bundle
    from ..engine import run_spec
    from ..spec import load_spec

    if offline and retry_refused:
        raise click.UsageError("--retry-refused asks the provider again, which --offline forbids; use one of them")
    if is_bundle(spec):
        if seed is not None:
            raise click.UsageError("--seed runs a spec with another seed; a bundle replays its own run as it was")
        out = console()
        loaded, exported = open_bundle(spec)
        run_dir = run_spec(loaded, offline=offline, fresh=fresh, console=out, retry_refused=retry_refused)
        compare(run_dir, exported, out)
        return
    loaded = load_spec(spec)
    run_spec(loaded if seed is None else loaded.with_seed(seed), offline=offline, fresh=fresh, console=console(),
             retry_refused=retry_refused)


@click.command("train")
@click.argument("spec", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--pairs", "pairs_path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Preference pairs (JSONL with prompt, chosen, rejected), e.g. a run's iter_K/pairs.jsonl.")
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Where the adapter and train log go.")
@click.option("--adapter", type=click.Path(file_okay=False, exists=True, path_type=Path), help="Continue from this adapter.")
def train_command(spec: Path, pairs_path: Path, output: Path, adapter: Path | None) -> None:
    """Train SPEC's student once on PAIRS: the script to give torchrun or accelerate launch.

    \b
    torchrun --nproc_per_node 2 -m dpokd train SPEC --pairs iter_1/pairs.jsonl --output out/
    """
    from ..engine import train_once
    from ..spec import load_spec

    click.echo(json.dumps(train_once(load_spec(spec), pairs_path, output, adapter)))


@click.command("validate")
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate_command(specs: tuple[Path, ...]) -> None:
    """Check SPECS without running them, their API models against litellm's model map included.

    A path another run will make (an adapter a spec trains) need not exist yet: it is a note, not an error.
    """
    from ..models import check_spec
    from ..spec import load_spec

    out, err = console(), console(stderr=True)
    failed = 0
    for path in specs:
        try:
            spec = load_spec(path, allow_pending=True)
        except DpokdError as exc:
            failed += 1
            err.print(f"[red]invalid[/] {escape(str(exc))}")
            continue
        _print_notes(spec, err)
        issues = check_spec(spec)
        for issue in issues:
            label = "[red]invalid[/]" if issue.level == "error" else "[yellow]warning[/]"
            err.print(f"{label} {escape(f'{path}: {issue}')}")
        if any(issue.level == "error" for issue in issues):
            failed += 1
        else:
            out.print(f"[green]ok[/] {path} ({spec.run.mode}, {_summary(spec)})")
    if failed:
        click.get_current_context().exit(2)  # main maps the status, as for every command


def _print_notes(spec, err) -> None:
    """One line per path the spec names that a run will need and another run makes."""
    for note in spec.notes:
        err.print(f"[cyan]note[/] {escape(f'{spec.path}: {note}')}")


def _summary(spec) -> str:
    """What a valid spec runs, in a few words: teacher -> student, and the extra systems."""
    parts = []
    if spec.teacher is not None and spec.student is not None:
        parts.append(f"{spec.teacher.plugin} -> {spec.student.plugin}")
    if spec.systems:
        parts.append(f"{len(spec.systems)} systems: {', '.join(s.name for s in spec.systems)}")
    return "; ".join(parts) or ", ".join(c.plugin for c in (spec.teacher, spec.student) if c is not None)


@click.command("plan")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def plan_command(spec: Path, fmt: str) -> None:
    """What running SPEC will ask and cost (requests, tokens, dollars, keys, memory); asks nothing.

    A path another run will make (an adapter a spec trains) need not exist yet: it is noted on stderr.
    """
    from ..plan import make_plan, render
    from ..spec import load_spec

    loaded = load_spec(spec, allow_pending=True)
    _print_notes(loaded, console(stderr=True))
    result = make_plan(loaded)
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        render(result, console())
