"""``dpokd plan``: what a spec's run will ask for and cost, before it costs anything.

No network and no paid call: the prompts come from the task (a dataset that cannot be read
offline leaves the figures that depend on it unknown), the cached answers from the response cache,
the prices from litellm's model map. Each API request is counted once per run, as the cache makes
it: a request already cached, or planned earlier in the run, is not asked again.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from .cache import request_key
from .errors import DpokdError
from .interfaces import Context, Judge
from .llm import LLMClient, LLMOptions, is_local, key_env, provider_of
from .models import lookup
from .records import Example
from .spec import Component, Spec

CHARS_PER_TOKEN = 4  # without a tokenizer, until cached answers give the model's own ratio
SECONDS_PER_ANSWER = 1.0  # a rough latency floor, plus the output at TOKENS_PER_SECOND
TOKENS_PER_SECOND = 50.0


@dataclass
class Requests:
    """One group of API requests: who asks, how many, and what they will cost."""

    stage: str
    what: str
    model: str
    requests: int | None = None
    cached: int | None = None
    uncached: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    output_from: str = "?"
    usd: float | None = None
    usd_batch: float | None = None
    wall_seconds: float | None = None
    note: str = ""


@dataclass
class StudentPlan:
    model: str
    generations_per_iteration: int | None = None
    iterations: int = 1
    dpo_steps_per_iteration: int | None = None
    parameters: int | None = None
    lora_parameters: int | None = None
    weights_gb_16bit: float | None = None
    weights_gb_4bit: float | None = None
    note: str = ""


@dataclass
class Plan:
    spec: str
    name: str
    mode: str
    iterations: int
    requests: list[Requests] = field(default_factory=list)
    student: StudentPlan | None = None
    keys: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        def total(name: str):
            values = [getattr(r, name) for r in self.requests]
            return None if any(v is None for v in values) else sum(values)

        return {name: total(name) for name in ("requests", "cached", "uncached", "input_tokens", "output_tokens",
                                               "usd", "usd_batch")}

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "totals": self.totals()}


def make_plan(spec: Spec) -> Plan:
    """The plan of ``spec``; reads the cache and local files only."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"  # a hub id not in the local cache must fail at once, not download
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    plan = Plan(spec=str(spec.path), name=spec.name, mode=spec.run.mode, iterations=spec.run.iterations)
    context = Context(cache_dir=spec.run.cache_dir, offline=True, seed=spec.run.seed)
    planner = _Planner(spec, context, plan)
    task = spec.task.build(context)
    train = planner.examples(lambda: task.examples("train"), "task")
    evals = None if train is None else planner.examples(lambda: task.examples("eval"), "task")
    if spec.run.mode != "eval":  # an eval run trains nothing: its systems answer the judges only
        planner.teacher(spec.teacher, train, "teacher", "train split")
        planner.student(train)
    planner.judges(task, evals)
    planner.keys()
    return plan


