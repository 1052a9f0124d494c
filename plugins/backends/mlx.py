"""MLX (mlx-lm): Apple's array framework on the Apple-silicon GPU (Metal).

mlx-lm stores affine 2-8 bit weights with group-wise scales and biases, or mxfp4/nvfp4/mxfp8 blocks;
``quantized_matmul`` dequantizes inside the Metal kernel and multiplies in the float dtype, so every
quantized MLX scheme is weight-only. MLX does not quantize activations.
"""

from __future__ import annotations

from quantmatch.plugins.backends import _common as c
from quantmatch.plugins.backends import _priors as p
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability, Requires, any_of
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import ACCELERATOR, RuntimePriors
from quantmatch.sdk.verdict import Level

N, W, E, U = Level.NATIVE, Level.WEIGHT_ONLY, Level.EMULATED, Level.UNSUPPORTED
SRC = c.join(c.MLX_CONVERT, c.MLX_LEARNED)
MLX_WEIGHTS = ("int2", "int3", "int4", "int5", "int6", "int8", "mxfp4", "nvfp4", "mxfp8")
APPLE_GPU = Requires(families=any_of("apple-metal"), compute_native=True)
MLX = "ml-explore/mlx"
MLX_HEAD = "846d1762"
"""The mlx commit read (v0.32.1)."""
MLX_NAX = (f"{MLX} mlx/backend/metal/device.cpp @{MLX_HEAD} (is_nax_available: macOS/iOS 26.2+ and GPU architecture "
           "generation >= 17, >= 18 for 'p' parts) ; "
           f"{MLX} mlx/backend/metal/quantized.cpp @{MLX_HEAD} (qmm: NAX kernels when is_nax_available() and "
           "transposed weights or affine mode)")
MLX_MODES = (f"{MLX} mlx/ops.cpp @{MLX_HEAD} (quantize modes affine / mxfp4 / nvfp4 / mxfp8; affine bits 2-8 but "
             "not 7); mode 'mxfp4' first in v0.29.0 (70560b6b), 'nvfp4' and 'mxfp8' in v0.29.4 (ec72b444)")
NAX = Requires(families=any_of("apple-metal"), features_all=any_of("metal-tensor-api"), compute_native=True)
"""An Apple GPU with the Metal tensor API / GPU Neural Accelerators (M5 and later); MLX also needs macOS 26.2."""

ROWS = (
    Capability(N, "MLX runs {weights} natively on the Apple GPU (Metal)", c.join(SRC, c.LLAMA_METAL_DEVICE),
               weights=c.FLOAT_ACTS, layers=c.ALL_LAYERS, when=APPLE_GPU),
    Capability(U, "{weights} is not an MLX quantization mode before v0.29.0 (mode 'mxfp4' arrives in v0.29.0, "
               "'nvfp4' and 'mxfp8' in v0.29.4)", MLX_MODES, weights=("mxfp4", "nvfp4", "mxfp8"),
               layers=c.ALL_LAYERS, until="0.29.0"),
    Capability(U, "{weights} is not an MLX quantization mode before v0.29.4 (only affine and mxfp4 before)",
               MLX_MODES, weights=("nvfp4", "mxfp8"), layers=c.ALL_LAYERS, until="0.29.4"),
    Capability(W, "mlx quantized_matmul on {device}: MLX's NAX kernels run the {weights} x {activations} "
               "product on the GPU Neural Accelerators (macOS 26.2+; weights still dequantized to "
               "{activations} inside the kernel, so weight-only)", c.join(MLX_NAX, SRC), weights=MLX_WEIGHTS,
               activations=("fp16", "bf16"), when=NAX,
               runs_as="{weights} weights dequantized in the NAX Metal kernel, {activations} Neural Accelerator math"),
    Capability(W, "mlx quantized_matmul: {weights} weights (group-wise scales/biases or MX/NV blocks) "
               "dequantized inside the Metal kernel, {activations} math", SRC, weights=MLX_WEIGHTS,
               activations=c.FLOAT_ACTS, when=APPLE_GPU,
               runs_as="{weights} weights dequantized in the Metal kernel, {activations} simdgroup math"),
    c.lowered_compute(SRC, weights=MLX_WEIGHTS),
    Capability(U, "MLX quantizes weights only (affine 2-8 bit, mxfp4/nvfp4/mxfp8): {activations} "
               "activations are not an MLX mode", SRC,
               activations=("int4", "int8", "fp8-e4m3", "nvfp4", "mxfp4", "mxfp8")),
)


PRIORS = {
    ACCELERATOR: RuntimePriors(
        bandwidth_eff=0.75, compute_eff=0.55, layer_overhead_s=2e-5, step_overhead_s=1e-3, memory_gib=0.3,
        prefill_chunk=2048, source="mlx-lm, lazy graph evaluation"),
    "cpu": RuntimePriors(
        bandwidth_eff=0.7, compute_eff=0.55, layer_overhead_s=2e-5, step_overhead_s=1e-3, memory_gib=0.3,
        prefill_chunk=2048, gemv_eff=p.CPU_GEMV_PRIOR, source="mlx-lm"),
}
"""Planning priors (quantmatch.sdk.priors)."""


class MLXBackend(Backend):
    name = "mlx"
    description = "MLX / mlx-lm on the Apple-silicon GPU (weight-only quantized_matmul)"
    targets = ("metal",)
    formats = ("mlx",)
    requires = ("mlx-lm>=0.20",)
    install_hint = "pip install mlx-lm  (macOS on Apple silicon)"
    runtime = "mlx"
    latest_version = "0.32.1"
    source = c.MLX_CONVERT
    priors = PRIORS
    serves_unquantized = True
    capabilities = (
        *ROWS,
        c.no_kernel("MLX", "float16/bfloat16/float32 and weight-only affine/MX quantization", SRC),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(MLXBackend)
