"""The leaderboard: one row per (run, system), one column per metric, the best of each highlighted.

Execution scores are paired (every system answers the same examples), so each student checkpoint
also gets its Δpass@1 against a reference (``student@base`` unless ``--against``) and against the
previous checkpoint, with a paired bootstrap CI and McNemar's exact p. Where an LLM pairwise judge
ran beside an execution judge, its calibration against execution is shown too.

Runs whose specs differ only in ``run.seed`` (and so ``run.name``) are also shown as one group per
spec: each system's mean over the seeds, min–max, a 95% t-interval and the number of seeds.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from .errors import DpokdError
from .outcomes import execution_rows, pairwise_rows, pass_shares, passed
from .runs import RunDir, read_json, read_jsonl
from .stats import calibration, compare

# Columns first in this order; any other metric follows alphabetically.
ORDER = ("pass@1", "pass@10", "pass@100", "win_rate", "consistency", "teacher_nll", "answer_chars", "tokens", "cost_usd")
REFERENCE = "student@base"
PAIRED_METRIC = "pass@1"
# Row keys that are not metric columns: the paired comparisons, the judge's calibration, where an
# online loop stopped, and a seed group's members.
EXTRAS = ("vs_ref", "vs_prev", "judge_calibration", "converged_at")
SEED_KEYS = ("seeds", "n_seeds", "runs")
SPREAD = "_seeds"  # "pass@1_seeds": a metric's spread over a group's seeds
NO_SPREAD = ("tokens", "cost_usd")  # what a run spent: its mean over seeds is shown, not its spread
_CHECKPOINT = re.compile(r"student@iter_(\d+)")
_SEED_SUFFIX = re.compile(r"-seed\d+$")


def run_labels(run_dirs: list[Path]) -> dict[Path, str]:
    """Each run's name in the rows: its directory's name, or the path given where two runs share a name."""
    paths = {Path(d).resolve(): Path(d) for d in run_dirs}
    names = [p.name for p in paths]
    return {p: p.name if names.count(p.name) == 1 else str(given) for p, given in paths.items()}


def converged(run_dir: Path) -> int | None:
    """The last iteration an online loop trained, where it stopped early for want of new pairs."""
    for path in sorted(Path(run_dir).glob("iter_*/pairs_stats.json"), key=lambda p: int(p.parent.name[5:])):
        stats = read_json(path)
        if isinstance(stats, dict) and stats.get("ends_loop"):
            return int(path.parent.name[5:]) - 1
    return None


def load_rows(run_dirs: list[Path], against: str | None = None) -> list[dict[str, Any]]:
    """The rows of every run, each with its comparisons; ``against`` names the reference system.

    Rows are keyed by the run's path: two runs of one name in different folders stay apart.
    """
    rows: dict[tuple[Path, str], dict[str, Any]] = {}
    better: dict[str, bool] = {}
    labels = run_labels(run_dirs)
    for given in run_dirs:
        path = Path(given).resolve()
        if path not in labels:
            continue  # given twice
        label = labels.pop(path)
        run = RunDir(path)
        if not (run.path / "results.json").exists():
            raise DpokdError(f"{given}: no results.json; the run has not finished (re-run its spec to resume)")
        judges: dict[str, str] = {}  # system -> the judge whose pass@1 the row shows
        pairwise: dict[str, tuple[str, str]] = {}  # system -> (pairwise judge, its baseline)
        stopped = converged(path)
        for score in run.results():
            row = rows.setdefault((path, score.system), {"run": label, "system": score.system, "_path": path})
            if stopped is not None:
                row["converged_at"] = stopped
            row[score.metric] = score.value
            if score.ci is not None:
                row[f"{score.metric}_ci"] = list(score.ci)
            better[score.metric] = score.higher_is_better
            if score.metric == PAIRED_METRIC:
                judges[score.system] = score.judge
            if score.metric == "win_rate" and isinstance(score.details.get("baseline"), str):
                pairwise[score.system] = (score.judge, score.details["baseline"])
        of_run = {system: row for (where, system), row in rows.items() if where == path}
        _add_comparisons(run.path, of_run, judges, against)
        _add_calibration(run.path, of_run, judges, pairwise)
    out = list(rows.values())
    for row in out:
        row["_better"] = better
    return out


def _add_comparisons(run_dir: Path, rows: dict[str, dict[str, Any]], judges: dict[str, str], against: str | None) -> None:
    """Δpass@1 of each system against the reference, and of each checkpoint against the one before it."""
    if against is not None and against not in rows:
        raise DpokdError(f"leaderboard --against: run {run_dir.name} has no system {against!r} "
                         f"(its systems: {', '.join(rows)})")
    reference = against or REFERENCE
    shares = {}
    for system, judge in judges.items():
        found = execution_rows(run_dir, judge, system)
        if found is not None:
            shares[system] = (judge, pass_shares(found))
    if reference not in shares:
        return
    ref_judge, ref_shares = shares[reference]
    for system, (judge, own) in shares.items():
        if system == reference or judge != ref_judge:
            continue
        if against is not None or _CHECKPOINT.fullmatch(system):
            found = compare(own, ref_shares, reference, PAIRED_METRIC)
            if found is not None:
                rows[system]["vs_ref"] = found.as_dict()
        previous = _previous_checkpoint(system, shares)
        if previous is not None and shares[previous][0] == judge:
            found = compare(own, shares[previous][1], previous, PAIRED_METRIC)
            if found is not None:
                rows[system]["vs_prev"] = found.as_dict()


def _previous_checkpoint(system: str, systems) -> str | None:
    """``student@iter_K``'s previous checkpoint among ``systems``: the latest iteration before K, else the base."""
    match = _CHECKPOINT.fullmatch(system)
    if not match:
        return None
    k = int(match.group(1))
    earlier = [int(m.group(1)) for s in systems if (m := _CHECKPOINT.fullmatch(s)) and int(m.group(1)) < k]
    if earlier:
        return f"student@iter_{max(earlier)}"
    return REFERENCE if REFERENCE in systems else None


