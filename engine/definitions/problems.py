"""Helpers shared by the definition checks: JSON pointers, suggestions, de-duplication."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from engine.definitions.nodes import escape_pointer
from engine.errors import Problem


def pointer(parts: Iterable[Any]) -> str:
    """The JSON pointer of a path of keys and indexes."""
    return "".join(f"/{escape_pointer(p)}" for p in parts)


def did_you_mean(word: Any, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``candidates``, or ``""``."""
    close = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unique(problems: list[Problem]) -> list[Problem]:
    """``problems`` without repeats, in order."""
    return list(dict.fromkeys(problems))
