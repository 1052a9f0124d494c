"""Devices: the catalog and the detected local device, filter by family, search, sourced detail."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Input, Select, Static

from quantmatch.tui.layout import SCROLLBAR, fit_flexible
from quantmatch.tui.messages import DeviceChosen
from quantmatch.tui.rendering import device_detail
from quantmatch.tui.screens.base import QMScreen

if TYPE_CHECKING:
    from textual.app import ComposeResult

    from quantmatch.sdk.profile import HardwareProfile

__all__ = ["DevicesScreen", "device_matches"]

LOCAL = "local"
DEVICE_COLUMNS = ("device", "name", "arch", "memory")


def device_matches(d: HardwareProfile, query: str) -> bool:
    """Whether every word of ``query`` occurs in the device's id, aliases, name, vendor, family,
    architecture or feature flags (``a100``, ``nvidia fp8``, ``sm_90``, ``amx``)."""
    hay = " ".join([d.id, *d.aliases, d.name, d.vendor, d.family, d.arch, d.arch_name, *d.features]).lower()
    return all(tok in hay for tok in query.lower().split())


def exact_match(devices: list[tuple[str, HardwareProfile]], query: str) -> str | None:
    """The key of the device whose id or alias is exactly ``query`` (``a100`` is the 80GB SXM), if any."""
    q = query.strip().lower()
    for key, d in devices:
        if q and (q == key.lower() or q == d.id.lower() or q in (a.lower() for a in d.aliases)):
            return key
    return None


class DeviceTable(DataTable[Text]):
    """The device list; Enter opens the matrix for the highlighted device."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Matrix")]


