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
from quantmatch.sdk.capability import Capability, Dispute, Requires, any_of
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
FP8_ANY = (*c.FP8, "fp8-e5m2")  # KV-cache rows where vLLM treats every fp8 kind alike (is_quantized_kv_cache)


def nv(min_cc: float | None = None, max_cc: float | None = None) -> Requires:
    return Requires(families=c.NVIDIA, min_cc=min_cc, max_cc=max_cc)


MARLIN_RUNS_AS = "{weights} weights dequantized in registers by Marlin, {activations} tensor-core math"

# GPU gates read in the released wheels (vllm/_version.py __commit_id__): v0.34.0 @62d4bc3c, v0.28.0 @2cf0a691,
# v0.27.0 @4bdc8a78, v0.16.0 @89a77b10, v0.14.0 @b17039bc, v0.13.0 @72506c98, v0.12.0 @4fd9d6a8,
# v0.11.0 @f71952c1.
VQ = "vllm-project/vllm vllm/model_executor/layers/quantization"
VK = "vllm-project/vllm vllm/model_executor/kernels/linear"
V_FP8_MIN = (f"{VQ}/fp8.py @62d4bc3c (Fp8Config.get_min_capability() = 75; 75 from v0.14.0 @b17039bc, 80 in "
             "v0.13.0 @72506c98)")
V_FP8_MARLIN = (f"{VK}/scaled_mm/marlin.py @62d4bc3c ('FP8 Marlin requires compute capability 7.5 or higher'; "
                "_POSSIBLE_FP8_KERNELS[CUDA] ends in MarlinFP8ScaledMMLinearKernel)")
V_MARLIN_CC = (f"{VQ}/utils/marlin_utils.py @b17039bc (query_marlin_supported_quant_types: device_capability < 75 "
               "unsupported from v0.14.0; < 80 in v0.13.0 @72506c98)")
V_FP4_MARLIN_CC = (f"{VQ}/utils/marlin_utils_fp4.py @b17039bc (is_fp4_marlin_supported: has_device_capability(75) "
                   "from v0.14.0; 80 in v0.13.0 @72506c98)")
V_NVFP4_CT_OLD = (f"{VQ}/compressed_tensors/compressed_tensors.py @72506c98 (without cutlass_fp4_supported() a W4A4 "
                  "NVFP4 checkpoint runs CompressedTensorsW4A16Fp4)")
V_ROCM_FP8 = ("vllm-project/vllm vllm/platforms/rocm.py @62d4bc3c (supports_fp8: on_cdna() or on_rdna(); "
              "is_fp8_fnuz: 'gfx94' only) ; vllm-project/vllm vllm/platforms/rocm.py @72506c98 (v0.13.0 "
              "supports_fp8: 'gfx94', 'gfx95', 'gfx12')")
V_ROCM_FP8_KERNEL = (f"{VK}/scaled_mm/rocm.py @62d4bc3c (ROCmFP8ScaledMMLinearKernel: 'requires CDNA3+ "
                     "(gfx942/gfx950) or RDNA4 (gfx12x)')")
V_ROCM_INT8 = (f"{VK}/__init__.py @62d4bc3c (_POSSIBLE_INT8_KERNELS[ROCM] = Aiter, Triton int8 scaled_mm) ; "
               f"{VQ}/kernels/scaled_mm/__init__.py @72506c98 (ROCM: AiterScaledMMLinearKernel, "
               "TritonScaledMMLinearKernel)")
V_ROCM_NVFP4 = f"{VK}/__init__.py @62d4bc3c (_POSSIBLE_NVFP4_KERNELS[ROCM] = [EmulationNvFp4LinearKernel])"
V_ROCM_BNB = ("vllm-project/vllm vllm/platforms/rocm.py @4fd9d6a8 (v0.12.0: bitsandbytes added to "
              "supported_quantization only if not on_gfx9(), i.e. not gfx90a/gfx942/gfx950: 'warp size 64 "
              "limitation'; absent in v0.11.0 @f71952c1)")
V_BNB_GONE = (f"{VQ}/ @2cf0a691 (v0.28.0: no bitsandbytes.py, not in RocmPlatform.supported_quantization; "
              "v0.27.0 @4bdc8a78 still has it)")
V_AWQ_OLD = f"{VQ}/awq.py @72506c98 (AWQConfig.get_min_capability() = 75: its own awq_gemm kernel)"
RDNA4 = any_of("gfx1200", "gfx1201")
GFX9 = any_of("gfx90a", "gfx942", "gfx950")
V_GGUF_GONE = (f"{VQ}/__init__.py @dd10e03f (v0.25.0: QuantizationMethods has no 'gguf', no gguf.py; "
               "both present in v0.20.0 @b8160878 and absent through v0.34.0 @62d4bc3c)")
V_TRITON_W4A16 = (f"{VK}/mixed_precision/triton_w4a16.py @62d4bc3c (TRITON_W4A16_SUPPORTED_QUANT_TYPES: uint4b8, "
                  "'uint4  # asymmetric with explicit zeros'; get_min_capability() = 0; last in "
                  "_POSSIBLE_KERNELS[CUDA] but Humming) ; class present from v0.20.0 @b8160878, absent in v0.16.0")
