"""The direct HTTP path to OpenAI-compatible endpoints (vLLM, Ollama, proxies, any ``api_base``).

litellm spends about 6 ms of CPU on each call, most of it building and parsing objects this client
does not need; at a few hundred requests in flight that CPU, not the provider, sets the pace. Here
an OpenAI-compatible request is one JSON POST on a shared aiohttp session, and its answer the JSON
that comes back. What litellm gives beyond that is kept: an error response becomes the exception
litellm would raise (the OpenAI SDK's status error, mapped by litellm's own ``exception_type``,
with its headers, so Retry-After reads the same), a failed connection or a timeout becomes
litellm's ``InternalServerError`` or ``Timeout``, and the price comes from litellm's price map.

This keeps one process and one event loop, so the hard budget, the rate limit, the claims and
the answer-by-answer cache work exactly as on litellm's path.
"""

from __future__ import annotations

import json
import os
from typing import Any, Self

# Providers whose requests with an api_base are plain OpenAI-compatible HTTP.
DIRECT_PROVIDERS = frozenset({"openai", "hosted_vllm"})


def _certificates():
    """The certificates httpx trusts under litellm: ``SSL_CERT_FILE``, else certifi's bundle."""
    import ssl

    import certifi  # litellm's dependency, through httpx

    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or certifi.where())


def _from_environment(url: str, authorized: bool) -> dict[str, Any]:
    """The proxy a request to ``url`` goes through, with its login, and the login ``.netrc`` gives the host
    where the request carries no key of its own: as an aiohttp session trusting the environment finds them."""
    from aiohttp.helpers import basicauth_from_netrc, get_env_proxy_for_url, netrc_from_env
    from yarl import URL

    routing: dict[str, Any] = {}
    try:
        routing["proxy"], routing["proxy_auth"] = get_env_proxy_for_url(URL(url))
    except LookupError:  # no proxy for this URL
        pass
    if not authorized:
        try:
            routing["auth"] = basicauth_from_netrc(netrc_from_env(), URL(url).host)
        except LookupError:
            pass
    return routing


def direct_text(litellm, model: str) -> bool:
    """Whether litellm sends a text completion of ``model`` to ``/completions`` as it is: it turns one for
    a known chat model, or a provider other than openai/, into a chat request."""
    provider, _, name = model.partition("/")
    return provider == "openai" and name not in litellm.open_ai_chat_completion_models


class DirectHTTP:
    """``async with DirectHTTP(litellm, model, api_base, api_key, text) as http: await http.call(...)``."""

    def __init__(self, litellm, model: str, api_base: str, api_key: str | None, text: bool):
        self.litellm = litellm
        self.model = model
        self.provider, _, self.name = model.partition("/")
        self.url = api_base.rstrip("/") + ("/completions" if text else "/chat/completions")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.session = None
        self.routing: dict[str, Any] = {}  # the proxy, or the .netrc login, each request goes with

    async def __aenter__(self) -> Self:
        import aiohttp  # litellm's own dependency

        # No connection limit of the session's own: the client's workers bound the requests in flight.
        connector = aiohttp.TCPConnector(limit=0, ssl=_certificates())
        # The environment's proxy (HTTPS_PROXY, NO_PROXY, as httpx reads them) and .netrc are read once
        # here: a session that trusts the environment reads both again, in a thread, for every request.
        self.routing = _from_environment(self.url, bool(self.headers))
        self.session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    async def call(self, *, timeout: float, **params: Any) -> dict[str, Any]:
        """The answer's JSON; an error raised as litellm raises it for this provider."""
        import aiohttp

        extra = params.pop("extra_body", None) or {}  # on the body's top level, as litellm's client puts it
        body = {"model": self.name, **{k: v for k, v in params.items() if v is not None}, **extra}
        try:
            async with self.session.post(self.url, json=body, headers=self.headers, **self.routing,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                data = await response.read()
                status, headers = response.status, dict(response.headers)
        except TimeoutError:  # aiohttp's timeout
            raise self.litellm.Timeout(message=f"no answer within {timeout:g} s", model=self.model,
                                       llm_provider=self.provider) from None
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc)  # its cause, set there, names the URL
        if status != 200:
            raise self._status_error(status, headers, data)
        try:
            payload = json.loads(data)
            payload["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise self.litellm.InternalServerError(message="the answer is not an OpenAI-style completion",
                                                   llm_provider=self.provider, model=self.model) from None
        return payload

    def _connection_error(self, exc: Exception) -> Exception:
        """litellm's error for a connection that failed (an HTTP 500 of its own, as on its path), caused by
        httpx's, which names the URL, caused by the OS's (``connection refused``)."""
        import httpx

        inner = httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=httpx.Request("POST", self.url))
        inner.__cause__ = exc
        error = self.litellm.InternalServerError(message="Connection error.", llm_provider=self.provider,
                                                 model=self.model)
        error.__cause__ = inner
        return error

    def _status_error(self, status: int, headers: dict[str, str], data: bytes) -> Exception:
        """The exception litellm's path raises for this response: the OpenAI SDK's, mapped by litellm."""
        import httpx
        import openai
        from litellm.litellm_core_utils.exception_mapping_utils import exception_type

        response = httpx.Response(status, headers=headers, content=data, request=httpx.Request("POST", self.url))
        original = openai.AsyncOpenAI(api_key="unused")._make_status_error_from_response(response)
        try:
            exception_type(model=self.model, original_exception=original, custom_llm_provider=self.provider)
        except Exception as mapped:  # exception_type always raises: the mapped error is its result
            return mapped
        return original
