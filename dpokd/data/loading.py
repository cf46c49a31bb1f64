"""Rows of a dataset on the Hugging Face hub or in a local file, read through ``datasets`` either way."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .fields import FieldSpec

# The suffixes read as a local file, and the ``datasets`` builder that reads each.
LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def is_local(dataset: str) -> bool:
    """Whether ``dataset`` names a local file (by its suffix) rather than a hub dataset id."""
    return Path(dataset).suffix.lower() in LOCAL_SUFFIXES


def load_rows(dataset: str, fields: FieldSpec | None = None, *, split: str = "train", revision: str | None = None,
              option: str = "task.dataset", suggest: str = "data/records.jsonl"):
    """The rows of a hub dataset (``split`` at ``revision``) or of a local file, as a ``datasets.Dataset``.

    Every failure is a ``ConfigError`` naming ``option``, the spec field that named the dataset, so it
    is caught in ``preflight()`` rather than after paid calls: a missing file, an unreadable one, no
    rows, a column of ``fields`` absent. ``suggest`` is the local path offered when the hub cannot be
    reached. A local file has one split, whatever ``split`` says.
    """
    if is_local(dataset):
        _check_file(dataset, fields, option)
    try:
        data = _read(dataset, split, revision)
    except Exception as exc:
        raise _load_error(exc, dataset, option, suggest) from None
    if fields is not None:
        fields.check(data.column_names, dataset)
    if len(data) == 0:
        raise ConfigError(f"{option}: {dataset} has no rows")
    return data


def _check_file(dataset: str, fields: FieldSpec | None, option: str) -> None:
    path = Path(dataset)
    if not path.is_file():
        raise ConfigError(f"{option}: no such file {dataset}")
    if path.stat().st_size == 0:
        columns = list(fields.columns.values()) if fields else []
        wanted = f" with the columns {', '.join(columns[:-1])} and {columns[-1]}" if len(columns) > 1 else (
            f" with the column {columns[0]}" if columns else "")
        raise ConfigError(f"{option}: {dataset} is empty; expected one record per row{wanted}")
    if path.suffix.lower() in (".jsonl", ".json", ".csv"):
        _check_utf8(path, option)


def _check_utf8(path: Path, option: str) -> None:
    """A text file must be UTF-8: say where it is not, rather than let a reader fail somewhere inside."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{option}: {path} is not UTF-8 (line {line}, byte {exc.start}: "
                          f"{data[exc.start:exc.start + 1]!r}); save it as UTF-8") from None


def _read(dataset: str, split: str, revision: str | None):
    from datasets import load_dataset
    from datasets.utils import logging as datasets_logging

    if not is_local(dataset):  # a hub download keeps its progress bars: it can take a while
        return load_dataset(dataset, split=split, revision=revision)
    # A local file is read in a moment; its "Generating train split" bar would only clutter `dpokd plan`.
    shown = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        return load_dataset(LOCAL_SUFFIXES[Path(dataset).suffix.lower()], data_files=dataset, split="train")
    finally:
        if shown:
            datasets_logging.enable_progress_bar()


def _load_error(exc: Exception, dataset: str, option: str, suggest: str) -> ConfigError:
    if not is_local(dataset):
        key = option.rpartition(".")[2]
        return ConfigError(
            f"{option}: cannot load {dataset!r} ({_reason(exc)}). "
            "If the hub cannot be reached and it is not in the local HF cache, download it elsewhere and point "
            f'the spec at the file: {key} = "{suggest}" (.jsonl, .parquet or .csv)')
    if "corresponds to no data" in str(exc):  # datasets' words for a file of headers alone
        return ConfigError(f"{option}: {dataset} has no rows")
    return ConfigError(f"{option}: cannot read {dataset} as {Path(dataset).suffix.lower()[1:]} ({_reason(exc)}); "
                       "fix the file, or save it again as .jsonl, .parquet or .csv")


def _reason(exc: BaseException) -> str:
    """The most specific words in an exception chain (``datasets`` wraps the reader's error in its own)."""
    reasons = []
    while exc is not None and len(reasons) < 10:
        text = str(exc).strip()
        reasons.append(f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    return reasons[1] if len(reasons) > 1 and "occurred while generating" in reasons[0] else reasons[0]
