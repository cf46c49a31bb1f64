"""The shared LLM client: every plugin that calls an API (teachers, the LLM judge) goes through it.

It gives bounded concurrency, rpm/tpm limits, retries with exponential backoff and jitter that
honour Retry-After up to ``max_retry_wait``, the response cache (each answer stored the moment it
arrives, a provider's refusal included), offline replay, failure accounting, token and dollar
accounting, and a hard ``max_usd`` budget per run: each request's worst-case cost is reserved
before it is sent, and what earlier invocations of the run spent counts (``spend.jsonl``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
import urllib.request
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, model_validator

from ..cache import chat_request, is_refusal, request_key, text_request
from ..errors import ConfigError, OfflineCacheMiss, StageFailed
from ..interfaces import Context, Options
from ..progress_bar import progress
from ..records import Completion, Example
from .answers import Answers, entry_fields
from .batch import BATCH_PROVIDERS, BatchRunner
from .budget import Budget
from .claims import Claims
from .direct import DIRECT_PROVIDERS, DirectHTTP, direct_text
from .retry import GaveUp, Limiter, too_long, unreachable, with_retries

# Env vars of the common providers; others fall back to PROVIDER_API_KEY.
KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "azure": "AZURE_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "cohere": "COHERE_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}
# Where litellm sends a provider's requests when the spec gives no api_base, and the environment
# variables litellm reads first to send them elsewhere.
DEFAULT_API_BASES = {
    "openai": ("https://api.openai.com", ("OPENAI_BASE_URL", "OPENAI_API_BASE")),
    "gemini": ("https://generativelanguage.googleapis.com", ("GEMINI_API_BASE",)),
    "anthropic": ("https://api.anthropic.com", ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE")),
    "mistral": ("https://api.mistral.ai", ("MISTRAL_API_BASE",)),
    "groq": ("https://api.groq.com", ("GROQ_API_BASE",)),
    "deepseek": ("https://api.deepseek.com", ("DEEPSEEK_API_BASE",)),
    "together_ai": ("https://api.together.ai", ("TOGETHER_AI_API_BASE",)),
    "ollama": ("http://localhost:11434", ("OLLAMA_API_BASE",)),
}
# litellm's registries of callbacks: where any is set, requests go through litellm, which calls them.
LITELLM_CALLBACKS = ("callbacks", "input_callback", "success_callback", "failure_callback", "_async_input_callback",
                     "_async_success_callback", "_async_failure_callback")
CONNECT_TIMEOUT = 2.0  # seconds the preflight waits for a connection to the model's server
FAILED_FINISH_REASONS = {"content_filter", "safety", "recitation", "blocked"}
PRICES_KEPT = 100_000  # prices of (prompt, completion) token counts remembered per client
_UNKNOWN = object()
# Request fields litellm takes as arguments of their own, not as sampling parameters.
_NOT_SAMPLING = {"kind", "model", "api_base", "messages", "prompt", "sample"}


class LLMOptions(Options):
    """Options of every plugin that calls a model through litellm."""

    model: str = Field("gemini/gemini-4-argon", description="any litellm model string, e.g. gemini/gemini-4-argon, openai/gpt-4o")
    api_base: str | None = Field(None, description="base URL of an OpenAI-compatible server (vLLM, Ollama, a proxy)")
    api_key_env: str | None = Field(None, description="environment variable holding the key; default: the provider's usual one")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature; 0 is greedy")
    max_tokens: int | None = Field(None, ge=1, description="most tokens per answer")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling mass")
    provider_seed: int | None = Field(None, description="sampling seed sent to the provider, where supported (not "
                                      "[run] seed: unset, none is sent); `seed` is its old name")
    stop: list[str] | None = Field(None, description="stop sequences")
    system_prompt: str | None = Field(None, description="system message put before every prompt")
    extra_body: dict[str, Any] | None = Field(None, description="fields added to each request's body as they are, "
                                              "for what a server takes beyond the OpenAI API (vLLM's top_k or "
                                              "chat_template_kwargs); part of the cache key")
    max_concurrency: int = Field(16, ge=1, description="requests in flight at once")
    rpm: int | None = Field(None, ge=1, description="most requests started per minute")
    tpm: int | None = Field(None, ge=1, description="most tokens (estimated before, counted after) per minute")
    max_retries: int = Field(6, ge=0, description="retries of a 429, 5xx, timeout or connection error")
    timeout: float = Field(120.0, gt=0, description="seconds before one request is abandoned and retried")
    max_retry_wait: float = Field(60.0, gt=0, description="longest Retry-After honoured, in seconds; a provider "
                                  "asking for a longer wait fails that answer at once")
    max_usd: float | None = Field(None, gt=0, description="hard budget in US dollars for the whole run, earlier "
                                  "invocations included: each request's worst case (prompt plus max_tokens) is "
                                  "reserved before it is sent, and one it cannot cover stops the stage (exit 4)")
    max_failure_share: float = Field(0.1, ge=0, le=1, description="share of failed answers above which the stage stops")
    usd_per_million_input: float | None = Field(None, ge=0, description="price override, for models litellm has no price for")
    usd_per_million_output: float | None = Field(None, ge=0, description="price override, for models litellm has no price for")
    direct_http: bool = Field(True, description="send the requests to an OpenAI-compatible api_base (openai/ or "
                              "hosted_vllm/ models) as plain HTTP, without litellm's CPU per call; errors, retries and "
                              "prices are litellm's as on its own path. false, or any litellm callback registered: "
                              "every request through litellm")
    batch: bool = Field(False, description="send uncached requests through the provider's batch API: about half "
                        "the price, answers within 24 h; an interrupted run resumes its batches, and max_usd is "
                        "checked between batches, which then go one at a time")
    batch_poll_seconds: float = Field(30.0, gt=0, description="seconds between checks on a submitted batch")
    batch_max_requests: int = Field(50_000, ge=1, description="most requests in one batch (OpenAI's limit is 50,000)")

    @model_validator(mode="before")
    @classmethod
    def _old_seed_name(cls, data: Any) -> Any:
        # `seed` read as if it fell back to [run] seed; it does not (a fallback would change every
        # cache key), so it is named for what it is. The old spelling still works, with a warning.
        if isinstance(data, dict) and "seed" in data and "seed" not in cls.model_fields:
            data = dict(data)
            if "provider_seed" in data:
                raise ValueError("`seed` is the old name of `provider_seed`; set only `provider_seed`")
            data["provider_seed"] = data.pop("seed")
            warnings.warn("the option `seed` of a model-calling plugin is now `provider_seed` (the provider's "
                          "sampling seed); rename it", FutureWarning, stacklevel=2)
        return data

    @model_validator(mode="after")
    def _batch_provider(self):
        if self.batch and provider_of(self.model) not in BATCH_PROVIDERS:
            raise ValueError(
                f"batch = true: litellm has no batch API for the provider of {self.model!r}; it has one for "
                f"{', '.join(sorted(BATCH_PROVIDERS))} (Gemini models batch through vertex_ai/)")
        return self


def import_litellm():
    """litellm, imported with its remote price-map download switched off (it would hang offline)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm  # about 4 s: only where a model is called or priced, never at `dpokd --help`

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    # litellm's afile_content leaves a second, unused coroutine behind each call.
    warnings.filterwarnings("ignore", message="coroutine 'OpenAIFilesAPI.afile_content' was never awaited")
    return litellm


