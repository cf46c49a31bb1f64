import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from . import preloaded

# No test may leave the machine: litellm's price map comes from its bundled copy, and the HF
# libraries never try the hub.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.pop("DPOKD_OFFLINE", None)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"


def pytest_configure(config):
    """Compile dpokd's modules to bytecode once, before any worker starts. The suite runs hundreds of
    ``dpokd`` commands, each importing dpokd afresh; where PYTHONDONTWRITEBYTECODE is set, none of them
    would write the bytecode, and each would compile every module it imports from source again."""
    if not hasattr(config, "workerinput"):
        import compileall

        compileall.compile_dir(ROOT / "dpokd", quiet=1)


# The longest files, longest first (each a minute or more of CPU): xdist's --dist loadfile hands files
# out in collection order, so a long file collected last would run alone while the other worker idles.
LONGEST_FIRST = ["test_methods.py", "test_own_data.py", "test_replay.py", "test_engine.py", "test_integrity.py",
                 "test_cli.py", "test_seeds.py", "test_docs_outputs.py", "test_systems.py", "test_convergence.py",
                 "test_sandbox_attacks.py", "test_plugins.py", "test_samples_file.py", "test_lm_eval.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests keep their order


@pytest.fixture(autouse=True)
def _environment_kept():
    """A variable a test or an import leaves set in this worker would send every later command to a fresh
    interpreter (seconds each) without a word: the test that left it fails, naming it, and the variable is
    put back. Set up first, so torn down last, after monkeypatch has undone what it set."""
    yield
    if preloaded.started() and (changed := preloaded.differences(dict(os.environ))):
        preloaded.restore(changed)
        pytest.fail(f"this test left the environment changed: {changed}. A test must restore what it sets; a "
                    "variable a library sets on import goes in preloaded.SET_BY_LIBRARIES")


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """Run ``dpokd`` in a process of its own, as a user would: forked from an interpreter with the heavy
    libraries already imported (tests/preloaded.py), or a fresh interpreter when ``fresh`` is set or the
    environment changes what those libraries read on import. A variable set to None in ``env`` is unset."""
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    if not fresh and preloaded.preloadable(full_env):
        return preloaded.run(list(args), full_env, cwd or ROOT, timeout)
    return subprocess.run([sys.executable, "-m", "dpokd", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=full_env, cwd=cwd or ROOT, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


def shipped_spec(spec: Path, home: Path) -> Path:
    """A copy of a shipped spec in ``home``, beside stand-ins for the adapters it reads from earlier runs
    (specs/humaneval_eval.toml judges the adapter specs/codegen_offline.toml trains)."""
    import tomllib

    copy = home / "specs" / spec.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(spec.read_text())
    parsed = tomllib.loads(spec.read_text())
    for judge in parsed.get("judges", []):  # task files an lm-eval judge reads beside the spec
        for task in judge.get("tasks", []):
            if task.endswith((".yaml", ".yml")):
                shutil.copytree((spec.parent / task).parent, (copy.parent / task).parent, dirs_exist_ok=True)
    for system in parsed.get("systems", []):
        if "adapter" in system:
            adapter = copy.parent / system["adapter"]
            adapter.mkdir(parents=True, exist_ok=True)
            (adapter / "adapter_model.safetensors").touch()
    return copy


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """`dpokd run specs/quickstart.toml` as a user runs it, once per test session, whichever workers
    ask for it: the folder it ran in, the run directory and the finished process (about 30 s)."""
    from filelock import FileLock

    # Workers share their session's base folder; a run of its own without xdist.
    xdist = "PYTEST_XDIST_WORKER" in os.environ
    shared = tmp_path_factory.getbasetemp().parent if xdist else tmp_path_factory.mktemp("shared")
    home, record = shared / "quickstart", shared / "quickstart.json"
    with FileLock(str(shared / "quickstart.lock")):
        if not record.exists():
            shutil.rmtree(home, ignore_errors=True)  # a worker whose attempt was cut short
            home.mkdir()
            out = run_cli("run", str(ROOT / "specs" / "quickstart.toml"), cwd=home, fresh=True)
            record.write_text(json.dumps({"returncode": out.returncode, "stdout": out.stdout, "stderr": out.stderr}))
    out = subprocess.CompletedProcess(["dpokd", "run", "quickstart.toml"], **json.loads(record.read_text()))
    assert out.returncode == 0, out.stderr[-3000:]
    return home, home / "runs" / "quickstart", out
