"""Spec validation: every broken spec gives status 2, its field path, and no traceback."""

from pathlib import Path

import dataclasses
import re
import time

import pytest

from dpokd.errors import ConfigError, SpecError
from dpokd.plugins.students.hf_qlora import TRL_LOSSES
from dpokd.plugins.tasks.synthetic import capacity, generate_problems
from dpokd.spec import load_spec

from .conftest import ROOT, shipped_spec

BROKEN = sorted((Path(__file__).parent / "broken_specs").glob("*.toml"))
SPECS = sorted((ROOT / "specs").glob("*.toml"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: ")
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_spec_is_rejected_with_its_field_path(path, cli):
    result = cli("validate", str(path))
    assert result.returncode == 2, result.stderr
    assert expected(path) in result.stderr
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_broken_folder_covers_the_required_cases():
    names = {p.stem for p in BROKEN}
    assert {"toml_syntax", "missing_table", "unknown_plugin", "unknown_key", "wrong_type",
            "out_of_range", "offline_iterations", "seed_too_large", "student_seed_negative",
            "synthetic_n_train", "synthetic_n_eval", "synthetic_template", "student_loss"} <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_validate(path, cli, tmp_path):
    result = cli("validate", str(shipped_spec(path, tmp_path)))
    assert result.returncode == 0, result.stderr


def test_validate_many_exits_2_when_any_is_invalid(cli):
    result = cli("validate", str(SPECS[0]), str(BROKEN[0]))
    assert result.returncode == 2
    assert "ok" in result.stdout and "invalid" in result.stderr


def test_all_problems_of_a_file_are_reported(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[run]\nmode = "static"\niterations = 2\n[task]\nplugin = "synthetic-codegen"\nn_train = -1\n'
                    '[teacher]\nplugin = "nope"\n[extra]\n')
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    message = str(info.value)
    for fragment in ("run.iterations", "task.n_train", "teacher.plugin", "[student]: missing table",
                     "[extra]: unknown table"):
        assert fragment in message


def test_relative_paths_are_relative_to_the_spec_file(tmp_path):
    (tmp_path / "sub").mkdir()
    spec = tmp_path / "sub" / "s.toml"
    spec.write_text('[run]\noutput_dir = "out"\ncache_dir = "../c"\n[task]\nplugin = "synthetic-codegen"\n'
                    '[teacher]\nplugin = "reference"\n[student]\nplugin = "hf-qlora"\nmodel = "dpokd:tiny"\n')
    loaded = load_spec(spec)
    assert loaded.run.output_dir == tmp_path / "sub" / "out"
    assert loaded.run.cache_dir.resolve() == (tmp_path / "c").resolve()
    assert loaded.name == "s"
    assert loaded.resolved()["student"]["lora_r"] == 64


@pytest.mark.parametrize("written, found", [("../phi-2", "phi-2"), ("./phi", "sub/phi"), ("local/phi", "sub/local/phi"),
                                            ("microsoft/phi-2", None)])
def test_a_local_model_is_found_beside_the_spec_wherever_dpokd_runs(tmp_path, monkeypatch, written, found):
    (tmp_path / "sub" / "local" / "phi").mkdir(parents=True)
    spec = tmp_path / "sub" / "s.toml"
    spec.write_text(MINIMAL.replace('"dpokd:tiny"', f'"{written}"').format(task="", run=""))
    monkeypatch.chdir(tmp_path / "sub" / "local")  # not the spec's folder
    model = load_spec(spec).student.options.model
    assert model == (written if found is None else str((tmp_path / found).resolve()))


MINIMAL = ('[task]\nplugin = "synthetic-codegen"\n{task}\n[teacher]\nplugin = "reference"\n'
           '[student]\nplugin = "hf-qlora"\nmodel = "dpokd:tiny"\n[run]\n{run}\n')


def test_seeds_span_numpys_whole_range(tmp_path):
    spec = tmp_path / "s.toml"
    for seed in (0, 2**32 - 1):
        spec.write_text(MINIMAL.format(task="", run=f"seed = {seed}"))
        assert load_spec(spec).run.seed == seed


@pytest.mark.parametrize("levels", [[1], [2], [3], [1, 2, 3], [1, 1, 3], [3, 1]])
def test_synthetic_capacity_is_exactly_what_the_generator_can_make(levels, tmp_path):
    most = capacity(levels)
    problems = generate_problems(levels, most, seed=7)
    assert len({p.name for p in problems}) == most
    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"at most {most} distinct problems"):
        generate_problems(levels, most + 1, seed=7)
    assert time.monotonic() - start < 0.1  # refused by arithmetic, not by trying
    spec = tmp_path / "s.toml"
    spec.write_text(MINIMAL.format(task=f"levels = {levels}\nn_train = {most - 1}\nn_eval = 1", run=""))
    assert load_spec(spec).task.options.n_train == most - 1


def test_capacity_of_the_default_levels():
    # 96 level-3 problems, drawn every third turn: the 97th is needed by problem 291.
    assert capacity([1, 2, 3]) == 290


def test_known_losses_are_exactly_trls():
    from trl import DPOConfig

    help_text = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type").metadata["help"]
    assert set(re.findall(r"`'(\w+)'`", help_text)) == set(TRL_LOSSES)


def test_the_old_mode_name_still_works_with_one_warning_line(tmp_path, cli):
    """`mode = "offline"` (the DPO regime) read like `--offline` (replay): the regime is "static" now."""
    spec = tmp_path / "s.toml"
    spec.write_text((ROOT / "specs" / "quickstart.toml").read_text().replace('mode = "online"', 'mode = "offline"')
                    .replace("iterations = 3", "iterations = 1"))
    out = cli("validate", str(spec))
    assert out.returncode == 0, out.stderr
    assert "(static," in out.stdout
    warning = [line for line in out.stderr.splitlines() if "offline" in line]
    assert warning == ['warning: run.mode = "offline" is now spelled "static" (the student answers once); the old '
                       'spelling will stop working in a later release']


def test_a_spec_not_in_utf8_names_the_file_and_the_line(tmp_path, cli):
    spec = tmp_path / "latin1.toml"
    spec.write_bytes('[run]\nname = "x"\n# résumé, saved by an editor in Latin-1\n'.encode("latin-1"))
    for command in ("validate", "plan", "run"):
        out = cli(command, str(spec), cwd=tmp_path, env={"COLUMNS": "300"})
        assert out.returncode == 2, command
        assert "Traceback" not in out.stderr
        assert f"{spec}: line 3: byte 0xe9 is not UTF-8; a spec (TOML) must be saved as UTF-8" in out.stderr
