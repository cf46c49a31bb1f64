"""The DPO-KD pipeline: stages written to disk one after another, so a run resumes where it stopped.

prepare -> teacher -> (student -> pairs -> train) x iterations -> evaluate -> report;
an eval run (``mode = "eval"``) is prepare -> evaluate -> report.
The engine only orchestrates: model, HTTP and scoring code live in the plugins.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import interrupt, models
from .cards import write_run_cards
from .contamination import overlapping
from .errors import ConfigError, DpokdError, PluginError, SpecError
from .curves import plot_curves
from .interfaces import Context, Student, System
from .leaderboard import render
from .records import Completion, Example, Outcome, PreferencePair, Score
from .report import record_examples, write_report
from .runs import (RETRAIN, DiskFull, RunDir, checksum_file, damaged, data_fingerprint, is_disk_full, read_json,
                   read_jsonl, read_records, record_checksums, verify_checksums, write_json, write_jsonl)
from .sandbox import check_isolation
from .scoring.code import passes
from .scoring.outcomes import record
from .scoring.rows import load_rows
from .spec import RunOptions, Spec
from .trackers import log_scores

CONTAMINATION_WARN_SHARE = 0.01
TRAINING_METHODS = ("train_dpo", "save", "load")  # what a static or online run calls on its student


class Engine:
    def __init__(self, spec: Spec, *, offline: bool = False, fresh: bool = False, console=None,
                 retry_refused: bool = False):
        self.spec = spec
        _check_run_name(spec)
        self.run = RunDir(spec.run.output_dir / spec.name)
        self.fresh = fresh
        self.run.check_location(fresh, spec.path)
        if not fresh:
            self.run.check_spec(spec.resolved(), spec.path, spec.written())
        self.context = Context(cache_dir=spec.run.cache_dir, run_dir=self.run.path, offline=offline,
                               seed=spec.run.seed, console=console, retry_refused=retry_refused)
        self.task = spec.task.build(self.context)
        self.teacher = spec.teacher.build(self.context) if spec.teacher is not None else None
        self.student: Student | None = spec.student.build(self.context) if spec.student is not None else None
        self.judges = [j.build(self.context) for j in spec.judges]
        self.extra = {s.name: s.build(self.context) for s in spec.systems}  # [[systems]], by name
        self.loaded = _OneStudentLoaded()
        self.trained: int | None = None  # the last trained iteration, once the loop has run (or resumed)
        self._verified_adapters: set[Path] = set()

    # -- stages -----------------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str):
        interrupt.check()
        start = time.monotonic()
        yield
        self.run.mark_done(name)
        self.context.log(f"[bold]{name}[/] done in {time.monotonic() - start:.1f}s")
        interrupt.check()  # a Ctrl-C a library swallowed during the stage

    def execute(self) -> list[Score]:
        if self.fresh or not self.run.is_done("report"):  # a finished run is shown without keys
            self.preflight()  # before the lock, which makes the run directory
        with self.run.lock(), _disk_full_names_the_file():
            return self._execute()

    def preflight(self) -> None:
        """What can fail without reading data or writing a file: the systems judges name, models, keys,
        servers, the sandbox; the spec's own mistakes first, before what depends on the machine."""
        self._check_named_systems()
        self._check_student_trains()
        models.preflight(self.spec, self.context)  # retired or unpriced API models
        for plugin in (self.teacher, *self.judges, self.student, self.task, *self.extra.values()):
            if plugin is not None:
                with self._spec_named():
                    plugin.preflight()
        if self.spec.run.verified_pairs and not self.eval_only:
            check_isolation()  # verified pairs run the answers' code

    @contextmanager
    def _spec_named(self):
        """A data, model or server error, prefixed with the spec that asked for it, as a spec's own errors are."""
        try:
            yield
        except ConfigError as exc:  # its own class and exit code kept
            prefix = f"{self.spec.path}: "
            if not str(exc).startswith(prefix):
                exc.args = (prefix + str(exc), *exc.args[1:])
            raise

    def _check_named_systems(self) -> None:
        names = self.system_names()
        for i, judge in enumerate(self.judges):
            for option, system in judge.systems_named().items():
                if system not in names:
                    raise SpecError(f"{system!r} is not a system of this run; the systems are {', '.join(names)}",
                                    path=str(self.spec.path), field=f"judges[{i}].{option}")
                if self._may_stop_early() and system.startswith("student@iter_"):
                    raise SpecError(f"{system!r} may not exist: the loop ends at the first iteration with no new "
                                    "pairs (`run.stop_when_no_pairs`); name student@base or teacher, or set "
                                    "stop_when_no_pairs = false", path=str(self.spec.path), field=f"judges[{i}].{option}")

    def _check_student_trains(self) -> None:
        """A run that trains needs the student's training methods, which only an eval run may leave
        out (registering asks for ``generate`` alone): refused here, before the teacher is paid."""
        if self.eval_only or self.student is None:
            return
        missing = [m for m in TRAINING_METHODS if getattr(type(self.student), m) is getattr(Student, m)]
        if missing:
            raise SpecError(f"student plugin {self.student.name!r} does not define "
                            f"{', '.join(f'`{m}`' for m in missing)}, which a {self.spec.run.mode} run trains with "
                            "(a student without them can only be judged, in mode = \"eval\")",
                            path=str(self.spec.path), field="student.plugin")

    def _execute(self) -> list[Score]:
        run = self.run
        if not self.fresh and run.is_done("evaluate") and not (run.path / "results.json").exists():
            run.unmark("evaluate", "report")  # results.json was deleted: evaluate again
        if not self.fresh and run.is_done("report"):
            self.context.log(f"{run.path} is finished; showing its results (use --fresh to start over)")
            return run.results()
        train = self.prepare()
        chosen = [] if self.eval_only else self.teach(train)
        iterations = 0 if self.eval_only else self.spec.run.iterations
        for k in range(1, iterations + 1):
            rejected = self.rejected(k, train)
            if self.pairs(k, train, chosen, rejected).get("ends_loop"):
                self.context.log(f"iter {k}: no new pairs; the loop converged at iteration {k - 1} "
                                 "(`run.stop_when_no_pairs`)")
                break
            self.train(k)
            self.trained = k
            write_run_cards(self.run.path)  # the pairs' and the adapter's cards, scores added after evaluation
        scores = self.evaluate(chosen)
        self.report()
        return scores

    @property
    def eval_only(self) -> bool:
        return self.spec.run.mode == "eval"

    def students(self) -> list[Student]:
        """Every student plugin of the run: its own and those of [[systems]]."""
        return [p for p in (self.student, *self.extra.values()) if isinstance(p, Student)]

    def prepare(self) -> list[Example]:
        """Everything that can fail cheaply fails here, before the first paid call or file."""
        with self._spec_named():
            train = self.task.examples("train")
            self._check_data(train)
            for student in self.students():
                student.prepare(train)  # checks what needs the tokenizer (max_length); dpokd:tiny is built from it
        data = self._fingerprints(train)
        if not self.fresh:
            self.run.check_data(data)
        for name in self.run.create(self.fresh):
            self.context.log(f"--fresh kept {self.run.path / name}: dpokd did not write it")
        if not self.run.is_done("prepare"):
            with self.stage("prepare"):
                self._check_disk()
                self.run.write_manifest(self.spec.resolved(), {
                    "seed": self.spec.run.seed, "offline": self.context.offline, "data": data,
                    "contamination": self._contamination(train), "adapter_checksums": True})
        return train

    def _fingerprints(self, train: list[Example]) -> dict[str, Any]:
        """What each split holds, recorded in the manifest; records join by id, so ids must be unique."""
        splits = {"train": train, "eval": self.task.examples("eval")}
        for split, examples in splits.items():
            seen: set[str] = set()
            for e in examples:
                if e.id in seen:
                    raise ConfigError(f"task: example id {e.id!r} appears more than once in the {split} split; "
                                      "ids must be unique (check the data's id column)")
                seen.add(e.id)
        return {split: data_fingerprint(examples) for split, examples in splits.items()}

    def _check_data(self, train: list[Example]) -> None:
        """What the spec asks of the task's data, checked before anything is paid for or written."""
        if not train and not self.eval_only:
            raise ConfigError("task: the train split is empty")
        for judge, component in zip(self.judges, self.spec.judges):
            if not judge.eval_examples(self.task):
                raise ConfigError(f"task: the eval split is empty, so {component.field} ({component.plugin}) has "
                                  "nothing to judge; hold out more examples (e.g. raise `task.eval_fraction`)")
        if self.spec.run.verified_pairs and not self.eval_only and not all(e.tests and e.entry_point for e in train):
            raise ConfigError("run.verified_pairs: the task's examples carry no tests; set verified_pairs = false")

    def _contamination(self, train: list[Example]) -> dict[str, Any]:
        eval_sets = {"task eval split": self.task.examples("eval")}
        task_ids = {e.id for e in eval_sets["task eval split"]}
        for judge in self.judges:
            examples = judge.eval_examples(self.task)  # a judge's own eval set, unless it uses the task's
            if examples and {e.id for e in examples} != task_ids:
                eval_sets[f"{judge.name} judge"] = examples
        counts = {}
        for name, examples in eval_sets.items():
            hits = overlapping(train, examples)
            counts[name] = {"overlapping": len(hits), "of": len(examples), "examples": hits[:20]}
            if examples and len(hits) / len(examples) > CONTAMINATION_WARN_SHARE:
                self.context.log(f"[yellow]warning:[/] {len(hits)} of {len(examples)} examples of the {name} overlap "
                                 f"the training data: a shared 13-gram or an identical input (first: {hits[0]})")
        return counts

    def _check_disk(self) -> None:
        for path in (self.spec.run.cache_dir, self.run.path):
            path.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(path).free
            if free < 200 * 2**20:
                raise ConfigError(f"only {free / 2**20:.0f} MB free at {path}; free some space or move `run.cache_dir`/`run.output_dir`")

    def teach(self, train: list[Example]) -> Sequence[Completion]:
        path = self.run.path / "teacher.jsonl"
        if self.run.is_done("teacher"):
            return read_records(path, Completion)
        with self.stage("teacher"):
            # The client's answers read back from the cache one at a time: streamed to the file, never
            # all in memory at once.
            answers = _joined(train, self.teacher.answer(train), f"teacher {self.teacher.name!r}")
            write_jsonl(path, (a.model_dump(mode="json") for a in answers))
        return answers

    def _iter_dir(self, k: int) -> Path:
        return self.run.path / f"iter_{k}"

    def _load_student_before(self, k: int) -> None:
        """Put the student in the state iteration ``k`` starts from."""
        self.student.load(None if k == 1 else self._adapter(k - 1))

    def _adapter(self, k: int) -> Path:
        """Iteration ``k``'s trained adapter, which a finished train stage left on disk."""
        path = self._iter_dir(k) / "adapter"
        if not path.is_dir():
            raise damaged(path, f"is missing: iteration {k}'s trained student is gone")
        if path not in self._verified_adapters:
            kept = bool((self.run.manifest() or {}).get("adapter_checksums"))  # False in runs begun before
            verify_checksums(path, f"iteration {k} trained it", required=kept)
            self._verified_adapters.add(path)
        return path

    def rejected(self, k: int, train: list[Example]) -> list[Completion]:
        path = self._iter_dir(k) / "rejected.jsonl"
        stage = f"iter_{k}/student"
        if self.run.is_done(stage):
            return read_records(path, Completion)
        with self.stage(stage):
            self._load_student_before(k)
            answers = _joined(train, self.student.generate(train), f"student {self.student.name!r}")
            write_jsonl(path, [a.model_dump(mode="json") for a in answers])
        return answers

    def _may_stop_early(self) -> bool:
        return self.spec.run.mode == "online" and self.spec.run.stop_when_no_pairs

    def pairs(self, k: int, train: list[Example], chosen: Sequence[Completion], rejected: Sequence[Completion]) -> dict[str, Any]:
        """Write ``iter_k/pairs.jsonl`` (TRL's preference format) and the counts of what was dropped;
        returns the counts, ``ends_loop`` set where no new pair ends an online loop."""
        path = self._iter_dir(k) / "pairs.jsonl"
        stats_path = self._iter_dir(k) / "pairs_stats.json"
        stage = f"iter_{k}/pairs"
        if self.run.is_done(stage):
            counts = read_json(stats_path)
            if not isinstance(counts, dict):
                raise damaged(stats_path, "is not a JSON object")
            return counts
        with self.stage(stage):
            counts = {"examples": len(train), "teacher_failed": 0, "teacher_truncated": 0, "identical": 0,
                      "not_verified": 0}
            keep: list[tuple[Example, Completion, Completion]] = []
            good_of = _by_id(chosen, train, self.run.path / "teacher.jsonl")
            bad_of = _by_id(rejected, train, self._iter_dir(k) / "rejected.jsonl")
            for example in train:
                good, bad = good_of[example.id], bad_of[example.id]
                if why := _dropped(good, bad, self.spec.run.keep_truncated):
                    counts[why] += 1
                else:
                    keep.append((example, good, bad))
            if self.spec.run.verified_pairs:
                keep = self._verified(keep, counts)
            pairs = [PreferencePair(example_id=e.id, prompt=e.messages or e.prompt, chosen=g.text, rejected=b.text, iteration=k)
                     for e, g, b in keep]
            rows = [p.model_dump(mode="json") for p in pairs]
            if self.spec.run.mix_previous and k > 1:
                previous = [r for r in _pairs_rows(self._iter_dir(k - 1)) if not r.get("previous")]
                rows += [{**r, "previous": True} for r in previous]
            counts["pairs"] = len(pairs)
            if not pairs and self._may_stop_early():
                counts["ends_loop"] = True
                rows = []  # nothing trains on this iteration's pairs, the previous ones included
            if rows:
                write_jsonl(path, rows)
            else:  # an empty JSONL file is no dataset to `datasets`: pairs_stats.json says there are none
                path.unlink(missing_ok=True)
            write_json(stats_path, counts)
            repeated = len(rows) - len(pairs) if rows else 0
            mixed = f"; {len(rows)} to train on with {repeated} from iteration {k - 1} (mix_previous)" if repeated else ""
            self.context.log(f"iter {k}: {len(pairs)} new pairs ({counts['identical']} identical, "
                             f"{counts['teacher_failed']} teacher failures, {counts['teacher_truncated']} truncated "
                             f"by the teacher's max_tokens, {counts['not_verified']} unverified dropped){mixed}")
        return counts

    def _verified(self, keep, counts):
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
            pairs_file = self._iter_dir(k) / "pairs.jsonl"
            batch = read_records(pairs_file, PreferencePair) if pairs_file.exists() else []
            self._load_student_before(k)
            out = self._iter_dir(k)
            if not batch:
                # The student already answers every train prompt as the teacher does: nothing to
                # learn from; this iteration's student is the previous one.
                self.context.log(f"iter {k}: no pairs (see iter_{k}/pairs_stats.json); keeping the previous student")
                self.student.save(out / "adapter")
                record_checksums(out / "adapter")
                write_json(out / "train_metrics.json", {"pairs": 0, "steps": 0, "skipped": True})
                return
            (out / "train_log.jsonl").unlink(missing_ok=True)
            checksum_file(out / "adapter").unlink(missing_ok=True)  # an earlier attempt's, if any
            try:
                metrics = self.student.train_dpo(batch, out)
            except BaseException:
                shutil.rmtree(out / "adapter", ignore_errors=True)  # half-saved weights must not look trained
                raise
            record_checksums(out / "adapter")
            write_json(out / "train_metrics.json", metrics)

    def evaluate(self, chosen: Sequence[Completion]) -> list[Score]:
        if self.run.is_done("evaluate"):
            return self.run.results()
        with self.stage("evaluate"):
            systems = self.systems()
            results: list[Score | Outcome] = [Score(judge="run", system="teacher", metric=m, value=v,
                                                    higher_is_better=False) for m, v in _usage(chosen).items()] if chosen else []
            for judge in self.judges:
                results += judge.evaluate(systems, self.task)
            scores = record(self.run.path, results)
            write_run_cards(self.run.path)
            log_scores(self.run.path, getattr(getattr(self.student, "options", None), "report_to", ()), scores,
                       self.context.log)
        return scores

    def _checkpoints(self) -> list[tuple[str, int | None]]:
        """The student's judged checkpoints: the base model and the iterations the spec asks for (before
        the loop) or that were trained (after it: an online loop may stop early)."""
        if self.student is None:
            return []
        if self.eval_only:
            return [("student@base", None)]
        last = self.spec.run.iterations if self.trained is None else self.trained
        wanted = range(1, last + 1) if self.spec.run.evaluate == "all" else [last] if last else []
        return [("student@base", None)] + [(f"student@iter_{k}", k) for k in wanted]

    def system_names(self) -> list[str]:
        return (["teacher"] if self.teacher is not None else []) + [name for name, _ in self._checkpoints()] + list(self.extra)

    def systems(self) -> dict[str, System]:
        """What the judges score: the teacher, the student's checkpoints, then the [[systems]] in spec order."""
        systems = {}
        if self.teacher is not None:
            systems["teacher"] = System("teacher", _aligned(self.teacher.answer, "teacher"))
        checkpoints = [(name, None if k is None else self._adapter(k)) for name, k in self._checkpoints()]
        for name, adapter in checkpoints:
            systems[name] = self._student_system(name, self.student, adapter)
        for name, plugin in self.extra.items():
            if isinstance(plugin, Student):
                systems[name] = self._student_system(name, plugin, None)  # None: its own `adapter`, if any
            else:
                systems[name] = System(name, _aligned(plugin.answer, name))
        return systems

    def _student_system(self, name: str, student: Student, adapter: Path | None) -> System:
        return System(name, _aligned(_with_adapter(student, adapter, "generate", self.loaded), name),
                      _with_adapter(student, adapter, "logprob", self.loaded), _weights(student, adapter, self.loaded))

    def report(self) -> None:
        with self.stage("report"):
            plot_curves(self.run.path)
            judged = []  # the prompts every judge asked, so the report can show them beside the answers
            for judge in self.judges:
                judged += judge.eval_examples(self.task)
            record_examples(self.run.path, judged)
            write_report([self.run.path], self.run.path / "report.html")


