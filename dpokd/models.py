"""API models checked against litellm's own model map, before anything is paid for.

A model past its ``deprecation_date`` is an error naming the date and a current model to use
instead; one retiring within ``NEAR_DAYS`` is a warning; one the map does not list has no known
price, which is an error only when ``max_usd`` must be kept without a price override. Models
served from an ``api_base`` (vLLM, Ollama, a proxy) carry their server's own names and are skipped.

The map is read from litellm's bundled JSON file, the copy ``litellm.model_cost`` loads with
``LITELLM_LOCAL_MODEL_COST_MAP=True``: reading it takes about 30 ms, importing litellm about 3 s.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

from .errors import ConfigError
from .llm import LLMOptions, provider_of

if TYPE_CHECKING:
    from .interfaces import Context
    from .spec import Spec

NEAR_DAYS = 30
# A suggested replacement must outlive at least a long run's set-up and the run itself.
SUGGEST_DAYS = 90
MAP_FILE = "model_prices_and_context_window_backup.json"
LOCAL_PROVIDERS = {"ollama", "ollama_chat", "hosted_vllm", "vllm", "lm_studio", "llamafile"}

# Retired models that litellm's map no longer lists at all: the date the provider shut them down.
RETIRED_UNLISTED = {
    "gemini/gemini-1.0-pro": "2025-02-15",
    "gemini/gemini-pro": "2025-02-15",  # the alias of gemini-1.0-pro
    "gemini/gemini-1.5-pro": "2025-09-24",
    "gemini/gemini-1.5-flash": "2025-09-24",
}

# Name parts of models that are not general chat models, or not stable ones: never suggested.
_NOT_SUGGESTED = {"preview", "exp", "experimental", "latest", "image", "audio", "tts", "realtime", "search",
                  "transcribe", "computer", "use", "robotics", "embedding", "live", "codex", "cyber", "law",
                  "rosalind", "omni", "lyria", "gemma", "learnlm", "vision", "chat", "instruct", "deep", "research",
                  "oss", "customtools"}
_VERSION = re.compile(r"^\d{1,2}(?:\.\d+)?[a-z]?$")
_DATED = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|\d{3})$")


@dataclass(frozen=True)
class ModelIssue:
    """One finding about one model: ``error`` stops a run, ``warning`` is printed."""

    level: Literal["error", "warning"]
    field: str  # "teacher.model", "judges[1].model"
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def model_map() -> dict[str, Any]:
    """litellm's model map: the live one when litellm is imported already, else its bundled file."""
    litellm = sys.modules.get("litellm")
    if litellm is not None and getattr(litellm, "model_cost", None):
        return litellm.model_cost
    return _bundled_map()


@functools.cache
def _bundled_map() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / MAP_FILE
    rows = json.loads(path.read_bytes()) if path.exists() else {}
    # Served the way litellm serves them: a row's `aliases` and a row `alias_of` another are names
    # of that other row; the tables of rules that share the file are not models.
    served = {name: row for name, row in rows.items() if _is_model(row)}
    for name, row in rows.items():
        if _is_model(row):
            for alias in row.get("aliases") or ():
                served.setdefault(alias, row)
        elif isinstance(row, dict) and _is_model(rows.get(row.get("alias_of"))):
            served.setdefault(name, rows[row["alias_of"]])
    return served


def lookup(model: str, cost_map: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]] | None:
    """``(key, entry)`` of the map for a litellm model string, or None.

    The map keys OpenAI models bare (``gpt-4o``) and most others with their provider
    (``gemini/gemini-2.5-pro``); an entry counts only when its provider is the model's.
    """
    cost_map = model_map() if cost_map is None else cost_map
    if "/" not in model:  # litellm finds the provider of a bare name in the map itself
        entry = cost_map.get(model)
        return (model, entry) if _is_model(entry) and model != "sample_spec" else None
    provider, bare = model.split("/", 1)
    for key in (model, bare):
        entry = cost_map.get(key)
        if _is_model(entry) and _same_provider(entry, provider):
            return key, entry
    return None


def _is_model(entry: Any) -> bool:
    return isinstance(entry, dict) and "litellm_provider" in entry  # the file also holds a few tables of rules


def _same_provider(entry: dict[str, Any], provider: str) -> bool:
    owner = str(entry.get("litellm_provider", ""))
    return owner == provider or owner.startswith(provider + "-")


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)) if value else None
    except ValueError:  # the map's own template entry holds prose here
        return None


def is_checked(options: LLMOptions) -> bool:
    """Whether the model is a provider's: a server at ``api_base`` names its models itself."""
    return options.api_base is None and provider_of(options.model) not in LOCAL_PROVIDERS


