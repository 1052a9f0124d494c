"""The one-line navigation bar: the screens with their keys, the current device, clickable."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

__all__ = ["SCREENS", "NavBar"]

SCREENS: tuple[tuple[str, str, str], ...] = (
    ("1", "devices", "Devices"),
    ("2", "matrix", "Matrix"),
    ("3", "explain", "Explain"),
    ("4", "plan", "Plan"),
    ("5", "plugins", "Plugins"),
)
"""(key, mode, title) of every screen, in navigation order."""


class NavBar(Static):
    """``quantmatch  [1 Devices] 2 Matrix 3 Explain ...  device: ...``; the active screen is marked
    with brackets as well as colour, and each entry can be clicked."""

    DEFAULT_CSS = """
    NavBar {
        height: 1;
        width: 1fr;
        background: $panel;
        color: $text;
    }
    """

    def __init__(self, active: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.active = active
        self.device_label = ""

    def on_mount(self) -> None:
        self.refresh_content()

    def set_device(self, label: str) -> None:
        self.device_label = label
        self.refresh_content()

    def refresh_content(self) -> None:
        parts: list[Content | str] = [Content.styled(" quantmatch ", "bold")]
        for key, mode, title in SCREENS:
            if mode == self.active:
                parts.append(Content.styled(f"[{key} {title}]", "bold reverse"))
            else:
                parts.append(Content.from_markup(f" [@click=app.switch_mode('{mode}')]{key} {title}[/] "))
        if self.device_label:
            parts.append(Content.styled(f"  {self.device_label}", "italic"))
        self.update(Content("").join(parts))
