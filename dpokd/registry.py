"""The plugin manager: built-ins plus the ``dpokd`` entry-point group, looked up by kind and name.

A third-party package that fails (an import error, a hook that raises, an option without a
description, a name another plugin already has) is set aside as a ``BrokenPlugin``: nothing it
registered is used, every other plugin still is, and a spec that names one of its plugins gets an
error naming the package and its failure.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.metadata
import os
import sys
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import click
import pluggy
from pydantic_core import PydanticUndefined, to_jsonable_python

from . import __version__, hookspecs
from .errors import PluginError
from .interfaces import Plugin

KINDS = ("task", "teacher", "student", "judge")
BASES = {"Task": "task", "Teacher": "teacher", "Student": "student", "Judge": "judge"}
GROUP = "dpokd"
STRICT_ENV = "DPOKD_PLUGINS_STRICT"

DEFAULT_PLUGINS = (
    "dpokd.plugins.tasks.synthetic",
    "dpokd.plugins.tasks.compose",
    "dpokd.plugins.tasks.leetcode",
    "dpokd.plugins.tasks.humaneval",
    "dpokd.plugins.tasks.prompts",
    "dpokd.plugins.teachers.reference",
    "dpokd.plugins.teachers.litellm",
    "dpokd.plugins.students.hf_qlora",
    "dpokd.plugins.judges.execution",
    "dpokd.plugins.judges.likelihood",
    "dpokd.plugins.judges.pairwise",
    "dpokd.plugins.judges.match",
    "dpokd.plugins.judges.rubric",
    "dpokd.plugins.judges.lm_eval_harness",
)


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    cls: type[Plugin]
    package: str
    version: str
    aliases: tuple[str, ...] = ()

    def option_details(self) -> dict[str, dict[str, Any]]:
        """Each option's type, default (absent when it is required) and description, for ``plugins --json``."""
        out: dict[str, dict[str, Any]] = {}
        for name, info in self.cls.Options.model_fields.items():
            detail: dict[str, Any] = {"type": _type_name(info.annotation), "required": info.is_required()}
            if not info.is_required():
                default = info.get_default(call_default_factory=True)
                if default is not PydanticUndefined:
                    detail["default"] = to_jsonable_python(default, fallback=repr)
            detail["description"] = info.description or ""
            out[name] = detail
        return out


def _type_name(annotation: Any) -> str:
    """``int``, ``str | None``, ``Literal['nf4', 'fp4']``: the annotation as a reader writes it."""
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("pathlib.", "")


@dataclass
class BrokenPlugin:
    """A third-party plugin that failed to import or to register; none of its plugins are used."""

    package: str
    version: str
    entry_point: str
    error: str  # one line: "ModuleNotFoundError: No module named 'x'"
    traceback: str = ""
    registered: set[tuple[str, str]] = field(default_factory=set)  # (kind, name) it registered before failing
    guessed: dict[str, str | None] = field(default_factory=dict)  # names read from its source: name -> kind
    complete: bool = False  # every hook ran to the end, so `registered` is all it provides

    @property
    def label(self) -> str:
        return f"{self.package} {self.version}".strip()

    @property
    def summary(self) -> str:
        return f"{self.label} failed to load: {self.error}"

    def as_dict(self) -> dict[str, Any]:
        provides = sorted({name for _, name in self.registered} | set(self.guessed))
        return {"package": self.package, "version": self.version, "entry_point": self.entry_point,
                "error": self.error, "provides": provides, "traceback": self.traceback}


