"""vLLM: the serving engine, with its quantization kernels per GPU generation, ROCm and CPU.

vLLM picks kernels from the device at load time: CUTLASS scaled_mm for INT8/FP8 W8A8, Machete
(Hopper only) -> Marlin -> Exllama for WNA16 weight-only checkpoints, FP8 Marlin as the weight-only
fallback below sm_89, FlashInfer/CUTLASS NVFP4 on Blackwell, GGUF MMQ kernels, and oneDNN on CPU.
Numeric floors are used where vLLM's own check is ``get_min_capability()``; the sm_100-only paths are
keyed on the ``tcgen05`` feature, which the numerically higher sm_120 lacks.
"""

from __future__ import annotations

from quantmatch.plugins.backends import _common as c
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability, Requires, any_of
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import ACCELERATOR, RuntimePriors
from quantmatch.sdk.verdict import Level

N, W, E, U = Level.NATIVE, Level.WEIGHT_ONLY, Level.EMULATED, Level.UNSUPPORTED

CT = ("gptq", "awq", "rtn", "smoothquant", "fp8")
"""Methods whose checkpoints vLLM loads as compressed-tensors (the same kernels serve all of them)."""
BNB = ("bitsandbytes",)
GPU = ("cuda", "rocm")
CUDA = ("cuda",)
ROCM = ("rocm",)
CPU = ("cpu",)
INT8 = ("int8",)
FP8 = c.FP8


def nv(min_cc: float | None = None, max_cc: float | None = None) -> Requires:
    return Requires(families=c.NVIDIA, min_cc=min_cc, max_cc=max_cc)


MARLIN_RUNS_AS = "{weights} weights dequantized in registers by Marlin, {activations} tensor-core math"
FP8_MARLIN_RUNS_AS = "FP8 weights dequantized in registers by Marlin, BF16/FP16 tensor-core math (W8A16)"
FP4_MARLIN_RUNS_AS = ("{weights} weights dequantized in registers by Marlin (fp4_e2m1f), FP16/BF16 "
                      "tensor-core math (W4A16); activations stay 16-bit")

KV_CACHE = (
    *c.kv_float("vLLM", c.VLLM_DOCS_LATEST),
    Capability(N, "NVFP4 KV cache runs through the trtllm-gen FMHA kernels built for sm100f "
               "(tcgen05/TMEM: the B200/B300 family)", c.join(c.CLUB3090_NVFP4_KV, c.TRTLLM_NVFP4_KV),
               weights=("nvfp4",), layers=c.KV, targets=CUDA, when=c.TCGEN05),
    Capability(U, "NVFP4 KV cache requires sm100f (trtllm-gen FMHA): it fails on sm_120 even though NVFP4 "
               "weights work there, and there is no NVFP4 attention path on other GPUs",
               c.join(c.CLUB3090_NVFP4_KV, c.TRTLLM_NVFP4_KV, c.VLLM_FAMILY_100), weights=("nvfp4",),
               layers=c.KV),
    Capability(N, "FP8 (e4m3) KV cache on FP8 tensor cores: the FP8-capable attention kernels consume the "
               "cache without widening it", c.join(c.VLLM_DOCS_LATEST, c.VLLM_FP8),
               weights=FP8, layers=c.KV, targets=GPU, when=c.GPU_FP8),
    Capability(W, "FP8 KV cache without FP8 tensor cores: the cache is stored in FP8 (half the "
               "memory) and upconverted to FP16/BF16 inside the attention kernel",
               c.join(c.VLLM_DOCS_LATEST, c.VLLM_MI250_FP8), weights=FP8, layers=c.KV, targets=GPU,
               when=c.ON_GPU, runs_as="FP8 KV cache upconverted to FP16/BF16 for the attention math"),
)

BASELINE = (
    Capability(N, "vLLM serves unquantized {weights} checkpoints on native {weights} units",
               c.VLLM_DOCS, weights=("fp32", "fp16", "bf16"), when=c.COMPUTE_NATIVE),
)

