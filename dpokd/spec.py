"""Experiment specs: one TOML file, validated in two stages.

First the shape (the ``[run]`` table and one table per component), then each component table
against its plugin's own ``Options`` model. Every error names the file, the field path the user
wrote (``student.lora_r``, ``judges[1].model``, ``systems[0].adapter``), what was expected and what
was found.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .errors import PluginError, SpecError
from .interfaces import Context, Options, Plugin, spec_path
from .registry import registry, unknown_message

SpecPath = Annotated[Path, AfterValidator(spec_path)]
COMPONENTS = ("task", "teacher", "student")
TABLES = ("run", *COMPONENTS, "judges", "systems")
# A run's name is a directory under output_dir.
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A system's name is a leaderboard row and part of the judges' file names.
SYSTEM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
# The names of a run's own systems: its teacher and its student's checkpoints.
RESERVED_SYSTEM = re.compile(r"^(teacher|student@.*)$")
# A validation context key. Where the spec is only checked or planned, it holds a list, and an option
# naming a path another run will make (an adapter a spec trains) notes it there instead of refusing it.
PENDING = "pending"


class RunOptions(BaseModel):
    """The ``[run]`` table: what to run and where to keep it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None, description="run directory name (letters, digits, '.', '_' and '-', starting with a letter or digit); "
                          "default: the spec file's name")
    mode: Literal["static", "online", "eval"] = Field(
        "static", description="static (the paper's offline DPO-KD): the student answers once; online: every iteration; "
                              "eval: only judge the systems")
    iterations: int = Field(1, ge=1, description="DPO rounds; online only, static is always 1")
    # numpy, which training seeds through transformers, takes only 0..2**32-1.
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed for data splits, generation and training")
    output_dir: SpecPath = Field(Path("runs"), description="where run directories are created")
    cache_dir: SpecPath = Field(Path("cache"), description="the response cache and built models")
    evaluate: Literal["all", "last"] = Field("all", description="judge every iteration's student, or only the last")
    verified_pairs: bool = Field(False, description="code tasks: keep pairs whose chosen passes the tests and rejected fails")
    mix_previous: bool = Field(False, description="online: also train on the previous iteration's pairs (SPIN)")
    keep_truncated: bool = Field(
        False, description="keep pairs whose chosen answer the teacher's max_tokens cut off; by default they are "
                           "dropped, so the student is not taught to stop mid-answer")
    stop_when_no_pairs: bool = Field(
        True, description="online: an iteration with no new pairs ends the loop (the student has converged)")

    @field_validator("name")
    @classmethod
    def _name_names_a_directory(cls, name: str | None) -> str | None:
        if name is not None and not RUN_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid run name: it names the run's directory, so it may hold only "
                             "letters, digits, '.', '_' and '-', and must start with a letter or digit")
        return name

    @field_validator("mode", mode="before")
    @classmethod
    def _renamed_mode(cls, mode: Any) -> Any:
        # "offline" also named --offline, the replay from the cache; the regime is "static" now.
        if mode == "offline":
            warnings.warn('run.mode = "offline" is now spelled "static" (the student answers once); '
                          "the old spelling will stop working in a later release", FutureWarning, stacklevel=2)
            return "static"
        return mode

    @field_validator("iterations")
    @classmethod
    def _static_runs_once(cls, iterations: int, info: ValidationInfo) -> int:
        mode = info.data.get("mode")
        if mode in ("static", "eval") and iterations != 1:
            raise ValueError(f"must be 1 when `mode` is {mode!r} (got {iterations}); use mode = 'online' to iterate")
        return iterations


@dataclass(frozen=True)
class Component:
    """One resolved spec table: which plugin, and its validated options."""

    kind: str
    plugin: str
    cls: type[Plugin]
    options: Options
    field: str  # where it sits in the spec: "teacher", "judges[1]", "systems[0]"
    name: str | None = None  # a [[systems]] entry's row name

    def build(self, context: Context) -> Any:
        plugin = self.cls(self.options, context)
        plugin.field = self.field  # so its messages name the table it came from
        return plugin


