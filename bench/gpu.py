"""The paper's configuration on a GPU, at Phi-2's size (random weights, built here: nothing is downloaded).

- QLoRA DPO steps/s and peak GPU memory at batch size 1 and max_length 1024 (4-bit NF4 with double
  quantization, LoRA r=64 on every linear layer, alpha 16, dropout 0.1, learning rate 1e-4): dpokd's
  ``train_dpo`` vs a plain ``trl.DPOTrainer`` script with the same settings;
- the same with gradient checkpointing, and the plain script with ``use_liger_kernel`` where
  liger-kernel is installed;
- the student's generation tokens/s, ``gen_batch_size`` 16 vs one prompt at a time.

Each measurement runs in a fresh process, so its peak memory is its own, after a short warm-up.
Without CUDA it says so and exits 0. ``--dry-run`` builds the model at a tiny size and takes one
step of every measurement in this process, on whatever device there is: it checks the script, and
its figures mean nothing. Besides torch, transformers and peft it needs dpokd's own dependencies
less litellm: trl, bitsandbytes and datasets (with pyarrow) among them.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Bench  # noqa: E402
from student import PHI2  # noqa: E402

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, vocab_size=1024,
            partial_rotary_factor=0.4, tie_word_embeddings=False)
FULL_SIZES = dict(config=PHI2, max_length=1024, prompt_words=300, answer_words=600, warmup_pairs=3, pairs=20,
                  gen_prompts=32, warmup_prompts=2, max_new_tokens=128, gen_batch=16)
DRY_SIZES = dict(config=TINY, max_length=64, prompt_words=20, answer_words=40, warmup_pairs=0, pairs=1,
                 gen_prompts=2, warmup_prompts=0, max_new_tokens=4, gen_batch=2)
# The reference experiment's student settings (DESIGN.md), one epoch over the measured pairs.
PAPER = dict(lora_r=64, lora_alpha=16, lora_dropout=0.1, learning_rate=1e-4, batch_size=1, epochs=1, loss=["sigmoid"])


def build(directory: Path, config: dict, seed: int = 0) -> None:
    """A byte-level BPE tokenizer and a Phi model of ``config``'s shape with random bf16 weights."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

    eos = "<|endoftext|>"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts(2000, 60, seed), trainer=trainers.BpeTrainer(
        vocab_size=min(config["vocab_size"], 4096), special_tokens=[eos], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=eos, bos_token=eos, unk_token=eos, pad_token=eos)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # random init of 2.8 B weights: seconds on a GPU
    with torch.device(device):
        torch.set_default_dtype(torch.bfloat16)
        model = PhiForCausalLM(PhiConfig(**config, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                                         pad_token_id=tokenizer.eos_token_id))
        torch.set_default_dtype(torch.float32)
    model.save_pretrained(directory)


def texts(n: int, words: int, seed: int) -> list[str]:
    """``n`` texts of ``words`` pseudo-words, drawn from one fixed list the tokenizer is trained on."""
    vocab_rng, rng = random.Random(0), random.Random(seed)
    vocab = ["".join(vocab_rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(vocab_rng.randint(2, 9)))
             for _ in range(3000)]
    return [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(n)]


def pairs(n: int, sizes: dict, seed: int) -> list[dict]:
    prompts = texts(n, sizes["prompt_words"], seed)
    chosen, rejected = texts(n, sizes["answer_words"], seed + 1), texts(n, sizes["answer_words"], seed + 2)
    return [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected)]


# -- workers: each measures one thing and returns a dict ------------------------------------------
def _peak_reset():
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def _student(job: dict, work: Path, **options):
    from dpokd.interfaces import Context
    from dpokd.plugins.students.hf_qlora import HFQLoRAStudent

    sizes = job["sizes"]
    opts = {**PAPER, "max_length": sizes["max_length"], "max_new_tokens": sizes["max_new_tokens"], "seed": 0, **options}
    return HFQLoRAStudent(HFQLoRAStudent.Options(model=job["model"], **opts), Context(cache_dir=work / "cache"))


def train_dpokd(job: dict, work: Path) -> dict:
    from dpokd.records import PreferencePair

    student = _student(job, work, gradient_checkpointing=job["gradient_checkpointing"])
    student._ensure_model()
    data = [PreferencePair(example_id=f"p{i}", **row) for i, row in enumerate(job["pairs"])]
    warmup, measured = data[: job["sizes"]["warmup_pairs"]], data[job["sizes"]["warmup_pairs"] :]
    if warmup:
        student.train_dpo(warmup, work / "warmup")
    _peak_reset()
    start = time.perf_counter()
    steps = student.train_dpo(measured, work / "measured")["steps"]
    return {"steps_per_s": steps / (time.perf_counter() - start), "peak_gb": _peak_gb(), "steps": steps}


