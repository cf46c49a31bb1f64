"""dpokd: DPO knowledge distillation from a strong teacher LLM to a small student.

This module is the public API for plugin authors: the plugin base classes, the records that flow
between stages, the errors, the hook marker and the helpers for options. The public subpackages
say so in their own ``__all__``: ``dpokd.llm`` (calling a model: cached, retried, rate-limited,
budgeted), ``dpokd.sandbox`` (running generated code), ``dpokd.scoring`` (pass@k, intervals,
outcomes) and ``dpokd.data`` (loading and splitting a dataset). Every other module (``dpokd.engine``,
``dpokd.cache``, ...) is internal and may change without notice.
"""

from pydantic import Field, field_validator

from .cache import request_key
from .cards import write_adapter_card
from .errors import BudgetExceeded, ConfigError, DpokdError, OfflineCacheMiss, PluginError, SpecError, StageFailed
from .hookspecs import hookimpl
from .interfaces import Checkpoint, Context, Judge, Options, Student, System, Task, Teacher, spec_path
from .progress_bar import progress
from .records import SCHEMA_VERSION, Completion, Example, Outcome, PreferencePair, Score
from .runs import verify_checksums
from .trackers import TENSORBOARD_DIR, TRACKERS, iteration_run
from .trackers import check_available as check_trackers

__version__ = "0.1.0"

__all__ = [
    # plugin kinds and their hook
    "Checkpoint",
    "Context",
    "Judge",
    "Options",
    "Student",
    "System",
    "Task",
    "Teacher",
    "hookimpl",
    # options
    "Field",
    "field_validator",
    "spec_path",
    # records
    "Completion",
    "Example",
    "Outcome",
    "PreferencePair",
    "SCHEMA_VERSION",
    "Score",
    # errors
    "BudgetExceeded",
    "ConfigError",
    "DpokdError",
    "OfflineCacheMiss",
    "PluginError",
    "SpecError",
    "StageFailed",
    # showing progress, and keying a request the way the response cache does
    "progress",
    "request_key",
    # training a student: trackers, checksums and model cards
    "TENSORBOARD_DIR",
    "TRACKERS",
    "check_trackers",
    "iteration_run",
    "verify_checksums",
    "write_adapter_card",
]
