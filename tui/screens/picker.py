"""A modal device picker: type to filter, arrows to move, Enter to choose, Escape to cancel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from quantmatch.tui.screens.devices import device_matches, exact_match

if TYPE_CHECKING:
    from textual.app import ComposeResult

    from quantmatch.sdk.profile import HardwareProfile

__all__ = ["DevicePicker"]


class DevicePicker(ModalScreen[str | None]):
    """Returns the chosen device id (``local`` for the detected device), or ``None`` when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("down", "focus_list", "List", show=False),
    ]
    DEFAULT_CSS = """
    DevicePicker { align: center middle; }
    DevicePicker #dialog {
        width: 72; max-width: 95%; height: 20; max-height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    DevicePicker #picker-title { height: auto; text-style: bold; }
    DevicePicker #picker-list { height: 1fr; }
    """

    def __init__(self, devices: Sequence[tuple[str, HardwareProfile]], title: str) -> None:
        super().__init__()
        self.devices = list(devices)
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"{self.title_text}  (type to filter, Enter chooses, Esc cancels)", id="picker-title")
            yield Input(placeholder="a100, h100, mi300, m2, sapphire …", id="picker-search", compact=True)
            yield OptionList(id="picker-list")

    def on_mount(self) -> None:
        self._fill("")
        self.query_one("#picker-search", Input).focus()

    def _fill(self, query: str) -> None:
        ol = self.query_one(OptionList)
        ol.clear_options()
        hits = [(key, d) for key, d in self.devices if device_matches(d, query)]
        best = exact_match(hits, query)  # "h100" is the SXM part: its alias, so it comes first
        hits.sort(key=lambda kd: kd[0] != best)
        ol.add_options(Option(f"{key if key == 'local' else d.id:<28} {d.name}", id=key) for key, d in hits)
        if ol.option_count:
            ol.highlighted = 0

    @on(Input.Changed, "#picker-search")
    def _changed(self, event: Input.Changed) -> None:
        self._fill(event.value)

    @on(Input.Submitted, "#picker-search")
    def _submitted(self) -> None:
        ol = self.query_one(OptionList)
        if ol.highlighted is not None:
            self.dismiss(ol.get_option_at_index(ol.highlighted).id)

    @on(OptionList.OptionSelected, "#picker-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_focus_list(self) -> None:
        self.query_one(OptionList).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)
