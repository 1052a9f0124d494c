"""HQQ: calibration-free 1-8 bit weight quantization with pluggable matmul backends.

Every HQQ backend is weight-only: ``HQQLinear`` keeps activations in its ``compute_dtype`` and expands the
weights to it. The rows follow what hqq 0.2.8.post1 checks when ``prepare_for_inference`` patches a layer
(a layer that fails a check keeps the default PyTorch backend, which dequantizes then runs a matmul):

- ``torchao_int4``: nbits 4, axis 1, ``compute_dtype`` bfloat16 (asserted), group None/32/64/128/256; the
  op it calls, ``aten._weight_int4pack_mm``, is built for sm_80+ (CUDA >= 12) and, on ROCm, refuses any
  GPU but gfx90a/gfx940/gfx941/gfx942 (``isCDNA2orLater``);
- ``gemlite``: nbits 4/2/1, axis 1, float16, when the ``gemlite`` package imports (else silently the
  default); ``bitblas``: nbits 4/2/1, axis 1, group None/32/64/128/256, float16;
- ``marlin`` (IST-DASLab Marlin, cc >= 8.0): nbits 4, axis 1, no grouping, float16 - reachable through
  ``prepare_for_inference`` until 0.2.8, which dropped it;
- the ATen backend (``hqq_aten`` CUDA extension, axis 0 only) still dequantizes, then a matmul.
"""

from __future__ import annotations

from quantmatch.plugins.backends import _common as c
from quantmatch.plugins.backends import _priors as p
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability, Dispute, Requires, any_of
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import ACCELERATOR, RuntimePriors
from quantmatch.sdk.verdict import Level

W = Level.WEIGHT_ONLY
HQQ_WEIGHTS = ("int1", "int2", "int3", "int4", "int8")
DEQUANT = "{weights} weights dequantized to {activations}, {activations} matmul"
TINYGEMM_GROUPS = (0, 32, 64, 128, 256)
"""Per-channel (HQQ regroups it to 128) or the group sizes ``_weight_int4pack_mm`` handles."""
BITBLAS_GROUPS = (0, 32, 64, 128, 256)
CDNA2_OR_LATER = any_of("gfx90a", "gfx940", "gfx941", "gfx942")
"""``isCDNA2orLater`` in torch's int4mm.cu: the ROCm GPUs ``_weight_int4pack_mm`` accepts."""

LATEST = "0.2.8.post1"
_H = "mobiusml/hqq"
_V0281 = "835e2590"  # tag v0.2.8.post1
_V0271 = "93f19031"  # tag 0.2.7.post1
H_README = f"{_H} Readme.md @{_V0281}"
H_PATCHING = f"{_H} hqq/utils/patching.py @{_V0281} (prepare_for_inference)"
H_TORCHAO = f"{_H} hqq/backends/torchao.py @{_V0281}"
H_BITBLAS = f"{_H} hqq/backends/bitblas.py @{_V0281} (HQQLinearBitBlas.check)"
H_GEMLITE = f"{_H} hqq/backends/gemlite.py @{_V0281}"
H_QUANTIZE = f"{_H} hqq/core/quantize.py @{_V0281} (HQQBackend, forward_pytorch, dequantize_aten)"
H_MARLIN = (f"{_H} hqq/utils/patching.py @{_V0271} (backend == \"marlin\") ; {_H} hqq/backends/marlin.py "
            f"@{_V0271} ; {_H} hqq/utils/patching.py @{_V0281} (no marlin branch)")
TORCH_INT4MM = ("pytorch/pytorch aten/src/ATen/native/cuda/int4mm.cu @6112c47f (bf16 A, groups 32/64/128/256, "
                "__CUDA_ARCH__ >= 800, isCDNA2orLater on ROCm)")
TORCH_INT4MM_LATER = ("cyyever/pytorch aten/src/ATen/native/cuda/int4mm.cu @29e3872f (a pytorch fork at a later "
                      "state: isCDNA4orLater = gfx950, gfx1250 refused)")
MARLIN_README = "IST-DASLab/marlin README.md @2f6d7c10 (compute capability >= 8.0)"

