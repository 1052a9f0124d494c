"""The ``hardware`` pseudo-backend: does the device's matrix/vector engine compute a type natively?

It answers from the device's features alone, with no runtime in between, so that the registry can
say for example that INT4 MMA exists on Turing and Ampere, was removed on Hopper, and that FP8 needs
Ada, Hopper or newer.
"""

from __future__ import annotations

from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import CATALOG_SOURCE, Capability, Requires
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.verdict import Level

ALL_LAYERS = ("linear", "moe", "kv-cache")
SRC = CATALOG_SOURCE  # each verdict cites the catalog's sources for the device's figures and features


class HardwareBackend(Backend):
    name = "hardware"
    description = "the device's matrix/vector engine itself (no runtime): which operand types are native"
    targets = ("cuda", "rocm", "metal", "vulkan", "cpu")
    formats = ("*",)
    source = "quantmatch device catalog"
    capabilities = (
        Capability(Level.NATIVE, "{device} computes {activations} natively in its matrix/vector engine",
                   SRC, layers=ALL_LAYERS, when=Requires(compute_native=True, weights_native=True)),
        Capability(Level.NATIVE, "{weights} weights are unpacked to {activations}, which {device} "
                   "computes natively", SRC, weights=("int1", "int2", "int3", "int4", "int5", "int6"),
                   activations=("int8", "fp8-e4m3"), layers=ALL_LAYERS,
                   when=Requires(compute_native=True)),
        Capability(Level.WEIGHT_ONLY, "{weights} weights are expanded to {activations} for the math; "
                   "{device} has no {weights} unit", SRC, activations=("fp32", "tf32", "fp16", "bf16"),
                   layers=ALL_LAYERS, when=Requires(compute_native=True),
                   runs_as="{activations} math on dequantized weights"),
        Capability(Level.EMULATED, "{device} has no native {activations} unit: {lowering}", SRC,
                   layers=ALL_LAYERS, when=Requires(compute_emulated=True)),
        Capability(Level.UNSUPPORTED, "{device} has no {activations} unit and no known lowering of it", SRC,
                   layers=ALL_LAYERS),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(HardwareBackend)
