"""The hf-qlora student: batched generation and DPO overhead on dpokd:tiny; 4-bit memory at Phi-2's size.

- generation tokens/s, 64 prompts, gen_batch_size 16 vs one prompt at a time;
- DPO steps/s of the student's train_dpo vs a plain script calling trl.DPOTrainer directly with
  the same model, data and settings;
- the resident memory of Phi-2-shaped weights (random values, built here) in 4-bit NF4 with double
  quantization vs bf16, and the LoRA r=64 trainable parameter count at that size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Bench  # noqa: E402

COMMON = dict(model="dpokd:tiny", max_new_tokens=32, epochs=1, batch_size=4, loss=["sigmoid", "sft"], max_length=128)


def student(cache: Path, **options):
    from dpokd.interfaces import Context
    from dpokd.plugins.students.hf_qlora import HFQLoRAStudent
    from dpokd.plugins.tasks.synthetic import SyntheticCodegen

    task = SyntheticCodegen(SyntheticCodegen.Options(n_train=128, n_eval=8))
    s = HFQLoRAStudent(HFQLoRAStudent.Options(**{**COMMON, **options}), Context(cache_dir=cache))
    s.prepare(task.examples("train"))
    return s, task.examples("train")


def generation(bench: Bench, tmp: Path) -> None:
    rates = {}
    for size in (1, 16):
        s, examples = student(tmp / "models", gen_batch_size=size)
        s._ensure_model()
        s.context.cache_dir = tmp / f"gen-{size}"  # a cold response cache for each
        s.context._cache = None
        start = time.perf_counter()
        answers = s.generate(examples[:64])
        rates[size] = sum(a.completion_tokens for a in answers) / (time.perf_counter() - start)
    bench.report("generation, one prompt at a time", rates[1], "tokens/s")
    bench.report("generation, gen_batch_size 16", rates[16], "tokens/s", baseline="one at a time", baseline_value=rates[1])


PLAIN_TRL = """
import json, sys, time, torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from trl import DPOConfig, DPOTrainer
path, pairs = sys.argv[1], json.loads(open(sys.argv[2]).read())
torch.set_num_threads(int(sys.argv[4]))  # as many as the student took, so that only the overhead differs
model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", quantization_config=BitsAndBytesConfig(
    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32))
for m in model.modules():
    if hasattr(m, "support_avx512bf16_for_cpu"):
        m.support_avx512bf16_for_cpu = False
model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
torch.manual_seed(0)
model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.1, target_modules="all-linear", task_type="CAUSAL_LM"))
tok = AutoTokenizer.from_pretrained(path)
args = DPOConfig(output_dir=sys.argv[3], per_device_train_batch_size=4, learning_rate=1e-4, num_train_epochs=1, beta=0.1,
                 loss_type=["sigmoid", "sft"], max_length=128, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                 disable_tqdm=True, seed=0, data_seed=0, optim="adamw_torch", gradient_checkpointing=False)
