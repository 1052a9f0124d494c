"""quantmatch: which LLM quantization precision and method fit your model, hardware and workload.

The top-level API is small and cheap to import (no torch, transformers or textual)::

    import quantmatch
    reg = quantmatch.registry()
    reg.verdict("fp8", "w8a8-fp8", "vllm", "a100").level    # Level.WEIGHT_ONLY
    quantmatch.explain("gptq", "w4a16-g128", "vllm", "h100")
    quantmatch.detect()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    "Scheme",
    "Verdict",
    "__version__",
    "detect",
    "explain",
    "hookimpl",
    "list_plugins",
    "load_artifact",
    "parse_scheme",
    "plan",
    "quantize",
    "registry",
]

if TYPE_CHECKING:
    from .backend import Backend
    from .capability import Capability, Requires
    from .device import Detection, DeviceFamily
    from .pipeline import load_artifact, quantize
    from .planner import Plan
    from .pluginhost import PluginInfo, hookimpl
    from .profile import Figure, HardwareProfile
    from .quantizer import Quantizer
    from .registry import Registry
    from .scheme import Scheme, parse_scheme
    from .verdict import Level, Verdict

_LAZY = {
    "Backend": ".backend", "Capability": ".capability", "Requires": ".capability",
    "DeviceFamily": ".device", "Figure": ".profile", "HardwareProfile": ".profile",
    "Quantizer": ".quantizer", "Scheme": ".scheme", "parse_scheme": ".scheme",
    "Level": ".verdict", "Verdict": ".verdict", "hookimpl": ".pluginhost",
    "quantize": ".pipeline", "load_artifact": ".pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'quantmatch' has no attribute {name!r}")


def registry() -> Registry:
    """The capability registry built from every loaded plugin."""
    from .registry import Registry

    return Registry()


def detect(measure_bandwidth: bool = False) -> list[Detection]:
    """Detect this machine's devices, one :class:`~quantmatch.device.Detection` per family."""
    from .registry import detect_all

    return detect_all(measure_bandwidth=measure_bandwidth)


def explain(method: str | None, scheme: str, backend: str, device: str, target: str | None = None,
            model: str | None = None) -> list[Verdict]:
    """Verdicts (one per relevant layer type) for one combination, with reasons and sources."""
    from .model_info import ModelInfo

    info = ModelInfo.from_path(model) if model else None
    return registry().explain(method, scheme, backend, device, target, info)


def plan(model: Any, device: Any = "local", **kwargs: Any) -> Plan:
    """Recommend precision, method and runtime for ``model`` on ``device`` (see
    :func:`quantmatch.planner.plan`: ``batch``, ``prompt``, ``gen``, ``context``, ``tolerance``,
    ``memory_budget``, ``prefer``)."""
    from .planner import plan as _plan

    return _plan(model, device, **kwargs)


def list_plugins() -> list[PluginInfo]:
    """Every plugin found, with status (ok, broken, blocked), errors and contributions."""
    from .pluginhost import get_host

    return list(get_host().plugins.values())