def check_model(options: LLMOptions, field: str, *, today: date | None = None,
                cost_map: dict[str, Any] | None = None) -> list[ModelIssue]:
    """What litellm's map says about ``options.model`` on ``today`` (default: the real date)."""
    if not is_checked(options):
        return []
    today = today or date.today()
    cost_map = model_map() if cost_map is None else cost_map
    model, where = options.model, f"{field}.model"
    found = lookup(model, cost_map)
    retired = _date(found[1].get("deprecation_date")) if found else _date(RETIRED_UNLISTED.get(model))
    if retired is not None and retired <= today:
        gone = "" if found else " and is no longer in litellm's model map"
        return [ModelIssue("error", where, f"{model!r} was retired on {retired.isoformat()}{gone}; "
                           f"{_instead(model, found, today, cost_map)}")]
    if retired is not None and retired - today <= timedelta(days=NEAR_DAYS):
        days = (retired - today).days
        return [ModelIssue("warning", where, f"{model!r} will be retired on {retired.isoformat()}, in {days} "
                           f"day{'s' if days != 1 else ''}; {_instead(model, found, today, cost_map)}")]
    if found is not None:
        return []
    missing = [name for name in ("usd_per_million_input", "usd_per_million_output") if getattr(options, name) is None]
    if missing and options.max_usd is not None:
        return [ModelIssue("error", where, f"{model!r} is not in litellm's model map, so its price is unknown and "
                           f"max_usd = {options.max_usd:g} cannot be kept; set "
                           f"{' and '.join(f'{field}.{name}' for name in missing)} (US dollars per million "
                           "tokens), or check the model name")]
    if missing:
        return [ModelIssue("warning", where, f"{model!r} is not in litellm's model map: its price is unknown "
                           "(its cost counts as $0; set usd_per_million_input and usd_per_million_output) and so "
                           "is its retirement date")]
    return []


def _instead(model: str, found: tuple[str, dict[str, Any]] | None, today: date, cost_map: dict[str, Any]) -> str:
    choice = suggest(model, today, cost_map)
    successor = found[1].get("successor_model") if found else None
    if choice is None:
        return "choose a current model of the provider (litellm's map lists none of its family)"
    text = f"use {choice!r} instead, the newest model of its provider and family in litellm's map"
    if successor and _in_form(model, successor) != choice and _lasting(lookup(successor, cost_map), today):
        text += f" (the map names {_in_form(model, successor)!r} as its successor)"
    return text


def _lasting(found: tuple[str, dict[str, Any]] | None, today: date) -> bool:
    if found is None:
        return False
    retired = _date(found[1].get("deprecation_date"))
    return retired is None or retired - today > timedelta(days=SUGGEST_DAYS)


def _in_form(model: str, key: str) -> str:
    """``key`` written the way the user wrote ``model`` (``openai/gpt-4o`` or ``gpt-4o``)."""
    provider = provider_of(model)
    if "/" in model and "/" not in key:
        return f"{provider}/{key}"
    return key


def suggest(model: str, today: date | None = None, cost_map: dict[str, Any] | None = None) -> str | None:
    """The newest stable chat model of ``model``'s provider and family with no retirement near.

    Family: the name's leading word (``gpt``, ``gemini``, ``claude``). Among those, a model that
    shares the tier words (``pro``, ``turbo``, ``mini``) comes first, then the highest version, a
    dated snapshot, and the higher price (the flagship of a generation).
    """
    today = today or date.today()
    cost_map = model_map() if cost_map is None else cost_map
    found = lookup(model, cost_map)
    provider = model.split("/", 1)[0] if "/" in model else str(found[1].get("litellm_provider")) if found else "openai"
    bare = model.split("/", 1)[1] if "/" in model else model
    stem = re.match(r"[a-z]+", bare.lower())
    if stem is None:
        return None
    tier = {w for w in bare.lower().split("-")[1:] if w.isalpha()}
    best, best_rank = None, None
    for key, entry in cost_map.items():
        name = key.split("/", 1)[1] if "/" in key else key
        words = name.lower().split("-")
        if (not _is_model(entry) or entry.get("mode") != "chat" or not _same_provider(entry, provider)
                or words[0] != stem.group() or name == bare or _NOT_SUGGESTED & set(words)
                or not _lasting((key, entry), today)):
            continue
        version = next((w for w in words[1:] if _VERSION.match(w)), None)
        if version is None:
            continue
        rank = (tier <= set(words), tuple(int(p) for p in re.findall(r"\d+", version)),
                bool(_DATED.search(name)), float(entry.get("output_cost_per_token") or 0))
        if best_rank is None or rank > best_rank:
            best, best_rank = key, rank
    return _in_form(model, best) if best else None


def api_models(spec: Spec) -> Iterator[tuple[str, LLMOptions]]:
    """``(field, options)`` of every component of ``spec`` that calls a model through litellm."""
    components = (spec.teacher, *spec.judges, *getattr(spec, "systems", ()))
    for component in components:
        if component is not None and isinstance(component.options, LLMOptions):  # an eval run may have no teacher
            yield component.field, component.options


def check_spec(spec: Spec, today: date | None = None) -> list[ModelIssue]:
    """Every model issue of a spec, in the order its tables appear."""
    return [issue for field, options in api_models(spec) for issue in check_model(options, field, today=today)]


def preflight(spec: Spec, context: Context, today: date | None = None) -> None:
    """Log the warnings; raise ConfigError for the errors, unless answers only replay from the cache."""
    issues = check_spec(spec, today)
    errors = [i for i in issues if i.level == "error"]
    for issue in issues:
        if issue.level == "warning" or context.offline:
            context.log(f"[yellow]warning:[/] {issue}")
    if errors and not context.offline:
        raise ConfigError("\n".join(f"{spec.path}: {issue}" for issue in errors))
