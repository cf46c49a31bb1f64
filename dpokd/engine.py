"""The DPO-KD pipeline: stages written to disk one after another, so a run resumes where it stopped.

prepare -> teacher -> (student -> pairs -> train) x iterations -> evaluate -> report.
The engine only orchestrates: model, HTTP and scoring code live in the plugins.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import models
from .contamination import overlapping
from .errors import ConfigError
from .interfaces import Context, Student, System
from .records import Completion, Example, PreferencePair, Score
from .runs import RunDir, read_jsonl, write_json, write_jsonl
from .spec import Spec

CONTAMINATION_WARN_SHARE = 0.01


class Engine:
    def __init__(self, spec: Spec, *, offline: bool = False, fresh: bool = False, console=None):
        self.spec = spec
        self.run = RunDir(spec.run.output_dir / spec.name)
        self.fresh = fresh
        if not fresh:
            self.run.check_spec(spec.resolved(), spec.path)
        self.context = Context(cache_dir=spec.run.cache_dir, run_dir=self.run.path, offline=offline,
                               seed=spec.run.seed, console=console)
        self.task = spec.task.build(self.context)
        self.teacher = spec.teacher.build(self.context)
        self.student: Student = spec.student.build(self.context)
        self.judges = [j.build(self.context) for j in spec.judges]

    # -- stages -----------------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str):
        start = time.monotonic()
        yield
        self.run.mark_done(name)
        self.context.log(f"[bold]{name}[/] done in {time.monotonic() - start:.1f}s")

    def execute(self) -> list[Score]:
        run = self.run
        if not self.fresh and run.is_done("report"):
            self.context.log(f"{run.path} is finished; showing its results (use --fresh to start over)")
            return run.results()
        train = self.prepare()
        chosen = self.teach(train)
        iterations = self.spec.run.iterations
        for k in range(1, iterations + 1):
            rejected = self.rejected(k, train)
            self.pairs(k, train, chosen, rejected)
            self.train(k)
        scores = self.evaluate(chosen)
        self.report()
        return scores

    def prepare(self) -> list[Example]:
        """Everything that can fail cheaply fails here, before the first paid call or file."""
        models.preflight(self.spec, self.context)  # retired or unpriced API models
        for plugin in (self.teacher, *self.judges, self.student, self.task):
            plugin.preflight()
        train = self.task.examples("train")
        try:
            self._check_data(train)
            self.student.prepare(train)  # checks what needs the tokenizer (max_length)
        except ConfigError as exc:
            raise ConfigError(f"{self.spec.path}: {exc}") from None
        self.run.create(self.fresh)
        if not self.run.is_done("prepare"):
            with self.stage("prepare"):
                self._check_disk()
                self.run.write_manifest(self.spec.resolved(), {
                    "seed": self.spec.run.seed, "offline": self.context.offline,
                    "contamination": self._contamination(train)})
        return train

    def _check_data(self, train: list[Example]) -> None:
        """What the spec asks of the task's data, checked before anything is paid for or written."""
        if not train:
            raise ConfigError("task: the train split is empty")
        for judge, component in zip(self.judges, self.spec.judges):
            examples_of = getattr(judge, "eval_examples", None)  # judges that bring their own eval set
            if not (examples_of(self.task) if examples_of is not None else self.task.examples("eval")):
                raise ConfigError(f"task: the eval split is empty, so {component.field} ({component.plugin}) has "
                                  "nothing to judge; hold out more examples (e.g. raise `task.eval_fraction`)")
        if self.spec.run.verified_pairs and not all(e.tests and e.entry_point for e in train):
            raise ConfigError("run.verified_pairs: the task's examples carry no tests; set verified_pairs = false")

    def _contamination(self, train: list[Example]) -> dict[str, Any]:
        eval_sets = {"task eval split": self.task.examples("eval")}
        task_ids = {e.id for e in eval_sets["task eval split"]}
        for judge in self.judges:
            examples_of = getattr(judge, "eval_examples", None)  # judges that bring their own eval set
            examples = examples_of(self.task) if examples_of is not None else []
            if examples and {e.id for e in examples} != task_ids:
                eval_sets[f"{judge.name} judge"] = examples
        counts = {}
        for name, examples in eval_sets.items():
            hits = overlapping(train, examples)
            counts[name] = {"overlapping": len(hits), "of": len(examples), "examples": hits[:20]}
            if examples and len(hits) / len(examples) > CONTAMINATION_WARN_SHARE:
                self.context.log(f"[yellow]warning:[/] {len(hits)} of {len(examples)} examples of the {name} share a "
                                 f"13-gram with the training data (first: {hits[0]})")
        return counts

    def _check_disk(self) -> None:
        for path in (self.spec.run.cache_dir, self.run.path):
            path.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(path).free
            if free < 200 * 2**20:
                raise ConfigError(f"only {free / 2**20:.0f} MB free at {path}; free some space or move `run.cache_dir`/`run.output_dir`")

    def teach(self, train: list[Example]) -> list[Completion]:
        path = self.run.path / "teacher.jsonl"
        if self.run.is_done("teacher"):
            return [Completion.model_validate(r) for r in read_jsonl(path)]
        with self.stage("teacher"):
            answers = self.teacher.answer(train)
            write_jsonl(path, [a.model_dump(mode="json") for a in answers])
        return answers

    def _iter_dir(self, k: int) -> Path:
        return self.run.path / f"iter_{k}"

    def _load_student_before(self, k: int) -> None:
        """Put the student in the state iteration ``k`` starts from."""
        self.student.load(None if k == 1 else self._iter_dir(k - 1) / "adapter")

    def rejected(self, k: int, train: list[Example]) -> list[Completion]:
        path = self._iter_dir(k) / "rejected.jsonl"
        stage = f"iter_{k}/student"
        if self.run.is_done(stage):
            return [Completion.model_validate(r) for r in read_jsonl(path)]
        with self.stage(stage):
            self._load_student_before(k)
            answers = self.student.generate(train)
            write_jsonl(path, [a.model_dump(mode="json") for a in answers])
        return answers

    def pairs(self, k: int, train: list[Example], chosen: list[Completion], rejected: list[Completion]) -> None:
        """Write ``iter_k/pairs.jsonl`` (TRL's preference format) and the counts of what was dropped."""
        path = self._iter_dir(k) / "pairs.jsonl"
        stage = f"iter_{k}/pairs"
        if self.run.is_done(stage):
            return
        with self.stage(stage):
            counts = {"examples": len(train), "teacher_failed": 0, "identical": 0, "not_verified": 0}
            keep: list[tuple[Example, Completion, Completion]] = []
            for example, good, bad in zip(train, chosen, rejected):
                if not good.ok:
                    counts["teacher_failed"] += 1
                elif good.text.strip() == bad.text.strip():
                    counts["identical"] += 1
                else:
                    keep.append((example, good, bad))
            if self.spec.run.verified_pairs:
                keep = self._verified(keep, counts)
            pairs = [PreferencePair(example_id=e.id, prompt=e.prompt, chosen=g.text, rejected=b.text, iteration=k)
                     for e, g, b in keep]
            rows = [p.model_dump(mode="json") for p in pairs]
            if self.spec.run.mix_previous and k > 1:
                previous = [r for r in read_jsonl(self._iter_dir(k - 1) / "pairs.jsonl") if not r.get("previous")]
                rows += [{**r, "previous": True} for r in previous]
            counts["pairs"] = len(pairs)
            write_jsonl(path, rows)
            write_json(self._iter_dir(k) / "pairs_stats.json", counts)
            self.context.log(f"iter {k}: {len(pairs)} pairs ({counts['identical']} identical, "
                             f"{counts['teacher_failed']} teacher failures, {counts['not_verified']} unverified dropped)")

    def _verified(self, keep, counts):
        from .evaluation import passes

        if not all(e.tests and e.entry_point for e, _, _ in keep):
            raise ConfigError("run.verified_pairs: the task's examples carry no tests; set verified_pairs = false")
        good = passes([e for e, _, _ in keep], [g.text for _, g, _ in keep])
        bad = passes([e for e, _, _ in keep], [b.text for _, _, b in keep])
        kept = [item for item, g, b in zip(keep, good, bad) if g and not b]
        counts["not_verified"] = len(keep) - len(kept)
        return kept

    def train(self, k: int) -> None:
        stage = f"iter_{k}/train"
        if self.run.is_done(stage):
            return
        with self.stage(stage):
            rows = read_jsonl(self._iter_dir(k) / "pairs.jsonl")
            batch = [PreferencePair.model_validate({key: v for key, v in r.items() if key != "previous"}) for r in rows]
            self._load_student_before(k)
            out = self._iter_dir(k)
            if not batch:
                # The student already answers every train prompt as the teacher does: nothing to
                # learn from; this iteration's student is the previous one.
                self.context.log(f"iter {k}: no pairs (see iter_{k}/pairs_stats.json); keeping the previous student")
                self.student.save(out / "adapter")
                write_json(out / "train_metrics.json", {"pairs": 0, "steps": 0, "skipped": True})
                return
            (out / "train_log.jsonl").unlink(missing_ok=True)
            metrics = self.student.train_dpo(batch, out)
            write_json(out / "train_metrics.json", metrics)

    def evaluate(self, chosen: list[Completion]) -> list[Score]:
        if self.run.is_done("evaluate"):
            return self.run.results()
        with self.stage("evaluate"):
            systems = self.systems()
            scores: list[Score] = [Score(judge="run", system="teacher", metric=m, value=v, higher_is_better=False)
                                   for m, v in _usage(chosen).items()]
            for judge in self.judges:
                scores += judge.evaluate(systems, self.task)
            self.run.write_results(scores)
        return scores

    def systems(self) -> dict[str, System]:
        systems = {"teacher": System("teacher", self.teacher.answer)}
        checkpoints: list[tuple[str, Path | None]] = [("student@base", None)]
        last = self.spec.run.iterations
        wanted = range(1, last + 1) if self.spec.run.evaluate == "all" else [last]
        checkpoints += [(f"student@iter_{k}", self._iter_dir(k) / "adapter") for k in wanted]
        for name, adapter in checkpoints:
            systems[name] = System(name, _with_adapter(self.student, adapter, "generate"),
                                   _with_adapter(self.student, adapter, "logprob"))
        return systems

    def report(self) -> None:
        from .leaderboard import plot_curves

        with self.stage("report"):
            plot_curves(self.run.path)


