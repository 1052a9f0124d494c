"""SVG snapshots of every screen at 100x30, and of the Matrix and the Plan at 80x24
(pytest-textual-snapshot).

The scenarios are the ones ``docs/make_screenshots.py`` renders for the documentation
(:data:`quantmatch.tui.scenarios.SCENARIOS`). After an intended change of the look, review and
accept the new images with ``pytest tests/test_tui_snapshots.py --snapshot-update``; a failing run
writes a side-by-side report (``snapshot_report.html``).
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("pytest_textual_snapshot")

from test_tui import acme_plugin, broken_plugin, make_registry

from quantmatch.registry import Registry
from quantmatch.tui.scenarios import SCENARIOS, play

_REGISTRIES: dict[str, Registry] = {}


def registry_for(name: str) -> Registry:
    """Built-in plugins only (and a fixed "local" device); the Plugins screen also gets a third-party
    plugin and a broken one, so that the snapshot shows both."""
    key = "plugins" if name == "plugins" else "builtin"
    if key not in _REGISTRIES:
        extra = [("acme", acme_plugin()), ("acme-broken", broken_plugin())] if key == "plugins" else []
        _REGISTRIES[key] = make_registry(*extra)
    return _REGISTRIES[key]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_screen_snapshot(name: str, snap_compare: Any) -> None:
    scenario = SCENARIOS[name]

    async def run_before(pilot: Any) -> None:
        await play(pilot, scenario)

    assert snap_compare(scenario.app(registry_for(name)), terminal_size=scenario.size, run_before=run_before)
