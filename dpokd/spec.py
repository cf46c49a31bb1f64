"""Experiment specs: one TOML file, validated in two stages.

First the shape (the ``[run]`` table and one table per component), then each component table
against its plugin's own ``Options`` model. Every error names the file, the field path the user
wrote (``student.lora_r``, ``judges[1].model``), what was expected and what was found.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .errors import PluginError, SpecError
from .interfaces import Context, Options, Plugin, spec_path

SpecPath = Annotated[Path, AfterValidator(spec_path)]
COMPONENTS = ("task", "teacher", "student")
TABLES = ("run", *COMPONENTS, "judges")


class RunOptions(BaseModel):
    """The ``[run]`` table: what to run and where to keep it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="run directory name; default: the spec file's name"
    )
    mode: Literal["offline", "online"] = Field("offline", description="offline: student answers once; online: every iteration")
    iterations: int = Field(1, ge=1, description="DPO rounds; online only, offline is always 1")
    # numpy, which training seeds through transformers, takes only 0..2**32-1.
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed for data splits, generation and training")
    output_dir: SpecPath = Field(Path("runs"), description="where run directories are created")
    cache_dir: SpecPath = Field(Path("cache"), description="the response cache and built models")
    evaluate: Literal["all", "last"] = Field("all", description="judge every iteration's student, or only the last")
    verified_pairs: bool = Field(False, description="code tasks: keep pairs whose chosen passes the tests and rejected fails")
    mix_previous: bool = Field(False, description="online: also train on the previous iteration's pairs (SPIN)")

    @field_validator("iterations")
    @classmethod
    def _offline_runs_once(cls, iterations: int, info: ValidationInfo) -> int:
        if info.data.get("mode") == "offline" and iterations != 1:
            raise ValueError(f"must be 1 when `mode` is 'offline' (got {iterations}); use mode = 'online' to iterate")
        return iterations


@dataclass(frozen=True)
class Component:
    """One resolved spec table: which plugin, and its validated options."""

    kind: str
    plugin: str
    cls: type[Plugin]
    options: Options
    field: str  # where it sits in the spec: "teacher", "judges[1]"

    def build(self, context: Context) -> Any:
        return self.cls(self.options, context)


@dataclass(frozen=True)
class Spec:
    path: Path
    run: RunOptions
    task: Component
    teacher: Component
    student: Component
    judges: tuple[Component, ...]

    @property
    def name(self) -> str:
        return self.run.name or self.path.stem

    def resolved(self) -> dict[str, Any]:
        """The spec with every default filled in: what the manifest records and resume compares."""

        def table(c: Component) -> dict[str, Any]:
            return {"plugin": c.plugin, **c.options.model_dump(mode="json")}

        return {
            "run": {**self.run.model_dump(mode="json"), "name": self.name},
            **{c.kind: table(c) for c in (self.task, self.teacher, self.student)},
            "judges": [table(j) for j in self.judges],
        }

    def written(self) -> set[str]:
        """The fields the spec's author wrote, as ``resolved()`` paths (``student.lora_r``)."""
        tables = {"run": self.run, **{c.kind: c.options for c in (self.task, self.teacher, self.student) if c}}
        tables.update({f"judges[{i}]": j.options for i, j in enumerate(self.judges)})
        tables.update({f"systems[{i}]": s.options for i, s in enumerate(getattr(self, "systems", ()))})
        return {f"{table}.{field}" for table, model in tables.items() for field in model.model_fields_set}


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file; raises SpecError listing every problem found."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError("no such file", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"TOML syntax error: {exc}", path=str(path)) from None
    return parse_spec(data, path)


def parse_spec(data: dict[str, Any], path: Path) -> Spec:
    """Validate parsed TOML; every problem in the file is reported, not just the first."""
    from .registry import registry

    context = {"spec_dir": path.resolve().parent}
    problems: list[str] = []
    for key in data:
        if key not in TABLES:
            close = difflib.get_close_matches(key, TABLES, n=1, cutoff=0.5)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            problems.append(f"[{key}]: unknown table{hint} (valid tables: {', '.join(TABLES)})")

    run = None
    try:
        run = RunOptions.model_validate(_table(data, "run", problems) or {}, context=context)
    except ValidationError as exc:
        problems += [_describe(err, ("run",), RunOptions) for err in exc.errors()]

    tables = [(kind, kind, _table(data, kind, problems)) for kind in COMPONENTS]
    judges_raw = data.get("judges", [])
    if not isinstance(judges_raw, list):
        problems.append(f"judges: expected [[judges]] tables, got {type(judges_raw).__name__}")
        judges_raw = []
    for i, raw in enumerate(judges_raw):
        where = f"judges[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a table, got {raw!r}")
            continue
        tables.append(("judge", where, raw))

    reg = registry()
    components: dict[str, Component] = {}
    judges: list[Component] = []
    for kind, where, raw in tables:
        if raw is None:
            continue
        raw = dict(raw)
        name = raw.pop("plugin", None)
        if not isinstance(name, str):
            problems.append(f"{where}.plugin: missing required key; expected the name of a {kind} plugin "
                            f"(known: {', '.join(reg.names(kind))})")
            continue
        try:
            entry = reg.get(kind, name)
        except PluginError as exc:
            problems.append(f"{where}.plugin: {exc}")
            continue
        try:
            options = entry.cls.Options.model_validate(raw, context=context)
        except ValidationError as exc:
            problems += [_describe(err, (where,), entry.cls.Options) for err in exc.errors()]
            continue
        component = Component(kind, entry.cls.name, entry.cls, options, where)
        if kind == "judge":
            judges.append(component)
        else:
            components[kind] = component
    if problems:
        raise SpecError("\n".join(f"{path}: {p}" for p in problems))
    assert run is not None
    return Spec(path=path, run=run, judges=tuple(judges), **components)


def _table(data: dict[str, Any], key: str, problems: list[str]) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        problems.append(f"[{key}]: missing table; expected a [{key}] table")
    elif not isinstance(value, dict):
        problems.append(f"{key}: expected a [{key}] table, got {value!r}")
        return None
    return value


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the field at ``loc`` (for did-you-mean on unknown keys)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return model
    return model


def _describe(err: dict[str, Any], prefix: tuple[Any, ...], model: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    field = _field_path(prefix + loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        known = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{field}: unknown key{hint} (valid keys: {', '.join(known)})"
    if kind == "missing":
        return f"{field}: missing required key"
    message = err["msg"].replace("Input should be", "expected").replace("Value error, ", "")
    if kind.endswith("_type") and not isinstance(err.get("input"), dict):
        return f"{field}: {message}, got {err.get('input')!r} ({type(err.get('input')).__name__})"
    if kind == "value_error":
        return f"{field}: {message}"
    return f"{field}: {message}, got {err.get('input')!r}"