def _with_adapter(student: Student, adapter: Path | None, method: str):
    def call(*args):
        student.load(adapter)
        return getattr(student, method)(*args)

    return call


def _usage(answers: list[Completion]) -> dict[str, float]:
    return {"tokens": float(sum(a.prompt_tokens + a.completion_tokens for a in answers)),
            "cost_usd": float(sum(a.cost_usd for a in answers))}


def train_once(spec: Spec, pairs_path: Path, output: Path, adapter: Path | None = None) -> dict[str, Any]:
    """``dpokd train``: one ``train_dpo`` call, as launched by torchrun or accelerate (one per rank)."""
    import os

    context = Context(cache_dir=spec.run.cache_dir, seed=spec.run.seed)
    student: Student = spec.student.build(context)
    student.prepare(spec.task.build(context).examples("train"))
    student.load(adapter)
    pairs = [PreferencePair.model_validate({k: v for k, v in r.items() if k != "previous"}) for r in read_jsonl(pairs_path)]
    metrics = student.train_dpo(pairs, output)
    return {"rank": int(os.environ.get("RANK", 0)), "world_size": int(os.environ.get("WORLD_SIZE", 1)), **metrics}


def run_spec(spec: Spec, *, offline: bool = False, fresh: bool = False, console=None) -> Path:
    """``dpokd run``: execute (or resume) the spec, then print its leaderboard."""
    from .leaderboard import load_rows, render

    engine = Engine(spec, offline=offline, fresh=fresh, console=console)
    try:
        engine.execute()
    finally:
        engine.context.cache.save_counts()
    if console is not None:
        render(load_rows([engine.run.path]), "table", console)
    return engine.run.path
