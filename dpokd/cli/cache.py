"""``dpokd cache``: inspect, empty or convert the response cache."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("cache")
def cache_group() -> None:
    """Inspect or empty the response cache."""


def _no_cache(cache_dir: Path) -> bool:
    """Say so where ``cache_dir`` holds no cache, rather than make an empty one to report on."""
    from ..cache import CacheLayout

    if CacheLayout(cache_dir).exists():
        return False
    click.echo(f"no dpokd cache at {cache_dir}/ (no responses/ or batches/ folder); a run makes one in its "
               "[run] cache_dir, and --cache-dir names another")
    return True


_cache_dir = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("cache"), show_default=True)


@cache_group.command("stats")
@_cache_dir
def cache_stats(cache_dir: Path) -> None:
    """Entries, size, and the hits and misses of the last run."""
    from ..cache import ResponseCache

    if _no_cache(cache_dir):
        return
    stats = ResponseCache(cache_dir).stats()
    for key, value in stats.items():
        click.echo(f"{key}: {value}")


@cache_group.command("clear")
@_cache_dir
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--refused", is_flag=True, help="Delete only the cached refusals (safety blocks): the next run asks those prompts again.")
@click.option("--key", "keys", multiple=True, help="Delete only this entry (e.g. a damaged one an error named); repeatable.")
def cache_clear(cache_dir: Path, yes: bool, refused: bool, keys: tuple[str, ...]) -> None:
    """Delete cached answers (they will be paid for again): all, the refusals, or the entries named."""
    from ..cache import ResponseCache

    if refused and keys:
        raise click.UsageError("--refused and --key each choose what to delete; use one of them")
    if _no_cache(cache_dir):
        return
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


@cache_group.command("upgrade")
@_cache_dir
def cache_upgrade(cache_dir: Path) -> None:
    """Convert a cache an earlier dpokd wrote (Python pickles) to JSON, in place. Only for a cache you
    trust: converting reads its pickles, and a pickle can run code."""
    from ..cache import CacheLayout, upgrade

    if not CacheLayout(cache_dir).exists():
        raise click.UsageError(f"{cache_dir} holds no dpokd cache (no responses/ or batches/ folder)")
    converted, entries = upgrade(cache_dir)
    click.echo(f"converted {converted} of {entries} entries to JSON in {cache_dir}")
