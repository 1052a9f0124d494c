"""Old module paths still import: each is an alias of the module that now holds its code.

``import quantmatch.backend`` (the flat layout before the layered one) gives the module object of
``quantmatch.sdk.backend`` itself, so classes stay identical, and warns once with a
``DeprecationWarning`` that names the new path. Nothing is imported until an old path is used.
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

__all__ = ["MOVED", "deprecated", "install"]

_SDK = ("artifact", "backend", "calibration", "capability", "device", "evaluate", "features", "hookspecs",
        "hostcpu", "layerwise", "model_info", "models", "pipeline", "pluginhost", "profile", "quantizer", "scheme",
        "text", "verdict")

MOVED: dict[str, str] = {
    **{f"quantmatch.{m}": f"quantmatch.sdk.{m}" for m in _SDK},
    "quantmatch.llamacpp_compat": "quantmatch.plugins.backends.llama_cpp_compat",
    "quantmatch.render": "quantmatch.cli.tables",
    "quantmatch.quantize_render": "quantmatch.cli.quantize_view",
    "quantmatch.runners": "quantmatch.measure",
    "quantmatch.runners.base": "quantmatch.sdk.runner",
    "quantmatch.runners.store": "quantmatch.sdk.store",
    "quantmatch.runners.bench": "quantmatch.measure.bench",
    "quantmatch.runners.verify": "quantmatch.measure.verify",
    "quantmatch.runners.machine": "quantmatch.measure.machine",
    "quantmatch.runners.roofline": "quantmatch.measure.roofline",
    "quantmatch.runners.tables": "quantmatch.cli.measure_view",
    "quantmatch.runners.torch_runner": "quantmatch.plugins.backends.torch_runner",
    "quantmatch.runners.onnx_runner": "quantmatch.plugins.backends.onnxruntime_runner",
    "quantmatch.runners.onnx_export": "quantmatch.plugins.methods.onnx_export",
    "quantmatch.runners.llamacpp_runner": "quantmatch.plugins.backends.llama_cpp_runner",
    "quantmatch.algorithms": "quantmatch.plugins.methods.algorithms",
    **{f"quantmatch.algorithms.{m}": f"quantmatch.plugins.methods.algorithms.{m}"
       for m in ("awq", "blockwise", "export", "gptq", "rtn", "scaling", "smoothquant")},
    "quantmatch.algorithms.int8_runtime": "quantmatch.plugins.backends.int8_runtime",
    "quantmatch.planner.render": "quantmatch.cli.plan_view",
    "quantmatch.planner.results": "quantmatch.sdk.store",
}
"""Old module path -> the module that holds its code now."""


def deprecated(old: str, new: str) -> None:
    import warnings

    warnings.warn(f"{old} is deprecated and will be removed in quantmatch 0.3; use {new}", DeprecationWarning,
                  stacklevel=3)


class _AliasFinder:
    """Answers only for the paths in :data:`MOVED`. It goes first: an alias package's submodule
    (``quantmatch.runners.bench``) would otherwise be found again on the new package's path and loaded as a
    second copy."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        """A meta path finder (and its own loader), without ``importlib.abc``: start-up stays cheap."""
        return ModuleSpec(fullname, cast("Loader", self)) if fullname in MOVED else None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        import warnings

        new = MOVED[spec.name]
        warnings.warn(f"module {spec.name} moved to {new}; import it from there (the old path will be removed "
                      "in quantmatch 0.3)", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module is the new one, already executed."""


_FINDER = _AliasFinder()


def install() -> None:
    """Put the alias finder first on ``sys.meta_path`` (once)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
