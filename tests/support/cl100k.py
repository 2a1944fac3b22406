"""The tokenizer tests need cl100k, and fail without it: a skip would hide a broken install."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.catalogue import tokens

F = TypeVar("F", bound=Callable[..., Any])

MISSING = (
    "cl100k_base could not be loaded: tiktoken is not importable, or the BPE file shipped in the "
    f"package ({tokens._CL100K_FILE}) is missing or not the expected file. tiktoken is a core "
    "dependency in requirements/lock.txt: run `make install`."
)


def needs_cl100k(test: F) -> F:
    """Decorator: the test fails first thing when :func:`tokens.cl100k` returns None."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> Any:
        assert tokens.cl100k() is not None, MISSING
        return test(*args, **kwargs)

    return run  # type: ignore[return-value]