V_CPU_DYN4 = (f"{VK}/mixed_precision/dynamic_4bit.py @62d4bc3c (Dynamic4bitLinearKernel: 'KleidiAI-accelerated "
              "w4a8int quantization scheme on Arm CPUs ... dynamically quantize the activations to int8 ... int8 x "
              "int8 -> int32 matmul'; class present from v0.11.0 @f71952c1, absent in v0.10.0)")
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
    Capability(W, "FP8 e5m2 KV cache (--kv-cache-dtype fp8_e5m2): stored in e5m2 and widened inside the FlashInfer, "
               "Triton or ROCm attention kernels (the FlashAttention backend refuses e5m2)",
               "vllm-project/vllm vllm/config/cache.py @62d4bc3c (CacheDType includes fp8_e5m2: 'CUDA 11.8+ supports "
               "fp8 (=fp8_e4m3) and fp8_e5m2') ; vllm-project/vllm vllm/v1/attention/backends/flashinfer.py, "
               "triton_attn.py, rocm_attn.py @62d4bc3c (supported_kv_cache_dtypes include fp8_e5m2) ; "
               "vllm-project/vllm vllm/v1/attention/backends/fa_utils.py @62d4bc3c (fp8_e5m2: not supported)",
               weights=("fp8-e5m2",), layers=c.KV, targets=GPU, when=c.ON_GPU,
               runs_as="FP8 e5m2 KV cache widened to FP16/BF16 inside the attention kernel"),
    Capability(W, "FP8 KV cache without FP8 tensor cores: the cache is stored in FP8 (half the "
               "memory) and upconverted to FP16/BF16 inside the attention kernel",
               c.join(c.VLLM_DOCS_LATEST, c.VLLM_MI250_FP8), weights=FP8, layers=c.KV, targets=GPU,
               when=c.ON_GPU, runs_as="FP8 KV cache upconverted to FP16/BF16 for the attention math"),
)

# Intel GPUs (xpu), read in the v0.34.0 wheel @62d4bc3c (kernel lists in vllm/model_executor/kernels/linear)
XPU = ("xpu",)
XMX_INT8 = Requires(features_all=any_of("xmx", "int8"))
V_XPU_PLATFORM = ("vllm-project/vllm vllm/platforms/xpu.py @62d4bc3c (XPUPlatform.supported_quantization: awq, gptq, "
                  "moe_wna16, auto_awq, auto_gptq, inc, fp8, mxfp4, mxfp8, modelopt, compressed-tensors ...: no gguf, "
                  "no bitsandbytes; Platform.verify_quantization raises for others; the list first appears in v0.27.0 "
                  "@4bdc8a78, v0.26.0 has none)")
V_XPU_KERNELS = (f"{VK}/__init__.py @62d4bc3c (_POSSIBLE_FP8_KERNELS[XPU] = XPUW8A16FP8LinearKernel first, then "
                 "XPUW8A8FP8LinearKernel; _POSSIBLE_INT8_KERNELS[XPU] = [TritonInt8ScaledMMLinearKernel]; mixed "
                 "precision XPU = XPUW4A8IntLinearKernel, XPUwNa16LinearKernel; MXFP4 XPU = XPUMxFp4LinearKernel; "
                 "MXFP8 XPU = XPUMxFp8LinearKernel)")
V_XPU_FP8 = (f"{VK}/scaled_mm/xpu.py @62d4bc3c (XPUW8A16FP8LinearKernel.can_implement checks only the FP8 weight "
             "scales (per-tensor/per-channel); apply_weights: torch.ops._xpu_C.fp8_gemm_w8a16(x, weight, ...))")
V_XPU_WNA16 = (f"{VK}/mixed_precision/xpu.py @62d4bc3c (XPUW4A8IntLinearKernel: symmetric scalar_types.int4 weights, "
               "group size a multiple of 32 or per-channel, activations dynamically quantized per token to int8, "
               "oneDNN int4_gemm_w4a8 - absent in v0.16.0 @89a77b10, present in v0.20.0 @b8160878; "
               "XPUwNa16LinearKernel: uint4/uint4b8 weights, BF16/FP16 activations, int4_gemm_w4a16)")
V_XPU_INT8 = f"{VK}/scaled_mm/triton.py @62d4bc3c (TritonInt8ScaledMMLinearKernel.is_supported: CUDA-alike or XPU)"
V_XPU_MX = (f"{VK}/mxfp4/xpu.py, {VK}/mxfp8/xpu.py @62d4bc3c (XPUMxFp4: activations quantized to MXFP4 (quant_mxfp4) "
            "then torch.ops._xpu_C.fp4_gemm; XPUMxFp8: torch.ops._xpu_C.fp8_gemm)")
XMX_TYPES = ("intel/llvm sycl/doc/extensions/experimental/sycl_ext_matrix/sycl_ext_oneapi_matrix.asciidoc @0102582a "
             "(Intel XMX supported combinations: s8/u8, fp16, bf16 on DG2 and PVC, tf32 on PVC; no FP8 or FP4 type)")

