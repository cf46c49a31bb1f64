"""The answers of one ``LLMClient.complete`` call, read back from the response cache as they are used.

A distillation set's answers, held as objects to the end of a teacher stage, would grow the
process by the size of the set: here each answer the cache holds is kept as its key and where it
came from (the cache already, or a request of this call), and its Completion is built from the
cache entry each time it is read. Only the answers the cache does not hold as answers (a failed
request, an empty or rejected answer, a refusal) are kept as they are: few, since too many fail
the stage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from ..cache import ResponseCache
from ..errors import DpokdError
from ..records import Completion, Example

# An index's state: not answered (the budget stopped it), answered from the cache before any request,
# answered by a request of this call (its answer is in the cache), or kept in memory.
MISSING, FROM_CACHE, ASKED, KEPT = 0, 1, 2, 3


def entry_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """A cached entry's fields as a Completion's."""
    return dict(finish_reason=entry.get("finish_reason"), model=entry.get("model"),
                prompt_tokens=entry.get("prompt_tokens", 0), completion_tokens=entry.get("completion_tokens", 0),
                cost_usd=entry.get("cost_usd", 0.0))


class Answers(Sequence[Completion]):
    """One Completion per example, in order, equal to those the requests and the cache gave; read-only."""

    def __init__(self, cache: ResponseCache, examples: list[Example], keys: list[str]):
        self._cache = cache
        self._examples = examples
        self._keys = keys
        self._state = bytearray(len(keys))
        self._kept: dict[int, Completion] = {}

    def put(self, i: int, completion: Completion) -> None:
        """Answer ``i``. An answer that is ``ok`` must be in the cache under its key: it is read from there."""
        if completion.ok:
            self._state[i] = FROM_CACHE if completion.cached else ASKED
        else:
            self._kept[i] = completion
            self._state[i] = KEPT

    def missing(self) -> int:
        """How many examples have no answer."""
        return self._state.count(MISSING)

    def failures(self) -> list[Completion]:
        """The failed answers, in order."""
        return [self._kept[i] for i in sorted(self._kept)]

    def __len__(self) -> int:
        return len(self._state)

    @overload
    def __getitem__(self, i: int) -> Completion: ...

    @overload
    def __getitem__(self, i: slice) -> list[Completion]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]  # a negative index counts from the end; one out of range raises IndexError
        state = self._state[i]
        if state == KEPT:
            return self._kept[i]
        if state == MISSING:
            raise IndexError(f"example {self._examples[i].id!r} has no answer")
        ((_, entry),) = self._cache.items([self._keys[i]])
        return self._built(i, entry, cached=state == FROM_CACHE)

    def __iter__(self) -> Iterator[Completion]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{len(self)} answers, {len(self._kept)} failed>"

    def _built(self, i: int, entry: dict[str, Any] | None, *, cached: bool) -> Completion:
        example = self._examples[i]
        if entry is None or entry.get("refused"):
            raise DpokdError(f"{self._cache.responses}: the cached answer to example {example.id!r} is gone (the "
                             "cache was cleared or changed while this run read it); re-run to ask it again")
        return Completion.of(example, entry["text"], **entry_fields(entry), cached=cached)
