"""Replay bundles: a run's resolved spec, manifest, results and exactly the cache entries it read.

``dpokd export RUN -o run.tar.gz`` writes one. ``dpokd run run.tar.gz --offline`` replays it on a
machine with no cache and no key: into ``run.replay/`` beside the bundle, with the bundle's entries
as its only cache, and says whether the new ``results.json`` equals the exported one. Students are
trained again (their generations are cached by the weights' fingerprint, so a deterministic
training finds them); task data comes from where the spec says, as in the original run.

A bundle comes from elsewhere and holds generated text: only the members named below are read,
each a plain file, unpacked with tarfile's ``data`` filter, and every cache entry is checked.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

from .cache import JOURNAL, KEY_PATTERN, CacheLayout, ResponseCache, entry_problem, is_refusal
from .errors import ConfigError
from .spec import parse_spec

FORMAT = "dpokd-replay-bundle"
VERSION = 1
SPEC, MANIFEST, RESULTS, CACHE, INFO = "spec.json", "manifest.json", "results.json", "cache.jsonl", "bundle.json"
MEMBERS = (INFO, SPEC, MANIFEST, RESULTS, CACHE)
SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_bundle(path: Path) -> bool:
    return path.name.endswith(SUFFIXES)


# -- export -----------------------------------------------------------------------------------------
def export(run_dir: Path, output: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """Write the bundle of the finished run in ``run_dir``; returns what it holds."""
    manifest = _read_json(run_dir / MANIFEST, "the run's manifest", f"{run_dir} is not a run directory")
    results = _read_json(run_dir / RESULTS, "the run's results",
                         f"the run in {run_dir} is not finished; finish it (`dpokd run SPEC`), then export it")
    spec = manifest.get("spec") if isinstance(manifest, dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("run"), dict):
        raise ConfigError(f"{run_dir / MANIFEST}: has no resolved spec; it was not written by dpokd run")
    journal = run_dir / JOURNAL
    if not journal.exists():
        raise ConfigError(f"{journal}: missing, so which cache entries the run read is unknown (an older dpokd ran it). "
                          f"Run its spec again with --fresh: the cached answers are reused, unpaid, and recorded")
    keys = list(dict.fromkeys(line.strip() for line in journal.read_text(encoding="utf-8").splitlines() if line.strip()))
    cache_dir = Path(cache_dir or spec["run"].get("cache_dir") or "cache")
    if not CacheLayout(cache_dir).responses.is_dir():
        raise ConfigError(f"{cache_dir}: no response cache here; pass the run's cache with --cache-dir")
    rows, missing, refusals = [], [], 0
    for key, value in ResponseCache(cache_dir).items(keys):
        if value is None:
            missing.append(key)
        else:
            refusals += is_refusal(value)
            rows.append(json.dumps({"key": key, "value": value}, ensure_ascii=False, default=str) + "\n")
    if missing:
        raise ConfigError(f"{cache_dir}: {len(missing)} of the {len(keys)} cache entries the run read are gone "
                          f"(first: {missing[0]}); was the cache cleared? Run the spec again to fill them, then export")
    info = {"format": FORMAT, "version": VERSION, "run": spec["run"].get("name"), "entries": len(rows),
            "refusals": refusals, "exported_at": time.time()}
    members = {INFO: json.dumps(info, indent=2), SPEC: json.dumps(spec, indent=2),
               MANIFEST: json.dumps(manifest, indent=2), RESULTS: json.dumps(results, indent=2), CACHE: "".join(rows)}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with tarfile.open(tmp, "w:gz" if not output.name.endswith(".tar") else "w") as tar:
        for name in MEMBERS:
            data = members[name].encode()
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = len(data), 0o644, int(info["exported_at"])
            tar.addfile(member, io.BytesIO(data))
    os.replace(tmp, output)
    return {**info, "bytes": output.stat().st_size}


# -- replay -----------------------------------------------------------------------------------------
def replay_dir(bundle: Path) -> Path:
    """Where a bundle is replayed: ``run.replay/`` beside ``run.tar.gz``."""
    name = bundle.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return bundle.parent / f"{name}.replay"


def unpack(bundle: Path, dest: Path) -> Path:
    """Check the bundle's members and unpack them into ``dest/bundle``; returns that folder."""
    try:
        tar = tarfile.open(bundle)
    except FileNotFoundError:
        raise ConfigError(f"{bundle}: no such file") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ConfigError(f"{bundle}: not a readable tar archive ({exc}); export the run again with `dpokd export`") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ConfigError(f"{bundle}: the archive is damaged ({exc}); export the run again") from None
        names = [m.name for m in members]
        for member in members:
            if member.name not in MEMBERS or not member.isreg():
                raise ConfigError(f"{bundle}: holds {member.name!r}, which is not part of a dpokd bundle (only "
                                  f"{', '.join(MEMBERS)}, as plain files); refusing to unpack it")
        if len(set(names)) != len(names) or set(names) != set(MEMBERS):
            absent = sorted(set(MEMBERS) - set(names))
            problem = f"lacks {', '.join(absent)}" if absent else "holds a member twice"
            raise ConfigError(f"{bundle}: {problem}; it is not a complete dpokd bundle. Export the run again")
        out = dest / "bundle"
        out.mkdir(parents=True, exist_ok=True)
        try:
            tar.extractall(out, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ConfigError(f"{bundle}: cannot unpack it ({exc}); export the run again") from None
    info = _read_json(out / INFO, "the bundle's description", f"{bundle} is not a dpokd bundle")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ConfigError(f"{bundle}: {INFO} does not describe a dpokd bundle")
    if not isinstance(info.get("version"), int) or info["version"] > VERSION:
        raise ConfigError(f"{bundle}: written by a newer dpokd (bundle version {info.get('version')!r}, this one "
                          f"reads {VERSION}); upgrade dpokd")
    return out


def load_entries(path: Path, bundle: Path):
    """The bundle's cache entries, each checked: a well-formed key and a well-formed value."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, value = row["key"], row["value"]
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{bundle}: {CACHE} line {number} is not a cache entry; export the run again") from None
            problem = entry_problem(value) if isinstance(key, str) and KEY_PATTERN.match(key) else "not a cache key"
            if problem:
                raise ConfigError(f"{bundle}: {CACHE} line {number}: the entry is {problem}; export the run again")
            yield key, value


def open_bundle(bundle: Path):
    """Unpack ``bundle`` into its replay folder, fill that folder's cache; returns (spec, exported results)."""
    dest = replay_dir(bundle)
    out = unpack(bundle, dest)
    data = _read_json(out / SPEC, "the bundle's spec", f"{bundle} is not a dpokd bundle")
    if not isinstance(data, dict) or not isinstance(data.get("run"), dict):
        raise ConfigError(f"{bundle}: {SPEC} is not a resolved spec")
    # The run and its cache live in the replay folder, whatever the original machine's paths were.
    data["run"] = {**data["run"], "output_dir": str((dest / "runs").resolve()), "cache_dir": str((dest / "cache").resolve())}
    spec = parse_spec(data, out / SPEC)
    ResponseCache(dest / "cache").add(load_entries(out / CACHE, bundle))
    return spec, _read_json(out / RESULTS, "the exported results", f"{bundle} is not a dpokd bundle")


def compare(run_dir: Path, exported: Any, console=None) -> None:
    """After ``dpokd run BUNDLE`` ran the bundle's spec from its cache: say whether the results are the exported ones."""
    replayed = json.loads((run_dir / RESULTS).read_text())
    if console is not None:
        differences = _differences(exported, replayed)
        if not differences:
            console.print(f"reproduced: {run_dir / RESULTS} is identical to the exported run's")
        else:
            console.print(f"[yellow]warning:[/] {run_dir / RESULTS} differs from the exported run's in "
                          f"{len(differences)} score(s): {'; '.join(differences[:5])}", highlight=False)


def _differences(exported: Any, replayed: Any) -> list[str]:
    def table(results: Any) -> dict[tuple, Any]:
        scores = results.get("scores", []) if isinstance(results, dict) else []
        return {(s.get("judge"), s.get("system"), s.get("metric")): s for s in scores if isinstance(s, dict)}

    if exported == replayed:
        return []
    before, after = table(exported), table(replayed)
    out = []
    for key in sorted(set(before) | set(after), key=str):
        a, b = before.get(key), after.get(key)
        if a != b:
            name = "/".join(str(k) for k in key)
            a_value = a.get("value") if a else "absent"
            b_value = b.get("value") if b else "absent"
            out.append(f"{name}: {a_value} exported, {b_value} replayed" if a_value != b_value else f"{name}: details differ")
    return out or ["the files differ outside the scores"]


def _read_json(path: Path, what: str, absent: str) -> Any:
    if not path.exists():
        raise ConfigError(f"{path}: missing ({what}); {absent}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {what} is not valid JSON ({exc})") from None

