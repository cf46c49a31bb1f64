"""``hf-qlora``: any Hugging Face causal LM, loaded in 4-bit NF4, trained with LoRA and TRL's DPO.

The defaults are the reference experiment's: Phi-2, NF4 with double quantization, LoRA r=64,
alpha=16, dropout 0.1, batch size 1, 3 epochs, learning rate 1e-4, AdamW. ``model = "dpokd:tiny"``
builds a small Phi-architecture model for CPUs and loads it through the very same path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

import dpokd
from dpokd import (TENSORBOARD_DIR, Completion, Example, PreferencePair, check_trackers, iteration_run, progress,
                   request_key)

from .generation import clean_generation
from .tiny import TINY_ID, python_corpus, tiny_model_dir
from .vllm_server import VLLMServer

PHI2_4BIT_GB = 2.0
# Below this width a CPU step is many small operations: split across threads, they gain a little on
# an idle machine and lose several times over on a busy one, where each waits for the slowest thread.
SMALL_HIDDEN = 1024
# TRL 1.16's DPO losses (pinned in pyproject.toml): TRL itself checks the name only at the first
# training step, after the teacher was paid.
TRL_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
# Options that change the answers (with the model, its adapter and the seed): the fingerprint's parts.
QUANTIZATION = ("load_in_4bit", "quant_type", "double_quant", "compute_dtype")
SAMPLING = ("max_new_tokens", "temperature", "top_p", "stop")


def _model_path(value: str, info) -> str:
    """A local model path written relative to the spec, made absolute; a hub id (``org/name``) kept.

    A relative value is a local path where it exists beside the spec, or starts with ``./``, ``../``
    or ``~``; otherwise it is a hub id, or a folder under the directory dpokd runs in.
    """
    if value == TINY_ID or os.path.isabs(value):
        return value
    local = dpokd.spec_path(value, info)
    if local.exists() or value.startswith(("./", "../", "~")):
        return str(local.resolve())
    return value


def _adapter_dir(value: Path | None, info) -> Path | None:
    """An adapter path, relative to the spec, that holds saved LoRA weights: checked when the spec is read.

    One that does not exist yet may be made by another spec's run: where the spec is only checked or
    planned (``dpokd validate``, ``dpokd plan``) the loader passes a ``pending`` list in the validation
    context, and the path is noted there instead of refused.
    """
    path = dpokd.spec_path(value, info)
    if path is None or (path / "adapter_model.safetensors").is_file():
        return path
    pending = (info.context or {}).get("pending")
    where = repr(os.path.normpath(path))
    if not path.exists() and pending is not None:
        pending.append(f"{info.field_name}: {where} does not exist yet; `dpokd run` needs it: run the spec that "
                       "trains it first")
        return path
    what = ("does not exist" if not path.exists() else "is not a directory" if not path.is_dir()
            else "holds no adapter_model.safetensors")
    raise ValueError(f"{where} {what}; point it at a trained adapter (a run's iter_K/adapter), "
                     "or run the spec that trains it first")


def _known(what: str, names: list[str], known: list[str]) -> list[str]:
    """``names`` if each is in ``known``; else the first stranger, with the nearest known name."""
    import difflib

    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown {what} {name!r}; {hint}(known: {', '.join(known)})")
    return names


class HFQLoRAStudent(dpokd.Student):
    """A causal LM in 4-bit with a LoRA adapter; DPO through ``trl.DPOTrainer``."""

    name = "hf-qlora"
    trained_pairs: int | None = None  # pairs of the training that made the current adapter, for its card

    class Options(dpokd.Options):
        # A spec keeps these flat ([student] lora_r = 64); they are declared, and listed, by concern.
        # -- the model
        model: Annotated[str, AfterValidator(_model_path)] = dpokd.Field("microsoft/phi-2", description="HF hub id or local path; 'dpokd:tiny' builds a small model for CPUs")
        revision: str | None = dpokd.Field(None, description="hub revision (branch, tag or commit)")
        adapter: Annotated[Path | None, AfterValidator(_adapter_dir)] = dpokd.Field(
            None, description="a trained LoRA adapter (a run's iter_K/adapter) loaded on the model; the student "
            "starts from it, and as a [[systems]] entry it is what is judged")
        # -- 4-bit quantization (bitsandbytes): _quantization_config
        load_in_4bit: bool = dpokd.Field(True, description="load the base in 4-bit with bitsandbytes (QLoRA)")
        quant_type: Literal["nf4", "fp4"] = dpokd.Field("nf4", description="4-bit data type")
        double_quant: bool = dpokd.Field(True, description="quantize the quantization constants too")
        compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = dpokd.Field(
            "auto", description="dtype of 4-bit matmuls; auto: bf16 on a GPU that supports it, fp32 on a CPU")
        # -- the adapter (peft): _lora_config
        lora_r: int = dpokd.Field(64, ge=1, description="LoRA rank")
        lora_alpha: float = dpokd.Field(16, gt=0, description="LoRA scaling numerator")
        lora_dropout: float = dpokd.Field(0.1, ge=0, lt=1, description="dropout on the LoRA path")
        target_modules: str | list[str] = dpokd.Field("all-linear", description="modules to adapt: 'all-linear' or a list of names")
        # -- training (TRL's DPO): _dpo_config
        learning_rate: float = dpokd.Field(1e-4, gt=0, description="AdamW learning rate")
        epochs: float = dpokd.Field(3, gt=0, description="passes over each iteration's pairs")
        batch_size: int = dpokd.Field(1, ge=1, description="pairs per device per step")
        grad_accum: int = dpokd.Field(1, ge=1, description="gradient accumulation steps")
        beta: float = dpokd.Field(0.1, gt=0, description="DPO temperature: strength of the pull to the reference")
        loss: list[str] = dpokd.Field(["sigmoid"], min_length=1, description="TRL loss types, e.g. ['sigmoid', 'sft']")
        loss_weights: list[float] | None = dpokd.Field(None, description="one weight per loss type")
        max_length: int | None = dpokd.Field(1024, ge=8, description="longest prompt+answer in tokens (truncated)")
        gradient_checkpointing: bool = dpokd.Field(False, description="trade compute for memory in training")
        cpu_threads: int | None = dpokd.Field(
            None, ge=1, description="threads torch uses on a CPU; default: 1 for a model narrower than "
            f"{SMALL_HIDDEN} (2 threads train the quickstart a sixth faster on an idle 2-core machine, 5 times slower "
            "on a busy one), else torch's default or OMP_NUM_THREADS")
        precompute_ref_log_probs: bool = dpokd.Field(False, description="compute reference log-probs once before training")
        report_to: list[str] = dpokd.Field([], description="experiment trackers for the training curves and judge scores "
                                           "(TRL's report_to): 'tensorboard', 'wandb', 'trackio', ...; default none")
        chat_template: Literal["auto"] | bool = dpokd.Field(
            "auto", description="prompt through the tokenizer's chat template, in generation and training alike: "
            "'auto' where the tokenizer has one; prompts given as chat messages need one")
        # -- generation
        max_new_tokens: int = dpokd.Field(256, ge=1, description="most tokens per generated answer")
        temperature: float = dpokd.Field(0.0, ge=0, description="sampling temperature; 0 means greedy")
        top_p: float = dpokd.Field(1.0, gt=0, le=1, description="nucleus sampling mass")
        stop: list[str] = dpokd.Field([], description="stop strings: an answer ends before the first")
        gen_batch_size: int = dpokd.Field(8, ge=1, description="prompts per generation batch")
        generation: Literal["transformers", "vllm"] = dpokd.Field(
            "transformers", description="where the student generates: in this process, or on a vLLM server "
            "(vllm_url, or one started here where vLLM is installed) with each adapter loaded at runtime")
        # -- generation on a vLLM server (vllm_server.py)
        vllm_url: str | None = dpokd.Field(None, description="base URL of a running vLLM server for generation = "
                                           "'vllm', e.g. http://gpu-box:8000/v1; unset: start one here")
        vllm_gpu_memory: float = dpokd.Field(0.3, gt=0, lt=1, description="share of GPU memory a vLLM server "
                                             "started here may take; training keeps the rest")
        vllm_max_concurrency: int = dpokd.Field(64, ge=1, description="generation requests in flight on the vLLM server")
        vllm_timeout: float = dpokd.Field(600.0, gt=0, description="seconds before one vLLM request is retried")
        vllm_start_timeout: float = dpokd.Field(900.0, gt=0, description="seconds a vLLM server started here may take to serve")
        # -- reproducibility, and the dpokd:tiny model
        seed: int | None = dpokd.Field(None, ge=0, le=2**32 - 1,  # numpy's range: training seeds it
                                       description="seed for generation and training; default: [run] seed")
        tiny_hidden: int = dpokd.Field(128, ge=32, description="dpokd:tiny hidden size (a multiple of 64)")
        tiny_layers: int = dpokd.Field(2, ge=1, description="dpokd:tiny layers")
        tiny_vocab: int = dpokd.Field(512, ge=260, description="dpokd:tiny BPE vocabulary size")
        tiny_pretrain_steps: int = dpokd.Field(
            0, ge=0, description="dpokd:tiny: steps of language-model pretraining on the Python standard library's "
            "source, so the base already writes Python (built once, with its own seed, and kept in cache_dir); "
            "0: random weights and a tokenizer trained on the task's text")

        @dpokd.field_validator("tiny_hidden")
        @classmethod
        def _blocks(cls, v: int) -> int:
            if v % 64:
                raise ValueError(f"must be a multiple of 64 (4-bit blocks), got {v}")
            return v

        @dpokd.field_validator("loss")
        @classmethod
        def _known_losses(cls, v: list[str]) -> list[str]:
            return _known("TRL loss type", v, TRL_LOSSES)

        @dpokd.field_validator("report_to")
        @classmethod
        def _known_trackers(cls, v: list[str]) -> list[str]:
            return _known("tracker", v, list(dpokd.TRACKERS))

        @dpokd.field_validator("loss_weights")
        @classmethod
        def _weights(cls, v, info):
            if v is not None and len(v) != len(info.data.get("loss", [])):
                raise ValueError(f"needs one weight per `loss` entry ({info.data.get('loss')}), got {v}")
            return v

    def __init__(self, options=None, context=None):
        super().__init__(options, context)
        self.model = None
        self.tokenizer = None
        self.model_path: str | None = None if self.options.model == TINY_ID else self.options.model
        self.adapter_hash: str | None = None  # None: the base model, adapter disabled
        self.adapter_dir: Path | None = None  # where the current adapter is saved, if it is
        self.trained_steps = 0
        self._vllm = None
        self.chat: bool | None = None  # prompts through the chat template: known once the tokenizer is
        self._prompt_tokenizer = None  # the tokenizer alone, where generation happens on a vLLM server

    # -- set-up ----------------------------------------------------------------------------------
    def prepare(self, examples: list[Example]) -> None:
        _quiet_libraries()
        if self.options.model == TINY_ID and self.model_path is None:
            self.model_path = str(self._tiny_dir(examples))
        tok = self._tokenizer_alone()
        self.chat = self._uses_chat(tok, examples)
        if self.options.max_length is not None and examples:
            self._check_max_length(tok, examples)
        if self.options.target_modules != "all-linear":
            self._check_target_modules()

    def _tiny_dir(self, examples: list[Example]) -> Path:
        """The dpokd:tiny model: from the task's text, or pretrained on the standard library (one model for
        every task and seed, as a hub model would be, so seed groups differ only in the adapter)."""
        if self.options.tiny_pretrain_steps:
            self.context.log(f"dpokd:tiny: pretrained on the Python standard library "
                             f"({self.options.tiny_pretrain_steps} steps, once)")
        corpus, build = self.tiny_build(examples)
        return tiny_model_dir(self.context.layout.models, corpus, **build)

    def tiny_build(self, examples: list[Example]) -> tuple[list[str], dict[str, int]]:
        """The dpokd:tiny model's corpus and its build's arguments (``tiny_model_dir``'s)."""
        o = self.options
        sizes = {"hidden": o.tiny_hidden, "layers": o.tiny_layers, "vocab": o.tiny_vocab}
        if o.tiny_pretrain_steps:
            return python_corpus(), {**sizes, "seed": 0, "pretrain_steps": o.tiny_pretrain_steps}
        corpus = [e.prompt for e in examples] + [e.reference or "" for e in examples]
        return corpus, {**sizes, "seed": self.seed}

    def _check_target_modules(self) -> None:
        """peft refuses modules the model lacks only when the model loads, in the student's first
        stage; an empty copy of the model on the meta device finds that out now, in a second."""
        import torch
        from peft import get_peft_model
        from transformers import AutoConfig, AutoModelForCausalLM

        o = self.options
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(self.model_path, revision=o.revision))
        try:
            get_peft_model(skeleton, _lora_config(o))
        except ValueError as exc:
            raise dpokd.ConfigError(f"{self.field}.target_modules: {str(exc).splitlines()[0][:300]}") from None

    def _tokenizer_alone(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.model_path, revision=self.options.revision)
        except Exception as exc:
            raise dpokd.ConfigError(f"{self.field}.model: cannot load the tokenizer of {self.options.model!r}: "
                                    f"{str(exc).splitlines()[0][:200]}") from None

    def _uses_chat(self, tok, examples: list[Example]) -> bool:
        """Whether prompts go through the chat template; checked here, before the teacher is asked."""
        has, wanted = bool(getattr(tok, "chat_template", None)), self.options.chat_template
        if wanted is True and not has:
            raise dpokd.ConfigError(f"{self.field}.chat_template: true, but the tokenizer of {self.options.model!r} "
                                    "has no chat template")
        chat = has and wanted is not False
        given = next((e.id for e in examples if e.messages), None)
        if given is not None and not chat:
            why = "is set to false" if has else f"cannot be used: the tokenizer of {self.options.model!r} has none"
            raise dpokd.ConfigError(f"{self.field}.chat_template: the task gives prompts as chat messages (first: "
                                    f"{given}), and the student's chat template {why}; use an instruct model")
        return chat

    def tokenizer_for_prompts(self):
        """The tokenizer that renders prompts, without loading the model (generation on a vLLM server)."""
        if self.tokenizer is not None:
            return self.tokenizer
        if self._prompt_tokenizer is None:
            self._prompt_tokenizer = self._tokenizer_alone()
        if self.chat is None:
            self.chat = self._uses_chat(self._prompt_tokenizer, [])
        return self._prompt_tokenizer

    def conversation(self, example: Example) -> list[dict[str, str]]:
        return example.messages or [{"role": "user", "content": example.prompt}]

    def prompt_text(self, example: Example, tok) -> str:
        """The prompt as the model reads it: through the chat template (as TRL renders a conversational
        pair's prompt) where one is used, else as it is."""
        if not self.chat:
            return example.prompt
        return tok.apply_chat_template(self.conversation(example), tokenize=False, add_generation_prompt=True)

    def _answered(self, example: Example, prompt: str, text: str, tok) -> str:
        """The prompt followed by an answer, as training sees a chosen answer: rendered by the chat
        template as an assistant turn (as TRL renders a conversational pair), else followed by EOS."""
        if not self.chat:
            return prompt + text + tok.eos_token
        turns = self.conversation(example) + [{"role": "assistant", "content": text}]
        return tok.apply_chat_template(turns, tokenize=False)

    def encode_prompts(self, examples: list[Example], tok) -> list[list[int]]:
        """Each prompt's tokens as generation feeds them: a chat template brings its own special tokens."""
        texts = [self.prompt_text(e, tok) for e in examples]
        return tok(texts, add_special_tokens=not self.chat)["input_ids"]

    def _check_max_length(self, tok, examples: list[Example]) -> None:
        """TRL drops each pair whose prompt alone fills ``max_length``; with none left, training
        fails after the teacher was paid. Refuse that here, once the tokenizer is known."""
        o = self.options
        lengths = [len(ids) for ids in self.encode_prompts(examples, tok)]
        too_long = sum(n >= o.max_length for n in lengths)
        if too_long == len(lengths):
            raise dpokd.ConfigError(
                f"{self.field}.max_length: {o.max_length} tokens leave no room for an answer after any train prompt "
                f"(prompts are {min(lengths)} to {max(lengths)} tokens); raise it, e.g. to {max(lengths) + o.max_new_tokens}, "
                "or remove it")
        if too_long:
            self.context.log(f"[yellow]warning:[/] student.max_length: {too_long} of {len(lengths)} train prompts fill "
                             f"{o.max_length} tokens; their pairs are left out of training")

    def preflight(self) -> None:
        """Check the model can be used before any teacher spend: config reachable, memory enough."""
        o = self.options
        _quiet_libraries()
        check_trackers(o.report_to)
        if o.load_in_4bit:
            try:
                import bitsandbytes  # noqa: F401
            except Exception as exc:
                raise dpokd.ConfigError(f"{self.field}.load_in_4bit: bitsandbytes cannot load here ({exc}); "
                                        "`pip install bitsandbytes`, or set load_in_4bit = false") from None
        if o.generation == "vllm":
            self.vllm().preflight()
        if o.model == TINY_ID:
            return
        config = self._config()
        _warn_if_too_large(config, o, self.context)

    def _config(self):
        from transformers import AutoConfig

        o = self.options
        path = Path(o.model)
        if (o.model.startswith((".", "/", "~")) or path.exists()) and not (path / "config.json").exists():
            raise dpokd.ConfigError(f"{self.field}.model: {o.model!r} is a local path without a config.json; "
                                    "point it at a directory saved with save_pretrained")
        try:
            return AutoConfig.from_pretrained(o.model, revision=o.revision)
        except Exception as exc:  # OSError for unknown ids, offline hubs; ValueError for unknown architectures
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            why = "the hub is not reachable (HF_HUB_OFFLINE=1) and it is not in the local HF cache" if offline else str(exc).splitlines()[0]
            revision = f" --revision {o.revision}" if o.revision else ""
            raise dpokd.ConfigError(f"{self.field}.model: cannot load {o.model!r}: {why}. Use a local directory, "
                                    f"download it first (`hf download {o.model}{revision}`, the huggingface_hub "
                                    "command line), or try model = 'dpokd:tiny'") from None

    def _ensure_model(self):
        if self.model is not None:
            return self.model
        import torch
        from peft import get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, AutoTokenizer

        o = self.options
        if self.model_path is None:
            raise dpokd.ConfigError("student.model: dpokd:tiny is built from the task's text; call prepare(examples) first")
        hidden = o.tiny_hidden if o.model == TINY_ID else getattr(self._config(), "hidden_size", 0)
        cuda = torch.cuda.is_available()
        if not cuda:
            _set_cpu_threads(o.cpu_threads, hidden)
        dtype = _compute_dtype(o.compute_dtype, cuda)
        kwargs: dict[str, Any] = {"revision": o.revision, "device_map": {"": 0} if cuda else "cpu"}
        quantization = _quantization_config(o, dtype)
        if quantization is not None:
            kwargs["quantization_config"] = quantization
        else:
            kwargs["dtype"] = dtype
        model = AutoModelForCausalLM.from_pretrained(self.model_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(self.model_path, revision=o.revision)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        _disable_cpu_repacking(model)
        if o.load_in_4bit:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=o.gradient_checkpointing)
        torch.manual_seed(self.seed)
        self.model = get_peft_model(model, _lora_config(o))
        self.tokenizer = tokenizer
        if self.chat is None:  # a student judged as a system is not prepared on a task's examples
            self.chat = self._uses_chat(tokenizer, [])
        return self.model

    # -- identity and persistence -----------------------------------------------------------------
    def fingerprint(self) -> str:
        o = self.options
        gen = {**{k: getattr(o, k) for k in SAMPLING}, "seed": self.seed}
        if o.generation != "transformers":
            gen["backend"] = o.generation
        base = self.model_path if o.model == TINY_ID else o.model
        if o.model == TINY_ID:
            base = f"{TINY_ID}:{Path(base).name}" if base else TINY_ID
        quant = {k: getattr(o, k) for k in QUANTIZATION}
        blob = json.dumps({"model": base, "revision": o.revision, "adapter": self.adapter_hash, "gen": gen,
                           "quant": quant}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def _hash_adapter(self) -> str:
        from peft import get_peft_model_state_dict

        digest = hashlib.sha256()
        for name, tensor in sorted(get_peft_model_state_dict(self.model).items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:20]

    def save(self, directory: Path) -> None:
        """The adapter in standard PEFT format: ``PeftModel.from_pretrained(base, directory)`` loads it."""
        self._ensure_model().save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))
        dpokd.write_adapter_card(Path(directory), self.options.model_dump(mode="json"), pairs=self.trained_pairs,
                           run_dir=self.context.run_dir)

    def load(self, directory: Path | None) -> None:
        """``None`` returns to the starting point: the ``adapter`` option's adapter, else the bare base."""
        model = self._ensure_model()
        if directory is None and self.options.adapter is not None:
            # An adapter a spec points at: a run's iter_K/adapter carries the checksums its training recorded.
            dpokd.verify_checksums(self.options.adapter, "its train stage saved it")
        directory = directory if directory is not None else self.options.adapter
        self.trained_pairs = None  # a loaded adapter's pairs are told by its own card
        if directory is None:
            self.adapter_hash = self.adapter_dir = None
            return
        from peft import set_peft_model_state_dict

        path = Path(directory) / "adapter_model.safetensors"
        weights = read_adapter(path)
        try:
            set_peft_model_state_dict(model, weights)
        except RuntimeError as exc:  # a tensor of the wrong shape: another model's adapter
            raise dpokd.DpokdError(f"{path}: does not fit this student ({str(exc).splitlines()[0][:200]}); "
                                   f"{_RETRAIN}") from None
        self.adapter_hash = self._hash_adapter()
        self.adapter_dir = Path(directory)

    def unload(self) -> None:
        """Drop the model (another student loads next); the next call loads it again, as the base."""
        if self.model is None:
            return
        import gc

        import torch

        self.model = self.tokenizer = None
        self.adapter_hash = self.adapter_dir = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def checkpoint(self, adapter: Path | None) -> dpokd.Checkpoint:
        """The base as stored and the adapter's folder, identified by the adapter file's checksum."""
        o = self.options
        if self.model_path is None:
            raise dpokd.ConfigError(f"{self.field}.model: dpokd:tiny is built from the task's text; call prepare(examples) first")
        if adapter is None and o.adapter is not None:
            dpokd.verify_checksums(o.adapter, "its train stage saved it")
        adapter = adapter if adapter is not None else o.adapter
        local = Path(self.model_path).expanduser()
        model = str(local.resolve()) if local.exists() else self.model_path
        base = f"{TINY_ID}:{local.name}" if o.model == TINY_ID else model
        weights = None
        if adapter is not None:
            with open(Path(adapter) / "adapter_model.safetensors", "rb") as fh:
                weights = hashlib.file_digest(fh, "sha256").hexdigest()
        identity = json.dumps({"model": base, "revision": o.revision, "adapter": weights}, sort_keys=True)
        return dpokd.Checkpoint(model=model, adapter=None if adapter is None else Path(adapter).resolve(),
                                revision=o.revision, identity=hashlib.sha256(identity.encode()).hexdigest()[:20])

    def adapter_path(self) -> Path:
        """The current adapter on disk, saved under ``cache_dir/adapters/`` if it is not yet."""
        if self.adapter_dir is not None and (self.adapter_dir / "adapter_model.safetensors").exists():
            return self.adapter_dir.resolve()
        directory = (self.context.layout.adapters / str(self.adapter_hash)).resolve()
        if not (directory / "adapter_model.safetensors").exists():
            self.save(directory)
        self.adapter_dir = directory
        return directory

    def vllm(self):
        """The vLLM server this student generates on (generation = 'vllm')."""
        if self._vllm is None:
            self._vllm = VLLMServer(self)
        return self._vllm

    def _adapter_context(self):
        return self.model.disable_adapter() if self.adapter_hash is None else contextlib.nullcontext()

    # -- generation -------------------------------------------------------------------------------
    def generate(self, examples: list[Example]) -> list[Completion]:
        if self.options.generation == "vllm":
            return self.vllm().generate(examples)
        cache = self.context.cache
        keys = [request_key(self._request(e)) for e in examples]
        results: dict[int, Completion] = {}
        for i, key in enumerate(keys):
            hit = cache.get(key)
            if hit is not None:
                results[i] = Completion.of(examples[i], hit["text"], finish_reason=hit.get("finish_reason"),
                                           model=f"student:{self.fingerprint()}", completion_tokens=hit.get("completion_tokens", 0),
                                           cached=True)
        todo = [i for i in range(len(examples)) if i not in results]
        if todo:
            self._ensure_model()
        size = self.options.gen_batch_size
        # One batch holds one (temperature, sample) setting; longest prompts first, since batches of
        # similar length waste less padding.
        todo.sort(key=lambda i: (self._temperature(examples[i]), examples[i].sample, -len(examples[i].prompt)))
        batches, current = [], []
        for i in todo:
            if current and (len(current) == size or self._setting(examples[current[0]]) != self._setting(examples[i])):
                batches.append(current)
                current = []
            current.append(i)
        batches += [current] if current else []
        with progress(self.context, "student generates", len(todo)) as advance:
            for batch in batches:
                first = examples[batch[0]]
                texts, lengths, reasons = self._generate_batch([examples[i] for i in batch],
                                                               self._temperature(first), self.seed + first.sample)
                for i, text, n, reason in zip(batch, texts, lengths, reasons):
                    cache.put(keys[i], {"text": text, "finish_reason": reason, "completion_tokens": n})
                    results[i] = Completion.of(examples[i], text, finish_reason=reason, completion_tokens=n,
                                               model=f"student:{self.fingerprint()}")
                advance(len(batch))
        return [results[i] for i in range(len(examples))]

    def _temperature(self, example: Example) -> float:
        return self.options.temperature if example.temperature is None else example.temperature

    def _setting(self, example: Example) -> tuple[float, int]:
        return self._temperature(example), example.sample

    def _request(self, example: Example) -> dict[str, Any]:
        request = {"kind": "student", "fingerprint": self.fingerprint(), "prompt": example.prompt}
        if example.messages:
            request["messages"] = example.messages
        if self.options.chat_template != "auto":
            request["chat_template"] = self.options.chat_template
        if example.sample:
            request["sample"] = example.sample
        if example.temperature is not None:
            request["temperature"] = example.temperature
        return request

    def _generate_batch(self, examples: list[Example], temperature: float,
                        seed: int) -> tuple[list[str], list[int], list[str]]:
        import torch

        o, model, tok = self.options, self.model, self.tokenizer
        tok.padding_side = "left"
        prompts = [self.prompt_text(e, tok) for e in examples]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=not self.chat).to(model.device)
        torch.manual_seed(seed)
        kwargs: dict[str, Any] = dict(max_new_tokens=o.max_new_tokens, pad_token_id=tok.pad_token_id,
                                      eos_token_id=tok.eos_token_id)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=o.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if o.stop:
            kwargs.update(stop_strings=o.stop, tokenizer=tok)
        model.eval()
        with torch.no_grad(), self._adapter_context():
            out = model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        texts, lengths, reasons = [], [], []
        for prompt, row in zip(prompts, new):
            ids = row.tolist()
            ended = tok.eos_token_id in ids
            if ended:
                ids = ids[: ids.index(tok.eos_token_id)]
            text = tok.decode(ids, skip_special_tokens=True)
            text, stopped = clean_generation(text, prompt, o.stop)
            texts.append(text)
            lengths.append(len(ids))
            reasons.append("stop" if ended or stopped else "length")
        return texts, lengths, reasons

    # -- likelihood -------------------------------------------------------------------------------
    def logprob(self, examples: list[Example], texts: list[str]) -> list[float]:
        """Mean per-token NLL of each text after its prompt (EOS included, as in training)."""
        import torch

        model = self._ensure_model()
        tok = self.tokenizer
        out: list[float] = []
        model.eval()
        for start in range(0, len(examples), self.options.gen_batch_size):
            batch = list(zip(examples, texts))[start : start + self.options.gen_batch_size]
            rows, labels = [], []
            for example, text in batch:
                prompt = self.prompt_text(example, tok)
                prompt_ids = tok(prompt, add_special_tokens=not self.chat)["input_ids"]
                full = tok(self._answered(example, prompt, text, tok), add_special_tokens=not self.chat)["input_ids"]
                cut = _common_prefix(prompt_ids, full)
                rows.append(full)
                labels.append([-100] * cut + full[cut:])
            width = max(map(len, rows))
            ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows], device=model.device)
            lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels], device=model.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=model.device)
            with torch.no_grad(), self._adapter_context():
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = lab[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
            valid = (target != -100).float()
            out += ((nll * valid).sum(1) / valid.sum(1).clamp(min=1)).tolist()
        return out

    # -- training ---------------------------------------------------------------------------------
    def train_dpo(self, pairs: list[PreferencePair], output_dir: Path) -> dict[str, Any]:
        from datasets import Dataset
        from datasets.utils.logging import disable_progress_bar
        from transformers.trainer_callback import PrinterCallback
        from trl import DPOTrainer

        disable_progress_bar()

        o = self.options
        model = self._ensure_model()
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        if self.adapter_hash is None and self.trained_steps:
            raise RuntimeError("train_dpo after load(None) would discard the trained adapter")
        dataset = Dataset.from_list([self._trl_row(p) for p in pairs])
        check_trackers(o.report_to)
        group, run_name = iteration_run(output_dir, self.context.run_dir)
        config = _dpo_config(o, output_dir / "trainer", seed=self.seed, group=group, run_name=run_name)
        step_log = StepLog(self.context, output_dir / "train_log.jsonl")
        model.train()
        with _env(TQDM_DISABLE="1"):  # precompute_ref_log_probs draws a bar of its own, ignoring disable_tqdm
            trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=self.tokenizer,
                                 callbacks=[step_log])
        trainer.remove_callback(PrinterCallback)  # metrics go to train_log.jsonl, not stdout
        self.trained_dataset = trainer.train_dataset  # the tokens trained on, for a look afterwards
        _place_trackers(trainer, output_dir / TENSORBOARD_DIR)
        result = self._run_trainer(trainer, group)
        return self._trained(trainer, result, len(pairs), step_log.steps, output_dir)

    def _trl_row(self, pair: PreferencePair) -> dict[str, Any]:
        """A pair as TRL takes it: conversational where the chat template is used (TRL renders it as
        generation did), plain text otherwise."""
        if not self.chat:
            return {"prompt": pair.text_prompt, "chosen": pair.chosen, "rejected": pair.rejected}
        prompt = pair.prompt if isinstance(pair.prompt, list) else [{"role": "user", "content": pair.prompt}]
        return {"prompt": prompt, "chosen": [{"role": "assistant", "content": pair.chosen}],
                "rejected": [{"role": "assistant", "content": pair.rejected}]}

    def _run_trainer(self, trainer, group: str):
        try:
            with _env(WANDB_RUN_GROUP=group if "wandb" in self.options.report_to else None):
                return trainer.train()
        finally:
            # TRL copies the adapter into a frozen "ref" adapter; a second trainer on this model needs it gone.
            if "ref" in self.model.peft_config:
                self.model.delete_adapter("ref")
            self.model.set_adapter("default")

    def _trained(self, trainer, result, n_pairs: int, steps: list[dict[str, float]], output_dir: Path) -> dict[str, Any]:
        """Record the new adapter (saved by the main process) and summarize the training."""
        self.trained_steps += result.global_step
        self.adapter_hash = self._hash_adapter()
        self.adapter_dir = None
        self.trained_pairs = n_pairs
        if trainer.is_world_process_zero():
            self.save(output_dir / "adapter")
            self.adapter_dir = output_dir / "adapter"
        summary = summarize(steps, result.global_step, n_pairs)
        # Under torchrun each rank trains on its shard: what this process itself saw.
        summary["pairs_seen"] = result.global_step * self.options.batch_size * self.options.grad_accum
        summary["saved_adapter"] = trainer.is_world_process_zero()
        return summary


