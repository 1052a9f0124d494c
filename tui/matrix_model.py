"""The data behind the Matrix screen: rows (method x scheme), columns (backend/target), cells.

Pure Python over :class:`~quantmatch.registry.Registry` so that it runs in a worker thread and can
be tested without a terminal. Everything comes from what the plugins registered: a third-party
method, backend or device shows up here without any change to the TUI.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from quantmatch.sdk.verdict import Level, Verdict

if TYPE_CHECKING:
    from quantmatch.registry import Registry
    from quantmatch.sdk.profile import HardwareProfile

__all__ = ["Column", "Matrix", "MatrixFilters", "Row", "build_matrix"]

CellKey = tuple[str, str]


@dataclass(frozen=True)
class MatrixFilters:
    """What the user narrowed the matrix to. ``text`` tokens filter rows (method, scheme) or, when
    a token names no row, columns (backend, target)."""

    method: str | None = None
    backend: str | None = None
    level: Level | None = None
    layer: str = "linear"
    text: str = ""
    differences_only: bool = False


@dataclass(frozen=True)
class Row:
    """One method x scheme."""

    method: str
    scheme: str

    @property
    def key(self) -> str:
        return f"{self.method}|{self.scheme}"


@dataclass(frozen=True)
class Column:
    """One backend on one execution target."""

    backend: str
    target: str
    show_target: bool = True

    @property
    def key(self) -> str:
        return f"{self.backend}@{self.target}"

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.target}" if self.show_target else self.backend


@dataclass
class Matrix:
    """Verdicts for one device (``other`` ``None``) or two devices side by side."""

    device: HardwareProfile
    other: HardwareProfile | None
    filters: MatrixFilters
    rows: list[Row] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    cells: dict[CellKey, tuple[Verdict | None, Verdict | None]] = field(default_factory=dict)
    total: int = 0

    @property
    def compare(self) -> bool:
        return self.other is not None

    def cell(self, row: Row, col: Column) -> tuple[Verdict | None, Verdict | None]:
        return self.cells.get((row.key, col.key), (None, None))

    def differs(self, row: Row, col: Column) -> bool:
        """Whether the two devices get different levels (or only one has the combination)."""
        a, b = self.cell(row, col)
        return _differs(a, b)

    def matches_level(self, row: Row, col: Column) -> bool:
        """Whether the cell has the level the filter asks for (always true without a level filter)."""
        return _matches_level(self.cell(row, col), self.filters.level)

    def counts(self, which: int = 0) -> Counter[Level]:
        """How many shown cells of device ``which`` (0 or 1) are at each level."""
        out: Counter[Level] = Counter()
        for row in self.rows:
            for col in self.columns:
                v = self.cell(row, col)[which]
                if v is not None:
                    out[v.level] += 1
        return out

    def difference_count(self) -> int:
        return sum(self.differs(r, c) for r in self.rows for c in self.columns) if self.compare else 0


def _differs(a: Verdict | None, b: Verdict | None) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return a.level is not b.level


def _matches_level(cell: tuple[Verdict | None, Verdict | None], level: Level | None) -> bool:
    if level is None:
        return any(v is not None for v in cell)
    return any(v is not None and v.level is level for v in cell)


def _tokens(text: str) -> list[str]:
    return [t for t in text.lower().replace(",", " ").split() if t]


def build_matrix(registry: Registry, device: str | HardwareProfile, other: str | HardwareProfile | None = None,
                 filters: MatrixFilters | None = None) -> Matrix:
    """Judge every combination for ``device`` (and ``other``) and lay them out as a matrix."""
    f = filters or MatrixFilters()
    dev = registry.device(device)
    oth = registry.device(other) if other is not None else None
    devs = [dev] if oth is None else [dev, oth]
    per_device = [registry.combinations(d, method=f.method, backend=f.backend, layer=f.layer) for d in devs]

    cells: dict[CellKey, list[Verdict | None]] = {}
    targets_of: dict[str, set[str]] = {}
    for i, combos in enumerate(per_device):
        for v in combos:
            key = (f"{v.method}|{v.scheme}", f"{v.backend}@{v.target}")
            cells.setdefault(key, [None, None])[i] = v
            targets_of.setdefault(v.backend, set()).add(v.target)

    target_order = {t: i for i, t in enumerate(dict.fromkeys(t for d in devs for t in d.targets))}
    multi = len(target_order) > 1
    columns = [Column(e.name, t, show_target=multi) for e in registry.backends()
               for t in sorted(targets_of.get(e.name, ()), key=lambda t: target_order.get(t, 99))]
    rows: list[Row] = []
    for e in registry.methods():
        if f.method and e.name != f.method:
            continue
        rows.extend(Row(e.name, s) for s in e.obj.schemes)

    m = Matrix(dev, oth, f, cells={k: (v[0], v[1]) for k, v in cells.items()},
               total=sum(len(c) for c in per_device))
    rows = [r for r in rows if any((r.key, c.key) in m.cells for c in columns)]
    rows, columns = _apply_text(rows, columns, f.text)
    columns = [c for c in columns if any((r.key, c.key) in m.cells for r in rows)]
    keep = m.differs if (f.differences_only and oth is not None) else m.matches_level
    if f.level is not None or (f.differences_only and oth is not None):
        rows = [r for r in rows if any(keep(r, c) for c in columns)]
        columns = [c for c in columns if any(keep(r, c) for r in rows)]
    m.rows, m.columns = rows, columns
    return m


def _apply_text(rows: list[Row], columns: list[Column], text: str) -> tuple[list[Row], list[Column]]:
    """Each token keeps the rows it names; a token that names a backend or target (exactly, or else
    as a substring when it names no row) keeps those columns instead."""
    for tok in _tokens(text):
        names_row = any(tok in (r.method, r.scheme) for r in rows)
        exact_cols = [c for c in columns if tok in (c.backend, c.target, c.label)]
        if exact_cols and not names_row:
            columns = exact_cols
        elif row_hits := [r for r in rows if tok in f"{r.method} {r.scheme}"]:
            rows = row_hits
        elif col_hits := [c for c in columns if tok in f"{c.backend}/{c.target}"]:
            columns = col_hits
        else:
            rows = []
    return rows, columns
