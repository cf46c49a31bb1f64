"""`loss = ["sft"]` is plain supervised distillation: TRL's loss is the chosen answers' NLL, and the
rejected answers change nothing that is trained."""

import json

import pytest

from dpokd.interfaces import Context
from dpokd.plugins.students.hf_qlora import HFQLoRAStudent, read_adapter
from dpokd.plugins.tasks.synthetic import SyntheticCodegen
from dpokd.records import PreferencePair

pytestmark = pytest.mark.slow

TASK = SyntheticCodegen.Options(n_train=8, n_eval=2, levels=[1], seed=5)


def student(cache, loss, **options) -> HFQLoRAStudent:
    o = HFQLoRAStudent.Options(model="dpokd:tiny", loss=loss, lora_dropout=0.0, learning_rate=1e-3, epochs=1,
                               max_length=96, **options)
    s = HFQLoRAStudent(o, Context(cache_dir=cache, seed=0))
    s.prepare(SyntheticCodegen(TASK).examples("train"))
    s.load(None)
    return s


def pairs(rejected) -> list[PreferencePair]:
    train = SyntheticCodegen(TASK).examples("train")[:4]
    return [PreferencePair(example_id=e.id, prompt=e.prompt, chosen=e.reference, rejected=rejected(e), iteration=1)
            for e in train]


def train(tmp_path, name, loss, rejected):
    """Two steps of two pairs each: the per-step losses and the trained adapter's tensors."""
    s = student(tmp_path / "cache", loss, batch_size=2)
    s.train_dpo(pairs(rejected), tmp_path / name)
    log = [json.loads(line) for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
    return [row["loss"] for row in log], read_adapter(tmp_path / name / "adapter" / "adapter_model.safetensors")


def test_sft_loss_is_the_mean_nll_of_the_chosen_answer(tmp_path):
    s = student(tmp_path / "cache", ["sft"], batch_size=1)
    batch = pairs(lambda e: "pass")[:1]
    example = SyntheticCodegen(TASK).examples("train")[0]
    nll = s.logprob([example], [batch[0].chosen])[0]  # before any step: what the first step's loss must be
    s.train_dpo(batch, tmp_path / "out")
    first = json.loads((tmp_path / "out" / "train_log.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(nll, rel=1e-3)


WRONG = "def f(x):\n    return None  # wrong\n" * 3


def differing(a, b) -> float:
    """The share of adapter weights that differ (bf16 on disk: float noise can flip a last bit)."""
    return sum((a[n] != b[n]).sum().item() for n in a) / sum(t.numel() for t in a.values())


def test_rejected_answers_do_not_change_what_sft_trains(tmp_path):
    short_losses, a = train(tmp_path, "short", ["sft"], lambda e: "pass")
    long_losses, b = train(tmp_path, "long", ["sft"], lambda e: WRONG)
    assert len(short_losses) == 2
    # The second step's loss follows the first step's update: the same, whatever was rejected.
    assert short_losses == pytest.approx(long_losses, rel=1e-5)
    assert differing(a, b) < 0.01
    # The same comparison sees the rejected side wherever the loss reads it.
    dpo_short, c = train(tmp_path, "dpo-short", ["sigmoid", "sft"], lambda e: "pass")
    dpo_long, d = train(tmp_path, "dpo-long", ["sigmoid", "sft"], lambda e: WRONG)
    assert dpo_short[1] != pytest.approx(dpo_long[1], rel=1e-3)
    assert differing(c, d) > 0.5
