"""Teacher throughput: the three targets of a teacher stage at provider speed, each against a
baseline measured in the same run.

1. Overhead: 400 prompts against the loopback server at 50 ms per answer, concurrency 16: dpokd's
   client (its direct HTTP path, and through litellm with ``direct_http = false``) against bare
   ``litellm.acompletion`` under an ``asyncio.Semaphore(16)`` with no cache, accounting or progress.
   Also a sequential loop of ``litellm.completion`` (how the reference experiment queried its
   teacher) and the same job replayed from the cache.
2. A real teacher's pace: 2,000 prompts at 1 s per answer, at concurrency 64 and 256, each in a fresh
   client process, against the ideal N x latency / concurrency, and bare litellm at 256 in the same way.
3. Scale: 20,000 prompts at 1 s, concurrency 512: share of ideal, the client's peak memory and what it
   adds while answering, against 2,000 prompts; then a run killed (SIGKILL) halfway and resumed,
   counting at the server what the resume asks.

The server runs in a process of its own, so it does not share the client's GIL. Best of
``REPEATS`` alternating runs for the overhead figures: on a shared machine the noise is one-sided.
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
REPEATS = 3

SLOW_N, SLOW_LATENCY, SLOW_CONCURRENCY = 2000, 1.0, (64, 256)
SCALE_N, SCALE_CONCURRENCY = 20_000, 512

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
teacher = LiteLLMTeacher(LiteLLMTeacher.Options(model=model, api_base=url, max_concurrency=concurrency, timeout=600),
                         Context(cache_dir=Path(cache)))
before = rss_mb()
start = time.perf_counter()
answers = teacher.answer(examples)
wall = time.perf_counter() - start
print(json.dumps({"wall": wall, "rss_before_mb": before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "ok": sum(a.ok for a in answers)}))
"""

BARE = """
import asyncio, json, sys, time
import litellm
url, model, n, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
async def main():
    semaphore = asyncio.Semaphore(concurrency)
    async def one(i):
        async with semaphore:
            await litellm.acompletion(model=model, api_base=url, api_key="x", num_retries=0, max_retries=0, timeout=600,
                                      messages=[{"role": "user", "content": f"prompt {i}"}])
    await asyncio.gather(*(one(i) for i in range(n)))
start = time.perf_counter()
asyncio.run(main())
print(json.dumps({"wall": time.perf_counter() - start}))
"""

# The loopback server, answering on stdin how many requests it has received ("count") or forgetting them ("reset").
SERVER = """
import json, sys
from dpokd.testing import LoopbackServer
server = LoopbackServer(latency=float(sys.argv[1])).start()
print(json.dumps({"url": server.url}), flush=True)
for line in sys.stdin:
    if line.strip() == "reset":
        server.reset()
    print(json.dumps({"requests": len(server.requests), "in_flight": server.in_flight}), flush=True)
"""


class Server:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.url = json.loads(proc.stdout.readline())["url"]

    def ask(self, command: str = "count") -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())


@contextmanager
def server_process(latency: float = LATENCY):
    """The loopback server in its own process, so it does not share the client's GIL."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(latency)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        yield Server(proc)
    finally:
        proc.stdin.close()
        proc.terminate()
        proc.wait()


def run_script(script: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def paced(bench: Bench, server: Server, n: int, concurrency: int) -> dict:
    """One client process answering ``n`` prompts at the server's 1 s pace: its share of ideal and memory."""
    with tempfile.TemporaryDirectory() as tmp:
        result = run_script(CLIENT, server.url, MODEL, n, concurrency, tmp)
    if result["ok"] != n:
        sys.exit(f"only {result['ok']} of {n} answers came back at concurrency {concurrency}")
    ideal = n * SLOW_LATENCY / concurrency
    label = f"{n} prompts at {SLOW_LATENCY:g} s latency, concurrency {concurrency}"
    bench.report(label, result["wall"], "s", baseline=f"ideal {ideal:.1f} s", baseline_value=ideal,
                 higher_is_better=False)
    bench.report(f"{label}: share of ideal", ideal / result["wall"], "")
    bench.report(f"{label}: client RSS before the first request", result["rss_before_mb"], "MB")
    bench.report(f"{label}: client peak RSS", result["peak_rss_mb"], "MB")
    return result


def slow_teacher(bench: Bench) -> None:
    """A teacher answering in 1 s: what concurrency buys, against bare litellm at the same concurrency."""
    with server_process(SLOW_LATENCY) as server:
        for concurrency in SLOW_CONCURRENCY:
            result = paced(bench, server, SLOW_N, concurrency)
        bare = run_script(BARE, server.url, MODEL, SLOW_N, SLOW_CONCURRENCY[-1])["wall"]
        ideal = SLOW_N * SLOW_LATENCY / SLOW_CONCURRENCY[-1]
        bench.report(f"bare litellm, {SLOW_N} prompts at concurrency {SLOW_CONCURRENCY[-1]}: share of ideal",
                     ideal / bare, "")
        bench.report(f"dpokd client vs bare litellm at concurrency {SLOW_CONCURRENCY[-1]}", result["wall"], "s",
                     baseline="bare litellm.acompletion", baseline_value=bare, higher_is_better=False)