ROWS = (
    Capability(W, "torchao_int4 backend (tinygemm _weight_int4pack_mm): 4-bit, axis=1, bf16 compute_dtype only, "
               "group 32-256 (per-channel regrouped to 128); the kernel is built for CUDA cc >= 8.0",
               c.join(H_TORCHAO, H_PATCHING, TORCH_INT4MM, H_README), weights=("int4",), activations=("bf16",),
               group_sizes=TINYGEMM_GROUPS, targets=("cuda",), when=Requires(families=c.NVIDIA, min_cc=8.0),
               runs_as="int4 weights dequantized by tinygemm in the GEMM, bf16 tensor-core math"),
    Capability(W, "torchao_int4 backend on ROCm (tinygemm _weight_int4pack_mm): 4-bit, axis=1, bf16 only, "
               "group 32-256; torch accepts only CDNA2/CDNA3 GPUs (gfx90a, gfx940-942)",
               c.join(H_TORCHAO, H_PATCHING, TORCH_INT4MM), weights=("int4",), activations=("bf16",),
               group_sizes=TINYGEMM_GROUPS, targets=("rocm",),
               when=Requires(families=c.AMD, archs=CDNA2_OR_LATER),
               runs_as="int4 weights dequantized by tinygemm in the GEMM, bf16 matrix-core math",
               disputed=Dispute(W, "the ROCm list is torch's, and later int4mm.cu versions change it (gfx90a, "
                                "gfx942 and gfx950; then gfx950 only, 'CDNA4 or later'); on a GPU outside it "
                                "torchao_int4 raises and only the default backend (dequantize, then a bf16 "
                                "matmul) runs", TORCH_INT4MM_LATER)),
    Capability(W, "Marlin backend (hqq < 0.2.8; 4-bit, axis=1, no grouping, fp16; Marlin needs cc >= 8.0): "
               "int4 weights dequantized in registers", c.join(H_MARLIN, MARLIN_README), weights=("int4",),
               activations=("fp16",), group_sizes=(0,), targets=("cuda",),
               when=Requires(families=c.NVIDIA, min_cc=8.0), until="0.2.8",
               runs_as="int4 weights dequantized by Marlin, fp16 MMA"),
    Capability(W, "GemLite backend (4/2/1-bit, fp16 compute_dtype, axis=1; BitBLAS, the alternative, takes "
               "the same bits with groups 32-256): fused dequantize + fp16 GEMM, when the gemlite package "
               "imports (hqq silently keeps the default backend otherwise)",
               c.join(H_GEMLITE, H_BITBLAS, H_PATCHING, H_README), weights=("int4", "int2", "int1"),
               activations=("fp16",), targets=("cuda",), when=c.ON_NVIDIA,
               runs_as="{weights} weights dequantized inside the GemLite kernel, fp16 tensor-core math"),
    Capability(W, "HQQ on MPS: the ATen backend is CUDA-only, so the PyTorch backend dequantizes and "
               "multiplies in {activations}", c.join(c.HQQ_MPS, H_QUANTIZE), weights=HQQ_WEIGHTS,
               activations=c.FLOAT_ACTS, targets=("metal",), when=c.COMPUTE_NATIVE, runs_as=DEQUANT),
    Capability(W, "default PyTorch backend: {weights} weights dequantized to the compute_dtype, then a "
               "{activations} matmul (the fused backends are GPU-only and need axis=1; the ATen backend, axis=0, "
               "also dequantizes first)", c.join(H_QUANTIZE, H_PATCHING, H_README), weights=HQQ_WEIGHTS,
               activations=c.FLOAT_ACTS, when=c.COMPUTE_NATIVE, runs_as=DEQUANT),
    c.lowered_compute(H_README, weights=HQQ_WEIGHTS),
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
    source = H_README
    runtime = "hqq"
    latest_version = LATEST
    priors = PRIORS
    capabilities = (
        *ROWS,
        c.no_kernel("HQQ", "1-8 bit weight-only layers (activations stay 16/32-bit)", H_README),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(HQQBackend)
