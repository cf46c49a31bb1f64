"""The hf-qlora student on the tiny model: real bitsandbytes 4-bit layers, real PEFT, real TRL."""

import json
import subprocess
import sys

import pytest

from dpokd.interfaces import Context
from dpokd.plugins.students.hf_qlora import HFQLoRAStudent, clean_generation
from dpokd.plugins.tasks.synthetic import SyntheticCodegen
from dpokd.records import PreferencePair

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task():
    return SyntheticCodegen(SyntheticCodegen.Options(levels=[1], n_train=32, n_eval=8))


def make_student(tmp_path, task, **options):
    opts = dict(model="dpokd:tiny", max_new_tokens=16, gen_batch_size=16, epochs=2, batch_size=4,
                learning_rate=1e-3, lora_alpha=64, loss=["sigmoid", "sft"], max_length=96, **options)
    student = HFQLoRAStudent(HFQLoRAStudent.Options(**opts), Context(cache_dir=tmp_path / "cache"))
    student.prepare(task.examples("train"))
    return student


@pytest.fixture(scope="module")
def trained(tmp_path_factory, task):
    """One student: generate, train, generate, train (the online loop on one model object)."""
    tmp = tmp_path_factory.mktemp("student")
    student = make_student(tmp, task)
    train, held_out = task.examples("train"), task.examples("eval")
    from peft import get_peft_model_state_dict

    before = {k: v.clone() for k, v in get_peft_model_state_dict(student._ensure_model()).items()}
    nll_before = student.logprob(held_out, [e.reference for e in held_out])
    first = student.generate(train)
    pairs = [PreferencePair(example_id=e.id, prompt=e.prompt, chosen=e.reference, rejected=c.text or "pass")
             for e, c in zip(train, first)]
    metrics1 = student.train_dpo(pairs, tmp / "iter_1")
    second = student.generate(train)
    pairs2 = [PreferencePair(example_id=e.id, prompt=e.prompt, chosen=e.reference, rejected=c.text or "pass")
              for e, c in zip(train, second)]
    metrics2 = student.train_dpo(pairs2, tmp / "iter_2")
    after = get_peft_model_state_dict(student.model)
    nll_after = student.logprob(held_out, [e.reference for e in held_out])
    return dict(student=student, tmp=tmp, before=before, after=after, metrics=(metrics1, metrics2),
                nll=(nll_before, nll_after), generations=(first, second))


def test_base_is_nf4_double_quantized_and_only_lora_trains(tmp_path, task):
    import bitsandbytes as bnb

    student = make_student(tmp_path, task)
    model = student._ensure_model()
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers
    for layer in layers:
        assert layer.weight.quant_state.quant_type == "nf4"
        assert layer.weight.quant_state.nested  # double quantization
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    expected = sum(64 * (layer.in_features + layer.out_features) for layer in layers)
    assert sum(trainable.values()) == expected


def test_a_small_model_runs_on_one_cpu_thread_unless_told_otherwise(tmp_path, task):
    """Split across threads, a small model's many small operations wait on each other: on a busy 2-core
    machine a quickstart step took 0.8 to 2.3 s on torch's default 2 threads, 0.2 s on one."""
    import torch

    make_student(tmp_path, task, cpu_threads=2)._ensure_model()
    assert torch.get_num_threads() == 2
    make_student(tmp_path, task)._ensure_model()
    assert torch.get_num_threads() == 1


