"""The shared LLM client (``client``), its provider batch-API path (``batch``), its retry policy
(``retry``) and its per-run budget (``budget``)."""

from .batch import BATCH_PROVIDERS
from .budget import BUDGET_SLACK, SPEND_FILE
from .client import (FAILED_FINISH_REASONS, KEY_ENV, LLMClient, LLMOptions, Usage, check_key, import_litellm,
                     is_local, key_env, provider_of)
from .retry import FATAL_STATUS, RETRYABLE_STATUS, retry_after

__all__ = [
    "BATCH_PROVIDERS",
    "BUDGET_SLACK",
    "FAILED_FINISH_REASONS",
    "FATAL_STATUS",
    "KEY_ENV",
    "LLMClient",
    "LLMOptions",
    "RETRYABLE_STATUS",
    "SPEND_FILE",
    "Usage",
    "check_key",
    "import_litellm",
    "is_local",
    "key_env",
    "provider_of",
    "retry_after",
]
