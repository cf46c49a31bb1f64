"""API models against litellm's model map: retired ones stop a run early, with a date and a replacement."""

import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from dpokd.interfaces import Context
from dpokd.llm import LLMOptions
from dpokd.models import _bundled_map, check_model, check_spec, lookup, model_map, preflight, suggest
from dpokd.spec import load_spec

from .conftest import ROOT, shipped_spec

# The day these verdicts were recorded: the clock must not change a test's verdict.
RECORDED = date(2026, 11, 29)
SPECS = sorted((ROOT / "specs").glob("*.toml"))

SPEC = """
[run]
name = "retired"
[task]
plugin = "synthetic-codegen"
n_train = 4
n_eval = 2
[teacher]
plugin = "litellm"
model = "{teacher}"
[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
[[judges]]
plugin = "llm-pairwise"
model = "{judge}"
"""

# A small map in litellm's format, for the rules at their boundaries.
MAP = {
    "gpt-9-turbo": {"litellm_provider": "openai", "mode": "chat", "deprecation_date": "2026-12-29",
                    "successor_model": "gpt-10"},
    "gpt-10": {"litellm_provider": "openai", "mode": "chat", "output_cost_per_token": 1e-5},
    "gpt-10-2026-05-01": {"litellm_provider": "openai", "mode": "chat", "output_cost_per_token": 1e-5},
    "gpt-11-preview": {"litellm_provider": "openai", "mode": "chat"},
    "gpt-10.5": {"litellm_provider": "openai", "mode": "chat", "deprecation_date": "2027-01-15"},
    "gpt-10-turbo": {"litellm_provider": "openai", "mode": "chat"},
    "gpt-12-embedding": {"litellm_provider": "openai", "mode": "embedding"},
    "gemini/gemini-10-pro": {"litellm_provider": "gemini", "mode": "chat"},
}


def write_spec(tmp_path: Path, teacher: str, judge: str = "gpt-5.5-2026-04-23") -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(teacher=teacher, judge=judge))
    return path


@pytest.mark.parametrize("teacher, judge, field, retired", [
    ("gemini/gemini-1.0-pro", "gpt-5.5-2026-04-23", "teacher.model", "2025-02-15"),
    ("gemini/gemini-4-argon", "gpt-4-turbo", "judges[0].model", "2026-10-23"),
])
def test_retired_model_fails_validate_and_run_with_its_date_and_a_replacement(tmp_path, teacher, judge, field, retired):
    path = write_spec(tmp_path, teacher, judge)
    env = {**os.environ, "GEMINI_API_KEY": "x", "OPENAI_API_KEY": "x"}
    for command in (["validate"], ["run"]):
        out = subprocess.run([sys.executable, "-m", "dpokd", *command, str(path)], capture_output=True, text=True,
                             cwd=tmp_path, env=env, timeout=120)
        assert out.returncode == 2, out.stderr
        line = next(line for line in out.stderr.splitlines() if field in line)
        assert f"was retired on {retired}" in line and str(path) in line
        replacement = line.split("use '")[1].split("'")[0]
        assert check_model(LLMOptions(model=replacement), "teacher") == []  # a model that works today
        assert "Traceback" not in out.stderr
    assert not list(tmp_path.glob("runs/*/manifest.json"))  # the run stopped before it started


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_pass_the_model_check(path, tmp_path):
    spec = load_spec(shipped_spec(path, tmp_path))
    assert check_spec(spec, RECORDED) == []
    for line in path.read_text().splitlines():
        if line.startswith("model = ") and ("gemini/" in line or "gpt-" in line):
            assert "# the paper: " in line and "(retired)" in line  # the seed's original, beside its replacement


def test_judge_defaults_are_current_dated_snapshots():
    from dpokd.plugins.judges.pairwise import PairwiseJudge

    model = PairwiseJudge.Options().model
    assert check_model(PairwiseJudge.Options(), "judges[0]", today=RECORDED) == []
    assert re.search(r"-\d{4}-\d{2}-\d{2}$", model) and lookup(model) is not None


def test_the_teachers_default_model_passes_the_check():
    from dpokd.plugins.teachers.litellm import LiteLLMTeacher

    assert check_model(LiteLLMTeacher.Options(), "teacher", today=RECORDED) == []


def test_the_real_map_retires_what_the_paper_used():
    for model, retired in (("gpt-4-turbo", "2026-10-23"), ("gpt-4", "2026-10-23"), ("gemini/gemini-1.0-pro", "2025-02-15")):
        [issue] = check_model(LLMOptions(model=model), "teacher", today=RECORDED)
        assert issue.level == "error" and f"retired on {retired}" in issue.message
    assert lookup("gemini/gemini-1.0-pro") is None


