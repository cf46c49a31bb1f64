"""The response cache: dpokd's JSON store vs diskcache's default store (pickles), for the same answers.

Writes then reads 5,000 answers shaped like a teacher's (a code answer, its token counts and cost),
through ``ResponseCache`` and through a plain ``diskcache.Cache``; best of three runs each.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Bench, timer  # noqa: E402

from dpokd.cache import ResponseCache  # noqa: E402

N = 5000
ANSWER = {"text": "def add(a, b):\n    return a + b\n" * 12, "finish_reason": "stop", "model": "gemini/gemini-2.5-flash",
          "prompt_tokens": 180, "completion_tokens": 120, "cost_usd": 0.00011}
KEYS = [f"v1:{i:064x}" for i in range(N)]


def best_of_three(put, get) -> tuple[float, float]:
    writes, reads = [], []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            store_put, store_get = put(Path(tmp)), get(Path(tmp))
            with timer() as t:
                for key in KEYS:
                    store_put(key, ANSWER)
            writes.append(t())
            with timer() as t:
                for key in KEYS:
                    assert store_get(key)["text"] == ANSWER["text"]
            reads.append(t())
    return min(writes), min(reads)


def main() -> None:
    import diskcache

    bench = Bench("cache_store")
    plain: dict[Path, diskcache.Cache] = {}

    def plain_store(root: Path) -> diskcache.Cache:
        return plain.setdefault(root, diskcache.Cache(str(root / "responses")))

    base_w, base_r = best_of_three(lambda root: plain_store(root).set, lambda root: plain_store(root).get)
    ours: dict[Path, ResponseCache] = {}

    def ours_store(root: Path) -> ResponseCache:
        return ours.setdefault(root, ResponseCache(root))

    w, r = best_of_three(lambda root: ours_store(root).put, lambda root: ours_store(root).get)
    bench.report(f"diskcache default (pickle): {N} writes", base_w, "s")
    bench.report(f"dpokd ResponseCache (JSON): {N} writes", w, "s", baseline="diskcache pickle", baseline_value=base_w,
                 higher_is_better=False)
    bench.report(f"diskcache default (pickle): {N} reads", base_r, "s")
    bench.report(f"dpokd ResponseCache (JSON): {N} reads", r, "s", baseline="diskcache pickle", baseline_value=base_r,
                 higher_is_better=False)
    print(f"saved {bench.save()}")


if __name__ == "__main__":
    main()
