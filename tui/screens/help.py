"""``?``: the keys of the current screen and the global ones, the level legend, and a walk-through."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from quantmatch.sdk.verdict import Level
from quantmatch.tui.rendering import LEVEL_MEANING, level_text
from quantmatch.tui.widgets.nav import SCREENS

if TYPE_CHECKING:
    from textual.app import ComposeResult

__all__ = ["WALKTHROUGH", "HelpScreen"]

WALKTHROUGH = (
    "1  Devices: / a100 Enter Enter: the matrix for the A100 (Enter in the search picks the exact alias).",
    "2  Matrix: / fp8 w8a8-fp8 vllm Enter Enter: Explain says weight-only, runs as FP8 through Marlin.",
    "   Esc, d h100 Enter, / w4a4-int4 vllm Enter Enter: ✕ unsupported (pruned), with every reason.",
    "   Esc Esc, c a100 Enter: H100 (A) and A100 (B) side by side; ≠ marks the cells that differ, x keeps only those.",
    "4  Plan: pick a built-in model, Ctrl+R (or Enter in a field) plans; y copies the top plan's command.",
)


def _key(binding: Binding) -> str:
    return binding.key_display or {"question_mark": "?", "slash": "/", "escape": "Esc", "enter": "Enter",
                                   "ctrl+r": "Ctrl+R"}.get(binding.key, binding.key)


class HelpScreen(ModalScreen[None]):
    """A modal listing keys (from the screens' own bindings, so it never goes stale)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen #help {
        width: 100; max-width: 95%; height: auto; max-height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    """

    def __init__(self, under: Screen[object]) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(self.content(), id="help-content")

    def content(self) -> Group:
        keys = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        keys.add_column(style="bold", no_wrap=True)
        keys.add_column()
        seen: set[str] = set()
        focused = self.under.focused
        local = [b for b in getattr(focused, "BINDINGS", []) if isinstance(b, Binding) and b.show]
        for b in [*local, *getattr(self.under, "BINDINGS", []), *self.app.BINDINGS]:
            if not isinstance(b, Binding) or not b.description or b.key in seen:
                continue
            seen.add(b.key)
            if b.key in {k for k, _, _ in SCREENS}:
                continue
            keys.add_row(_key(b), b.description)
        keys.add_row(" ".join(k for k, _, _ in SCREENS), "screens: " + ", ".join(t for _, _, t in SCREENS))
        keys.add_row("Tab", "next field; arrows move in tables and lists; the mouse works too")
        keys.add_row("Ctrl+P", "command palette")
        legend = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        legend.add_column(no_wrap=True)
        legend.add_column()
        for lv in Level:
            legend.add_row(level_text(lv), LEVEL_MEANING[lv])
        title = getattr(self.under, "MODE", "") or "quantmatch"
        return Group(
            Text(f"Keys on this screen ({title}) and everywhere", style="bold underline"), keys, Text(""),
            Text("Verdict levels (symbol and word, colour is only a help)", style="bold underline"), legend,
            Text(""), Text("A first walk-through", style="bold underline"),
            *(Text(line) for line in WALKTHROUGH), Text(""), Text("Esc or ? closes this help.", style="dim"),
        )
