"""``dpokd push``: the dry run lists the files, and a real push through huggingface_hub sends
exactly those files, with their contents, to a loopback server standing in for the hub (the
network boundary: HF_ENDPOINT points at it and it records every request)."""

import base64
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from huggingface_hub import ModelCard

from .conftest import run_cli
from .tracked_run import tracked_run

pytestmark = pytest.mark.slow

MODEL_FILES = {"README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja",
               "tokenizer_config.json", "results.json", "spec.json"}


class Hub(ThreadingHTTPServer):
    """The hub's create-repo, metadata-check, preupload and commit endpoints; every file is a regular
    (inline, base64) one, so a commit carries the files' bytes. Anything else is a 404."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def commits(self) -> dict[str, dict[str, bytes]]:
        """``{"models/ORG/NAME": {path: bytes}}`` of every commit received."""
        out: dict[str, dict[str, bytes]] = {}
        for r in self.requests:
            parts = r["path"].split("/")
            if r["method"] == "POST" and len(parts) > 5 and parts[5] == "commit":
                files = out.setdefault("/".join(parts[2:5]), {})
                for line in r["body"].decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        assert item["value"]["encoding"] == "base64"
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        return out


class HubHandler(BaseHTTPRequestHandler):
    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append({"method": self.command, "path": path, "headers": headers, "body": body})
        parts = path.strip("/").split("/")
        if parts == ["api", "repos", "create"]:
            data = json.loads(body)
            kind = "" if data.get("type", "model") == "model" else f"{data['type']}s/"
            out = {"url": f"{self.server.url}/{kind}{data['organization']}/{data['name']}"}
        elif parts == ["api", "validate-yaml"]:
            out = {"errors": [], "warnings": []}
        elif len(parts) == 6 and parts[0] == "api" and parts[4] == "preupload":
            out = {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                             for f in json.loads(body)["files"]]}
        elif len(parts) == 6 and parts[0] == "api" and parts[4] == "commit":
            out = {"commitUrl": f"{self.server.url}/{parts[2]}/{parts[3]}/commit/{'a' * 40}", "commitOid": "a" * 40}
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        raw = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    server = Hub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tracked_run(tmp_path_factory)[0]


def env(hub, tmp_path, token="hf_loopback_token"):
    return {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home"), "HF_TOKEN": token}


def listed(stdout: str) -> dict[str, set[str]]:
    """``{"model ORG/NAME": {files}}`` from a dry run's lines."""
    out, current = {}, None
    for line in stdout.splitlines():
        if line.startswith("would upload to "):
            current = " ".join(line.split()[3:6:2]).rstrip(":")
            out[current] = set()
        elif line.startswith("  "):
            out[current].add(line.split()[0])
    return out


