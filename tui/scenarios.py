"""Scripted visits of the app: the documentation's screenshots, the snapshot tests and the start-up
benchmark replay these, so that what the docs show is what the tests check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quantmatch.tui.state import Selection

if TYPE_CHECKING:
    from textual.pilot import Pilot

    from quantmatch.registry import Registry
    from quantmatch.tui.app import QuantmatchApp

__all__ = ["SCENARIOS", "Scenario", "play", "settle"]


@dataclass(frozen=True)
class Scenario:
    """Start the app on ``mode`` with ``device`` (and ``compare``/``selection``), then press ``keys``.

    A key ``"type:TEXT"`` types TEXT character by character.
    """

    name: str
    caption: str
    mode: str = "devices"
    device: str = "a100"
    compare: str | None = None
    selection: Selection | None = None
    keys: tuple[str, ...] = ()
    size: tuple[int, int] = (100, 30)

    def app(self, registry: Registry | None = None) -> QuantmatchApp:
        from quantmatch.tui.app import QuantmatchApp

        return QuantmatchApp(registry=registry, device=self.device, compare=self.compare, mode=self.mode,
                             selection=self.selection)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("devices", "Devices: the catalog with the detected machine first; the A100's figures with their "
             "sources and confidence."),
    Scenario("matrix", "Matrix: FP8 schemes on an A100, every cell with its level's symbol (the legend spells "
             "them out); the preview says what runs.", mode="matrix",
             keys=("slash", "type:fp8", "enter", *("right",) * 4)),
    Scenario("matrix-pruned", "Matrix: W4A4 schemes on an H100: INT4 x INT4 is pruned in every runtime.",
             mode="matrix", device="h100", keys=("slash", "type:w4a4", "enter", "right", "right", "right")),
    Scenario("compare", "Compare: A100 (A) against H100 (B), only the cells that differ (≠, highlighted).",
             mode="matrix", compare="h100", keys=("x",)),
    Scenario("explain", "Explain: FP8 W8A8 on an A100 in vLLM runs weight-only, as FP8 Marlin, and why.",
             mode="explain", selection=Selection("fp8", "w8a8-fp8", "vllm", "cuda")),
    Scenario("explain-pruned", "Explain: W4A4 INT4 on an H100 in vLLM is pruned; the silicon alone emulates it.",
             mode="explain", device="h100", selection=Selection("rtn", "w4a4-int4", "vllm", "cuda")),
    Scenario("plan", "Plan: Llama 3.1 8B on an A100, ranked plans with memory and speed; y copies the command.",
             mode="plan", keys=("ctrl+r",)),
    Scenario("plugins", "Plugins: versions, contributions, broken plugins with their errors.", mode="plugins"),
    Scenario("matrix-80x24", "Matrix at 80x24: level symbols (the legend spells them out), short backend names "
             "with their full names, the target under the backend; → scrolls to the other columns.", mode="matrix",
             size=(80, 24)),
    Scenario("plan-80x24", "Plan at 80x24: the columns that fit; the line under the table gives the highlighted "
             "plan's other figures.", mode="plan", keys=("ctrl+r",), size=(80, 24)),
    Scenario("help", "Help (?): the screen's keys, the level legend, a walk-through.", mode="matrix",
             keys=("question_mark",)),
)}


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until the workers (registry, detection, matrix, planner) finished and the screen caught up."""
    app = pilot.app
    for _ in range(10):
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not any(w.is_running for w in app.workers):
            return


async def play(pilot: Pilot[Any], scenario: Scenario) -> None:
    """Replay ``scenario.keys`` once the app settled, settling after each key."""
    await settle(pilot)
    for key in scenario.keys:
        if key.startswith("type:"):
            await pilot.press(*["space" if ch == " " else ch for ch in key[5:]])
        else:
            await pilot.press(key)
        await settle(pilot)