def test_retirement_within_30_days_warns_and_on_the_day_fails():
    options = LLMOptions(model="gpt-9-turbo")
    assert check_model(options, "teacher", today=date(2026, 11, 28), cost_map=MAP) == []  # 31 days ahead
    [warning] = check_model(options, "teacher", today=RECORDED, cost_map=MAP)
    assert warning.level == "warning" and "2026-12-29, in 30 days" in warning.message
    [error] = check_model(options, "teacher", today=date(2026, 12, 29), cost_map=MAP)
    assert error.level == "error" and str(error).startswith("teacher.model: 'gpt-9-turbo' was retired on 2026-12-29")


def test_the_suggestion_is_the_newest_lasting_stable_model_of_the_family():
    # gpt-11-preview is a preview, gpt-12-embedding not a chat model, gpt-10.5 retires within 90 days;
    # gpt-10-turbo shares the tier word; a dated snapshot beats its alias.
    assert suggest("gpt-9-turbo", RECORDED, MAP) == "gpt-10-turbo"
    assert suggest("gpt-8", RECORDED, MAP) == "gpt-10-2026-05-01"
    assert suggest("openai/gpt-8", RECORDED, MAP) == "openai/gpt-10-2026-05-01"
    assert suggest("gemini/gemini-1.0-pro", RECORDED, MAP) == "gemini/gemini-10-pro"
    assert suggest("anthropic/claude-1", RECORDED, MAP) is None
    [error] = check_model(LLMOptions(model="gpt-9-turbo"), "teacher", today=date(2027, 1, 1), cost_map=MAP)
    assert "use 'gpt-10-turbo' instead" in error.message and "names 'gpt-10' as its successor" in error.message


def test_an_unlisted_model_warns_and_fails_only_when_a_budget_cannot_be_kept():
    [warning] = check_model(LLMOptions(model="openai/my-finetune"), "teacher", today=RECORDED)
    assert warning.level == "warning" and "price is unknown" in warning.message
    [error] = check_model(LLMOptions(model="openai/my-finetune", max_usd=5, usd_per_million_input=1.0),
                          "judges[1]", today=RECORDED)
    assert error.level == "error" and "max_usd = 5 cannot be kept" in error.message
    assert "judges[1].usd_per_million_output" in error.message and "usd_per_million_input" not in error.message
    priced = LLMOptions(model="openai/my-finetune", max_usd=5, usd_per_million_input=1.0, usd_per_million_output=2.0)
    assert check_model(priced, "teacher", today=RECORDED) == []


def test_models_on_an_api_base_or_a_local_server_are_skipped():
    for options in (LLMOptions(model="openai/gpt-4", api_base="http://127.0.0.1:8000/v1"),
                    LLMOptions(model="ollama/llama3"), LLMOptions(model="hosted_vllm/my-model", max_usd=1)):
        assert check_model(options, "teacher", today=RECORDED) == []


def test_offline_replay_of_a_retired_model_only_warns(tmp_path):
    spec = load_spec(write_spec(tmp_path, "gemini/gemini-1.0-pro", "gpt-4-turbo"))
    logged = []
    context = Context(cache_dir=tmp_path / "cache", offline=True)
    context.log = logged.append
    preflight(spec, context, today=RECORDED)
    assert len(logged) == 2 and all("warning" in line and "was retired on" in line for line in logged)
    with pytest.raises(Exception, match="teacher.model.*2025-02-15(.|\n)*judges\\[0\\].model.*2026-10-23"):
        preflight(spec, Context(cache_dir=tmp_path / "cache"), today=RECORDED)


def test_validate_reads_the_map_without_importing_litellm():
    script = f"""
import sys
from dpokd.cli import cli
try:
    code = cli.main(args=["validate", r"{ROOT / 'specs' / 'summary_online.toml'}"], standalone_mode=False) or 0
except SystemExit as exit_:
    code = exit_.code
print(code, "litellm" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 False", out.stdout  # valid, and no litellm


def test_the_bundled_map_is_the_one_litellm_loads():
    bundled = _bundled_map()
    import litellm  # with LITELLM_LOCAL_MODEL_COST_MAP=True, as conftest sets

    assert model_map() is litellm.model_cost
    assert bundled["gpt-4-turbo"]["deprecation_date"] == litellm.model_cost["gpt-4-turbo"]["deprecation_date"]
    models = {key for key, entry in bundled.items() if "litellm_provider" in entry}
    assert models == set(litellm.model_cost)
    assert all(bundled[key].get("deprecation_date") == entry.get("deprecation_date")
               and bundled[key]["litellm_provider"] == entry["litellm_provider"] for key, entry in litellm.model_cost.items())