def strict_mode() -> bool:
    """``DPOKD_PLUGINS_STRICT=1``: a broken plugin is an error, not a warning (for plugin authors' CI)."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes")


class _Staged:
    """What one plugin registers, held back until all its hooks have run and every check passed."""

    def __init__(self, package: str, version: str):
        self.package, self.version = package, version
        self.entries: list[Entry] = []
        self.problems: list[str] = []
        self.commands: Any = None  # a click group the plugin's commands are added to

    def registrar(self, kind: str):
        def register(cls: type[Plugin], aliases: tuple[str, ...] | list[str] = ()) -> None:
            problem = _plugin_class_problem(kind, cls, self.package)
            if problem:
                self.problems.append(problem)
            name = getattr(cls, "name", None)
            if isinstance(name, str) and name:
                self.entries.append(Entry(kind, name, cls, self.package, self.version, tuple(aliases)))

        return register


class Registry:
    """Every registered plugin class, by kind and name (aliases included), and the broken ones."""

    def __init__(self, pm: pluggy.PluginManager, broken: list[BrokenPlugin] | tuple = ()):
        self.pm = pm
        self.broken: list[BrokenPlugin] = list(broken)
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._commands: list[tuple[_Staged, Any]] = []
        distinfo = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
        for plugin_name, plugin in pm.list_name_plugin():
            if plugin is not None:  # None: a blocked name
                self._register_plugin(plugin_name, plugin, distinfo.get(id(plugin)))

    def _register_plugin(self, plugin_name: str, plugin: object, dist: Any) -> None:
        builtin = plugin_name in DEFAULT_PLUGINS
        if dist is not None:
            package, version = dist.metadata["name"], dist.version
        elif builtin:
            package, version = "dpokd", __version__
        else:  # registered in-process with pm.register
            package, version = plugin_name, ""
        staged = _Staged(package, version)
        hooks = {f"register_{kind}s": {"register": staged.registrar(kind)} for kind in KINDS}
        hooks["register_commands"] = {"cli": None}
        tb = ""
        for hook_name, kwargs in hooks.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                if hook_name == "register_commands":
                    kwargs["cli"] = staged.commands = _staging_group()
                try:
                    impl.function(*[kwargs[arg] for arg in impl.argnames])  # as pluggy calls it
                except Exception as exc:
                    if builtin:
                        raise  # a bug in dpokd itself keeps its traceback
                    staged.problems.append(f"{hook_name} raised {_one_line(exc)}")
                    tb = tb or _plugin_traceback(exc)
        staged.problems += self._clashes(staged.entries)
        if not staged.problems:
            for entry in staged.entries:
                for name in (entry.name, *entry.aliases):
                    self._entries[entry.kind][name] = entry
            if staged.commands is not None:
                self._commands.append((staged, plugin_name))
            return
        if builtin:
            raise PluginError("; ".join(staged.problems))
        complete = not tb  # a hook that raised may have had more to register
        self.broken.append(BrokenPlugin(
            package, version, plugin_name, "; ".join(staged.problems),
            traceback=tb or "\n".join(staged.problems) + "\n",
            registered=_names(staged.entries),
            guessed={} if complete else _names_in_source(getattr(plugin, "__file__", None)),
            complete=complete,
        ))

    def _clashes(self, entries: list[Entry]) -> list[str]:
        problems, seen = [], {}
        for entry in entries:
            for name in (entry.name, *entry.aliases):
                other = self._entries[entry.kind].get(name) or seen.get((entry.kind, name))
                if other is not None and other.cls is not entry.cls:
                    problems.append(
                        f"two {entry.kind} plugins claim the name {name!r}: "
                        f"{other.cls.__qualname__} from {_label(other.package, other.version)} and "
                        f"{entry.cls.__qualname__} from {_label(entry.package, entry.version)}; uninstall one of them"
                    )
                seen[(entry.kind, name)] = entry
        return problems

    def add_commands(self, group: Any) -> None:
        """Add every working plugin's commands to the ``dpokd`` click group; a taken name breaks the plugin."""
        for staged, plugin_name in list(self._commands):
            commands = staged.commands.commands
            taken = sorted(n for n, cmd in commands.items() if group.commands.get(n, cmd) is not cmd)
            if not taken:
                for name, cmd in commands.items():
                    group.add_command(cmd, name)
                continue
            self._commands.remove((staged, plugin_name))
            for kind in KINDS:
                table = self._entries[kind]
                for name in [n for n, e in table.items() if e.package == staged.package]:
                    del table[name]
            error = f"its command {', '.join(map(repr, taken))} clashes with an existing dpokd command; rename it"
            self.broken.append(BrokenPlugin(staged.package, staged.version, plugin_name, error,
                                            traceback=error + "\n", registered=_names(staged.entries), complete=True))

    def entries(self, kind: str) -> list[Entry]:
        """One entry per plugin (aliases folded), sorted by name."""
        unique = {id(e.cls): e for e in self._entries[kind].values()}
        return sorted(unique.values(), key=lambda e: e.name)

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        """The plugin ``name`` of ``kind``.

        A name a broken package registered is refused even when another plugin has it (that is a
        clash); an unknown name lists the known ones, the nearest, and any broken package that
        may have provided it.
        """
        for broken in self.broken:
            if (kind, name) in broken.registered:
                raise PluginError(f"{name!r} comes from {broken.label}, which failed to load: {broken.error}")
        entry = self._entries[kind].get(name)
        if entry is not None:
            return entry
        for broken in self.broken:
            if name in broken.guessed and broken.guessed[name] in (kind, None):
                raise PluginError(f"{name!r} comes from {broken.label}, which failed to load: {broken.error}")
        message = unknown_message(f"{kind} plugin", name, self.names(kind))
        suspects = [b for b in self.broken if not b.complete]
        if suspects:
            listing = "; ".join(f"{b.label} ({b.error})" for b in suspects)
            message += f"; it may come from a package that failed to load: {listing}"
        raise PluginError(message)


