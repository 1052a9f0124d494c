"""HQQ: calibration-free 1-8 bit weight quantization with pluggable matmul backends.

Every HQQ backend is weight-only: PYTORCH / PYTORCH_COMPILE dequantize on any device, ATEN is CUDA
only (axis=0), and the fused CUDA backends are torchao_int4 (4-bit, axis=1, bf16 only, group <= 256),
Marlin (4-bit, fp16), BitBLAS (4/2-bit, fp16) and GemLite (4/2/1-bit, fp16). Unsupported
configurations fall back to the PyTorch backend.
"""

from __future__ import annotations

from quantmatch.backend import Backend
from quantmatch.capability import Capability, Requires
from quantmatch.pluginhost import hookimpl
from quantmatch.verdict import Level

from . import _common as c

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


class HQQBackend(Backend):
    name = "hqq"
    description = "HQQ weight-only layers (PyTorch/ATen/torchao_int4/Marlin/BitBLAS/GemLite backends)"
    targets = ("cuda", "rocm", "metal", "cpu")
    formats = ("hqq",)
    requires = ("hqq>=0.2", "torch>=2.4")
    install_hint = "pip install hqq"
    executable = True
    source = c.HQQ_README
    capabilities = (
        *ROWS,
        c.no_kernel("HQQ", "1-8 bit weight-only layers (activations stay 16/32-bit)", c.HQQ_README),
    )


@hookimpl
def register_backends(register):  # type: ignore[no-untyped-def]
    register(HQQBackend)
