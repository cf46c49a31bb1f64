import os
import subprocess
import sys
from pathlib import Path

import pytest

# No test may leave the machine: litellm's price map comes from its bundled copy, and the HF
# libraries never try the hub.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.pop("DPOKD_OFFLINE", None)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``dpokd`` in a fresh interpreter, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "dpokd", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout)


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
    for system in tomllib.loads(spec.read_text()).get("systems", []):
        if "adapter" in system:
            adapter = copy.parent / system["adapter"]
            adapter.mkdir(parents=True, exist_ok=True)
            (adapter / "adapter_model.safetensors").touch()
    return copy


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """`dpokd run specs/quickstart.toml` as a user runs it, once per session: the folder it ran in,
    the run directory and the finished process (about 30 s on two cores)."""
    home = tmp_path_factory.mktemp("quickstart")
    out = run_cli("run", str(ROOT / "specs" / "quickstart.toml"), cwd=home)
    assert out.returncode == 0, out.stderr[-3000:]
    return home, home / "runs" / "quickstart", out