def _quantization_config(o, compute_dtype):
    """bitsandbytes' config for the base model's 4-bit weights, or None when it loads unquantized."""
    if not o.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=o.quant_type,
                              bnb_4bit_use_double_quant=o.double_quant, bnb_4bit_compute_dtype=compute_dtype)


def _lora_config(o):
    """peft's config of the adapter the student trains."""
    from peft import LoraConfig

    return LoraConfig(r=o.lora_r, lora_alpha=o.lora_alpha, lora_dropout=o.lora_dropout,
                      target_modules=o.target_modules, task_type="CAUSAL_LM")


def _dpo_config(o, output_dir: Path, *, seed: int, group: str, run_name: str):
    """TRL's config of one DPO training: one iteration's pairs, logged every step, saved by dpokd."""
    import torch
    from trl import DPOConfig

    cuda = torch.cuda.is_available()
    return DPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=o.batch_size,
        gradient_accumulation_steps=o.grad_accum, learning_rate=o.learning_rate, num_train_epochs=o.epochs,
        beta=o.beta, loss_type=list(o.loss), loss_weights=o.loss_weights, max_length=o.max_length,
        gradient_checkpointing=o.gradient_checkpointing, precompute_ref_log_probs=o.precompute_ref_log_probs,
        optim="adamw_torch", seed=seed, data_seed=seed, logging_steps=1, save_strategy="no",
        report_to=list(o.report_to), run_name=run_name, project=group,
        use_cpu=not cuda, bf16=_compute_dtype(o.compute_dtype, cuda) == torch.bfloat16,
        disable_tqdm=True, dataloader_num_workers=0,
    )


