"""The run directory: manifest, finished stages, results. What makes a run resumable."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .errors import SpecError
from .records import Score


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    def create(self, fresh: bool) -> None:
        if fresh and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    # -- state ------------------------------------------------------------------------------------
    def finished(self) -> list[str]:
        if not self.state_file.exists():
            return []
        return json.loads(self.state_file.read_text())["finished"]

    def is_done(self, stage: str) -> bool:
        return stage in self.finished()

    def mark_done(self, stage: str) -> None:
        finished = self.finished()
        if stage not in finished:
            finished.append(stage)
        write_json(self.state_file, {"finished": finished})

    # -- manifest ---------------------------------------------------------------------------------
    def check_spec(self, resolved: dict[str, Any], spec_path: Path) -> None:
        """Refuse to continue a run whose spec changed, naming the changed fields."""
        manifest = self.path / "manifest.json"
        if not manifest.exists():
            return
        before = json.loads(manifest.read_text())["spec"]
        changed = sorted(set(_flatten(before).items()) ^ set(_flatten(resolved).items()))
        fields = sorted({key for key, _ in changed})
        if fields:
            raise SpecError(
                f"the run in {self.path} was started with a different spec; changed: {', '.join(fields)}. "
                "Re-run with --fresh to start over, or give the run a new [run] name",
                path=str(spec_path))

    def write_manifest(self, resolved: dict[str, Any], extra: dict[str, Any]) -> None:
        import importlib.metadata as md

        versions = {}
        for package in ("dpokd", "torch", "transformers", "trl", "peft", "bitsandbytes", "litellm", "datasets"):
            try:
                versions[package] = md.version(package)
            except md.PackageNotFoundError:
                versions[package] = None
        write_json(self.path / "manifest.json", {
            "spec": resolved, "versions": versions, "git_commit": _git_commit(),
            "platform": platform.platform(), "python": platform.python_version(), **extra})

    # -- results ----------------------------------------------------------------------------------
    def write_results(self, scores: list[Score]) -> None:
        write_json(self.path / "results.json", {"schema_version": 1, "scores": [s.model_dump(mode="json") for s in scores]})

    def results(self) -> list[Score]:
        data = json.loads((self.path / "results.json").read_text())
        return [Score.model_validate(s) for s in data["scores"]]


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a killed process leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _flatten(data: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        out = {}
        for i, value in enumerate(data):
            out.update(_flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: json.dumps(data, sort_keys=True)}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None
