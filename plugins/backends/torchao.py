"""torchao: PyTorch-native quantize_() configs (float8, int8 dynamic, int4 weight-only, W4A8, MX/NVFP4).

Float8 dynamic needs FP8 tensor cores (``is_sm_at_least_89``; MI300+ in the code, MI350+ in the
docs), MX and NVFP4 formats target Blackwell (SM100) and MI350+, Int4WeightOnly uses tinygemm
(``_weight_int4pack_mm``; bf16, CC >= 8 on CUDA, also CPU and MPS), and the int8-activation/int4-weight
configs are CPU-optimized. On Metal torchao offers int4 weight-only only.
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
INT8 = ("int8",)
FP8 = c.FP8
GPU = ("cuda", "rocm")
SRC = c.join(c.TORCHAO_DOCS, c.TORCHAO_API)

METAL = (
    Capability(W, "torchao on Metal: int4 weight-only (MPS _weight_int4pack_mm, macOS 15+)",
               c.join(c.TRANSFORMERS_OVERVIEW, c.TORCH_MPS_WEIGHT_ONLY), weights=("int4",),
               activations=c.FLOAT_ACTS, targets=("metal",), when=c.COMPUTE_NATIVE,
               runs_as="int4 weights unpacked in the MPS kernel, {activations} math"),
    Capability(U, "no FP8 type in the Metal/MPS matmul type tables", c.METAL_TYPE_TABLE, weights=FP8,
               targets=("metal",)),
    Capability(U, "torchao on Metal supports int4 weight-only only (transformers quantization overview); "
               "{weights} x {activations} is not offered there", c.TRANSFORMERS_OVERVIEW, targets=("metal",),
               layers=c.ALL_LAYERS),
)

FLOAT8 = (
    Capability(N, "Float8DynamicActivationFloat8Weight: torch._scaled_mm on FP8 tensor cores "
               "(is_sm_at_least_89)", SRC, weights=FP8, activations=FP8, targets=("cuda",), when=c.NV_FP8),
    Capability(N, "Float8 dynamic: FNUZ FP8 (e4m3fnuz) on MI300-class matrix cores (supported in "
               "the code; the docs list MI350+)", c.join(c.TORCHAO_API, c.TORCHAO_FNUZ, c.TORCHAO_DOCS),
               weights=FP8, activations=FP8, targets=("rocm",), when=c.FNUZ_FP8),
    Capability(N, "Float8 dynamic: OCP FP8 (e4m3fn) matrix cores (MI350+)", SRC, weights=FP8,
               activations=FP8, targets=("rocm",), when=c.OCP_FP8_AMD),
    Capability(U, "torchao Float8 needs FP8 tensor cores (SM 8.9+ / MI300+); {device} has none", SRC,
               weights=FP8, activations=FP8),
)

MX = (
    Capability(N, "{weights} W4A4/W8A8 configs target Blackwell SM100: block-scaled tcgen05 MMA",
               c.join(c.TORCHAO_DOCS, c.LLMCOMPRESSOR_SCHEMES, c.CUTLASS_BLACKWELL),
               weights=("nvfp4", "mxfp4", "mxfp8"), activations=("nvfp4", "mxfp4", "mxfp8"),
               targets=("cuda",), when=c.TCGEN05),
    Capability(N, "{weights} on sm_120: torch._scaled_mm lowers to block-scaled mma.sync (kind::mxf4nvf4); "
               "the docs name SM100, the sm_120 GEMM path is CUTLASS's SM120 block-scaled kernel",
               c.join(c.TORCHAO_DOCS, c.CUTLASS_BLACKWELL), weights=c.FP4_BLOCK, activations=c.FP4_BLOCK,
               targets=("cuda",), when=c.SM120_BLOCK_SCALE),
    Capability(N, "CDNA4 (MI350+) computes {weights} natively (torchao MX formats: MI350+)", c.TORCHAO_DOCS,
               weights=("mxfp4", "mxfp8"), activations=("mxfp4", "mxfp8"), targets=("rocm",),
               when=Requires(families=c.AMD, features_any=any_of("mxfp4", "mxfp8"))),
    Capability(U, "torchao {weights} needs Blackwell (SM100) or MI350+ block-scaled matrix cores; {device} "
               "has none", c.join(c.TORCHAO_DOCS, c.TE_MATRIX), weights=("nvfp4", "mxfp4", "mxfp8")),
)

INT8_DYN = (
    Capability(N, "Int8DynamicActivationInt8Weight: torch._int_mm on int8 matrix/dot units", SRC,
               weights=INT8, activations=INT8, when=c.INT8_UNIT),
    Capability(E, "no int8 matrix unit for torch._int_mm: {lowering}", SRC, weights=INT8,
               activations=INT8, when=c.COMPUTE_EMULATED, runs_as="{lowering}"),
    Capability(N, "Int8DynamicActivationInt4WeightConfig ('X86 CPU', group 128/64/32): int4 weights unpacked "
               "to int8 for the CPU's integer dot units", c.TORCHAO_DOCS, weights=("int4",),
               activations=INT8, targets=("cpu",),
               when=Requires(families=c.X86, features_all=any_of("int8"))),
    Capability(N, "Int8DynamicActivationIntxWeightConfig ('CPU optimized'): low-bit weights unpacked to int8 "
               "for the CPU's integer dot units", c.TORCHAO_DOCS, weights=("int1", "int2", "int3", "int4",
               "int5", "int6", "int7"), activations=INT8, targets=("cpu",), when=c.INT8_UNIT),
)

WEIGHT_ONLY = (
    Capability(W, "Int4WeightOnlyConfig: tinygemm _weight_int4pack_mm (bf16, CUDA CC >= 8)",
               c.join(SRC, c.QUANTO_QBITS), weights=("int4",), activations=("bf16",), targets=("cuda",),
               when=Requires(families=c.NVIDIA, min_cc=8.0, compute_native=True),
               runs_as="int4 weights dequantized by tinygemm, bf16 tensor-core math"),
    Capability(U, "Int4WeightOnlyConfig's tinygemm kernel needs bf16 on CUDA CC >= 8",
               c.join(SRC, c.QUANTO_QBITS), weights=("int4",), activations=c.FLOAT_ACTS, targets=("cuda",)),
    Capability(W, "Int4WeightOnlyConfig on CPU: _weight_int4pack_mm, {activations} math",
               c.join(SRC, c.QUANTO_QBITS), weights=("int4",), activations=c.FLOAT_ACTS, targets=("cpu",),
               when=c.COMPUTE_NATIVE,
               runs_as="int4 weights dequantized by _weight_int4pack_mm, {activations} math"),
    Capability(W, "Int8WeightOnlyConfig: int8 weights dequantized for a {activations} matmul", SRC,
               weights=INT8, activations=c.FLOAT_ACTS, when=c.COMPUTE_NATIVE,
               runs_as="int8 weights dequantized, {activations} matmul"),
    c.lowered_compute(SRC, weights=c.INT4_INT8),
)


PRIORS = {
    ACCELERATOR: RuntimePriors(
        bandwidth_eff=0.7, compute_eff=0.6, layer_overhead_s=3e-5, step_overhead_s=1.5e-3, memory_gib=0.7,
        dequant_follows_verdict=True,
        source="torch.compile'd (mode max-autotune) model; tinygemm / _scaled_mm kernels"),
    "cpu": RuntimePriors(
        bandwidth_eff=0.55, compute_eff=0.55, layer_overhead_s=1e-4, step_overhead_s=2e-3, memory_gib=0.5,
        dequant_follows_verdict=True, gemv_eff=p.CPU_GEMV_PRIOR,
        source="torchao CPU kernels; not measured here: ggml's decode GEMV figures"),
}
"""Planning priors (quantmatch.sdk.priors). The weight-only path follows the kernel the verdict names."""


class TorchAOBackend(Backend):
    name = "torchao"
    description = "torchao quantize_() configs in PyTorch (CUDA, ROCm, MPS, CPU)"
    targets = ("cuda", "rocm", "metal", "cpu")
    formats = ("torchao",)
    requires = ("torchao>=0.10", "torch>=2.4")
    install_hint = "pip install torchao"
    source = c.TORCHAO_DOCS
    priors = PRIORS
    capabilities = (
        *c.float_baselines("torchao", c.FLOAT_TYPES),
        *METAL,
        *FLOAT8,
        *MX,
        *INT8_DYN,
        *WEIGHT_ONLY,
        c.no_kernel("torchao", "float8 dynamic, int8 dynamic, int4/int8 weight-only, W4A8 on CPU, "
                    "MX/NVFP4 on Blackwell/MI350+", SRC),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(TorchAOBackend)
