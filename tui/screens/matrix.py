"""Matrix: methods x schemes (rows) against backends/targets (columns) for one device, or two side
by side with the cells that differ highlighted; filters by method, backend, level, layer and text."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Footer, Input, Select, Static
from textual.worker import get_current_worker

from quantmatch.sdk.verdict import LAYERS, Level
from quantmatch.tui.layout import PAD, SCROLLBAR, MatrixLayout, abbreviations, matrix_layout, matrix_width
from quantmatch.tui.matrix_model import Column, Matrix, MatrixFilters, Row, build_matrix
from quantmatch.tui.messages import CellChosen, DeviceChosen
from quantmatch.tui.rendering import abbreviation_legend, cell_text, legend, level_text, short_device_name
from quantmatch.tui.screens.base import QMScreen
from quantmatch.tui.screens.picker import DevicePicker
from quantmatch.tui.state import Selection

if TYPE_CHECKING:
    from textual.app import ComposeResult

    from quantmatch.sdk.profile import HardwareProfile
    from quantmatch.sdk.verdict import Verdict

__all__ = ["MatrixScreen"]

FIXED = 2  # the method and scheme columns stay in view while scrolling sideways


class MatrixTable(DataTable[Text]):
    """The matrix; Enter explains the cell under the cursor."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Explain")]


