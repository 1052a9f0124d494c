"""Whether quantmatch can produce a plan's artifact on this machine, and how to get it otherwise.

The planner ranks every method the registry knows, but only some have a quantization
implementation in this version, and those need their requirements installed. Both are read from
what each method declares, never by calling it: a :class:`~quantmatch.sdk.quantizer.Quantizer` whose
``quantize`` is the base class's has no implementation (the base raises "quantize() is not
implemented", the same signal the plugin contract tests skip on), and ``requires`` lists the
distributions it needs (checked with ``importlib.metadata``, nothing imported). For a method
quantmatch cannot run, the plan says how its own tool produces the artifact, as the method declares
it (``MethodPriors.produce_with``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Production", "external_route", "production"]


@dataclass(frozen=True)
class Production:
    """``producible``: ``quantmatch quantize`` can make the artifact here now. ``implemented``: the
    method has a quantization implementation in quantmatch (then only requirements may be missing).
    ``reason`` says why not; ``how`` is the way to get the artifact (the method's own tool, or the
    install line to run before ``quantmatch quantize``)."""

    producible: bool
    implemented: bool
    reason: str
    how: str = ""


def external_route(method: str, model: str, source: str = "", produce_with: str = "") -> str:
    """How to make ``method``'s artifact for ``model`` without quantmatch: its declared
    ``produce_with`` template, else a pointer to its own tooling and ``source``."""
    if produce_with:
        return produce_with.format(model=model)
    return f"use {method}'s own tooling" + (f" ({source})" if source else "")


def _route(cls: Any, method: str, model: str) -> str:
    priors = getattr(cls, "priors", None)
    return external_route(method, model, getattr(cls, "source", ""), getattr(priors, "produce_with", ""))


def production(method: str | None, registry: Any, model: str = "MODEL", scheme: str | None = None) -> Production:
    """Whether ``quantmatch quantize`` can produce ``method``'s artifact (in ``scheme``, when given) here
    (``None``: nothing to do)."""
    if method is None:
        return Production(True, True, "no quantization: the 16-bit checkpoint is served as is")
    from quantmatch.sdk.quantizer import Quantizer, missing_requirements

    try:
        cls = registry.method(method)
    except Exception:  # an unknown name: nothing declares how to make it
        return Production(False, False, f"quantmatch has no method {method!r}")
    if cls.quantize is Quantizer.quantize:
        return Production(False, False,
                          f"quantmatch has no {method} quantization implementation in this version",
                          _route(cls, method, model))
    unmade = cls.not_produced(scheme) if scheme is not None else []
    if unmade:
        return Production(False, False, unmade[0], _route(cls, method, model))
    missing = missing_requirements(getattr(cls, "requires", ()))
    if missing:
        hint = getattr(cls, "install_hint", "") or "pip install " + " ".join(repr(m) for m in missing)
        return Production(False, True, f"{method} needs {', '.join(missing)}, not installed here", hint)
    return Production(True, True, f"quantmatch quantize implements {method}")