ON_CPU = (
    Capability(N, "vLLM's CPU backend runs INT8 W8A8 as oneDNN int8 GEMM on the CPU's integer dot units "
               "(VNNI/AMX on x86, dotprod/i8mm on Arm); docs: INT8 W8A8 x86 CPU \u2705",
               c.join(c.VLLM_DOCS, c.VLLM_INT8_DOC), weights=INT8, activations=INT8, methods=CT,
               targets=CPU, when=c.INT8_UNIT),
    Capability(U, "vLLM has no FP8 kernels on CPU (docs: FP8 W8A8 x86 CPU \u274c)", c.VLLM_DOCS,
               weights=FP8, targets=CPU),
    Capability(W, "AWQ/GPTQ 4-bit on CPU (docs: x86 CPU AWQ \u2705, GPTQ \u2705): uint4/uint4b8 weights are "
               "dequantized for a {activations} GEMM", c.join(c.VLLM_DOCS, c.VLLM_MARLIN),
               weights=("int4",), activations=c.FLOAT_ACTS, targets=CPU,
               runs_as="INT4 weights dequantized to {activations} on the CPU cores (W4A16)"),
    Capability(U, "vLLM's CPU weight-only path takes 4-bit weights only (uint4/uint4b8)",
               c.join(c.VLLM_MARLIN, c.VLLM_DOCS), weights=("int1", "int2", "int3", "int8"),
               activations=c.FLOAT_ACTS, targets=CPU),
    Capability(U, "vLLM's GGUF kernels are GPU kernels (docs: GGUF on Volta+ and AMD GPU); the CPU backend "
               "does not run {weights}", c.join(c.VLLM_DOCS, c.VLLM_GGUF), weights=("gguf-*",), targets=CPU),
    Capability(U, "vLLM's CPU backend supports AWQ and GPTQ (4-bit) weight-only and INT8 W8A8 (docs "
               "matrix); {weights} weights with {activations} math are not among them", c.VLLM_DOCS,
               targets=CPU, layers=c.ALL_LAYERS),
)

GGUF = (
    Capability(W, "GGUF I-quants have no MMQ/MMVQ kernel in vLLM: ggml_dequantize to FP16, then a matmul "
               "(docs: GGUF \u2705 Volta+ and AMD GPU)", c.join(c.VLLM_DOCS, c.VLLM_GGUF),
               weights=c.GGUF_IQUANTS, targets=GPU, when=c.ON_GPU,
               runs_as="{weights} blocks dequantized to FP16, FP16 GEMM"),
    Capability(N, "GGUF legacy/K-quants run vLLM's fused MMVQ/MMQ kernels: activations quantized to q8_1 "
               "and multiplied with int8 dot products (dp4a / integer dot)", c.join(c.VLLM_DOCS, c.VLLM_GGUF),
               weights=("gguf-q*",), targets=GPU, when=c.GPU_INT_DOT),
    Capability(N, "unquantized GGUF tensors (F32) run as a plain matmul", c.VLLM_GGUF,
               weights=("gguf-f32",), targets=GPU),
    Capability(N, "unquantized GGUF tensors (F16) run as a plain FP16 matmul", c.VLLM_GGUF,
               weights=("gguf-f16",), targets=GPU, when=Requires(features_all=any_of("fp16"))),
    Capability(N, "unquantized GGUF tensors (BF16) run as a plain BF16 matmul", c.VLLM_GGUF,
               weights=("gguf-bf16",), targets=GPU, when=Requires(features_all=any_of("bf16"))),
    Capability(U, "vLLM's GGUF support (legacy/K-quants via MMQ, I-quants dequantized, F32/F16/BF16 "
               "plain) has no path for {weights} on {device}", c.join(c.VLLM_DOCS, c.VLLM_GGUF),
               weights=("gguf-*",)),
)

INT8_W8A8 = (
    Capability(U, "INT8 W8A8 is \u274c on AMD GPUs in vLLM's docs matrix ({device} has int8 matrix cores: "
               "a software gap)", c.join(c.VLLM_DOCS, c.ROCM_PRECISION), weights=INT8, activations=INT8,
               methods=CT, targets=ROCM),
    Capability(N, "INT8 W8A8 runs CUTLASS scaled_mm on int8 tensor cores (compute capability >= 7.5: "
               "Turing, Ampere, Ada, Hopper, Blackwell)", c.join(c.VLLM_DOCS, c.VLLM_INT8_DOC),
               weights=INT8, activations=INT8, methods=CT, targets=CUDA, when=nv(min_cc=7.5)),
    Capability(U, "INT8 W8A8 needs int8 tensor cores (compute capability >= 7.5); docs: Volta \u274c",
               c.join(c.VLLM_DOCS, c.VLLM_INT8_DOC), weights=INT8, activations=INT8, methods=CT,
               targets=CUDA),
)

