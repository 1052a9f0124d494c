"""The entry point (``[project.entry-points.quantmatch] example-gaudi``): quantmatch's hooks.

Hooks only hand over declarations: nothing here imports torch or probes hardware.
"""

from __future__ import annotations

from collections.abc import Callable

from quantmatch.sdk import Backend, Capability, DeviceFamily, Quantizer, Register, hookimpl

from .backend import OptimumHabanaBackend
from .gaudi import IntelGaudiFamily
from .int8 import ExampleInt8Quantizer, ExampleTorchBackend
from .method import IncFp8Quantizer
from .refinements import HARDWARE, VLLM

__distribution__ = "quantmatch-example-plugin"
__version__ = "0.1.0"


@hookimpl
def register_device_families(register: Register[type[DeviceFamily]]) -> None:
    register(IntelGaudiFamily)


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(IncFp8Quantizer)
    register(ExampleInt8Quantizer)


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(OptimumHabanaBackend)
    register(ExampleTorchBackend)


@hookimpl
def register_capabilities(register: Callable[[str, Capability], None]) -> None:
    for row in VLLM:
        register("vllm", row)
    for row in HARDWARE:
        register("hardware", row)
