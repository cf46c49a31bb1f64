"""Plugin discovery: built-ins, a third-party package through entry points, and name clashes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dpokd
from dpokd.errors import PluginError
from dpokd.registry import Registry, plugin_manager

from .conftest import FIXTURES, ROOT, run_cli


def pip_install(package: Path, tmp_path_factory) -> Path:
    """Install a plugin package into a fresh directory that only a subprocess's PYTHONPATH sees.

    The package is copied first (the build writes into its source directory), and nothing is
    installed into the test environment itself, so nothing has to be uninstalled afterwards.
    """
    source = tmp_path_factory.mktemp("src") / package.name
    shutil.copytree(package, source)
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True)
    return target


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory):
    """The example plugin package, pip-installed into a directory put on PYTHONPATH."""
    return pip_install(ROOT / "examples" / "dpokd-echo", tmp_path_factory)


def with_path(*sites):
    return {"PYTHONPATH": os.pathsep.join([*map(str, sites), os.environ.get("PYTHONPATH", "")])}


def test_plugins_json_lists_builtins_and_the_installed_echo(echo_site):
    result = run_cli("plugins", "--json", env=with_path(echo_site))
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["broken"] == []
    rows = listing["plugins"]
    assert all(set(r) >= {"kind", "name", "package", "options"} for r in rows)
    by_name = {(r["kind"], r["name"]): r for r in rows}
    echo = by_name[("teacher", "echo")]
    assert echo["package"] == "dpokd-echo" and echo["options"] == ["prefix"]
    for builtin in [("task", "synthetic-codegen"), ("teacher", "reference"), ("teacher", "litellm"),
                    ("student", "hf-qlora"), ("judge", "execution")]:
        assert by_name[builtin]["package"] == "dpokd"
    # `dpokd plugins` says what each built-in does, in one line.
    described = [r["description"] for r in rows if r["package"] == "dpokd"]
    assert len(described) >= 16 and all(d.strip() and "\n" not in d for d in described), described


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


def test_a_name_taken_by_another_plugin_sets_the_newcomer_aside_and_naming_it_is_an_error():
    class Clash(dpokd.Teacher):
        name = "reference"

        def answer(self, examples):
            return []

    reg = registry_with_teacher(Clash)
    [broken] = reg.broken
    assert (broken.package, broken.complete) == ("Clash", True)
    assert reg.get("task", "synthetic-codegen").package == "dpokd"  # everything else still works
    with pytest.raises(PluginError, match="'reference' comes from Clash.*two teacher plugins claim the name "
                                          "'reference': ReferenceTeacher from dpokd 0.1.0 and .*Clash from Clash"):
        reg.get("teacher", "reference")


def test_an_option_without_description_is_refused():
    class Bare(dpokd.Teacher):
        name = "bare"

        class Options(dpokd.Options):
            x: int = 1

        def answer(self, examples):
            return []

    reg = registry_with_teacher(Bare)
    assert [b.error for b in reg.broken] == ["teacher plugin 'bare': every option needs a description; missing for x"]
    assert "bare" not in reg.names("teacher")
    with pytest.raises(PluginError, match="missing for x"):
        reg.get("teacher", "bare")


def test_a_plugin_without_its_kinds_required_method_is_refused_when_it_registers():
    class Silent(dpokd.Teacher):
        name = "silent"

        def answers(self, examples):  # a typo: not the method a teacher needs
            return []

    reg = registry_with_teacher(Silent)
    assert [b.error for b in reg.broken] == [
        "teacher plugin 'silent' from 'Silent' does not define `answer`, which every dpokd.Teacher must"]
    with pytest.raises(PluginError, match="does not define `answer`"):
        reg.get("teacher", "silent")


PARROT = """
import dpokd


class Parrot(dpokd.Student):
    name = "parrot"

    def generate(self, examples):
        return [dpokd.Completion.of(e, e.prompt) for e in examples]


@dpokd.hookimpl
def register_students(register):
    register(Parrot)
