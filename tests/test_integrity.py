"""Data integrity of a run: what --fresh may delete, data joined by id, one process per run, damaged files.

One small run (LeetCode rows from a local file, the reference teacher, a tiny student) is built once;
each test restores it and breaks one thing, as a user's disk, editor or second terminal would.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpokd.errors import ConfigError, PluginError
from dpokd.interfaces import Context
from dpokd.plugins.tasks.leetcode import LeetCodeCodegen
from dpokd.records import Completion, Example
from dpokd.runs import MARKER, RunDir
from dpokd.spec import load_spec
from dpokd.testing import LoopbackServer

from .conftest import FIXTURES, ROOT, run_cli
from .runs_on_disk import rewrite_tensors

pytestmark = pytest.mark.slow

SPEC = """
[run]
name = "{name}"
output_dir = "runs"
cache_dir = "cache"

[task]
plugin = "leetcode-codegen"
dataset = "lc.jsonl"
eval_fraction = 0.25

[teacher]
{teacher}

[student]
plugin = "hf-qlora"
model = "dpokd:tiny"
tiny_hidden = 64
tiny_layers = 1
lora_r = 4
epochs = 1
batch_size = 8
max_length = 256
max_new_tokens = 8
gen_batch_size = 16

[[judges]]
plugin = "teacher-likelihood"
"""
REFERENCE = 'plugin = "reference"'


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A finished run, and a pristine copy of it and its data."""
    base = tmp_path_factory.mktemp("integrity")
    shutil.copy(FIXTURES / "leetcode.jsonl", base / "lc.jsonl")
    (base / "run.toml").write_text(SPEC.format(name="lc", teacher=REFERENCE))
    out = run_cli("run", str(base / "run.toml"))
    assert out.returncode == 0, out.stderr[-3000:]
    shutil.copytree(base / "runs" / "lc", base / "pristine")
    shutil.copy(base / "lc.jsonl", base / "pristine.jsonl")
    return base


@pytest.fixture
def run(built):
    """The finished run, restored: (spec path, run directory)."""
    target = built / "runs" / "lc"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(built / "pristine", target)
    shutil.copy(built / "pristine.jsonl", built / "lc.jsonl")
    return built / "run.toml", target


def unfinish(run_dir: Path, last: str) -> None:
    """Leave the run as if stopped right after stage ``last``."""
    state = json.loads((run_dir / "state.json").read_text())["finished"]
    (run_dir / "state.json").write_text(json.dumps({"finished": state[: state.index(last) + 1]}))


