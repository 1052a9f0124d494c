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
AO = "pytorch/ao"
AO_HEAD = "36027d82"
"""The torchao commit read (main, at/after v0.18.0-rc1); v0.13.0/v0.14.1 read at their tags."""
AO_UTILS = (f"{AO} torchao/utils.py @{AO_HEAD} (is_sm_at_least_89: capability >= (8, 9); is_MI300: gfx940/941/942; "
            "is_MI350: gfx950)")
AO_FLOAT8_GATE = (f"{AO} torchao/quantization/quant_api.py @{AO_HEAD} (_float8_dynamic_activation_float8_weight_"
                  "transform: assert is_sm_at_least_89() or is_MI300() or is_MI350()) ; "
                  f"{AO} torchao/float8/inference.py @{AO_HEAD}")
AO_NAVI4_BUG = (f"{AO} torchao/utils.py @{AO_HEAD} (is_Navi4: `if \"gfx1200\" or \"gfx1201\" in archName` is always "
                "true on ROCm; no float8 or MX gate calls it)")
AO_INT4_PLAIN = (f"{AO} torchao/quantization/quant_api.py @{AO_HEAD} (Int4WeightOnlyConfig: version 2, "
                 "int4_packing_format PLAIN -> Int4Tensor) ; "
                 f"{AO} torchao/quantization/quantize_/workflows/int4/int4_tensor.py @{AO_HEAD} "
                 "(torch.ops.mslk.bf16i4bf16_rowwise) ; "
                 f"{AO} test/quantization/quantize_/workflows/int4/test_int4_tensor.py @{AO_HEAD} "
                 "('Need sm90+', 'MSLK kernel not compatible with sm100+')")
AO_INT4_TILE = (f"{AO} torchao/quantization/quantize_/workflows/int4/int4_tile_packed_to_4d_tensor.py @{AO_HEAD} "
                "(Int4PackingFormat.TILE_PACKED_TO_4D: aten._weight_int4pack_mm, the tinygemm kernel)")
AO_INT4_V013 = (f"{AO} torchao/quantization/quant_api.py @v0.13.0 (Int4WeightOnlyConfig version 1 default: "
                "tinygemm tensor-core tiled layout); version 2 / PLAIN default from v0.14.0")
AO_MX = (f"{AO} torchao/prototype/mx_formats/mx_tensor.py @{AO_HEAD} (KernelPreference.AUTO: torch._scaled_mm / "
         "F.scaled_mm block-scaled GEMM; KernelPreference.EMULATED: dequantize, then a bf16 matmul)")
MI300 = any_of("gfx940", "gfx941", "gfx942")
MI350 = any_of("gfx950")

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
               "(is_sm_at_least_89: compute capability >= 8.9)", c.join(SRC, AO_FLOAT8_GATE, AO_UTILS),
               weights=FP8, activations=FP8, targets=("cuda",), when=Requires(families=c.NVIDIA, min_cc=8.9)),
    Capability(N, "Float8 dynamic on MI300 (is_MI300: gfx940/941/942): FNUZ FP8 (e4m3fnuz) matrix cores "
               "(supported in the code; the docs list MI350+)",
               c.join(AO_FLOAT8_GATE, AO_UTILS, c.TORCHAO_FNUZ, c.TORCHAO_DOCS),
               weights=FP8, activations=FP8, targets=("rocm",), when=Requires(families=c.AMD, archs=MI300)),
    Capability(N, "Float8 dynamic on MI350 (is_MI350: gfx950): OCP FP8 (e4m3fn) matrix cores",
               c.join(AO_FLOAT8_GATE, AO_UTILS, c.TORCHAO_DOCS), weights=FP8, activations=FP8,
               targets=("rocm",), when=Requires(families=c.AMD, archs=MI350)),
    Capability(U, "torchao's float8 gate admits only is_sm_at_least_89(), is_MI300() or is_MI350(): {device} "
               "({arch}) is refused even where it has FP8 units (RDNA4's FP8 WMMA included; torchao's "
               "is_Navi4() helper is never consulted)", c.join(AO_FLOAT8_GATE, AO_UTILS, AO_NAVI4_BUG),
               weights=FP8, activations=FP8, targets=("rocm",)),
    Capability(U, "torchao Float8 needs FP8 tensor cores (SM 8.9+ / MI300+); {device} has none",
               c.join(SRC, AO_FLOAT8_GATE), weights=FP8, activations=FP8),
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
               "has none (the default KernelPreference.AUTO calls the block-scaled GEMM; only an explicit "
               "KernelPreference.EMULATED runs, dequantizing to bf16: fake-quantized, not a kernel)",
               c.join(c.TORCHAO_DOCS, AO_MX, c.TE_MATRIX), weights=("nvfp4", "mxfp4", "mxfp8")),
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
    # since v0.14 the default (version 2, PLAIN) runs MSLK's Hopper CUTLASS kernel; tinygemm is opt-in
    Capability(W, "Int4WeightOnlyConfig (version 2, default int4_packing_format PLAIN): MSLK "
               "bf16i4bf16_rowwise CUTLASS kernel on sm_90 (its test needs sm90+ and skips sm100+)",
               c.join(AO_INT4_PLAIN, c.TORCHAO_DOCS), weights=("int4",), activations=("bf16",), targets=("cuda",),
               when=Requires(families=c.NVIDIA, min_cc=9.0, max_cc=9.0, compute_native=True), since="0.14.0",
               runs_as="int4 weights upconverted in registers by MSLK bf16i4bf16_rowwise, bf16 wgmma math"),
    Capability(W, "Int4WeightOnlyConfig on {device}: the default PLAIN format's MSLK kernel is Hopper-only, so "
               "int4_packing_format='tile_packed_to_4d' selects tinygemm _weight_int4pack_mm (bf16, CC >= 8)",
               c.join(AO_INT4_PLAIN, AO_INT4_TILE), weights=("int4",), activations=("bf16",), targets=("cuda",),
               when=Requires(families=c.NVIDIA, min_cc=8.0, compute_native=True), since="0.14.0",
               runs_as="int4 weights dequantized by tinygemm, bf16 tensor-core math"),
    Capability(W, "Int4WeightOnlyConfig (version 1 default): tinygemm _weight_int4pack_mm (bf16, CUDA CC >= 8)",
               c.join(SRC, AO_INT4_V013, c.QUANTO_QBITS), weights=("int4",), activations=("bf16",),
               targets=("cuda",), when=Requires(families=c.NVIDIA, min_cc=8.0, compute_native=True),
               until="0.14.0", runs_as="int4 weights dequantized by tinygemm, bf16 tensor-core math"),
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
    runtime = "torchao"
    latest_version = "0.18.0"
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