BITSANDBYTES = (
    Capability(N, "bitsandbytes 8-bit: LLM.int8() int8 matmul on integer tensor cores (fp16 outlier "
               "columns), CUDA CC >= 7.5", c.join(c.VLLM_DOCS, c.BNB_INSTALL, c.BNB_FUNCTIONAL),
               weights=INT8, activations=INT8, methods=BNB, targets=CUDA, when=nv(min_cc=7.5)),
    Capability(U, "bitsandbytes LLM.int8() needs CUDA CC >= 7.5", c.join(c.BNB_INSTALL, c.VLLM_DOCS),
               weights=INT8, activations=INT8, methods=BNB, targets=CUDA),
    Capability(W, "bitsandbytes 4-bit: NF4/FP4 weights dequantized to {activations} for the GEMM",
               c.join(c.VLLM_DOCS, c.BNB_INSTALL), weights=("nf4", "fp4"), activations=c.FLOAT_ACTS,
               targets=CUDA, when=Requires(families=c.NVIDIA, compute_native=True),
               runs_as="{weights} dequantized to {activations}, {activations} GEMM"),
    Capability(W, "bitsandbytes on ROCm: vLLM's docs mark it \u274c but RocmPlatform.supported_quantization "
               "lists bitsandbytes (docs and code disagree; judged by the code): NF4/FP4 dequantized",
               c.join(c.VLLM_ROCM, c.VLLM_DOCS, c.BNB_INSTALL), weights=("nf4", "fp4"),
               activations=c.FLOAT_ACTS, targets=ROCM, when=c.COMPUTE_NATIVE,
               runs_as="{weights} dequantized to {activations}, {activations} GEMM"),
)

W4A8_W4A4 = (
    Capability(N, "W4AFP8: CUTLASS mixed-input GEMM upconverts INT4 weights to FP8 in registers and runs FP8 "
               "tensor-core math (vLLM min compute capability 9.0)", c.LLMCOMPRESSOR_SCHEMES,
               weights=("int4",), activations=FP8, targets=CUDA, when=nv(min_cc=9.0)),
    Capability(U, "W4AFP8 needs compute capability 9.0 (Hopper) in vLLM", c.LLMCOMPRESSOR_SCHEMES,
               weights=("int4",), activations=FP8),
    Capability(U, "vLLM has no INT4 x INT4 kernel: INT4 appears only as weight-only (Marlin, Machete, AWQ, "
               "GPTQ kernels)", c.join(c.VLLM_DOCS, c.VLLM_MARLIN), weights=("int4",), activations=("int4",)),
)