def refused(out, *words: str) -> None:
    """Exit 2, one clear message with every word in it, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    message = " ".join(out.stderr.split())
    for word in words:
        assert word in message, (word, message)


# -- 5: --fresh deletes only a run --------------------------------------------------------------
@pytest.mark.parametrize("file_name", ["...toml", "..toml"])
def test_a_file_name_that_is_no_run_name_is_refused_and_fresh_deletes_nothing(tmp_path, file_name):
    (tmp_path / "data.jsonl").write_text("{}\n")
    other = tmp_path / "runs" / "other"
    other.mkdir(parents=True)
    (other / "results.json").write_text("{}")
    spec = tmp_path / file_name
    spec.write_text(SPEC.format(name="x", teacher=REFERENCE).replace('name = "x"\n', ""))
    out = run_cli("run", str(spec), "--fresh")
    refused(out, "run.name", "not a valid run name", "set [run] name")
    assert spec.exists() and (tmp_path / "data.jsonl").exists() and (other / "results.json").exists()


def test_fresh_refuses_a_directory_that_is_not_a_run(tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.format(name="thesis", teacher=REFERENCE).replace('output_dir = "runs"', 'output_dir = "."'))
    refused(run_cli("run", str(spec), "--fresh"), "--fresh would delete", str(mine), MARKER)
    refused(run_cli("run", str(spec)), "is not a dpokd run directory")
    assert (mine / "chapter1.tex").read_text() == "precious"


def test_fresh_removes_the_runs_own_files_and_keeps_the_users(run):
    _, run_dir = run
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "cache").mkdir()
    (run_dir / "cache" / "entry").write_text("mine too")
    kept = RunDir(run_dir).create(fresh=True)
    assert kept == ["cache", "notes.txt"]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([MARKER, ".dpokd-run.lock", "cache", "notes.txt"])
    assert (run_dir / "cache" / "entry").read_text() == "mine too"


# -- 6: records join by id; changed data is refused ---------------------------------------------
def _problems(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_after_the_data_changed_is_refused_naming_the_split_and_count(run):
    spec, run_dir = run
    unfinish(run_dir, "iter_1/student")
    data = run_dir.parent.parent / "lc.jsonl"
    task = LeetCodeCodegen(LeetCodeCodegen.Options(dataset=str(data), eval_fraction=0.25), Context())
    train_id = task.examples("train")[0].id.split("/")[1]
    eval_id = task.examples("eval")[0].id.split("/")[1]
    rows = _problems(data)
    for row in rows:
        if str(row["id"]) == train_id:
            row["content"] += " Return it modulo 7."
    rows = [r for r in rows if str(r["id"]) != eval_id]  # a lost line
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_cli("run", str(spec))
    refused(out, "data changed", f"train split: 1 of {len(task.examples('train'))} examples changed (1 edited",
            f"eval split: 1 of {len(task.examples('eval'))} examples changed (0 edited, 0 new, 1 gone)", "--fresh")
    assert not (run_dir / "iter_1" / "pairs.jsonl").exists() or \
        (run_dir / "iter_1" / "pairs.jsonl").read_bytes() == (run_dir.parent.parent / "pristine" / "iter_1" / "pairs.jsonl").read_bytes()
    assert "iter_1/pairs" not in json.loads((run_dir / "state.json").read_text())["finished"]


def test_pairs_join_answers_by_example_id_not_by_position(run):
    from dpokd.engine import Engine

    spec, run_dir = run
    engine = Engine(load_spec(spec))
    train = engine.task.examples("train")
    chosen = [Completion.model_validate_json(l) for l in (run_dir / "teacher.jsonl").read_text().splitlines()]
    rejected = [Completion.model_validate_json(l) for l in (run_dir / "iter_1" / "rejected.jsonl").read_text().splitlines()]
    engine.run.unmark("iter_1/pairs")
    engine.pairs(1, train, chosen[::-1], rejected[1:] + rejected[:1])
    pairs = [json.loads(l) for l in (run_dir / "iter_1" / "pairs.jsonl").read_text().splitlines()]
    by_id = {e.id: e for e in train}
    assert len(pairs) == len(train)
    for pair in pairs:
        example = by_id[pair["example_id"]]
        assert pair["prompt"] == example.prompt and pair["chosen"] == example.reference


@pytest.mark.parametrize("damage", ["lost", "repeated"])
def test_a_lost_or_repeated_answer_line_is_an_error_not_a_mispairing(run, damage):
    spec, run_dir = run
    unfinish(run_dir, "iter_1/student")
    lines = (run_dir / "teacher.jsonl").read_text().splitlines(keepends=True)
    lines = lines[:1] + lines[2:] if damage == "lost" else lines[:2] + lines[1:]
    (run_dir / "teacher.jsonl").write_text("".join(lines))
    out = run_cli("run", str(spec))
    if damage == "lost":
        refused(out, "teacher.jsonl", f"has no answer for 1 of {len(lines) + 1} train examples", "--fresh")
    else:
        refused(out, "teacher.jsonl", "more than one answer for example", "--fresh")


def test_answers_come_back_in_the_order_asked_whatever_order_a_plugin_returns():
    from dpokd.engine import _joined

    examples = [Example(id=i, prompt=i) for i in "abc"]
    shuffled = [Completion(example_id=i, text=i.upper()) for i in "cab"]
    assert [a.text for a in _joined(examples, shuffled, "teacher")] == ["A", "B", "C"]
    with pytest.raises(PluginError, match="answered 2 times for 3 prompts: no answer for 1 example.*'a'"):
        _joined(examples, shuffled[:1] + shuffled[2:], "teacher")


def test_a_hub_dataset_revision_is_an_option_recorded_in_the_manifest(tmp_path):
    spec = tmp_path / "hub.toml"
    spec.write_text(SPEC.format(name="hub", teacher=REFERENCE).replace(
        'dataset = "lc.jsonl"', 'dataset = "greengerong/leetcode"\nrevision = "8f3c0e1"'))
    assert load_spec(spec).resolved()["task"]["revision"] == "8f3c0e1"
    spec.write_text(SPEC.format(name="hub", teacher=REFERENCE).replace('dataset = "lc.jsonl"',
                                                                       'dataset = "lc.jsonl"\nrevision = "main"'))
    refused(run_cli("validate", str(spec)), "task.revision", "hub dataset only")


# -- 7: one process per run ---------------------------------------------------------------------
def test_a_second_run_of_the_same_directory_exits_2_naming_the_first(built, tmp_path):
    with LoopbackServer(lambda body: "def f():\n    return 1") as server:
        server.when(lambda body: True, {"hang": True})
        teacher = f'plugin = "litellm"\nmodel = "openai/loopback"\napi_base = "{server.url}"\nmax_concurrency = 2'
        spec = built / "locked.toml"
        spec.write_text(SPEC.format(name="locked", teacher=teacher))
        first = subprocess.Popen([sys.executable, "-m", "dpokd", "run", str(spec)], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not server.requests and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.requests and first.poll() is None, "the first run never reached its teacher"
            asked = len(server.requests)
            second = run_cli("run", str(spec), timeout=120)
            refused(second, str(built / "runs" / "locked"), "in use by another dpokd process", f"PID {first.pid}")
            assert len(server.requests) == asked  # the second paid for nothing
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    # A killed holder leaves no stale lock behind.
    with RunDir(built / "runs" / "locked").lock():
        pass


# -- 8: damaged files are named, with what to do ------------------------------------------------
DAMAGE = {
    "state truncated": ("state.json", lambda t: t[:12], "not valid JSON"),
    "state empty object": ("state.json", lambda t: "{}", "no list of finished stages"),
    "manifest truncated": ("manifest.json", lambda t: t[: len(t) // 2], "not valid JSON"),
    "manifest empty object": ("manifest.json", lambda t: "{}", 'no "spec" table'),
    "results truncated": ("results.json", lambda t: t[: len(t) // 2], "not valid JSON"),
    "results empty object": ("results.json", lambda t: "{}", "no integer schema_version"),
    "results from a newer dpokd": ("results.json", lambda t: json.dumps({**json.loads(t), "schema_version": 2}),
                                   "written by a newer dpokd (results schema 2"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_run_file_exits_2_naming_it_and_what_to_do(run, case):
    spec, run_dir = run
    name, damage, what = DAMAGE[case]
    path = run_dir / name
    path.write_text(damage(path.read_text()))
    remedy = "upgrade dpokd" if "newer" in case else ("delete it and re-run" if name == "results.json" else "--fresh")
    refused(run_cli("run", str(spec)), str(path), what, remedy)
    if name == "results.json":
        refused(run_cli("leaderboard", str(run_dir)), str(path), what, remedy)


def test_deleted_results_are_evaluated_again(run):
    spec, run_dir = run
    def scores():
        data = json.loads((run_dir / "results.json").read_text())
        return {(s["judge"], s["system"], s["metric"]): s["value"] for s in data["scores"]}

    before = scores()
    (run_dir / "results.json").unlink()
    out = run_cli("run", str(spec))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "evaluate done" in out.stdout
    assert scores() == pytest.approx(before, rel=1e-4)  # a student loaded from disk: float noise in its NLL


def test_a_garbled_pairs_line_exits_2_naming_file_and_line(run):
    spec, run_dir = run
    unfinish(run_dir, "iter_1/pairs")
    pairs = run_dir / "iter_1" / "pairs.jsonl"
    lines = pairs.read_text().splitlines(keepends=True)
    lines[2] = lines[2][:40] + "\n"
    pairs.write_text("".join(lines))
    refused(run_cli("run", str(spec)), str(pairs), "line 3 is not valid JSON", "--fresh")


@pytest.mark.parametrize("damage", ["deleted", "truncated", "random bytes"])
def test_a_damaged_adapter_exits_2_instead_of_a_traceback_or_nan(run, damage):
    """What the weights file itself shows, for an adapter with no checksum (a run recorded before
    dpokd kept them, or an eval system's own `adapter`)."""
    spec, run_dir = run
    unfinish(run_dir, "iter_1/train")
    adapter = run_dir / "iter_1" / "adapter"
    (run_dir / "iter_1" / "adapter.sha256").unlink()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    del manifest["adapter_checksums"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    weights = adapter / "adapter_model.safetensors"
    if damage == "deleted":
        shutil.rmtree(adapter)
        refused(run_cli("run", str(spec)), str(adapter), "is missing", "--fresh")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        refused(run_cli("run", str(spec)), str(weights), "cannot read the adapter", "--fresh")
    else:
        # Bytes 0xFF are NaN in every float type; without the check these load and teacher_nll = nan.
        rewrite_tensors(weights, lambda n: b"\xff" * n)
        refused(run_cli("run", str(spec)), str(weights), "NaN or infinite", "--fresh")
    assert "evaluate" not in json.loads((run_dir / "state.json").read_text())["finished"]


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "config edited", "record deleted"])
def test_an_adapter_changed_after_training_is_refused_even_with_finite_weights(run, damage):
    """Zeroed LoRA weights are finite and load as the base model: only the checksum recorded when the
    train stage saved them shows that the scores would be the base's, not the trained student's."""
    spec, run_dir = run
    unfinish(run_dir, "iter_1/train")
    iter_dir, adapter = run_dir / "iter_1", run_dir / "iter_1" / "adapter"
    # The record is sha256sum's own format, and the card rewritten after evaluation is not in it.
    assert subprocess.run(["sha256sum", "-c", "adapter.sha256"], cwd=iter_dir, capture_output=True).returncode == 0
    assert "README.md" not in (iter_dir / "adapter.sha256").read_text()
    if damage == "record deleted":  # not taken for a run recorded before checksums: its manifest says
        (iter_dir / "adapter.sha256").unlink()
        refused(run_cli("run", str(spec)), str(iter_dir / "adapter.sha256"), "is missing", "--fresh")
        return
    changed = {"zeroed": "adapter_model.safetensors", "truncated": "adapter_model.safetensors",
               "config edited": "adapter_config.json"}[damage]
    if damage == "zeroed":
        rewrite_tensors(adapter / changed, lambda n: b"\0" * n)
    elif damage == "truncated":
        (adapter / changed).write_bytes((adapter / changed).read_bytes()[:1000])
    else:
        config = json.loads((adapter / changed).read_text())
        (adapter / changed).write_text(json.dumps({**config, "lora_alpha": config["lora_alpha"] * 2}))
    assert subprocess.run(["sha256sum", "-c", "adapter.sha256"], cwd=iter_dir, capture_output=True).returncode != 0
    refused(run_cli("run", str(spec)), str(adapter / changed), "has changed since iteration 1 trained it",
            "adapter.sha256", "--fresh")
    assert "evaluate" not in json.loads((run_dir / "state.json").read_text())["finished"]


