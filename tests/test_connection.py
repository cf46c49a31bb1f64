"""A model server that cannot be reached is named before the run starts, and a connection that
fails during a run says so, not "HTTP 500".

Nothing here leaves the machine: a closed port on 127.0.0.1 (bound, then closed) refuses the
connection, and a name under `.invalid` (RFC 6761) never resolves."""

import ctypes
import socket
import time

import pytest

from dpokd.errors import ConfigError, StageFailed
from dpokd.interfaces import Context
from dpokd.llm import LLMOptions, check_server
from dpokd.plugins.judges.pairwise import PairwiseJudge
from dpokd.plugins.judges.rubric import RubricJudge
from dpokd.plugins.teachers.litellm import LiteLLMTeacher
from dpokd.records import Example
from dpokd.testing import LoopbackServer

from .conftest import run_cli

UNRESOLVABLE = "dpokd-no-such-host.invalid"
NO_PROXY = {"HTTP_PROXY": None, "HTTPS_PROXY": None, "ALL_PROXY": None, "http_proxy": None, "https_proxy": None,
            "all_proxy": None}


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in NO_PROXY:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def dns_words() -> set[str]:
    """What this machine's resolver may say of a name it cannot resolve, as the messages put it: that it
    does not exist, or that the lookup failed (a resolver that times out under load says the latter)."""
    libc = ctypes.CDLL(None)
    libc.gai_strerror.restype = ctypes.c_char_p
    codes = {socket.EAI_NONAME, socket.EAI_AGAIN, socket.EAI_FAIL, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
    return {(w := libc.gai_strerror(c).decode())[:1].lower() + w[1:] for c in codes}


def said(message: str, before: str, after: str) -> str:
    """The words in ``message`` between ``before`` and ``after``."""
    assert message.startswith(before) and after in message, message
    return message[len(before):].split(after)[0]


def teacher(api_base: str, tmp_path, offline: bool = False, **options) -> LiteLLMTeacher:
    return LiteLLMTeacher(LiteLLMTeacher.Options(model="openai/loopback", api_base=api_base, **options),
                          Context(cache_dir=tmp_path / "cache", offline=offline))


def test_preflight_names_the_field_the_url_and_a_refused_connection(closed_url, tmp_path):
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        teacher(closed_url, tmp_path).preflight()
    assert time.monotonic() - start < 3
    assert str(info.value).startswith(f"teacher.api_base: could not connect to {closed_url}: connection refused")
    assert info.value.exit_code == 2


def test_preflight_names_a_host_that_does_not_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")  # a host not on this machine needs a key first
    url = f"http://{UNRESOLVABLE}:8000/v1"
    with pytest.raises(ConfigError) as info:
        teacher(url, tmp_path).preflight()
    assert said(str(info.value), f"teacher.api_base: could not connect to {url}: ", "; check that") in dns_words()


def test_preflight_passes_a_live_server_and_any_server_offline(closed_url, tmp_path):
    with LoopbackServer() as server:
        teacher(server.url, tmp_path).preflight()
    teacher(closed_url, tmp_path, offline=True).preflight()  # a replay needs no server


@pytest.mark.parametrize("judge_class", [PairwiseJudge, RubricJudge], ids=["llm-pairwise", "llm-rubric"])
def test_the_llm_judges_check_their_server_too(closed_url, tmp_path, judge_class):
    judge = judge_class(judge_class.Options(model="openai/j", api_base=closed_url), Context(cache_dir=tmp_path))
    with pytest.raises(ConfigError, match=rf"^judges.{judge_class.name}.api_base: could not connect to .*: connection refused"):
        judge.preflight()


def test_without_api_base_the_providers_server_is_checked_where_the_environment_sends_it(closed_url, monkeypatch):
    from dpokd.llm.client import server_of

    monkeypatch.delenv("GEMINI_API_BASE", raising=False)
    assert server_of(LLMOptions(model="gemini/gemini-2.0-flash"), "teacher")[0] == \
        "https://generativelanguage.googleapis.com"
    assert server_of(LLMOptions(model="my-model"), "teacher") is None  # a bare name: litellm places it
    monkeypatch.setenv("GEMINI_API_BASE", closed_url)
    with pytest.raises(ConfigError, match=r"^teacher.model: could not connect to .* \(from \$GEMINI_API_BASE\): "
                                          "connection refused"):
        check_server(LLMOptions(model="gemini/gemini-2.0-flash"), "teacher", offline=False)


def test_a_provider_dpokd_does_not_list_is_checked_where_litellm_sends_it(closed_url, monkeypatch):
    from dpokd.llm.client import server_of

    monkeypatch.delenv("CEREBRAS_API_BASE", raising=False)
    assert server_of(LLMOptions(model="cerebras/llama3.1-8b"), "teacher")[0] == "https://api.cerebras.ai/v1"
    assert server_of(LLMOptions(model="bedrock/anthropic.claude-v2"), "teacher") is None  # litellm signs its own
    monkeypatch.setenv("CEREBRAS_API_BASE", closed_url)
    with pytest.raises(ConfigError, match=r"^teacher.model: could not connect to .* \(from \$CEREBRAS_API_BASE\): "
                                          "connection refused"):
        check_server(LLMOptions(model="cerebras/llama3.1-8b"), "teacher", offline=False)


def test_a_server_behind_a_proxy_is_the_proxys_to_reach(closed_url, monkeypatch):
    options = LLMOptions(model="openai/x", api_base=closed_url)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    check_server(options, "teacher", offline=False)  # requests go to the proxy, not to the closed port
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with pytest.raises(ConfigError, match="connection refused"):
        check_server(options, "teacher", offline=False)


def test_a_connection_refused_during_a_run_says_so_not_http_500(closed_url, tmp_path):
    # No preflight: the server went away after the run started.
    with pytest.raises(StageFailed) as info:
        teacher(closed_url, tmp_path, max_retries=1).answer([Example(id="a", prompt="hi")])
    message = str(info.value)
    assert f"could not connect to {closed_url}/chat/completions: connection refused after 2 attempts" in message
    assert "500" not in message


def test_a_name_that_stops_resolving_during_a_run_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "x")
    url = f"http://{UNRESOLVABLE}/v1"
    t = LiteLLMTeacher(LiteLLMTeacher.Options(model="gemini/x", api_base=url, max_retries=0, max_failure_share=1.0),
                       Context(cache_dir=tmp_path / "cache"))
    [answer] = t.answer([Example(id="a", prompt="hi")])
    assert said(answer.error, f"could not connect to {url}/models/x:generateContent: ", " after 1 attempts") in dns_words()


def test_dpokd_run_against_a_closed_port_exits_2_at_once(closed_url, tmp_path):
    (tmp_path / "s.toml").write_text(f"""
[run]
name = "s"

[task]
plugin = "synthetic-codegen"
n_train = 4
n_eval = 2

[teacher]
plugin = "litellm"
model = "openai/loopback"
api_base = "{closed_url}"
max_retries = 10

[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
""")
    start = time.monotonic()
    # A fresh interpreter: the check comes before anything imports torch, so it needs no preloading.
    out = run_cli("run", "s.toml", cwd=tmp_path, env=NO_PROXY, fresh=True)
    took = time.monotonic() - start
    assert out.returncode == 2, out.stderr[-3000:]
    # Ten retries with backoff would take well over a minute before a failure.
    assert took < 15, took
    assert f"teacher.api_base: could not connect to {closed_url}: connection refused" in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started