class StepLog:
    """Per-step metrics to ``train_log.jsonl``, and a progress bar over the steps.

    A transformers ``TrainerCallback`` by its protocol: the trainer calls each ``on_*`` event by
    name, and an event this class does not define does nothing. Subclassing ``TrainerCallback``
    would import transformers with this module, which ``dpokd plugins`` loads.
    """

    def __init__(self, context: dpokd.Context, path: Path):
        self.context = context
        self.path = path
        self.steps: list[dict[str, float]] = []
        self._bar = contextlib.ExitStack()  # the progress bar, open from the first step to the last
        self._advance = None

    def __getattr__(self, name: str):
        if name.startswith("on_"):
            return _no_event
        raise AttributeError(name)

    def on_train_begin(self, args, state, control, **kwargs):
        total = state.max_steps if state.is_world_process_zero else 0
        self._advance = self._bar.enter_context(progress(self.context, "DPO training", total))

    def on_step_end(self, args, state, control, **kwargs):
        self._advance(1)

    def on_train_end(self, args, state, control, **kwargs):
        self._bar.close()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and state.is_world_process_zero:
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            self.steps.append(row)
            with open(self.path, "a") as fh:
                fh.write(json.dumps(row) + "\n")


def _no_event(*args, **kwargs) -> None:
    return None


