"""Calling a model, public for plugin authors: ``LLMClient`` caches, retries, rate-limits and
budgets every call, and ``LLMOptions`` are the options of any plugin that calls one.

Inside: the client (``client``), its provider batch-API path (``batch``), its retry policy
(``retry``) and its per-run budget (``budget``)."""

from .batch import BATCH_PROVIDERS
from .budget import BUDGET_SLACK, SPEND_FILE
from .client import (FAILED_FINISH_REASONS, KEY_ENV, LLMClient, LLMOptions, Usage, check_key, check_server,
                     import_litellm, is_local, key_env, provider_of)
from .retry import FATAL_STATUS, RETRYABLE_STATUS, retry_after

# The names plugins use; the others are shared with dpokd's own modules.
__all__ = ["LLMClient", "LLMOptions", "check_key", "check_server"]
