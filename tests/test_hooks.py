"""Each hook, implemented as a third-party module would implement it, takes effect; and every hook
has such a test here (datasette's ``test_plugin_hooks_have_tests``)."""

import sys

import click
import click.testing
import pytest

import dpokd
from dpokd.registry import Registry, plugin_manager


def registry_with(module) -> Registry:
    pm = plugin_manager()
    pm.register(module, name="third-party")
    return Registry(pm)


def module_for(hook: str, cls) -> type:
    def implementation(register):
        register(cls, aliases=(f"{cls.name}-alias",))

    implementation.__name__ = hook
    return type("Module", (), {hook: staticmethod(dpokd.hookimpl(implementation))})


class Squares(dpokd.Task):
    name = "squares"

    def examples(self, split):
        return [dpokd.Example(id=f"{split}-{n}", prompt=f"{n}**2 =", reference=str(n * n)) for n in range(3)]


class Shout(dpokd.Teacher):
    name = "shout"

    def answer(self, examples):
        return [dpokd.Completion.of(e, e.prompt + "!") for e in examples]


class Parrot(dpokd.Student):
    name = "parrot"

    def generate(self, examples):
        return [dpokd.Completion.of(e, e.prompt) for e in examples]


class Length(dpokd.Judge):
    name = "length"

    def evaluate(self, systems, task):
        examples = self.eval_examples(task)
        return [dpokd.Score(judge=self.name, system=name, metric="chars",
                            value=sum(len(a.text) for a in system.answer(examples)))
                for name, system in systems.items()]


def _built(kind: str, hook: str, cls, name: str):
    entry = registry_with(module_for(hook, cls)).get(kind, name)
    assert entry.package == "third-party" and entry.cls is cls
    return entry.cls(entry.cls.Options(), dpokd.Context())


def test_hook_register_tasks():
    task = _built("task", "register_tasks", Squares, "squares-alias")
    assert [e.reference for e in task.examples("eval")] == ["0", "1", "4"]


def test_hook_register_teachers():
    teacher = _built("teacher", "register_teachers", Shout, "shout")
    assert [c.text for c in teacher.answer(Squares().examples("train"))] == ["0**2 =!", "1**2 =!", "2**2 =!"]


def test_hook_register_students():
    student = _built("student", "register_students", Parrot, "parrot-alias")
    assert [c.example_id for c in student.generate(Squares().examples("train"))] == ["train-0", "train-1", "train-2"]


def test_hook_register_judges():
    judge = _built("judge", "register_judges", Length, "length")
    systems = {"shout": dpokd.System("shout", Shout().answer)}
    [score] = judge.evaluate(systems, Squares())
    assert (score.system, score.metric, score.value) == ("shout", "chars", 21)


def test_hook_register_commands():
    class Tools:
        @staticmethod
        @dpokd.hookimpl
        def register_commands(cli):
            @cli.command()
            def tidy():
                "Tidy up."
                click.echo("tidied")

    group = click.Group("dpokd")
    registry_with(Tools).add_commands(group)
    result = click.testing.CliRunner().invoke(group, ["tidy"])
    assert result.exit_code == 0 and result.output == "tidied\n"


@pytest.mark.parametrize("hook", sorted(name for name in dir(plugin_manager().hook) if name.startswith("register_")))
def test_every_hook_has_a_test(hook):
    assert hasattr(sys.modules[__name__], f"test_hook_{hook}"), f"write test_hook_{hook} in {__file__}"