_RETRAIN = "train it again (in a run: re-run the spec with --fresh; answers come from the cache)"


def read_adapter(path: Path) -> dict[str, Any]:
    """An adapter's tensors, refused when the file is missing, cut short or holds non-finite values.

    Damaged weights otherwise load silently and every score built on them is NaN.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise dpokd.DpokdError(f"{path}: the adapter's weights are missing; {_RETRAIN}")
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise dpokd.DpokdError(f"{path}: cannot read the adapter ({str(exc).splitlines()[0][:200]}); it may be "
                               f"cut short: {_RETRAIN}") from None
    bad = [name for name, tensor in weights.items() if not torch.isfinite(tensor).all()]
    if bad:
        raise dpokd.DpokdError(f"{path}: {len(bad)} of {len(weights)} adapter tensors hold NaN or infinite values "
                               f"(first: {bad[0]}); the file is damaged: {_RETRAIN}")
    return weights


def summarize(steps: list[dict[str, float]], global_step: int, n_pairs: int) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        values = [s[key] for s in steps if key in s]
        return sum(values) / len(values) if values else None

    last = steps[-1] if steps else {}
    return {"pairs": n_pairs, "steps": global_step, "loss": mean("loss"), "final_loss": last.get("loss"),
            "rewards/margins": mean("rewards/margins"), "rewards/accuracies": mean("rewards/accuracies"),
            "rewards/chosen": mean("rewards/chosen"), "rewards/rejected": mean("rewards/rejected")}


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _compute_dtype(name: str, cuda: bool):
    import torch

    if name == "auto":
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def _set_cpu_threads(wanted: int | None, hidden: int) -> None:
    import torch

    if wanted is None:
        if hidden >= SMALL_HIDDEN or os.environ.get("OMP_NUM_THREADS"):
            return
        wanted = 1
    torch.set_num_threads(wanted)


def _quiet_libraries() -> None:
    """Keep the libraries' harmless chatter (deprecations, weight-loading bars, bitsandbytes asking
    for the optional `kernels` package) out of the run's output."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)\.")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _place_trackers(trainer, tensorboard_dir: Path) -> None:
    """TensorBoard's events go to ``tensorboard_dir`` (transformers' default is a dated folder under
    the trainer's output), emptied first so a retried iteration does not show the failed attempt."""
    import shutil

    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            shutil.rmtree(tensorboard_dir, ignore_errors=True)
            callback.logging_dir = str(tensorboard_dir)


