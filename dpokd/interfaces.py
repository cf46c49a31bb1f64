"""Base classes for plugin authors: Options, Task, Teacher, Student, Judge, and the run Context."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo

from .cache import JOURNAL, CacheLayout, ResponseCache
from .records import Completion, Example, Outcome, PreferencePair, Score

if TYPE_CHECKING:
    from rich.console import Console


class Options(BaseModel):
    """A plugin's options: one spec table minus its ``plugin`` key. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


def spec_path(value: str | Path | None, info: ValidationInfo) -> Path | None:
    """Resolve a path the user wrote relative to the spec file (use with ``AfterValidator``)."""
    if value is None:
        return None
    path = Path(os.path.expanduser(str(value)))
    base = (info.context or {}).get("spec_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


@dataclass
class Context:
    """What a plugin may use of the run it is part of."""

    cache_dir: Path = Path("cache")
    run_dir: Path | None = None
    offline: bool = False
    seed: int = 0
    console: "Console | None" = None
    retry_refused: bool = False  # ask again where the cache holds a provider's refusal
    _cache: ResponseCache | None = field(default=None, repr=False)

    @property
    def cache(self) -> ResponseCache:
        if self._cache is None:
            self._cache = ResponseCache(self.cache_dir, journal=self.run_dir / JOURNAL if self.run_dir else None)
        return self._cache

    @property
    def layout(self) -> CacheLayout:
        """Where things live under ``cache_dir`` (``layout.models``, ``layout.adapters``)."""
        return CacheLayout(self.cache_dir, self.run_dir)

    def log(self, message: str) -> None:
        """A line for the user and, within a run, for ``run.log``."""
        if self.console is not None:
            self.console.print(message, highlight=False)
        if self.run_dir is not None and self.run_dir.is_dir():
            from rich.text import Text

            with open(self.run_dir / "run.log", "a", encoding="utf-8") as fh:
                fh.write(Text.from_markup(message).plain + "\n")


class Plugin(ABC):
    """Common shape of every plugin: a ``name``, an ``Options`` model and a ``Context``.

    Each kind's required method is abstract: a plugin without it is refused when it registers,
    before anything is paid for. The other methods are optional capabilities.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options | None = None, context: Context | None = None):
        self.options = options if options is not None else self.Options()
        self.context = context if context is not None else Context()
        # The spec table this plugin was built from ("teacher", "systems[1]"), for its messages.
        self.field: str = self.kind

    @property
    def seed(self) -> int:
        """The plugin's own ``seed`` option when it has one set, else the run's ``[run] seed``."""
        own = getattr(self.options, "seed", None)
        return self.context.seed if own is None else own

    def preflight(self) -> None:
        """Fail fast, before any paid call, on what can be checked cheaply (keys, files)."""


class Task(Plugin):
    """Supplies the prompts: ``examples("train")`` to distil on, ``examples("eval")`` to judge on."""

    kind = "task"

    @abstractmethod
    def examples(self, split: str) -> list[Example]:
        raise NotImplementedError


class Teacher(Plugin):
    """Answers prompts; its answers are the chosen side of every pair."""

    kind = "teacher"

    @abstractmethod
    def answer(self, examples: list[Example]) -> Sequence[Completion]:
        """One answer per example, in order: a list, or any sequence (the shared client's reads its answers
        back from the cache)."""
        raise NotImplementedError

    def usage(self) -> dict[str, float]:
        """Tokens and dollars spent so far in this process."""
        return {}


class Student(Plugin):
    """The model being trained; its answers are the rejected side."""

    kind = "student"

    def prepare(self, examples: list[Example]) -> None:
        """Called once with the train examples before anything else (a tiny model builds its tokenizer here)."""

    @abstractmethod
    def generate(self, examples: list[Example]) -> list[Completion]:
        raise NotImplementedError

    def train_dpo(self, pairs: list[PreferencePair], output_dir: Path) -> dict[str, Any]:
        """Train on the pairs, save the adapter under ``output_dir``, return summary metrics."""
        raise NotImplementedError

    def logprob(self, examples: list[Example], texts: list[str]) -> list[float]:
        """Mean per-token negative log-likelihood of each text as the answer to its example."""
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    def load(self, directory: Path | None) -> None:
        """Load the adapter saved in ``directory``; ``None`` returns to the base model (where a student
        that never trains always is, so only it may leave this out)."""
        if directory is not None:
            raise NotImplementedError

    def unload(self) -> None:
        """Free the model's memory before another student's loads; the next call loads it again."""

    def checkpoint(self, adapter: Path | None) -> Checkpoint | None:
        """This student's weights with ``adapter`` applied (None: its own starting point) as files, for a
        judge that loads them itself (lm-eval); None where the student has no local weights."""
        return None


@dataclass(frozen=True)
class Checkpoint:
    """A local model at one checkpoint, as files: a base model and the LoRA adapter applied to it."""

    model: str  # a local directory saved with save_pretrained, or a hub id
    adapter: Path | None = None  # a PEFT adapter folder; None: the bare base
    revision: str | None = None
    identity: str = ""  # changes whenever the weights do (base and adapter checksums): a cache key part


@dataclass
class System:
    """Something a judge can evaluate: the teacher, or the student at one checkpoint."""

    name: str
    answer: Callable[[list[Example]], list[Completion]]
    logprob: Callable[[list[Example], list[str]], list[float]] | None = None
    checkpoint: Callable[[], Checkpoint | None] | None = None  # a local model's weights as files


class Judge(Plugin):
    """Scores systems; may bring its own eval set (HumanEval) or use the task's."""

    kind = "judge"

    def eval_examples(self, task: Task) -> list[Example]:
        """The problems this judge asks every system: the task's eval split, unless the judge brings
        its own (HumanEval). The engine checks them before any paid call and shows them in the report."""
        return task.examples("eval")

    @abstractmethod
    def evaluate(self, systems: dict[str, System], task: Task) -> list[Score | Outcome]:
        """Scores and per-answer outcomes of each system. A judge may return outcomes alone: each
        metric with outcomes but no score is scored as the mean over examples, with its interval."""
        raise NotImplementedError

    def systems_named(self) -> dict[str, str]:
        """``{option: system}`` for each option that names a system (a baseline): the engine checks
        them against the run's systems before any paid call."""
        return {}