FP8_W8A8 = (
    Capability(N, "FP8 W8A8 on FP8 tensor cores (CUTLASS scaled_mm: sm_89 mma.sync e4m3, sm_90 wgmma, "
               "sm_100 tcgen05; the fused-MoE FP8 kernels likewise need >= sm_89); compute capability >= 8.9",
               c.join(c.VLLM_DOCS, c.VLLM_FP8, c.VLLM_FP8_DOC, c.CUTLASS_SM89, c.WGMMA_TYPES), weights=FP8,
               activations=FP8, targets=CUDA, when=c.NV_FP8),
    Capability(N, "CDNA3 (MI300-class) matrix cores compute FP8 in the FNUZ variant (e4m3fnuz, max 240): "
               "vLLM normalizes e4m3fn checkpoints to e4m3fnuz (normalize_e4m3fn_to_e4m3fnuz); docs: FP8 "
               "W8A8 AMD \u2705",
               c.join(c.ROCM_PRECISION, c.VLLM_FP8, c.VLLM_DOCS, c.ROCM_MI300_FP8), weights=FP8,
               activations=FP8, targets=ROCM, when=c.FNUZ_FP8),
    Capability(N, "CDNA4 (MI350/MI355) computes OCP FP8 (e4m3fn) natively; docs: FP8 W8A8 AMD \u2705",
               c.join(c.VLLM_DOCS, c.VLLM_FP8), weights=FP8, activations=FP8, targets=ROCM,
               when=c.OCP_FP8_AMD),
    Capability(W, "FP8 W8A8 compute needs FP8 tensor cores (compute capability >= 8.9); vLLM falls back to "
               "FP8 weight-only through Marlin on sm_80/86 (use_marlin = not has_device_capability(89))",
               c.join(c.VLLM_FP8, c.VLLM_FP8_DOC, c.VLLM_FP8_MARLIN_PR), weights=FP8, activations=FP8,
               layers=c.LINEAR, targets=CUDA, when=nv(min_cc=8.0), runs_as=FP8_MARLIN_RUNS_AS),
    Capability(W, "FP8 MoE below sm_89: the Triton fused-MoE kernel fails ('fp8e4nv not supported'); the "
               "Marlin MoE backend (--moe-backend marlin) runs it weight-only (FP8 compute needs compute "
               "capability >= 8.9)", c.join(c.VLLM_FP8_MOE_A100, c.VLLM_FP8), weights=FP8, activations=FP8,
               layers=c.MOE, targets=CUDA, when=nv(min_cc=8.0),
               runs_as="FP8 expert weights dequantized by Marlin MoE, BF16/FP16 tensor-core math (W8A16)"),
    Capability(U, "Fp8Config.get_min_capability() = 80: vLLM refuses FP8 checkpoints below Ampere (docs: "
               "Turing \u274c; FP8 compute itself needs compute capability >= 8.9)",
               c.join(c.VLLM_FP8, c.VLLM_DOCS), weights=FP8, activations=FP8, targets=CUDA),
    Capability(W, "MI200 (gfx90a) has no FP8 matrix cores; vLLM's supports_fp8() accepts FP8 checkpoints "
               "there through an upcast path", c.join(c.VLLM_MI250_FP8, c.ROCM_PRECISION), weights=FP8,
               activations=FP8, targets=ROCM, when=Requires(families=c.AMD, archs=any_of("gfx90a")),
               runs_as="FP8 weights upcast to BF16/FP16, MFMA BF16/FP16 math (W8A16)"),
    Capability(U, "{device} has no FP8 matrix cores and vLLM's ROCm FP8 paths target gfx942/gfx950 (plus "
               "the gfx90a upcast path)", c.join(c.ROCM_PRECISION, c.VLLM_FP8), weights=FP8,
               activations=FP8, targets=ROCM),
    Capability(W, "FP8 weight-only (W8A16) checkpoints run through FP8 Marlin (CC >= 8.0; Turing only in "
               "newer releases)", c.join(c.VLLM_FP8_DOC, c.VLLM_MARLIN), weights=FP8,
               activations=c.HALF_ACTS, targets=CUDA, when=nv(min_cc=8.0), runs_as=FP8_MARLIN_RUNS_AS),
)