@dataclass(frozen=True)
class Spec:
    path: Path
    run: RunOptions
    task: Component
    teacher: Component | None  # None only in an eval run
    student: Component | None  # None only in an eval run
    judges: tuple[Component, ...]
    systems: tuple[Component, ...] = ()  # [[systems]]: judged beside the run's own
    notes: tuple[str, ...] = ()  # with allow_pending: paths that do not exist yet (`systems[1].adapter: ...`)

    @property
    def name(self) -> str:
        return self.run.name or self.path.stem

    def resolved(self) -> dict[str, Any]:
        """The spec with every default filled in: what the manifest records and resume compares."""

        def table(c: Component) -> dict[str, Any]:
            return {"plugin": c.plugin, **c.options.model_dump(mode="json")}

        resolved = {
            "run": {**self.run.model_dump(mode="json"), "name": self.name},
            **{c.kind: table(c) for c in (self.task, self.teacher, self.student) if c is not None},
            "judges": [table(j) for j in self.judges],
        }
        if self.systems:
            resolved["systems"] = [{"name": s.name, **table(s)} for s in self.systems]
        return resolved

    def with_seed(self, seed: int) -> Spec:
        """The same experiment with another seed, in a run directory of its own (``NAME-seedN``)."""
        if seed == self.run.seed:
            return self
        name = f"{self.name}-seed{seed}"
        try:
            RunOptions.model_validate({"name": name})
        except ValidationError:
            raise SpecError(f"the run name {self.name!r} makes no valid run name with a seed; set [run] name",
                            path=str(self.path), field="run.name") from None
        return replace(self, run=self.run.model_copy(update={"seed": seed, "name": name}))

    def written(self) -> set[str]:
        """The fields the spec's author wrote, as ``resolved()`` paths (``student.lora_r``)."""
        tables = {"run": self.run, **{c.kind: c.options for c in (self.task, self.teacher, self.student) if c}}
        tables.update({f"judges[{i}]": j.options for i, j in enumerate(self.judges)})
        tables.update({f"systems[{i}]": s.options for i, s in enumerate(self.systems)})
        return {f"{table}.{field}" for table, model in tables.items() for field in model.model_fields_set}


def load_spec(path: str | Path, allow_pending: bool = False) -> Spec:
    """Read and validate a spec file; raises SpecError listing every problem found.

    ``allow_pending`` (checking or planning, not running): a path that another run will make, such as
    an adapter a spec trains, need not exist yet; it is listed in ``Spec.notes``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise SpecError("no such file", path=str(path)) from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(f"line {line}: byte {raw[exc.start]:#04x} is not UTF-8; a spec (TOML) must be saved "
                        "as UTF-8", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"TOML syntax error: {exc}", path=str(path)) from None
    return parse_spec(data, path, allow_pending)


def parse_spec(data: dict[str, Any], path: Path, allow_pending: bool = False) -> Spec:
    """Validate parsed TOML; every problem in the file is reported, not just the first."""
    context: dict[str, Any] = {"spec_dir": path.resolve().parent}
    if allow_pending:
        context[PENDING] = []
    problems = _unknown_tables(data)

    run = None
    try:
        run = RunOptions.model_validate(_table(data, "run", problems) or {}, context=context)
    except ValidationError as exc:
        problems += [_describe(err, ("run",), RunOptions) for err in exc.errors()]

    run_raw = data.get("run")
    eval_mode = isinstance(run_raw, dict) and run_raw.get("mode") == "eval"
    reg = registry()
    components: dict[str, Component] = {}
    judges: list[Component] = []
    for kind, where, raw in _component_tables(data, eval_mode, problems):
        component = _component(kind, where, raw, reg, context, problems)
        if component is None:
            continue
        if kind == "judge":
            judges.append(component)
        else:
            components[kind] = component
    systems = _systems(data.get("systems", []), reg, context, problems)
    if eval_mode and not data.get("systems") and not {"teacher", "student"} & data.keys():
        problems.append("[[systems]]: an eval run judges its [[systems]] (and [teacher] or [student] if given), "
                        "and this spec has none; add a [[systems]] table with a name and a plugin")
    if problems:
        raise SpecError("\n".join(f"{path}: {p}" for p in problems))
    assert run is not None
    components.setdefault("teacher", None)
    components.setdefault("student", None)
    return Spec(path=path, run=run, judges=tuple(judges), systems=tuple(systems),
                notes=tuple(context.get(PENDING, ())), **components)


def _unknown_tables(data: dict[str, Any]) -> list[str]:
    problems = []
    for key in data:
        if key not in TABLES:
            close = difflib.get_close_matches(key, TABLES, n=1, cutoff=0.5)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            problems.append(f"[{key}]: unknown table{hint} (valid tables: {', '.join(TABLES)})")
    return problems


def _component_tables(data: dict[str, Any], eval_mode: bool, problems: list[str]) -> list[tuple[str, str, Any]]:
    """``(kind, where, raw table)`` of the task, teacher, student and each judge, in the spec's order."""
    optional = ("teacher", "student") if eval_mode else ()
    tables = [(kind, kind, _table(data, kind, problems, required=kind not in optional)) for kind in COMPONENTS]
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
    return tables