def _add_calibration(run_dir: Path, rows: dict[str, dict[str, Any]], judges: dict[str, str],
                     pairwise: dict[str, tuple[str, str]]) -> None:
    """On the examples where exactly one of a system and its baseline passes the tests, how often the
    pairwise judge prefers the passing one (accuracy) and its agreement with execution (Cohen's κ)."""
    for system, (judge, baseline) in pairwise.items():
        verdicts = pairwise_rows(run_dir, judge, system)
        execution = judges.get(system)
        if verdicts is None or execution is None or judges.get(baseline) != execution:
            continue
        ours, base = execution_rows(run_dir, execution, system), execution_rows(run_dir, execution, baseline)
        if ours is None or base is None:
            continue
        ours_pass, base_pass = pass_shares(ours), pass_shares(base)
        truth, said = [], []
        for row in verdicts:
            i = row["example_id"]
            if row["verdict"] is None or i not in ours_pass or i not in base_pass:
                continue
            a, b = passed(ours_pass[i]), passed(base_pass[i])
            if a != b:
                truth.append("ours" if a else "base")
                said.append(row["verdict"])
        if not truth and not any(row["example_id"] in ours_pass for row in verdicts):
            continue  # the two judges scored different examples (e.g. HumanEval beside a summary task)
        rows[system]["judge_calibration"] = {"judge": judge, "execution": execution, "baseline": baseline,
                                             **calibration(truth, said).as_dict()}


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    metrics = {k for r in rows for k in r if k not in ("run", "system", *EXTRAS, *SEED_KEYS)
               and not k.startswith("_") and not k.endswith("_ci") and not k.endswith(SPREAD)}
    return [m for m in ORDER if m in metrics] + sorted(metrics - set(ORDER))


