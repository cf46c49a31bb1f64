"""Reading a task's data: public API for task authors.

What this module lists is what a task plugin may use to load a hub dataset or a local file, map its
columns onto record fields, give each record a stable id, split train from eval by a seeded hash,
and fill a prompt template. Its submodules are internal. ``datasets`` is imported only when
something is loaded, so importing this module stays cheap.
"""

from ..records import conversation_text
from .fields import FieldSpec
from .ids import UniqueIds, normalise_id, prompt_id
from .loading import LOCAL_SUFFIXES, is_local, load_rows
from .split import in_eval, split_rows
from .templates import check_template, render
from .text import strip_fence

__all__ = [
    # loading
    "LOCAL_SUFFIXES",
    "is_local",
    "load_rows",
    # columns onto fields
    "FieldSpec",
    "strip_fence",
    # ids
    "UniqueIds",
    "normalise_id",
    "prompt_id",
    # train and eval
    "in_eval",
    "split_rows",
    # prompts
    "check_template",
    "conversation_text",
    "render",
]