def scale(bench: Bench) -> None:
    """20,000 prompts at concurrency 512; then a run killed halfway, and its resume."""
    import signal
    import time

    from dpokd.cache import ResponseCache

    with server_process(SLOW_LATENCY) as server:
        small = paced(bench, server, SLOW_N, SCALE_CONCURRENCY)
        large = paced(bench, server, SCALE_N, SCALE_CONCURRENCY)
        bench.report(f"client peak RSS, {SCALE_N} prompts", large["peak_rss_mb"], "MB",
                     baseline=f"{SLOW_N} prompts", baseline_value=small["peak_rss_mb"], higher_is_better=False)
        # What the client adds while it answers, the caller's prompts (built before it starts) left out.
        growth = {n: r["peak_rss_mb"] - r["rss_before_mb"] for n, r in ((SCALE_N, large), (SLOW_N, small))}
        bench.report(f"client RSS growth while answering, {SCALE_N} prompts", growth[SCALE_N], "MB",
                     baseline=f"{SLOW_N} prompts", baseline_value=growth[SLOW_N], higher_is_better=False)
        with tempfile.TemporaryDirectory() as tmp:
            server.ask("reset")
            proc = subprocess.Popen([sys.executable, "-c", CLIENT, server.url, MODEL, str(SCALE_N),
                                     str(SCALE_CONCURRENCY), tmp], stdout=subprocess.DEVNULL)
            while (count := server.ask())["requests"] - count["in_flight"] < SCALE_N // 2:
                time.sleep(0.2)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            missing = SCALE_N - ResponseCache(tmp).stats()["entries"]
            server.ask("reset")
            result = run_script(CLIENT, server.url, MODEL, SCALE_N, SCALE_CONCURRENCY, tmp)
            asked = server.ask()["requests"]
        if result["ok"] != SCALE_N:
            sys.exit(f"the resumed run has {result['ok']} of {SCALE_N} answers")
        bench.report(f"{SCALE_N} prompts killed halfway: requests the resume asked", asked, "requests",
                     baseline=f"answers missing after the kill ({missing})", baseline_value=missing,
                     higher_is_better=False)


async def bare_litellm(litellm, url: str, examples: list[Example]) -> None:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(example: Example) -> None:
        async with semaphore:
            await litellm.acompletion(model=MODEL, api_base=url, api_key="x", num_retries=0, max_retries=0,
                                      messages=[{"role": "user", "content": example.prompt}])

    await asyncio.gather(*(one(e) for e in examples))


def overhead(bench: Bench) -> None:
    """dpokd's client against bare litellm at concurrency 16, best of REPEATS alternating runs each."""
    import litellm

    times: dict[str, list[float]] = {"bare": [], "direct": [], "litellm": []}
    with server_process() as server, tempfile.TemporaryDirectory() as tmp:
        url = server.url
        asyncio.run(bare_litellm(litellm, url, [Example(id="w", prompt="warm-up")] * CONCURRENCY))
        with timer() as t_seq:
            for i in range(N // 4):
                litellm.completion(model=MODEL, api_base=url, api_key="x", messages=[{"role": "user", "content": f"s{i}"}])
        sequential = t_seq() * 4
        for repeat in range(REPEATS):
            examples = [Example(id=f"p{i}", prompt=f"prompt {i} {repeat}") for i in range(N)]
            with timer() as t:
                asyncio.run(bare_litellm(litellm, url, examples))
            times["bare"].append(t())
            for path, direct in (("direct", True), ("litellm", False)):
                teacher = LiteLLMTeacher(LiteLLMTeacher.Options(model=MODEL, api_base=url, max_concurrency=CONCURRENCY,
                                                                direct_http=direct), Context(cache_dir=Path(tmp) / path))
                with timer() as t:
                    teacher.answer(examples)
                times[path].append(t())
        bare, live, through = min(times["bare"]), min(times["direct"]), min(times["litellm"])
        bench.report("sequential litellm.completion (a quarter of the prompts, x4)", sequential, "s")
        bench.report("bare litellm.acompletion, concurrency 16", bare, "s", baseline="sequential loop",
                     baseline_value=sequential, higher_is_better=False)
        bench.report("dpokd client vs bare litellm", live, "s", baseline="bare litellm.acompletion",
                     baseline_value=bare, higher_is_better=False)
        bench.report("dpokd client through litellm (direct_http = false) vs bare litellm", through, "s",
                     baseline="bare litellm.acompletion", baseline_value=bare, higher_is_better=False)
        ideal = N * LATENCY / CONCURRENCY
        bench.report("share of ideal N*latency/concurrency", ideal / live, "", baseline=None)
        bench.report("bare litellm's share of ideal", ideal / bare, "", baseline=None)
        options = LiteLLMTeacher.Options(model=MODEL, api_base=url, max_concurrency=CONCURRENCY)
        with timer() as t_cached:
            replay = LiteLLMTeacher(options, Context(cache_dir=Path(tmp) / "direct")).answer(examples)
        bench.report("cache replay", t_cached(), "s", baseline="dpokd live run", baseline_value=live,
                     higher_is_better=False)
        bench.report("cache replay requests", float(sum(not a.cached for a in replay)), "requests")


def main() -> None:
    bench = Bench("teacher_throughput")
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs", flush=True)
    overhead(bench)
    slow_teacher(bench)
    if "--no-scale" not in sys.argv:
        scale(bench)
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)", flush=True)
    print(f"results: {bench.save()}")


if __name__ == "__main__":
    main()