ON_XPU = (
    Capability(W, "FP8 checkpoints on XPU: vLLM's XPU FP8 kernel list puts XPUW8A16FP8LinearKernel first and it "
               "accepts any per-tensor/per-channel FP8 checkpoint, so the FP8 weights are dequantized for 16-bit XMX "
               "math and activations stay 16-bit ({device} has no FP8 matrix type either)",
               c.join(V_XPU_KERNELS, V_XPU_FP8, XMX_TYPES), weights=FP8, layers=c.LINEAR, targets=XPU,
               runs_as="FP8 weights dequantized in fp8_gemm_w8a16, BF16/FP16 XMX math (W8A16)"),
    Capability(N, "INT8 W8A8 on XPU runs TritonInt8ScaledMMLinearKernel (the only XPU int8 kernel): Triton's int8 "
               "tl.dot on the XMX int8 path of {device} (Intel's Triton backend lowering to DPAS: judgement)",
               c.join(V_XPU_KERNELS, V_XPU_INT8, XMX_TYPES), weights=INT8, activations=INT8, methods=CT,
               layers=c.LINEAR, targets=XPU, when=XMX_INT8),
    Capability(N, "W4A8 on XPU: XPUW4A8IntLinearKernel quantizes activations per token to int8 and runs oneDNN "
               "int4_gemm_w4a8 (int4 weights unpacked to int8) on the XMX int8 path of {device}",
               c.join(V_XPU_KERNELS, V_XPU_WNA16, XMX_TYPES), weights=("int4",), activations=INT8, layers=c.LINEAR,
               targets=XPU, symmetric=True, group_sizes=(0, 32, 64, 128, 256), when=XMX_INT8, since="0.20.0",
               runs_as="int4 weights unpacked to int8, per-token int8 activations, int8 XMX math"),
    Capability(W, "GPTQ/AWQ-style {weights} weights on XPU run XPUwNa16LinearKernel (oneDNN int4_gemm_w4a16): weights "
               "dequantized for {activations} XMX math", c.join(V_XPU_KERNELS, V_XPU_WNA16), weights=("int4",),
               activations=c.HALF_ACTS, layers=c.LINEAR, targets=XPU, when=c.COMPUTE_NATIVE,
               runs_as="int4 weights dequantized in int4_gemm_w4a16, {activations} XMX math"),
    Capability(E, "MXFP4/MXFP8 W*A* on XPU: vLLM quantizes the activations to the MX format and calls oneDNN "
               "fp4_gemm/fp8_gemm, but {device} has no FP4/FP8 matrix type: the MX operands are expanded for 16-bit "
               "math (fake-quantized activations)", c.join(V_XPU_KERNELS, V_XPU_MX, XMX_TYPES),
               weights=("mxfp4", "mxfp8"), activations=("mxfp4", "mxfp8"), layers=c.LINEAR, targets=XPU,
               runs_as="activations quantized to MX and expanded again, 16-bit XMX math"),
    Capability(U, "{weights} checkpoints are refused on XPU: the format is not in XPUPlatform.supported_quantization "
               "(gguf and bitsandbytes are CUDA/ROCm/CPU-only in vLLM)", V_XPU_PLATFORM,
               weights=("gguf-*", "nf4", "fp4"), layers=c.ALL_LAYERS, targets=XPU, since="0.27.0"),
    Capability(U, "bitsandbytes checkpoints are refused on XPU (not in XPUPlatform.supported_quantization)",
               V_XPU_PLATFORM, methods=BNB, layers=c.ALL_LAYERS, targets=XPU, since="0.27.0"),
)

BASELINE = (
    Capability(N, "vLLM serves unquantized {weights} checkpoints on native {weights} units",
               c.VLLM_DOCS, weights=("fp32", "fp16", "bf16"), when=c.COMPUTE_NATIVE),
)

# CPU backend build gates (csrc/cpu/torch_bindings.cpp registers each op family only under these ISA macros)
VLLM_CPU_OPS = ("vllm-project/vllm csrc/cpu/torch_bindings.cpp @0094c260 (oneDNN W8A8 ops under __AVX512F__ || "
                "__AVX2__ || (__aarch64__ && !__APPLE__) || __powerpc64__ || __riscv_v || __s390x__; cpu_gemm_wna16 "
                "under __AVX512F__ || __riscv_v || __s390x__ || __powerpc__)")
# CPU facts that changed between releases, read in the released wheels like the GPU gates above
VLLM_CPU_KV_NEW = ("vllm-project/vllm vllm/v1/attention/backends/cpu_attn.py @62d4bc3c (v0.34.0: "
                   "supports_kv_cache_dtype 'fp8*' only if torch.cpu._is_amx_tile_supported() or "
                   "torch.cpu._is_avx512_supported() (torch: the avx512_f capability); "
                   "_get_attn_isa: 'FP8 KV cache on CPU requires x86 with AVX-512 or AMX'; same in v0.25.0 "
                   "@dd10e03f) ; https://github.com/vllm-project/vllm/pull/39445")
VLLM_CPU_KV_AUTO = ("vllm-project/vllm vllm/platforms/cpu.py @4fd9d6a8 (v0.12.0 to v0.20.0 @b8160878: 'CPU backend "
                    "doesn't support KV cache quantization fallback to auto')")
VLLM_CPU_KV_OLD = ("vllm-project/vllm vllm/platforms/cpu.py @f71952c1 (v0.11.0, and @0031bf29: 'CPU backend doesn't "
                   "support fp8_e4m3 KV cache type, cast to fp8_e5m2')")
VLLM_CPU_WNA16 = ("vllm-project/vllm vllm/model_executor/layers/quantization/kernels/mixed_precision/cpu.py @b17039bc "
                  "(v0.14.0: CPUWNA16LinearKernel, no ISA check in can_implement; kernels/linear/mixed_precision/"
                  "cpu.py @62d4bc3c in v0.34.0)")
VLLM_CPU_IPEX = ("vllm-project/vllm vllm/model_executor/layers/quantization/ipex_quant.py @72506c98 (v0.13.0: "
                 "IPEXConfig, 'IPEX quantization supports [awq, gptq]', weight bits [4])")
