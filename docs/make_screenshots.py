"""Render the TUI's main screens to ``docs/screenshots/*.svg``, from the app itself.

Run: ``.venv/bin/python docs/make_screenshots.py`` (needs the ``tui`` extra). Each screenshot replays
a scenario of :data:`quantmatch.tui.scenarios.SCENARIOS` (the same ones the snapshot tests check)
headless at its size (100x30; two at 80x24) and saves what the terminal would show with
``App.save_screenshot``. The built-in plugins are loaded without entry points, so installed
third-party plugins do not leak into the pictures; the Plugins screenshot adds two example
third-party plugins (one deliberately broken) to show how they are listed. The "local" row is the
machine that rendered the screenshots.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable
from pathlib import Path

from quantmatch.registry import Registry
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability
from quantmatch.sdk.pluginhost import PluginHost, module_plugin
from quantmatch.sdk.verdict import Level
from quantmatch.tui.scenarios import SCENARIOS, Scenario, play

OUT = Path(__file__).with_name("screenshots")


class TurboRuntime(Backend):
    """An example third-party runtime (for the Plugins screenshot only)."""

    name = "turbo-rt"
    description = "example runtime"
    targets = ("cuda", "cpu")
    formats = ("compressed-tensors",)
    source = "https://example.org/turbo"
    capabilities = (Capability(Level.NATIVE, "turbo-rt runs INT8 x INT8 everywhere (example)",
                               "https://example.org/turbo", weights=("int8",), activations=("int8",)),)


def example_plugins() -> list[tuple[str, object]]:
    def broken(register: Callable[..., None]) -> None:
        raise ImportError("No module named 'turbo_kernels'")

    turbo = module_plugin("example-turbo", register_backends=lambda register: register(TurboRuntime))
    turbo.__version__ = "1.2.0"  # type: ignore[attr-defined]
    turbo.__distribution__ = "example-turbo"  # type: ignore[attr-defined]
    return [("example-turbo", turbo), ("example-broken", module_plugin("example-broken", register_backends=broken))]


async def render(scenario: Scenario, registry: Registry, out: Path) -> Path:
    app = scenario.app(registry)
    async with app.run_test(size=scenario.size) as pilot:
        await play(pilot, scenario)
        return Path(app.save_screenshot(f"{scenario.name}.svg", str(out)))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    builtin = Registry(PluginHost(autoload=False))
    with_examples = Registry(PluginHost(example_plugins(), autoload=False, stderr=io.StringIO()))
    for name, scenario in SCENARIOS.items():
        reg = with_examples if name == "plugins" else builtin
        path = asyncio.run(render(scenario, reg, OUT))
        print(f"{path.relative_to(OUT.parent.parent) if path.is_absolute() else path}: {scenario.caption}")


if __name__ == "__main__":
    sys.exit(main())