def test_output_dir_pointing_at_a_file_exits_2(tmp_path):
    (tmp_path / "runs").write_text("not a directory")
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.format(name="s", teacher=REFERENCE))
    refused(run_cli("run", str(spec)), "run.output_dir", str(tmp_path / "runs"), "is a file")


SHELL = r"""
set -e
mount -t tmpfs -o size=1m tmpfs "$RUNS"
cp -a "$PRISTINE" "$RUNS/lc"
"$PY" - <<'EOF'
import json, os
run = os.path.join(os.environ["RUNS"], "lc")
state = json.load(open(f"{run}/state.json"))["finished"]
json.dump({"finished": state[: state.index("iter_1/pairs") + 1]}, open(f"{run}/state.json", "w"))
import shutil; shutil.rmtree(f"{run}/iter_1/adapter")
st = os.statvfs(run)
with open(os.environ["RUNS"] + "/filler", "wb") as fh:  # leave three pages: the train stage needs more
    fh.write(b"\0" * (st.f_bavail * st.f_frsize - 3 * 4096))
EOF
set +e
"$PY" -m dpokd run "$SPEC" > "$OUT/full.out" 2> "$OUT/full.err"; echo $? > "$OUT/full.rc"
cp "$RUNS/lc/state.json" "$OUT/state.json"; ls -a "$RUNS/lc" "$RUNS/lc/iter_1" > "$OUT/ls"
rm "$RUNS/filler"
"$PY" -m dpokd run "$SPEC" > "$OUT/again.out" 2> "$OUT/again.err"; echo $? > "$OUT/again.rc"
"""


