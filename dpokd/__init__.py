"""dpokd: DPO knowledge distillation from a strong teacher LLM to a small student.

This module is the public API for plugin authors: what it lists is what a teacher, student,
judge or task may use. Everything else (``dpokd.engine``, ``dpokd.cache``, ...) is internal and
may change without notice.
"""

from pydantic import Field, field_validator

from .cache import request_key
from .cards import write_adapter_card
from .errors import BudgetExceeded, ConfigError, DpokdError, OfflineCacheMiss, PluginError, SpecError, StageFailed
from .evaluation import bootstrap_ci, extract_code, job_for, pass_at_k, score_completions
from .hookspecs import hookimpl
from .interfaces import Context, Judge, Options, Student, System, Task, Teacher, spec_path
from .llm import LLMClient, LLMOptions, check_key
from .outcomes import eval_path
from .progress import progress
from .prompts import CODEGEN_TEMPLATE, SUMMARY_TEMPLATE
from .records import SCHEMA_VERSION, Completion, Example, PreferencePair, Score
from .runs import verify_checksums
from .sandbox import Job, Limits, Result, Sandbox, check_isolation
from .trackers import TENSORBOARD_DIR, TRACKERS, iteration_run
from .trackers import check_available as check_trackers

__version__ = "0.1.0"

__all__ = [
    # plugin kinds and their hook
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
    # calling a model: cached, retried, rate-limited, budgeted
    "LLMClient",
    "LLMOptions",
    "check_key",
    "progress",
    "request_key",
    # training a student: trackers and model cards
    "TENSORBOARD_DIR",
    "TRACKERS",
    "check_trackers",
    "iteration_run",
    "verify_checksums",
    "write_adapter_card",
    # running generated code, and scoring it
    "Job",
    "Limits",
    "Result",
    "Sandbox",
    "bootstrap_ci",
    "check_isolation",
    "eval_path",
    "extract_code",
    "job_for",
    "pass_at_k",
    "score_completions",
    # the reference experiment's prompts
    "CODEGEN_TEMPLATE",
    "SUMMARY_TEMPLATE",
]
