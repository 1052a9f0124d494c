"""MLX (mlx-lm): Apple's array framework on the Apple-silicon GPU (Metal).

mlx-lm stores affine 2-8 bit weights with group-wise scales and biases, or mxfp4/nvfp4/mxfp8 blocks;
``quantized_matmul`` dequantizes inside the Metal kernel and multiplies in the float dtype, so every
quantized MLX scheme is weight-only. MLX does not quantize activations.
"""

from __future__ import annotations

from quantmatch.backend import Backend
from quantmatch.capability import Capability, Requires, any_of
from quantmatch.pluginhost import hookimpl
from quantmatch.verdict import Level

from . import _common as c

N, W, E, U = Level.NATIVE, Level.WEIGHT_ONLY, Level.EMULATED, Level.UNSUPPORTED
SRC = c.join(c.MLX_CONVERT, c.MLX_LEARNED)
MLX_WEIGHTS = ("int2", "int3", "int4", "int5", "int6", "int8", "mxfp4", "nvfp4", "mxfp8")
APPLE_GPU = Requires(families=any_of("apple-metal"), compute_native=True)

ROWS = (
    Capability(N, "MLX runs {weights} natively on the Apple GPU (Metal)", c.join(SRC, c.LLAMA_METAL_DEVICE),
               weights=c.FLOAT_ACTS, layers=c.ALL_LAYERS, when=APPLE_GPU),
    Capability(W, "mlx quantized_matmul: {weights} weights (group-wise scales/biases or MX/NV blocks) "
               "dequantized inside the Metal kernel, {activations} math", SRC, weights=MLX_WEIGHTS,
               activations=c.FLOAT_ACTS, when=APPLE_GPU,
               runs_as="{weights} weights dequantized in the Metal kernel, {activations} simdgroup math"),
    c.lowered_compute(SRC, weights=MLX_WEIGHTS),
    Capability(U, "MLX quantizes weights only (affine 2-8 bit, mxfp4/nvfp4/mxfp8): {activations} "
               "activations are not an MLX mode", SRC,
               activations=("int4", "int8", "fp8-e4m3", "nvfp4", "mxfp4", "mxfp8")),
)


class MLXBackend(Backend):
    name = "mlx"
    description = "MLX / mlx-lm on the Apple-silicon GPU (weight-only quantized_matmul)"
    targets = ("metal",)
    formats = ("mlx",)
    requires = ("mlx-lm>=0.20",)
    install_hint = "pip install mlx-lm  (macOS on Apple silicon)"
    executable = False
    source = c.MLX_CONVERT
    capabilities = (
        *ROWS,
        c.no_kernel("MLX", "float16/bfloat16/float32 and weight-only affine/MX quantization", SRC),
    )


@hookimpl
def register_backends(register):  # type: ignore[no-untyped-def]
    register(MLXBackend)
