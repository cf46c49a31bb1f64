"""The leaderboard, rendered: a terminal table, Markdown, CSV or JSON of the rows ``dpokd.scoring.rows``
builds, then (where runs differ only in their seed) each seed group's rows. The terminal tables fit the
console's width: the columns that do not fit follow in further tables, so no value is ever cut."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .scoring.rows import (EXTRAS, SPREAD, metric_columns, convergence_notes, delta_metric, plain_rows,
                           main_metric, reference_names, truth_names, verdicts)
from .scoring.seeds import plain_seed_rows, seed_groups, seed_rows

# What a run spent, and how many of the teacher's answers max_tokens cut off: counts of the run,
# shown as their mean over seeds, not their spread, and never marked best.
NO_SPREAD = ("tokens", "cost_usd", "truncated")
# Where the console is too narrow, the terminal table moves these column groups to further tables first, in
# this order; then the other metrics, the last first; then Δ vs the reference. Names and the first metric stay.
DROP_FIRST = ("answer_chars", "tokens", "cost_usd", "truncated", "vs_prev", "judge_calibration")


def render(rows: list[dict[str, Any]], fmt: str, console) -> None:
    """The runs' rows, then (where runs differ only in their seed) each seed group's rows."""
    columns = metric_columns(rows)
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
    cells = [[r["run"], r["system"], *[fmt_value(r.get(c), r.get(f"{c}_ci"), c) for c in columns]] for r in rows]
    if fmt == "table":
        _table(rows, _main_first(columns, main_metric(rows)), best, console)
        for note in notes:
            _note(console, note)
        if by_seed:
            _seed_table(by_seed, main_metric(rows), console)
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


INTEGER_METRICS = {"tokens", "truncated", "wins", "ties", "losses"}


def fmt_value(value: Any, ci: Any = None, metric: str = "") -> str:
    if value is None:
        return "-"
    if metric in INTEGER_METRICS or abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.4f}" if metric == "cost_usd" else f"{value:.3f}"
    if ci:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def fmt_spread(row: dict[str, Any], metric: str) -> list[str]:
    """A metric over a group's seeds as the leaderboard prints it: "mean ± half the 95% t-interval" (the
    interval itself where the metric's range cut it, and no interval where every seed gave the same
    value) and "min–max" (only the mean for what a run spent)."""
    found = row.get(metric + SPREAD)
    if not found:
        return ["-"] if metric in NO_SPREAD else ["-", ""]
    mean = fmt_value(found["mean"], metric=metric)
    if metric in NO_SPREAD:
        return [mean]
    small = metric not in INTEGER_METRICS and max(abs(found["min"]), abs(found["max"])) < 1000
    ends = [f"{v:.2f}" if small else fmt_value(v, metric=metric) for v in (found["min"], found["max"])]
    if found["n"] > 1 and found.get("distinct", 2) < 2:
        return [f"{mean} (all {found['n']} equal)", "–".join(ends)]
    if found["t95"] is None:  # one seed: no spread
        return [mean, ""]
    low, high = found["t95"]
    if found.get("clipped"):
        return [f"{mean} ({low:.2f}–{high:.2f})" if small else f"{mean} ({fmt_value(low, metric=metric)}–"
                f"{fmt_value(high, metric=metric)})", "–".join(ends)]
    return [f"{mean} ± {fmt_value((high - low) / 2, metric=metric)}", "–".join(ends)]


def spread_headers(metric: str) -> list[str]:
    return [metric] if metric in NO_SPREAD else [metric, "min–max"]


def seed_title(by_seed: list[dict[str, Any]]) -> str:
    seeds: dict[str, set[int]] = {}
    for r in by_seed:
        seeds.setdefault(r["run"], set()).update(r["seeds"])
    return "; ".join(f"{name} over seeds {', '.join(map(str, sorted(found)))}" for name, found in seeds.items())


SEED_NOTE = ("over seeds: each system's mean over the runs that differ only in their seed ± the half-width "
             "of its 95% t-interval (the interval itself where the metric's range cuts it; none for one seed or "
             "where every seed gave the same value), the min–max over the seeds, and the number of seeds")


def _seed_md(by_seed: list[dict[str, Any]]) -> list[str]:
    columns = metric_columns(by_seed)
    headers = [h for c in columns for h in spread_headers(c)]
    lines = [f"**{seed_title(by_seed)}**", "", "| run | system | seeds | " + " | ".join(headers) + " |",
             "|---" * (len(headers) + 3) + "|"]
    for r in by_seed:
        cells = [v for c in columns for v in fmt_spread(r, c)]
        lines.append(f"| {r['run']} | {r['system']} | {r['n_seeds']} | " + " | ".join(cells) + " |")
    return lines + ["", SEED_NOTE]


def _seed_table(by_seed: list[dict[str, Any]], main: str | None, console) -> None:
    """The seed groups' table, fitted to the console's width as the runs' table is, ``main`` first."""
    columns = _main_first(metric_columns(by_seed), main)
    groups = [ColumnGroup("seeds", [("seeds", {})], lambda r: [str(r["n_seeds"])])]
    groups += [ColumnGroup(c, [(h, {"style": "dim"} if n else {}) for n, h in enumerate(spread_headers(c))],
                           lambda r, c=c: fmt_spread(r, c)) for c in columns]
    _print_fitted(console, escape_markup(f"dpokd leaderboard: {seed_title(by_seed)}"), by_seed, groups, required=2)
    _note(console, SEED_NOTE)


