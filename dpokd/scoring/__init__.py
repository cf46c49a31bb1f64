"""Scoring: outcomes on disk, pass@k, intervals, paired comparisons, and the leaderboard's rows.

Public for plugin authors: a judge returns :class:`~dpokd.Outcome` and :class:`~dpokd.Score`
records, and may use the helpers here to make them.
"""

from .code import extract_code, job_for, pass_at_k, pass_at_ks, score_completions
from .outcomes import eval_path, per_example, read_outcomes, record, summarise
from .rows import load_rows, metric_columns, plain_rows
from .seeds import seed_groups, seed_rows
from .stats import (Calibration, Comparison, calibration, cohen_kappa, compare, mcnemar_exact, mean_ci, paired_ci,
                    sign_flip_p, t_interval, wilson)

__all__ = [
    "Calibration",
    "Comparison",
    "calibration",
    "cohen_kappa",
    "compare",
    "eval_path",
    "extract_code",
    "job_for",
    "load_rows",
    "mcnemar_exact",
    "mean_ci",
    "metric_columns",
    "paired_ci",
    "pass_at_k",
    "pass_at_ks",
    "per_example",
    "plain_rows",
    "read_outcomes",
    "record",
    "score_completions",
    "seed_groups",
    "seed_rows",
    "sign_flip_p",
    "summarise",
    "t_interval",
    "wilson",
]
