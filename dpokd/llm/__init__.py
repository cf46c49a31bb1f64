"""Calling a model, public for plugin authors: ``LLMClient`` caches, retries, rate-limits and
budgets every call, and ``LLMOptions`` are the options of any plugin that calls one.

Inside: the client (``client``), its provider batch-API path (``batch``), its retry policy
(``retry``) and its per-run budget (``budget``)."""

# Shared with dpokd's own modules (the plan, the engine, the CLI), not part of the public API.
from .batch import BATCH_PROVIDERS  # noqa: F401
from .budget import BUDGET_SLACK, SPEND_FILE  # noqa: F401
from .client import (FAILED_FINISH_REASONS, KEY_ENV, Usage, import_litellm, is_local, key_env,  # noqa: F401
                     provider_of)
from .client import LLMClient, LLMOptions, check_key, check_server
from .retry import FATAL_STATUS, RETRYABLE_STATUS, retry_after  # noqa: F401

# The names plugins use.
__all__ = ["LLMClient", "LLMOptions", "check_key", "check_server"]
