"""Student generation on a vLLM server: the base model served once, each adapter loaded by path.

With ``generation = "vllm"`` the student's answers come from a vLLM OpenAI-compatible server as
text completions, through the shared LLM client (cached, concurrent, retried). Each trained
adapter, in PEFT format, is loaded at runtime (``/v1/load_lora_adapter``) under a name taken
from its weights' hash, so the server never restarts between iterations. Without ``vllm_url``,
dpokd starts the server itself where vLLM is installed, on ``vllm_gpu_memory`` of the GPU (the
rest stays the trainer's), and stops it when the process ends.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

import dpokd
from dpokd import Completion, Example, StageFailed
from dpokd.llm import LLMClient, LLMOptions

from .generation import clean_generation

START_COMMAND = "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve MODEL --enable-lora --max-lora-rank R"


class VLLMServer:
    """The server one student generates on: given by ``vllm_url``, or started here."""

    def __init__(self, student):
        self.student = student
        self.url: str | None = student.options.vllm_url
        self.process: subprocess.Popen | None = None
        self.base_name: str | None = None
        self.loaded: set[str] = set()

    # -- checks and start-up ----------------------------------------------------------------------
    def preflight(self) -> None:
        """Fail before any spend: the given server must answer, or vLLM must be installed to start one."""
        if self.url is not None:
            self._served_models(f"student.vllm_url: no vLLM server answers at {self.url}")
        elif importlib.util.find_spec("vllm") is None:
            raise dpokd.ConfigError(
                "student.generation = 'vllm' starts a vLLM server, but vLLM is not installed here: "
                "`pip install vllm` (it needs a CUDA GPU), or set student.vllm_url to a running server "
                f"({START_COMMAND}), or set generation = 'transformers'")

    def ensure(self) -> str:
        if self.url is None:
            self._launch()
        if self.base_name is None:
            models = self._served_models(f"student.vllm_url: no vLLM server answers at {self.url}")
            self.base_name = models[0]["id"]
            served = {models[0]["id"], models[0].get("root")}
            wanted = self.student.model_path or self.student.options.model
            if wanted not in served and self.student.options.model not in served:
                self.student.context.log(
                    f"[yellow]warning:[/] student.vllm_url serves {models[0]['id']!r}, not student.model "
                    f"{self.student.options.model!r}: the answers are that model's")
        return self.url

    def _served_models(self, failure: str) -> list[dict]:
        import httpx

        try:
            response = httpx.get(f"{self.url}/models", timeout=10)
            response.raise_for_status()
            models = response.json()["data"]
        except Exception as exc:
            raise dpokd.ConfigError(f"{failure} ({type(exc).__name__}: {str(exc)[:120]}); start one with "
                                    f"`{START_COMMAND}`") from None
        if not models:
            raise dpokd.ConfigError(f"student.vllm_url: the server at {self.url} serves no model")
        return models

    def _launch(self) -> None:
        self.preflight()
        s, o = self.student, self.student.options
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", s.model_path,
                   "--host", "127.0.0.1", "--port", str(port), "--enable-lora", "--max-lora-rank", str(o.lora_r),
                   "--gpu-memory-utilization", str(o.vllm_gpu_memory), "--seed", str(s.seed)]
        if o.revision:
            command += ["--revision", o.revision]
        if o.load_in_4bit:
            command += ["--quantization", "bitsandbytes"]
        log_path = s.context.layout.vllm_log
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        atexit.register(self.stop)
        self.url = f"http://127.0.0.1:{port}/v1"
        s.context.log(f"student: starting vLLM on port {port} (log: {log_path})")
        deadline = time.monotonic() + o.vllm_start_timeout
        while True:
            if self.process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise dpokd.ConfigError(f"student.generation: vLLM exited with status {self.process.returncode} "
                                        f"before serving; the end of {log_path}:\n  " + "\n  ".join(tail))
            try:
                self._served_models("")
                return
            except dpokd.ConfigError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise dpokd.ConfigError(f"student.vllm_start_timeout: vLLM did not serve within "
                                            f"{o.vllm_start_timeout:.0f} s; see {log_path}") from None
                time.sleep(1)

    def stop(self) -> None:
        """Stop a server started here (its whole process group); a given one is left running."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    # -- generation -------------------------------------------------------------------------------
    def served_name(self) -> str:
        """The base model's name, or the current adapter's, loaded first if the server lacks it."""
        import httpx

        s = self.student
        if s.adapter_hash is None:
            return self.base_name
        name = f"dpokd-{s.adapter_hash}"
        if name not in self.loaded:
            path = s.adapter_path()
            response = httpx.post(f"{self.url}/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)},
                                  timeout=600)
            if response.status_code != 200 and "already" not in response.text:
                raise StageFailed(f"student: vLLM could not load the adapter {path} (HTTP "
                                        f"{response.status_code}: {response.text[:200]}); the server must run with "
                                        "--enable-lora, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --max-lora-rank "
                                        f">= {s.options.lora_r}, and see this path")
            self.loaded.add(name)
        return name

    def generate(self, examples: list[Example]) -> list[Completion]:
        s, o = self.student, self.student.options
        self.ensure()
        # The prompt as the student reads it in training: through its chat template where it uses one.
        tok = s.tokenizer_for_prompts()
        prompts = [s.prompt_text(e, tok) for e in examples]
        # vLLM adds the tokenizer's special tokens (a BOS) to a prompt unless told not to: a chat template
        # brings its own, and is tokenized here without them (encode_prompts).
        options = LLMOptions(model=f"hosted_vllm/{self.served_name()}", api_base=self.url,
                             temperature=o.temperature, max_tokens=o.max_new_tokens, top_p=o.top_p,
                             stop=o.stop or None, provider_seed=s.seed, max_concurrency=o.vllm_max_concurrency,
                             timeout=o.vllm_timeout, max_failure_share=0.0,
                             extra_body={"add_special_tokens": False} if s.chat else None)
        client = LLMClient(options, s.context, field="student", text=True, empty_ok=True)
        model = f"student:{s.fingerprint()}"
        out = []
        for example, completion in zip(examples, client.complete(examples, prompts, label="student generates (vLLM)")):
            text, _ = clean_generation(completion.text, example.prompt, o.stop)
            out.append(completion.model_copy(update={"text": text, "model": model}))
        return out