class _Planner:
    def __init__(self, spec: Spec, context: Context, plan: Plan):
        self.spec, self.context, self.plan = spec, context, plan
        self.seen: set[str] = set()  # request keys planned so far: asked once, then cached
        self.cache = context.cache if context.layout.responses.exists() else None  # plan creates no cache

    def examples(self, read, what: str) -> list[Example] | None:
        try:
            return read()
        except DpokdError as exc:
            self.plan.unknown.append(str(exc) if what == "task" else f"{what}: {exc}")
            return None

    # -- API requests -----------------------------------------------------------------------------
    def teacher(self, component: Component | None, examples: list[Example] | None, stage: str, what: str) -> None:
        if component is None or not isinstance(component.options, LLMOptions):
            return
        self.ask(component.options, component.field, stage, f"{component.field}: {what}", examples)

    def ask(self, options: LLMOptions, field: str, stage: str, what: str, examples: list[Example] | None,
            prompts: list[str] | None = None) -> Requests:
        row = Requests(stage=stage, what=what, model=options.model)
        self.plan.requests.append(row)
        if examples is None:
            row.note = "depends on the dataset, which cannot be read here"
            return row
        client = LLMClient(options, self.context, field=field)
        prompts = prompts if prompts is not None else [e.prompt if client.text or not e.messages else e.messages
                                                        for e in examples]
        hits: list[dict[str, Any]] = []
        todo_chars = []
        for example, prompt in zip(examples, prompts):
            request = client.request(prompt, example)
            key = request_key(request)
            hit = self.cache.get(key) if self.cache is not None and key not in self.seen else None
            if hit is not None and not hit.get("refused"):
                hits.append({**hit, "chars": _chars(request)})
            if hit is None and key not in self.seen:
                todo_chars.append(_chars(request))
            self.seen.add(key)
        row.requests, row.uncached = len(examples), len(todo_chars)
        row.cached = row.requests - row.uncached
        answered = [h for h in hits if h.get("prompt_tokens")]
        if answered:  # the model's own tokens per character, from the answers it gave
            ratio = sum(h["prompt_tokens"] for h in answered) / max(1, sum(h["chars"] for h in answered))
            row.input_tokens = round(ratio * sum(todo_chars))
            row.output_tokens = round(sum(h.get("completion_tokens", 0) for h in answered) / len(answered)
                                      * row.uncached)
            row.output_from = f"mean of {len(answered)} cached"
        else:
            row.input_tokens = math.ceil(sum(todo_chars) / CHARS_PER_TOKEN)
            if options.max_tokens is not None:
                row.output_tokens = options.max_tokens * row.uncached
                row.output_from = "max_tokens"
            elif row.uncached == 0:
                row.output_tokens, row.output_from = 0, "nothing to ask"
            else:
                row.note = f"no cached answers to average and no {field}.max_tokens: set it for an upper bound"
        self.price(options, row)
        return row

    def price(self, options: LLMOptions, row: Requests) -> None:
        """Dollars at litellm's live and batch prices, or at the spec's own price override."""
        if row.input_tokens is None or row.output_tokens is None:
            return
        if options.usd_per_million_input is not None or options.usd_per_million_output is not None:
            live = batch = ((options.usd_per_million_input or 0) * row.input_tokens
                            + (options.usd_per_million_output or 0) * row.output_tokens) / 1e6
        elif options.api_base is not None and is_local(options.api_base):
            live = batch = 0.0
        else:
            found = lookup(options.model)
            entry = found[1] if found else {}
            live = _cost(entry, "", row)
            batch = _cost(entry, "_batches", row)
            if live is None:
                row.note = row.note or "no price: the model is not in litellm's map; set usd_per_million_*"
        row.usd, row.usd_batch = live, batch
        if options.batch:
            row.note = row.note or "through the provider's batch API: answers within 24 h"
        elif row.uncached is not None:
            per_answer = SECONDS_PER_ANSWER + (row.output_tokens / max(1, row.uncached)) / TOKENS_PER_SECOND
            by_concurrency = row.uncached * per_answer / options.max_concurrency
            by_rpm = row.uncached / options.rpm * 60 if options.rpm else 0.0
            row.wall_seconds = max(by_concurrency, by_rpm)

    # -- the student ------------------------------------------------------------------------------
    def student(self, train: list[Example] | None) -> None:
        o = self.spec.student.options
        iterations = self.spec.run.iterations
        plan = StudentPlan(model=str(getattr(o, "model", self.spec.student.plugin)), iterations=iterations)
        self.plan.student = plan
        if train is not None:
            plan.generations_per_iteration = len(train)
            batch = getattr(o, "batch_size", 1) * getattr(o, "grad_accum", 1)
            # Every train example can make a pair (fewer when the teacher failed or both agree);
            # mix_previous also trains on the previous iteration's pairs.
            pairs = len(train) * (2 if self.spec.run.mix_previous and iterations > 1 else 1)
            plan.dpo_steps_per_iteration = math.ceil(math.ceil(pairs / batch) * getattr(o, "epochs", 1))
        memory = _weights(o)
        if isinstance(memory, str):
            plan.note = memory
        else:
            plan.parameters, plan.lora_parameters, plan.weights_gb_16bit, plan.weights_gb_4bit = memory

    # -- the judges -------------------------------------------------------------------------------
    def judges(self, task, evals: list[Example] | None) -> None:
        run = self.spec.run
        if self.spec.student is None:
            students = 0
        else:
            students = 1 + (0 if run.mode == "eval" else run.iterations if run.evaluate == "all" else 1)
        # The systems that answer through an API, by name: the teacher and [[systems]] entries.
        answerers = {"teacher": self.spec.teacher, **{c.name: c for c in self.spec.systems}}
        systems = students + len(self.spec.systems) + (self.spec.teacher is not None)
        for component in self.spec.judges:
            judge = component.build(self.context)
            o = component.options
            where = f"{component.field} ({component.plugin})"
            if component.plugin == "lm-eval":
                continue  # runs each local checkpoint on its own machine: no API request
            if _answers_problems(judge):  # execution, humaneval: each system answers its problems
                problems = self.examples(lambda: judge.eval_examples(task), f"{where} eval set")
                n, temperature = getattr(o, "samples", 1), getattr(o, "temperature", None)  # a judge may not sample
                asked = None if problems is None else [s for e in problems for s in e.samples(n, temperature)]
                for answerer in answerers.values():
                    self.teacher(answerer, asked, "evaluate", where)
            elif component.plugin == "teacher-likelihood":
                self.teacher(answerers.get(o.teacher), _first(evals, o.limit), "evaluate", where)
            elif component.plugin == "llm-pairwise":
                examples = _first(evals, o.limit)
                for answerer in answerers.values():
                    self.teacher(answerer, examples, "evaluate", where)
                self.verdicts(component, examples, systems)
            else:
                self.plan.unknown.append(f"{where}: a judge dpokd cannot plan; its API use is not counted")

    def verdicts(self, component: Component, examples: list[Example] | None, systems: int) -> None:
        """A pairwise judge compares every system but the baseline with it, in both orders."""
        o = component.options
        what = f"{component.field}: verdicts, {systems - 1} systems x 2 orders"
        row = Requests(stage="evaluate", what=what, model=o.model)
        self.plan.requests.append(row)
        if examples is None:
            row.note = "depends on the dataset, which cannot be read here"
            return
        row.requests = row.uncached = 2 * len(examples) * (systems - 1)
        row.cached = 0
        row.note = (f"each of {systems - 1} systems against {o.baseline}, in both orders; the answers compared are "
                    "not known yet, so none is counted as cached and the input tokens are estimates")
        answer_tokens = getattr(getattr(self.spec.student, "options", None), "max_new_tokens", 256)
        chars = sum(len(o.system_prompt or "") + len(e.prompt) + len(e.input or "") for e in examples)
        row.input_tokens = 2 * (systems - 1) * math.ceil(chars / CHARS_PER_TOKEN) + row.requests * 2 * answer_tokens
        if o.max_tokens is not None:
            row.output_tokens, row.output_from = row.requests * o.max_tokens, "max_tokens"
        self.price(o, row)

    # -- keys -------------------------------------------------------------------------------------
    def keys(self) -> None:
        needed: dict[str, list[str]] = {}
        components = (self.spec.teacher, *self.spec.judges, *self.spec.systems)
        for component in components:
            if component is None:
                continue
            o = component.options
            if not isinstance(o, LLMOptions) or is_local(o.api_base) or provider_of(o.model) == "hosted_vllm":
                continue
            needed.setdefault(key_env(o), []).append(component.field)
        self.plan.keys = [{"env": env, "for": fields, "set": bool(os.environ.get(env))}
                          for env, fields in needed.items()]


