"""``quantmatch.sdk``: the contracts plugins implement and the services around them.

Everything a plugin author needs is importable from here (lazily: importing the package is cheap)::

    from quantmatch.sdk import Backend, Capability, Level, Quantizer, Runner, SchemeSupport, hookimpl

- contracts: :class:`Backend` (a runtime, with its :class:`Runner` and planning priors),
  :class:`Quantizer` (a method, with its options and priors), :class:`DeviceFamily` and
  :class:`HardwareProfile`, :class:`Capability`/:class:`Requires`, :class:`Scheme`, :class:`Verdict`;
  the hooks (:mod:`.hookspecs`) and the plugin host (:mod:`.pluginhost`);
- services: model resolution (:mod:`.models`), artifacts (:mod:`.artifact`), quantization and loading
  (:mod:`.pipeline`), calibration text (:mod:`.calibration`), evaluation over the runner contract
  (:mod:`.evaluate`), the results store (:mod:`.store`), and the one error hierarchy (:mod:`.errors`).

The SDK imports no other part of quantmatch (``tests/test_layers.py`` checks it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, as the lazy loader gives them, for type checkers
    from quantmatch.sdk.backend import Backend
    from quantmatch.sdk.capability import CATALOG_SOURCE, Capability, Requires, any_of
    from quantmatch.sdk.device import Detection, DeviceFamily
    from quantmatch.sdk.errors import InputError, PluginError, QuantmatchError, RunError, UnknownChoiceError
    from quantmatch.sdk.hookspecs import Register
    from quantmatch.sdk.model_info import ModelInfo
    from quantmatch.sdk.models import ModelSource, resolve_model
    from quantmatch.sdk.options import MethodOptions, OptionsError, option
    from quantmatch.sdk.pluginhost import hookimpl
    from quantmatch.sdk.priors import JobPriors, MethodPriors, QualityPriors, RuntimePriors
    from quantmatch.sdk.profile import Figure, HardwareProfile
    from quantmatch.sdk.quantizer import Problem, Quantizer, SchemeSupport
    from quantmatch.sdk.runner import MeasureConfig, Probe, Runner
    from quantmatch.sdk.scheme import Scheme, parse_scheme
    from quantmatch.sdk.verdict import Level, Verdict

_LAZY = {
    "Backend": "backend", "Capability": "capability", "Requires": "capability", "any_of": "capability",
    "CATALOG_SOURCE": "capability", "DeviceFamily": "device", "Detection": "device", "Figure": "profile",
    "HardwareProfile": "profile", "Problem": "quantizer", "Quantizer": "quantizer", "SchemeSupport": "quantizer",
    "Scheme": "scheme", "parse_scheme": "scheme", "Level": "verdict", "Verdict": "verdict", "hookimpl": "pluginhost",
    "Register": "hookspecs", "ModelInfo": "model_info", "ModelSource": "models", "resolve_model": "models",
    "Runner": "runner", "MeasureConfig": "runner", "Probe": "runner", "QuantmatchError": "errors",
    "InputError": "errors", "PluginError": "errors", "RunError": "errors", "UnknownChoiceError": "errors",
    "MethodOptions": "options", "OptionsError": "options", "option": "options",
    "RuntimePriors": "priors", "MethodPriors": "priors", "JobPriors": "priors",
    "QualityPriors": "priors",
}

__all__ = [
    "CATALOG_SOURCE",
    "Backend",
    "Capability",
    "Detection",
    "DeviceFamily",
    "Figure",
    "HardwareProfile",
    "InputError",
    "JobPriors",
    "Level",
    "MeasureConfig",
    "MethodOptions",
    "MethodPriors",
    "ModelInfo",
    "ModelSource",
    "OptionsError",
    "PluginError",
    "Probe",
    "Problem",
    "QualityPriors",
    "Quantizer",
    "QuantmatchError",
    "Register",
    "Requires",
    "RunError",
    "Runner",
    "RuntimePriors",
    "Scheme",
    "SchemeSupport",
    "UnknownChoiceError",
    "Verdict",
    "any_of",
    "hookimpl",
    "option",
    "parse_scheme",
    "resolve_model",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'quantmatch.sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(f"quantmatch.sdk.{module}"), name)
