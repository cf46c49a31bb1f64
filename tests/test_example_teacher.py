"""examples/dpokd-terse: a third-party teacher that calls a model with only ``import dpokd``,
pip-installed and found through its entry point, against the loopback server."""

import ast
import json
import os
import subprocess
import sys

import pytest

from dpokd.testing import LoopbackServer

from .conftest import ROOT
from .test_plugins import pip_install, with_path

EXAMPLE = ROOT / "examples" / "dpokd-terse"
SCRIPT = """
import json, sys
from pathlib import Path
import dpokd
from dpokd.registry import registry
entry = registry().get("teacher", "terse")
options = entry.cls.Options(model="openai/loopback", api_base=sys.argv[1], words=5)
teacher = entry.cls(options, dpokd.Context(cache_dir=Path(sys.argv[2])))
teacher.preflight()
answers = teacher.answer([dpokd.Example(id="a", prompt="What is 2+2?")])
print(json.dumps({"package": entry.package, "texts": [a.text for a in answers], "cached": [a.cached for a in answers]}))
"""


@pytest.fixture(scope="module")
def terse_site(tmp_path_factory):
    return pip_install(EXAMPLE, tmp_path_factory)


def test_the_example_imports_nothing_but_dpokd_and_the_standard_library():
    tree = ast.parse((EXAMPLE / "dpokd_terse.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names - set(sys.stdlib_module_names) == {"dpokd"}


def test_the_installed_teacher_asks_through_the_shared_client_and_caches(terse_site, tmp_path):
    env = {**os.environ, **with_path(terse_site)}
    with LoopbackServer() as server:
        runs = [subprocess.run([sys.executable, "-c", SCRIPT, server.url, str(tmp_path / "cache")],
                               capture_output=True, text=True, env=env, timeout=300) for _ in range(2)]
        asked = [r["messages"][-1]["content"] for r in server.requests]
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert first == {"package": "dpokd-terse", "texts": ["echo: Answer in at most 5 words.\n\nWhat is 2+2?"],
                     "cached": [False]}, runs[0].stderr
    assert second["texts"] == first["texts"] and second["cached"] == [True]
    assert asked == ["Answer in at most 5 words.\n\nWhat is 2+2?"]  # the second run asked nothing