def plain_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as ``--format json`` prints them (the report shows exactly these numbers)."""
    columns = _columns(rows)
    return [{"run": r["run"], "system": r["system"], **{c: r.get(c) for c in columns},
             **{f"{c}_ci": r[f"{c}_ci"] for c in columns if f"{c}_ci" in r},
             **{k: r[k] for k in EXTRAS if k in r}}
            for r in rows]


# -- seeds ------------------------------------------------------------------------------------------
def _seed_key(path: Path) -> tuple[str, int] | None:
    """(the run's resolved spec without its seed and name, its seed); None for a run without a manifest."""
    manifest = RunDir(path).manifest()
    if manifest is None:
        return None
    spec = dict(manifest["spec"])
    run = dict(spec.get("run") or {})
    seed = run.pop("seed", None)
    run.pop("name", None)
    if not isinstance(seed, int) or isinstance(seed, bool):
        return None
    return json.dumps({**spec, "run": run}, sort_keys=True), seed


def seed_groups(rows: list[dict[str, Any]]) -> tuple[list[list[tuple[int, Path]]], list[str]]:
    """The runs among ``rows`` that differ only in their seed, as groups of (seed, path), seeds ascending;
    and a note for each group not aggregated because two of its runs share a seed."""
    labels = {r["_path"]: r["run"] for r in rows if "_path" in r}
    found: dict[str, list[tuple[int, Path]]] = {}
    for path in labels:
        key = _seed_key(path)
        if key is not None:
            found.setdefault(key[0], []).append((key[1], path))
    groups, notes = [], []
    for members in found.values():
        if len(members) < 2:
            continue
        seeds = [seed for seed, _ in members]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            same = [labels[p] for s, p in members if s == repeated[0]]
            notes.append(f"not aggregated over seeds: {' and '.join(same)} are the same spec with the same seed "
                         f"({repeated[0]})")
            continue
        groups.append(sorted(members))
    return groups, notes


def seed_rows(rows: list[dict[str, Any]], groups: list[list[tuple[int, Path]]]) -> list[dict[str, Any]]:
    """One row per (seed group, system): each metric's mean over the seeds that have it, and its spread."""
    out = []
    for members in groups:
        seed_of = {path: seed for seed, path in members}
        runs = [r for r in rows if r.get("_path") in seed_of]
        labels = list(dict.fromkeys(r["run"] for r in runs))
        stems = {_SEED_SUFFIX.sub("", label) for label in labels}
        name = stems.pop() if len(stems) == 1 else labels[0]
        by_system: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(runs, key=lambda r: seed_of[r["_path"]]):
            by_system.setdefault(r["system"], []).append(r)
        for system, found in by_system.items():
            row: dict[str, Any] = {"run": name, "system": system, "seeds": [seed_of[r["_path"]] for r in found],
                                   "n_seeds": len(found), "runs": [r["run"] for r in found], "_better": runs[0]["_better"]}
            for metric in _columns(found):
                values = {seed_of[r["_path"]]: r[metric] for r in found if r.get(metric) is not None}
                if values:
                    row[metric] = sum(values.values()) / len(values)
                    row[metric + SPREAD] = spread(values)
            stopped = {str(seed_of[r["_path"]]): r.get("converged_at") for r in found}
            if any(v is not None for v in stopped.values()):
                row["converged_at"] = stopped
            out.append(row)
    return out


def spread(values: dict[int, float]) -> dict[str, Any]:
    """Mean, min, max and the 95% t-interval of the mean of one metric over seeds (None for one seed)."""
    xs = list(values.values())
    n, mean = len(xs), sum(xs) / len(xs)
    interval = None
    if n > 1:
        from scipy.special import stdtrit

        sd = (sum((x - mean) ** 2 for x in xs) / (n - 1)) ** 0.5
        half = float(stdtrit(n - 1, 0.975)) * sd / n**0.5
        interval = [mean - half, mean + half]
    return {"n": n, "mean": mean, "min": min(xs), "max": max(xs), "t95": interval,
            "by_seed": {str(seed): v for seed, v in values.items()}}


def plain_seed_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The seed groups' rows as ``--format json`` prints them, after the runs' own rows."""
    columns = _columns(rows)
    return [{"run": r["run"], "system": r["system"], **{k: r[k] for k in SEED_KEYS},
             **{c: r.get(c) for c in columns}, **{c + SPREAD: r[c + SPREAD] for c in columns if c + SPREAD in r},
             **({"converged_at": r["converged_at"]} if "converged_at" in r else {})}
            for r in rows]


def convergence_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per run whose online loop stopped early."""
    stopped = {r["run"]: r["converged_at"] for r in rows if isinstance(r.get("converged_at"), int)}
    return [f"{run}: the online loop converged at iteration {k}: iteration {k + 1} had no new pairs "
            f"(run.stop_when_no_pairs); checkpoints after it were not trained" for run, k in stopped.items()]


def fmt_delta(comparison: dict[str, Any] | None) -> tuple[str, str, str]:
    """(Δ, its CI, McNemar's p) as the leaderboard prints them."""
    if not comparison:
        return ("", "", "")
    low, high = comparison["ci"]
    return (f"{comparison['delta']:+.3f}", f"{low:+.2f}–{high:+.2f}", fmt_p(comparison["p"]))


def fmt_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_calibration(found: dict[str, Any] | None) -> tuple[str, str, str]:
    """(accuracy, κ, pairs) of the judge's calibration; κ reads "undefined" where it is."""
    if not found:
        return ("", "", "")
    accuracy = "-" if found["accuracy"] is None else f"{found['accuracy']:.3f}"
    kappa = "undefined" if found["kappa"] is None else f"{found['kappa']:.3f}"
    return (accuracy, kappa, str(found["pairs"]))


def short_name(system: str) -> str:
    """``student@iter_2`` -> ``iter_2``: for narrow headers, where the student is understood."""
    return system.removeprefix("student@")


def _reference_names(rows: list[dict[str, Any]]) -> str:
    names = sorted({r["vs_ref"]["against"] for r in rows if r.get("vs_ref")})
    return " / ".join(names) or REFERENCE


INTEGER_METRICS = {"tokens", "wins", "ties", "losses"}


def _fmt(value: Any, ci: Any = None, metric: str = "") -> str:
    if value is None:
        return "-"
    if metric in INTEGER_METRICS or abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.4f}" if metric == "cost_usd" else f"{value:.3f}"
    if ci:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def render(rows: list[dict[str, Any]], fmt: str, console) -> None:
    """The runs' rows, then (where runs differ only in their seed) each seed group's rows."""
    columns = _columns(rows)
    plain = plain_rows(rows)
    groups, skipped = seed_groups(rows)
    by_seed = seed_rows(rows, groups)
    notes = convergence_notes(rows) + skipped
    if fmt == "json":
        console.out(json.dumps(plain + plain_seed_rows(by_seed), indent=2), highlight=False)
        return
    if fmt == "csv":
        return _csv(rows, plain, by_seed, console)
    best = _best(rows, columns)
    cells = [[r["run"], r["system"], *[_fmt(r.get(c), r.get(f"{c}_ci"), c) for c in columns]] for r in rows]
    if fmt == "table":
        _table(rows, columns, best, console)
        for note in notes:
            console.print(escape_markup(note), style="dim")
        if by_seed:
            _seed_table(by_seed, console)
        return
    if fmt == "md":
        extra = _extra_headers(rows)
        lines = ["| run | system | " + " | ".join(columns + extra) + " |", "|---" * (len(columns) + len(extra) + 2) + "|"]
        for r, row in zip(rows, cells):
            marked = [f"**{v}**" if i >= 2 and best.get(columns[i - 2]) == id(r) else v for i, v in enumerate(row)]
            lines.append("| " + " | ".join(marked + _md_extra(r, extra)) + " |")
        lines += ["", *notes] if notes else []
        if by_seed:
            lines += ["", *_seed_md(by_seed)]
        console.out("\n".join(lines), highlight=False)
        return


def escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def fmt_spread(row: dict[str, Any], metric: str) -> list[str]:
    """A metric over a group's seeds as the leaderboard prints it: "mean ± half the 95% t-interval" and
    "min–max" (only the mean for what a run spent)."""
    found = row.get(metric + SPREAD)
    if not found:
        return ["-"] if metric in NO_SPREAD else ["-", ""]
    mean = _fmt(found["mean"], metric=metric)
    if metric in NO_SPREAD:
        return [mean]
    if found["t95"] is None:  # one seed: no spread
        return [mean, ""]
    half = (found["t95"][1] - found["t95"][0]) / 2
    small = metric not in INTEGER_METRICS and max(abs(found["min"]), abs(found["max"])) < 1000
    ends = [f"{v:.2f}" if small else _fmt(v, metric=metric) for v in (found["min"], found["max"])]
    return [f"{mean} ± {_fmt(half, metric=metric)}", "–".join(ends)]


def spread_headers(metric: str) -> list[str]:
    return [metric] if metric in NO_SPREAD else [metric, "min–max"]


def seed_title(by_seed: list[dict[str, Any]]) -> str:
    seeds: dict[str, set[int]] = {}
    for r in by_seed:
        seeds.setdefault(r["run"], set()).update(r["seeds"])
    return "; ".join(f"{name} over seeds {', '.join(map(str, sorted(found)))}" for name, found in seeds.items())


SEED_NOTE = ("over seeds: each system's mean over the runs that differ only in their seed ± the half-width "
             "of its 95% t-interval (none for one seed), the min–max over the seeds, and the number of seeds")


