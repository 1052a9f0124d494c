"""Small text helpers shared by error messages and tables."""

from __future__ import annotations

__all__ = ["count", "plural"]

_IRREGULAR = {"family": "families", "refines": "refinements", "refinement": "refinements"}


def plural(word: str) -> str:
    """The plural of a noun quantmatch prints: ``family`` -> ``families``, ``device`` -> ``devices``."""
    return _IRREGULAR.get(word, word if word.endswith("s") else word + "s")


def count(n: int, word: str) -> str:
    """``1 family``, ``2 families``."""
    return f"{n} {word if n == 1 else plural(word)}"
