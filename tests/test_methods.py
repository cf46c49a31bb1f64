"""The harder task (held-out compositions), the pretrained tiny student, and the methods table's command."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dpokd.plugins.students.hf_qlora import HFQLoRAStudent
from dpokd.plugins.students.tiny import tiny_dir_name, tiny_recipe
from dpokd.plugins.tasks.compose import SyntheticCompose

from .conftest import FIXTURES, ROOT, run_cli


def task(**options) -> SyntheticCompose:
    return SyntheticCompose(SyntheticCompose.Options(**{"seed": 0, **options}))


def passes(example) -> bool:
    """The reference run against the example's hidden tests (our own generated code, not a model's)."""
    scope: dict = {}
    exec(example.reference + "\n" + example.tests, scope)  # noqa: S102
    try:
        scope["check"](scope[example.entry_point])
    except AssertionError:
        return False
    return True


def test_eval_orders_of_operations_are_never_trained_on_and_the_knob_sets_the_chain_length():
    t = task(steps=3, n_train=64, n_eval=32)
    train, held = t.examples("train"), t.examples("eval")
    orders = lambda examples: {e.meta["operations"] for e in examples}
    assert len(train) == 64 and len(held) == 32 and not orders(train) & orders(held)
    assert len(orders(held)) == 16  # a quarter of the 4**3 orders
    assert not {e.id for e in train} & {e.id for e in held}
    assert all(passes(e) for e in train + held)
    # Every operation of a held-out order occurs in training: what is new is the composition.
    assert {op for o in orders(held) for op in o.split("-")} <= {op for o in orders(train) for op in o.split("-")}
    assert all(e.reference.count("    x = x ") == 3 for e in held)
    assert all(e.reference.count("    x = x ") == 2 for e in task(steps=2, n_train=8, n_eval=4).examples("eval"))
    assert {e.entry_point for e in held} == {"f"}
    named = task(steps=2, n_train=8, n_eval=4, named=True).examples("eval")
    assert all(e.entry_point == e.id.removeprefix("compose/") and f"def {e.entry_point}(x)" in e.reference for e in named)
    assert all(passes(e) for e in named)
    assert [e.prompt for e in task(steps=3, n_train=64, n_eval=32).examples("eval")] == [e.prompt for e in held]
    assert [e.prompt for e in task(steps=3, n_train=64, n_eval=32, seed=1).examples("eval")] != [e.prompt for e in held]


def test_a_noisy_teacher_is_wrong_on_its_share_of_train_problems_only():
    t = task(n_train=40, n_eval=12, wrong_references=0.25)
    train = t.examples("train")
    assert sum(not passes(e) for e in train) == 10
    assert all(passes(e) for e in t.examples("eval"))
    assert [e.prompt for e in train] == [e.prompt for e in task(n_train=40, n_eval=12).examples("train")]


def test_too_many_problems_for_the_orders_left_is_a_spec_error(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[run]\n[task]\nplugin = "synthetic-compose"\nsteps = 2\nn_train = 2000\n[teacher]\nplugin = "reference"\n'
                    '[student]\nplugin = "hf-qlora"\nmodel = "dpokd:tiny"\n[[judges]]\nplugin = "execution"\n')
    out = run_cli("validate", str(spec), cwd=tmp_path)
    assert out.returncode == 2 and "task.n_train" in out.stderr and "at most 768 distinct problems" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


TINY = {"n_train": "8", "n_eval": "6", "tiny_pretrain_steps": "12", "epochs": "1", "max_new_tokens": "24",
        "iterations": "1"}


def tiny_specs(folder: Path, names: list[str]) -> Path:
    """The shipped method specs at tiny settings: only the sizes changed, the methods as shipped."""
    folder.mkdir()
    for name in names:
        text = (ROOT / "specs" / "methods" / f"{name}.toml").read_text()
        for key, value in TINY.items():
            text = re.sub(rf"(?m)^{key} = \S+", f"{key} = {value}", text)
        (folder / f"{name}.toml").write_text(text)
    return folder


@pytest.mark.slow
def test_the_methods_command_runs_the_specs_and_tabulates_delta_against_sft(tmp_path):
    specs = tiny_specs(tmp_path / "specs", ["dpokd-static", "sft"])
    summary = tmp_path / "methods.json"
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "methods.py"), "--seeds", "1", "--specs", str(specs),
                           "--workdir", str(tmp_path), "--jobs", "1", "--output", str(summary)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(summary.read_text())
    assert set(found["methods"]) == {"dpokd-static", "sft"} and found["seeds"] == [0]
    dpo = found["methods"]["dpokd-static"]
    # The Δ against SFT is `dpokd compare`'s, on the same runs.
    compared = run_cli("compare", str(tmp_path / "runs" / "methods-dpokd-static"), str(tmp_path / "runs" / "methods-sft"),
                       "--format", "json")
    assert compared.returncode == 0, compared.stderr
    assert dpo["vs_sft"]["delta"] == pytest.approx(json.loads(compared.stdout)["delta"])
    pairs = sum(1 for _ in (tmp_path / "runs" / "methods-dpokd-static" / "iter_1" / "pairs.jsonl").open())
    assert dpo["train_steps"] == -(-pairs // 4)  # one epoch of pairs, 4 a step
    assert dpo["wall_s"] > 0 and dpo["teacher"] == [1.0] and dpo["base"][0] <= 0.1
    assert "| dpokd-static |" in done.stdout and "| sft |" in done.stdout and "(the reference)" in done.stdout
    # One pretrained base for both methods, built once; its pretraining lowered the loss on Python.
    built = list((tmp_path / "cache" / "models").glob("tiny-*"))
    assert len(built) == 1
    curve = json.loads((built[0] / "pretrain.json").read_text())["loss"]
    assert curve[-1] < curve[0]
    shutil.rmtree(tmp_path / "cache")


@pytest.mark.parametrize(("page", "markers"), [("docs/methods.md", []),
                                               ("README.md", ["--markers", "[[[methods methods]]] [[[end-methods]]]"])])
def test_the_methods_table_shown_is_the_one_its_summary_makes(page, markers):
    done = subprocess.run([sys.executable, "-m", "cogapp", "--check", "-I", str(ROOT / "docs"), *markers, str(ROOT / page)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{page} drifted from docs/methods.json; run `make methods`:\n{done.stderr}"


# The base the shipped specs pretrain (`tiny_pretrain_steps = 1000`, about 100 s of CPU), as their first
# run leaves it in cache/models/: copied into a test's cache, so that the runs below skip the pretraining.
PRETRAINED = FIXTURES / "tiny-pretrained"


def pretrained_base_in_cache(spec: Path, cache: Path) -> None:
    """Put the committed pretrained base where ``spec``'s student looks for it, after checking that it was
    built from the recipe the spec asks for (all but the corpus's hash, which follows the Python version)."""
    table = {k: v for k, v in tomllib.loads(spec.read_text())["student"].items() if k != "plugin"}
    corpus, build = HFQLoRAStudent(HFQLoRAStudent.Options(**table)).tiny_build([])
    wanted = tiny_recipe(corpus, **build)
    built = json.loads((PRETRAINED / "dpokd_recipe.json").read_text())
    assert {k: v for k, v in built.items() if k != "corpus"} == {k: v for k, v in wanted.items() if k != "corpus"}
    shutil.copytree(PRETRAINED, cache / "models" / tiny_dir_name(wanted))


@pytest.mark.slow
def test_on_five_seeds_the_distilled_student_lands_between_the_base_and_the_teacher(tmp_path):
    """The harder task's default as `specs/methods/dpokd-static.toml` ships it (smaller settings met the
    bar with no margin or missed it: docs/methods.md): the base at most 0.1 and the teacher at 1.0 on every
    seed, the distilled student between 0.2 and 0.8 on at least 3 of 5."""
    spec = tmp_path / "dpokd-static.toml"
    shutil.copy(ROOT / "specs" / "methods" / "dpokd-static.toml", spec)
    pretrained_base_in_cache(spec, tmp_path / "cache")
    scores = {}
    for seed in range(5):
        out = run_cli("run", str(spec), "--seed", str(seed), cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        run = tmp_path / "runs" / ("methods-dpokd-static" + (f"-seed{seed}" if seed else ""))
        results = json.loads((run / "results.json").read_text())["scores"]
        scores[seed] = {s["system"]: s["value"] for s in results if s["metric"] == "pass@1" and s["n"] == 32}
    assert len(list((tmp_path / "cache" / "models").iterdir())) == 1, "the base was built again"
    assert all(s["student@base"] <= 0.1 and s["teacher"] == 1.0 for s in scores.values()), scores
    assert sum(0.2 <= s["student@iter_1"] <= 0.8 for s in scores.values()) >= 3, scores


def test_the_shipped_settings_leave_the_distilled_student_between_the_base_and_the_teacher():
    """What docs/methods.json records of `make methods`: the base at most 0.1 and the teacher at 1.0 on
    every seed, and DPO-KD static between 0.2 and 0.8 on at least 3 of the 5 seeds."""
    summary = json.loads((ROOT / "docs" / "methods.json").read_text())
    assert len(summary["seeds"]) == 5
    for method in summary["methods"].values():
        assert max(method["base"]) <= 0.1 and min(method["teacher"]) == 1.0
    distilled = summary["methods"]["dpokd-static"]["pass@1"]["by_seed"].values()
    assert sum(0.2 <= score <= 0.8 for score in distilled) >= 3


def test_the_figures_the_methods_page_quotes_by_hand_are_its_summarys():
    """The words under the table are written by hand: each figure they quote must still be one of
    docs/methods.json's, rounded as quoted, or `make methods` has left them behind."""
    summary = json.loads((ROOT / "docs" / "methods.json").read_text())

    def values(node):
        if isinstance(node, dict):
            return [v for child in node.values() for v in values(child)]
        if isinstance(node, list):
            return [v for child in node for v in values(child)]
        return [abs(node)] if isinstance(node, (int, float)) and not isinstance(node, bool) else []

    held = values(summary)
    page = (ROOT / "docs" / "methods.md").read_text()
    words = page[page.index("**What it shows.**"):page.index("### How the settings were chosen")]
    quoted = re.findall(r"(?<![\d.])[−-]?(0\.\d{2,3})(?!\d)", words)
    assert len(quoted) >= 20
    stale = [q for q in quoted if not any(abs(v - float(q)) <= 0.5 * 10 ** (2 - len(q)) + 1e-9 for v in held)]
    assert not stale, f"docs/methods.md quotes figures docs/methods.json does not hold: {stale}"