class _OneStudentLoaded:
    """Unloads the student last used before another one loads: two 4-bit models never share memory."""

    def __init__(self):
        self.current: Student | None = None

    def use(self, student: Student) -> None:
        if self.current is not None and self.current is not student:
            self.current.unload()
        self.current = student


def _with_adapter(student: Student, adapter: Path | None, method: str, loaded: _OneStudentLoaded | None = None):
    def call(*args):
        if loaded is not None:
            loaded.use(student)
        student.load(adapter)
        return getattr(student, method)(*args)

    return call


def _weights(student: Student, adapter: Path | None, loaded: _OneStudentLoaded):
    """The checkpoint as files, for a judge that loads the weights itself: the student in memory is
    unloaded first, so the two copies never share memory."""
    def call():
        if loaded.current is not None:
            loaded.current.unload()
            loaded.current = None
        return student.checkpoint(adapter)

    return call


def _joined(examples: list[Example], answers: Sequence[Completion], who: str) -> Sequence[Completion]:
    """``answers`` in the order of ``examples``, matched by ``example_id``, one per example.

    Repeated samples of one prompt share an id; they are matched in the order they came.
    """
    want = [e.id for e in examples]
    if len(answers) == len(want) and all(a.example_id == i for a, i in zip(answers, want)):
        return answers
    queues: dict[str, list[Completion]] = defaultdict(list)
    for answer in answers:
        queues[answer.example_id].append(answer)
    asked = Counter(want)
    missing = [i for i in asked if len(queues.get(i, ())) < asked[i]]
    extra = [i for i in queues if len(queues[i]) > asked[i]]
    if missing or extra:
        shown = "; ".join(f"{what} (first: {ids[0]!r})" for what, ids in (
            (f"no answer for {len(missing)} example(s)", missing), (f"extra answers for {len(extra)} example(s)", extra))
            if ids)
        raise PluginError(f"{who} answered {len(answers)} times for {len(examples)} prompts: {shown}")
    return [queues[i].pop(0) for i in want]


