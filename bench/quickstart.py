"""The quickstart as a user runs it: `dpokd run specs/quickstart.toml`, end to end, stage by stage.

Each train stage is compared with a plain script that does the same training steps with
``trl.DPOTrainer`` directly: the same 4-bit model the run built, the same starting adapter (the run's
previous iteration), the same pairs and the same DPO settings, timed over the same work (loading
the starting adapter, preparing the data, training, saving the adapter), on as many threads as
dpokd used. The time over the plain script's is dpokd's overhead. The plain script is also timed
once (in the first run) at torch's default thread count, which is what a script gets unless it says
otherwise.

``--repeat N`` runs everything N times and keeps each figure's best: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Bench  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STAGE_LINE = re.compile(r"^(\S+) done in ([0-9.]+)s$", re.M)
TRAIN_STAGE = re.compile(r"iter_(\d+)/train")
ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

PLAIN_TRL = """
import json, sys, time
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from trl import DPOConfig, DPOTrainer

job = json.loads(sys.argv[1])
if job["threads"]:
    torch.set_num_threads(job["threads"])
path, s = job["model"], job["student"]
model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", quantization_config=BitsAndBytesConfig(
    load_in_4bit=True, bnb_4bit_quant_type=s["quant_type"], bnb_4bit_use_double_quant=s["double_quant"],
    bnb_4bit_compute_dtype=torch.float32))
for m in model.modules():  # bitsandbytes' CPU repacking breaks training after generation (see FACTS)
    if hasattr(m, "support_avx512bf16_for_cpu"):
        m.support_avx512bf16_for_cpu = False
model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=s["gradient_checkpointing"])
tok = AutoTokenizer.from_pretrained(path)
times = {}
for k in job["iterations"]:
    start = time.perf_counter()
    if k == 1:
        torch.manual_seed(job["seed"])
        peft_model = get_peft_model(model, LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
                                                      target_modules=s["target_modules"], task_type="CAUSAL_LM"))
    else:
        peft_model = PeftModel.from_pretrained(model, f"{job['run']}/iter_{k - 1}/adapter", is_trainable=True)
    rows = [json.loads(line) for line in open(f"{job['run']}/iter_{k}/pairs.jsonl")]
    data = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
    args = DPOConfig(output_dir=f"{job['out']}/iter_{k}", per_device_train_batch_size=s["batch_size"],
                     gradient_accumulation_steps=s["grad_accum"], learning_rate=s["learning_rate"],
                     num_train_epochs=s["epochs"], beta=s["beta"], loss_type=s["loss"], loss_weights=s["loss_weights"],
                     max_length=s["max_length"], precompute_ref_log_probs=s["precompute_ref_log_probs"],
                     gradient_checkpointing=s["gradient_checkpointing"], seed=job["seed"], data_seed=job["seed"],
                     use_cpu=True, save_strategy="no", report_to=[], disable_tqdm=True)
    trainer = DPOTrainer(model=peft_model, args=args, train_dataset=data, processing_class=tok)
    trainer.train()
    peft_model.save_pretrained(f"{job['out']}/iter_{k}/adapter")
    times[k] = time.perf_counter() - start
    model = peft_model.unload()  # the bare 4-bit base again, for the next iteration's adapter
