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
