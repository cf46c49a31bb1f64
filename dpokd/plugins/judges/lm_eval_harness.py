"""``lm-eval``: EleutherAI's lm-evaluation-harness on every local checkpoint of a run.

General benchmarks beside the task's own judges, to show what distillation cost elsewhere. Each
student system (the base, every trained iteration, each local ``[[systems]]`` model) is handed to
``lm_eval.simple_evaluate`` as its base model and adapter folder (``pretrained=…,peft=…``), the model
loaded once per checkpoint for all its tasks. API systems have no weights and are skipped. Each
task's main metric is a leaderboard column ``lm-eval/TASK/METRIC`` with lm-eval's standard error as a
95% interval, and its per-sample results are outcomes, so the paired Δ and McNemar's p come from
them. Results are cached per (checkpoint, task, settings): a resumed or replayed run does not
evaluate again. lm-eval is imported only when the judge validates or runs (``pip install
dpokd[lm-eval]``).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationInfo

import dpokd
from dpokd import Example, Outcome, Score

Z95 = 1.959964  # the normal quantile of a two-sided 95% interval
INSTALL = "the lm-eval judge needs lm-evaluation-harness: pip install 'dpokd[lm-eval]'"
# Keys of an lm-eval result that are not metrics.
NOT_METRICS = ("alias", "name", "sample_len", "samples")


def _lm_eval():
    try:
        import lm_eval
    except ImportError:
        raise dpokd.ConfigError(INSTALL) from None
    return lm_eval


def is_yaml(task: str) -> bool:
    return task.endswith((".yaml", ".yml"))


def task_config(path: Path) -> dict[str, Any]:
    """A task YAML as lm-eval reads it, with relative ``data_files`` read from the YAML's own folder
    (lm-eval reads them from the working directory), so a spec runs from anywhere."""
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(path, resolve_func=True)
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if files is not None:
        config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": _resolved(files, path.parent)}
    return config


def _resolved(files, folder: Path):
    if isinstance(files, str):
        return files if "://" in files or Path(files).is_absolute() else str(folder / files)
    if isinstance(files, list):
        return [_resolved(f, folder) for f in files]
    return {split: _resolved(f, folder) for split, f in files.items()}


@functools.cache
def known_tasks() -> tuple[str, ...]:
    """Every task, group and tag name lm-eval ships (indexing them takes several seconds)."""
    _lm_eval()
    from lm_eval.tasks import TaskManager

    return tuple(TaskManager().all_tasks)


def _checked_task(task: str, base: Path | None) -> str:
    """A YAML path made absolute and checked to parse as a task; a name checked against lm-eval's."""
    if not is_yaml(task):
        known = known_tasks()
        if task not in known:
            close = difflib.get_close_matches(task, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown lm-eval task {task!r}{hint} (`lm-eval ls tasks` lists them; a path ending "
                             "in .yaml names your own task)")
        return task
    path = Path(os.path.expanduser(task))
    path = (base / path if base is not None and not path.is_absolute() else path).resolve()
    if not path.is_file():
        raise ValueError(f"task {task!r}: {path} does not exist")
    _lm_eval()
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        config = load_yaml(path, resolve_func=False)
    except Exception as exc:  # yaml's errors, a missing include, a cycle
        raise ValueError(f"task {task!r}: {path} is not a task YAML lm-eval can read: "
                         f"{' '.join(str(exc).split())[:300]}") from None
    if not (config.get("task") or config.get("group")):
        raise ValueError(f"task {task!r}: {path} has no `task` (or `group`) name")
    return str(path)


class LMEvalJudge(dpokd.Judge):
    """lm-evaluation-harness tasks on each local checkpoint: one column per task, per-sample outcomes."""

    name = "lm-eval"

    class Options(dpokd.Options):
        tasks: list[str] = dpokd.Field(
            min_length=1, description="lm-eval task names (`hellaswag`, `arc_easy`, a group such as `mmlu`) or paths "
            "to task YAML files, relative to the spec (`dataset_path: json` over a local file runs offline)")
        num_fewshot: int | None = dpokd.Field(None, ge=0, description="examples in each prompt; default: each task's own")
        limit: int | None = dpokd.Field(None, ge=1, description="evaluate only the first N documents of each task")
        batch_size: int = dpokd.Field(1, ge=1, description="lm-eval's batch size")
        gen_kwargs: dict[str, Any] = dpokd.Field(
            {}, description="generation settings for tasks that generate (`generate_until`), over the task's own: "
            "e.g. {max_gen_toks = 64, until = [\"\\n\"]}")
        model_args: dict[str, str | int | float | bool] = dpokd.Field(
            {}, description="more arguments for lm-eval's Hugging Face backend (`dtype`, `device`, `max_length`); "
            "`pretrained`, `peft` and `revision` come from each checkpoint")

        @dpokd.field_validator("tasks")
        @classmethod
        def _readable(cls, v: list[str], info: ValidationInfo) -> list[str]:
            base = (info.context or {}).get("spec_dir")
            return [_checked_task(t, None if base is None else Path(base)) for t in v]

        @dpokd.field_validator("model_args")
        @classmethod
        def _own_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
            taken = sorted({"pretrained", "peft", "revision"} & set(v))
            if taken:
                raise ValueError(f"{', '.join(taken)} come from each checkpoint; leave them out")
            return v

    def __init__(self, options=None, context=None):
        super().__init__(options, context)
        self._loaded: dict[str, dict[str, Any]] | None = None  # each `tasks` entry's leaf tasks, by name

    def preflight(self) -> None:
        _lm_eval()

    # -- the tasks --------------------------------------------------------------------------------
    def _spec(self, task: str):
        return task_config(Path(task)) if is_yaml(task) else task

    def leaf_tasks(self) -> dict[str, dict[str, Any]]:
        """``{entry: {task name: lm-eval Task}}`` for each ``tasks`` entry (a group gives several)."""
        if self._loaded is None:
            _lm_eval()
            from lm_eval.tasks import TaskManager

            _quiet()
            manager = TaskManager(include_defaults=not all(map(is_yaml, self.options.tasks)))
            self._loaded = {t: manager.load([self._spec(t)])["tasks"] for t in self.options.tasks}
        return self._loaded

    def _docs(self, task) -> list[Any]:
        return list(task.eval_docs)[: self.options.limit]

    def eval_examples(self, task: dpokd.Task) -> list[Example]:
        """The documents lm-eval asks, as the report shows them: the prompt and the right answer."""
        return [Example(id=f"{name}/{i}", prompt=str(t.doc_to_text(doc)), reference=_target(t, doc),
                        meta={"lm_eval_task": name})
                for leaves in self.leaf_tasks().values() for name, t in leaves.items()
                for i, doc in enumerate(self._docs(t))]

    def _task_digest(self, entry: str) -> str:
        """What an entry's results depend on besides the model: its configs and documents."""
        digest = hashlib.sha256()
        for name, task in sorted(self.leaf_tasks()[entry].items()):
            digest.update(json.dumps([name, task.dump_config(), self._docs(task)], sort_keys=True, default=str).encode())
        return digest.hexdigest()

    # -- evaluating -------------------------------------------------------------------------------
    def evaluate(self, systems: dict[str, dpokd.System], task: dpokd.Task) -> list[Score | Outcome]:
        results: list[Score | Outcome] = []
        for name, system in systems.items():
            checkpoint = system.checkpoint() if system.checkpoint is not None else None
            if checkpoint is None:
                self.context.log(f"lm-eval: {name} skipped: it has no local weights (an API model)")
                continue
            for found in self.results(name, checkpoint).values():
                for leaf, result in found["tasks"].items():
                    results += _records(name, leaf, result, found["model_args"])
        return results

    def model_args(self, checkpoint: dpokd.Checkpoint) -> dict[str, Any]:
        """lm-eval's Hugging Face backend arguments for one checkpoint: the base, the adapter, a device."""
        args: dict[str, Any] = {"pretrained": checkpoint.model}
        if checkpoint.adapter is not None:
            args["peft"] = str(checkpoint.adapter)
        if checkpoint.revision is not None:
            args["revision"] = checkpoint.revision
        if "device" not in self.options.model_args:
            import torch

            args["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        return {**args, **self.options.model_args}

    def _key(self, checkpoint: dpokd.Checkpoint, entry: str) -> str:
        o = self.options
        return dpokd.request_key({"kind": "lm-eval", "checkpoint": checkpoint.identity, "task": entry,
                                  "task_digest": self._task_digest(entry), "num_fewshot": o.num_fewshot,
                                  "limit": o.limit, "batch_size": o.batch_size, "gen_kwargs": o.gen_kwargs,
                                  "model_args": o.model_args, "lm_eval": _lm_eval().__version__})

    def results(self, system: str, checkpoint: dpokd.Checkpoint) -> dict[str, dict[str, Any]]:
        """Each entry's results for one checkpoint: from the cache, else from one lm-eval call for all
        the entries the cache lacks (the model loaded once), each stored the moment it is known."""
        cache = self.context.cache
        keys = {entry: self._key(checkpoint, entry) for entry in self.options.tasks}
        found = {entry: cached for entry, key in keys.items() if (cached := cache.get(key)) is not None}
        missing = [entry for entry in self.options.tasks if entry not in found]
        if missing:
            self.context.log(f"lm-eval: {system} on {', '.join(self._label(e) for e in missing)}")
            output = self.run_lm_eval(checkpoint, missing)
            for entry in missing:
                found[entry] = _entry_result(output, self.leaf_tasks()[entry], self.model_args(checkpoint))
                cache.put(keys[entry], found[entry])
        return {entry: found[entry] for entry in self.options.tasks}

    def _label(self, entry: str) -> str:
        return ", ".join(self.leaf_tasks()[entry])

    def run_lm_eval(self, checkpoint: dpokd.Checkpoint, entries: list[str]) -> dict[str, Any]:
        """``lm_eval.simple_evaluate`` on the checkpoint, with per-sample results."""
        lm_eval = _lm_eval()
        from lm_eval.tasks import TaskManager

        o = self.options
        _quiet()
        manager = TaskManager(include_defaults=not all(map(is_yaml, entries)))
        with _no_git_describe():
            output = lm_eval.simple_evaluate(
                model="hf", model_args=self.model_args(checkpoint), tasks=[self._spec(e) for e in entries],
                task_manager=manager, num_fewshot=o.num_fewshot, limit=o.limit, batch_size=o.batch_size,
                gen_kwargs=o.gen_kwargs or None, log_samples=True)
        if output is None:  # lm-eval returns nothing on ranks other than the first
            raise dpokd.PluginError("lm-eval returned no results (a process other than the first of a launch?)")
        return output


_GIT_DESCRIBE = threading.Lock()


@contextlib.contextmanager
def _no_git_describe():
    """lm-eval records the git commit of the current folder by running ``git describe``, which prints
    "fatal: not a git repository" on the user's terminal outside one. dpokd keeps its own provenance
    (manifest.json), and the hash is not read back."""
    import lm_eval.evaluator

    with _GIT_DESCRIBE:  # evaluations in two threads would otherwise restore each other's stand-in
        found = lm_eval.evaluator.get_git_commit_hash
        lm_eval.evaluator.get_git_commit_hash = lambda: None
        try:
            yield
        finally:
            lm_eval.evaluator.get_git_commit_hash = found


def _quiet() -> None:
    """lm-eval logs every setting at INFO and WARNING; the judge's own lines say what runs."""
    for name in ("lm_eval", "lm-eval"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _target(task, doc) -> str:
    """A document's right answer as text: a multiple-choice target index becomes its choice."""
    target = task.doc_to_target(doc)
    if task.config.output_type == "multiple_choice":
        choices = task.doc_to_choice(doc)
        if isinstance(target, int) and 0 <= target < len(choices):
            return str(choices[target])
    return str(target)


def main_metric(result: dict[str, Any]) -> tuple[str, str]:
    """(metric, filter) of a task's first reported metric: lm-eval keys them ``"acc,none"``."""
    for key in result:
        metric, _, kept = key.partition(",")
        if kept and key not in NOT_METRICS and not metric.endswith("_stderr"):
            return metric, kept
    raise dpokd.PluginError(f"lm-eval reported no metric ({', '.join(result)})")


def _entry_result(output: dict[str, Any], leaves: dict[str, Any], model_args: dict[str, Any]) -> dict[str, Any]:
    """One ``tasks`` entry's results as cached: each leaf task's main metric and per-sample values."""
    tasks = {}
    for name, task in leaves.items():
        result = output["results"][name]
        metric, kept = main_metric(result)
        stderr = result.get(f"{metric}_stderr,{kept}")
        samples = [s for s in output["samples"].get(name, []) if s.get("filter", kept) == kept]
        tasks[name] = {
            "metric": metric, "filter": kept, "value": result[f"{metric},{kept}"],
            "stderr": stderr if isinstance(stderr, (int, float)) else None,
            "higher_is_better": bool(output.get("higher_is_better", {}).get(name, {}).get(metric, True)),
            "metrics": {k: v for k, v in result.items() if k not in NOT_METRICS},
            "samples": [_sample(task, s, metric) for s in samples]}
    summary = "; ".join(f"{n} {t['metric']}={t['value']}" for n, t in tasks.items())
    return {"text": f"lm-eval: {summary}", "tasks": tasks, "model_args": {k: str(v) for k, v in model_args.items()}}


def _sample(task, sample: dict[str, Any], metric: str) -> dict[str, Any]:
    """One document's result: its value, the model's answer (a chosen choice, or the generated text)."""
    responses = sample.get("filtered_resps") or []
    if task.config.output_type == "multiple_choice" and responses:
        scores = [r[0] if isinstance(r, (list, tuple)) else r for r in responses]
        choices = [a[1] if isinstance(a, (list, tuple)) and len(a) > 1 else "" for a in sample.get("arguments", [])]
        best = max(range(len(scores)), key=lambda i: scores[i])
        answer = choices[best] if best < len(choices) else str(best)
        detail = f"chose {answer!r} (log-likelihood {scores[best]:.3f})"
    else:
        answer = str(responses[0]) if responses else ""
        detail = f"generated {answer[:90]!r}"
    return {"doc_id": sample["doc_id"], "value": sample.get(metric), "answer": answer, "detail": detail}


def _records(system: str, task: str, result: dict[str, Any], model_args: dict[str, Any]) -> list[Score | Outcome]:
    """A task's score for one system, lm-eval's number with its 95% interval, and its per-sample outcomes."""
    column = f"lm-eval/{task}/{result['metric']}" + ("" if result["filter"] == "none" else f",{result['filter']}")
    values = [s["value"] for s in result["samples"]]
    binary = bool(values) and all(v in (0, 1) for v in values if v is not None)
    outcomes = [Outcome(system=system, example_id=f"{task}/{s['doc_id']}", judge=LMEvalJudge.name, metric=column,
                        value=None if s["value"] is None else bool(s["value"]) if binary else float(s["value"]),
                        detail=s["detail"], answer=s["answer"], higher_is_better=result["higher_is_better"])
                for s in result["samples"]]
    value, stderr = result["value"], result["stderr"]
    ci = None
    if isinstance(value, (int, float)) and stderr is not None:
        low, high = value - Z95 * stderr, value + Z95 * stderr
        ci = (max(low, 0.0), min(high, 1.0)) if binary else (low, high)
    score = Score(judge=LMEvalJudge.name, system=system, metric=column, value=value, ci=ci, n=len(values) or None,
                  higher_is_better=result["higher_is_better"],
                  details={"stderr": stderr, "metrics": result["metrics"], "model_args": model_args})
    return [score, *outcomes]


@dpokd.hookimpl
def register_judges(register):
    register(LMEvalJudge)