print(json.dumps({"threads": torch.get_num_threads(), "times": times}))
"""


def run_quickstart(spec: Path, tmp: Path) -> dict:
    """One `dpokd run` in a fresh directory (fresh cache: the model is built and every answer generated)."""
    shutil.copy(spec, tmp / "quickstart.toml")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "dpokd", "run", "quickstart.toml"], cwd=tmp, capture_output=True, text=True,
                         env={**os.environ, **ENV})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"dpokd run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    board = subprocess.run([sys.executable, "-m", "dpokd", "leaderboard", "runs/quickstart", "--format", "json"], cwd=tmp,
                           capture_output=True, text=True, check=True, env={**os.environ, **ENV})
    rows = {r["system"]: r for r in json.loads(board.stdout)}
    last = max((name for name in rows if name.startswith("student@iter_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "stages": {name: float(s) for name, s in STAGE_LINE.findall(out.stdout + out.stderr)},
            "gain": rows[last]["pass@1"] - rows["student@base"]["pass@1"], "teacher": rows["teacher"]["pass@1"]}


def plain_trl(tmp: Path, iterations: list[int], threads: int | None) -> tuple[dict[int, float], int]:
    """Seconds per iteration of the plain script, and the threads it ran on."""
    from dpokd.spec import load_spec

    parsed = load_spec(tmp / "quickstart.toml")
    run = tmp / parsed.run.output_dir / parsed.name  # relative paths are the run's working directory's
    # The model the run built, as its first adapter records it (relative to the run's working directory).
    model = tmp / json.loads((run / "iter_1" / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    job = {"model": str(model), "run": str(run), "out": str(tmp / f"plain-{threads}"), "iterations": iterations,
           "threads": threads, "seed": parsed.run.seed, "student": parsed.student.options.model_dump(mode="json")}
    out = subprocess.run([sys.executable, "-c", PLAIN_TRL, json.dumps(job)], capture_output=True, text=True,
                         env={**os.environ, **ENV})
    if out.returncode != 0:
        sys.exit(f"plain TRL script failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {int(k): v for k, v in result["times"].items()}, result["threads"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "quickstart.toml")
    parser.add_argument("--repeat", type=int, default=1, help="runs; each figure is the best of them")
    args = parser.parse_args()

    import torch

    bench = Bench("quickstart")
    load = [os.getloadavg()[0]]
    runs, plains, defaults = [], [], []
    default_threads = torch.get_num_threads()
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            runs.append(run_quickstart(args.spec, tmp))
            trained = sorted(int(m.group(1)) for m in map(TRAIN_STAGE.fullmatch, runs[-1]["stages"]) if m)
            # As many threads as dpokd took for this model (one for the tiny one; see hf_qlora's cpu_threads).
            times, threads = plain_trl(tmp, trained, 1)
            plains.append(times)
            if not defaults:  # slow, and only there to show what the thread count does: once
                defaults.append(plain_trl(tmp, trained[:1], None)[0])
            load.append(os.getloadavg()[0])

    best = {"wall": min(r["wall"] for r in runs), "cpu": min(r["cpu"] for r in runs)}
    bench.report("quickstart end to end", best["wall"], "s")
    bench.report("quickstart CPU time (user + system)", best["cpu"], "s")
    stages = {s: min(r["stages"].get(s, float("inf")) for r in runs) for s in runs[0]["stages"]}
    for stage, seconds in stages.items():
        match = TRAIN_STAGE.fullmatch(stage)
        if not match:
            bench.report(f"stage {stage}", seconds, "s")
            continue
        k = int(match.group(1))
        plain = min(p[k] for p in plains)
        bench.report(f"stage {stage}", seconds, "s", baseline=f"plain TRL, {threads} thread(s)", baseline_value=plain,
                     higher_is_better=False)
        bench.report(f"stage {stage} time over plain TRL's", seconds / plain, "x")
    first = defaults[0][1]
    bench.report(f"plain TRL iter_1 train at torch's default {default_threads} threads (first run only)", first, "s")
    bench.report("stage iter_1/train, against torch's default threads", stages["iter_1/train"], "s",
                 baseline=f"plain TRL, {default_threads} threads",
                 baseline_value=first, higher_is_better=False)
    bench.report("held-out pass@1 gain over the base (worst run)", min(r["gain"] for r in runs), "")
    bench.report("teacher pass@1 (worst run)", min(r["teacher"] for r in runs), "")
    bench.report("load average (1 min), highest seen", max(load), "")
    print(f"results: {bench.save()}")


if __name__ == "__main__":
    main()
