"""The capability registry: matches methods, schemes, backends and devices and judges each
combination before anything runs."""

from __future__ import annotations

import sys
import types

from .conformance import ConformanceReport, run_conformance, scheme_from_types
from .detection import detect_all
from .registry import Registry, UnknownChoiceError

__all__ = [
    "ConformanceReport",
    "Registry",
    "UnknownChoiceError",
    "detect_all",
    "run_conformance",
    "scheme_from_types",
]


class _CallableModule(types.ModuleType):
    """``quantmatch.registry`` is both this package and the documented ``quantmatch.registry()``
    call: importing the package rebinds the parent's attribute to the module, so the module itself
    answers the call."""

    def __call__(self) -> Registry:
        return Registry()


sys.modules[__name__].__class__ = _CallableModule
