"""``dpokd push``: publish a run's chosen checkpoint to the Hugging Face hub, and its pairs with it.

The model repository gets the adapter as PEFT saved it, its card (with this repository in the
loading snippet), the run's ``results.json`` and the resolved spec (``spec.json``). With pairs, a
dataset repository gets that iteration's ``pairs.jsonl`` and its card. Everything goes through
``huggingface_hub`` (``create_repo``, ``upload_folder``), which honours ``HF_ENDPOINT`` and
``HF_TOKEN`` as every hub tool does.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .cards import checkpoint_card, pairs_card
from .errors import ConfigError, DpokdError
from .runs import RETRAIN, RunDir, verify_checksums

SPEC_FILE = "spec.json"
TOKEN_HELP = ("set HF_TOKEN to a token with write access (https://huggingface.co/settings/tokens), "
              "or run `hf auth login`")


@dataclass
class Upload:
    """One repository and what goes into it: path in the repository -> file on disk or its text."""

    repo_id: str
    repo_type: str  # "model" or "dataset"
    files: dict[str, Path | str] = field(default_factory=dict)

    def size(self, name: str) -> int:
        source = self.files[name]
        return source.stat().st_size if isinstance(source, Path) else len(source.encode("utf-8"))


def plan(run_dir: Path, repo: str, *, iteration: int | None = None, with_pairs: bool = False,
         dataset_repo: str | None = None) -> list[Upload]:
    """What ``dpokd push`` sends, checked against the run's files; touches no network."""
    _check_repo_id(repo, "--repo")
    dataset_repo = dataset_repo or f"{repo}-pairs"
    if with_pairs:
        _check_repo_id(dataset_repo, "--dataset-repo")
    run = RunDir(run_dir)
    manifest = run.manifest()
    if manifest is None:
        raise ConfigError(f"{run_dir}: not a dpokd run (no manifest.json); pass a run directory such as runs/NAME")
    if not (run.path / "results.json").exists():
        raise ConfigError(f"{run_dir}: the run has not finished (no results.json); re-run its spec to finish it, then push")
    run.results()  # a damaged results.json is refused here, naming it
    k = _iteration(run.path, iteration)
    adapter = run.path / f"iter_{k}" / "adapter"
    # Never publish weights changed since they were trained.
    verify_checksums(adapter, f"iteration {k} trained it", required=bool(manifest.get("adapter_checksums")),
                     remedy=RETRAIN)

    model = Upload(repo, "model")
    for path in sorted(adapter.iterdir()):
        if path.is_file() and path.name != "README.md":
            model.files[path.name] = path
    model.files["README.md"] = str(checkpoint_card(run.path, k, adapter_ref=repo,
                                                   datasets=[dataset_repo] if with_pairs else []))
    model.files["results.json"] = run.path / "results.json"
    model.files[SPEC_FILE] = json.dumps(manifest["spec"], indent=2) + "\n"
    uploads = [model]
    if with_pairs:
        pairs = run.path / f"iter_{k}" / "pairs.jsonl"
        if not pairs.is_file() and (run.path / f"iter_{k}" / "pairs_stats.json").is_file():
            raise ConfigError(f"iteration {k} has no pairs (see {pairs.parent / 'pairs_stats.json'}), so --with-pairs "
                              "has nothing to send")
        if not pairs.is_file():
            raise ConfigError(f"{pairs}: missing, so --with-pairs has nothing to send; re-run the spec with --fresh "
                              "to make it again (answers come from the cache)")
        uploads.append(Upload(dataset_repo, "dataset", {"README.md": str(pairs_card(run.path, k)), "pairs.jsonl": pairs}))
    return uploads


def push(uploads: list[Upload], *, private: bool = False) -> list[str]:
    """Create each repository (if it is not there) and upload its files in one commit; their URLs."""
    from huggingface_hub import constants, create_repo, get_token, upload_folder
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        raise ConfigError("HF_HUB_OFFLINE=1 is set, which forbids every hub request; unset it to push")
    if not get_token():
        raise ConfigError(f"no Hugging Face token: {TOKEN_HELP}")
    urls = []
    for upload in uploads:
        with tempfile.TemporaryDirectory(prefix="dpokd-push-") as tmp:
            staged = Path(tmp)
            for name, source in upload.files.items():
                if isinstance(source, Path):
                    shutil.copyfile(source, staged / name)
                else:
                    (staged / name).write_text(source, encoding="utf-8")
            try:
                url = create_repo(upload.repo_id, repo_type=upload.repo_type, private=private, exist_ok=True)
                upload_folder(repo_id=upload.repo_id, repo_type=upload.repo_type, folder_path=staged,
                              commit_message="Upload from dpokd push")
            except HfHubHTTPError as exc:
                raise DpokdError(f"push to {upload.repo_type} repository {upload.repo_id}: {_first_line(exc)}"
                                 + (f"; {TOKEN_HELP}" if _status(exc) in (401, 403) else "")) from None
            except _transport_errors() as exc:  # the endpoint cannot be reached
                raise DpokdError(f"push to {constants.ENDPOINT}: {_first_line(exc)}") from None
        urls.append(str(url))
    return urls


def _iteration(run_dir: Path, wanted: int | None) -> int:
    """The checkpoint to push: ``wanted``, else the last one trained (an online loop may stop early)."""
    iterations = (p.parent.parent.name[5:] for p in run_dir.glob("iter_*/adapter/adapter_model.safetensors"))
    trained = sorted(int(k) for k in iterations if k.isdigit())
    if not trained:
        raise ConfigError(f"{run_dir}: holds no trained adapter (iter_K/adapter/); nothing to push")
    k = wanted if wanted is not None else trained[-1]
    if k not in trained:
        raise ConfigError(f"--iteration {k}: {run_dir} has no adapter of iteration {k}; "
                          f"its adapters: {', '.join(map(str, trained))}")
    return k


def _check_repo_id(repo: str, option: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise ConfigError(f"{option}: {repo!r} is not a repository id ({_first_line(exc)}); expected ORG/NAME") from None
    if repo.count("/") != 1:
        raise ConfigError(f"{option}: {repo!r} names no owner; expected ORG/NAME (your user name or an organization)")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection failures as the HTTP client huggingface_hub uses reports them (httpx2, earlier httpx)."""
    import importlib

    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _status(exc) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
