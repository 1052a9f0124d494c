"""HQQ: calibration-free 1-8 bit weight quantization with pluggable matmul backends.

Every HQQ backend is weight-only: PYTORCH / PYTORCH_COMPILE dequantize on any device, ATEN is CUDA
only (axis=0), and the fused CUDA backends are torchao_int4 (4-bit, axis=1, bf16 only, group <= 256),
Marlin (4-bit, fp16), BitBLAS (4/2-bit, fp16) and GemLite (4/2/1-bit, fp16). Unsupported
configurations fall back to the PyTorch backend.
"""

from __future__ import annotations

from quantmatch.plugins.backends import _common as c
from quantmatch.plugins.backends import _priors as p
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability, Requires
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import ACCELERATOR, RuntimePriors
from quantmatch.sdk.verdict import Level

W, E = Level.WEIGHT_ONLY, Level.EMULATED
HQQ_WEIGHTS = ("int1", "int2", "int3", "int4", "int8")
DEQUANT = "{weights} weights dequantized to {activations}, {activations} matmul"

ROWS = (
    Capability(W, "torchao_int4 backend (tinygemm _weight_int4pack_mm): 4-bit, axis=1, bf16 only, "
               "group <= 256, CUDA CC >= 8", c.join(c.HQQ_TORCHAO, c.HQQ_README, c.QUANTO_QBITS),
               weights=("int4",), activations=("bf16",), targets=("cuda",),
               when=Requires(families=c.NVIDIA, min_cc=8.0),
               runs_as="int4 weights dequantized by tinygemm in the GEMM, bf16 tensor-core math"),
    Capability(W, "BitBLAS backend (4-bit and 2-bit, fp16, axis=1): fused dequantize + fp16 GEMM",
               c.join(c.HQQ_BITBLAS, c.HQQ_README), weights=("int4", "int2"), activations=("fp16",),
               targets=("cuda",), when=c.ON_NVIDIA,
               runs_as="{weights} weights dequantized inside the BitBLAS kernel, fp16 tensor-core math"),
    Capability(W, "GemLite backend (1-bit, fp16, axis=1): fused dequantize + fp16 GEMM",
               c.join(c.HQQ_GEMLITE, c.HQQ_README), weights=("int1",), activations=("fp16",),
               targets=("cuda",), when=c.ON_NVIDIA,
               runs_as="int1 weights dequantized inside the GemLite kernel, fp16 math"),
    Capability(W, "HQQ on MPS: the ATen backend is CUDA-only, so the PyTorch backend dequantizes and "
               "multiplies in {activations}", c.join(c.HQQ_MPS, c.HQQ_README), weights=HQQ_WEIGHTS,
               activations=c.FLOAT_ACTS, targets=("metal",), when=c.COMPUTE_NATIVE, runs_as=DEQUANT),
    Capability(W, "default PyTorch backend: {weights} weights dequantized, then a {activations} matmul (the "
               "optimized backends are CUDA-only)", c.HQQ_README, weights=HQQ_WEIGHTS,
               activations=c.FLOAT_ACTS, when=c.COMPUTE_NATIVE, runs_as=DEQUANT),
    c.lowered_compute(c.HQQ_README, weights=HQQ_WEIGHTS),
)


PRIORS = {
    ACCELERATOR: RuntimePriors(
        bandwidth_eff=0.6, compute_eff=0.5, layer_overhead_s=2.5e-4, step_overhead_s=3e-3, memory_gib=0.6,
        dequant_follows_verdict=True, source="eager PyTorch plus tinygemm/GemLite/BitBLAS kernels"),
    "cpu": RuntimePriors(
        bandwidth_eff=0.55, compute_eff=0.5, layer_overhead_s=3e-4, step_overhead_s=3e-3, memory_gib=0.5,
        dequant="materialize", dequant_follows_verdict=True, dequant_passes=2.5, extra_passes={3: 1.0},
        float_dtype="fp32", import_gib=0.22,
        source="PyTorch backend on CPU: dequantize to fp32 (unpack, then zero point and scale: 2-3 elementwise "
               "passes; 3-bit weights, packed 10 per int32, unpack in 10 shift-and-mask slices: one pass more) then "
               "matmul; the dequantization temporaries the allocator keeps add ~0.05 GiB to the torch runtime "
               f"({p.MEASURED_SPR})"),
}
"""Planning priors (quantmatch.sdk.priors). The weight-only path follows the kernel the verdict names."""


class HQQBackend(Backend):
    name = "hqq"
    description = "HQQ weight-only layers (PyTorch/ATen/torchao_int4/Marlin/BitBLAS/GemLite backends)"
    targets = ("cuda", "rocm", "metal", "cpu")
    formats = ("hqq",)
    requires = ("hqq>=0.2", "torch>=2.4")
    install_hint = "pip install hqq"
    runner = "quantmatch.plugins.backends.torch_runner:HQQRunner"
    source = c.HQQ_README
    priors = PRIORS
    capabilities = (
        *ROWS,
        c.no_kernel("HQQ", "1-8 bit weight-only layers (activations stay 16/32-bit)", c.HQQ_README),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(HQQBackend)