"""


def test_a_student_that_cannot_train_is_refused_by_a_training_run_before_the_teacher_is_asked(tmp_path):
    # Registering asks for `generate` alone (a student may only be judged); a run that trains needs more.
    from dpokd.testing import LoopbackServer

    (tmp_path / "parrot_student.py").write_text(PARROT)
    info = tmp_path / "parrot_student-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: parrot-student\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dpokd]\nparrot = parrot_student\n")
    with LoopbackServer(lambda body: "an answer") as server:
        spec = tmp_path / "spec.toml"
        spec.write_text(f'[run]\nname = "p"\nmode = "static"\noutput_dir = "runs"\ncache_dir = "cache"\n'
                        f'[task]\nplugin = "synthetic-codegen"\nn_train = 4\nn_eval = 4\n'
                        f'[teacher]\nplugin = "litellm"\nmodel = "openai/t"\napi_base = "{server.url}"\n'
                        f'[student]\nplugin = "parrot"\n[[judges]]\nplugin = "execution"\n')
        out = run_cli("run", str(spec), cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
        assert out.returncode == 2, out.stderr
        assert "student.plugin: student plugin 'parrot' does not define `train_dpo`, `save`, `load`" in \
            " ".join(out.stderr.split()), out.stderr
        assert server.requests == [] and not (tmp_path / "runs" / "p" / "teacher.jsonl").exists()
        spec.write_text(spec.read_text().replace('mode = "static"', 'mode = "eval"').replace('name = "p"', 'name = "e"'))
        out = run_cli("run", str(spec), cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
        assert out.returncode == 0, out.stderr  # judged only: generate is all it needs


def test_a_command_that_takes_a_dpokd_command_name_sets_its_plugin_aside():
    import click

    class Tools:
        @staticmethod
        @dpokd.hookimpl
        def register_commands(cli):
            @cli.command()
            def run():
                "Not dpokd's run."

            @cli.command()
            def tidy():
                "Not added either: its plugin is set aside."

    group = click.Group("dpokd", commands={"run": click.Command("run")})
    pm = plugin_manager()
    pm.register(Tools, name="tools")
    reg = Registry(pm)
    reg.add_commands(group)
    assert sorted(group.commands) == ["run"] and group.commands["run"].help is None
    assert [b.error for b in reg.broken] == ["its command 'run' clashes with an existing dpokd command; rename it"]


def test_every_builtin_option_has_a_description():
    from dpokd.registry import KINDS, registry

    for kind in KINDS:
        for entry in registry().entries(kind):
            for name, field in entry.cls.Options.model_fields.items():
                assert field.description, (kind, entry.name, name)


# -- broken third-party packages --------------------------------------------------------------

BROKEN = FIXTURES / "broken_plugins"
UNRELATED = """
[run]
name = "unrelated"
[task]
plugin = "synthetic-codegen"
n_train = 2
n_eval = 2
levels = [1]
[teacher]
plugin = "reference"
[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
tiny_hidden = 64
tiny_layers = 1
lora_r = 4
epochs = 1
batch_size = 2
max_length = 64
max_new_tokens = 8
[[judges]]
plugin = "execution"
"""

# fixture folder, package, the teacher it would provide, its error, and what naming that teacher says
CASES = {
    "import_error": ("dpokd-shout", "shout", "ModuleNotFoundError: No module named 'this_module_does_not_exist'",
                     "teacher.plugin: 'shout' comes from dpokd-shout 0.1, which failed to load: "
                     "ModuleNotFoundError: No module named 'this_module_does_not_exist'"),
    # a module that does not parse says nothing of the names it holds: the package is a suspect
    "syntax_error": ("dpokd-typo", "typo", "SyntaxError: expected ':' (dpokd_typo.py, line 7)",
                     "teacher.plugin: unknown teacher plugin 'typo' (known: litellm, reference); it may come "
                     "from a package that failed to load: dpokd-typo 0.1 (SyntaxError: expected ':' "
                     "(dpokd_typo.py, line 7))"),
    "hook_raises": ("dpokd-loud", "loud", "register_teachers raised RuntimeError: the second teacher is not ready",
                    "teacher.plugin: 'loud' comes from dpokd-loud 0.1, which failed to load: "
                    "register_teachers raised RuntimeError: the second teacher is not ready"),
    "undescribed": ("dpokd-bare", "bare", "teacher plugin 'bare': every option needs a description; missing for loudness",
                    "teacher.plugin: 'bare' comes from dpokd-bare 0.1, which failed to load: "
                    "teacher plugin 'bare': every option needs a description; missing for loudness"),
    "name_clash": ("dpokd-clash", "litellm",
                   "two teacher plugins claim the name 'litellm': LiteLLMTeacher from dpokd 0.1.0 and "
                   "OtherLiteLLMTeacher from dpokd-clash 0.1; uninstall one of them",
                   "teacher.plugin: 'litellm' comes from dpokd-clash 0.1, which failed to load: "
                   "two teacher plugins claim the name 'litellm': LiteLLMTeacher from dpokd 0.1.0 and "
                   "OtherLiteLLMTeacher from dpokd-clash 0.1; uninstall one of them"),
}


@pytest.fixture(scope="module")
def broken_sites(tmp_path_factory):
    return {case: pip_install(BROKEN / case, tmp_path_factory) for case in CASES}


@pytest.fixture
def specs(tmp_path):
    def write(teacher: str = "reference") -> Path:
        path = tmp_path / f"{teacher}.toml"
        path.write_text(UNRELATED.replace('plugin = "reference"', f'plugin = "{teacher}"'))
        return path

    return write


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("case", CASES)
def test_a_broken_package_is_one_warning_and_the_spec_not_using_it_validates(case, broken_sites, specs):
    package, _, error, _ = CASES[case]
    result = run_cli("validate", str(specs()), env=with_path(broken_sites[case]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")
    assert warnings(result.stderr) == [
        f"warning: plugin package {package} 0.1 failed to load: {error}; its plugins are not available "
        "(`dpokd plugins --traceback` shows why)"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_spec_naming_a_plugin_of_a_broken_package_exits_2_naming_the_package(case, command, broken_sites, specs):
    _, teacher, _, message = CASES[case]
    spec = specs(teacher)
    result = run_cli(command, str(spec), env=with_path(broken_sites[case]), cwd=spec.parent)
    assert result.returncode == 2, result.stderr
    assert f"{spec}: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (spec.parent / "runs").exists()


@pytest.mark.parametrize("case", CASES)
def test_plugins_lists_the_broken_package_apart_and_exits_0(case, broken_sites):
    package, _, error, _ = CASES[case]
    result = run_cli("plugins", "--json", env=with_path(broken_sites[case]))
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert [(b["package"], b["version"], b["error"]) for b in listing["broken"]] == [(package, "0.1", error)]
    rows = {(r["kind"], r["name"]): r["package"] for r in listing["plugins"]}
    assert rows[("teacher", "litellm")] == rows[("teacher", "reference")] == "dpokd"
    assert package not in rows.values()

    table = run_cli("plugins", env=with_path(broken_sites[case]))
    assert table.returncode == 0 and table.stderr == ""
    assert "failed to load" in table.stdout and package in table.stdout
    assert "Traceback" not in table.stdout


def test_plugins_traceback_shows_the_plugin_authors_own_frames(broken_sites):
    result = run_cli("plugins", "--traceback", env=with_path(broken_sites["import_error"], broken_sites["hook_raises"]))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    shout = out[out.index("dpokd-shout 0.1 (entry point shout)"):]
    assert "Traceback (most recent call last):" in shout
    assert 'dpokd_shout.py", line 3, in <module>' in shout
    assert "import this_module_does_not_exist" in shout
    loud = out[out.index("dpokd-loud 0.1 (entry point loud)"):]
    assert 'dpokd_loud.py", line 9, in register_teachers' in loud
    assert "RuntimeError: the second teacher is not ready" in loud
    assert "pluggy" not in out and "importlib" not in out  # only the plugin's frames
    assert run_cli("plugins", "-v", env=with_path(broken_sites["import_error"])).stdout.count("Traceback") == 1


def test_strict_mode_makes_a_broken_package_an_error(broken_sites, echo_site, specs):
    strict = {"DPOKD_PLUGINS_STRICT": "1"}
    broken = {**strict, **with_path(broken_sites["import_error"])}
    result = run_cli("validate", str(specs()), env=broken)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: plugin package dpokd-shout 0.1 failed to load: ModuleNotFoundError: No module named "
        "'this_module_does_not_exist' (DPOKD_PLUGINS_STRICT=1; `dpokd plugins --traceback` shows why)"
    ]
    listing = run_cli("plugins", "--json", env=broken)
    assert listing.returncode == 2 and json.loads(listing.stdout)["broken"][0]["package"] == "dpokd-shout"
    assert "error: 1 plugin package(s) failed to load and DPOKD_PLUGINS_STRICT=1 is set" in listing.stderr
    # with only working plugins installed, strict mode changes nothing
    working = run_cli("validate", str(specs("echo")), env={**strict, **with_path(echo_site)})
    assert working.returncode == 0 and working.stderr == "", working.stderr


@pytest.mark.slow
def test_a_spec_not_using_the_broken_packages_runs_to_the_end(broken_sites, specs):
    spec = specs()
    result = run_cli("run", str(spec), env=with_path(*broken_sites.values()), cwd=spec.parent)
    assert result.returncode == 0, result.stderr
    assert len(warnings(result.stderr)) == len(CASES)
    scores = json.loads((spec.parent / "runs" / "unrelated" / "results.json").read_text())["scores"]
    assert {s["system"] for s in scores} >= {"teacher", "student@base", "student@iter_1"}