def test_dry_run_lists_the_adapter_card_results_spec_and_the_pairs(run, hub, tmp_path):
    out = run_cli("push", str(run), "--repo", "me/tiny-kd", "--with-pairs", "--dry-run", env=env(hub, tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert listed(out.stdout) == {"model me/tiny-kd": MODEL_FILES, "dataset me/tiny-kd-pairs": {"README.md", "pairs.jsonl"}}
    assert hub.requests == []  # a dry run asks nothing of the hub


def test_push_sends_exactly_the_listed_files_with_their_contents(run, hub, tmp_path):
    args = ("push", str(run), "--repo", "me/tiny-kd", "--with-pairs", "--private", "--iteration", "1")
    dry = listed(run_cli(*args, "--dry-run", env=env(hub, tmp_path)).stdout)
    out = run_cli(*args, env=env(hub, tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"pushed {len(MODEL_FILES)} files to {hub.url}/me/tiny-kd" in out.stdout

    created = [json.loads(r["body"]) for r in hub.requests if r["path"] == "/api/repos/create"]
    assert [(c["type"], c["organization"], c["name"], c["visibility"]) for c in created] == [
        ("model", "me", "tiny-kd", "private"), ("dataset", "me", "tiny-kd-pairs", "private")]
    assert all(r["headers"].get("authorization") == "Bearer hf_loopback_token"
               for r in hub.requests if r["method"] == "POST")
    sent = hub.commits()
    assert {f"{kind} {repo.split('/', 1)[1]}": set(files) for repo, files in sent.items()
            for kind in [repo.split("/")[0][:-1]]} == dry

    model, pairs = sent["models/me/tiny-kd"], sent["datasets/me/tiny-kd-pairs"]
    adapter = run / "iter_1" / "adapter"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json"):
        assert model[name] == (adapter / name).read_bytes(), name
    assert model["results.json"] == (run / "results.json").read_bytes()
    assert json.loads(model["spec.json"]) == json.loads((run / "manifest.json").read_text())["spec"]
    (tmp_path / "README.md").write_bytes(model["README.md"])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "peft" and card.data.datasets == ["me/tiny-kd-pairs"]
    assert ", 'me/tiny-kd')" in card.text and "iteration 1" in card.text
    assert pairs["pairs.jsonl"] == (run / "iter_1" / "pairs.jsonl").read_bytes()
    assert b"path: pairs.jsonl" in pairs["README.md"]


def test_a_missing_token_is_refused_naming_hf_token_before_any_request(run, hub, tmp_path):
    out = run_cli("push", str(run), "--repo", "me/tiny-kd", env=env(hub, tmp_path, token=""))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "no Hugging Face token: set HF_TOKEN" in " ".join(out.stderr.split())
    assert [r for r in hub.requests if r["path"] != "/api/agent-harnesses"] == []


def test_offline_mode_is_refused_naming_hf_hub_offline(run, hub, tmp_path):
    out = run_cli("push", str(run), "--repo", "me/tiny-kd", env={**env(hub, tmp_path), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2 and "HF_HUB_OFFLINE=1" in out.stderr and hub.requests == []


@pytest.mark.parametrize("args, words", [
    (("--repo", "tiny-kd"), ["--repo: 'tiny-kd' names no owner; expected ORG/NAME"]),
    (("--repo", "me/tiny-kd", "--iteration", "5"), ["--iteration 5:", "has no adapter of iteration 5", "its adapters: 1, 2"]),
])
def test_a_bad_repo_or_iteration_exits_2_naming_it(run, hub, tmp_path, args, words):
    out = run_cli("push", str(run), *args, env=env(hub, tmp_path))
    message = " ".join(out.stderr.split())
    assert out.returncode == 2 and all(w in message for w in words), message
    assert hub.requests == []


def test_an_unfinished_run_is_refused(run, hub, tmp_path):
    copy = tmp_path / "unfinished"
    shutil.copytree(run, copy)
    (copy / "results.json").unlink()
    out = run_cli("push", str(copy), "--repo", "me/tiny-kd", "--dry-run", env=env(hub, tmp_path))
    assert out.returncode == 2 and "the run has not finished (no results.json)" in " ".join(out.stderr.split())


def test_weights_changed_since_training_are_not_pushed(run, hub, tmp_path):
    copy = tmp_path / "changed"
    shutil.copytree(run, copy)
    weights = copy / "iter_2" / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + bytes(4))  # the last four bytes zeroed: finite, and wrong
    out = run_cli("push", str(copy), "--repo", "me/tiny-kd", env=env(hub, tmp_path))
    message = " ".join(out.stderr.split())
    assert out.returncode == 2 and f"{weights}: has changed since iteration 2 trained it" in message, message
    assert hub.requests == []


def test_without_iteration_the_last_trained_adapter_is_pushed(run, hub, tmp_path):
    """An online loop that converged early has fewer adapters than `iterations` says."""
    copy = tmp_path / "converged"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "iter_2")
    out = run_cli("push", str(copy), "--repo", "me/tiny-kd", env=env(hub, tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    model = hub.commits()["models/me/tiny-kd"]
    weights = "adapter_model.safetensors"
    assert model[weights] == (copy / "iter_1" / "adapter" / weights).read_bytes()
    assert model[weights] != (run / "iter_2" / "adapter" / weights).read_bytes()
