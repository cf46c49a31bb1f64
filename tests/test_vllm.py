"""Student generation on a vLLM server: each adapter loaded by path, answers cached by adapter.

The server is the loopback server, which serves vLLM's HTTP surface; vLLM itself needs a CUDA GPU.
"""

import json
from pathlib import Path

import pytest

from dpokd.errors import ConfigError
from dpokd.interfaces import Context
from dpokd.plugins.students.hf_qlora import HFQLoRAStudent
from dpokd.plugins.tasks.synthetic import SyntheticCodegen
from dpokd.testing import LoopbackServer

FAKE_VLLM = Path(__file__).parent / "fixtures" / "fake_vllm"


@pytest.fixture(scope="module")
def task():
    return SyntheticCodegen(SyntheticCodegen.Options(levels=[1], n_train=6, n_eval=2))


def make_student(tmp_path, task, **options):
    opts = {"model": "dpokd:tiny", "generation": "vllm", "max_new_tokens": 24, "stop": ["\ndef "], **options}
    student = HFQLoRAStudent(HFQLoRAStudent.Options(**opts), Context(cache_dir=tmp_path / "cache"))
    student.prepare(task.examples("train"))
    return student


def test_generation_loads_each_adapter_by_path_and_caches_by_adapter(tmp_path, task):
    examples = task.examples("train")
    with LoopbackServer(lambda body: f"  return 1  # {body['model']}", served_model="phi-base") as server:
        student = make_student(tmp_path, task, vllm_url=server.url)
        student.preflight()
        base = student.generate(examples)
        assert [a.text for a in base] == ["  return 1  # phi-base"] * len(examples)
        # Each prompt as the student trains on it: through dpokd:tiny's chat template.
        rendered = [student.prompt_text(e, student.tokenizer_for_prompts()) for e in examples]
        assert all(p.startswith("<|user|>\n") and p.endswith("<|assistant|>\n") for p in rendered)
        assert sorted(r["prompt"] for r in server.requests) == sorted(rendered)
        assert {(r["max_tokens"], r["temperature"], tuple(r["stop"])) for r in server.requests} == {(24, 0.0, ("\ndef ",))}
        assert server.adapters == {}

        adapter = tmp_path / "iter_1" / "adapter"
        student.save(adapter)
        student.load(adapter)
        server.reset()
        tuned = student.generate(examples)
        name = f"dpokd-{student.adapter_hash}"
        assert server.adapters == {name: str(adapter.resolve())}
        assert {r["model"] for r in server.requests} == {name}
        assert [a.text for a in tuned] == [f"  return 1  # {name}"] * len(examples)
        assert tuned[0].model == f"student:{student.fingerprint()}"

        server.reset()
        assert [a.text for a in student.generate(examples)] == [a.text for a in tuned]
        student.load(None)
        assert [a.text for a in student.generate(examples)] == [a.text for a in base]
        assert server.requests == [] and server.adapters == {}  # both answered from the cache


def test_samples_get_seeds_of_their_own(tmp_path, task):
    examples = [e.model_copy(update={"sample": s, "temperature": 0.8}) for e in task.examples("train")[:1]
                for s in range(3)]
    with LoopbackServer(served_model="phi-base") as server:
        make_student(tmp_path, task, vllm_url=server.url, seed=7).generate(examples)
    assert sorted(r["seed"] for r in server.requests) == [7, 8, 9]
    assert {r["temperature"] for r in server.requests} == {0.8}


def test_a_server_started_here_where_vllm_is_installed(tmp_path, task, monkeypatch):
    record = tmp_path / "vllm.json"
    monkeypatch.syspath_prepend(str(FAKE_VLLM))
    monkeypatch.setenv("PYTHONPATH", str(FAKE_VLLM))
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    student = make_student(tmp_path, task, lora_r=16, vllm_gpu_memory=0.4)
    student.preflight()
    answers = student.generate(task.examples("train"))
    server = student.vllm()
    try:
        started = json.loads(record.read_text())
        argv = started["argv"]
        assert argv[argv.index("--model") + 1] == student.model_path
        assert argv[argv.index("--max-lora-rank") + 1] == "16"
        assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.4"
        assert "--enable-lora" in argv and "--quantization" in argv
        assert started["lora_updating"] == "True"
        assert all(a.text.startswith("  return 1") for a in answers)
    finally:
        server.stop()
    assert server.process.poll() is not None


def test_without_vllm_or_a_server_the_error_says_what_to_do(tmp_path, task, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install vllm.*vllm_url"):
        make_student(tmp_path, task).preflight()


def test_an_unreachable_server_fails_before_any_work(tmp_path, task):
    with LoopbackServer() as server:
        url = server.url
    with pytest.raises(ConfigError, match="no vLLM server answers"):
        make_student(tmp_path, task, vllm_url=url).preflight()


def test_a_chat_template_that_writes_the_bos_gives_vllm_one_bos_as_generation_here_has(tmp_path, task):
    """vLLM adds the tokenizer's special tokens to a completion's prompt: a Llama-style template that writes
    the BOS itself must not give the model a second one there, nor a template without one a BOS."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    from dpokd.plugins.students.tiny import CHAT_TEMPLATE

    built = Path(make_student(tmp_path / "tiny", task).model_path)
    llama_like = tmp_path / "llama-like"
    tok = AutoTokenizer.from_pretrained(built)
    tok.add_special_tokens({"bos_token": "<s>"})
    bos = tok.convert_tokens_to_ids("<s>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tok.chat_template = "{{ bos_token }}" + CHAT_TEMPLATE
    tok.save_pretrained(llama_like)
    for name in ("config.json", "model.safetensors"):
        (llama_like / name).write_bytes((built / name).read_bytes())
    tok = AutoTokenizer.from_pretrained(llama_like)
    assert tok("x")["input_ids"][0] == bos  # the tokenizer adds a BOS, as Llama's does

    examples = task.examples("train")
    with LoopbackServer(lambda body: "  return 1", served_model="llama-like") as server:
        student = make_student(tmp_path, task, model=str(llama_like), vllm_url=server.url)
        student.generate(examples)
        here = student.encode_prompts(examples, student.tokenizer_for_prompts())
        assert all(ids[0] == bos and ids[1] != bos for ids in here)
        # vLLM tokenizes a prompt with the special tokens unless the request says not to.
        read = [tok(r["prompt"], add_special_tokens=r.get("add_special_tokens", True))["input_ids"] for r in server.requests]
        assert sorted(read) == sorted(here)  # what vLLM reads is what generation here reads
