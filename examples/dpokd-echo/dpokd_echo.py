"""A complete third-party dpokd plugin: a teacher that answers with the prompt itself."""

import dpokd


@dpokd.hookimpl
def register_teachers(register):
    register(EchoTeacher)


class EchoTeacher(dpokd.Teacher):
    name = "echo"

    class Options(dpokd.Options):
        prefix: str = dpokd.Field("", description="text put before each answer")

    def answer(self, examples):
        return [dpokd.Completion.of(e, self.options.prefix + e.prompt) for e in examples]
