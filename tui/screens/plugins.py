"""Plugins: every plugin with its distribution and version, what it contributed, and broken plugins
with their errors."""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import TYPE_CHECKING, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Input, Static

from quantmatch.tui.layout import SCROLLBAR, fit_flexible
from quantmatch.tui.rendering import contribution_summary, plugin_detail, status_text
from quantmatch.tui.screens.base import QMScreen

if TYPE_CHECKING:
    from textual.app import ComposeResult

    from quantmatch.sdk.pluginhost import PluginInfo

__all__ = ["PluginsScreen", "short_name"]

_ORDER = {"broken": 0, "blocked": 1, "ok": 2}
PLUGIN_COLUMNS = ("plugin", "version", "status", "contributed")
_RAISED = re.compile(r"^\w+ raised (?=\w+: )")
"""``register_backends raised `` in front of an error: the table keeps the exception (the detail has all)."""


def short_name(p: PluginInfo) -> str:
    """``backends.vllm`` for built-ins (their distribution says quantmatch); third parties as named."""
    prefix = "quantmatch.plugins."
    return p.name[len(prefix):] if p.builtin and p.name.startswith(prefix) else p.name


class PluginsScreen(QMScreen):
    """Third-party and broken plugins first, then the built-ins; the highlighted plugin's detail below."""

    MODE = "plugins"
    BINDINGS: ClassVar[list[BindingType]] = [
        *QMScreen.BINDINGS,
        Binding("escape", "clear", "Clear", show=False),
    ]
    DEFAULT_CSS = """
    PluginsScreen #plugins-bar { height: 1; }
    PluginsScreen #plugins-summary { width: auto; padding: 0 1 0 0; }
    PluginsScreen #search { width: 1fr; }
    PluginsScreen #plugins { height: 1fr; }
    PluginsScreen #plugin-detail { height: 1fr; border-top: hkey $foreground 20%; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._infos: dict[str, PluginInfo] = {}
        self._fitted_width = 0

    def compose(self) -> ComposeResult:
        yield self.nav()
        with Horizontal(id="plugins-bar"):
            yield Static("", id="plugins-summary")
            yield Input(placeholder="/ search plugins and contributions", id="search", compact=True)
        yield DataTable(id="plugins", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="plugin-detail"):
            yield Static("", id="plugin-detail-body")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#plugins", DataTable).focus()

    def on_resize(self) -> None:
        self.call_after_refresh(self._refit)  # once the table has its new size

    def _refit(self) -> None:
        if self.registry is not None and self.query_one("#plugins", DataTable).size.width != self._fitted_width:
            self.fill()

    def state_key(self) -> Hashable:
        return self.registry is not None

    def refresh_view(self) -> None:
        if self.registry is None:
            return
        infos = list(self.registry.host.plugins.values())
        third = sum(not p.builtin for p in infos)
        broken = sum(p.status == "broken" for p in infos)
        summary = Text(f"{len(infos)} plugins, {third} third-party, ")
        summary.append(f"{broken} broken", style="bold red" if broken else "")
        self.query_one("#plugins-summary", Static).update(summary)
        self.fill()

    def fill(self) -> None:
        if self.registry is None:
            return
        query = self.query_one("#search", Input).value.lower().split()
        infos = sorted(self.registry.host.plugins.values(), key=lambda p: (_ORDER.get(p.status, 3), p.builtin))
        table = self.query_one("#plugins", DataTable)
        highlighted = self.highlighted()
        self._infos = {}
        rows: list[list[Text]] = []
        for p in infos:
            hay = " ".join([p.name, p.distribution, p.status, *p.contributed, *p.errors]).lower()
            if not all(t in hay for t in query):
                continue
            self._infos[p.name] = p
            contributed = Text(f"error: {_RAISED.sub('', p.errors[0])}", style="red") if p.errors else \
                Text(contribution_summary(p.contributed))
            rows.append([Text(short_name(p)), Text(f"{p.distribution} {p.version}"), status_text(p.status),
                         contributed])
        # the contributions give way first (cut, the detail below has them whole), then the version goes
        self._fitted_width = table.size.width
        widths = [max([cell_len(h), *(r[i].cell_len for r in rows)]) for i, h in enumerate(PLUGIN_COLUMNS)]
        shown, last_width = fit_flexible(widths, (0, 3, 1, 2), 3, 24, (table.size.width or 999) - SCROLLBAR)
        table.clear(columns=True)
        for header, keep in zip(PLUGIN_COLUMNS, shown):
            if keep:
                table.add_column(header, key=header)
        for name, row in zip(self._infos, rows):
            row[3].truncate(last_width, overflow="ellipsis")
            table.add_row(*(c for c, keep in zip(row, shown) if keep), key=name)
        if self._infos:
            names = list(self._infos)
            table.move_cursor(row=names.index(highlighted) if highlighted in names else 0)
            self.show(names[table.cursor_row])
        else:
            self.query_one("#plugin-detail-body", Static).update("No plugin matches the search.")

    def highlighted(self) -> str | None:
        table = self.query_one("#plugins", DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def show(self, name: str) -> None:
        p = self._infos.get(name)
        if p is not None and self.registry is not None:
            host = self.registry.host
            rows = [(backend, cap) for backend, items in host.refinements.items()
                    for cap, prov in items if prov.plugin == p.name]
            options = {m: e.obj.options.specs() for m, e in host.quantizers.items() if e.provenance.plugin == p.name}
            self.query_one("#plugin-detail-body", Static).update(plugin_detail(p, rows, options))

    @on(DataTable.RowHighlighted, "#plugins")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.show(str(event.row_key.value))

    @on(Input.Changed, "#search")
    def _search(self) -> None:
        self.fill()

    @on(Input.Submitted, "#search")
    def _submitted(self) -> None:
        self.query_one("#plugins", DataTable).focus()

    def action_clear(self) -> None:
        search = self.query_one("#search", Input)
        if search.value:
            search.value = ""
        self.query_one("#plugins", DataTable).focus()
