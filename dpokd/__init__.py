"""dpokd: DPO knowledge distillation from a strong teacher LLM to a small student.

This module is the public API for plugin authors; everything else is internal.
"""

from pydantic import Field, field_validator

from .errors import ConfigError, DpokdError, OfflineCacheMiss, PluginError, SpecError
from .hookspecs import hookimpl
from .interfaces import Context, Judge, Options, Student, System, Task, Teacher, spec_path
from .records import SCHEMA_VERSION, Completion, Example, PreferencePair, Score

__version__ = "0.1.0"

__all__ = [
    "Completion",
    "ConfigError",
    "Context",
    "DpokdError",
    "Example",
    "Field",
    "Judge",
    "OfflineCacheMiss",
    "Options",
    "PluginError",
    "PreferencePair",
    "SCHEMA_VERSION",
    "Score",
    "SpecError",
    "Student",
    "System",
    "Task",
    "Teacher",
    "field_validator",
    "hookimpl",
    "spec_path",
]