FP4 = (
    # NVFP4 W4A4: FlashInfer-CUTLASS (>= sm100) -> CUTLASS (if compiled for the SM) -> Marlin -> emulation
    Capability(N, "NVFP4 W4A4 on the sm_100 family: FlashInfer-CUTLASS / CUTLASS NVFP4 GEMM on tcgen05 "
               "block-scaled MMA (kind::mxf4nvf4)", c.join(c.VLLM_NVFP4, c.CUTLASS_BLACKWELL),
               weights=("nvfp4",), activations=("nvfp4",), targets=CUDA, when=c.TCGEN05),
    Capability(N, "NVFP4 W4A4 on sm_120 (Blackwell GeForce / RTX PRO): CUTLASS NVFP4 GEMM with block-scaled "
               "mma.sync (kind::mxf4nvf4.block_scale, sm_120a build); not the sm_100 tcgen05/FlashInfer path",
               c.join(c.VLLM_NVFP4, c.CUTLASS_BLACKWELL, c.VLLM_FAMILY_100), weights=("nvfp4",),
               activations=("nvfp4",), targets=CUDA, when=c.SM120_BLOCK_SCALE),
    Capability(W, "NVFP4 weight-only (W4A16) checkpoints run through Marlin FP4 (fp4_e2m1f weights, CC >= "
               "7.5)", c.join(c.VLLM_MARLIN, c.VLLM_MARLIN_TURING), weights=("nvfp4",),
               activations=c.HALF_ACTS, targets=CUDA, when=nv(min_cc=7.5), runs_as=FP4_MARLIN_RUNS_AS),
    Capability(W, "MXFP4 weight-only checkpoints run through Marlin (BF16 activations only, so CC >= 8.0)",
               c.join(c.VLLM_MARLIN_KERNEL, c.VLLM_MARLIN_TURING), weights=("mxfp4",), activations=("bf16",),
               targets=CUDA, when=nv(min_cc=8.0), runs_as=FP4_MARLIN_RUNS_AS),
    Capability(W, "without FP4 tensor cores vLLM runs NVFP4 checkpoints through Marlin W4A16 "
               "(newer builds can instead convert to FP8 compute on Hopper)",
               c.join(c.VLLM_NVFP4, c.VLLM_MARLIN, c.NO_FP4_HOPPER), weights=("nvfp4",), targets=CUDA,
               when=nv(min_cc=7.5), runs_as=FP4_MARLIN_RUNS_AS),
    Capability(U, "the NVFP4 scheme's minimum capability is 75: vLLM refuses it on {device}", c.VLLM_NVFP4,
               weights=("nvfp4",), targets=CUDA),
    Capability(E, "{device} has no NVFP4 matrix support: NVFP4 (petit_nvfp4 on ROCm) is dequantized on the "
               "fly and multiplied in BF16/FP16 (judged like MXFP4 on MI300/MI250)",
               c.join(c.VLLM_ROCM, c.VLLM_QUARK), weights=("nvfp4",), targets=ROCM,
               runs_as="NVFP4 weights dequantized on the fly, BF16/FP16 math"),
    # MXFP4: family-100 backend, Marlin elsewhere (not on Turing: needs BF16 activations)
    Capability(N, "MXFP4 W4A4 on the sm_100 family: tcgen05 block-scaled MMA (sm_100 family)",
               c.join(c.LLMCOMPRESSOR_SCHEMES, c.CUTLASS_BLACKWELL), weights=("mxfp4",),
               activations=("mxfp4",), targets=CUDA, when=c.TCGEN05),
    Capability(W, "MXFP4 on sm_120 falls back to Marlin: vLLM's backend check matches only device family "
               "100 (is_device_capability_family(100) is False on sm_120)",
               c.join(c.VLLM_MXFP4_SM120, c.VLLM_FAMILY_100), weights=("mxfp4",), targets=CUDA,
               when=c.SM120_BLOCK_SCALE, runs_as=FP4_MARLIN_RUNS_AS),
    Capability(W, "without FP4 tensor cores MXFP4 runs through Marlin (Mxfp4Config min capability "
               "80; Marlin MXFP4 requires BF16 activations, so not on Turing)",
               c.join(c.VLLM_MARLIN_KERNEL, c.VLLM_MARLIN_TURING), weights=("mxfp4",),
               activations=("mxfp4",), targets=CUDA, when=nv(min_cc=8.0), runs_as=FP4_MARLIN_RUNS_AS),
    Capability(N, "CDNA4 (gfx950) computes MXFP4 natively in its matrix cores", c.VLLM_QUARK,
               weights=("mxfp4",), activations=("mxfp4",), targets=ROCM,
               when=Requires(families=c.AMD, features_all=any_of("mxfp4"))),
    Capability(E, "MXFP4 on {device} is emulated (dequantized on the fly): native MXFP4 needs CDNA4 "
               "(MI350/MI355)", c.VLLM_QUARK, weights=("mxfp4",), targets=ROCM,
               runs_as="MXFP4 weights dequantized on the fly, BF16/FP16 math"),
    Capability(N, "MXFP8 on the sm_100 family: tcgen05 block-scaled MMA", c.LLMCOMPRESSOR_SCHEMES,
               weights=("mxfp8",), activations=("mxfp8",), targets=CUDA, when=c.TCGEN05),
    Capability(N, "CDNA4 (gfx950) computes MXFP8 natively", c.VLLM_QUARK, weights=("mxfp8",),
               activations=("mxfp8",), targets=ROCM,
               when=Requires(families=c.AMD, features_all=any_of("mxfp8"))),
)

