"""The plugin manager: built-ins plus the ``dpokd`` entry-point group, looked up by kind and name."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from functools import lru_cache

import pluggy

from . import hookspecs
from .errors import PluginError
from .interfaces import Plugin

KINDS = ("task", "teacher", "student", "judge")

DEFAULT_PLUGINS = (
    "dpokd.plugins.tasks.synthetic",
    "dpokd.plugins.tasks.leetcode",
    "dpokd.plugins.tasks.humaneval",
    "dpokd.plugins.teachers.reference",
    "dpokd.plugins.teachers.litellm",
    "dpokd.plugins.students.hf_qlora",
    "dpokd.plugins.judges.execution",
    "dpokd.plugins.judges.likelihood",
    "dpokd.plugins.judges.pairwise",
)


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    cls: type[Plugin]
    package: str
    version: str
    aliases: tuple[str, ...] = ()


class Registry:
    """Every registered plugin class, by kind and name (aliases included)."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            hook = getattr(pm.hook, f"register_{kind}s")
            for impl in hook.get_hookimpls():
                package, version = self._provider(impl.plugin)
                impl.function(register=self._registrar(kind, package, version))

    def _provider(self, plugin: object) -> tuple[str, str]:
        for plugin_, dist in self.pm.list_plugin_distinfo():
            if plugin_ is plugin:
                return dist.metadata["name"], dist.version
        from . import __version__

        return "dpokd", __version__

    def _registrar(self, kind: str, package: str, version: str):
        def register(cls: type[Plugin], aliases: tuple[str, ...] | list[str] = ()) -> None:
            _check_plugin_class(kind, cls, package)
            entry = Entry(kind, cls.name, cls, package, version, tuple(aliases))
            table = self._entries[kind]
            for name in (cls.name, *aliases):
                if name in table and table[name].cls is not cls:
                    raise PluginError(
                        f"two {kind} plugins claim the name {name!r}: "
                        f"{table[name].cls.__qualname__} from package {table[name].package!r} "
                        f"and {cls.__qualname__} from package {package!r}; uninstall one of them"
                    )
                table[name] = entry

        return register

    def entries(self, kind: str) -> list[Entry]:
        """One entry per plugin (aliases folded), sorted by name."""
        unique = {id(e.cls): e for e in self._entries[kind].values()}
        return sorted(unique.values(), key=lambda e: e.name)

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        """The plugin ``name`` of ``kind``; an unknown name lists the known ones and the nearest."""
        try:
            return self._entries[kind][name]
        except KeyError:
            raise PluginError(unknown_message(f"{kind} plugin", name, self.names(kind))) from None


def unknown_message(what: str, name: str, known: list[str]) -> str:
    """``unknown X 'foo'; did you mean 'fob'? known: a, b, fob``."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(known) if known else "none installed"
    return f"unknown {what} {name!r}{hint} (known: {listing})"


def _check_plugin_class(kind: str, cls: type, package: str) -> None:
    base = {"task": "Task", "teacher": "Teacher", "student": "Student", "judge": "Judge"}[kind]
    if not (isinstance(cls, type) and issubclass(cls, Plugin) and getattr(cls, "kind", None) == kind):
        raise PluginError(f"package {package!r} registered {cls!r} as a {kind}, but it is not a dpokd.{base}")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise PluginError(f"{kind} plugin {cls.__qualname__} from {package!r} has no `name`")
    undocumented = [n for n, f in cls.Options.model_fields.items() if not f.description]
    if undocumented:
        raise PluginError(
            f"{kind} plugin {cls.name!r} from {package!r}: every option needs a description; "
            f"missing for {', '.join(undocumented)}"
        )


def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("dpokd")
    pm.add_hookspecs(hookspecs)
    for module in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module), name=module)
    pm.load_setuptools_entrypoints("dpokd")
    return pm


@lru_cache(maxsize=1)
def registry() -> Registry:
    """The process-wide registry (built once: entry points are read on first use)."""
    return Registry(plugin_manager())
