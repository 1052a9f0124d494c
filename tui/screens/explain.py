"""Explain: one combination's verdict on the chosen device (and the compared one): the level, every
reason with its source, what actually runs after a fallback, the silicon's own answer, and the
measured evidence when ``quantmatch verify``/``bench`` attached some."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, ClassVar

from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from quantmatch.tui.rendering import verdict_block
from quantmatch.tui.screens.base import QMScreen

if TYPE_CHECKING:
    from textual.app import ComposeResult

    from quantmatch.registry import Registry
    from quantmatch.sdk.profile import HardwareProfile
    from quantmatch.sdk.verdict import Verdict
    from quantmatch.tui.state import Selection

__all__ = ["ExplainScreen", "explain_verdicts"]

HINT = ("Nothing chosen yet. In the Matrix (2), move to a cell and press Enter; for example "
        "/ fp8 w8a8-fp8 vllm on an A100, or / w4a4-int4 on an H100.")


def explain_verdicts(reg: Registry, sel: Selection, device: str) -> list[Verdict]:
    """The verdict for every relevant layer type, always including the layer the matrix showed."""
    verdicts = reg.explain(sel.method, sel.scheme, sel.backend, device, sel.target)
    if sel.layer not in {v.layer for v in verdicts}:
        verdicts.append(reg.verdict(sel.method, sel.scheme, sel.backend, device, sel.target, sel.layer))
    return verdicts


def hardware_verdict(reg: Registry, sel: Selection, device: str) -> Verdict | None:
    """What the device's matrix/vector engine does with these number formats, whatever the runtime."""
    if sel.backend == "hardware":
        return None
    try:
        return reg.verdict(None, sel.scheme, "hardware", device, sel.target)
    except Exception:  # a scheme the hardware backend cannot phrase (e.g. some GGUF types)
        return None


class ExplainScreen(QMScreen):
    """Why a combination gets its level, for one device or both devices of a comparison."""

    MODE = "explain"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Matrix"),
        Binding("y", "copy", "Copy CLI"),
        Binding("slash", "search", "Search", key_display="/"),
    ]
    DEFAULT_CSS = """
    ExplainScreen #explain-title { height: auto; text-style: bold; background: $boost; padding: 0 1; }
    ExplainScreen #explain-body { height: 1fr; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Static("", id="explain-title")
        with VerticalScroll(id="explain-body"):
            yield Static(HINT, id="explain-content")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#explain-body").focus()

    def state_key(self) -> Hashable:
        return (self.registry is not None, self.qm.device_id, self.qm.compare_id, self.qm.selection)

    def refresh_view(self) -> None:
        reg, sel = self.registry, self.qm.selection
        title = self.query_one("#explain-title", Static)
        content = self.query_one("#explain-content", Static)
        if reg is None:
            title.update("Loading the registry…")
            return
        if sel is None:
            title.update("Explain")
            content.update(HINT)
            return
        title.update(Text.assemble(sel.label, f" · {sel.layer} layers"))
        keys = [self.qm.device_id] + ([self.qm.compare_id] if self.qm.compare_id else [])
        parts: list[RenderableType] = []
        for i, key in enumerate(keys):
            dev = self.qm.device(key)
            if dev is None:
                continue
            if len(keys) > 1:
                parts.append(Rule(f"{'AB'[i]}: {dev.name}", align="left"))
            parts.append(self.device_block(reg, sel, key, dev))
        parts.append(Text(f"\nOn the command line: {sel.cli(self.qm.device_id)}   (y copies it)", style="dim"))
        content.update(Group(*parts))
        self.query_one("#explain-body", VerticalScroll).scroll_home(animate=False)

    def device_block(self, reg: Registry, sel: Selection, key: str, dev: HardwareProfile) -> RenderableType:
        try:
            verdicts = explain_verdicts(reg, sel, key)
        except Exception as e:  # an unknown name after a plugin went away, a scheme that does not parse
            return Text(f"{dev.name}: cannot explain: {str(e).splitlines()[0]}", style="red")
        hw = hardware_verdict(reg, sel, key)
        blocks = [verdict_block(v, dev.name, hw if v.layer == "linear" else None) for v in verdicts]
        spaced: list[RenderableType] = []
        for b in blocks:
            spaced += [b, Text("")]
        return Group(*spaced)

    def action_back(self) -> None:
        self.app.switch_mode("matrix")

    def action_search(self) -> None:
        """Search in the matrix."""
        self.app.switch_mode("matrix")
        self.app.call_after_refresh(self._focus_matrix_search)

    def _focus_matrix_search(self) -> None:
        screen = self.app.screen
        if isinstance(screen, QMScreen):
            screen.action_search()

    def action_copy(self) -> None:
        sel = self.qm.selection
        if sel is None:
            self.notify("Nothing to copy: choose a cell in the Matrix first.", severity="warning")
            return
        text = sel.cli(self.qm.device_id)
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied: {text}", markup=False)