def _csv(rows, plain, by_seed, console) -> None:
    columns = metric_columns(rows + by_seed)
    seeded = [name for c in columns if any(c + SPREAD in r for r in by_seed)
              for name in (f"{c}_min", f"{c}_max", f"{c}_t95_low", f"{c}_t95_high")]
    stopped = ["converged_at"] if any("converged_at" in r for r in plain) else []
    counts = [f"{c}_n" for c in columns if any(f"{c}_n" in r for r in plain)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["run", "system", *columns, *counts, *_csv_extras(rows), *stopped,
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
        headers.append(f"Δ{delta_metric(rows)} vs {reference_names(rows)}")
    if any(r.get("vs_prev") for r in rows):
        headers.append(f"Δ{delta_metric(rows)} vs previous")
    if any(r.get("judge_calibration") for r in rows):
        headers.append(f"judge vs {truth_names(rows)}")
    return headers


def _md_extra(r: dict[str, Any], headers: list[str]) -> list[str]:
    cells = []
    for header in headers:
        if header.startswith("judge vs "):
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


@dataclass
class ColumnGroup:
    """Columns that stay or go together: a metric and its interval, a Δ with its interval and p."""

    key: str
    headers: list[tuple[str, dict[str, Any]]]  # (header, rich column options)
    cells: Callable[[dict[str, Any]], list[str]]


def _main_first(columns: list[str], main: str | None) -> list[str]:
    """``columns`` with ``main`` first: the terminal tables always keep their first metric."""
    return [c for c in columns if c == main] + [c for c in columns if c != main]


def _table(rows: list[dict[str, Any]], columns: list[str], best: dict[str, int], console) -> None:
    """The terminal table, fitted to the console's width: a confidence interval gets a column of its
    own, so that rows stay one line, and what does not fit goes to further tables below. The first
    metric of ``columns`` always stays."""
    runs = sorted({r["run"] for r in rows})
    title = f"dpokd leaderboard: {escape_markup(runs[0])}" if len(runs) == 1 else "dpokd leaderboard"
    groups = [_metric_group(c, rows, best) for c in columns]
    for key in ("vs_ref", "vs_prev"):
        if any(r.get(key) for r in rows):
            against = escape_markup(short_name(reference_names(rows))) if key == "vs_ref" else "prev"
            groups.append(ColumnGroup(key, [(f"Δ vs {against}", {}), ("95% CI", {"style": "dim"}), ("p", {})],
                                      lambda r, key=key: list(fmt_delta(r.get(key)))))
    judged = any(r.get("judge_calibration") for r in rows)
    if judged:
        groups.append(ColumnGroup("judge_calibration", [("judge acc", {}), ("κ", {}), ("pairs", {})],
                                  lambda r: list(fmt_calibration(r.get("judge_calibration")))))
    _print_fitted(console, title, rows, groups, required=1)
    for found in verdicts(rows):
        console.print(escape_markup(fmt_verdict(found, with_run=len(runs) > 1)), style="bold", soft_wrap=False)
    if any(r.get(key) for r in rows for key in ("vs_ref", "vs_prev")):
        _note(console, f"Δ: the paired difference in {delta_metric(rows)} on the same examples, Newcombe's 95% paired "
                       "interval and an exact sign-flip test's p (McNemar's for passes and fails); against "
                       f"{reference_names(rows)} and, for each checkpoint, the one before it (prev)")
    if judged:
        _note(console, "judge acc, κ: where exactly one of a system's and its baseline's answers passes the tests, "
                       "how often the LLM judge prefers the passing one, and Cohen's κ against "
                       f"{truth_names(rows)} (a grading judge: how often a grade of at least half the scale agrees "
                       "with each answer's pass or fail)")


def _metric_group(column: str, rows: list[dict[str, Any]], best: dict[str, int]) -> ColumnGroup:
    """A metric's column, the best value in bold green, and its interval's where any row has one."""
    with_ci = any(f"{column}_ci" in r for r in rows)

    def cells(r: dict[str, Any]) -> list[str]:
        text = fmt_value(r.get(column), metric=column)
        shown = [f"[bold green]{text}[/]" if best.get(column) == id(r) else text]
        ci = r.get(f"{column}_ci")
        return shown + [f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else ""] if with_ci else shown

    return ColumnGroup(column, [(column, {})] + ([("95% CI", {"style": "dim"})] if with_ci else []), cells)


def _fit(groups: list[ColumnGroup], required: int, width: int,
         measure: Callable[[list[ColumnGroup]], int]) -> list[list[ColumnGroup]]:
    """The tables that show ``groups`` within ``width``: the first keeps the first ``required`` and drops
    the others in DROP_FIRST's order until it fits; the dropped ones follow, in column order, each in the
    first further table with room for it. Where even the names and the first metric are too wide, rich
    folds cells onto more lines (never cuts them)."""
    shown = list(groups)
    optional = [g.key for g in groups[required:]]
    others = [k for k in reversed(optional) if k not in (*DROP_FIRST, "vs_ref")]
    order = [k for k in DROP_FIRST if k in optional] + others + [k for k in optional if k == "vs_ref"]
    for key in order:
        if measure(shown) <= width:
            break
        shown = [g for g in shown if g.key != key]
    tables = [shown]
    kept = {g.key for g in shown}
    for group in (g for g in groups if g.key not in kept):
        room = next((t for t in tables[1:] if measure(t + [group]) <= width), None)
        if room is None:
            tables.append([group])
        else:
            room.append(group)
    return tables


def _print_fitted(console, title: str, rows: list[dict[str, Any]], groups: list[ColumnGroup], required: int) -> None:
    """The rows' table in as many tables as the console's width needs, each led by the names."""
    from rich.measure import Measurement

    def measure(chosen: list[ColumnGroup]) -> int:
        return Measurement.get(console, console.options.update_width(10_000), _build("", rows, chosen)).maximum

    for n, chosen in enumerate(_fit(groups, required, console.width, measure)):
        console.print(_build(title if n == 0 else f"{title} (continued)", rows, chosen), soft_wrap=False)


def _build(title: str, rows: list[dict[str, Any]], groups: list[ColumnGroup]):
    """One table: the run (where rows come from several) and the system, then ``groups``' columns."""
    from rich.table import Table

    several = len({r["run"] for r in rows}) > 1
    table = Table(title=title or None)
    for name in (["run", "system"] if several else ["system"]):
        table.add_column(name, overflow="fold")  # names may hold [brackets], which rich reads as markup: escaped
    for group in groups:
        for header, options in group.headers:
            table.add_column(header, justify="right", overflow="fold", **options)
    for r in rows:
        names = [escape_markup(r["run"])] if several else []
        table.add_row(*names, escape_markup(r["system"]), *[cell for g in groups for cell in g.cells(r)])
    return table


def _note(console, text: str) -> None:
    """A dim note, wrapped at the console's width (the CLI's console would keep it on one long line)."""
    console.print(escape_markup(text), style="dim", soft_wrap=False)


def fmt_verdict(found: dict[str, Any], with_run: bool = False) -> str:
    """A run's verdict in one line: ``student@iter_2 vs student@base: pass@1 +1.000 [0.85, 1.00], p = 4.7e-10``."""
    low, high = found["ci"]
    text = (f"{found['system']} vs {found['against']}: {found['metric']} {found['delta']:+.3f} "
            f"[{low:.2f}, {high:.2f}], p = {fmt_p(found['p'])}")
    return f"{found['run']}: {text}" if with_run else text


def _best(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, int]:
    best = {}
    for c in columns:
        scored = [r for r in rows if r.get(c) is not None]
        if len(scored) > 1 and c not in NO_SPREAD:
            higher = rows[0]["_better"].get(c, True)
            pick = max(scored, key=lambda r: r[c]) if higher else min(scored, key=lambda r: r[c])
            best[c] = id(pick)
    return best




def render_group_delta(found: dict[str, Any], console) -> None:
    """``dpokd compare``: one row per seed (each side's score, the paired Δ and its interval), then the Δ over seeds."""
    from rich.table import Table

    metric = found["metric"]
    table = Table(title=escape_markup(f"dpokd compare: {found['a']} vs {found['b']}"), title_justify="left")
    for header in ("seed", "A", f"A {metric}", "B", f"B {metric}", "examples", f"Δ{metric}", "95% CI", "p"):
        table.add_column(escape_markup(header), justify="left" if header in ("A", "B") else "right")
    for r in found["seeds"]:
        table.add_row(str(r["seed"]), escape_markup(r["a_system"]), f"{r['a']:.3f}", escape_markup(r["b_system"]),
                      f"{r['b']:.3f}", str(r["n"]), *fmt_delta(r))
    console.print(table)
    low, high = found["ci"]
    console.print(f"Δ{escape_markup(metric)} over seeds: {found['delta']:+.3f} [{low:+.3f}, {high:+.3f}] "
                  f"({escape_markup(found['method'])}); A {found['a_mean']:.3f}, B {found['b_mean']:.3f}")
    for r in found["seeds"]:
        if r.get("unpaired"):
            console.print(f"[yellow]warning:[/] seed {r['seed']}: {r['unpaired']} example(s) answered by one side only "
                          f"are left out; the Δ is over the {r['n']} both answered")