# Timed like the student's train_dpo: dataset preparation, training, and saving the adapter.
start = time.perf_counter()
trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tok)
result = trainer.train()
model.save_pretrained(sys.argv[3] + "/adapter")
print(json.dumps({"steps_per_s": result.global_step / (time.perf_counter() - start)}))
"""


def training(bench: Bench, tmp: Path) -> None:
    import torch

    from dpokd.records import PreferencePair

    s, examples = student(tmp / "models")
    examples = examples[:128]
    pairs = [PreferencePair(example_id=e.id, prompt=e.prompt, chosen=e.reference, rejected="    pass\n") for e in examples]
    data = tmp / "pairs.json"
    data.write_text(json.dumps([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]))
    s._ensure_model()
    threads = str(torch.get_num_threads())
    plain = json.loads(subprocess.run([sys.executable, "-c", PLAIN_TRL, s.model_path, str(data), str(tmp / "plain"), threads],
                                      capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    # The same imports as the plain script makes before its clock starts.
    from datasets import Dataset  # noqa: F401
    from trl import DPOConfig, DPOTrainer  # noqa: F401

    start = time.perf_counter()
    metrics = s.train_dpo(pairs, tmp / "ours")
    ours = metrics["steps"] / (time.perf_counter() - start)
    bench.report("plain trl.DPOTrainer", plain["steps_per_s"], "steps/s")
    bench.report("dpokd train_dpo", ours, "steps/s", baseline="plain TRL", baseline_value=plain["steps_per_s"])


# Phi-2's shape (microsoft/phi-2's config.json), built locally with random weights: memory does not
# depend on the values, and nothing is downloaded.
PHI2 = dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32, intermediate_size=10240, vocab_size=51200,
            partial_rotary_factor=0.4, tie_word_embeddings=False)

BUILD = """
import sys, torch
from transformers import PhiConfig, PhiForCausalLM
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
PhiForCausalLM(PhiConfig(**eval(sys.argv[2]))).save_pretrained(sys.argv[1])
"""

MEMORY = """
import ctypes, gc, json, sys, torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
# Loaded before the baseline: importing them takes ~170 MB, the libraries' and not the weights'.
import bitsandbytes, peft, transformers.quantizers.quantizer_bnb_4bit
path, kind = sys.argv[1], sys.argv[2]

def rss_anon():
    # Process memory only: file pages a checkpoint's memory map leaves resident are the page cache's.
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("RssAnon:"))

before = rss_anon()
if kind == "bf16":
    model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", dtype=torch.bfloat16)
else:  # what the hf-qlora student asks for: NF4, double quantization
    model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32))
# Weights loaded as they are stored are views of the memory-mapped checkpoint; a load onto a device
# copies them, so copy them into process memory here too.
with torch.no_grad():
    for p in model.parameters():
        if type(p).__name__ != "Params4bit":
            p.data = p.data.clone()
out = {"weights_mb": (rss_anon() - before) / 2**20}
if kind == "4bit":
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.1, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    out["lora_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out["as_trained_mb"] = (rss_anon() - before) / 2**20
print(json.dumps(out))
"""


def memory(bench: Bench, tmp: Path) -> None:
    """Phi-2-shaped weights in 4-bit NF4 with double quantization vs bf16, and its LoRA r=64 size."""
    path = tmp / "phi2-shaped"
    subprocess.run([sys.executable, "-c", BUILD, str(path), repr(PHI2)], check=True, capture_output=True)
    got = {}
    for kind in ("bf16", "4bit"):
        out = subprocess.run([sys.executable, "-c", MEMORY, str(path), kind], capture_output=True, text=True, check=True)
        got[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    bench.report("Phi-2-shaped weights in bf16, resident", got["bf16"]["weights_mb"], "MB")
    bench.report("Phi-2-shaped weights in 4-bit NF4 + double quantization, resident", got["4bit"]["weights_mb"], "MB",
                 baseline="bf16", baseline_value=got["bf16"]["weights_mb"], higher_is_better=False)
    bench.report("4-bit over bf16", got["4bit"]["weights_mb"] / got["bf16"]["weights_mb"], "x")
    bench.report("Phi-2-shaped LoRA r=64 (all linear layers) trainable parameters", got["4bit"]["lora_trainable"], "params")
    bench.report("Phi-2-shaped model as the student trains it (4-bit base, fp32 norms and embeddings, LoRA r=64)",
                 got["4bit"]["as_trained_mb"], "MB", baseline="bf16 weights", baseline_value=got["bf16"]["weights_mb"],
                 higher_is_better=False)


def main() -> None:
    bench = Bench("student")
    with tempfile.TemporaryDirectory() as tmp:
        generation(bench, Path(tmp))
        training(bench, Path(tmp))
        memory(bench, Path(tmp))
    print(f"results: {bench.save()}")


if __name__ == "__main__":
    main()
