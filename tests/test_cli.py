"""The command line: version, help, exit codes, and the start-up path staying light."""

import json
import subprocess
import sys

import dpokd

from .conftest import ROOT

HEAVY = ("torch", "transformers", "trl", "peft", "bitsandbytes", "litellm")


def test_version_and_help(cli):
    assert cli("--version").stdout.strip() == f"dpokd, version {dpokd.__version__}"
    for flag in ("-h", "--help"):
        result = cli(flag)
        assert result.returncode == 0
        for command in ("run", "validate", "plugins", "leaderboard", "humaneval", "cache"):
            assert command in result.stdout


def test_usage_error_exits_2_without_traceback(cli):
    result = cli("validate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = cli("run", "does/not/exist.toml")
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr


def test_startup_path_imports_no_heavy_library():
    spec = ROOT / "specs" / "quickstart.toml"
    script = f"""
import sys, json
import dpokd, dpokd.cli, dpokd.spec
from dpokd.cli import cli
for args in (["validate", r"{spec}"], ["plugins", "--json"], ["--help"]):
    try:
        cli.main(args=args, standalone_mode=False)
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_reference_specs_without_keys_stop_before_any_work(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    for name in ("codegen_offline", "codegen_online", "summary_offline", "summary_online"):
        out = subprocess.run([sys.executable, "-m", "dpokd", "run", str(ROOT / "specs" / f"{name}.toml")],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        for fragment in ("GEMINI_API_KEY", "--offline", "quickstart"):
            assert fragment in out.stderr
        assert "Traceback" not in out.stderr
        assert not (tmp_path / "runs").exists()  # nothing was started
