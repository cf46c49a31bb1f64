"""Spec validation: every broken spec gives status 2, its field path, and no traceback."""

from pathlib import Path

import pytest

from dpokd.errors import SpecError
from dpokd.spec import load_spec

from .conftest import ROOT

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
            "out_of_range", "offline_iterations"} <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_validate(path, cli):
    result = cli("validate", str(path))
    assert result.returncode == 0, result.stderr


def test_validate_many_exits_2_when_any_is_invalid(cli):
    result = cli("validate", str(SPECS[0]), str(BROKEN[0]))
    assert result.returncode == 2
    assert "ok" in result.stdout and "invalid" in result.stderr


def test_all_problems_of_a_file_are_reported(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[run]\nmode = "offline"\niterations = 2\n[task]\nplugin = "synthetic-codegen"\nn_train = -1\n'
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
