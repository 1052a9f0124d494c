"""Messages the screens post to the application (tests observe them through ``message_hook``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.message import Message

from quantmatch.tui.state import Selection

if TYPE_CHECKING:
    from quantmatch.registry import Registry

__all__ = ["CellChosen", "DeviceChosen", "PlanFailed", "PlanFinished", "RegistryReady"]


class RegistryReady(Message):
    """The registry finished loading (posted by the app's loading worker)."""

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.registry = registry


class DeviceChosen(Message):
    """A device was chosen: as the device to explore, or (``compare``) as the second device;
    ``open_mode`` names the screen to show next (``None``: stay)."""

    def __init__(self, device_id: str, compare: bool = False, open_mode: str | None = None) -> None:
        super().__init__()
        self.device_id = device_id
        self.compare = compare
        self.open_mode = open_mode


class CellChosen(Message):
    """A matrix cell was chosen: the Explain screen shows it."""

    def __init__(self, selection: Selection) -> None:
        super().__init__()
        self.selection = selection


class PlanFinished(Message):
    """The planner answered (``plan`` is a :class:`quantmatch.planner.Plan`)."""

    def __init__(self, plan: Any, seconds: float) -> None:
        super().__init__()
        self.plan = plan
        self.seconds = seconds


class PlanFailed(Message):
    """The planner refused the input; ``error`` says why and names the valid choices."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error
