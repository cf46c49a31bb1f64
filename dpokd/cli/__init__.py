"""The ``dpokd`` command line. The only place that turns errors into exit codes.

0 success, 1 a bug (with its traceback) or a declined confirmation, 2 a bad spec or usage, 3 an
offline cache miss, 4 a stage stopped on purpose (failure share: re-run to resume; budget: raise
max_usd), 130 interrupted by Ctrl-C (SIGINT; re-run to resume).

Each command lives in the module named for what it does; they load their work when they run.
"""

from __future__ import annotations

import os
import sys

import click

from .. import __version__, interrupt
from ..errors import DpokdError
from ._console import console, escape
from .cache import cache_group
from .humaneval import humaneval_command
from .plugins import plugins_command
from .results import compare_command, leaderboard_command, view_command
from .run import plan_command, run_command, train_command, validate_command
from .share import export_command, push_command


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


for _command in (run_command, train_command, validate_command, plan_command, plugins_command, leaderboard_command,
                 compare_command, view_command, humaneval_command, cache_group, export_command, push_command):
    cli.add_command(_command)

INTERRUPTED = "interrupted; re-run the same command to resume"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line and an exit code; bugs keep tracebacks."""
    args = sys.argv[1:] if argv is None else list(argv)
    for arg in args:  # before the first console is made
        if arg == "--no-color":
            os.environ["NO_COLOR"] = "1"
        if not arg.startswith("-"):
            break
    err = console(stderr=True)
    interrupt.install()
    _deprecations_on_one_line(err)
    try:
        code = _run(args, err)
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


def _run(args: list[str], err) -> int | None:
    """Add the plugins' commands, report broken plugin packages, then run the command line."""
    from ..registry import STRICT_ENV, registry, strict_mode

    reg = registry()
    reg.add_commands(cli)
    broken = [] if args[:1] == ["plugins"] else reg.broken  # `plugins` lists them itself
    for b in broken:
        if strict_mode():
            err.print(f"[red]error:[/] plugin package {escape(b.summary)} ({STRICT_ENV}=1; "
                      "`dpokd plugins --traceback` shows why)")
        else:
            err.print(f"[yellow]warning:[/] plugin package {escape(b.summary)}; its plugins are not "
                      "available (`dpokd plugins --traceback` shows why)")
    if broken and strict_mode():
        return 2
    return cli.main(args=args, prog_name="dpokd", standalone_mode=False)


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

