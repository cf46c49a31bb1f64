"""Build the ``dpokd:tiny`` model: a small Phi-architecture model and a BPE tokenizer for CPUs.

Both are saved in standard Hugging Face format under the cache's ``models/tiny-<hash>/`` and loaded back
through the same ``from_pretrained`` path as Phi-2, so the CPU runs exercise the real code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

EOS = "<|endoftext|>"
# A small chat template, so prompts given as messages take the same path as on an instruct model: each
# turn under its role's marker, an assistant's turn ended by EOS (what training teaches it to emit).
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
                 "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
TINY_ID = "dpokd:tiny"
LM_HEAD_SCALE = 10.0


PRETRAIN = {"chars": 3_000_000, "length": 128, "batch": 16, "learning_rate": 3e-3}


def python_corpus(chars: int = PRETRAIN["chars"]) -> list[str]:
    """The Python standard library's own source, module by module in name order, up to ``chars``
    characters: generic Python that every machine has offline."""
    import sysconfig

    found, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        found.append(text[: chars - total])
        total += len(found[-1])
        if total >= chars:
            break
    return found


def tiny_recipe(corpus: list[str], *, hidden: int, layers: int, vocab: int, seed: int, pretrain_steps: int = 0) -> dict:
    """Everything the tiny model is built from; its hash names the model's directory."""
    recipe = {"hidden": hidden, "layers": layers, "vocab": vocab, "seed": seed, "version": 5, "lm_head_scale": LM_HEAD_SCALE,
              "corpus": hashlib.sha256("\x00".join(corpus).encode()).hexdigest()}
    if pretrain_steps:
        recipe["pretrain"] = {**PRETRAIN, "steps": pretrain_steps}
        del recipe["lm_head_scale"]
    return recipe


def tiny_dir_name(recipe: dict) -> str:
    return "tiny-" + hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def tiny_model_dir(models_dir: Path, corpus: list[str], *, hidden: int, layers: int, vocab: int, seed: int,
                   pretrain_steps: int = 0) -> Path:
    """Build (once) and return the directory of the tiny model for this corpus and size, in ``models_dir``
    (a context's ``layout.models``). With ``pretrain_steps``, the model is then trained that many steps
    on ``corpus`` as a language model (the tokenizer is always trained on it)."""
    recipe = tiny_recipe(corpus, hidden=hidden, layers=layers, vocab=vocab, seed=seed, pretrain_steps=pretrain_steps)
    directory = Path(models_dir) / tiny_dir_name(recipe)
    if (directory / "config.json").exists():
        return directory
    # Built aside, then renamed into place: a killed build leaves nothing half-written, and ranks
    # launched together (torchrun) each build their own copy; the first rename wins.
    tmp = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
    _build(tmp, corpus, hidden=hidden, layers=layers, vocab=vocab, seed=seed, pretrain_steps=pretrain_steps)
    (tmp / "dpokd_recipe.json").write_text(json.dumps(recipe, indent=2))
    try:
        tmp.rename(directory)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _build(directory: Path, corpus: list[str], *, hidden: int, layers: int, vocab: int, seed: int,
           pretrain_steps: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    # Byte-level BPE with every digit its own token (as LLaMA's tokenizer does): "add_36" and
    # "x + 36" then share the tokens 3 and 6, so copying a number from the prompt is learnable.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus or [""], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)

    torch.manual_seed(seed)
    config = PhiConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 32), max_position_embeddings=1024, partial_rotary_factor=0.5,
        # Phi-2's gelu_new, computed by torch's fused kernel rather than six elementwise operations:
        # the same function, and on a CPU a sixth less time per training step.
        hidden_act="gelu_pytorch_tanh",
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = PhiForCausalLM(config)
    if pretrain_steps:
        curve = pretrain(model, tokenizer, corpus, pretrain_steps)
        (directory / "pretrain.json").write_text(json.dumps({"steps": pretrain_steps, "loss": curve}, indent=2))
        model.save_pretrained(directory)
        return
    # A trained model's output layer spans a wide range of logits; a random one at the usual init
    # (std 0.02) caps the most probable token near 1/vocab whatever the frozen base is taught
    # through LoRA. Scaling it up gives the adapter room to become confident.
    with torch.no_grad():
        model.lm_head.weight.mul_(LM_HEAD_SCALE)
    model.save_pretrained(directory)


def pretrain(model, tokenizer, corpus: list[str], steps: int) -> list[float]:
    """Train ``model`` as a language model on random windows of ``corpus``; the mean loss of each tenth of the steps."""
    import torch

    ids = torch.tensor([t for ids in tokenizer(corpus)["input_ids"] for t in [*ids, tokenizer.eos_token_id]])
    length, batch = PRETRAIN["length"], PRETRAIN["batch"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["learning_rate"], weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50) * (1 - step / steps))
    generator = torch.Generator().manual_seed(0)
    model.train()
    losses: list[float] = []
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - length - 1, (batch,), generator=generator)
        window = torch.stack([ids[s : s + length] for s in starts.tolist()])
        loss = model(input_ids=window, labels=window).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    tenth = max(1, steps // 10)
    return [round(sum(losses[i : i + tenth]) / len(losses[i : i + tenth]), 4) for i in range(0, steps, tenth)]