def _aligned(answer, who: str):
    """A system's answer function whose answers always line up with the examples asked."""
    def call(examples: list[Example]) -> list[Completion]:
        return _joined(examples, answer(examples), who)

    return call


def _by_id(answers: Sequence[Completion], examples: list[Example], path: Path) -> dict[str, Completion]:
    """One answer per example, by id: a missing, repeated or unknown answer means ``path`` is damaged."""
    out: dict[str, Completion] = {}
    for answer in answers:
        if answer.example_id in out:
            raise damaged(path, f"holds more than one answer for example {answer.example_id!r}")
        out[answer.example_id] = answer
    missing = [e.id for e in examples if e.id not in out]
    if missing:
        raise damaged(path, f"has no answer for {len(missing)} of {len(examples)} train examples (first: {missing[0]!r})")
    unknown = out.keys() - {e.id for e in examples}
    if unknown:
        raise damaged(path, f"holds answers for {len(unknown)} example(s) not in the train split "
                            f"(first: {sorted(unknown)[0]!r})")
    return out


def _dropped(good: Completion, bad: Completion, keep_truncated: bool) -> str | None:
    """Why a train prompt gives no pair (its count's key in ``pairs_stats.json``), or None to keep it.

    A truncated chosen answer would teach the student to stop mid-answer, so it is dropped unless
    ``run.keep_truncated``; the student's own truncated answers stay, as the rejected side."""
    if not good.ok:
        return "teacher_failed"
    if good.truncated and not keep_truncated:
        return "teacher_truncated"
    if good.text.strip() == bad.text.strip():
        return "identical"
    return None