def _answers_problems(judge: Judge) -> bool:
    """A judge with problems of its own choosing (an execution judge), each answered by every system."""
    return type(judge).eval_examples is not Judge.eval_examples


def _first(examples: list[Example] | None, limit: int | None) -> list[Example] | None:
    return None if examples is None else examples[:limit]


def _chars(request: dict[str, Any]) -> int:
    if "prompt" in request:
        return len(request["prompt"])
    return sum(len(m.get("content") or "") for m in request.get("messages", []))


def _cost(entry: dict[str, Any], suffix: str, row: Requests) -> float | None:
    price_in = entry.get(f"input_cost_per_token{suffix}")
    price_out = entry.get(f"output_cost_per_token{suffix}")
    if price_in is None or price_out is None:
        return None
    return price_in * row.input_tokens + price_out * row.output_tokens


def _weights(o) -> tuple[int, int | None, float, float] | str:
    """(parameters, LoRA parameters, GB of weights in 16-bit, GB in 4-bit NF4) from the model's config."""
    model = getattr(o, "model", None)
    if not isinstance(model, str) or not hasattr(o, "load_in_4bit"):
        return "not a Hugging Face student: its memory is not estimated"
    if model.startswith("dpokd:"):
        return f"{model} is built by the run from the spec's tiny_* options: a few MB"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model, revision=getattr(o, "revision", None))
    except Exception:  # not a local directory, not in the HF cache (offline), or not a config
        return f"unknown: {model!r} is neither a local directory nor in the Hugging Face cache"
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        net = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in net.parameters())
    head = net.get_output_embeddings()
    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    quantized = sum(m.weight.numel() for m in linear)
    # NF4 with double quantization: 4 bits a weight plus about 0.127 for the block constants; the
    # rest (embeddings, norms, the output head) stays in 16-bit.
    gb_4bit = (quantized * (4 + 0.127) / 8 + (total - quantized) * 2) / 1e9
    rank = getattr(o, "lora_r", None)
    lora = sum(rank * (m.in_features + m.out_features) for m in linear) if rank else None
    return total, lora, total * 2 / 1e9, gb_4bit