def test_training_moves_lora_and_prefers_the_teacher(trained):
    changed = [k for k in trained["before"] if not (trained["before"][k] == trained["after"][k]).all()]
    assert len(changed) == len(trained["before"])
    for metrics in trained["metrics"]:
        assert metrics["steps"] == 16  # 32 pairs / batch 4 * 2 epochs
        assert metrics["rewards/margins"] > 0
    before, after = trained["nll"]
    assert sum(after) / len(after) < sum(before) / len(before)
    log = [json.loads(l) for l in (trained["tmp"] / "iter_1" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 16 and {"loss", "rewards/margins", "rewards/accuracies", "learning_rate"} <= set(log[0])


def test_online_loop_regenerates_from_the_current_student(trained):
    first, second = trained["generations"]
    assert [c.text for c in first] != [c.text for c in second]
    assert not any(c.cached for c in second)


def test_generations_are_cached_by_fingerprint(trained, task):
    student = trained["student"]
    first = student.generate(task.examples("eval")[:4])
    again = student.generate(task.examples("eval")[:4])
    assert all(c.cached for c in again) and [c.text for c in again] == [c.text for c in first]


def test_saved_adapter_loads_in_a_fresh_process_with_identical_generations(trained, task):
    student = trained["student"]
    prompts = [e.prompt for e in task.examples("eval")]
    student.load(trained["tmp"] / "iter_2" / "adapter")
    ours = [c.text for c in student.generate(task.examples("eval"))]
    adapter = trained["tmp"] / "iter_2" / "adapter"
    script = f"""
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
cfg = json.load(open({str(adapter / 'adapter_config.json')!r}))
base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"], device_map="cpu",
    quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
    bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32))
# Without this, bitsandbytes runs CPU inference through a bf16 repacked kernel: other numerics.
for module in base.modules():
    if hasattr(module, "support_avx512bf16_for_cpu"):
        module.support_avx512bf16_for_cpu = False
model = PeftModel.from_pretrained(base, {str(adapter)!r}).eval()
tok = AutoTokenizer.from_pretrained({str(adapter)!r}); tok.padding_side = "left"
given = json.loads(sys.stdin.read())
# The student batches longest prompts first; the same batch gives bit-identical logits.
order = sorted(range(len(given)), key=lambda i: -len(given[i]))
# Prompted as the student prompts: through the tokenizer's chat template.
prompts = [tok.apply_chat_template([{{"role": "user", "content": given[i]}}], tokenize=False, add_generation_prompt=True)
           for i in order]
enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
with torch.no_grad():
    out = model.generate(**enc, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
texts = []
for row in out[:, enc["input_ids"].shape[1]:]:
    ids = row.tolist()
    ids = ids[: ids.index(tok.eos_token_id)] if tok.eos_token_id in ids else ids
    texts.append(tok.decode(ids, skip_special_tokens=True))
back = [None] * len(texts)
for pos, i in enumerate(order):
    back[i] = texts[pos]
print(json.dumps(back))
"""
    out = subprocess.run([sys.executable, "-c", script], input=json.dumps(prompts), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    assert [clean_generation(t, p, [])[0] for t, p in zip(theirs, prompts)] == ours


def test_unusable_model_fails_with_the_option_named(tmp_path):
    messages = {}
    for model in ("no-such-org/no-such-model", str(tmp_path)):
        student = HFQLoRAStudent(HFQLoRAStudent.Options(model=model), Context(cache_dir=tmp_path))
        with pytest.raises(Exception) as info:
            student.preflight()
        assert "student.model" in str(info.value)
        messages[model] = str(info.value)
    # A hub id not in the local cache: the command that downloads it is huggingface_hub's `hf download`.
    assert "download it first (`hf download no-such-org/no-such-model`" in messages["no-such-org/no-such-model"]


@pytest.mark.parametrize("hidden, layers, warned", [(16384, 120, True), (64, 1, False)])
def test_a_model_too_large_for_memory_gets_a_warning_with_the_estimate(tmp_path, hidden, layers, warned):
    import io

    from rich.console import Console
    from transformers import PhiConfig

    PhiConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
              num_attention_heads=max(2, hidden // 128), vocab_size=51200).save_pretrained(tmp_path / "model")
    out = io.StringIO()
    context = Context(cache_dir=tmp_path, console=Console(file=out, width=300))
    HFQLoRAStudent(HFQLoRAStudent.Options(model=str(tmp_path / "model")), context).preflight()
    message = out.getvalue()
    if warned:
        assert "student.model" in message and "B parameters" in message and "Phi-2 in 4-bit needs about 2 GB" in message
    else:
        assert message == ""


def test_a_chat_record_trains_on_the_tokens_generation_saw(tmp_path):
    """A conversation with a system prompt, through dpokd:tiny's chat template: the prompt tokens TRL
    trains on are the tokens generation fed the model, and the pairs stay conversational."""
    from dpokd.records import Example

    chat = [Example(id=f"c{i}", prompt="", messages=[{"role": "system", "content": "Be terse."},
                                                       {"role": "user", "content": f"Say {i} back."}],
                    reference=f"{i}.") for i in range(8)]
    student = HFQLoRAStudent(HFQLoRAStudent.Options(model="dpokd:tiny", max_new_tokens=8, batch_size=4, epochs=1,
                                                    loss=["sigmoid", "sft"], max_length=64),
                             Context(cache_dir=tmp_path / "cache"))
    student.prepare(chat)
    assert student.chat
    model = student._ensure_model()
    tok = student.tokenizer
    fed = []  # the prompt tokens model.generate was given, padding removed (a record of the call, passed on)
    generate = model.generate

    def recorded(**kwargs):
        fed.extend(row[mask.bool()].tolist() for row, mask in zip(kwargs["input_ids"], kwargs["attention_mask"]))
        return generate(**kwargs)

    model.generate = recorded
    answers = student.generate(chat)
    del model.generate
    seen = fed[0]
    assert len(fed) == len(chat) and seen == student.encode_prompts(chat[:1], tok)[0]
    assert tok.decode(seen).startswith("<|system|>\nBe terse.\n<|user|>\nSay 0 back.\n<|assistant|>\n")
    pairs = [PreferencePair(example_id=e.id, prompt=e.messages, chosen=e.reference, rejected=a.text or "no")
             for e, a in zip(chat, answers)]
    row = json.loads(pairs[0].model_dump_json())
    assert row["prompt"] == chat[0].messages and row["chosen"] == [{"role": "assistant", "content": "0."}]
    assert PreferencePair.model_validate(row).chosen == "0."  # read back as it was written
    student.train_dpo(pairs, tmp_path / "iter_1")
    trained = student.trained_dataset[0]
    assert trained["prompt_ids"] == seen
    assert tok.decode(trained["chosen_ids"]).startswith("0.<|endoftext|>")
    assert model is student.model


def test_messages_to_a_student_without_a_chat_template_are_refused_naming_the_option(tmp_path):
    from dpokd import ConfigError
    from dpokd.records import Example

    chat = [Example(id="c0", prompt="", messages=[{"role": "user", "content": "Hi"}], reference="Hello")]
    student = HFQLoRAStudent(HFQLoRAStudent.Options(model="dpokd:tiny", chat_template=False),
                             Context(cache_dir=tmp_path / "cache"))
    with pytest.raises(ConfigError, match="student.chat_template: the task gives prompts as chat messages \\(first: c0\\)"):
        student.prepare(chat)