def train_plain(job: dict, work: Path) -> dict:
    """The script a user would write with TRL's documented QLoRA recipe, settings as dpokd's."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import DPOConfig, DPOTrainer

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(job["model"], device_map={"": 0} if cuda else "cpu",
                                                 quantization_config=BitsAndBytesConfig(
                                                     load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                     bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype))
    for m in model.modules():  # bitsandbytes' CPU repacking breaks training after a no-grad forward
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=job["gradient_checkpointing"])
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=PAPER["lora_r"], lora_alpha=PAPER["lora_alpha"],
                                             lora_dropout=PAPER["lora_dropout"], target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    tok = AutoTokenizer.from_pretrained(job["model"])

    def trainer(rows: list[dict], name: str) -> DPOTrainer:
        args = DPOConfig(output_dir=str(work / name), per_device_train_batch_size=1, learning_rate=PAPER["learning_rate"],
                         num_train_epochs=1, loss_type=PAPER["loss"], max_length=job["sizes"]["max_length"],
                         gradient_checkpointing=job["gradient_checkpointing"], use_liger_kernel=job["liger"],
                         bf16=dtype == torch.bfloat16, use_cpu=not cuda, save_strategy="no", report_to=[],
                         disable_tqdm=True, seed=0, data_seed=0)
        return DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)

    warmup, measured = job["pairs"][: job["sizes"]["warmup_pairs"]], job["pairs"][job["sizes"]["warmup_pairs"] :]
    if warmup:
        trainer(warmup, "warmup").train()
        if "ref" in model.peft_config:  # the first trainer's copy of the adapter; the next one adds it again
            model.delete_adapter("ref")
        model.set_adapter("default")
    _peak_reset()
    start = time.perf_counter()
    steps = trainer(measured, "measured").train().global_step
    model.save_pretrained(str(work / "measured" / "adapter"))
    return {"steps_per_s": steps / (time.perf_counter() - start), "peak_gb": _peak_gb(), "steps": steps}


def generate(job: dict, work: Path) -> dict:
    from dpokd.records import Example

    sizes = job["sizes"]
    student = _student(job, work, gen_batch_size=job["gen_batch"])
    student._ensure_model()
    warm = [Example(id=f"w{i}", prompt=p) for i, p in enumerate(texts(sizes["warmup_prompts"], 40, 7))]
    if warm:
        student.generate(warm)
    examples = [Example(id=f"g{i}", prompt=p) for i, p in enumerate(texts(sizes["gen_prompts"], 40, 8))]
    _peak_reset()
    start = time.perf_counter()
    answers = student.generate(examples)
    return {"tokens_per_s": sum(a.completion_tokens for a in answers) / (time.perf_counter() - start),
            "peak_gb": _peak_gb()}


WORKERS = {"train_dpokd": train_dpokd, "train_plain": train_plain, "generate": generate}


def measure(job: dict, in_process: bool) -> dict:
    """Run one worker: in a fresh process (its own peak memory), or here for a dry run."""
    with tempfile.TemporaryDirectory() as work:
        if in_process:
            return WORKERS[job["worker"]](job, Path(work))
        out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job), "--work", work],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{job['worker']} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="a tiny model, one step of each measurement, any device")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(WORKERS[job["worker"]](job, args.work)))
        return

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device on this machine, nothing measured (--dry-run checks the script on a CPU)")
        return
    sizes = DRY_SIZES if args.dry_run else FULL_SIZES
    bench = Bench("gpu")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"device: {device}; model: Phi-2's shape{' at a tiny size (dry run)' if args.dry_run else ''}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        build(model, sizes["config"])
        data = pairs(sizes["warmup_pairs"] + sizes["pairs"], sizes, seed=0)
        base = {"model": str(model), "sizes": sizes, "pairs": data, "liger": False}

        def train(worker: str, gradient_checkpointing: bool = False, liger: bool = False) -> dict:
            return measure({**base, "worker": worker, "gradient_checkpointing": gradient_checkpointing, "liger": liger},
                           args.dry_run)

        plain, ours = train("train_plain"), train("train_dpokd")
        report_training(bench, "plain TRL", plain)
        report_training(bench, "dpokd train_dpo", ours, baseline=("plain TRL", plain))
        for worker, label, reference in (("train_plain", "plain TRL", plain), ("train_dpokd", "dpokd train_dpo", ours)):
            report_training(bench, f"{label}, gradient checkpointing", train(worker, gradient_checkpointing=True),
                            baseline=(f"{label} without", reference))
        if importlib.util.find_spec("liger_kernel") is not None:
            report_training(bench, "plain TRL, use_liger_kernel", train("train_plain", liger=True),
                            baseline=("plain TRL without", plain))
        else:
            print("plain TRL, use_liger_kernel: not measured, liger-kernel is not installed")
        rates = {b: measure({**base, "worker": "generate", "gen_batch": b}, args.dry_run)["tokens_per_s"]
                 for b in (1, sizes["gen_batch"])}
        bench.report("generation, one prompt at a time", rates[1], "tokens/s")
        bench.report(f"generation, gen_batch_size {sizes['gen_batch']}", rates[sizes["gen_batch"]], "tokens/s",
                     baseline="one at a time", baseline_value=rates[1])
    print("dry run: figures not saved" if args.dry_run else f"results: {bench.save()}")


def report_training(bench: Bench, label: str, got: dict, baseline: tuple[str, dict] | None = None) -> None:
    name, ref = baseline if baseline else (None, {})
    bench.report(f"{label}: QLoRA DPO steps/s", got["steps_per_s"], "steps/s", baseline=name,
                 baseline_value=ref.get("steps_per_s"))
    if got["peak_gb"] is not None:
        bench.report(f"{label}: peak GPU memory", got["peak_gb"], "GiB", baseline=name, baseline_value=ref.get("peak_gb"),
                     higher_is_better=False)


if __name__ == "__main__":
    main()