FP8_KV_ISA = Requires(features_any=any_of("amx_tile", "avx512f"))
VLLM_CPU_FP8_TORCH = ("vllm-project/vllm vllm/model_executor/layers/quantization/kernels/scaled_mm/pytorch.py "
                      "@f1764434 (v0.15.0: TorchFP8ScaledMMLinearKernel.is_supported 'requires ROCm, CUDA or CPU'; "
                      "_POSSIBLE_FP8_KERNELS[CPU] = PerTensorTorch, ChannelWiseTorch; the same fallbacks in v0.34.0 "
                      "@62d4bc3c) ; pytorch/pytorch aten/src/ATen/native/Blas.cpp @017943b7 (_scaled_mm_out_cpu: "
                      "oneDNN only with cpuinfo_has_x86_amx_int8(), else _scaled_mm_out_cpu_emulated in fp32)")
VLLM_CPU_FP8_AMX = ("vllm-project/vllm vllm/model_executor/kernels/linear/scaled_mm/cpu.py @62d4bc3c (v0.34.0: "
                    "CPUFP8W8A8ScaledMMLinearKernel needs _is_amx_tile_supported() and cpu_has_amx_fp8() 'native "
                    "AMX-FP8 hardware (Diamond Rapids)'; CPUFp8PerTensor/ChannelWiseScaledMMLinearKernel need AMX "
                    "tiles: 'activations stay BF16/FP32 - no FP8 activation quantization'; neither in v0.30.0 "
                    "@ced6857a)")
APPLE = any_of("apple-metal")

