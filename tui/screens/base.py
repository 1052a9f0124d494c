"""What every main screen shares: the navigation bar, the footer, ``/`` search, and a ``sync``
hook that refreshes the screen when the registry or the app's choices changed while it was away."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, ClassVar, cast

from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Input

from ..widgets.nav import NavBar

if TYPE_CHECKING:
    from quantmatch.registry import Registry

    from ..app import QuantmatchApp

__all__ = ["QMScreen"]


class QMScreen(Screen[None]):
    """A main screen (one per mode). Subclasses set ``MODE`` and implement :meth:`state_key` and
    :meth:`refresh_view`; :meth:`sync` calls ``refresh_view`` whenever ``state_key`` changed."""

    MODE: ClassVar[str] = ""
    BINDINGS: ClassVar[list[BindingType]] = [Binding("slash", "search", "Search", key_display="/")]

    def __init__(self) -> None:
        super().__init__()
        self._synced: Hashable = object()

    @property
    def qm(self) -> QuantmatchApp:
        """The application, typed."""
        return cast("QuantmatchApp", self.app)

    @property
    def registry(self) -> Registry | None:
        return self.qm.registry

    def nav(self) -> NavBar:
        return NavBar(self.MODE, id="nav")

    def state_key(self) -> Hashable:
        """What the screen's content depends on (compared on every :meth:`sync`)."""
        return self.registry is not None

    def refresh_view(self) -> None:
        """Rebuild the content from the registry and the app's choices."""

    def sync(self, force: bool = False) -> None:
        """Refresh the navigation bar and, when what the content depends on changed, the content."""
        self.query_one(NavBar).set_device(self.qm.device_label())
        key = self.state_key()
        if force or key != self._synced:
            self._synced = key
            self.refresh_view()

    def on_mount(self) -> None:
        self.call_after_refresh(self.qm.screen_painted)

    def on_screen_resume(self) -> None:
        self.sync()

    def action_search(self) -> None:
        """Focus the screen's search box (``#search``) with its text selected, so typing replaces it."""
        boxes = self.query("#search")
        if boxes:
            box = boxes.first()
            box.focus()
            if isinstance(box, Input):
                box.action_select_all()
