"""Plugin discovery: built-ins, a third-party package through entry points, and name clashes."""

import json
import os
import subprocess
import sys

import pytest

import dpokd
from dpokd.errors import PluginError
from dpokd.registry import Registry, plugin_manager

from .conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory):
    """The example plugin package, pip-installed into a directory put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "examples" / "dpokd-echo")], check=True)
    return target


def with_path(site):
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_plugins_json_lists_builtins_and_the_installed_echo(echo_site):
    result = run_cli("plugins", "--json", env=with_path(echo_site))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all(set(r) >= {"kind", "name", "package", "options"} for r in rows)
    by_name = {(r["kind"], r["name"]): r for r in rows}
    echo = by_name[("teacher", "echo")]
    assert echo["package"] == "dpokd-echo" and echo["options"] == ["prefix"]
    for builtin in [("task", "synthetic-codegen"), ("teacher", "reference"), ("teacher", "litellm"),
                    ("student", "hf-qlora"), ("judge", "execution")]:
        assert by_name[builtin]["package"] == "dpokd"


def test_echo_teacher_is_validated_and_used(echo_site, tmp_path):
    script = (
        "from pathlib import Path\n"
        "from dpokd.spec import load_spec\n"
        "from dpokd.interfaces import Context\n"
        "spec = load_spec(Path(r'%s'))\n"
        "teacher = spec.teacher.build(Context())\n"
        "task = spec.task.build(Context())\n"
        "ex = task.examples('train')[0]\n"
        "print(repr(teacher.answer([ex])[0].text == '>> ' + ex.prompt))\n"
    )
    spec = tmp_path / "echo.toml"
    spec.write_text('[run]\n[task]\nplugin = "synthetic-codegen"\n[teacher]\nplugin = "echo"\nprefix = ">> "\n'
                    '[student]\nplugin = "hf-qlora"\nmodel = "dpokd:tiny"\n')
    env = {**os.environ, **with_path(echo_site)}
    out = subprocess.run([sys.executable, "-c", script % spec], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "True", out.stderr
    spec.write_text(spec.read_text().replace('prefix = ">> "', "prefix = 3"))
    bad = run_cli("validate", str(spec), env=with_path(echo_site))
    assert bad.returncode == 2 and "teacher.prefix" in bad.stderr


def registry_with_teacher(cls):
    """The built-ins plus one more teacher, registered as a third-party module would."""

    class Module:
        @staticmethod
        @dpokd.hookimpl
        def register_teachers(register):
            register(cls)

    pm = plugin_manager()
    pm.register(Module, name=cls.__name__)
    return Registry(pm)


def test_two_plugins_claiming_one_name_is_an_error_naming_both():
    class Clash(dpokd.Teacher):
        name = "reference"

    with pytest.raises(PluginError, match="two teacher plugins claim the name 'reference'.*ReferenceTeacher.*Clash"):
        registry_with_teacher(Clash)


def test_an_option_without_description_is_refused():
    class Bare(dpokd.Teacher):
        name = "bare"

        class Options(dpokd.Options):
            x: int = 1

    with pytest.raises(PluginError, match="missing for x"):
        registry_with_teacher(Bare)


def test_every_builtin_option_has_a_description():
    from dpokd.registry import KINDS, registry

    for kind in KINDS:
        for entry in registry().entries(kind):
            for name, field in entry.cls.Options.model_fields.items():
                assert field.description, (kind, entry.name, name)
