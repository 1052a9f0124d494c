"""The priors the planner reads: what each backend and method declares, or a generic default.

A roofline gives the time a phase needs at the device's peak compute and bandwidth. Real runtimes
reach a fraction of both, spend time dispatching kernels, hold memory of their own, and expand
low-bit weights either inside the matmul kernel or into a full copy first; a method's job has a cost
and keeps a share of the quality. None of this is known here: each backend states it in
``Backend.priors`` and each method in ``Quantizer.priors`` (:mod:`quantmatch.sdk.priors`), in the
plugin module that owns it, with its source. This module looks the declarations up through the
registry and supplies the generic priors for a runtime or method that declares none. Measured
figures replace the predictions where the planner benchmark or ``quantmatch bench`` has measured.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from quantmatch.sdk.priors import MethodPriors, RuntimePriors, priors_for_target

__all__ = ["DEFAULT_ACCELERATOR", "DEFAULT_CPU", "DEFAULT_METHOD", "method_priors", "runtime_priors"]

_GENERIC = "generic prior for a runtime quantmatch has no profile for"

DEFAULT_ACCELERATOR = RuntimePriors(0.6, 0.5, 1e-4, 2e-3, 0.8, "fused", None, _GENERIC,
                                    dequant_follows_verdict=True, name="default")
"""A runtime without priors for an accelerator target."""

DEFAULT_CPU = RuntimePriors(0.55, 0.5, 1e-4, 2e-3, 0.3, "materialize", None, _GENERIC,
                            gemv_eff=MappingProxyType({"quant": 0.16}), dequant_follows_verdict=True,
                            name="default")
"""A runtime without priors for the ``cpu`` target. Its decode GEMV rate is llama.cpp's quantized
vec_dot rate, the best-measured CPU kernel."""

DEFAULT_METHOD = MethodPriors()
"""A method without priors: plain RTN quality, a data-free rounding pass, 16-bit head and embeddings."""


def _registry(registry: Any) -> Any:
    if registry is not None:
        return registry
    from quantmatch.registry import Registry

    return Registry()


def runtime_priors(backend: str, target: str, registry: Any = None) -> RuntimePriors:
    """What ``backend`` declares for ``target`` (see :func:`~quantmatch.sdk.priors.priors_for_target`),
    named after the backend; the generic default when it declares nothing for it or is unknown."""
    try:
        declared = _registry(registry).backend(backend).priors
    except Exception:  # an unknown backend declares nothing
        declared = {}
    found = priors_for_target(declared, target)
    if found is None:
        return DEFAULT_CPU if target == "cpu" else DEFAULT_ACCELERATOR
    return found if found.name else replace(found, name=backend)


def method_priors(method: str | None, registry: Any = None) -> MethodPriors:
    """What ``method`` declares; the generic default for ``None`` (no quantization) or an unknown name."""
    if not method:
        return DEFAULT_METHOD
    try:
        priors = _registry(registry).method(method).priors
    except Exception:  # an unknown method declares nothing
        return DEFAULT_METHOD
    return priors if isinstance(priors, MethodPriors) else DEFAULT_METHOD