def render(plan: Plan, console) -> None:
    """One table per stage, then the keys, the student, and what could not be known."""
    from rich.markup import escape

    console.print(f"[bold]plan of {plan.spec}[/] ({plan.mode}, {plan.iterations} iteration(s)); "
                  "no request was made")
    for stage in dict.fromkeys(r.stage for r in plan.requests):
        _render_stage(console, [r for r in plan.requests if r.stage == stage], stage)
    if not plan.requests:
        console.print("no API requests: every component runs locally")
    else:
        _render_totals(console, plan.requests)
    if plan.student is not None:
        _render_student(console, plan.student)
    if plan.keys:
        _render_keys(console, plan.keys)
    for line in plan.unknown:
        console.print(f"[yellow]unknown:[/] {escape(line)}", highlight=False)


def _num(value, fmt="{:,}") -> str:
    return "?" if value is None else fmt.format(value)


def _render_stage(console, rows: list[Requests], stage: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table("requests of", "model", "total", "cached", "to ask", "input tok", "output tok",
                  "output from", "live $", "batch $", "wall", title=f"stage: {stage}", title_justify="left")
    for column in table.columns[:2]:
        column.no_wrap = True
    for r in rows:
        table.add_row(escape(r.what), escape(r.model), _num(r.requests), _num(r.cached), _num(r.uncached),
                      _num(r.input_tokens), _num(r.output_tokens), r.output_from, _num(r.usd, "{:.2f}"),
                      _num(r.usd_batch, "{:.2f}"), _duration(r.wall_seconds))
    console.print(table)
    if any(r.output_from == "max_tokens" for r in rows):
        console.print("  output from max_tokens: every answer at its longest, an upper bound")
    if any(None in (r.requests, r.input_tokens, r.output_tokens, r.usd) for r in rows):
        console.print("  ?: unknown, for the reason below")
    for r in rows:
        if r.note:
            console.print(escape(f"  {r.what}: {r.note}"), highlight=False)


def _render_totals(console, requests: list[Requests]) -> None:
    def total(name: str, fmt: str = "{:,}", unit: str = "") -> str:
        values = [getattr(r, name) for r in requests]
        known = [v for v in values if v is not None]
        if not known:
            return "unknown"
        return unit + fmt.format(sum(known)) + ("" if len(known) == len(values) else " + unknown")

    console.print(f"[bold]total[/]: {total('uncached')} of {total('requests')} requests to ask; "
                  f"{total('input_tokens')} input and {total('output_tokens')} output tokens; "
                  f"{total('usd', '{:.2f}', '$')} live, {total('usd_batch', '{:.2f}', '$')} batch")


def _render_student(console, s) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table("student", "value", title="stage: student (local, not paid)", title_justify="left")
    table.add_row("model", escape(s.model))
    table.add_row("generations per iteration", _num(s.generations_per_iteration))
    table.add_row("DPO steps per iteration (at most)", _num(s.dpo_steps_per_iteration))
    if s.generations_per_iteration is None:
        table.add_row("", "? : unknown until the dataset can be read")
    if s.parameters is not None:
        table.add_row("parameters", f"{s.parameters / 1e9:.2f} B" + (
            f" (+ {s.lora_parameters / 1e6:.1f} M LoRA)" if s.lora_parameters else ""))
        table.add_row("weights in 16-bit", f"{s.weights_gb_16bit:.1f} GB")
        table.add_row("weights in 4-bit NF4", f"{s.weights_gb_4bit:.1f} GB")
    else:
        table.add_row("weights", escape(s.note))
    console.print(table)


def _render_keys(console, keys: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table("API key", "needed by", "set", title="keys", title_justify="left")
    for k in keys:
        table.add_row(k["env"], escape(", ".join(k["for"])), "yes" if k["set"] else "[red]no[/]")
    console.print(table)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"