def is_local(api_base: str | None) -> bool:
    host = urlparse(api_base).hostname if api_base else None
    return host in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def provider_of(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


def key_env(options: LLMOptions) -> str:
    provider = provider_of(options.model)
    return options.api_key_env or KEY_ENV.get(provider, f"{provider.upper()}_API_KEY")


def check_key(options: LLMOptions, field: str, offline: bool) -> None:
    """Fail before any work when no key is set, unless offline or talking to a local server."""
    if offline or is_local(options.api_base) or os.environ.get(key_env(options)):
        return
    if provider_of(options.model) == "hosted_vllm":  # a vLLM server needs a key only when started with --api-key
        return
    if options.api_key_env is None:
        litellm = import_litellm()
        if litellm.validate_environment(options.model).get("keys_in_environment"):
            return
    raise ConfigError(
        f"{field}.model: {options.model!r} needs an API key: set the environment variable {key_env(options)}. "
        "To replay cached answers without a key, run with --offline; to try dpokd with no key at all, "
        "run `dpokd run specs/quickstart.toml`."
    )


def check_server(options: LLMOptions, field: str, offline: bool) -> None:
    """Fail before any work when nothing answers at the model's server: a refused connection or a name
    that does not resolve would otherwise show only after every retry, as litellm's HTTP 500.

    A connection that is merely slow passes (the requests have their own timeout), and so does a
    server reached through a proxy (``HTTPS_PROXY``), which is the proxy's to reach."""
    where = None if offline else server_of(options, field)
    if where is None:
        return
    url, named, note = where
    try:
        parsed = urlparse(url)
        host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"{named}: not a valid URL (check its host and port)") from None
    if "@" in parsed.netloc:  # user:password@host: a secret, never shown
        url = parsed._replace(netloc=parsed.netloc.rpartition("@")[2]).geturl()
    if not host or _proxied(parsed.scheme, host):
        return
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        if (words := unreachable(exc)) is not None:
            raise ConfigError(f"{named}: could not connect to {url}{note}: {words}; check that the address is right "
                              "and the server is up (--offline replays cached answers without it)") from None


