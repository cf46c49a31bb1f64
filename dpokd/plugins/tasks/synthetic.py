"""``synthetic-codegen``: procedurally generated function-writing problems with hidden tests.

Small enough for a tiny student to learn on a CPU in minutes, and graded by execution, so the
quickstart shows distillation working end to end with no network and no key.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import dpokd
from dpokd import Example
from dpokd.data import check_template, render


@dataclass(frozen=True)
class Problem:
    level: int
    name: str
    arg: str
    statement: str
    body: str  # the lines after the def line, indented
    fn: Callable
    inputs: tuple

    @property
    def solution(self) -> str:
        return f"def {self.name}({self.arg}):\n{self.body}"

    def tests(self) -> str:
        checks = "".join(f"    assert candidate({x!r}) == {self.fn(x)!r}\n" for x in self.inputs)
        return f"def check(candidate):\n{checks}"


_INT_OPS = {  # name: (words, python, function)
    "add": ("plus", "+", lambda x, a: x + a),
    "sub": ("minus", "-", lambda x, a: x - a),
    "mul": ("times", "*", lambda x, a: x * a),
    "mod": ("modulo", "%", lambda x, a: x % a),
}


def _level1(rng: random.Random) -> Problem:
    op = rng.choice(sorted(_INT_OPS))
    a = rng.randint(2, 40)
    words, sym, f = _INT_OPS[op]
    return Problem(1, f"{op}_{a}", "x", f"returns x {words} {a}", f"    return x {sym} {a}\n",
                   lambda x: f(x, a), _ints(rng))


def _level2(rng: random.Random) -> Problem:
    if rng.random() < 0.5:
        (o1, o2), a, b = rng.sample(["add", "sub", "mul"], 2), rng.randint(2, 9), rng.randint(2, 9)
        (w1, s1, f1), (w2, s2, f2) = _INT_OPS[o1], _INT_OPS[o2]
        return Problem(2, f"{o1}_{a}_{o2}_{b}", "x", f"returns (x {w1} {a}) {w2} {b}",
                       f"    return (x {s1} {a}) {s2} {b}\n", lambda x: f2(f1(x, a), b), _ints(rng))
    kind, n = rng.choice(["repeat", "take", "drop", "append"]), rng.randint(2, 5)
    if kind == "append":
        suffix = "".join(rng.choice("xyz") for _ in range(n))
        return Problem(2, f"append_{suffix}", "s", f"returns the string s followed by '{suffix}'",
                       f"    return s + '{suffix}'\n", lambda s: s + suffix, _strs(rng))
    spec = {
        "repeat": (f"returns the string s repeated {n} times", f"s * {n}", lambda s: s * n),
        "take": (f"returns the first {n} characters of the string s", f"s[:{n}]", lambda s: s[:n]),
        "drop": (f"returns the string s without its first {n} characters", f"s[{n}:]", lambda s: s[n:]),
    }[kind]
    return Problem(2, f"{kind}_{n}", "s", spec[0], f"    return {spec[1]}\n", spec[2], _strs(rng))


def _level3(rng: random.Random) -> Problem:
    k = rng.randint(1, 24)
    kind = rng.choice(["sum_gt", "sum_lt", "count_gt", "count_eq"])
    words = {"gt": "greater than", "lt": "less than", "eq": "equal to"}[kind.split("_")[1]]
    cmp = {"gt": ">", "lt": "<", "eq": "=="}[kind.split("_")[1]]
    test = {"gt": lambda v: v > k, "lt": lambda v: v < k, "eq": lambda v: v == k}[kind.split("_")[1]]
    if kind.startswith("sum"):
        statement, acc, fn = f"returns the sum of the items of xs {words} {k}", "x", lambda xs: sum(v for v in xs if test(v))
    else:
        statement, acc, fn = f"returns how many items of xs are {words} {k}", "1", lambda xs: sum(1 for v in xs if test(v))
    body = f"    total = 0\n    for x in xs:\n        if x {cmp} {k}:\n            total += {acc}\n    return total\n"
    lists = tuple(tuple(rng.randint(0, 30) for _ in range(rng.randint(0, 7))) for _ in range(4))
    return Problem(3, f"{kind}_{k}", "xs", statement, body, lambda xs: fn(xs), tuple(list(x) for x in lists))


def _ints(rng: random.Random) -> tuple:
    return tuple(rng.sample(range(-20, 40), 4))


def _strs(rng: random.Random) -> tuple:
    return tuple("".join(rng.choice("abcdefgh") for _ in range(rng.randint(0, 8))) for _ in range(4))


_LEVELS = {1: _level1, 2: _level2, 3: _level3}
# Distinct function names each level can make, counted from the parameter ranges above:
# 1: 4 operations x 39 constants; 2: 6 ordered operation pairs x 8 x 8 constants, 3 string kinds x 4
# lengths, and 9 + 27 + 81 + 243 suffixes; 3: 4 kinds x 24 thresholds.
LEVEL_SIZES = {1: 4 * 39, 2: 6 * 8 * 8 + 3 * 4 + 9 + 27 + 81 + 243, 3: 4 * 24}


def capacity(levels: list[int]) -> int:
    """The most distinct problems ``generate_problems`` can make from ``levels``.

    Problem ``i`` comes from ``levels[i % len(levels)]``, so generation stops at the first turn of a
    level that has no new problem left: the turn after its ``LEVEL_SIZES`` problems are used.
    """
    limits = []
    for level in set(levels):
        turns = [i for i, x in enumerate(levels) if x == level]
        laps, index = divmod(LEVEL_SIZES[level], len(turns))
        limits.append(laps * len(levels) + turns[index])
    return min(limits)


def generate_problems(levels: list[int], count: int, seed: int) -> list[Problem]:
    """``count`` distinct problems (distinct function names), levels drawn in turn; deterministic."""
    most = capacity(levels)
    if count > most:
        raise dpokd.ConfigError(f"task: levels {levels} make at most {most} distinct problems, not {count}")
    rng = random.Random(seed)
    problems: dict[str, Problem] = {}
    attempts = 0
    while len(problems) < count:
        attempts += 1
        # Never reached within the capacity: the rarest problem (a 5-letter suffix) has a 1 in
        # 15,552 chance per draw of its level.
        if attempts > 2000 * count:
            raise RuntimeError(f"levels {levels}: {count} distinct problems not found in {attempts} draws")
        problem = _LEVELS[levels[len(problems) % len(levels)]](rng)
        problems.setdefault(problem.name, problem)
    return list(problems.values())


class SyntheticCodegen(dpokd.Task):
    """Procedural Python function-writing problems at three levels, each with hidden tests."""

    name = "synthetic-codegen"

    class Options(dpokd.Options):
        levels: list[int] = dpokd.Field([1, 2, 3], min_length=1, description="difficulty levels to draw from: 1, 2, 3")
        n_train: int = dpokd.Field(96, ge=1, description="training problems")
        n_eval: int = dpokd.Field(32, ge=1, description="held-out problems, none of which appears in train")
        seed: int | None = dpokd.Field(None, description="generator seed; default: [run] seed")
        template: str = dpokd.Field("Write a Python function {name}({arg}) that {statement}.\n",
                                    description="prompt template; fields {name}, {arg}, {statement}")

        # `levels` comes first so that the counts below can be checked against what it can make.
        @dpokd.field_validator("levels")
        @classmethod
        def _known_levels(cls, v: list[int]) -> list[int]:
            bad = sorted(set(v) - set(_LEVELS))
            if bad:
                raise ValueError(f"levels must be among 1, 2, 3 (got {bad})")
            return v

        @dpokd.field_validator("n_train")
        @classmethod
        def _train_fits(cls, v: int, info) -> int:
            levels = info.data.get("levels")
            if levels is not None and v > capacity(levels) - 1:
                raise ValueError(f"levels {levels} make at most {capacity(levels)} distinct problems, and the eval "
                                 f"split needs at least one; got n_train = {v}. Lower it or add levels")
            return v

        @dpokd.field_validator("n_eval")
        @classmethod
        def _eval_fits(cls, v: int, info) -> int:
            levels, n_train = info.data.get("levels"), info.data.get("n_train")
            if levels is not None and n_train is not None and n_train + v > capacity(levels):
                raise ValueError(f"levels {levels} make at most {capacity(levels)} distinct problems; n_train = "
                                 f"{n_train} leaves {capacity(levels) - n_train} for eval, got n_eval = {v}")
            return v

        @dpokd.field_validator("template")
        @classmethod
        def _template_fields(cls, v: str) -> str:
            return check_template(v, ["name", "arg", "statement"])

    def examples(self, split: str) -> list[Example]:
        o = self.options
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        problems = generate_problems(o.levels, o.n_train + o.n_eval, self.seed)
        chosen = problems[: o.n_train] if split == "train" else problems[o.n_train :]
        return [
            Example(
                id=f"synthetic/{p.name}",
                prompt=render(o.template, {"name": p.name, "arg": p.arg, "statement": p.statement}),
                reference=p.solution,
                tests=p.tests(),
                entry_point=p.name,
                meta={"level": p.level},
            )
            for p in chosen
        ]


@dpokd.hookimpl
def register_tasks(register):
    register(SyntheticCodegen)
