"""The Textual application: five screens (modes), global keys, the shared choices, and the worker
that builds the registry so that the first screen paints before the plugins are loaded."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType

from quantmatch.tui.messages import CellChosen, DeviceChosen, RegistryReady
from quantmatch.tui.rendering import short_device_name
from quantmatch.tui.screens.base import NARROW, QMScreen
from quantmatch.tui.state import Selection
from quantmatch.tui.widgets.nav import SCREENS

if TYPE_CHECKING:
    from quantmatch.registry import Registry
    from quantmatch.sdk.pluginhost import PluginHost
    from quantmatch.sdk.profile import HardwareProfile

__all__ = ["QuantmatchApp"]


def _lazy(module: str, name: str) -> Callable[[], QMScreen]:
    """A screen factory that imports its module on first use: start-up loads only the first screen."""
    def make() -> QMScreen:
        cls: type[QMScreen] = getattr(import_module(f"{__package__}.screens.{module}"), name)
        return cls()

    make.__qualname__ = f"{name}()"
    return make


class QuantmatchApp(App[None]):
    """``quantmatch tui``.

    ``registry`` (or ``host``, a :class:`~quantmatch.sdk.pluginhost.PluginHost`) injects what to show;
    without either, the process-wide plugin host is loaded in a worker thread. ``device`` is the
    device explored first (an id, alias or ``local``), ``compare`` a second device for the
    side-by-side matrix, ``mode`` the first screen, ``selection`` the combination Explain shows.
    """

    TITLE = "quantmatch"
    SUB_TITLE = "which quantization fits your model, hardware and workload"
    MODES: ClassVar[dict[str, Callable[[], QMScreen]]] = {  # type: ignore[assignment]
        "devices": _lazy("devices", "DevicesScreen"),
        "matrix": _lazy("matrix", "MatrixScreen"),
        "explain": _lazy("explain", "ExplainScreen"),
        "plan": _lazy("plan", "PlanScreen"),
        "plugins": _lazy("plugins", "PluginsScreen"),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        *[Binding(key, f"switch_mode('{mode}')", title, show=False) for key, mode, title in SCREENS],
    ]
    CSS = """
    Screen { layout: vertical; }
    .hint { color: $text-muted; height: auto; }
    DataTable { height: 1fr; }
    """

    def __init__(self, registry: Registry | None = None, host: PluginHost | None = None, *,
                 device: str = "local", compare: str | None = None, mode: str = "devices",
                 selection: Selection | None = None) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown screen {mode!r}; valid: {', '.join(self.MODES)}")
        self.registry: Registry | None = registry
        self._host = host
        self.device_id = device
        self.compare_id = compare
        self.selection = selection
        self._start_mode = mode
        self.started = time.perf_counter()
        self.registry_seconds: float | None = None
        self.first_paint: tuple[float, float] | None = None
        """(wall clock ``time.time()``, process CPU seconds) when the first screen was painted."""
        self.local_profile: HardwareProfile | None = None
        self.local_error = ""

    # ---- start-up ---------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.switch_mode(self._start_mode)
        if self.registry is not None:
            self.post_message(RegistryReady(self.registry))

    def screen_painted(self) -> None:
        """Called once the first screen is mounted and painted (the start-up benchmark reads
        :attr:`first_paint`); only then the registry starts loading, so that the screen shows
        "Loading…" at once instead of sharing the interpreter with the plugin loading."""
        if self.first_paint is not None:
            return
        self.first_paint = (time.time(), time.process_time())
        if self.registry is None:
            self.load_registry()

    @work(thread=True, exclusive=True, group="registry", name="load the registry")
    def load_registry(self) -> None:
        """Load the plugins and build the registry off the UI thread (about half a second)."""
        from quantmatch.registry import Registry

        reg = Registry(self._host) if self._host is not None else Registry()
        self.post_message(RegistryReady(reg))

    def on_registry_ready(self, message: RegistryReady) -> None:
        self.registry = message.registry
        self.registry_seconds = time.perf_counter() - self.started
        for key, which in ((self.device_id, "device"), (self.compare_id, "compare")):
            if key is None:
                continue
            try:
                self.registry.device(key)
            except Exception as e:  # unknown id, or nothing detected for "local"
                fallback = self.registry.devices()[0].id if which == "device" else None
                self.notify(f"{str(e).splitlines()[0]}; showing {fallback or 'one device'}", severity="warning",
                            markup=False)
                if which == "device":
                    self.device_id = fallback or key
                else:
                    self.compare_id = None
        self.detect_local()
        broken = self.registry.host.broken
        if broken and self.current_mode != "plugins":  # the Plugins screen shows them anyway
            names = ", ".join(p.name for p in broken)
            self.notify(f"{len(broken)} broken plugin(s) skipped: {names}. See Plugins (5).",
                        severity="warning", timeout=8, markup=False)
        self.sync_screen()

    @work(thread=True, exclusive=True, group="detect", name="detect the local device")
    def detect_local(self) -> None:
        """Detection reads CPU flags and asks NVML/ROCm/Metal: off the UI thread."""
        reg = self.registry
        if reg is None:
            return
        try:
            local, error = reg.local(), ""
        except Exception as e:
            local, error = None, f"local device not detected: {str(e).splitlines()[0]}"
        self.call_from_thread(self._set_local, local, error)

    def _set_local(self, local: HardwareProfile | None, error: str) -> None:
        self.local_profile, self.local_error = local, error
        self.sync_screen()

    def device_choices(self) -> list[tuple[str, HardwareProfile]]:
        """(key, profile) for every device a user can pick: ``local`` first when detected, then the catalog."""
        if self.registry is None:
            return []
        local = [("local", self.local_profile)] if self.local_profile is not None else []
        return local + [(d.id, d) for d in self.registry.devices()]

    # ---- shared choices -------------------------------------------------------------------------
    def device(self, key: str | None = None) -> HardwareProfile | None:
        """The profile of ``key`` (default: the explored device), or ``None`` before the registry loads."""
        key = key or self.device_id
        if self.registry is None or key is None:
            return None
        try:
            return self.registry.device(key)
        except Exception:
            return None

    def device_label(self) -> str:
        """``NVIDIA A100 ...`` (``A100 ...`` on a narrow screen) or ``A100 ... vs H100 ...`` for the
        navigation bar."""
        if self.registry is None:
            return "loading the registry…"
        a = self.device()
        b = self.device(self.compare_id) if self.compare_id else None
        if a is None:
            return ""
        if b is None:
            return short_device_name(a) if self.size.width < NARROW else a.name
        return f"{short_device_name(a)} vs {short_device_name(b)}"

    def sync_screen(self) -> None:
        """Refresh the current screen from the shared choices."""
        if isinstance(self.screen, QMScreen):
            self.screen.sync()

    def on_device_chosen(self, message: DeviceChosen) -> None:
        if message.compare:
            self.compare_id = None if message.device_id == self.device_id else message.device_id
        else:
            self.device_id = message.device_id
            if self.compare_id == message.device_id:
                self.compare_id = None
        if message.open_mode and message.open_mode != self.current_mode:
            self.switch_mode(message.open_mode)
        else:
            self.sync_screen()

    def on_cell_chosen(self, message: CellChosen) -> None:
        self.selection = message.selection
        self.switch_mode("explain")

    def action_help(self) -> None:
        """Show the keys of the current screen, the level legend and a walk-through."""
        from quantmatch.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))
