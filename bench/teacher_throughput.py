"""Teacher throughput: dpokd's client at concurrency 16 vs a sequential loop of litellm.completion.

400 prompts against the loopback server at 50 ms per answer. The sequential loop is how the
reference experiment queried its teacher. A second baseline is bare ``litellm.acompletion`` under an
``asyncio.Semaphore(16)``, with no cache, accounting or progress: the most litellm itself does in one
process, so dpokd's share of it is what dpokd's own bookkeeping costs. Also the same job replayed
from the cache.
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


@contextmanager
def server_process():
    """The loopback server in its own process, so it does not share the client's GIL."""
    proc = subprocess.Popen([sys.executable, "-m", "dpokd.testing", "0", str(LATENCY)], stdout=subprocess.PIPE, text=True)
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


def main() -> None:
    import litellm

    bench = Bench("teacher_throughput")
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
