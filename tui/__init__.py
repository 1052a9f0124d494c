"""``quantmatch tui``: a Textual application to explore the registry, compare devices and plan.

Importing this package is cheap: Textual is imported by :mod:`quantmatch.tui.app` only, which
:func:`run` loads on demand. Screens (one module each, in :mod:`quantmatch.tui.screens`):

- Devices: the catalog and the detected local device, filter by family, search, sourced detail.
- Matrix: methods x schemes against backends/targets for one device, or two side by side.
- Explain: one combination's verdict, every reason, sources, what runs after a fallback, evidence.
- Plan: the planner's ranked plans and rejected candidates for a model, device and workload.
- Plugins: loaded plugins, versions, contributions, broken plugins with their errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quantmatch.registry import Registry
    from quantmatch.sdk.pluginhost import PluginHost

__all__ = ["run"]


def run(registry: Registry | None = None, host: PluginHost | None = None, **options: Any) -> int:
    """Run the application in the terminal until the user quits; returns the exit code.

    ``registry`` or ``host`` inject what to show (tests, notebooks); by default the process-wide
    plugin host is loaded in a background worker. ``options`` go to
    :class:`~quantmatch.tui.app.QuantmatchApp` (``device``, ``compare``, ``mode``).
    """
    from quantmatch.tui.app import QuantmatchApp

    app = QuantmatchApp(registry=registry, host=host, **options)
    app.run()
    return int(app.return_code or 0)