WNA16 = (
    Capability(U, "vLLM's WNA16 kernels take 4- or 8-bit integer weights only (Marlin: uint4, uint4b8, "
               "uint8b128; Exllama: W4/W8; AWQ: 4-bit)", c.join(c.VLLM_MARLIN, c.VLLM_DOCS),
               weights=("int1", "int2", "int3", "int5", "int6"), activations=c.FLOAT_ACTS, targets=GPU),
    # MoE experts: fused Marlin MoE (no Machete/Exllama MoE)
    Capability(W, "MoE experts with {weights} weights run the fused Marlin MoE kernel (CC >= 7.5 in current "
               "vLLM; ExpertsInt8 needs 8.0)", c.join(c.VLLM_MARLIN, c.VLLM_MARLIN_TURING),
               weights=c.INT4_INT8, activations=c.HALF_ACTS, layers=c.MOE, targets=CUDA,
               when=nv(min_cc=7.5), runs_as=MARLIN_RUNS_AS),
    Capability(W, "below CC 7.5 there is no fused Marlin MoE; the docs list GPTQ \u2705 on Volta, so expert "
               "weights take the generic dequantizing WNA16 MoE path (judgement: the facts name no Volta MoE "
               "kernel)", c.join(c.VLLM_DOCS, c.VLLM_MARLIN), weights=c.INT4_INT8, activations=("fp16",),
               layers=c.MOE, targets=CUDA, symmetric=True, when=c.ON_NVIDIA,
               runs_as="{weights} expert weights dequantized, FP16 math"),
    # dense layers: Machete -> (AllSpark) -> Marlin -> Exllama
    Capability(W, "Machete (CUTLASS mixed-input, wgmma) upconverts {weights} weights in registers on "
               "Hopper; it requires compute capability 9.0 exactly",
               c.join(c.VLLM_MACHETE, c.VLLM_WNA16_ORDER),
               weights=c.INT4_INT8, activations=c.HALF_ACTS, layers=c.LINEAR, targets=CUDA,
               when=nv(min_cc=9.0, max_cc=9.0),
               runs_as="{weights} weights upconverted in registers by Machete, {activations} wgmma math"),
    Capability(W, "Marlin dequantizes {weights} weights in registers and runs FP16/BF16 tensor-core MMA "
               "(CC >= 7.5 in current vLLM, >= 8.0 in older releases and the v0.9.2 docs)",
               c.join(c.VLLM_MARLIN, c.VLLM_DOCS_LATEST, c.VLLM_DOCS, c.VLLM_INT4_DOC), weights=c.INT4_INT8,
               activations=c.HALF_ACTS, layers=c.LINEAR, targets=CUDA, group_sizes=(0, 32, 64, 128),
               when=nv(min_cc=7.5), runs_as=MARLIN_RUNS_AS),
    Capability(U, "zero-point (AWQ-style) {weights} weights need the AWQ/Marlin kernels: "
               "AWQConfig.get_min_capability() = 75 ('Minimum capability: 75. Current capability: 70.'); "
               "Exllama takes symmetric uint4b8/uint8b128 only",
               c.join(c.VLLM_AWQ, c.VLLM_AWQ_ERR, c.VLLM_DOCS),
               weights=c.INT4_INT8, activations=c.HALF_ACTS, targets=CUDA, symmetric=False, when=c.ON_NVIDIA),
    Capability(W, "GPTQ Exllama kernel (Volta and later; symmetric uint4b8/uint8b128, fp16 activations): "
               "weights dequantized for FP16 math; docs: GPTQ \u2705 on Volta, Marlin \u274c",
               c.join(c.VLLM_DOCS, c.VLLM_WNA16_ORDER), weights=c.INT4_INT8, activations=("fp16",),
               layers=c.LINEAR, targets=CUDA, symmetric=True, methods=c.FORMATS_ONLY, when=c.ON_NVIDIA,
               runs_as="{weights} weights dequantized by Exllama, FP16 math"),
    Capability(U, "AWQ checkpoints need compute capability >= 7.5: AWQConfig.get_min_capability() = 75 "
               "('Minimum capability: 75. Current capability: 70.'); docs: AWQ Volta \u274c",
               c.join(c.VLLM_AWQ, c.VLLM_AWQ_ERR, c.VLLM_DOCS), methods=("awq",), targets=CUDA,
               when=c.ON_NVIDIA),
    Capability(W, "GPTQ Exllama kernel (Volta and later; symmetric uint4b8/uint8b128, fp16 activations): "
               "weights dequantized for FP16 math; docs: GPTQ \u2705 on Volta, Marlin \u274c",
               c.join(c.VLLM_DOCS, c.VLLM_WNA16_ORDER), weights=c.INT4_INT8, activations=("fp16",),
               layers=c.LINEAR, targets=CUDA, symmetric=True, when=c.ON_NVIDIA,
               runs_as="{weights} weights dequantized by Exllama, FP16 math"),
    Capability(W, "GPTQ/AWQ on ROCm: vLLM's docs mark them \u274c on AMD but "
               "RocmPlatform.supported_quantization maps awq/gptq to non-Marlin kernels (Marlin/Machete are "
               "CUDA-only; AWQ once MI300X-only): docs and code disagree, judged by the code",
               c.join(c.VLLM_ROCM, c.VLLM_ROCM_AWQ, c.VLLM_DOCS),
               weights=c.INT4_INT8, activations=c.HALF_ACTS, targets=ROCM, when=c.COMPUTE_NATIVE,
               runs_as="{weights} weights dequantized in the kernel, {activations} math"),
)


