"""The hf-qlora student on dpokd:tiny: batched generation, wrapper overhead on DPO, 4-bit memory.

- generation tokens/s, 64 prompts, gen_batch_size 16 vs one prompt at a time;
- DPO steps/s of the student's train_dpo vs a plain script calling trl.DPOTrainer directly with
  the same model, data and settings;
- peak RSS of LoRA training on a 4-bit base vs the same run on an fp32 base.
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
    from dpokd.records import PreferencePair

    s, examples = student(tmp / "models")
    examples = examples[:128]
    pairs = [PreferencePair(example_id=e.id, prompt=e.prompt, chosen=e.reference, rejected="    pass\n") for e in examples]
    data = tmp / "pairs.json"
    data.write_text(json.dumps([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]))
    plain = json.loads(subprocess.run([sys.executable, "-c", PLAIN_TRL, s.model_path, str(data), str(tmp / "plain")],
                                      capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    s._ensure_model()
    # The same imports as the plain script makes before its clock starts.
    from datasets import Dataset  # noqa: F401
    from trl import DPOConfig, DPOTrainer  # noqa: F401

    start = time.perf_counter()
    metrics = s.train_dpo(pairs, tmp / "ours")
    ours = metrics["steps"] / (time.perf_counter() - start)
    bench.report("plain trl.DPOTrainer", plain["steps_per_s"], "steps/s")
    bench.report("dpokd train_dpo", ours, "steps/s", baseline="plain TRL", baseline_value=plain["steps_per_s"])


MEMORY = """
import json, sys, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from student import student
from dpokd.records import PreferencePair
s, examples = student(Path(sys.argv[1]), load_in_4bit=sys.argv[2] == "4bit", tiny_hidden=1536, tiny_layers=8, tiny_vocab=4096)
model = s._ensure_model()
# An fp32 base is read through a memory map of the checkpoint (file pages, which a 4-bit load also
# leaves mapped); copy it into process memory, as a real load onto a device does, then count only
# the process's own memory. The freed loading heap is handed back to the OS first.
import ctypes, gc, torch
with torch.no_grad():
    for p in model.parameters():
        if p.dtype == torch.float32:
            p.data = p.data.clone()
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)
pairs = [PreferencePair(example_id=e.id, prompt=e.prompt, chosen=e.reference, rejected="    pass\\n") for e in examples[:8]]
# Peak memory while training (loading reads the fp32 checkpoint either way, so it is not counted).
def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("RssAnon:"))
peak, done = [rss()], threading.Event()
def sample():
    while not done.is_set():
        peak.append(rss())
        time.sleep(0.005)
thread = threading.Thread(target=sample)
thread.start()
s.train_dpo(pairs, Path(sys.argv[1]) / ("out-" + sys.argv[2]))
done.set()
thread.join()
print(json.dumps({"peak_rss_mb": max(peak) / 2**20}))
"""


def memory(bench: Bench, tmp: Path) -> None:
    student(tmp / "mem", tiny_hidden=1536, tiny_layers=8, tiny_vocab=4096)  # build the model once, here
    peaks = {}
    for kind in ("fp32", "4bit"):
        out = subprocess.run([sys.executable, "-c", MEMORY, str(tmp / "mem"), kind, str(Path(__file__).parent)],
                             capture_output=True, text=True, check=True)
        peaks[kind] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    bench.report("peak RSS in training, fp32 base + LoRA", peaks["fp32"], "MB")
    bench.report("peak RSS in training, 4-bit base + LoRA", peaks["4bit"], "MB", baseline="fp32 base", baseline_value=peaks["fp32"],
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
