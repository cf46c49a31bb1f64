"""The benchmark convention: ``name: value unit (ratio x vs BASELINE)`` lines, and the same as JSON.

Every ratio compares against a baseline measured in the same run, so figures from different
machines are comparable as ratios even when the absolute numbers are not.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


class Bench:
    def __init__(self, name: str):
        self.name = name
        self.figures: list[dict] = []

    def report(self, metric: str, value: float, unit: str, *, baseline: str | None = None,
               baseline_value: float | None = None, higher_is_better: bool = True) -> float | None:
        """Print one figure; with a baseline, the ratio is value/baseline (or its inverse for times)."""
        ratio = None
        line = f"{metric}: {value:.4g} {unit}"
        if baseline is not None and baseline_value:
            ratio = value / baseline_value if higher_is_better else baseline_value / value
            line += f" ({ratio:.2f}x vs {baseline})"
        print(line, flush=True)
        self.figures.append({"metric": metric, "value": value, "unit": unit, "baseline": baseline,
                             "baseline_value": baseline_value, "ratio": ratio})
        return ratio

    def save(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{self.name}.json"
        out.write_text(json.dumps({"bench": self.name, "python": sys.version.split()[0],
                                   "platform": platform.platform(), "figures": self.figures}, indent=2))
        return out


@contextmanager
def timer():
    """``with timer() as t: ...``; then ``t()`` is the elapsed seconds."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())
