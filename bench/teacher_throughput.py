"""Teacher throughput: dpokd's client at concurrency 16 vs a sequential loop of litellm.completion.

400 prompts against the loopback server at 50 ms per answer. The sequential loop is how the
reference experiment queried its teacher. A second baseline is bare ``litellm.acompletion`` under an
``asyncio.Semaphore(16)``, with no cache, accounting or progress: the most litellm itself does in one
process, so dpokd's share of it is what dpokd's own bookkeeping costs. Also the same job replayed
from the cache.

A second scenario is a real teacher's pace: 2,000 prompts at 1 s per answer, at concurrency 64 and
256, each in a fresh client process (its peak resident memory is the client's), against the ideal
N x latency / concurrency.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from contextlib import contextmanager
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _harness import Bench, timer  # noqa: E402

from dpokd.interfaces import Context  # noqa: E402
from dpokd.plugins.teachers.litellm import LiteLLMTeacher  # noqa: E402
from dpokd.records import Example  # noqa: E402


N, LATENCY, CONCURRENCY = 400, 0.05, 16
# A model litellm has a price for, as a real teacher is: its cost lookup is the common path.
MODEL = "openai/gpt-4o-mini"


SLOW_N, SLOW_LATENCY, SLOW_CONCURRENCY = 2000, 1.0, (64, 256)

CLIENT = """
import json, resource, sys, time
from pathlib import Path
import litellm  # imported before the clock, as a run's preflight does
from dpokd.interfaces import Context
from dpokd.plugins.teachers.litellm import LiteLLMTeacher
from dpokd.records import Example

url, model, n, concurrency, cache = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
examples = [Example(id=f"p{i}", prompt=f"prompt {i}") for i in range(n)]
teacher = LiteLLMTeacher(LiteLLMTeacher.Options(model=model, api_base=url, max_concurrency=concurrency),
                         Context(cache_dir=Path(cache)))
before = rss_mb()
start = time.perf_counter()
answers = teacher.answer(examples)
wall = time.perf_counter() - start
print(json.dumps({"wall": wall, "rss_before_mb": before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "ok": sum(a.ok for a in answers)}))
"""


@contextmanager
def server_process(latency: float = LATENCY):
    """The loopback server in its own process, so it does not share the client's GIL."""
    proc = subprocess.Popen([sys.executable, "-m", "dpokd.testing", "0", str(latency)], stdout=subprocess.PIPE, text=True)
    try:
        yield json.loads(proc.stdout.readline())["url"]
    finally:
        proc.terminate()
        proc.wait()


async def bare_litellm(litellm, url: str, examples: list[Example]) -> None:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(example: Example) -> None:
        async with semaphore:
            await litellm.acompletion(model=MODEL, api_base=url, api_key="x", num_retries=0, max_retries=0,
                                      messages=[{"role": "user", "content": example.prompt}])

    await asyncio.gather(*(one(e) for e in examples))


def slow_teacher(bench: Bench) -> None:
    """A teacher answering in 1 s: what concurrency buys, and what the client costs in memory."""
    with server_process(SLOW_LATENCY) as url:
        for concurrency in SLOW_CONCURRENCY:
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run([sys.executable, "-c", CLIENT, url, MODEL, str(SLOW_N), str(concurrency), tmp],
                                     capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if result["ok"] != SLOW_N:
                sys.exit(f"only {result['ok']} of {SLOW_N} answers came back at concurrency {concurrency}")
            ideal = SLOW_N * SLOW_LATENCY / concurrency
            label = f"{SLOW_N} prompts at {SLOW_LATENCY:g} s latency, concurrency {concurrency}"
            bench.report(label, result["wall"], "s", baseline=f"ideal {ideal:.1f} s", baseline_value=ideal,
                         higher_is_better=False)
            bench.report(f"{label}: share of ideal", ideal / result["wall"], "")
            bench.report(f"{label}: client RSS before the first request", result["rss_before_mb"], "MB")
            bench.report(f"{label}: client peak RSS", result["peak_rss_mb"], "MB")


def main() -> None:
    import litellm

    bench = Bench("teacher_throughput")
    slow_teacher(bench)
    examples = [Example(id=f"p{i}", prompt=f"prompt {i}") for i in range(N)]
    with server_process() as url, tempfile.TemporaryDirectory() as tmp:
        with timer() as t_seq:
            for e in examples:
                litellm.completion(model=MODEL, api_base=url, api_key="x",
                                   messages=[{"role": "user", "content": e.prompt}])
        sequential = t_seq()
        with timer() as t_bare:
            asyncio.run(bare_litellm(litellm, url, examples))
        bare = t_bare()
        teacher = LiteLLMTeacher(LiteLLMTeacher.Options(model=MODEL, api_base=url,
                                                        max_concurrency=CONCURRENCY), Context(cache_dir=Path(tmp)))
        with timer() as t_live:
            teacher.answer(examples)
        live = t_live()
        with timer() as t_cached:
            LiteLLMTeacher(teacher.options, Context(cache_dir=Path(tmp))).answer(examples)
        cached = t_cached()
        bench.report("sequential litellm.completion", sequential, "s")
        bench.report("dpokd client, concurrency 16", live, "s", baseline="sequential loop",
                     baseline_value=sequential, higher_is_better=False)
        bench.report("bare litellm.acompletion, concurrency 16", bare, "s", baseline="sequential loop",
                     baseline_value=sequential, higher_is_better=False)
        bench.report("dpokd client vs bare litellm", live, "s", baseline="bare litellm.acompletion",
                     baseline_value=bare, higher_is_better=False)
        ideal = N * LATENCY / CONCURRENCY
        bench.report("share of ideal N*latency/concurrency", ideal / live, "", baseline=None)
        bench.report("bare litellm's share of ideal", ideal / bare, "", baseline=None)
        bench.report("cache replay", cached, "s", baseline="dpokd live run", baseline_value=live, higher_is_better=False)
        replay = LiteLLMTeacher(teacher.options, Context(cache_dir=Path(tmp))).answer(examples)
        bench.report("cache replay requests", float(sum(not a.cached for a in replay)), "requests")
    print(f"results: {bench.save()}")


if __name__ == "__main__":
    main()