def _seed_md(by_seed: list[dict[str, Any]]) -> list[str]:
    columns = _columns(by_seed)
    headers = [h for c in columns for h in spread_headers(c)]
    lines = [f"**{seed_title(by_seed)}**", "", "| run | system | seeds | " + " | ".join(headers) + " |",
             "|---" * (len(headers) + 3) + "|"]
    for r in by_seed:
        cells = [v for c in columns for v in fmt_spread(r, c)]
        lines.append(f"| {r['run']} | {r['system']} | {r['n_seeds']} | " + " | ".join(cells) + " |")
    return lines + ["", SEED_NOTE]


def _seed_table(by_seed: list[dict[str, Any]], console) -> None:
    from rich.markup import escape
    from rich.table import Table

    columns = _columns(by_seed)
    one = len({r["run"] for r in by_seed}) == 1
    table = Table(title=escape(f"dpokd leaderboard: {seed_title(by_seed)}"))
    for name in (["system"] if one else ["run", "system"]):
        table.add_column(name, no_wrap=True)
    table.add_column("seeds", justify="right", no_wrap=True)
    for column in columns:
        for n, header in enumerate(spread_headers(column)):
            table.add_column(header, justify="right", no_wrap=True, style="dim" if n else None)
    for r in by_seed:
        cells = ([] if one else [escape(r["run"])]) + [escape(r["system"]), str(r["n_seeds"])]
        for column in columns:
            cells += fmt_spread(r, column)
        table.add_row(*cells)
    console.print(table)
    console.print(SEED_NOTE, style="dim")


def _csv(rows, plain, by_seed, console) -> None:
    columns = _columns(rows + by_seed)
    seeded = [name for c in columns if any(c + SPREAD in r for r in by_seed)
              for name in (f"{c}_min", f"{c}_max", f"{c}_t95_low", f"{c}_t95_high")]
    stopped = ["converged_at"] if any("converged_at" in r for r in plain) else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["run", "system", *columns, *_csv_extras(rows), *stopped,
                                                *(["n_seeds", "seeds"] if by_seed else []), *seeded])
    writer.writeheader()
    writer.writerows({**{k: v for k, v in r.items() if k not in EXTRAS and not k.endswith("_ci")}, **_csv_extra(r),
                      **({"converged_at": r["converged_at"]} if "converged_at" in r else {})} for r in plain)
    for r in by_seed:
        out = {"run": r["run"], "system": r["system"], "n_seeds": r["n_seeds"], "seeds": " ".join(map(str, r["seeds"]))}
        for c in columns:
            if found := r.get(c + SPREAD):
                low, high = found["t95"] or (None, None)
                out.update({c: found["mean"], f"{c}_min": found["min"], f"{c}_max": found["max"],
                            f"{c}_t95_low": low, f"{c}_t95_high": high})
        writer.writerow(out)
    console.out(buffer.getvalue().rstrip(), highlight=False)


def _extra_headers(rows: list[dict[str, Any]]) -> list[str]:
    headers = []
    if any(r.get("vs_ref") for r in rows):
        headers.append(f"Δ{PAIRED_METRIC} vs {_reference_names(rows)}")
    if any(r.get("vs_prev") for r in rows):
        headers.append(f"Δ{PAIRED_METRIC} vs previous")
    if any(r.get("judge_calibration") for r in rows):
        headers.append("judge vs execution")
    return headers


def _md_extra(r: dict[str, Any], headers: list[str]) -> list[str]:
    cells = []
    for header in headers:
        if header == "judge vs execution":
            accuracy, kappa, pairs = fmt_calibration(r.get("judge_calibration"))
            cells.append(f"accuracy {accuracy}, κ {kappa} ({pairs} pairs)" if pairs else "")
        else:
            found = r.get("vs_prev" if header.endswith("previous") else "vs_ref")
            if not found:
                cells.append("")
                continue
            low, high = found["ci"]
            against = f" (vs {found['against']})" if header.endswith("previous") else ""
            cells.append(f"{found['delta']:+.3f} [{low:+.2f}, {high:+.2f}] p={fmt_p(found['p'])}{against}")
    return cells


_CSV_EXTRAS = {
    "vs_ref": ("ref", "delta_ref", "delta_ref_low", "delta_ref_high", "p_ref"),
    "vs_prev": ("prev", "delta_prev", "delta_prev_low", "delta_prev_high", "p_prev"),
    "judge_calibration": ("judge_pairs", "judge_accuracy", "judge_kappa"),
}