def test_a_disk_that_fills_mid_stage_exits_2_keeps_nothing_half_written_and_resumes(built, tmp_path):
    """A real full disk: a 1 MB tmpfs in a mount namespace of its own, mounted over the run's folder."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount a small tmpfs")
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode()[:200]}")
    base = tmp_path / "base"
    shutil.copytree(built, base, ignore=shutil.ignore_patterns("runs", "pristine*", "locked*"))
    (base / "runs").mkdir()
    shutil.copytree(built / "pristine", base / "pristine")
    # The manifest records the absolute paths the run was made with: a run moved elsewhere is another spec.
    manifest = base / "pristine" / "manifest.json"
    manifest.write_text(manifest.read_text().replace(str(built), str(base)))
    shutil.copy(built / "pristine.jsonl", base / "lc.jsonl")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "RUNS": str(base / "runs"), "PRISTINE": str(base / "pristine"), "SPEC": str(base / "run.toml"),
           "OUT": str(out), "PY": sys.executable, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["unshare", "--mount", "bash", "-c", SHELL], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    err = " ".join((out / "full.err").read_text().split())
    assert (out / "full.rc").read_text().strip() == "2", err[-3000:]
    assert "no space left on the device" in err and "re-run the same command to resume" in err and "Traceback" not in err
    finished = json.loads((out / "state.json").read_text())["finished"]
    assert "iter_1/pairs" in finished and "iter_1/train" not in finished
    listing = (out / "ls").read_text()
    assert ".tmp" not in listing and "adapter" not in listing.split("iter_1:")[1]  # nothing half-written
    again = (out / "again.err").read_text()
    assert (out / "again.rc").read_text().strip() == "0", again[-3000:]
    assert "iter_1/train done" in (out / "again.out").read_text()


# -- bad LeetCode data files --------------------------------------------------------------------
def _leetcode(path: Path) -> LeetCodeCodegen:
    return LeetCodeCodegen(LeetCodeCodegen.Options(dataset=str(path)), Context())


@pytest.mark.parametrize("name, text, words", [
    ("numbers.csv", "id,content,python\n1,123,def f(): pass\n",
     ["task.problem_column", "column 'content'", "holds int values (row 1", "expected text"]),
    ("lists.jsonl", '{"id": 1, "content": ["a", "b"], "python": "def f(): pass"}\n',
     ["task.problem_column", "holds list values (row 1"]),
    ("empty.jsonl", "", ["task.dataset", "is empty", "columns id, content and python"]),
    ("empty.csv", "", ["task.dataset", "is empty"]),
    ("header.csv", "id,content,python\n", ["task.dataset", "has no rows"]),
    ("cut.jsonl", '{"id": 1, "content": "x"\n', ["task.dataset", "cannot read", "as jsonl", "JSON parse error"]),
    ("twice.jsonl", '{"id": 7, "content": "a", "python": "x = 1"}\n{"id": 7, "content": "b", "python": "x = 2"}\n',
     ["task.id_column", "id '7' is in rows 1 and 2", "must be unique"]),
])
def test_a_bad_leetcode_file_is_a_clear_config_error(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        _leetcode(path).examples("train")
    for word in words:
        assert word in str(caught.value)
    assert str(path) in str(caught.value)