def _component(kind: str, where: str, raw: Any, reg, context: dict[str, Any], problems: list[str]) -> Component | None:
    """One table's plugin with its validated options, or None with what is wrong added to ``problems``."""
    if raw is None:
        return None
    raw = dict(raw)
    name = raw.pop("plugin", None)
    if not isinstance(name, str):
        problems.append(f"{where}.plugin: missing required key; expected the name of a {kind} plugin "
                        f"(known: {', '.join(reg.names(kind))})")
        return None
    try:
        entry = reg.get(kind, name)
    except PluginError as exc:
        problems.append(f"{where}.plugin: {exc}")
        return None
    try:
        options = _options(entry, raw, where, context)
    except ValidationError as exc:
        problems += [_describe(err, (where,), entry.cls.Options, entry.cls.name) for err in exc.errors()]
        return None
    return Component(kind, entry.cls.name, entry.cls, options, where)


def _systems(raw_systems: Any, reg, context: dict[str, Any], problems: list[str]) -> list[Component]:
    """The ``[[systems]]`` entries: each a named student or teacher plugin with its options."""
    if not isinstance(raw_systems, list):
        problems.append(f"systems: expected [[systems]] tables, got {type(raw_systems).__name__}")
        return []
    systems: list[Component] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(raw_systems):
        where = f"systems[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a table, got {raw!r}")
            continue
        raw = dict(raw)
        name, plugin = raw.pop("name", None), raw.pop("plugin", None)
        if not isinstance(name, str):
            problems.append(f"{where}.name: missing required key; expected the system's row name in the leaderboard")
        elif RESERVED_SYSTEM.match(name):
            problems.append(f"{where}.name: {name!r} is the name of one of the run's own systems (teacher, "
                            "student@base, student@iter_K); choose another")
        elif not SYSTEM_NAME.match(name):
            problems.append(f"{where}.name: {name!r} is not a valid system name (up to 100 letters, digits, '.', "
                            "'_', '+' and '-', starting with a letter or digit)")
        elif name in seen:
            problems.append(f"{where}.name: {name!r} is already the name of {seen[name]}; system names must be unique")
        else:
            seen[name] = where
        if not isinstance(plugin, str):
            problems.append(f"{where}.plugin: missing required key; expected the name of a student or teacher plugin "
                            f"(known: {', '.join(reg.names('student') + reg.names('teacher'))})")
            continue
        try:
            entry = _system_plugin(reg, plugin)
        except PluginError as exc:
            problems.append(f"{where}.plugin: {exc}")
            continue
        try:
            options = _options(entry, raw, where, context)
        except ValidationError as exc:
            problems += [_describe(err, (where,), entry.cls.Options, entry.cls.name) + _other_kind(err, entry, reg)
                         for err in exc.errors()]
            continue
        if isinstance(name, str) and seen.get(name) == where:
            systems.append(Component(entry.kind, entry.cls.name, entry.cls, options, where, name))
    return systems


def _options(entry, raw: dict[str, Any], where: str, context: dict[str, Any]) -> Options:
    """A table validated by its plugin's ``Options``; its pending paths noted with their field path."""
    if PENDING not in context:
        return entry.cls.Options.model_validate(raw, context=context)
    own = {**context, PENDING: []}
    options = entry.cls.Options.model_validate(raw, context=own)
    context[PENDING].extend(f"{where}.{note}" for note in own[PENDING])
    return options


def _system_plugin(reg, name: str):
    """A system's plugin: a student or a teacher (students first, should a name be both)."""
    errors = []
    for kind in ("student", "teacher"):
        try:
            return reg.get(kind, name)
        except PluginError as exc:
            errors.append(str(exc))
    broken = [e for e in errors if not e.startswith("unknown ")]  # a package that failed to load has it
    if broken:
        raise PluginError(broken[0])
    raise PluginError(unknown_message("student or teacher plugin", name, reg.names("student") + reg.names("teacher")))


def _other_kind(err: dict[str, Any], entry, reg) -> str:
    """For an unknown key that is an option of the other kind of plugin (an adapter on an API model)."""
    if err["type"] != "extra_forbidden" or len(err["loc"]) != 1:
        return ""
    other = "teacher" if entry.kind == "student" else "student"
    owners = [e.name for e in reg.entries(other) if err["loc"][0] in e.cls.Options.model_fields]
    if not owners:
        return ""
    return f"; {err['loc'][0]!r} is an option of the {other} plugin {owners[0]!r}, and {entry.name!r} is a {entry.kind} plugin"


def _table(data: dict[str, Any], key: str, problems: list[str], required: bool = True) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        if required:
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


def _describe(err: dict[str, Any], prefix: tuple[Any, ...], model: type[BaseModel], plugin: str | None = None) -> str:
    loc = tuple(err["loc"])
    field = _field_path(prefix + loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        known = sorted(owner.model_fields) if owner else []
        if not known:
            whose = f"the {plugin!r} plugin" if plugin else "this table"
            return f"{field}: unknown key; {whose} takes no options"
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
