"""The methods table: every spec in specs/methods/ over several seeds, then each method's score and its Δ
against SFT, with intervals over the seeds, and the compute each used.

``make methods`` runs ``python docs/methods.py`` (the runs, then ``docs/methods.json``) and cog over
docs/methods.md, whose table :func:`table` renders from that file. Runs already finished are read
back, not run again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = ROOT / "docs" / "methods.json"
BASELINE = "sft"


def run_one(spec: Path, seed: int, workdir: Path) -> float:
    """``dpokd run SPEC --seed N`` in ``workdir`` (its runs/ and cache/); its wall time in seconds, kept in
    runs/methods-wall/ so that a finished run is read back rather than run again."""
    name = _run_name(spec, seed)
    wall = workdir / "runs" / "methods-wall" / f"{name}.txt"
    if (workdir / "runs" / name / "results.json").exists() and wall.exists():
        return float(wall.read_text())
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dpokd", "run", str(spec), "--seed", str(seed)], cwd=workdir,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"dpokd run {spec} --seed {seed} exited {done.returncode}:\n{done.stderr[-3000:]}")
    wall.parent.mkdir(parents=True, exist_ok=True)
    wall.write_text(f"{time.perf_counter() - start:.1f}")
    return float(wall.read_text())


def _run_name(spec: Path, seed: int) -> str:
    from dpokd.spec import load_spec

    return load_spec(spec).with_seed(seed).name


def run_all(specs: list[Path], seeds: list[int], workdir: Path, jobs: int) -> dict[tuple[str, int], float]:
    """Every (spec, seed), ``jobs`` at a time; the first alone, so that the student's base model is built once."""
    todo = [(spec, seed) for seed in seeds for spec in specs]
    walls = {(todo[0][0].stem, todo[0][1]): run_one(*todo[0], workdir)}
    with ThreadPoolExecutor(jobs) as pool:
        for (spec, seed), wall in zip(todo[1:], pool.map(lambda job: run_one(*job, workdir), todo[1:])):
            walls[(spec.stem, seed)] = wall
            print(f"{spec.stem} seed {seed}: {wall:.0f} s", flush=True)
    return walls


def summarise(specs: list[Path], seeds: list[int], workdir: Path, walls: dict[tuple[str, int], float]) -> dict:
    """Each method's final pass@1 (mean and t-interval over seeds), its Δ against SFT, steps and wall time."""
    from dpokd.scoring.groups import group_delta, parse_side, scores_of
    from dpokd.scoring.seeds import spread

    methods = {}
    for spec in specs:
        group = parse_side(str(workdir / "runs" / _run_name(spec, seeds[0])))
        runs = {seed: path for seed, path in group.runs.items() if seed in seeds}
        final = {seed: _mean(scores_of(path, None, "pass@1")[1]) for seed, path in runs.items()}
        ends = {seed: (_mean(scores_of(path, "student@base", "pass@1")[1]),
                       _mean(scores_of(path, "teacher", "pass@1")[1])) for seed, path in runs.items()}
        steps = [sum(json.loads(p.read_text())["steps"] for p in path.glob("iter_*/train_metrics.json"))
                 for path in runs.values()]
        timed = [walls[(spec.stem, seed)] for seed in runs]
        methods[spec.stem] = {"pass@1": spread(final, (0.0, 1.0)), "base": [b for b, _ in ends.values()],
                              "teacher": [t for _, t in ends.values()], "train_steps": sum(steps) / len(steps),
                              "wall_s": sum(timed) / len(timed)}
    if BASELINE in methods:
        base = parse_side(str(workdir / "runs" / _run_name(_spec(specs, BASELINE), seeds[0])))
        for spec in specs:
            if spec.stem != BASELINE:
                side = parse_side(str(workdir / "runs" / _run_name(spec, seeds[0])))
                methods[spec.stem]["vs_sft"] = group_delta(side, base)
    return {"seeds": seeds, "methods": methods}


def _spec(specs: list[Path], stem: str) -> Path:
    return next(s for s in specs if s.stem == stem)


def _mean(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores)


def table(path: Path = SUMMARY) -> str:
    """The methods table as Markdown, from ``docs/methods.json``."""
    found = json.loads(Path(path).read_text())
    n = len(found["seeds"])
    header = f"| method | held-out pass@1 (mean over {n} seeds, 95% CI) | Δ vs SFT (95% CI) | train steps | wall time |"
    lines = [header, "| --- | --- | --- | --- | --- |"]
    for name, m in found["methods"].items():
        s = m["pass@1"]
        ci = f" [{s['t95'][0]:.2f}, {s['t95'][1]:.2f}]" if s["t95"] else (" (all equal)" if n > 1 else "")
        vs = m.get("vs_sft")
        delta = f"{vs['delta']:+.3f} [{vs['ci'][0]:+.2f}, {vs['ci'][1]:+.2f}]" if vs else "(the reference)"
        wall = f"{m['wall_s']:.0f} s"
        lines.append(f"| {name} | {s['mean']:.3f}{ci} | {delta} | {m['train_steps']:.0f} | {wall} |")
    base = [v for m in found["methods"].values() for v in m["base"]]
    teacher = [v for m in found["methods"].values() for v in m["teacher"]]
    ends = (f"The base student scored {min(base):.3f}–{max(base):.3f} and the teacher "
            f"{min(teacher):.3f}–{max(teacher):.3f} on every run's held-out problems.")
    # The harder task's aim: a student in the middle of the scale, with room above and below it.
    middle = []
    for name, m in found["methods"].items():
        scores = m["pass@1"]["by_seed"].values()
        middle.append(f"{name} {sum(0.2 <= v <= 0.8 for v in scores)} of {len(scores)}")
    lines += ["", ends, f"Seeds on which a method's student scored between 0.2 and 0.8: {', '.join(middle)}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--specs", type=Path, default=ROOT / "specs" / "methods", help="the folder of method specs")
    parser.add_argument("--only", nargs="*", default=None, help="these methods (spec names) only")
    parser.add_argument("--workdir", type=Path, default=ROOT, help="where runs/ and cache/ are (default: the project)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2: one a core)")
    parser.add_argument("--output", type=Path, default=SUMMARY, help="the summary JSON (default docs/methods.json)")
    args = parser.parse_args(argv)
    specs = sorted(p.resolve() for p in args.specs.glob("*.toml") if args.only is None or p.stem in args.only)
    seeds = list(range(args.seeds))
    walls = run_all(specs, seeds, args.workdir, args.jobs)
    args.output.write_text(json.dumps(summarise(specs, seeds, args.workdir, walls), indent=2) + "\n")
    print(table(args.output))


if __name__ == "__main__":
    main()
