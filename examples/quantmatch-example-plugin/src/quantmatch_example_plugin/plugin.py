"""The entry point (``[project.entry-points.quantmatch] example-gaudi``): quantmatch's hooks.

Hooks only hand over declarations: nothing here imports torch or probes hardware.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quantmatch.pluginhost import hookimpl

from .backend import OptimumHabanaBackend
from .gaudi import IntelGaudiFamily
from .int8 import ExampleInt8Quantizer, ExampleTorchBackend
from .method import IncFp8Quantizer
from .refinements import HARDWARE, VLLM

__distribution__ = "quantmatch-example-plugin"
__version__ = "0.1.0"


@hookimpl
def register_device_families(register: Callable[[type[Any]], None]) -> None:
    register(IntelGaudiFamily)


@hookimpl
def register_quantizers(register: Callable[[type[Any]], None]) -> None:
    register(IncFp8Quantizer)
    register(ExampleInt8Quantizer)


@hookimpl
def register_backends(register: Callable[[type[Any]], None]) -> None:
    register(OptimumHabanaBackend)
    register(ExampleTorchBackend)


@hookimpl
def register_capabilities(register: Callable[..., None]) -> None:
    for row in VLLM:
        register("vllm", row)
    for row in HARDWARE:
        register("hardware", row)
