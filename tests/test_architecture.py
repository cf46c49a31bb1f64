"""The shape of the package: no import cycles, nothing importing upward into the command line or
the engine, heavy libraries imported only where used, built-in plugins on the public API alone,
and the contracts the engine relies on declared where plugin authors read them."""

import ast
import sys
from pathlib import Path

import dpokd
from dpokd.interfaces import Judge, Task
from dpokd.records import PreferencePair

PACKAGE = Path(dpokd.__file__).parent
# Imported inside the functions that use them, each for its reason.
LAZY = {
    "torch": "seconds to import; only training, generation and plan's memory figures use it",
    "transformers": "seconds to import, and it imports torch",
    "trl": "imports torch and transformers",
    "peft": "imports torch and transformers",
    "bitsandbytes": "imports torch",
    "lm_eval": "an optional extra (dpokd[lm-eval]) that imports datasets; only the lm-eval judge uses it",
    "safetensors": "only saving and loading adapters",
    "datasets": "a second to import; only hub and parquet tasks read with it",
    "tokenizers": "only the tiny student trains a tokenizer",
    "litellm": "about 4 s to import; only where a model is called or priced",
    "diskcache": "30 ms; only where a cache directory is opened",
    "rich": "only where something is printed, so `dpokd --help` stays fast",
    "numpy": "85 ms; only scoring, so `import dpokd` stays fast",
    "scipy": "only the leaderboard's exact tests",
    "matplotlib": "a second to import; only the learning-curve plot",
    "jinja2": "only report.html",
    "huggingface_hub": "only `dpokd push`, model cards and hub lookups",
    "httpx": "only a vLLM server's checks and the direct HTTP path's errors",
    "aiohttp": "only the loopback test server and the direct HTTP path to OpenAI-compatible endpoints",
    "yarl": "aiohttp's URLs: only the direct HTTP path's proxy lookup",
    "openai": "only the direct HTTP path's errors, mapped as litellm maps them (litellm imports it anyway)",
    "certifi": "only the direct HTTP path's TLS certificates, those httpx trusts under litellm",
    "filelock": "only a run's lock",
    "wandb": "an optional tracker, imported where chosen",
    "trackio": "an optional tracker, imported where chosen",
    "psutil": "an optional dependency of accelerate, for memory figures",
    "landlockpy": "the sandbox's harness imports it from the folder dpokd hands it (it runs with -I -S)",
    "pyseccomp": "the sandbox's harness imports it from the folder dpokd hands it (it runs with -I -S)",
    "isolation": "dpokd.sandbox.isolation, which the harness, a script, imports as a sibling",
    "wire": "dpokd.sandbox.wire, which the harness, a script, imports as a sibling",
}
# The command line loads a command's modules when that command runs: `dpokd --help` stays fast.
LAZY_LOADERS = {"dpokd.cli"} | {f"dpokd.cli.{p.stem}" for p in (PACKAGE / "cli").glob("*.py") if p.stem != "__init__"}
TOP = LAZY_LOADERS | {"dpokd.__main__", "dpokd.engine"}  # nothing below imports these
# The public subpackages, beside ``import dpokd``: each lists its API in ``__all__``.
PUBLIC = {"dpokd.data", "dpokd.llm", "dpokd.sandbox", "dpokd.scoring"}
# Known departures, each with what it takes to remove it.
KNOWN: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement names (a package's submodules included)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module
    if base == "dpokd":
        return [base]  # the public API's names, whatever submodule they share a name with
    return [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]


def _imports(module: str) -> list[tuple[str, bool, int]]:
    """``(imported module, inside a function, line)`` for every import of ``module``."""
    found = []

    def walk(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((t, inside, child.lineno) for t in _targets(module, child))
            elif isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                continue  # annotations only
            else:
                walk(child, inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(MODULES[module].read_text()), False)
    return found


def _own(target: str) -> str | None:
    return target if target in MODULES else None


GRAPH = {m: sorted({_own(t) for t, _, _ in _imports(m)} - {None, m} - set(KNOWN)) for m in MODULES if m not in KNOWN}


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_import_graph_has_no_cycles():
    # Imports inside functions count: they hide a cycle until the function runs, they do not remove it.
    assert _cycles(GRAPH) == []


def test_the_batch_path_does_not_import_the_client_that_drives_it():
    # The client hands itself to BatchRunner; batch.py names LLMClient in annotations alone
    # (under TYPE_CHECKING), so neither module needs the other loaded first.
    assert "dpokd.llm.batch" in GRAPH["dpokd.llm.client"]
    assert "dpokd.llm.client" not in GRAPH["dpokd.llm.batch"]
    batch = [t for t, _, _ in _imports("dpokd.llm.batch") if t.startswith("dpokd.llm")]
    assert "dpokd.llm.client" not in batch


def test_the_cycle_check_finds_a_cycle_through_three_modules():
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c", "a"]]


def test_nothing_imports_upward_into_the_command_line_or_the_engine():
    upward = [(m, t) for m, targets in GRAPH.items() for t in targets
              if t in TOP and m not in TOP | {"dpokd.__main__"} and not (m == "dpokd.engine" and t != "dpokd.cli")]
    assert upward == []


def test_imports_inside_functions_are_only_lazy_heavy_libraries():
    # The standard library's modules are cheap and cannot take part in a cycle of dpokd's.
    stray = []
    for module in set(MODULES) - set(KNOWN):
        for target, inside, line in _imports(module):
            root = target.split(".")[0]
            if not inside or root in sys.stdlib_module_names or (root == "dpokd" and module in LAZY_LOADERS):
                continue
            if root not in LAZY:
                stray.append(f"{module}:{line} imports {target}")
    assert stray == []


def test_built_in_plugins_import_only_the_public_api_and_each_other():
    # What a third-party plugin can import (`dpokd` and PUBLIC), and the built-ins' own folder
    # (the HumanEval judge asks the humaneval task's loader for its problems).
    crossing = []
    for module in sorted(set(MODULES) - set(KNOWN)):
        if not module.startswith("dpokd.plugins."):
            continue
        for target, _, line in _imports(module):
            if target.startswith("dpokd.") and not target.startswith("dpokd.plugins.") and target not in PUBLIC:
                crossing.append(f"{module}:{line} imports {target}")
    assert crossing == []


def test_no_module_imports_a_private_name_of_another():
    private = [f"{module}:{node.lineno} imports {a.name}" for module, path in MODULES.items()
               for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)
               for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
               and any(t.startswith("dpokd") for t in _targets(module, node))]
    assert private == []


def test_outcome_files_are_written_and_read_in_scoring_alone():
    # Judges return records; the engine has them recorded, the report names the file an answer is in.
    allowed = {"dpokd.engine", "dpokd.report"}
    readers = sorted(m for m, targets in GRAPH.items() if "dpokd.scoring.outcomes" in targets
                     and not m.startswith("dpokd.scoring") and m not in allowed)
    assert readers == []
    writers = [m for m in MODULES if m.startswith("dpokd.plugins.judges.") and "write_" in MODULES[m].read_text()]
    assert writers == []
    # And those two only write (the engine) or name the file (the report): the files are read by
    # scoring's reader alone, and every other module gets records from scoring's functions.
    readers = sorted(f"{m}:{node.lineno}" for m, path in MODULES.items() if not m.startswith("dpokd.scoring")
                     for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, (ast.Name, ast.Attribute, ast.alias))
                     and "read_outcomes" in (getattr(node, "id", None), getattr(node, "attr", None),
                                             getattr(node, "name", None)))
    assert readers == []


