"""The capability registry: matches methods, schemes, backends and devices and judges each
combination before anything runs."""

from __future__ import annotations

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