def _check_run_name(spec: Spec) -> None:
    """A run name made from the file name obeys the `[run] name` rule too (``..toml`` would name ``runs/.``)."""
    if spec.run.name is None:
        try:
            RunOptions.model_validate({"name": spec.name})
        except ValidationError:
            raise SpecError(f"the file name makes the run name {spec.name!r}, which is not a valid run name (letters, "
                            "digits, '.', '_' and '-', starting with a letter or digit); set [run] name",
                            path=str(spec.path), field="run.name") from None


@contextmanager
def _disk_full_names_the_file():
    """A full disk mid-stage is a user error: the stage stays unfinished, so a re-run resumes it."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(exc.filename) from None
        raise
    except DpokdError:
        raise
    except Exception as exc:
        # safetensors and torch report a failed write as their own error, with the OS's words in it.
        if "No space left on device" in str(exc):
            raise DiskFull(None) from None
        raise


def _usage(answers: Sequence[Completion]) -> dict[str, float | None]:
    """Tokens and dollars of the teacher's answers, those a previous process paid for and the cache
    replays included: ``Teacher.usage()`` counts only what this process spent. Dollars are None
    where a model has no known price: unknown is not free. ``truncated``: the answers that
    max_tokens cut off, which the pairs leave out unless ``run.keep_truncated``."""
    tokens, cost, truncated = 0, 0.0, 0
    for a in answers:  # once: the teacher's answers may be read back from the cache
        tokens += a.prompt_tokens + a.completion_tokens
        cost = None if cost is None or a.cost_usd is None else cost + a.cost_usd
        truncated += a.ok and a.truncated
    return {"tokens": float(tokens), "cost_usd": cost, "truncated": float(truncated)}


def train_once(spec: Spec, pairs_path: Path, output: Path, adapter: Path | None = None) -> dict[str, Any]:
    """``dpokd train``: one ``train_dpo`` call, as launched by torchrun or accelerate (one per rank)."""
    import os

    if spec.student is None:
        raise SpecError("`dpokd train` trains the spec's student, and it has no [student] table", path=str(spec.path),
                        field="student")
    context = Context(cache_dir=spec.run.cache_dir, seed=spec.run.seed)
    student: Student = spec.student.build(context)
    student.prepare(spec.task.build(context).examples("train"))
    if adapter is not None:
        verify_checksums(adapter, "its train stage saved it", remedy=RETRAIN)
    student.load(adapter)
    pairs = read_records(pairs_path, PreferencePair)
    metrics = student.train_dpo(pairs, output)
    return {"rank": int(os.environ.get("RANK", 0)), "world_size": int(os.environ.get("WORLD_SIZE", 1)), **metrics}


def run_spec(spec: Spec, *, offline: bool = False, fresh: bool = False, console=None,
             retry_refused: bool = False) -> Path:
    """``dpokd run``: execute (or resume) the spec, then print its leaderboard."""
    engine = Engine(spec, offline=offline, fresh=fresh, console=console, retry_refused=retry_refused)
    try:
        engine.execute()
    finally:
        engine.context.cache.save_counts()
    if console is not None:
        render(load_rows([engine.run.path]), "table", console)
    return engine.run.path


def _pairs_rows(iter_dir: Path) -> list[dict[str, Any]]:
    """An iteration's pairs; one with none has no pairs.jsonl."""
    path = iter_dir / "pairs.jsonl"
    return read_jsonl(path) if path.exists() else []