class DevicesScreen(QMScreen):
    """The catalog, the local device first, a family filter, search, and the highlighted device's
    detail (every figure with its source and confidence)."""

    MODE = "devices"
    BINDINGS: ClassVar[list[BindingType]] = [
        *QMScreen.BINDINGS,
        Binding("c", "compare", "Compare"),
        Binding("f", "focus_family", "Family"),
        Binding("escape", "clear", "Clear", show=False),
    ]
    DEFAULT_CSS = """
    DevicesScreen #filters { height: 1; }
    DevicesScreen #family { width: 24; }
    DevicesScreen #search { width: 1fr; }
    DevicesScreen #body { height: 1fr; }
    DevicesScreen #devices { width: 1fr; min-width: 30; }
    DevicesScreen #detail { width: 1fr; border-left: vkey $foreground 20%; padding: 0 1; }
    DevicesScreen #count { height: 1; color: $text-muted; }
    DevicesScreen.-narrow #body { layout: vertical; }
    DevicesScreen.-narrow #devices { height: 1fr; width: 1fr; }
    DevicesScreen.-narrow #detail { height: 1fr; width: 1fr; border-left: none; border-top: hkey $foreground 20%; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._profiles: dict[str, HardwareProfile] = {}
        self._families_set = False
        self._fitted_width = 0

    def compose(self) -> ComposeResult:
        yield self.nav()
        with Horizontal(id="filters"):
            yield Select[str]([], prompt="all families", id="family", compact=True)
            yield Input(placeholder="/ search: id, name, arch or feature (a100, fp8, sm_90 …)", id="search",
                        compact=True)
        with Horizontal(id="body"):
            yield DeviceTable(id="devices", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="detail"):
                yield Static("Loading the registry…", id="detail-body")
        yield Static("", id="count")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DeviceTable).focus()

    def on_resize(self) -> None:
        self.call_after_refresh(self._refit)  # once the table has its new size

    def _refit(self) -> None:
        if self.registry is not None and self.query_one(DeviceTable).size.width != self._fitted_width:
            self.fill_table()

    # ---- content ---------------------------------------------------------------------------------
    def state_key(self) -> Hashable:
        return (self.registry is not None, self.qm.local_profile is not None, self.qm.local_error)

    def refresh_view(self) -> None:
        reg = self.registry
        if reg is None:
            return
        families = list(dict.fromkeys(d.family for d in reg.devices()))
        if not self._families_set:  # the options are set once, when the registry arrives
            self._families_set = True
            self.query_one("#family", Select).set_options((f, f) for f in families)
        self.fill_table()

    def visible_devices(self) -> list[tuple[str, HardwareProfile]]:
        """(row key, profile) of the devices that pass the family filter and the search."""
        family = self.query_one("#family", Select).value
        query = self.query_one("#search", Input).value
        return [(k, d) for k, d in self.qm.device_choices()
                if (family is Select.NULL or d.family == family) and device_matches(d, query)]

    def fill_table(self) -> None:
        table = self.query_one(DeviceTable)
        keep = self.highlighted_key()
        rows = self.visible_devices()
        self._profiles = dict(rows)
        cells = [[Text(f"⌂ local ({d.id})" if key == LOCAL else d.id), Text(d.name), Text(d.arch),
                  Text(str(d.memory))] for key, d in rows]
        self._fitted_width = table.size.width
        widths = [max([cell_len(h), *(r[i].cell_len for r in cells)]) for i, h in enumerate(DEVICE_COLUMNS)]
        # the name gives way first (it is cut, never below 16 cells); then the arch and the memory go
        shown, name_width = fit_flexible(widths, (0, 1, 3, 2), 1, 16, (table.size.width or 999) - SCROLLBAR)
        table.clear(columns=True)
        for header, keep_it in zip(DEVICE_COLUMNS, shown):
            if keep_it:
                table.add_column(header, key=header)
        for (key, _), row in zip(rows, cells):
            row[1].truncate(name_width, overflow="ellipsis")
            table.add_row(*(c for c, keep_it in zip(row, shown) if keep_it), key=key)
        total = len(self.registry.devices()) if self.registry else 0
        note = f"  {self.qm.local_error}" if self.qm.local_error else ""
        shown_n = sum(k != LOCAL for k, _ in rows)
        keys_hint = "" if self.narrow else "; Enter: matrix for the device, c: compare it with the current one"
        self.query_one("#count", Static).update(Text(
            f"{shown_n} of {total} catalog devices{' + local' if any(k == LOCAL for k, _ in rows) else ''}"
            f"{keys_hint}{note}"))
        if rows:
            keys = [k for k, _ in rows]
            if keep is None:  # first fill: start on the device being explored
                cur = self.qm.device()
                keep = LOCAL if self.qm.device_id == LOCAL else (cur.id if cur is not None else None)
            table.move_cursor(row=keys.index(keep) if keep in keys else 0)
            self.show_detail(keys[table.cursor_row] if table.cursor_row < len(keys) else keys[0])
        else:
            self.query_one("#detail-body", Static).update("No device matches the search and the family filter.")

    def highlighted_key(self) -> str | None:
        table = self.query_one(DeviceTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def show_detail(self, key: str) -> None:
        d = self._profiles.get(key)
        if d is not None:
            self.query_one("#detail-body", Static).update(device_detail(d))

    # ---- events ----------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#devices")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.show_detail(str(event.row_key.value))

    @on(DataTable.RowSelected, "#devices")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(DeviceChosen(str(event.row_key.value), open_mode="matrix"))

    @on(Input.Changed, "#search")
    @on(Select.Changed, "#family")
    def _filter(self) -> None:
        if self.registry is not None:
            self.fill_table()

    @on(Input.Submitted, "#search")
    def _submitted(self, event: Input.Submitted) -> None:
        """Enter in the search: to the list, on the device the query names exactly (``a100``, ``h100``)."""
        table = self.query_one(DeviceTable)
        rows = list(self._profiles.items())
        key = exact_match(rows, event.value)
        if key is not None:
            table.move_cursor(row=[k for k, _ in rows].index(key))
        table.focus()

    def action_compare(self) -> None:
        """Compare the highlighted device with the current one in the matrix."""
        key = self.highlighted_key()
        if key is None:
            return
        if key == self.qm.device_id:
            self.notify("That is the current device: choose another one to compare with (Enter makes a device "
                        "current).", severity="warning")
            return
        self.post_message(DeviceChosen(key, compare=True, open_mode="matrix"))

    def action_focus_family(self) -> None:
        self.query_one("#family", Select).focus()

    def action_clear(self) -> None:
        search = self.query_one("#search", Input)
        if search.value:
            search.value = ""
        self.query_one(DeviceTable).focus()