@contextlib.contextmanager
def _env(**values: str | None):
    """Set environment variables for the block (wandb reads its run group from one)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _disable_cpu_repacking(model) -> None:
    """bitsandbytes repacks 4-bit weights for AVX512-BF16 inference on the first no-grad forward,
    after which a training step fails ("a view of a leaf Variable ..."). Generate-then-train is the
    online loop, so the repacking is switched off on every Linear4bit before any forward."""
    try:
        from bitsandbytes.nn import Linear4bit
    except Exception:
        return
    for module in model.modules():
        if isinstance(module, Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _warn_if_too_large(config, options, context) -> None:
    import psutil

    hidden = getattr(config, "hidden_size", 0)
    layers = getattr(config, "num_hidden_layers", 0)
    inter = getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden
    vocab = getattr(config, "vocab_size", 0)
    params = layers * (4 * hidden * hidden + 2 * hidden * inter) + 2 * vocab * hidden
    bytes_per = 0.55 if options.load_in_4bit else 4.0
    need_gb = params * bytes_per / 1e9
    free_gb = psutil.virtual_memory().available / 1e9
    if need_gb > 0.8 * free_gb:
        context.log(f"[yellow]warning:[/] student.model {options.model!r}: about {params / 1e9:.1f} B parameters need "
                    f"~{need_gb:.1f} GB for weights ({'4-bit' if options.load_in_4bit else 'fp32'}; Phi-2 in 4-bit needs "
                    f"about {PHI2_4BIT_GB:.0f} GB); this machine has {free_gb:.1f} GB free")


@dpokd.hookimpl
def register_students(register):
    register(HFQLoRAStudent)