def unknown_message(what: str, name: str, known: list[str]) -> str:
    """``unknown X 'foo'; did you mean 'fob'? known: a, b, fob``."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(known) if known else "none installed"
    return f"unknown {what} {name!r}{hint} (known: {listing})"


def _names(entries: list[Entry]) -> set[tuple[str, str]]:
    return {(e.kind, name) for e in entries for name in (e.name, *e.aliases)}


def _label(package: str, version: str) -> str:
    return f"{package} {version}".strip()


def _one_line(exc: BaseException, limit: int = 400) -> str:
    """``Type: message`` on one line (pluggy's validation errors span three)."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _plugin_traceback(exc: BaseException) -> str:
    """The traceback from the plugin's own first frame: the frames of dpokd, pluggy and the import
    machinery above it say nothing to the plugin's author."""
    internal = (str(Path(__file__).resolve()), str(Path(pluggy.__file__).resolve().parent),
                str(Path(importlib.__file__).resolve().parent), "<frozen ")
    backport = sys.modules.get("importlib_metadata")  # once any library imports it, entry points load through it
    if backport is not None:
        internal += (str(Path(backport.__file__).resolve().parent),)
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(internal):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _plugin_class_problem(kind: str, cls: Any, package: str) -> str | None:
    base = {"task": "Task", "teacher": "Teacher", "student": "Student", "judge": "Judge"}[kind]
    if not (isinstance(cls, type) and issubclass(cls, Plugin) and getattr(cls, "kind", None) == kind):
        return f"package {package!r} registered {cls!r} as a {kind}, but it is not a dpokd.{base}"
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        return f"{kind} plugin {cls.__qualname__} from {package!r} has no `name`"
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        return (f"{kind} plugin {cls.name!r} from {package!r} does not define "
                f"{', '.join(f'`{m}`' for m in missing)}, which every dpokd.{base} must")
    undocumented = [n for n, f in cls.Options.model_fields.items() if not f.description]
    if undocumented:
        return (f"{kind} plugin {cls.name!r}: every option needs a description; "
                f"missing for {', '.join(undocumented)}")
    return None


def _staging_group() -> Any:
    return click.Group("dpokd")


# -- discovery --------------------------------------------------------------------------------


def plugin_manager() -> pluggy.PluginManager:
    """The built-in plugins; ``load_entry_points`` adds the third-party ones."""
    pm = pluggy.PluginManager("dpokd")
    pm.add_hookspecs(hookspecs)
    for module in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module), name=module)
    return pm


def load_entry_points(pm: pluggy.PluginManager) -> list[BrokenPlugin]:
    """Load the ``dpokd`` entry points one at a time; one that fails is returned, not raised.

    pluggy's ``load_setuptools_entrypoints(group, name=...)`` loads and registers the entry
    points of one name (and records the distribution for ``list_plugin_distinfo``), but stops at
    the first exception; calling it once per name keeps one package's failure from stopping the
    others. As in pluggy, the first entry point of a name wins and later ones of that name are
    skipped.
    """
    broken: list[BrokenPlugin] = []
    tried: set[str] = set()
    for dist in list(importlib.metadata.distributions()):
        for ep in dist.entry_points:
            if ep.group != GROUP or ep.name in tried or pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            tried.add(ep.name)
            try:
                pm.load_setuptools_entrypoints(GROUP, name=ep.name)
            except Exception as exc:
                broken.append(BrokenPlugin(
                    dist.metadata["name"], dist.version, ep.name, _one_line(exc),
                    traceback=_plugin_traceback(exc),
                    guessed=_names_in_source(_module_file(ep.module)),
                ))
    return broken


def _module_file(module: str) -> str | None:
    """Where ``module``'s source is, found the way ``import`` would find it, without running it."""
    path = None
    spec = None
    parts = module.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        spec = None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            try:
                spec = find_spec(name, path) if find_spec else None
            except Exception:
                spec = None
            if spec is not None:
                break
        if spec is None:
            return None
        path = spec.submodule_search_locations
    return spec.origin if spec is not None else None


def _names_in_source(filename: str | None) -> dict[str, str | None]:
    """Plugin names a module's source declares (``name = "..."`` in a class body), by kind when its
    base class says so. A module that does not parse declares none we can know."""
    try:
        tree = ast.parse(Path(filename).read_bytes()) if filename else None
    except (OSError, SyntaxError, ValueError):
        return {}
    names: dict[str, str | None] = {}
    if tree is None:
        return names
    class_kinds: dict[str, str | None] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", None) for b in node.bases]
        kind = next((BASES[b] for b in bases if b in BASES), None)
        class_kinds[node.name] = kind
        for stmt in node.body:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
            value = getattr(stmt, "value", None)
            if any(isinstance(t, ast.Name) and t.id == "name" for t in targets) and \
                    isinstance(value, ast.Constant) and isinstance(value.value, str):
                names[value.value] = kind
    for node in ast.walk(tree):  # register(Cls, aliases=("a", "b"))
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg == "aliases" and isinstance(kw.value, (ast.Tuple, ast.List)):
                first = node.args[0] if node.args else None
                kind = class_kinds.get(first.id) if isinstance(first, ast.Name) else None
                for elt in kw.value.elts:
                    if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                        names[elt.value] = kind
    return names


@lru_cache(maxsize=1)
def registry() -> Registry:
    """The process-wide registry (built once: entry points are read on first use)."""
    pm = plugin_manager()
    broken = load_entry_points(pm)
    return Registry(pm, broken)
