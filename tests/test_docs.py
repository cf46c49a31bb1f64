"""The plugin guide documents every hook and every public name, so a plugin is writable from it alone."""

import importlib
import inspect

import dpokd
from dpokd import hookspecs

from .conftest import ROOT

SECTION = (ROOT / "docs" / "plugins.md").read_text()


def test_every_hook_is_documented_with_its_signature():
    hooks = [f for name, f in vars(hookspecs).items() if name.startswith("register_")]
    assert len(hooks) == 5
    for hook in hooks:
        params = ", ".join(inspect.signature(hook).parameters)
        assert f"`{hook.__name__}({params})`" in SECTION, hook.__name__


def test_every_public_name_is_documented():
    for name in dpokd.__all__:
        assert f"- `{name}`" in SECTION, name
    for package in ("dpokd.data", "dpokd.llm", "dpokd.sandbox", "dpokd.scoring"):
        for name in importlib.import_module(package).__all__:
            assert f"`{name}`" in SECTION or f"`{name}(" in SECTION, f"{package}.{name}"