def server_of(options: LLMOptions, field: str) -> tuple[str, str, str] | None:
    """Where requests of ``options`` go: the URL, the spec field that decides it and a note on where it
    came from; None where litellm places the model itself."""
    if options.api_base:
        return options.api_base, f"{field}.api_base", ""
    provider = provider_of(options.model)
    if "/" not in options.model:
        return None  # a bare name is litellm's to place (gpt-4o at OpenAI, claude-3 at Anthropic)
    if provider not in DEFAULT_API_BASES:
        return _litellms_api_base(options.model, provider, field)
    default, names = DEFAULT_API_BASES[provider]
    for name in names:
        if os.environ.get(name):
            return os.environ[name], f"{field}.model", f" (from ${name})"
    return default, f"{field}.model", f" ({provider}'s API)"


def _litellms_api_base(model: str, provider: str, field: str) -> tuple[str, str, str] | None:
    """Where litellm sends an OpenAI-compatible provider's requests (Fireworks, xAI, Cerebras, NVIDIA NIM, ...,
    or its ``*_API_BASE`` variable); None for a provider litellm reaches through its own SDK or signing."""
    try:
        api_base = import_litellm().get_llm_provider(model)[3]
    except Exception:  # noqa: BLE001 - a provider litellm does not know fails at the first request, with its words
        return None
    if not api_base:
        return None
    # litellm names the variable that moves a provider as it likes (FIREWORKS_API_BASE for fireworks_ai).
    moved = sorted(name for name, value in os.environ.items() if name.endswith("_API_BASE") and value == api_base)
    return api_base, f"{field}.model", f" (from ${moved[0]})" if moved else f" ({provider}'s API)"


def _proxied(scheme: str, host: str) -> bool:
    """Whether requests to ``host`` go through a proxy: httpx, under litellm, reads the same variables."""
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(host, proxies)


@dataclass
class Usage:
    requests: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0  # of the answers with a known price
    shared: int = 0  # answers another run on the cache asked for while this one waited, unpaid here
    unpriced: int = 0  # answers of a model with no known price


