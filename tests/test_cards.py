"""Model and dataset cards: every adapter folder of a run holds a hub model card, every iteration's
pairs a dataset card, and huggingface_hub's own loaders read them back with their metadata."""

import json
import re
import subprocess
import sys

import pytest
from huggingface_hub import DatasetCard, ModelCard

from dpokd.cards import PAIRS_CARD, model_card

from .tracked_run import tracked_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tracked_run(tmp_path_factory)[0]


def test_every_adapter_has_a_model_card_with_base_teacher_task_pairs_options_and_scores(run):
    results = json.loads((run / "results.json").read_text())["scores"]
    for k in (1, 2):
        adapter = run / f"iter_{k}" / "adapter"
        card = ModelCard.load(adapter / "README.md")
        assert card.data.library_name == "peft"
        assert {"dpo", "distillation", "dpokd"} <= set(card.data.tags)
        assert card.data.base_model is None  # dpokd:tiny is built locally: no hub id to point at
        base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
        text = card.text
        assert f"`dpokd:tiny` (built locally; weights at `{base}`)" in text
        assert "| teacher | `reference` |" in text and "| task | `synthetic-codegen` |" in text
        pairs = json.loads((run / f"iter_{k}" / "train_metrics.json").read_text())["pairs"]
        assert f"| preference pairs | {pairs} |" in text and pairs == 8
        assert "| lora_r | 4 |" in text and '| report_to | ["tensorboard"] |' in text
        mine = next(s for s in results if s["system"] == f"student@iter_{k}" and s["metric"] == "pass@1")
        low, high = mine["ci"]
        assert (f"| student@iter_{k} | execution | pass@1 | {mine['value']:.4g} | {low:.3f}–{high:.3f} | 4 |"
                in text), text
        assert "| teacher | execution | pass@1 | 1 |" in text


def test_the_loading_snippet_of_a_card_loads_the_adapter_with_plain_peft(run):
    adapter = run / "iter_2" / "adapter"
    code = re.search(r"```python\n(.*?)```", (adapter / "README.md").read_text(), re.S).group(1)
    assert len(code.strip().splitlines()) == 3
    check = code + ("import torch\nfrom safetensors.torch import load_file\n"
                    f"saved = load_file({str(adapter / 'adapter_model.safetensors')!r})\n"
                    "state = {k: v for k, v in model.state_dict().items() if 'lora_' in k}\n"
                    "print(len(saved), sum(any(torch.equal(v, t) for t in state.values()) for v in saved.values()))\n")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    n, equal = out.stdout.split()[-2:]
    assert int(n) > 0 and n == equal  # every saved LoRA tensor is in the loaded model


def test_each_iterations_pairs_have_a_dataset_card(run):
    for k in (1, 2):
        card = DatasetCard.load(run / f"iter_{k}" / PAIRS_CARD)
        assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "pairs.jsonl"}]}]
        assert {"dpo", "distillation", "dpokd"} <= set(card.data.tags)
        assert card.data.task_categories == ["text-generation"]
        lines = (run / f"iter_{k}" / "pairs.jsonl").read_text().splitlines()
        assert f"| pairs | {len(lines)} of 8 train prompts |" in card.text
        assert "| chosen | answers of the teacher, `reference` |" in card.text
        assert f"at the start of iteration {k}" in card.text


def test_a_hub_base_model_is_the_cards_base_model(tmp_path):
    card = model_card(student={"model": "microsoft/phi-2", "lora_r": 64}, pairs=12, teacher={"plugin": "litellm", "model": "gpt-4o"},
                      task={"plugin": "leetcode-codegen", "dataset": "greengerong/leetcode"}, adapter_ref="me/phi2-kd")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.base_model == "microsoft/phi-2" and loaded.data.library_name == "peft"
    assert "AutoModelForCausalLM.from_pretrained('microsoft/phi-2'), 'me/phi2-kd')" in loaded.text
    assert "| teacher | `litellm` (model `gpt-4o`) |" in loaded.text


def test_table_cells_cannot_be_broken_by_a_pipe_in_an_option(tmp_path):
    card = model_card(student={"model": "x/y", "stop": ["|\n"]})
    row = next(line for line in card.text.splitlines() if line.startswith("| stop |"))
    assert row == '| stop | ["\\|\\\\n"] |'  # the pipe escaped, the backslash shown as written
    assert len(re.findall(r"(?<!\\)\|", row)) == 3  # two cells: the pipe in the value is not a border


def test_a_score_with_nothing_measured_shows_as_missing_in_the_card_and_is_not_sent_to_trackers():
    from dpokd.cards import model_card
    from dpokd.records import Score
    from dpokd.trackers import scalars

    scores = [Score(judge="llm-pairwise", system="student@iter_1", metric="win_rate", value=None, n=0),
              Score(judge="execution", system="student@iter_1", metric="pass@1", value=0.5, ci=(0.3, 0.7), n=20)]
    text = str(model_card(student={"model": "dpokd:tiny"}, scores=scores))
    assert "| student@iter_1 | llm-pairwise | win_rate | - |  | 0 |" in text
    assert "| student@iter_1 | execution | pass@1 | 0.5 | 0.300–0.700 | 20 |" in text
    assert scalars(scores) == {1: {"execution/pass@1": 0.5, "execution/pass@1/ci_low": 0.3,
                                   "execution/pass@1/ci_high": 0.7}}
