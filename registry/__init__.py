"""The capability registry: matches methods, schemes, backends and devices and judges each
combination before anything runs."""

from __future__ import annotations

import sys
import types

from quantmatch.registry.conformance import ConformanceReport, run_conformance, scheme_from_types
from quantmatch.registry.detection import detect_all
from quantmatch.registry.registry import Registry, UnknownChoiceError

__all__ = [
    "ConformanceReport",
    "Registry",
    "UnknownChoiceError",
    "detect_all",
    "run_conformance",
    "scheme_from_types",
]


class _CallableModule(types.ModuleType):
    """``quantmatch.registry()`` (deprecated: use ``quantmatch.get_registry()``) keeps working although
    importing this package rebinds the parent's attribute to the package: the package answers the call."""

    def __call__(self) -> Registry:
        import warnings

        warnings.warn("quantmatch.registry() is deprecated and will be removed in quantmatch 0.3; use "
                      "quantmatch.get_registry()", DeprecationWarning, stacklevel=2)
        return Registry()


sys.modules[__name__].__class__ = _CallableModule