ON_CPU = (
    Capability(U, "vLLM's oneDNN INT8 W8A8 ops are not compiled into macOS (Apple silicon) CPU builds: "
               "torch_bindings.cpp registers them for x86 AVX2/AVX-512, non-Apple aarch64, POWER, RISC-V V and s390x",
               VLLM_CPU_OPS, weights=INT8, activations=INT8, methods=CT, targets=CPU,
               when=Requires(families=APPLE)),
    Capability(N, "vLLM's CPU backend runs INT8 W8A8 as oneDNN int8 GEMM on the CPU's integer dot units "
               "(VNNI/AMX on x86, dotprod/i8mm on Arm); docs: INT8 W8A8 x86 CPU \u2705",
               c.join(c.VLLM_DOCS, c.VLLM_INT8_DOC, VLLM_CPU_OPS), weights=INT8, activations=INT8, methods=CT,
               targets=CPU, when=c.INT8_UNIT),
    # FP8 W8A8: torch._scaled_mm fallbacks from v0.15.0, AMX kernels (v0.34.0; not in v0.30.0)
    Capability(N, "FP8 W8A8 on an AMX-FP8 CPU: CPUFP8W8A8ScaledMMLinearKernel quantizes activations to FP8 per "
               "token and multiplies on AMX-FP8 tiles", VLLM_CPU_FP8_AMX, weights=FP8, activations=FP8, targets=CPU,
               when=Requires(features_all=any_of("amx_tile", "amx_fp8")), since="0.34.0"),
    Capability(W, "FP8 W8A8 checkpoints on an AMX CPU without AMX-FP8 (per-channel weight scales, or static "
               "per-tensor activation scales): CPUFp8ChannelWise/PerTensorScaledMMLinearKernel run fp8_scaled_mm_cpu "
               "as W8A16, the activations are not quantized", VLLM_CPU_FP8_AMX, weights=FP8, activations=FP8,
               targets=CPU, when=Requires(features_all=any_of("amx_tile")), since="0.34.0",
               runs_as="FP8 weights expanded to BF16 inside the AMX BRGEMM, BF16 activations (W8A16)"),
    Capability(E, "FP8 W8A8 on {device}: vLLM's CPU fallback quantizes activations to FP8 and calls torch._scaled_mm, "
               "which on a CPU upcasts both operands to fp32 (or hands them to oneDNN on AMX-INT8 CPUs): no FP8 "
               "arithmetic, the FP8 rounding is applied and undone (fake-quantized)", VLLM_CPU_FP8_TORCH,
               weights=FP8, activations=FP8, targets=CPU, since="0.15.0",
               runs_as="fake-quantized: activations rounded to FP8, both operands upcast for an fp32 matmul"),
    Capability(U, "vLLM has no CPU kernel for {weights} weights with {activations} activations (docs v0.9.2: FP8 "
               "W8A8 x86 CPU \u274c; the CPU list of FP8 weight-only W8A16 kernels is empty through v0.34.0)",
               c.join(c.VLLM_DOCS, VLLM_CPU_FP8_AMX), weights=FP8, targets=CPU),
    # AWQ/GPTQ 4-bit: CPUWNA16LinearKernel (cpu_gemm_wna16) from v0.14.0, IPEX before
    Capability(W, "AWQ/GPTQ 4-bit on CPU: CPUWNA16LinearKernel dequantizes uint4/uint4b8 weights for a "
               "{activations} GEMM in cpu_gemm_wna16 (AMX micro-kernels for bf16 activations where the CPU has AMX "
               "tiles, AVX-512 vector ones otherwise)", c.join(VLLM_CPU_WNA16, VLLM_CPU_OPS, c.VLLM_DOCS),
               weights=("int4",), activations=c.FLOAT_ACTS, targets=CPU,
               when=Requires(features_all=any_of("avx512f")), since="0.14.0",
               runs_as="INT4 weights dequantized to {activations} on the CPU cores (W4A16)"),
    Capability(U, "vLLM's CPU WNA16 kernel (cpu_gemm_wna16, the only CPU kernel for AWQ/GPTQ 4-bit with 16-bit "
               "activations since v0.14.0) is compiled only into AVX-512 x86 (and RISC-V V, s390x, POWER) builds and "
               "can_implement does not check the ISA: {device} has no AVX-512, so the op is missing",
               c.join(VLLM_CPU_OPS, VLLM_CPU_WNA16), weights=("int4",), activations=c.FLOAT_ACTS, targets=CPU,
               since="0.14.0",
               disputed=Dispute(W, "vLLM's docs mark AWQ and GPTQ \u2705 on x86 CPU without an ISA condition",
                                c.VLLM_DOCS)),
    Capability(W, "AWQ/GPTQ 4-bit on CPU through IPEX (IPEXConfig, 4-bit only; docs: x86 CPU AWQ \u2705, GPTQ "
               "\u2705): weights dequantized for a {activations} GEMM", c.join(VLLM_CPU_IPEX, c.VLLM_DOCS),
               weights=("int4",), activations=c.FLOAT_ACTS, targets=CPU, until="0.14.0",
               runs_as="INT4 weights dequantized to {activations} on the CPU cores (W4A16)"),
    # FP8 KV cache: stored as e5m2 (<= 0.11), silently dropped (0.12 - 0.20), AVX-512/AMX attention (>= 0.25)
    Capability(W, "FP8 KV cache on the CPU backend (x86 with AVX-512 or AMX): CPU_ATTN stores the cache in FP8 and "
               "converts it inside its AVX-512/AMX attention kernels", VLLM_CPU_KV_NEW, weights=FP8_ANY, layers=c.KV,
               targets=CPU, when=FP8_KV_ISA, since="0.25.0",
               runs_as="FP8 KV cache converted to BF16/FP32 inside the attention kernel"),
    Capability(U, "vLLM refuses an FP8 KV cache on {device}: the CPU attention backend supports it only on x86 "
               "with AVX-512 or AMX ('--kv-cache-dtype ... is not supported by the CPU attention backend on this "
               "host')", VLLM_CPU_KV_NEW, weights=FP8_ANY, layers=c.KV, targets=CPU, since="0.25.0"),
    Capability(U, "vLLM's CPU backend ignores an FP8 KV cache request ('CPU backend doesn't support KV cache "
               "quantization fallback to auto'): the cache stays 16-bit (v0.12.0 to at least v0.20.0; v0.21-v0.24 "
               "not checked)", VLLM_CPU_KV_AUTO, weights=FP8_ANY, layers=c.KV, targets=CPU, since="0.12.0",
               until="0.25.0"),
    Capability(W, "FP8 KV cache on the CPU backend (before v0.12.0): stored in 8 bits, fp8_e4m3 requests cast to "
               "fp8_e5m2, converted for the SDPA attention math", VLLM_CPU_KV_OLD, weights=FP8_ANY, layers=c.KV,
               targets=CPU, until="0.12.0", runs_as="FP8 (e5m2) KV cache converted to BF16/FP32 for attention"),
    Capability(N, "W4A8 (int4 weights, dynamic per-token int8 activations) on an Arm CPU: Dynamic4bitLinearKernel "
               "calls torch's _dyn_quant_matmul_4bit, whose KleidiAI micro-kernels quantize the activations to int8 "
               "and run int8 x int8 -> int32 dot products", V_CPU_DYN4, weights=("int4",), activations=INT8,
               targets=CPU, when=Requires(features_all=any_of("dotprod")), since="0.11.0",
               runs_as="int4 weights unpacked to int8, per-token int8 activations, KleidiAI int8 dot products"),
    Capability(E, "W4A8 on {device}: Dynamic4bitLinearKernel calls torch's _dyn_quant_matmul_4bit, which has "
               "KleidiAI kernels only for Arm; elsewhere torch runs its reference implementation (scalar loops)",
               V_CPU_DYN4, weights=("int4",), activations=INT8, targets=CPU, since="0.11.0",
               runs_as="int4 x int8 in torch's scalar reference kernel"),
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
    Capability(U, "vLLM no longer has a GGUF quantization method: 'gguf' is not in QuantizationMethods and "
               "quantization/gguf.py is gone from v0.25.0 on (present in v0.20.0; v0.21-v0.24 not checked)",
               V_GGUF_GONE, weights=("gguf-*",), layers=c.ALL_LAYERS, since="0.25.0"),
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
               methods=CT, targets=ROCM,
               disputed=Dispute(N, "vLLM's code registers Aiter and Triton int8 scaled_mm kernels for ROCm "
                                "(compressed-tensors W8A8 int8 minimum capability 75 passes on CDNA/RDNA), so an "
                                "INT8 W8A8 checkpoint is not refused by the code and runs int8 GEMMs on the "
                                "matrix cores", V_ROCM_INT8)),
    Capability(N, "INT8 W8A8 runs CUTLASS scaled_mm on int8 tensor cores (compute capability >= 7.5: "
               "Turing, Ampere, Ada, Hopper, Blackwell)", c.join(c.VLLM_DOCS, c.VLLM_INT8_DOC),
               weights=INT8, activations=INT8, methods=CT, targets=CUDA, when=nv(min_cc=7.5)),
    Capability(U, "INT8 W8A8 needs int8 tensor cores (compute capability >= 7.5); docs: Volta \u274c",
               c.join(c.VLLM_DOCS, c.VLLM_INT8_DOC), weights=INT8, activations=INT8, methods=CT,
               targets=CUDA),
)