def test_no_function_is_longer_than_50_lines():
    long = [f"{module}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for module, path in MODULES.items() for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50]
    assert long == []


def _exits(tree: ast.AST) -> list[int]:
    """Lines that end the process: ``sys.exit``, ``os._exit``, ``exit``, ``quit``, ``raise SystemExit``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                    and (f.value.id, f.attr) in {("sys", "exit"), ("os", "_exit")}) or \
                    (isinstance(f, ast.Name) and f.id in ("exit", "quit")):
                found.append(node.lineno)
        elif isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "SystemExit":
                found.append(node.lineno)
    return sorted(found)


def test_only_the_command_lines_main_turns_outcomes_into_exit_codes():
    # One mapping from errors to exit statuses (dpokd.cli.main): a command raises an error or returns
    # a status through click; the sandbox's forked children end themselves and are not the CLI.
    stray = [f"{m}:{line}" for m, path in MODULES.items() if m != "dpokd.cli" and not m.startswith("dpokd.sandbox")
             for line in _exits(ast.parse(path.read_text()))]
    assert stray == []
    assert _exits(ast.parse("import sys\nsys.exit(2)\nraise SystemExit(1)\nctx.exit(2)")) == [2, 3]


def test_each_public_subpackage_lists_its_api():
    import importlib

    for name in sorted(PUBLIC):
        module = importlib.import_module(name)
        assert module.__all__ and all(hasattr(module, n) for n in module.__all__), name
        assert module.__doc__ and "public" in module.__doc__.lower(), f"{name}'s docstring says what it is for"


# -- declared contracts ---------------------------------------------------------------------------
def test_a_judge_asks_the_task_eval_split_unless_it_brings_its_own():
    class Tiny(Task):
        name = "tiny"

        def examples(self, split):
            return [dpokd.Example(id=f"{split}-1", prompt="p")]

    class Plain(Judge):
        name = "plain"

        def evaluate(self, systems, task):
            return []

    assert [e.id for e in Plain().eval_examples(Tiny())] == ["eval-1"]


def test_a_repeated_pair_says_so_and_a_new_one_stays_in_trls_format():
    pair = PreferencePair(example_id="a", prompt="p", chosen="c", rejected="r", iteration=2)
    assert "previous" not in pair.model_dump(mode="json")
    repeated = PreferencePair.model_validate({**pair.model_dump(mode="json"), "previous": True})
    assert repeated.previous is True and repeated.model_dump(mode="json")["previous"] is True
