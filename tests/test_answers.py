"""The client's answers are read back from the cache where they are used: a distillation set's answers are
never all in memory, and each reads as the answer its request or the cache gave."""

import sys

import pytest

from dpokd.errors import DpokdError
from dpokd.interfaces import Context
from dpokd.llm import LLMClient, LLMOptions
from dpokd.llm.answers import Answers
from dpokd.records import Example
from dpokd.testing import LoopbackServer

MODEL = "openai/gpt-4o-mini"


def held(root, skip: set[int]) -> tuple[list[str], int]:
    """The strings an object holds, and the bytes of everything it holds, but what ``skip`` names."""
    strings, size, seen, todo = [], 0, set(skip), [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        size += sys.getsizeof(obj)
        if isinstance(obj, str):
            strings.append(obj)
        elif isinstance(obj, dict):
            todo += [*obj.keys(), *obj.values()]
        elif isinstance(obj, list | tuple | set | frozenset):
            todo += list(obj)
        elif hasattr(obj, "__dict__"):
            todo.append(vars(obj))
    return strings, size


def asked_with(monkeypatch):
    """What the client gives its answers, each as it came (a Completion object)."""
    given: dict[int, object] = {}
    put = Answers.put

    def keep(self, i, completion):
        given[i] = completion
        put(self, i, completion)

    monkeypatch.setattr(Answers, "put", keep)
    return given


def test_answers_hold_no_text_and_read_as_they_came(tmp_path, monkeypatch):
    examples = [Example(id=f"p{i}", prompt=f"prompt {i}") for i in range(200)]
    examples += [Example(id="refused", prompt="refuse this"), Example(id="broken", prompt="broken request")]
    options = LLMOptions(model=MODEL, max_retries=0, max_failure_share=1.0)
    with LoopbackServer() as server:
        server.when(lambda body: body["messages"][-1]["content"] == "refuse this", {"blocked": True})
        server.when(lambda body: body["messages"][-1]["content"] == "broken request", {"status": 400})
        options = options.model_copy(update={"api_base": server.url})
        given = asked_with(monkeypatch)
        client = LLMClient(options, Context(cache_dir=tmp_path))
        answers = client.complete(examples)
        asked = [given[i] for i in range(len(examples))]
        given.clear()
        again = LLMClient(options, Context(cache_dir=tmp_path)).complete(examples)  # from the cache
        replayed = [given[i] for i in range(len(examples))]

    assert list(answers) == asked and list(again) == replayed
    assert [a.cached for a in answers] == [False] * len(examples)
    assert [a.cached for a in again] == [True] * (len(examples) - 1) + [False]  # the failed request is asked again
    assert answers[0].text == "echo: prompt 0" and not answers[-2].ok and answers[-1].error.startswith("BadRequest")
    assert answers[-1] == answers[len(examples) - 1] and answers[3:5] == asked[3:5] and len(answers) == len(examples)

    # The sequence holds no answer's text: the keys and a byte per answer, about 150 bytes each.
    strings, size = held(answers, {id(client.context.cache), id(examples), *map(id, examples)})
    assert not [s for s in strings if "echo:" in s]
    assert size / len(examples) < 300, size

    client.context.cache.clear()  # the answers are gone from under the sequence: said, not misread
    with pytest.raises(DpokdError, match="the cached answer to example 'p0' is gone"):
        answers[0]