BITSANDBYTES = (
    Capability(U, "vLLM removed its bitsandbytes quantization method in v0.28.0", V_BNB_GONE, methods=BNB,
               weights=INT8, activations=INT8, targets=GPU, layers=c.ALL_LAYERS, since="0.28.0"),
    Capability(U, "vLLM removed its bitsandbytes quantization method (the only one storing {weights}) in "
               "v0.28.0", V_BNB_GONE, weights=("nf4", "fp4"), targets=GPU, layers=c.ALL_LAYERS, since="0.28.0"),
    Capability(N, "bitsandbytes 8-bit: LLM.int8() int8 matmul on integer tensor cores (fp16 outlier "
               "columns), CUDA CC >= 7.5", c.join(c.VLLM_DOCS, c.BNB_INSTALL, c.BNB_FUNCTIONAL),
               weights=INT8, activations=INT8, methods=BNB, targets=CUDA, when=nv(min_cc=7.5), until="0.28.0"),
    Capability(U, "bitsandbytes LLM.int8() needs CUDA CC >= 7.5", c.join(c.BNB_INSTALL, c.VLLM_DOCS),
               weights=INT8, activations=INT8, methods=BNB, targets=CUDA, until="0.28.0"),
    Capability(W, "bitsandbytes 4-bit: NF4/FP4 weights dequantized to {activations} for the GEMM",
               c.join(c.VLLM_DOCS, c.BNB_INSTALL), weights=("nf4", "fp4"), activations=c.FLOAT_ACTS,
               targets=CUDA, when=Requires(families=c.NVIDIA, compute_native=True), until="0.28.0",
               runs_as="{weights} dequantized to {activations}, {activations} GEMM"),
    Capability(U, "vLLM's RocmPlatform leaves bitsandbytes out on gfx9 ({arch}: wave64, 'warp size 64 "
               "limitation')", V_ROCM_BNB, weights=("nf4", "fp4"), targets=ROCM, layers=c.ALL_LAYERS,
               when=Requires(families=c.AMD, archs=GFX9), since="0.12.0", until="0.28.0"),
    Capability(U, "vLLM's RocmPlatform leaves bitsandbytes out on gfx9 ({arch}: wave64, 'warp size 64 "
               "limitation')", V_ROCM_BNB, methods=BNB, weights=INT8, activations=INT8, targets=ROCM,
               layers=c.ALL_LAYERS,
               when=Requires(families=c.AMD, archs=GFX9), since="0.12.0", until="0.28.0"),
    Capability(W, "bitsandbytes on ROCm off gfx9 (RDNA): vLLM's docs mark it \u274c but "
               "RocmPlatform.supported_quantization adds it when not on_gfx9() (docs and code disagree; judged "
               "by the code): NF4/FP4 dequantized", c.join(V_ROCM_BNB, c.VLLM_DOCS, c.BNB_INSTALL),
               weights=("nf4", "fp4"), activations=c.FLOAT_ACTS, targets=ROCM, when=c.COMPUTE_NATIVE,
               since="0.12.0", until="0.28.0",
               runs_as="{weights} dequantized to {activations}, {activations} GEMM"),
    Capability(U, "bitsandbytes is not in vLLM's RocmPlatform.supported_quantization before v0.12.0",
               V_ROCM_BNB, weights=("nf4", "fp4"), targets=ROCM, layers=c.ALL_LAYERS, until="0.12.0"),
    Capability(U, "bitsandbytes is not in vLLM's RocmPlatform.supported_quantization before v0.12.0",
               V_ROCM_BNB, methods=BNB, weights=INT8, activations=INT8, targets=ROCM,
               layers=c.ALL_LAYERS, until="0.12.0"),
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
               when=Requires(families=c.AMD, features_all=any_of("fp8-e4m3fn"), not_archs=RDNA4)),
    Capability(W, "FP8 W8A8 compute needs FP8 tensor cores (compute capability >= 8.9); vLLM falls back to "
               "FP8 weight-only through Marlin (FP8 Marlin: compute capability >= 7.5 since v0.14)",
               c.join(V_FP8_MARLIN, V_FP8_MIN, c.VLLM_FP8_MARLIN_PR), weights=FP8, activations=FP8,
               layers=c.LINEAR, targets=CUDA, when=nv(min_cc=7.5), since="0.14.0", runs_as=FP8_MARLIN_RUNS_AS),
    Capability(W, "FP8 W8A8 compute needs FP8 tensor cores (compute capability >= 8.9); vLLM falls back to "
               "FP8 weight-only through Marlin on sm_80/86 (use_marlin = not has_device_capability(89))",
               c.join(c.VLLM_FP8, c.VLLM_FP8_DOC, c.VLLM_FP8_MARLIN_PR), weights=FP8, activations=FP8,
               layers=c.LINEAR, targets=CUDA, when=nv(min_cc=8.0), until="0.14.0", runs_as=FP8_MARLIN_RUNS_AS),
    Capability(W, "FP8 MoE below sm_89: the Triton fused-MoE kernel fails ('fp8e4nv not supported'); the "
               "Marlin MoE backend (--moe-backend marlin) runs it weight-only (FP8 compute needs compute "
               "capability >= 8.9)", c.join(c.VLLM_FP8_MOE_A100, c.VLLM_FP8), weights=FP8, activations=FP8,
               layers=c.MOE, targets=CUDA, when=nv(min_cc=7.5), since="0.14.0",
               runs_as="FP8 expert weights dequantized by Marlin MoE, BF16/FP16 tensor-core math (W8A16)"),
    Capability(W, "FP8 MoE below sm_89: the Triton fused-MoE kernel fails ('fp8e4nv not supported'); the "
               "Marlin MoE backend runs it weight-only (Marlin needs compute capability >= 8.0 before v0.14)",
               c.join(c.VLLM_FP8_MOE_A100, c.VLLM_FP8, V_MARLIN_CC), weights=FP8, activations=FP8,
               layers=c.MOE, targets=CUDA, when=nv(min_cc=8.0), until="0.14.0",
               runs_as="FP8 expert weights dequantized by Marlin MoE, BF16/FP16 tensor-core math (W8A16)"),
    Capability(U, "Fp8Config.get_min_capability() = 75: vLLM refuses FP8 checkpoints below Turing (FP8 "
               "compute itself needs compute capability >= 8.9)", c.join(V_FP8_MIN, V_FP8_MARLIN),
               weights=FP8, activations=FP8, targets=CUDA, since="0.14.0"),
    Capability(U, "Fp8Config.get_min_capability() = 80: vLLM refuses FP8 checkpoints below Ampere (docs: "
               "Turing \u274c; FP8 compute itself needs compute capability >= 8.9)",
               c.join(c.VLLM_FP8, c.VLLM_DOCS, V_FP8_MIN), weights=FP8, activations=FP8, targets=CUDA,
               until="0.14.0"),
    Capability(W, "MI200 (gfx90a) has no FP8 matrix cores; vLLM's supports_fp8() accepts FP8 checkpoints "
               "there through an upcast path", c.join(c.VLLM_MI250_FP8, c.ROCM_PRECISION), weights=FP8,
               activations=FP8, targets=ROCM, when=Requires(families=c.AMD, archs=any_of("gfx90a")),
               disputed=Dispute(U, "in v0.34.0 no ROCm FP8 ScaledMM kernel accepts gfx90a (Aiter needs CDNA3+, "
                                "ROCmFP8ScaledMM 'requires CDNA3+ (gfx942/gfx950) or RDNA4 (gfx12x)', the torch "
                                "kernels need gfx942/gfx950/gfx12x/gfx1250), so kernel selection fails",
                                f"{VK}/scaled_mm/rocm.py @62d4bc3c ; vllm-project/vllm "
                                "vllm/_aiter_ops.py @62d4bc3c (is_aiter_found_and_supported: get_cdna_version() > 2)"),
               runs_as="FP8 weights upcast to BF16/FP16, MFMA BF16/FP16 math (W8A16)"),
    Capability(N, "RDNA4 ({arch}): RocmPlatform.supports_fp8() includes gfx12 and fp8_dtype() is OCP "
               "e4m3fn there (is_fp8_fnuz() is gfx94 only); FP8 GEMMs on the FP8 WMMA units",
               c.join(V_ROCM_FP8, V_ROCM_FP8_KERNEL), weights=FP8, activations=FP8, targets=ROCM,
               when=Requires(families=c.AMD, archs=RDNA4)),
    Capability(U, "{device} has no FP8 matrix cores and vLLM's ROCm FP8 paths target gfx942/gfx950 (plus "
               "the gfx90a upcast path)", c.join(c.ROCM_PRECISION, c.VLLM_FP8), weights=FP8,
               activations=FP8, targets=ROCM),
    Capability(W, "FP8 weight-only (W8A16) checkpoints run through FP8 Marlin (CC >= 7.5 since v0.14)",
               c.join(V_FP8_MARLIN, c.VLLM_FP8_DOC), weights=FP8, activations=c.HALF_ACTS, targets=CUDA,
               when=nv(min_cc=7.5), since="0.14.0", runs_as=FP8_MARLIN_RUNS_AS),
    Capability(W, "FP8 weight-only (W8A16) checkpoints run through FP8 Marlin (CC >= 8.0 before v0.14)",
               c.join(c.VLLM_FP8_DOC, c.VLLM_MARLIN, V_MARLIN_CC), weights=FP8,
               activations=c.HALF_ACTS, targets=CUDA, when=nv(min_cc=8.0), until="0.14.0",
               runs_as=FP8_MARLIN_RUNS_AS),
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
               "7.5 since v0.14)", c.join(V_FP4_MARLIN_CC, c.VLLM_MARLIN_TURING), weights=("nvfp4",),
               activations=c.HALF_ACTS, targets=CUDA, when=nv(min_cc=7.5), since="0.14.0",
               runs_as=FP4_MARLIN_RUNS_AS),
    Capability(W, "NVFP4 weight-only (W4A16) checkpoints run through Marlin FP4 (CC >= 8.0 before v0.14)",
               c.join(V_FP4_MARLIN_CC, c.VLLM_MARLIN), weights=("nvfp4",), activations=c.HALF_ACTS,
               targets=CUDA, when=nv(min_cc=8.0), until="0.14.0", runs_as=FP4_MARLIN_RUNS_AS),
    Capability(W, "MXFP4 weight-only checkpoints run through Marlin (BF16 activations only, so CC >= 8.0)",
               c.join(c.VLLM_MARLIN_KERNEL, c.VLLM_MARLIN_TURING), weights=("mxfp4",), activations=("bf16",),
               targets=CUDA, when=nv(min_cc=8.0), runs_as=FP4_MARLIN_RUNS_AS),
    Capability(W, "without FP4 tensor cores vLLM runs NVFP4 checkpoints through Marlin W4A16 "
               "(newer builds can instead convert to FP8 compute on Hopper)",
               c.join(c.VLLM_NVFP4, c.VLLM_MARLIN, c.NO_FP4_HOPPER, V_FP4_MARLIN_CC), weights=("nvfp4",),
               targets=CUDA, when=nv(min_cc=7.5), since="0.14.0", runs_as=FP4_MARLIN_RUNS_AS),
    Capability(W, "without FP4 tensor cores vLLM runs NVFP4 checkpoints as W4A16 through Marlin FP4 (CC >= "
               "8.0 before v0.14)", c.join(V_NVFP4_CT_OLD, V_FP4_MARLIN_CC), weights=("nvfp4",), targets=CUDA,
               when=nv(min_cc=8.0), until="0.14.0", runs_as=FP4_MARLIN_RUNS_AS),
    Capability(U, "the NVFP4 scheme's minimum capability is 75: vLLM refuses it on {device}",
               c.join(c.VLLM_NVFP4, V_FP4_MARLIN_CC), weights=("nvfp4",), targets=CUDA, since="0.14.0"),
    Capability(U, "before v0.14 vLLM's NVFP4 paths need compute capability 8.0 (Marlin FP4) or 10.0 (CUTLASS "
               "FP4): refused on {device}", c.join(V_NVFP4_CT_OLD, V_FP4_MARLIN_CC), weights=("nvfp4",),
               targets=CUDA, until="0.14.0"),
    Capability(E, "{device} has no NVFP4 matrix support: NVFP4 (petit_nvfp4 on ROCm) is dequantized on the "
               "fly and multiplied in BF16/FP16 (judged like MXFP4 on MI300/MI250)",
               c.join(V_ROCM_NVFP4, c.VLLM_ROCM, c.VLLM_QUARK), weights=("nvfp4",), targets=ROCM,
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
               when=nv(min_cc=7.5), since="0.14.0", runs_as=MARLIN_RUNS_AS),
    Capability(W, "MoE experts with {weights} weights run the fused Marlin MoE kernel (CC >= 8.0 before v0.14)",
               c.join(V_MARLIN_CC, c.VLLM_MARLIN), weights=c.INT4_INT8, activations=c.HALF_ACTS,
               layers=c.MOE, targets=CUDA, when=nv(min_cc=8.0), until="0.14.0", runs_as=MARLIN_RUNS_AS),
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
               "(CC >= 7.5 since v0.14, >= 8.0 in older releases and the v0.9.2 docs)",
               c.join(V_MARLIN_CC, c.VLLM_MARLIN, c.VLLM_DOCS_LATEST, c.VLLM_DOCS, c.VLLM_INT4_DOC),
               weights=c.INT4_INT8, activations=c.HALF_ACTS, layers=c.LINEAR, targets=CUDA,
               group_sizes=(0, 32, 64, 128), when=nv(min_cc=7.5), since="0.14.0", runs_as=MARLIN_RUNS_AS),
    Capability(W, "Marlin dequantizes {weights} weights in registers and runs FP16/BF16 tensor-core MMA "
               "(CC >= 8.0 before v0.14)", c.join(V_MARLIN_CC, c.VLLM_MARLIN, c.VLLM_DOCS), weights=c.INT4_INT8,
               activations=c.HALF_ACTS, layers=c.LINEAR, targets=CUDA, group_sizes=(0, 32, 64, 128),
               when=nv(min_cc=8.0), until="0.14.0", runs_as=MARLIN_RUNS_AS),
    Capability(W, "before v0.14 Marlin needs CC 8.0, but AWQConfig.get_min_capability() = 75 lets AWQ's own "
               "awq_gemm kernel run zero-point INT4 weights on {device} (dequantized for FP16 math)",
               c.join(V_AWQ_OLD, V_MARLIN_CC), weights=("int4",), activations=("fp16",), layers=c.LINEAR,
               targets=CUDA, symmetric=False, when=nv(min_cc=7.5), until="0.14.0",
               runs_as="INT4 weights dequantized by the AWQ GEMM kernel, FP16 math"),
    Capability(W, "zero-point INT4 GPTQ/compressed-tensors weights below compute capability 7.5: "
               "TritonW4A16LinearKernel (get_min_capability() = 0; uint4 with explicit zeros, groups -1/32/64/128/"
               "256) dequantizes them for {activations} math", V_TRITON_W4A16, weights=("int4",),
               activations=c.HALF_ACTS, layers=c.LINEAR, targets=CUDA, symmetric=False,
               methods=("gptq", "rtn"), when=c.ON_NVIDIA, since="0.20.0",
               runs_as="INT4 weights dequantized by the Triton W4A16 kernel, {activations} math"),
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
        # its GGUF kernels are slower than its main path; int4 weight-only GEMMs (Marlin) dequantize in the
        # kernel and, once compute-bound, reach 0.60-0.74x of the fp16 GEMM (Marlin bench.py at batch 256-4000,
        # vllm-project/vllm PR #2497, comment by resorcap 2024-01-24): 0.65
        format_compute_eff={"gguf-*": 0.2, "int4:fp16": 0.65, "int4:bf16": 0.65},
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
    targets = ("cuda", "rocm", "xpu", "cpu")
    formats = ("compressed-tensors", "gguf", "bitsandbytes", "awq", "gptq")
    requires = ("vllm>=0.9",)
    install_hint = "pip install vllm  (Linux with a supported GPU)"
    runtime = "vllm"
    latest_version = "0.34.0"
    source = c.VLLM_DOCS
    priors = PRIORS
    serves_unquantized = True
    capabilities = (
        *KV_CACHE,
        *BASELINE,
        *ON_XPU,
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