def _csv_extras(rows: list[dict[str, Any]]) -> list[str]:
    return [name for key, names in _CSV_EXTRAS.items() if any(r.get(key) for r in rows) for name in names]


def _csv_extra(r: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("vs_ref", "vs_prev"):
        if found := r.get(key):
            out.update(zip(_CSV_EXTRAS[key], (found["against"], found["delta"], *found["ci"], found["p"])))
    if found := r.get("judge_calibration"):
        out.update(zip(_CSV_EXTRAS["judge_calibration"], (found["pairs"], found["accuracy"], found["kappa"])))
    return out


def _table(rows: list[dict[str, Any]], columns: list[str], best: dict[str, int], console) -> None:
    """The terminal table: a confidence interval gets a column of its own, so that rows stay one line."""
    from rich.markup import escape
    from rich.table import Table

    runs = sorted({r["run"] for r in rows})
    one_run = len(runs) == 1
    table = Table(title=f"dpokd leaderboard: {escape(runs[0])}" if one_run else "dpokd leaderboard")
    for name in (["system"] if one_run else ["run", "system"]):
        table.add_column(name, no_wrap=True)
    with_ci = {c for c in columns if any(f"{c}_ci" in r for r in rows)}
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
        if column in with_ci:
            table.add_column("95% CI", justify="right", no_wrap=True, style="dim")
    deltas = [key for key in ("vs_ref", "vs_prev") if any(r.get(key) for r in rows)]
    for key in deltas:
        against = escape(short_name(_reference_names(rows))) if key == "vs_ref" else "prev"
        table.add_column(f"Δ vs {against}", justify="right", no_wrap=True)
        table.add_column("95% CI", justify="right", no_wrap=True, style="dim")
        table.add_column("p", justify="right", no_wrap=True)
    judged = any(r.get("judge_calibration") for r in rows)
    if judged:
        for name in ("judge acc", "κ", "pairs"):
            table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        cells = [] if one_run else [escape(r["run"])]  # names may hold [brackets], which rich reads as markup
        cells.append(escape(r["system"]))
        for column in columns:
            text = _fmt(r.get(column), metric=column)
            cells.append(f"[bold green]{text}[/]" if best.get(column) == id(r) else text)
            if column in with_ci:
                ci = r.get(f"{column}_ci")
                cells.append(f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "")
        for key in deltas:
            cells += fmt_delta(r.get(key))
        if judged:
            cells += fmt_calibration(r.get("judge_calibration"))
        table.add_row(*cells)
    console.print(table)
    if deltas:
        console.print(f"Δ: the paired difference in {PAIRED_METRIC} on the same examples, its 95% paired bootstrap CI "
                      f"and McNemar's exact p; against {escape(_reference_names(rows))} and, for each checkpoint, the one "
                      "before it (prev)", style="dim")
    if judged:
        console.print("judge acc, κ: where exactly one of a system's and its baseline's answers passes the tests, how "
                      "often the LLM judge prefers the passing one, and Cohen's κ against execution", style="dim")


def _best(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, int]:
    best = {}
    for c in columns:
        scored = [r for r in rows if r.get(c) is not None]
        if len(scored) > 1 and c not in ("tokens", "cost_usd"):
            higher = rows[0]["_better"].get(c, True)
            pick = max(scored, key=lambda r: r[c]) if higher else min(scored, key=lambda r: r[c])
            best[c] = id(pick)
    return best


def plot_curves(run_dir: Path) -> Path | None:
    """Loss and reward margin per step, one line per iteration, saved as curves.png."""
    png = _curves(run_dir)
    if png is None:
        return None
    out = run_dir / "curves.png"
    out.write_bytes(png)
    return out


def curves_png(run_dir: Path) -> bytes | None:
    """The run's curves.png, drawn from its train logs when the file is not there."""
    path = Path(run_dir) / "curves.png"
    return path.read_bytes() if path.is_file() else _curves(Path(run_dir))


def _curves(run_dir: Path) -> bytes | None:
    logs = sorted(run_dir.glob("iter_*/train_log.jsonl"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not logs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for path in logs:
        rows = read_jsonl(path)
        steps = list(range(1, len(rows) + 1))
        for ax, key in zip(axes, ("loss", "rewards/margins")):
            ax.plot(steps, [r.get(key) for r in rows], label=path.parent.name)
    for ax, title in zip(axes, ("DPO loss", "reward margin")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
