"""Fitting tables to the terminal's width: short names for long backends and methods, and which
columns to keep when not all of them fit. Pure Python, so it is cheap to test."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len

__all__ = ["PAD", "SCROLLBAR", "MatrixLayout", "abbreviations", "fit_columns", "fit_flexible", "matrix_layout",
           "matrix_width", "short_name"]

PAD = 2
"""A DataTable column's padding (one cell either side)."""

SCROLLBAR = 2
"""The vertical scrollbar's width, kept free whenever a table may scroll."""

_SHORT = {"bitsandbytes": "bnb", "onnxruntime": "ort", "tensorrt-llm": "trt-llm"}
MAX_NAME = 12


def short_name(name: str) -> str:
    """A name of at most :data:`MAX_NAME` cells for narrow tables: the usual abbreviation of a few
    long runtimes (``bnb``, ``ort``, ``trt-llm``), ``optimum-X`` as ``X``, else cut with ``…``.
    Short names are kept, so a plugin's own short names never change."""
    if name in _SHORT:
        return _SHORT[name]
    if name.startswith("optimum-") and cell_len(name) > MAX_NAME:
        name = name.removeprefix("optimum-")
    return name if cell_len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def abbreviations(names: Iterable[str]) -> list[tuple[str, str]]:
    """(short, full) for each distinct name that :func:`short_name` changes, for a legend."""
    return [(short_name(n), n) for n in dict.fromkeys(names) if short_name(n) != n]


def fit_columns(widths: Sequence[int], priority: Sequence[int], available: int) -> list[bool]:
    """Which columns to show: every one when they all fit in ``available`` cells, else those of the
    best ``priority`` (0 first) that fit, never fewer than the first priority's column."""
    order = sorted(range(len(widths)), key=lambda i: priority[i])
    keep = [False] * len(widths)
    used = 0
    for n, i in enumerate(order):
        w = widths[i] + PAD
        if n and used + w > available:
            continue
        keep[i] = True
        used += w
    return keep


@dataclass(frozen=True)
class MatrixLayout:
    """How the matrix draws its backend columns.

    ``words``: cells show the level's word next to its symbol (``◐ weight-only``) rather than the
    symbol alone; ``stacked``: the header puts the target under the backend; ``short``: backends go
    by their :func:`short_name` (with a legend).
    """

    words: bool = True
    stacked: bool = False
    short: bool = False

    def backend(self, name: str) -> str:
        return short_name(name) if self.short else name

    def header(self, backend: str, target: str, show_target: bool) -> str:
        name = self.backend(backend)
        if not show_target:
            return name
        return f"{name}\n{target}" if self.stacked else f"{name}/{target}"


WORD_CELL = 13  # "◐ weight-only", "✕ unsupported"
COMPARE_CELL = 5  # "◐ ● ≠"
LAYOUTS = (MatrixLayout(), MatrixLayout(words=False), MatrixLayout(words=False, stacked=True),
           MatrixLayout(words=False, stacked=True, short=True))
"""From the most spelled-out to the most compact."""


def matrix_width(layout: MatrixLayout, columns: Sequence[tuple[str, str, bool]], compare: bool) -> int:
    """The cells the backend columns ((backend, target, show_target)) take in ``layout`` (compare
    cells show symbols whatever the layout)."""
    cell = COMPARE_CELL if compare else (WORD_CELL if layout.words else 1)
    total = 0
    for backend, target, show in columns:
        header = max(cell_len(line) for line in layout.header(backend, target, show).split("\n"))
        total += max(header, cell) + PAD
    return total


def matrix_layout(columns: Sequence[tuple[str, str, bool]], fixed: int, available: int,
                  compare: bool) -> MatrixLayout:
    """The most spelled-out layout in which every column fits beside the ``fixed`` (method and
    scheme) ones; the most compact one when none does (the table then scrolls sideways)."""
    for layout in LAYOUTS:
        if fixed + matrix_width(layout, columns, compare) <= available - SCROLLBAR:
            return layout
    return LAYOUTS[-1]


def fit_flexible(widths: Sequence[int], priority: Sequence[int], flexible: int, minimum: int,
                 available: int) -> tuple[list[bool], int]:
    """:func:`fit_columns` where column ``flexible`` (a name) may be cut to no less than ``minimum``
    cells; returns the columns to show and the width the flexible one gets (all it needs when there
    is room)."""
    w = list(widths)
    w[flexible] = min(widths[flexible], minimum)
    keep = fit_columns(w, priority, available)
    rest = available - sum(w[i] + PAD for i, k in enumerate(keep) if k and i != flexible) - PAD
    return keep, max(w[flexible], min(widths[flexible], rest))