PRIORS = {
    ACCELERATOR: RuntimePriors(
        bandwidth_eff=0.80, compute_eff=0.60, layer_overhead_s=5e-6, step_overhead_s=1.0e-3, memory_gib=1.5,
        prefill_chunk=8192,
        format_compute_eff={"gguf-*": 0.2},  # its GGUF kernels are slower than its main path
        source="CUDA graphs for decode; chunked prefill (max_num_batched_tokens 8192); context + graphs + sampler "
               "~1.5 GiB; GGUF runs through dp4a MMQ / dequantize + GEMM kernels (vLLM docs: GGUF support is highly "
               "experimental and under-optimized)"),
    "cpu": RuntimePriors(
        bandwidth_eff=0.5, compute_eff=0.6, layer_overhead_s=5e-5, step_overhead_s=2e-3, memory_gib=1.0,
        prefill_chunk=4096, gemv_eff={"quant": 0.13},
        source="vLLM CPU backend (oneDNN/IPEX); not measured here: a little below ggml's decode figures (ggml's CPU "
               "kernels are the most tuned for batch-1 decode; vLLM's CPU path targets batched serving)"),
}
"""Planning priors (quantmatch.sdk.priors)."""


class VLLMBackend(Backend):
    name = "vllm"
    description = "vLLM serving engine (CUTLASS/Marlin/Machete/FlashInfer kernels; ROCm; CPU)"
    targets = ("cuda", "rocm", "cpu")
    formats = ("compressed-tensors", "gguf", "bitsandbytes", "awq", "gptq")
    requires = ("vllm>=0.9",)
    install_hint = "pip install vllm  (Linux with a supported GPU)"
    source = c.VLLM_DOCS
    priors = PRIORS
    serves_unquantized = True
    capabilities = (
        *KV_CACHE,
        *BASELINE,
        *ON_CPU,
        *GGUF,
        *INT8_W8A8,
        *BITSANDBYTES,
        *W4A8_W4A4,
        *FP8_W8A8,
        *FP4,
        *WNA16,
        c.no_kernel("vLLM", "FP8/INT8 W8A8, WNA16 (GPTQ/AWQ/Marlin/Machete), NVFP4/MXFP4, GGUF, "
                    "bitsandbytes, FP8/NVFP4 KV cache", c.VLLM_DOCS),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(VLLMBackend)
