"""``synthetic-compose``: functions that chain several integer operations, graded by hidden tests.

The eval split holds out whole compositions: every held-out problem's sequence of operations (say
multiply, then add, then take a remainder) never occurs in training, only its parts do. A student
must recombine what it learned, so methods spread out over the pass@1 scale instead of all
saturating at 1.0. ``steps`` is the difficulty knob: the operations chained in one problem.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import dpokd
from dpokd import Example
from dpokd.data import check_template, render

OPERATIONS = {  # name: (words, python operator, function)
    "add": ("adds {a}", "+", lambda x, a: x + a),
    "sub": ("subtracts {a}", "-", lambda x, a: x - a),
    "mul": ("multiplies by {a}", "*", lambda x, a: x * a),
    "mod": ("takes the remainder modulo {a}", "%", lambda x, a: x % a),
}
CONSTANTS = range(2, 10)


@dataclass(frozen=True)
class Composition:
    steps: tuple[tuple[str, int], ...]  # (operation, constant) in the order applied
    inputs: tuple[int, ...]
    function: str = "f"

    @property
    def name(self) -> str:
        """What the problem is, spelled out: its id, and the function's name where the task names them so."""
        return "_".join(f"{op}{a}" for op, a in self.steps)

    @property
    def statement(self) -> str:
        words = [OPERATIONS[op][0].format(a=a) for op, a in self.steps]
        return "takes x, " + ", then ".join(words) + ", and returns the result"

    @property
    def solution(self) -> str:
        lines = "".join(f"    x = x {OPERATIONS[op][1]} {a}\n" for op, a in self.steps)
        return f"def {self.function}(x):\n{lines}    return x\n"

    def mistaken(self) -> str:
        """The solution with its last constant off by one: a wrong answer (its tests almost always tell)."""
        *head, (op, a) = self.steps
        return Composition((*head, (op, a + 1)), self.inputs, self.function).solution

    def __call__(self, x: int) -> int:
        for op, a in self.steps:
            x = OPERATIONS[op][2](x, a)
        return x

    def tests(self) -> str:
        checks = "".join(f"    assert candidate({x!r}) == {self(x)!r}\n" for x in self.inputs)
        return f"def check(candidate):\n{checks}"


def split_sequences(steps: int, held_out: float, seed: int) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Every ordered sequence of ``steps`` operations, shuffled by ``seed``: (train's, eval's held-out share)."""
    sequences = list(itertools.product(sorted(OPERATIONS), repeat=steps))
    random.Random(seed).shuffle(sequences)
    cut = min(len(sequences) - 1, max(1, round(held_out * len(sequences))))
    return sequences[cut:], sequences[:cut]


def draw(sequences: list[tuple[str, ...]], count: int, rng: random.Random, taken: set[str],
         named: bool) -> list[Composition]:
    """``count`` distinct problems whose operations follow ``sequences`` in turn; names in ``taken`` are skipped."""
    found: list[Composition] = []
    while len(found) < count:
        ops = sequences[len(found) % len(sequences)]
        steps = tuple((op, rng.choice(CONSTANTS)) for op in ops)
        function = "_".join(f"{op}{a}" for op, a in steps) if named else "f"
        problem = Composition(steps, tuple(rng.sample(range(-20, 40), 4)), function)
        if problem.name not in taken:
            taken.add(problem.name)
            found.append(problem)
    return found


class SyntheticCompose(dpokd.Task):
    """Chains of integer operations; the eval split's orders of operations are never trained on."""

    name = "synthetic-compose"

    class Options(dpokd.Options):
        steps: int = dpokd.Field(3, ge=2, le=4, description="operations chained in each problem: the difficulty knob")
        held_out: float = dpokd.Field(0.25, gt=0, lt=1, description="share of the orders of operations kept for eval only")
        n_train: int = dpokd.Field(96, ge=1, le=2000, description="training problems")
        n_eval: int = dpokd.Field(32, ge=1, le=2000, description="held-out problems, each of a held-out order of operations")
        wrong_references: float = dpokd.Field(
            0.0, ge=0, lt=1, description="share of train problems whose reference answer (what the `reference` teacher "
            "gives) has one constant off by one: a noisy teacher, whose pairs `verified_pairs` drops")
        named: bool = dpokd.Field(False, description="name each function after its operations (add3_mul2_mod4), a "
                                  "name the student must copy, rather than f: harder")
        seed: int | None = dpokd.Field(None, description="generator seed; default: [run] seed")
        template: str = dpokd.Field("Write a Python function {name}(x) that {statement}.\n",
                                    description="prompt template; fields {name}, {statement}")

        # steps and held_out come first, so that the counts can be checked against what they make.
        @dpokd.field_validator("n_train", "n_eval")
        @classmethod
        def _fits(cls, v: int, info) -> int:
            steps, held_out = info.data.get("steps"), info.data.get("held_out")
            if steps is not None and held_out is not None:
                orders = len(split_sequences(steps, held_out, 0)[info.field_name == "n_eval"])
                most = orders * len(CONSTANTS) ** steps
                if v > most:
                    raise ValueError(f"{orders} orders of operations make at most {most} distinct problems, got {v}; "
                                     "lower it, or raise steps (or held_out, for n_eval)")
            return v

        @dpokd.field_validator("template")
        @classmethod
        def _template_fields(cls, v: str) -> str:
            return check_template(v, ["name", "statement"])

    def examples(self, split: str) -> list[Example]:
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        o = self.options
        train_seqs, eval_seqs = split_sequences(o.steps, o.held_out, self.seed)
        rng, taken = random.Random(self.seed), set()
        train = draw(train_seqs, o.n_train, rng, taken, o.named)
        chosen = train if split == "train" else draw(eval_seqs, o.n_eval, rng, taken, o.named)
        wrong = set(random.Random(self.seed).sample(range(len(train)), round(o.wrong_references * len(train))))
        return [
            Example(id=f"compose/{p.name}", prompt=render(o.template, {"name": p.function, "statement": p.statement}),
                    reference=p.mistaken() if split == "train" and n in wrong else p.solution, tests=p.tests(),
                    entry_point=p.function,
                    meta={"steps": o.steps, "operations": "-".join(op for op, _ in p.steps)})
            for n, p in enumerate(chosen)
        ]


@dpokd.hookimpl
def register_tasks(register):
    register(SyntheticCompose)
