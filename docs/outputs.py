"""The outputs shown in the README and the docs, made by running dpokd on real runs.

``make docs`` runs cog over the Markdown files, which call these functions between their
``[[[cog`` markers, and takes the report's screenshot; ``tests/test_docs_outputs.py`` fails when
what the files show drifts from what dpokd prints. Runs are read from ``DPOKD_DOCS_RUNS``
(default ``runs``: where ``make demo`` and the seed runs leave them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def runs() -> Path:
    return Path(os.environ.get("DPOKD_DOCS_RUNS", ROOT / "runs"))


def dpokd(*args: str, columns: int = 120, cwd: Path = ROOT, unset: tuple[str, ...] = ()) -> str:
    """What ``dpokd ARGS`` prints, on a terminal of ``columns`` columns without colour."""
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb", "HF_HUB_OFFLINE": "1"}
    for name in unset:
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "dpokd", *args], capture_output=True, text=True, env=env, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"dpokd {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout.rstrip()


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
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as home:
        shutil.copytree(ROOT / "specs", Path(home) / "specs")
        keys = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY")
        text = dpokd("plan", f"specs/{spec}", columns=columns, cwd=Path(home), unset=keys)
    return f"```text\n$ dpokd plan specs/{spec}\n{text}\n```"


def screenshot(run: str = "quickstart", out: Path = ROOT / "docs" / "report.png") -> Path:
    """The run's report in headless Chromium, as the docs show it."""
    page = runs() / run / "report.html"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={out}", "--window-size=1280,1000", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return out


if __name__ == "__main__":
    print(screenshot())
