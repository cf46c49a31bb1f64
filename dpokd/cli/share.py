"""Commands that take a finished run elsewhere: a replay bundle, a push to the Hugging Face hub."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bundle to write, e.g. run.tar.gz.")
@click.option("--cache-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="The cache the run used (default: its spec's run.cache_dir).")
def export_command(run_dir: Path, output: Path, cache_dir: Path | None) -> None:
    """Write a replay bundle of the finished run RUN (a run directory, e.g. runs/NAME).

    It holds the resolved spec, the manifest, the results and exactly the cache entries the run
    read. `dpokd run BUNDLE --offline` reproduces the results with no key and no other cache.
    """
    from ..bundle import export as export_bundle

    info = export_bundle(run_dir, output, cache_dir)
    click.echo(f"wrote {output}: spec, manifest, results and {info['entries']} cache entries "
               f"({info['refusals']} refusals), {info['bytes'] / 1024:.1f} KiB")


@click.command("push")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--repo", required=True, metavar="ORG/NAME", help="The model repository on the Hugging Face hub.")
@click.option("--iteration", type=click.IntRange(min=1), default=None, help="The checkpoint to push (default: the last).")
@click.option("--private", is_flag=True, help="Create the repositories private.")
@click.option("--with-pairs", is_flag=True, help="Also push that iteration's pairs and their card to a dataset repository.")
@click.option("--dataset-repo", metavar="ORG/NAME", default=None, help="The dataset repository (default: ORG/NAME-pairs).")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded, and upload nothing.")
def push_command(run_dir: Path, repo: str, iteration: int | None, private: bool, with_pairs: bool, dataset_repo: str | None,
                 dry_run: bool) -> None:
    """Publish RUN_DIR's checkpoint to the hub: the adapter, its model card, results.json and the spec.

    The token comes from HF_TOKEN (or `hf auth login`), the hub from HF_ENDPOINT, as for every hub tool.
    """
    from ..push import plan, push as push_uploads

    uploads = plan(run_dir, repo, iteration=iteration, with_pairs=with_pairs, dataset_repo=dataset_repo)
    if dry_run:
        for upload in uploads:
            click.echo(f"would upload to {upload.repo_type} repository {upload.repo_id}{' (private)' if private else ''}:")
            for name in sorted(upload.files):
                click.echo(f"  {name}  ({upload.size(name):,} bytes)")
        return
    for upload, url in zip(uploads, push_uploads(uploads, private=private)):
        click.echo(f"pushed {len(upload.files)} files to {url}")
