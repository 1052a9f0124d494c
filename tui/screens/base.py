"""What every main screen shares: the navigation bar, the footer, ``/`` search, the ``-narrow``
class below 100 columns, and a ``sync`` hook that refreshes the screen when the registry or the
app's choices changed while it was away."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, ClassVar, cast

from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Input

from quantmatch.tui.widgets.nav import NavBar

if TYPE_CHECKING:
    from quantmatch.registry import Registry
    from quantmatch.tui.app import QuantmatchApp

__all__ = ["NARROW", "QMScreen"]

NARROW = 100
"""Below this many columns screens use their compact layout (80x24 is the smallest supported)."""


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

    @property
    def narrow(self) -> bool:
        return self.size.width < NARROW

    def on_resize(self) -> None:
        """Compact footer on narrow screens, so that the keys that matter (``q``, ``?``) stay in view;
        the command palette's key is then listed by ``?`` only."""
        self.set_class(self.narrow, "-narrow")
        for nav in self.query(NavBar):
            nav.set_device(self.qm.device_label())
        for footer in self.query(Footer):
            if footer.compact != self.narrow:
                footer.compact = self.narrow
                footer.show_command_palette = not self.narrow
                footer.refresh(recompose=True)

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