class LLMClient:
    """Answers prompts through litellm for one plugin (``field`` names it in messages).

    ``text=True`` sends text completions (``litellm.atext_completion``): the prompt is continued
    as it is, as a base model without a chat template needs. ``empty_ok=True`` takes an empty
    answer as an answer (a student may stop at once), not as a failure.
    """

    def __init__(self, options: LLMOptions, context: Context, field: str = "teacher", *, text: bool = False,
                 empty_ok: bool = False):
        self.options = options
        self.context = context
        self.field = field
        self.text = text
        self.empty_ok = empty_ok
        self.usage = Usage()
        self.budget = Budget(field, options.max_usd, context)
        self._since = time.time()  # a refusal cached before this is asked again under --retry-refused
        self._prices: dict[tuple[int, int], float | None] = {}

    # -- requests --------------------------------------------------------------------------------
    def messages(self, prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
        """The chat messages of a prompt: given as text, or as a record's own conversation (whose system
        message, where it has one, takes the place of ``system_prompt``)."""
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if self.options.system_prompt and turns[0]["role"] != "system":
            turns.insert(0, {"role": "system", "content": self.options.system_prompt})
        return turns

    def request(self, prompt: str, example: Example | None = None) -> dict[str, Any]:
        """The canonical request; a judge's per-example temperature and sample index are part of it."""
        o = self.options
        temperature = o.temperature if example is None or example.temperature is None else example.temperature
        sample = example.sample if example is not None else 0
        # Each sample has a seed of its own: with one seed, a provider that honours it answers alike.
        sampling = dict(temperature=temperature, top_p=o.top_p, max_tokens=o.max_tokens, stop=o.stop,
                        seed=None if o.provider_seed is None else o.provider_seed + sample)
        if self.text:
            request = text_request(o.model, o.api_base, prompt, **sampling)
        else:
            request = chat_request(o.model, o.api_base, self.messages(prompt), **sampling)
        if o.extra_body:
            request["extra_body"] = o.extra_body
        if sample:
            request["sample"] = sample
        return request

    def sampling(self, prompt: str, example: Example) -> dict[str, Any]:
        """The request's sampling parameters, as litellm (or a batch file's body) takes them."""
        return {k: v for k, v in self.request(prompt, example).items() if k not in _NOT_SAMPLING}

    # -- answers ---------------------------------------------------------------------------------
    def complete(self, examples: list[Example], prompts: list[str] | None = None, *, label: str | None = None,
                 validate=None) -> Answers:
        """One Completion per example, in order: cached where possible, else asked for.

        ``validate(text) -> reason | None`` can reject an answer (e.g. an unparseable verdict):
        a rejected answer is a failure and is not cached. A cached refusal comes back as the failed
        answer it was, unless the context asks to retry refusals. The answers are a read-only sequence
        that reads each answer back from the cache where it is used: memory stays flat in their number.
        """
        prompts = prompts if prompts is not None else [e.prompt if self.text or not e.messages else e.messages
                                                        for e in examples]
        keys = [request_key(self.request(p, e)) for p, e in zip(prompts, examples)]
        answers = Answers(self.context.cache, examples, keys)
        todo = []
        for i, (example, key) in enumerate(zip(examples, keys)):
            if (completion := self._cached(example, key, validate)) is None:
                todo.append(i)
            else:
                answers.put(i, completion)
        if todo and self.context.offline:
            raise OfflineCacheMiss(len(todo), [examples[i].id for i in todo])
        if todo:
            self._ask_all(examples, prompts, keys, todo, label or self.field, validate, answers)
        return self._checked(answers)

    def _cached(self, example: Example, key: str, validate) -> Completion | None:
        """The cached answer (or refusal) to this request, or None when it must be asked."""
        hit = self.context.cache.get(key)
        if hit is None or (is_refusal(hit) and self.context.retry_refused):
            return None
        if not self._acceptable(hit, validate):
            return None
        self.usage.cached += 1
        return self._from_entry(example, hit, validate)

    def _acceptable(self, entry: dict[str, Any], validate) -> bool:
        """Whether a cached entry answers the request: not a refusal to ask again (one stored while this
        client asks is another run's fresh answer), nor an answer ``validate`` rejects."""
        if is_refusal(entry):
            return not (self.context.retry_refused and entry.get("stored_at", 0) < self._since)
        return validate is None or validate(entry["text"]) is None

    def _from_entry(self, example: Example, entry: dict[str, Any], validate) -> Completion:
        if is_refusal(entry):
            return Completion.failed(example, entry["error"], **entry_fields(entry), cached=True)
        return Completion.of(example, entry["text"], **entry_fields(entry), cached=True)

    def _ask_all(self, examples, prompts, keys, todo, label, validate, answers: Answers) -> None:
        check_key(self.options, self.field, offline=False)
        litellm = import_litellm()
        batch = self.options.batch and not self.text  # text completions have no batch path
        if self.options.max_usd is not None:  # an unpriceable model fails here, before any request
            self.worst_case(litellm, prompts[todo[0]], batch=batch)
        if batch:
            runner = BatchRunner(self, litellm, label, validate)
            try:
                for i, completion in asyncio.run(runner.run(examples, prompts, keys, todo)).items():
                    answers.put(i, completion)  # each stored by the runner before it is put here
            finally:
                self.usage.failed += runner.failed
            return
        asyncio.run(self._run(litellm, examples, prompts, keys, todo, label, validate, answers))

    def _checked(self, answers: Answers) -> Answers:
        """The answers, unless the budget stopped them or too many failed."""
        failed = answers.failures()
        if missing := answers.missing():
            raise self.budget.exceeded(len(answers) - missing - len(failed), len(answers))
        if failed and len(failed) / len(answers) > self.options.max_failure_share:
            reasons = sorted({f.error or "?" for f in failed})[:3]
            refused = sum(r.finish_reason in FAILED_FINISH_REASONS for r in failed)
            again = (f"; {refused} are the provider's refusals, cached as such: --retry-refused asks again"
                     if refused else "")
            raise StageFailed(
                f"{self.field}: {len(failed)} of {len(answers)} answers failed ({'; '.join(reasons)}), more than "
                f"max_failure_share = {self.options.max_failure_share}; successful answers are cached, re-run to "
                f"retry the rest{again}"
            )
        return answers

    def api_key(self) -> str | None:
        key = os.environ.get(key_env(self.options)) or None  # an empty variable is no key
        if key is None and (is_local(self.options.api_base) or provider_of(self.options.model) == "hosted_vllm"):
            key = "local"  # OpenAI-compatible local and vLLM servers accept any key, but the SDK wants one
        return key

    def refused_key(self, status: int) -> ConfigError:
        """The error for a 401/403: names the env var that holds the key, and nothing of the key."""
        return ConfigError(f"{self.field}.model: the provider refused the key for {self.options.model!r} "
                           f"(HTTP {status}); check the environment variable {key_env(self.options)}")

    def store(self, key: str, completion: Completion) -> bool:
        """Cache an answer, or a refusal (the provider's deterministic verdict); True if it was either."""
        value = self._entry(completion)
        if value is not None:
            self.context.cache.put(key, value)
        return value is not None

    def _stored(self, key: str, completion: Completion, claims: Claims, then) -> bool:
        """``store``, releasing the request's claim in the same transaction, off the event loop: queued at
        once, not waited for, and ``then()`` called once it is committed."""
        value = self._entry(completion)
        if value is not None:
            claims.store(key, value, then)
        return value is not None

    def _entry(self, completion: Completion) -> dict[str, Any] | None:
        """The cache entry of an answer or a refusal; None for a failure that is asked again next time."""
        value = {"text": completion.text, "finish_reason": completion.finish_reason, "model": completion.model,
                 "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                 "cost_usd": completion.cost_usd}
        if not completion.ok:
            if completion.finish_reason not in FAILED_FINISH_REASONS:
                return None  # a transport failure, an empty or unparseable answer
            value.update(refused=True, error=completion.error)
        return value

    # -- prices ----------------------------------------------------------------------------------
    def spent(self) -> float:
        """Dollars this run has spent through this plugin: earlier invocations (``spend.jsonl``) and this one."""
        return self.budget.spent()

    def worst_case(self, litellm, prompt: str, *, batch: bool = False) -> float:
        """The most one request can cost: its prompt's tokens plus ``max_tokens``, at the model's price."""
        o = self.options
        if self.text:
            prompt_tokens = litellm.token_counter(model=o.model, text=prompt)
        else:
            prompt_tokens = litellm.token_counter(model=o.model, messages=self.messages(prompt))
        cost = self.price(litellm, prompt_tokens, self._most_completion_tokens(litellm), batch=batch)
        if cost is None:
            raise ConfigError(f"{self.field}.max_usd: litellm has no price for {o.model!r}, so the budget cannot be "
                              f"kept; set {self.field}.usd_per_million_input and usd_per_million_output")
        return cost

    def _most_completion_tokens(self, litellm) -> int:
        o = self.options
        if o.max_tokens is not None:
            return o.max_tokens
        try:
            most = litellm.get_model_info(o.model).get("max_output_tokens")
        except Exception:  # a model litellm's map does not know
            most = None
        if not most:
            raise ConfigError(f"{self.field}.max_usd: the most an answer of {o.model!r} can cost is unknown; "
                              f"set {self.field}.max_tokens")
        return most

    def price(self, litellm, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float | None:
        """Dollars for these tokens: the spec's price override, else litellm's (batch) price; None if unknown."""
        o = self.options
        if o.usd_per_million_input is not None or o.usd_per_million_output is not None:
            return (prompt_tokens * (o.usd_per_million_input or 0)
                    + completion_tokens * (o.usd_per_million_output or 0)) / 1e6
        try:
            with warnings.catch_warnings():  # litellm's own pydantic deprecations, once per call
                warnings.simplefilter("ignore")
                if batch:
                    from litellm.cost_calculator import batch_cost_calculator  # litellm is loaded by now

                    usage = litellm.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                          total_tokens=prompt_tokens + completion_tokens)
                    return float(sum(batch_cost_calculator(usage, model=o.model)))
        except Exception:  # a model litellm has no price for
            return None
        return self._litellm_price(litellm, prompt_tokens, completion_tokens)

    def _litellm_price(self, litellm, prompt_tokens: int, completion_tokens: int) -> float | None:
        # litellm takes about 0.4 ms of CPU to price a call, and answers repeat their token counts.
        found = self._prices.get((prompt_tokens, completion_tokens), _UNKNOWN)
        if found is _UNKNOWN:
            try:
                with warnings.catch_warnings():  # litellm's own pydantic deprecations, once per call
                    warnings.simplefilter("ignore")
                    found = float(sum(litellm.cost_per_token(model=self.options.model, prompt_tokens=prompt_tokens,
                                                             completion_tokens=completion_tokens)))
            except Exception:  # a model litellm has no price for
                found = None
            if len(self._prices) < PRICES_KEPT:
                self._prices[(prompt_tokens, completion_tokens)] = found
        return found

    def _response_cost(self, litellm, response: Any) -> float | None:
        # litellm prices every response already (None: a model it has no price for); asking it
        # again costs milliseconds of CPU per call.
        hidden = getattr(response, "_hidden_params", None) or {}
        if "response_cost" in hidden:
            return hidden["response_cost"]
        try:
            return litellm.completion_cost(completion_response=response)
        except Exception:  # a model litellm has no price for
            return None

    # -- the live path ---------------------------------------------------------------------------
    async def _run(self, litellm, examples, prompts, keys, todo, label, validate, answers: Answers) -> None:
        self.budget.open()
        self._since = time.time()
        asked = 0
        failed_before, shared_before = self.usage.failed, self.usage.shared
        with Claims(self.context.cache) as claims, progress(self.context, label, len(todo)) as advance:
            round_ = _Round(litellm, await self._direct(litellm), claims, Limiter(self.options.rpm, self.options.tpm),
                            validate, examples, prompts, keys)

            def done(i: int, completion: Completion | None) -> None:
                nonlocal asked
                if completion is None:  # the budget cannot cover it
                    return
                answers.put(i, completion)
                asked += 1
                if not completion.ok:
                    self.usage.failed += 1
                advance(1, status=f"failed {self.usage.failed}  ${self.usage.cost_usd:.4f}")

            try:
                await self._workers(round_, todo, done)
            finally:
                if round_.http is not None:
                    await round_.http.__aexit__(None, None, None)
        shared = self.usage.shared - shared_before
        self.context.log(f"{label}: {asked}/{len(todo)} asked, {self.usage.failed - failed_before} failed, "
                         f"{len(examples) - len(todo)} cached, "
                         + (f"{shared} answered by another run on this cache, " if shared else "")
                         + f"${self.usage.cost_usd:.4f} spent"
                         + (f" ({self.usage.unpriced} answers of a model with no known price)" if self.usage.unpriced else ""))

    async def _workers(self, round_: _Round, todo: list[int], done) -> None:
        """``max_concurrency`` workers take the requests in turn (memory stays flat in their number); one
        another process has claimed is set aside, and waited for once the rest are asked."""
        pending = iter(todo)
        waiting: list[tuple[int, str]] = []

        async def worker() -> None:
            # Each worker claims its next request while it asks the current one: the claim's round trip
            # through the cache's thread is off the request's path.
            ahead = self._claim_next(round_, pending)
            try:
                while ahead is not None:
                    i, claim = ahead
                    state, found = await claim
                    ahead = self._claim_next(round_, pending)
                    if (held := await self._answered(round_, i, state, found, done)) is not None:
                        waiting.append((i, held))
            finally:
                if ahead is not None:
                    _abandon(ahead[1])
            while waiting:
                i, seen = waiting.pop()
                await round_.claims.freed(round_.keys[i])
                state, found = await self._claim(round_, i, seen)
                if (held := await self._answered(round_, i, state, found, done)) is not None:
                    waiting.append((i, held))

        await asyncio.gather(*(worker() for _ in range(min(self.options.max_concurrency, len(todo)))))
        await round_.claims.stored()

    def _claim_next(self, round_: _Round, pending) -> tuple[int, asyncio.Future] | None:
        """The next request, and its claim taken in the background; None when every request is taken."""
        i = next(pending, None)
        return None if i is None else (i, asyncio.ensure_future(self._claim(round_, i, None)))

    def _claim(self, round_: _Round, i: int, seen: str | None):
        """Claim request ``i`` (``Claims.take``), unless the cache answers it."""
        validate = round_.validate
        return round_.claims.take(round_.keys[i], seen, lambda entry: self._acceptable(entry, validate))

    async def _direct(self, litellm) -> DirectHTTP | None:
        """The direct HTTP path, where the endpoint is OpenAI-compatible and the spec allows it."""
        o = self.options
        if not (o.direct_http and o.api_base and "/" in o.model and provider_of(o.model) in DIRECT_PROVIDERS):
            return None
        if self.text and not direct_text(litellm, o.model):
            return None
        if any(getattr(litellm, name, None) for name in LITELLM_CALLBACKS):
            return None  # callbacks someone registered with litellm (a logging integration) see every request
        return await DirectHTTP(litellm, o.model, o.api_base, self.api_key(), self.text).__aenter__()

    async def _answered(self, round_: _Round, i: int, state: str, found: Any, done) -> str | None:
        """Request ``i``, claimed (``state``): asked by this process, or taken from the cache where another
        process answered it. Returns the owner of another process's live claim on it, to be waited for."""
        example, validate = round_.examples[i], round_.validate
        if state == "held":
            return found["owner"]
        if state == "ours":
            await self._asked(round_, i, done)
        elif state == "answered":
            self.usage.shared += 1
            self.budget.record_shared(found.get("cost_usd") or 0.0)
            done(i, self._from_entry(example, found, validate))
        else:  # "failed": the failure of the request waited for is its answer here too
            done(i, Completion.failed(example, found["failed"]))
        return None

    async def _asked(self, round_: _Round, i: int, done) -> None:
        """Ask request ``i``; ``done`` has its answer once the answer is stored (counted, it is on disk)."""
        prompt, key, claims = round_.prompts[i], round_.keys[i], round_.claims
        budgeted = self.options.max_usd is not None
        need = self.worst_case(round_.litellm, prompt) if budgeted else 0.0
        if budgeted and not await self.budget.reserve(need):
            claims.give_up(key)
            done(i, None)
            return
        try:
            completion = await self._ask(round_.litellm, round_.limiter, round_.examples[i], prompt, round_.validate,
                                         round_.http)
        except BaseException:
            claims.give_up(key)
            raise
        finally:
            if budgeted:
                await self.budget.release(need)
        if not self._stored(key, completion, claims, functools.partial(done, i, completion)):
            claims.give_up(key, completion.error)
            done(i, completion)

    async def _ask(self, litellm, limiter: Limiter, example: Example, prompt: str, validate,
                   http: DirectHTTP | None = None) -> Completion:
        o = self.options
        kwargs = self.sampling(prompt, example)
        if self.text:
            kwargs["prompt"] = prompt
        else:
            kwargs["messages"] = self.messages(prompt)
        if http is not None:
            call = http.call
        else:
            call = functools.partial(litellm.atext_completion if self.text else litellm.acompletion, model=o.model,
                                     api_base=o.api_base, api_key=self.api_key(), num_retries=0, max_retries=0)
        estimate = len(prompt) // 4 + (o.max_tokens or 256)

        async def attempt():
            await limiter.acquire(estimate)
            return await call(timeout=o.timeout, **kwargs)

        response = await with_retries(attempt, max_retries=o.max_retries, max_retry_wait=o.max_retry_wait)
        if isinstance(response, GaveUp):
            return self._gave_up(example, response)
        if http is not None:  # the answer's JSON
            choice = response["choices"][0]
            content = choice.get("text") if self.text else (choice.get("message") or {}).get("content")
            fields = self.answer_fields(litellm, content, choice.get("finish_reason"), response.get("model"),
                                        response.get("usage") or {})
            return self.verdict(example, fields, validate)
        choice = response.choices[0]
        content = choice.text if self.text else choice.message.content
        fields = self.answer_fields(litellm, content, choice.finish_reason, getattr(response, "model", None),
                                    getattr(response, "usage", None), response=response)
        return self.verdict(example, fields, validate)

    def _gave_up(self, example: Example, gave_up: GaveUp) -> Completion:
        failure = gave_up.failure
        if failure.fatal:
            raise self.refused_key(failure.status) from None
        if gave_up.wait_too_long:
            return Completion.failed(example, f"{failure.reason}: {self.too_long(failure.exc)}")
        if not failure.retryable:
            return Completion.failed(example, failure.reason)
        return Completion.failed(example, f"{failure.reason} after {gave_up.attempts} attempts")

    def too_long(self, exc: Exception) -> str:
        return too_long(exc, self.field, self.options.max_retry_wait)

    def answer_fields(self, litellm, text: str | None, finish_reason: str | None, model: str | None, usage: Any,
                      *, response: Any = None, batch: bool = False) -> dict[str, Any]:
        """One answer's fields, with its tokens and cost added to this client's usage.

        A live call is priced from ``response``; a batch answer at litellm's batch price.
        """
        o = self.options
        get = usage.get if isinstance(usage, dict) else (lambda name, default=None: getattr(usage, name, default))
        prompt_tokens = get("prompt_tokens", 0) or 0
        completion_tokens = get("completion_tokens", 0) or 0
        if batch or response is None or o.usd_per_million_input is not None or o.usd_per_million_output is not None:
            cost = self.price(litellm, prompt_tokens, completion_tokens, batch=batch)
        else:
            cost = self._response_cost(litellm, response)
        cost = None if cost is None else float(cost)  # None: unpriced, which is not free
        self.budget.record(cost or 0.0)
        self.usage.requests += 1
        self.usage.prompt_tokens += prompt_tokens
        self.usage.completion_tokens += completion_tokens
        self.usage.cost_usd += cost or 0.0
        self.usage.unpriced += cost is None
        return dict(text=text or "", finish_reason=finish_reason, model=model, prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens, cost_usd=cost)

    def verdict(self, example: Example, fields: dict[str, Any], validate) -> Completion:
        """The answer as a Completion: failed when blocked, empty or rejected by ``validate``."""
        finish_reason, text = fields["finish_reason"], fields["text"]
        if finish_reason in FAILED_FINISH_REASONS:
            return Completion.failed(example, f"blocked (finish_reason={finish_reason})", **fields)
        if not text.strip() and not self.empty_ok:
            return Completion.failed(example, "empty answer", **fields)
        if validate is not None and (problem := validate(text)) is not None:
            return Completion.failed(example, problem, **fields)
        return Completion.of(example, **fields)


@dataclass
class _Round:
    """What the requests of one ``complete`` call share while they are asked."""

    litellm: Any
    http: DirectHTTP | None
    claims: Claims
    limiter: Limiter
    validate: Any
    examples: list[Example]
    prompts: list[Any]
    keys: list[str]


def _abandon(task: asyncio.Future) -> None:
    """Cancel a task whose outcome is no longer wanted; one that has ended is read, so no error is left unread."""
    if not task.cancel() and not task.cancelled():
        task.exception()
