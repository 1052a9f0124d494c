"""The ``hardware`` pseudo-backend: does the device's matrix/vector engine compute a type natively?

It answers from the device's features alone, with no runtime in between, so that the registry can
say for example that INT4 MMA exists on Turing and Ampere, was removed on Hopper, and that FP8 needs
Ada, Hopper or newer.
"""

from __future__ import annotations

from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import CATALOG_SOURCE, Capability, Requires, any_of
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.verdict import Level

ALL_LAYERS = ("linear", "moe", "kv-cache")
SRC = CATALOG_SOURCE  # each verdict cites the catalog's sources for the device's figures and features
# llama.cpp's block types take the runtime's activation handling, so a GGUF type is asked about by its element
# type: integer blocks meet activations quantized to 8-bit blocks in integer dot products (the CPU vec_dot_type
# Q8_0/Q8_K; MMQ on GPUs), FP4 blocks are NVFP4/MXFP4 elements.
GGML_CPU = "ggml-org/llama.cpp ggml/src/ggml-cpu/ggml-cpu.c type_traits_cpu @03161a4e"
GGUF_INT = ("gguf-q*", "gguf-iq*", "gguf-tq*")


class HardwareBackend(Backend):
    name = "hardware"
    description = "the device's matrix/vector engine itself (no runtime): which operand types are native"
    targets = ("cuda", "rocm", "metal", "xpu", "vulkan", "cpu")
    formats = ("*",)
    source = "quantmatch device catalog"
    capabilities = (
        Capability(Level.NATIVE, "{device} computes NVFP4 blocks natively (e2m1 elements, an e4m3 scale per 16)",
                   SRC, weights=("gguf-nvfp4",), layers=ALL_LAYERS, when=Requires(features_all=any_of("nvfp4"))),
        Capability(Level.NATIVE, "{device} computes MXFP4 blocks natively (e2m1 elements, an e8m0 scale per 32)",
                   SRC, weights=("gguf-mxfp4", "gguf-mxfp4_moe"), layers=ALL_LAYERS,
                   when=Requires(features_all=any_of("mxfp4"))),
        Capability(Level.WEIGHT_ONLY, "{device} has no FP4 unit: {weights} blocks are expanded to 16-bit for the "
                   "math", SRC, weights=("gguf-nvfp4", "gguf-mxfp4", "gguf-mxfp4_moe"), layers=ALL_LAYERS,
                   when=Requires(features_any=any_of("fp16", "bf16")), runs_as="16-bit math on dequantized weights"),
        Capability(Level.NATIVE, "{weights} integer blocks meet activations quantized to 8-bit blocks in integer "
                   "dot products, which {device} computes natively", f"{SRC} ; {GGML_CPU}", weights=GGUF_INT,
                   layers=ALL_LAYERS, when=Requires(features_any=any_of("int8", "dp4a", "dotprod"))),
        Capability(Level.WEIGHT_ONLY, "{device} has no integer dot-product unit: {weights} blocks are expanded to "
                   "floating point for the math", SRC, weights=GGUF_INT, layers=ALL_LAYERS,
                   runs_as="float math on dequantized weights"),
        Capability(Level.NATIVE, "{device} computes 16-bit floats natively", SRC, weights=("gguf-f16",),
                   layers=ALL_LAYERS, when=Requires(features_all=any_of("fp16"))),
        Capability(Level.NATIVE, "{device} computes bfloat16 natively", SRC, weights=("gguf-bf16",),
                   layers=ALL_LAYERS, when=Requires(features_all=any_of("bf16"))),
        Capability(Level.NATIVE, "{device} computes fp32", SRC, weights=("gguf-f32",), layers=ALL_LAYERS),
        Capability(Level.EMULATED, "{device} has no native {weights} unit: converted to fp32 for the math", SRC,
                   weights=("gguf-f16", "gguf-bf16"), layers=ALL_LAYERS),
        # Low-bit weights with float activations are weight-only, whether or not the engine also computes the
        # weight type: the weights are expanded and the math runs in the activation type.
        Capability(Level.WEIGHT_ONLY, "{weights} weights are expanded to {activations} for the math, which {device} "
                   "computes natively", SRC,
                   weights=("int*", "fp8-*", "nvfp4", "mxfp*", "mxint8", "nf4", "fp4"),
                   activations=("fp32", "tf32", "fp16", "bf16"), layers=ALL_LAYERS,
                   when=Requires(compute_native=True), runs_as="{activations} math on dequantized weights"),
        Capability(Level.NATIVE, "{device} computes {activations} natively in its matrix/vector engine",
                   SRC, layers=ALL_LAYERS, when=Requires(compute_native=True, weights_native=True)),
        Capability(Level.NATIVE, "{weights} weights are unpacked to {activations}, which {device} "
                   "computes natively", SRC, weights=("int1", "int2", "int3", "int4", "int5", "int6"),
                   activations=("int8", "fp8-e4m3"), layers=ALL_LAYERS,
                   when=Requires(compute_native=True)),
        Capability(Level.EMULATED, "{device} has no native {activations} unit: {lowering}", SRC,
                   layers=ALL_LAYERS, when=Requires(compute_emulated=True)),
        Capability(Level.UNSUPPORTED, "{device} has no {activations} unit and no known lowering of it", SRC,
                   layers=ALL_LAYERS),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(HardwareBackend)
