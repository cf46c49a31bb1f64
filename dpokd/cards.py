"""Model cards for saved adapters and dataset cards for each iteration's pairs, in the Hugging
Face hub's format (``huggingface_hub``'s ``ModelCard`` and ``DatasetCard``: YAML metadata, then
Markdown), so a pushed adapter or pair set reads like any other on the hub.

A card is rebuilt from the run's files (manifest, pair counts, results), so it can be written
again at any time: after training, after evaluation (with the scores), and when pushing (with the
repository's name in the loading snippet).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .scoring.rows import load_rows
from .records import Score
from .runs import RunDir

TAGS = ["dpo", "distillation", "dpokd", "trl", "peft", "lora"]
PAIRS_CARD = "pairs_card.md"  # beside iter_K/pairs.jsonl; README.md in a pushed dataset repository
LOCAL_MODELS = ("dpokd:",)  # student models built here, never on the hub


def hub_id(model: str | None) -> str | None:
    """``model`` when it names a hub repository, else None (a local path, a model built here)."""
    if not model or model.startswith(LOCAL_MODELS) or model.startswith((".", "/", "~")) or Path(model).exists():
        return None
    return model


def model_card(*, student: dict[str, Any], base_path: str | None = None, pairs: int | None = None,
               teacher: dict[str, Any] | None = None, task: dict[str, Any] | None = None,
               run: dict[str, Any] | None = None, iteration: int | None = None, scores: list[Score] = (),
               comparisons: dict[str, Any] | None = None, adapter_ref: str = "path/to/adapter",
               datasets: list[str] = ()):
    """An adapter's card: base model, teacher, task, pairs, hyper-parameters, scores, how to load it."""
    from huggingface_hub import ModelCard, ModelCardData

    model = student.get("model")
    base = hub_id(model) or base_path or model
    title = f"{run['name']} iteration {iteration}" if run and run.get("name") and iteration else "dpokd adapter"
    data = ModelCardData(library_name="peft", base_model=hub_id(model), pipeline_tag="text-generation",
                         tags=list(TAGS), datasets=list(datasets) or None, model_name=title)
    lines = [f"# {title}", "",
             f"A LoRA adapter for `{model}`, trained with [dpokd](https://pypi.org/project/dpokd/) by DPO knowledge "
             "distillation: a teacher's answers are the chosen side of each pair, the student's own the rejected side.", ""]
    facts = [("base model", f"`{model}`" + (f" (built locally; weights at `{base_path}`)" if base_path and not hub_id(model) else "")),
             ("teacher", _component(teacher)), ("task", _component(task)),
             ("preference pairs", "unknown" if pairs is None else str(pairs))]
    if run:
        facts += [("mode", f"{run.get('mode')}, {run.get('iterations')} iteration(s)"), ("seed", str(run.get("seed")))]
    if iteration:
        facts.append(("this checkpoint", f"iteration {iteration}"))
    lines += ["| | |", "| --- | --- |", *[f"| {k} | {_cell(v)} |" for k, v in facts if v], ""]
    lines += ["## How to load it", "", "```python", "from peft import PeftModel",
              "from transformers import AutoModelForCausalLM",
              f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base!r}), {adapter_ref!r})",
              "```", ""]
    if scores:
        lines += ["## Evaluation", "", "| system | judge | metric | value | 95% CI | n |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for s in scores:
            ci = f"{s.ci[0]:.3f}–{s.ci[1]:.3f}" if s.ci else ""
            lines.append(f"| {_cell(s.system)} | {_cell(s.judge)} | {_cell(s.metric)} | {'-' if s.value is None else format(s.value, '.4g')} | {ci} | "
                         f"{'' if s.n is None else s.n} |")
        for what, found in (comparisons or {}).items():
            low, high = found["ci"]
            lines.append(f"\nΔ{found['metric']} {what} {_cell(found['against'])}: {found['delta']:+.3f} "
                         f"(95% CI {low:+.3f} to {high:+.3f}, p = {found['p']:.3g}, n = {found['n']})")
        lines.append("")
    lines += ["## Training hyper-parameters", "", "| option | value |", "| --- | --- |"]
    lines += [f"| {_cell(k)} | {_cell(json.dumps(v))} |" for k, v in sorted(student.items())]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def dataset_card(*, counts: dict[str, Any], iteration: int, teacher: dict[str, Any] | None, student: dict[str, Any],
                 task: dict[str, Any] | None, run: dict[str, Any] | None, data_file: str = "pairs.jsonl"):
    """One iteration's pairs: TRL's preference format, where each side came from, what was dropped."""
    from huggingface_hub import DatasetCard, DatasetCardData

    n = counts.get("pairs")
    size = "n<1K" if n is None or n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K"
    data = DatasetCardData(tags=list(TAGS), task_categories=["text-generation"], size_categories=[size],
                           configs=[{"config_name": "default", "data_files": [{"split": "train", "path": data_file}]}],
                           pretty_name=f"{(run or {}).get('name') or 'dpokd'} pairs, iteration {iteration}")
    lines = [f"# {data.pretty_name}", "",
             "Preference pairs in TRL's format (`prompt`, `chosen`, `rejected`), made by "
             "[dpokd](https://pypi.org/project/dpokd/) for DPO knowledge distillation, one line per train prompt "
             "(`example_id` joins it to the task's example).", "",
             "| | |", "| --- | --- |",
             f"| chosen | answers of the teacher, {_cell(_component(teacher))} |",
             f"| rejected | answers of the student `{_cell(str(student.get('model')))}` at the start of iteration {iteration} |",
             f"| task | {_cell(_component(task))} |",
             f"| pairs | {'unknown' if n is None else n} of {counts.get('examples', '?')} train prompts |",
             f"| dropped | {counts.get('identical', 0)} identical answers, {counts.get('teacher_failed', 0)} teacher "
             f"failures, {counts.get('teacher_truncated', 0)} teacher answers cut off by max_tokens, "
             f"{counts.get('not_verified', 0)} not verified by the tests |", ""]
    if (run or {}).get("mix_previous") and iteration > 1:
        lines += ["Rows with `\"previous\": true` repeat the previous iteration's pairs, trained on again.", ""]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def write_adapter_card(directory: Path, student: dict[str, Any], *, pairs: int | None = None,
                       run_dir: Path | None = None) -> Path:
    """``directory/README.md`` for an adapter just saved, replacing PEFT's placeholder card."""
    spec = _spec(run_dir)
    card = model_card(student=student, base_path=_base_path(directory), pairs=pairs, teacher=spec.get("teacher"),
                      task=spec.get("task"), run=spec.get("run"), iteration=_iteration(directory),
                      adapter_ref=str(directory))
    path = directory / "README.md"
    card.save(path)
    return path


def checkpoint_card(run_dir: Path, k: int, *, adapter_ref: str | None = None, datasets: list[str] = ()):
    """Iteration ``k``'s adapter card, from the run's files (scores included once evaluated)."""
    spec = _spec(run_dir)
    adapter = run_dir / f"iter_{k}" / "adapter"
    metrics = _read(run_dir / f"iter_{k}" / "train_metrics.json") or {}
    system = f"student@iter_{k}"
    scores, comparisons = _scores(run_dir, system)
    return model_card(student=spec.get("student", {}), base_path=_base_path(adapter), pairs=metrics.get("pairs"),
                      teacher=spec.get("teacher"), task=spec.get("task"), run=spec.get("run"), iteration=k,
                      scores=scores, comparisons=comparisons, adapter_ref=adapter_ref or str(adapter), datasets=datasets)


def pairs_card(run_dir: Path, k: int):
    spec = _spec(run_dir)
    counts = _read(run_dir / f"iter_{k}" / "pairs_stats.json") or {}
    return dataset_card(counts=counts, iteration=k, teacher=spec.get("teacher"), student=spec.get("student", {}),
                        task=spec.get("task"), run=spec.get("run"))


def write_run_cards(run_dir: Path) -> list[Path]:
    """(Re)write the card of every iteration's adapter and pairs that exist in the run."""
    written = []
    for iter_dir in sorted(run_dir.glob("iter_*"), key=lambda p: p.name):
        k = _iteration(iter_dir / "adapter")
        if k is None:
            continue
        if (iter_dir / "pairs_stats.json").exists():
            pairs_card(run_dir, k).save(iter_dir / PAIRS_CARD)
            written.append(iter_dir / PAIRS_CARD)
        if (iter_dir / "adapter" / "adapter_config.json").exists():
            checkpoint_card(run_dir, k).save(iter_dir / "adapter" / "README.md")
            written.append(iter_dir / "adapter" / "README.md")
    return written


# -- reading the run's files --------------------------------------------------------------------
def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _spec(run_dir: Path | None) -> dict[str, Any]:
    manifest = _read(run_dir / "manifest.json") if run_dir else None
    spec = manifest.get("spec") if isinstance(manifest, dict) else None
    return spec if isinstance(spec, dict) else {}


def _base_path(adapter: Path) -> str | None:
    config = _read(adapter / "adapter_config.json")
    return config.get("base_model_name_or_path") if isinstance(config, dict) else None


def _iteration(adapter: Path) -> int | None:
    name = adapter.parent.name
    return int(name[5:]) if name.startswith("iter_") and name[5:].isdigit() else None


def _scores(run_dir: Path, system: str) -> tuple[list[Score], dict[str, Any]]:
    """The scores of the teacher, the base student and ``system``, and ``system``'s paired comparisons."""
    if not (run_dir / "results.json").exists():
        return [], {}
    shown = ("teacher", "student@base", system)
    scores = [s for s in RunDir(run_dir).results() if s.system in shown and s.judge != "run"]
    scores.sort(key=lambda s: (shown.index(s.system), s.judge, s.metric))
    row = next((r for r in load_rows([run_dir]) if r["system"] == system), {})
    comparisons = {what: row[key] for what, key in (("vs", "vs_ref"), ("vs the previous checkpoint", "vs_prev"))
                   if row.get(key)}
    return scores, comparisons


def _component(table: dict[str, Any] | None) -> str:
    """``plugin`` and the option that names what it is (its model or dataset), as the spec has them."""
    if not table:
        return ""
    plugin = table.get("plugin", "?")
    for key in ("model", "dataset"):
        if table.get(key):
            return f"`{plugin}` ({key} `{table[key]}`)"
    return f"`{plugin}`"


def _cell(value: str) -> str:
    """Text safe inside one Markdown table cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