class MatrixScreen(QMScreen):
    """Every method x scheme x backend x target for the chosen device, coloured by level and marked
    with the level's symbol and word; ``c`` compares with a second device. When the columns do not
    fit, the cells keep the symbol alone, the target goes under the backend and long backend names
    are shortened (the legend says what they stand for)."""

    MODE = "matrix"
    BINDINGS: ClassVar[list[BindingType]] = [
        *QMScreen.BINDINGS,
        Binding("d", "pick_device", "Device"),
        Binding("c", "compare", "Compare"),
        Binding("x", "differences", "Diffs only"),
        Binding("f", "focus_filters", "Filters"),
        Binding("escape", "clear", "Clear", show=False),
    ]
    DEFAULT_CSS = """
    MatrixScreen #title { height: 1; text-style: bold; }
    MatrixScreen #filters { height: 1; }
    MatrixScreen #filters Select { width: 1fr; max-width: 22; }
    MatrixScreen #layer { max-width: 14; }
    MatrixScreen #search { width: 1fr; min-width: 14; }
    MatrixScreen #legend { height: auto; }
    MatrixScreen #preview { height: 4; border-top: hkey $foreground 20%; }
    MatrixScreen.-compare #preview { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.matrix: Matrix | None = None
        self.differences_only = False
        self.fit = MatrixLayout()
        self._options_set = False

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Static("", id="title")
        with Horizontal(id="filters"):
            yield Select[str]([], prompt="all methods", id="method", compact=True)
            yield Select[str]([], prompt="all backends", id="backend", compact=True)
            yield Select[str]([(f"{lv.symbol} {lv.value}", lv.value) for lv in Level], prompt="all levels",
                              id="level", compact=True)
            yield Select[str]([(x, x) for x in LAYERS], value="linear", allow_blank=False, id="layer",
                              compact=True)
            yield Input(placeholder="/ search: fp8 w8a8 vllm", id="search", compact=True)
        yield Static(legend(), id="legend")
        yield MatrixTable(id="matrix", cursor_type="cell", fixed_columns=FIXED)
        yield Static("", id="preview")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(MatrixTable).focus()

    # ---- content ---------------------------------------------------------------------------------
    def state_key(self) -> Hashable:
        return (self.registry is not None, self.qm.device_id, self.qm.compare_id)

    def filters(self) -> MatrixFilters:
        def val(sel_id: str) -> str | None:
            v = self.query_one(f"#{sel_id}", Select).value
            return None if v is Select.NULL else str(v)

        level = val("level")
        return MatrixFilters(method=val("method"), backend=val("backend"),
                             level=Level(level) if level else None, layer=val("layer") or "linear",
                             text=self.query_one("#search", Input).value,
                             differences_only=self.differences_only)

    def refresh_view(self) -> None:
        reg = self.registry
        if reg is None:
            self.query_one("#title", Static).update("Loading the registry…")
            return
        if not self._options_set:
            self._options_set = True
            self.query_one("#method", Select).set_options((e.name, e.name) for e in reg.methods())
            self.query_one("#backend", Select).set_options((e.name, e.name) for e in reg.backends()
                                                           if e.name != "hardware")
        self.set_class(self.qm.compare_id is not None, "-compare")
        self.recompute()

    def recompute(self) -> None:
        """Judge the combinations in a worker; the table is rebuilt when it answers."""
        if self.registry is None:
            return
        self.query_one(MatrixTable).loading = self.matrix is None
        self.build(self.filters(), self.qm.device_id, self.qm.compare_id)

    @work(thread=True, exclusive=True, group="matrix", name="build the matrix")
    def build(self, filters: MatrixFilters, device: str, other: str | None) -> None:
        reg = self.registry
        if reg is None:
            return
        m = build_matrix(reg, device, other, filters)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.show_matrix, m)

    @staticmethod
    def fixed_width(m: Matrix) -> int:
        """The cells the method and scheme columns take."""
        return sum(max([cell_len(label), *(cell_len(getattr(r, label)) for r in m.rows)]) + PAD
                   for label in ("method", "scheme"))

    def layout_for(self, m: Matrix) -> MatrixLayout:
        """The most spelled-out layout in which all of ``m``'s columns fit the screen's width."""
        cols = [(c.backend, c.target, c.show_target) for c in m.columns]
        return matrix_layout(cols, self.fixed_width(m), self.size.width, m.compare)

    def on_resize(self) -> None:
        if self.matrix is None:
            return
        if self.layout_for(self.matrix) != self.fit:
            self.show_matrix(self.matrix)
        else:
            self.show_headings(self.matrix)

    def show_matrix(self, m: Matrix) -> None:
        table = self.query_one(MatrixTable)
        table.loading = False
        keep = self.cursor_keys()
        self.matrix = m
        self.fit = lay = self.layout_for(m)
        table.clear(columns=True)
        table.header_height = 2 if lay.stacked and any(c.show_target for c in m.columns) else 1
        table.add_column("method", key="_method")
        table.add_column("scheme", key="_scheme")
        for col in m.columns:
            table.add_column(lay.header(col.backend, col.target, col.show_target), key=col.key)
        for row in m.rows:
            cells = [Text(row.method, style="bold"), Text(row.scheme)]
            for col in m.columns:
                a, b = m.cell(row, col)
                cells.append(cell_text(a, b, compare=m.compare, dim=not m.matches_level(row, col), words=lay.words))
            table.add_row(*cells, key=row.key)
        self.show_headings(m)
        if m.rows and m.columns:
            r, c = 0, FIXED
            if keep is not None:
                rows = [x.key for x in m.rows]
                cols = [x.key for x in m.columns]
                r = rows.index(keep[0]) if keep[0] in rows else 0
                c = FIXED + cols.index(keep[1]) if keep[1] in cols else FIXED
            table.cursor_coordinate = Coordinate(r, c)
            self.show_preview(r, c)
        else:
            self.query_one("#preview", Static).update("Nothing matches the filters (Esc clears the search).")

    def show_headings(self, m: Matrix) -> None:
        """The title (saying when columns lie beyond the right edge) and the legend, for the width."""
        title = self.title_text(m)
        cols = [(c.backend, c.target, c.show_target) for c in m.columns]
        if self.fixed_width(m) + matrix_width(self.fit, cols, m.compare) > self.size.width - SCROLLBAR:
            title.append("  → more columns", style="dim")
        self.query_one("#title", Static).update(title)
        legend_text = legend(compare=m.compare, compact=self.narrow)
        if self.fit.short and (pairs := abbreviations(c.backend for c in m.columns)):
            legend_text.append("\n").append_text(abbreviation_legend(pairs))
        self.query_one("#legend", Static).update(legend_text)

    def title_text(self, m: Matrix) -> Text:
        layer = m.filters.layer
        if m.other is None:
            counts = m.counts()
            name, layers = (short_device_name(m.device), layer) if self.narrow else (m.device.name, f"{layer} layers")
            out = Text.assemble((name, "bold"), f" · {layers} · {len(m.rows)} rows: ")
            for lv in Level:
                out.append_text(level_text(lv, word=False))
                out.append(f" {counts.get(lv, 0)}  ")
            return out
        diff = m.difference_count()
        only = " (x: show all)" if m.filters.differences_only else ""
        return Text.assemble("A ", (short_device_name(m.device), "bold"), " vs B ",
                             (short_device_name(m.other), "bold"),
                             f" · {layer} · ", (f"{diff} cells differ", "bold magenta"), only)

    # ---- cursor and preview ----------------------------------------------------------------------
    def cursor_keys(self) -> tuple[str, str] | None:
        if self.matrix is None:
            return None
        return self.keys_at(*self.query_one(MatrixTable).cursor_coordinate)

    def keys_at(self, r: int, c: int) -> tuple[str, str] | None:
        m = self.matrix
        if m is None or not (0 <= r < len(m.rows)) or not (FIXED <= c < FIXED + len(m.columns)):
            return None
        return m.rows[r].key, m.columns[c - FIXED].key

    def at(self, r: int, c: int) -> tuple[Row, Column] | None:
        m = self.matrix
        if m is None or self.keys_at(r, c) is None:
            return None
        return m.rows[r], m.columns[c - FIXED]

    def selection_at(self, r: int, c: int) -> Selection | None:
        hit = self.at(r, c)
        if hit is None:
            return None
        row, col = hit
        layer = self.matrix.filters.layer if self.matrix else "linear"
        return Selection(row.method, row.scheme, col.backend, col.target, layer)

    def _verdict(self, v: Verdict | None, sel: Selection, device: str | None) -> Verdict | None:
        """The cell's verdict, or the registry's answer for a combination the matrix has no cell for."""
        if v is not None or device is None or self.registry is None:
            return v
        try:
            return self.registry.verdict(sel.method, sel.scheme, sel.backend, device, sel.target, sel.layer)
        except Exception:
            return None

    def show_preview(self, r: int, c: int) -> None:
        preview = self.query_one("#preview", Static)
        hit, sel, m = self.at(r, c), self.selection_at(r, c), self.matrix
        if hit is None or sel is None or m is None:
            preview.update(Text("→ move to a backend column; Enter explains the cell", style="dim"))
            return
        row, col = hit
        pair = m.cell(row, col)
        lines = Text()  # in compare mode the CSS keeps one line per device (B never drops out of view)
        lines.append(sel.label, style="bold")
        devices: list[tuple[HardwareProfile, Verdict | None, str | None]] = [(m.device, pair[0], self.qm.device_id)]
        if m.other is not None:
            devices.append((m.other, pair[1], self.qm.compare_id))
        for i, (dev, cell, key) in enumerate(devices):
            v = self._verdict(cell, sel, key)
            lines.append("\n")
            if m.other is not None:
                lines.append(f"{'AB'[i]} ", style="bold")
            if cell is None:
                lines.append("· no combination: ", style="dim")
            if v is None:
                lines.append(f"{dev.name} has none")
                continue
            lines.append_text(level_text(v.level))
            lines.append(" — " + (f"runs as {v.runs_as}" if v.runs_as else v.reasons[0].text))
        preview.update(lines)

    @on(DataTable.CellHighlighted, "#matrix")
    def _highlighted(self, event: DataTable.CellHighlighted) -> None:
        self.show_preview(event.coordinate.row, event.coordinate.column)

    @on(DataTable.CellSelected, "#matrix")
    def _selected(self, event: DataTable.CellSelected) -> None:
        sel = self.selection_at(event.coordinate.row, event.coordinate.column)
        if sel is None:
            self.notify("Move to a backend column (→) and press Enter to explain a cell.")
            return
        self.post_message(CellChosen(sel))

    # ---- filters ---------------------------------------------------------------------------------
    @on(Select.Changed)
    def _filter_changed(self, event: Select.Changed) -> None:
        if event.select.id in ("method", "backend", "level", "layer"):
            self.recompute()

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        self.recompute()

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        self.query_one(MatrixTable).focus()

    def action_clear(self) -> None:
        search = self.query_one("#search", Input)
        if search.value:
            search.value = ""
        self.query_one(MatrixTable).focus()

    def action_focus_filters(self) -> None:
        self.query_one("#method", Select).focus()

    def action_differences(self) -> None:
        """Show only the cells where the two devices differ (compare mode)."""
        if self.qm.compare_id is None:
            self.notify("Differences need two devices: press c to compare with a second device.")
            return
        self.differences_only = not self.differences_only
        self.recompute()

    # ---- devices ---------------------------------------------------------------------------------
    def action_pick_device(self) -> None:
        """Choose the device to explore."""
        def chosen(key: str | None) -> None:
            if key:
                self.post_message(DeviceChosen(key))

        self.app.push_screen(DevicePicker(self.qm.device_choices(), "Explore which device?"), chosen)

    def action_compare(self) -> None:
        """Choose a second device to compare with, or leave compare mode."""
        if self.qm.compare_id is not None:
            self.qm.compare_id = None
            self.differences_only = False
            self.notify("Compare mode off.")
            self.qm.sync_screen()
            return

        def chosen(key: str | None) -> None:
            if key:
                self.post_message(DeviceChosen(key, compare=True))

        self.app.push_screen(DevicePicker(self.qm.device_choices(), "Compare with which device?"), chosen)
