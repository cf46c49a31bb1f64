"""The habits every CLI is expected to have: NO_COLOR and --no-color, plain progress lines in
logs, shell completion, and plugin options described in ``plugins --json``."""

import json
import re

import pytest

from .conftest import run_cli
from .tracked_run import tracked_run

COLOR = re.compile(r"\x1b\[[0-9;]*3[0-7]m")  # an SGR foreground color


@pytest.mark.parametrize("how", ["NO_COLOR", "--no-color"])
def test_no_color_removes_colors_even_where_they_are_forced(tmp_path, how):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nmode = 'sideways'\n")
    colored = run_cli("validate", str(bad), env={"FORCE_COLOR": "1"})
    assert colored.returncode == 2 and COLOR.search(colored.stderr), colored.stderr  # the check can see colors
    args, extra = (("--no-color",), {}) if how == "--no-color" else ((), {"NO_COLOR": "1"})
    plain = run_cli(*args, "validate", str(bad), env={"FORCE_COLOR": "1", **extra})
    assert plain.returncode == 2 and "invalid" in plain.stderr
    assert not COLOR.search(plain.stderr), plain.stderr


@pytest.mark.slow
def test_progress_is_plain_lines_when_the_output_is_not_a_terminal(tmp_path_factory):
    _, out = tracked_run(tmp_path_factory)
    assert "\x1b[" not in out.stdout and "\r" not in out.stdout
    training = [line for line in out.stdout.splitlines() if line.startswith("DPO training: ")]
    assert [line.split()[2] for line in training] == ["1/2", "2/2"] * 2  # two steps, two iterations
    assert any(re.fullmatch(r"student generates: 8/8 \(100%\) \d+\.\ds \d+\.\d/s", line) for line in out.stdout.splitlines())


def test_shell_completion_uses_clicks_mechanism():
    script = run_cli(env={"_DPOKD_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "_dpokd_completion" in script.stdout
    words = run_cli(env={"_DPOKD_COMPLETE": "bash_complete", "COMP_WORDS": "dpokd pu", "COMP_CWORD": "1"})
    assert [line.split(",")[1] for line in words.stdout.split()] == ["push"]


def test_plugins_json_describes_every_option_with_its_type_and_default():
    out = run_cli("plugins", "--json")
    rows = json.loads(out.stdout)["plugins"]
    qlora = next(r for r in rows if r["name"] == "hf-qlora")
    assert qlora["options"] == list(qlora["option_details"])  # the names keep their place and order
    assert qlora["option_details"]["lora_r"] == {"type": "int", "required": False, "default": 64,
                                                 "description": "LoRA rank"}
    assert qlora["option_details"]["report_to"]["default"] == []
    assert all(d["description"] for r in rows for d in r["option_details"].values())
