"""Exceptions that mean "the user must change something"; dpokd.cli turns them into exit codes.

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class DpokdError(Exception):
    """A user-facing error: printed as one message, no traceback."""

    exit_code = 2


class SpecError(DpokdError):
    """A spec that cannot be used: names the file, the field path and what was expected."""

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None):
        self.path = path
        self.field = field
        where = ": ".join(p for p in (path, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class PluginError(DpokdError):
    """A plugin that cannot be loaded, registered or found."""


class ConfigError(DpokdError):
    """The environment is not ready for a run: a missing key, dataset or model."""


class OfflineCacheMiss(DpokdError):
    """An offline run asked for an answer the cache does not hold."""

    exit_code = 3

    def __init__(self, missing: int, example_ids: list[str]):
        self.missing = missing
        self.example_ids = example_ids
        shown = ", ".join(example_ids[:5]) + (", ..." if len(example_ids) > 5 else "")
        super().__init__(
            f"offline: {missing} request(s) are not in the cache (first: {shown}); "
            "run once with network access, or point `run.cache_dir` at the cache that has them"
        )


class StageFailed(DpokdError):
    """A stage stopped on purpose: too many failed answers, or the budget is spent.

    Everything already answered is in the cache, so re-running the spec resumes.
    """

    exit_code = 4


class BudgetExceeded(StageFailed):
    """`max_usd` was reached."""
