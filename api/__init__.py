"""quantmatch: which LLM quantization precision and method fit your model, hardware and workload.

The top-level API is small and cheap to import (no torch, transformers or textual)::

    import quantmatch
    reg = quantmatch.get_registry()
    reg.verdict("fp8", "w8a8-fp8", "vllm", "a100").level    # Level.WEIGHT_ONLY
    quantmatch.explain("gptq", "w4a16-g128", "vllm", "h100")
    quantmatch.detect()
    quantmatch.plan("llama-3.1-8b", "h100", batch=16)
    quantmatch.quantize("smollm2-135m", "hqq", "w4a16-g64-asym", "out/hqq")

The package is layered, one sub-package per layer (README, "Layout"): :mod:`quantmatch.sdk` (the
contracts plugins implement and the services around them), :mod:`quantmatch.plugins` (the built-in
devices, backends with their runners, and methods), :mod:`quantmatch.registry`,
:mod:`quantmatch.planner`, :mod:`quantmatch.measure` (bench, verify), :mod:`quantmatch.cli`,
:mod:`quantmatch.tui` and :mod:`quantmatch.testing` (the plugin test kit). Modules that moved there
from the old flat layout (``quantmatch.backend``, ``quantmatch.runners`` ...) still import, with a
``DeprecationWarning`` naming the new place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _moved

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Capability",
    "DeviceFamily",
    "Figure",
    "HardwareProfile",
    "Level",
    "Quantizer",
    "Requires",
    "Runner",
    "Scheme",
    "Verdict",
    "__version__",
    "detect",
    "explain",
    "export_artifact",
    "get_registry",
    "hookimpl",
    "list_plugins",
    "load_artifact",
    "parse_scheme",
    "plan",
    "quantize",
    "registry",
]

if TYPE_CHECKING:
    from quantmatch.planner import Plan
    from quantmatch.registry import Registry
    from quantmatch.sdk.backend import Backend
    from quantmatch.sdk.capability import Capability, Requires
    from quantmatch.sdk.device import Detection, DeviceFamily
    from quantmatch.sdk.export import export_artifact
    from quantmatch.sdk.pipeline import load_artifact, quantize
    from quantmatch.sdk.pluginhost import PluginInfo, hookimpl
    from quantmatch.sdk.profile import Figure, HardwareProfile
    from quantmatch.sdk.quantizer import Quantizer
    from quantmatch.sdk.runner import Runner
    from quantmatch.sdk.scheme import Scheme, parse_scheme
    from quantmatch.sdk.verdict import Level, Verdict

_LAZY = {
    "Backend": "quantmatch.sdk.backend", "Capability": "quantmatch.sdk.capability",
    "Requires": "quantmatch.sdk.capability", "DeviceFamily": "quantmatch.sdk.device",
    "Figure": "quantmatch.sdk.profile", "HardwareProfile": "quantmatch.sdk.profile",
    "Quantizer": "quantmatch.sdk.quantizer", "Runner": "quantmatch.sdk.runner", "Scheme": "quantmatch.sdk.scheme",
    "parse_scheme": "quantmatch.sdk.scheme", "Level": "quantmatch.sdk.verdict", "Verdict": "quantmatch.sdk.verdict",
    "hookimpl": "quantmatch.sdk.pluginhost", "quantize": "quantmatch.sdk.pipeline",
    "load_artifact": "quantmatch.sdk.pipeline", "export_artifact": "quantmatch.sdk.export",
}

_moved.install()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'quantmatch' has no attribute {name!r}")


def get_registry() -> Registry:
    """The capability registry built from every loaded plugin."""
    from quantmatch.registry import Registry

    return Registry()


def registry() -> Registry:
    """Deprecated: use :func:`get_registry` (``quantmatch.registry`` is also the registry's package)."""
    _moved.deprecated("quantmatch.registry()", "quantmatch.get_registry()")
    return get_registry()


def detect(measure_bandwidth: bool = False) -> list[Detection]:
    """Detect this machine's devices, one :class:`~quantmatch.sdk.device.Detection` per family."""
    from quantmatch.registry import detect_all

    return detect_all(measure_bandwidth=measure_bandwidth)


def explain(method: str | None, scheme: str, backend: str, device: str, target: str | None = None,
            model: str | None = None) -> list[Verdict]:
    """Verdicts (one per relevant layer type) for one combination, with reasons and sources."""
    from quantmatch.sdk.models import resolve_model

    info = resolve_model(model, shapes_only=True).info if model else None
    return get_registry().explain(method, scheme, backend, device, target, info)


def plan(model: Any, device: Any = "local", **kwargs: Any) -> Plan:
    """Recommend precision, method and runtime for ``model`` on ``device`` (see
    :func:`quantmatch.planner.plan`: ``batch``, ``prompt``, ``gen``, ``context``, ``tolerance``,
    ``max_kld``, ``min_top1``, ``memory_budget``, ``prefer``)."""
    from quantmatch.planner import plan as _plan

    return _plan(model, device, **kwargs)


def list_plugins() -> list[PluginInfo]:
    """Every plugin found, with status (ok, broken, blocked), errors and contributions."""
    from quantmatch.sdk.pluginhost import get_host

    return list(get_host().plugins.values())
