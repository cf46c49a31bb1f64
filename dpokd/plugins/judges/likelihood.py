"""``teacher-likelihood``: how close each student has come to the teacher, as the mean per-token
NLL of the teacher's answers to held-out prompts. API systems have no likelihood and are skipped."""

from __future__ import annotations

import dpokd
from dpokd import Score


class TeacherLikelihoodJudge(dpokd.Judge):
    """Mean per-token NLL of the teacher's eval answers under each student system (lower is closer)."""

    name = "teacher-likelihood"

    class Options(dpokd.Options):
        teacher: str = dpokd.Field("teacher", description="the system whose answers are scored")
        limit: int | None = dpokd.Field(None, ge=1, description="use only the first N eval prompts")

    def systems_named(self) -> dict[str, str]:
        return {"teacher": self.options.teacher}

    def evaluate(self, systems: dict[str, dpokd.System], task: dpokd.Task) -> list[Score]:
        if self.options.teacher not in systems:
            raise dpokd.ConfigError(f"judges: teacher-likelihood.teacher {self.options.teacher!r} is not a system "
                                    f"(systems: {', '.join(systems)})")
        examples = task.examples("eval")[: self.options.limit]
        answers = systems[self.options.teacher].answer(examples)
        kept = [(e, a.text) for e, a in zip(examples, answers) if a.ok]
        scores = []
        for name, system in systems.items():
            if system.logprob is None or name == self.options.teacher:
                continue
            nll = system.logprob([e for e, _ in kept], [t for _, t in kept])
            scores.append(Score(judge=self.name, system=name, metric="teacher_nll", value=sum(nll) / len(nll),
                                n=len(nll), higher_is_better=False))
        return scores


@dpokd.hookimpl
def register_judges(register):
    register(TeacherLikelihoodJudge)
