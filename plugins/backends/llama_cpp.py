"""llama.cpp (ggml): GGUF models on CPU, CUDA, HIP/ROCm, Metal and Vulkan.

What executes differs per ggml backend: the CPU quantizes activations to Q8_0/Q8_K and uses integer
SIMD dot products, through the kernel ggml-cpu picks from the CPU's flags at load time (AMX tiles for the
qtype_has_amx_kernels types on AMX builds; repacked interleaved gemm/gemv per type on AVX2/AVX-512 or Arm
dotprod/i8mm; per-row vec_dot otherwise); F16 is native FP16 arithmetic only on Arm (x86 converts to F32) and
BF16 only with AVX512_BF16; CUDA and HIP run MMQ/MMVQ on
q8_1-quantized activations (int8 MMA on Turing+, dp4a on CC >= 6.1, MFMA/WMMA on AMD); Metal
dequantizes blocks to half and runs simdgroup_half8x8 MMA (weight-only); Vulkan has DP4A MMQ for
legacy quants where the device has integer dot products and dequant shaders otherwise.
"""

from __future__ import annotations

from quantmatch.plugins.backends import _common as c
from quantmatch.plugins.backends import _priors as p
from quantmatch.plugins.backends import llama_cpp_compat as compat
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability, Requires, any_of
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import ACCELERATOR, RuntimePriors
from quantmatch.sdk.verdict import Level

N, W, E, U = Level.NATIVE, Level.WEIGHT_ONLY, Level.EMULATED, Level.UNSUPPORTED
QUANT = c.GGUF_QUANT
KV_QUANT = ("q8_0", "q4_0")
METAL_RUNS_AS = "blocks dequantized to half in threadgroup memory, simdgroup_half8x8 MMA, float accumulate"
WIDENED = "{weights} converted to F32 for the math (F16C/NEON conversion), F32 FMA"

# ---- CPU run-time gates (ggml-cpu), read at the commits cited -----------------------------------------
LLAMA_0336 = ("https://pypi.org/project/llama-cpp-python/0.3.36/ (sdist vendor/llama.cpp: the same checks in "
              "ggml-cpu/repack.cpp, amx/common.h, vec.cpp and simd-mappings.h)")
LLAMA_REPACK = ("ggml-org/llama.cpp ggml/src/ggml-cpu/repack.cpp @00d3d1d8 (ggml_repack_get_optimal_repack_type) ; "
                + LLAMA_0336)
LLAMA_AMX_TYPES = ("ggml-org/llama.cpp ggml/src/ggml-cpu/amx/common.h @5c5f166e (qtype_has_amx_kernels) ; "
                   + LLAMA_0336)
LLAMA_SIMD_F16 = ("ggml-org/llama.cpp ggml/src/ggml-cpu/simd-mappings.h @037752ed (F16 NEON: vfmaq_f16 under "
                  "__ARM_FEATURE_FP16_VECTOR_ARITHMETIC; F16 AVX512/AVX: _mm512_cvtph_ps to F32, 'AVX512 has FP16 "
                  "extension (AVX512_FP16) but ... I use FP32 instead') ; " + LLAMA_0336)
LLAMA_VEC_BF16 = ("ggml-org/llama.cpp ggml/src/ggml-cpu/vec.cpp @00d46933 (ggml_vec_dot_bf16: _mm512_dpbf16_ps under "
                  "__AVX512BF16__, AVX512F/AVX2 widen to F32, no NEON/SVE branch: scalar GGML_BF16_TO_FP32 loop) ; "
                  + LLAMA_0336)
AMX_TYPES = ("gguf-q4_0", "gguf-q4_1", "gguf-q8_0", "gguf-q4_k*", "gguf-q5_k*", "gguf-q6_k", "gguf-iq4_xs")

KV_CACHE = (
    # on the CPU the cache's dot products go through the same F16/BF16 vec_dot kernels as F16/BF16 weights
    Capability(N, "F16 KV cache on an Arm CPU with FP16 vector arithmetic: the attention dots run vfmaq_f16",
               c.join(c.LLAMA_CPU, LLAMA_SIMD_F16),
               weights=("fp16",), layers=c.KV, targets=("cpu",), when=Requires(features_all=any_of("fp16", "asimd"))),
    Capability(W, "F16 KV cache on {device}: ggml-cpu converts F16 to F32 for the attention dots (AVX512_FP16 is "
               "not used)", c.join(c.LLAMA_CPU, LLAMA_SIMD_F16),
               weights=("fp16",), layers=c.KV, targets=("cpu",), runs_as="KV widened to F32 for the attention dots"),
    Capability(N, "BF16 KV cache on a CPU with AVX512_BF16: the attention dots run _mm512_dpbf16_ps",
               c.join(c.LLAMA_CPU, LLAMA_VEC_BF16), weights=("bf16",),
               layers=c.KV, targets=("cpu",), when=Requires(features_all=any_of("avx512_bf16"))),
    Capability(W, "BF16 KV cache on {device}: ggml_vec_dot_bf16 widens BF16 to F32 (SIMD on AVX2/AVX-512, a scalar "
               "loop on Arm)", c.join(c.LLAMA_CPU, LLAMA_VEC_BF16),
               weights=("bf16",), layers=c.KV, targets=("cpu",), runs_as="KV widened to F32 for the attention dots"),
    Capability(N, "the KV cache stays {weights}, computed natively on {target}",
               c.join(c.LLAMA_CPU, c.LLAMA_MMQ, c.LLAMA_METAL_DEVICE), weights=c.FLOAT_ACTS, layers=c.KV,
               when=c.COMPUTE_NATIVE),
    Capability(W, "{weights} KV cache on {device}: stored 16-bit, widened for the dot products (no native "
               "{weights} arithmetic)", c.LLAMA_CPU, weights=c.FLOAT_ACTS, layers=c.KV,
               runs_as="KV widened to F32 for the attention dots"),
    Capability(N, "{weights} KV cache on the CPU: the K.Q dot runs as an integer vec_dot against Q quantized "
               "to the cache's vec_dot_type (V is dequantized for accumulation); judged native because the "
               "score dot is integer math", c.LLAMA_CPU, weights=KV_QUANT, layers=c.KV, targets=("cpu",),
               when=c.INT8_UNIT),
    Capability(N, "{weights} KV cache on {target}: the flash-attention vector kernels dot q8_1-quantized Q "
               "against the quantized K with dp4a/integer-dot instructions (V dequantized); judged native "
               "because the score dot is integer math", c.LLAMA_MMQ, weights=KV_QUANT, layers=c.KV,
               targets=("cuda", "rocm", "vulkan"), when=c.GPU_INT_DOT),
    Capability(W, "{weights} KV cache on Metal: blocks are dequantized to half for the attention math (the "
               "M1-M4 GPUs have no int8 dot/matrix path)", c.join(c.LLAMA_METAL, c.LLAMA_METAL4),
               weights=KV_QUANT, layers=c.KV, targets=("metal",), runs_as=METAL_RUNS_AS),
    Capability(W, "{weights} KV cache on {device}: no integer dot product, so K/V blocks are dequantized for "
               "the attention math", c.join(c.LLAMA_CPU, c.LLAMA_MMQ), weights=KV_QUANT, layers=c.KV,
               runs_as="quantized KV dequantized to F16/F32 for the attention math"),
)


def _repacked(weights: tuple[str, ...], layout: str, gate: str, when: Requires) -> Capability:
    """A ggml-cpu repacked GEMM/GEMV path: picked per tensor at load time when the CPU has ``gate``."""
    return Capability(N, f"ggml-cpu repacks {{weights}} tensors at load into {layout} interleaved blocks (extra "
                      f"buffer type CPU_REPACK) and runs its gemm/gemv on Q8-quantized activations; picked at run "
                      f"time because the CPU has {gate} (and the row count divides the interleave)", LLAMA_REPACK,
                      weights=weights, targets=("cpu",), when=when,
                      runs_as=f"{{weights}} repacked to {layout} blocks, integer gemm/gemv on Q8 activations ({gate})")


CPU_FLOAT = (
    Capability(N, "F16 GGUF tensors on an Arm CPU with FP16 vector arithmetic: ggml's F16 vec_dot runs vfmaq_f16 "
               "(native FP16 FMA)", LLAMA_SIMD_F16, weights=("gguf-f16",), targets=("cpu",),
               when=Requires(features_all=any_of("fp16", "asimd"))),
    Capability(W, "F16 GGUF tensors on {device}: ggml-cpu converts F16 to F32 for the dot products (F16C/AVX512F "
               "_cvtph_ps; AVX512_FP16 is not used even where the CPU has it)", LLAMA_SIMD_F16,
               weights=("gguf-f16",), targets=("cpu",),
               runs_as="F16 converted to F32 in SIMD registers (F16C / AVX512F vcvtph2ps), F32 FMA"),
    Capability(N, "BF16 GGUF tensors on a CPU with AVX512_BF16: ggml_vec_dot_bf16 runs _mm512_dpbf16_ps "
               "(native BF16 dot, F32 accumulate)", LLAMA_VEC_BF16, weights=("gguf-bf16",), targets=("cpu",),
               when=Requires(features_all=any_of("avx512_bf16"))),
    Capability(W, "BF16 GGUF tensors on {device} (no AVX512_BF16): ggml_vec_dot_bf16 widens BF16 to F32 with "
               "AVX512F/AVX2 shifts and multiplies in F32", LLAMA_VEC_BF16, weights=("gguf-bf16",),
               targets=("cpu",), when=Requires(features_any=any_of("avx2", "avx512f")),
               runs_as="BF16 widened to F32 in SIMD registers, F32 math"),
    Capability(W, "BF16 GGUF tensors on {device}: ggml_vec_dot_bf16 has no NEON/SVE branch (FEAT_BF16 is not "
               "used), so the dot products run as a scalar BF16-to-F32 loop", LLAMA_VEC_BF16,
               weights=("gguf-bf16",), targets=("cpu",),
               runs_as="BF16 converted to F32 element by element, scalar F32 math (slow)"),
)

FLOAT = (
    Capability(N, "F32 GGUF tensors: F32 matmul", c.LLAMA_CPU, weights=("gguf-f32",)),
    Capability(N, "F16 GGUF tensors: native F16 math on {target}",
               c.join(c.LLAMA_CPU, c.LLAMA_METAL), weights=("gguf-f16",),
               when=Requires(features_all=any_of("fp16"))),
    Capability(N, "BF16 GGUF tensors: native BF16 math on {target} (Metal: BF16 kernels when "
               "has_bfloat)", c.join(c.LLAMA_CPU, c.LLAMA_METAL_DEVICE), weights=("gguf-bf16",),
               when=Requires(features_all=any_of("bf16"))),
    Capability(W, "{weights} tensors on {device}: no native 16-bit arithmetic on {target}, values are "
               "widened for the math", c.LLAMA_CPU, weights=("gguf-f16", "gguf-bf16"), runs_as=WIDENED),
)

CPU = (
    Capability(N, "AMX path (GGML_AMX_INT8 builds, AMX-INT8 CPUs): {weights} is one of the types with AMX "
               "kernels (qtype_has_amx_kernels: Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS), unpacked to int8 for "
               "s8s8 tile GEMM (batch 1 uses VNNI); ollama dropped its SPR AMX build (~10% slower there, +6.5% "
               "on EMR)", c.join(LLAMA_AMX_TYPES, c.LLAMA_AMX, c.LLAMA_CPU), weights=AMX_TYPES, targets=("cpu",),
               when=Requires(features_all=any_of("amx_int8"))),
    # repack.cpp: the order of the checks is the order of these rows (first hit wins per type)
    _repacked(("gguf-q4_0",), "q4_0_8x8", "AVX2", Requires(features_all=any_of("avx2"))),
    _repacked(("gguf-q4_0", "gguf-q8_0", "gguf-q1_0"), "4x8 (SMMLA; q4_0 takes the SVE 8x8 kernel on 256-bit SVE)",
              "NEON + I8MM", Requires(features_all=any_of("asimd", "i8mm"))),
    _repacked(("gguf-q4_0", "gguf-q8_0", "gguf-q1_0"), "4x4 (SDOT)", "NEON + dotprod",
              Requires(features_all=any_of("asimd", "dotprod"))),
    _repacked(("gguf-q4_k*",), "q4_K_8x8", "AVX2", Requires(features_all=any_of("avx2"))),
    _repacked(("gguf-q4_k*", "gguf-q5_k*", "gguf-q6_k"), "8x8 (SMMLA)", "NEON + I8MM",
              Requires(features_all=any_of("asimd", "i8mm"))),
    _repacked(("gguf-q4_k*", "gguf-q5_k*", "gguf-q6_k"), "8x4 (SDOT)", "NEON + dotprod",
              Requires(features_all=any_of("asimd", "dotprod"))),
    _repacked(("gguf-q2_k",), "q2_K_8x8", "AVX-512 (ggml_cpu_has_avx512)", Requires(features_all=any_of("avx512f"))),
    _repacked(("gguf-iq4_nl", "gguf-mxfp4"), "8x8", "AVX2", Requires(features_all=any_of("avx2"))),
    _repacked(("gguf-iq4_nl",), "iq4_nl_4x4", "NEON + dotprod (aarch64; the dotprod check is in 0.3.36's copy)",
              Requires(features_all=any_of("asimd", "dotprod"))),
    _repacked(("gguf-mxfp4",), "mxfp4_4x4", "NEON + dotprod", Requires(features_all=any_of("asimd", "dotprod"))),
    Capability(N, "vec_dot with activations quantized to Q8_0/Q8_K: integer SIMD dot (AVX2, "
               "AVX512-VNNI/AVX-VNNI dpbusd, NEON sdot; SMMLA nrows=2 with i8mm); ggml-cpu has no repacked "
               "kernel for {weights} on {device}", c.join(c.LLAMA_CPU, LLAMA_REPACK),
               weights=QUANT, targets=("cpu",), when=c.INT8_UNIT,
               runs_as="{weights} blocks dotted row by row (vec_dot) against Q8-quantized activations"),
    Capability(E, "{device} has no integer SIMD dot: ggml's scalar vec_dot fallback", c.LLAMA_CPU,
               weights=QUANT, targets=("cpu",), runs_as="scalar integer dot products"),
)

FP4_GGUF = ("gguf-mxfp4", "gguf-mxfp4_moe", "gguf-nvfp4")
LLAMA_VULKAN_KQ = ("https://github.com/ggml-org/llama.cpp/pull/16536 (Vulkan MMQ Integer Dot Refactor and K-Quant "
                   "support) ; https://github.com/ggml-org/llama.cpp/pull/16900 (MMVQ Integer Dot K-Quant) ; "
                   "ggml-org/llama.cpp ggml/src/ggml-vulkan/ggml-vulkan.cpp (CREATE_MMQ(GGML_TYPE_Q4_K, "
                   "...matmul_q4_k_q8_1...) under device->integer_dot_product)")
LLAMA_BLACKWELL_MMA = ("ggml-org/llama.cpp ggml/src/ggml-cuda/common.cuh @00108827 (GGML_CUDA_CC_BLACKWELL 1200: "
                       "'While BW spans CC 1000, 1100 & 1200, we are integrating Tensor Core instructions available to "
                       "1200 family'; BLACKWELL_MMA_AVAILABLE for __CUDA_ARCH__ in [1200, 1300)) ; ggml-org/llama.cpp "
                       "ggml/src/ggml-cuda/mmq.cu (Q4 precision only for NVFP4/MXFP4 when blackwell_mma_available)")

CUDA = (
    Capability(N, "{weights}: FP4 blocks on the sm_120-family FP4 tensor cores (BLACKWELL_MMA_AVAILABLE: compute "
               "capability 12.x; sm_100/sm_103/sm_110 Blackwell take the q8_1 int8 path)",
               c.join(c.LLAMA_MMQ, LLAMA_BLACKWELL_MMA), weights=FP4_GGUF, targets=("cuda",),
               when=Requires(families=c.NVIDIA, min_cc=12.0, max_cc=12.9)),
    Capability(N, "MMQ: activations quantized to q8_1 (quantize_mmq_q8_1_cuda) and multiplied with int8 MMA "
               "(Turing+ always); dp4a MMVQ for small batches", c.LLAMA_MMQ,
               weights=("gguf-q*", "gguf-iq*", *FP4_GGUF), targets=("cuda",),
               when=Requires(families=c.NVIDIA, features_all=any_of("int8"))),
    Capability(N, "dp4a MMQ (CC >= 6.1) on q8_1 activations for batch < MMQ_DP4A_MAX_BATCH_SIZE; on GPUs "
               "with FP16 MMA larger batches use dequant + cuBLAS FP16", c.LLAMA_MMQ,
               weights=("gguf-q*", "gguf-iq*", *FP4_GGUF), targets=("cuda",),
               when=Requires(families=c.NVIDIA, features_all=any_of("dp4a"))),
    Capability(W, "no int8 dot on {device}: blocks dequantized, then cuBLAS FP16", c.LLAMA_MMQ,
               weights=("gguf-q*", "gguf-iq*", *FP4_GGUF), targets=("cuda",),
               runs_as="dequantized to FP16, cuBLAS FP16 GEMM"),
)

ROCM = (
    Capability(N, "HIP MMQ on CDNA (MFMA; always on CDNA3, conditional on older CDNA): q8_1 activations, "
               "integer matrix math", c.LLAMA_MMQ, weights=("gguf-q*", "gguf-iq*", *FP4_GGUF),
               targets=("rocm",), when=Requires(families=c.AMD, features_all=any_of("mfma"))),
    Capability(N, "RDNA3 WMMA MMQ for most types (Q2_K/Q6_K/IQ2 only at small batch, else dequant + "
               "hipBLAS); token generation uses integer-dot MMVQ", c.LLAMA_MMQ,
               weights=("gguf-q*", "gguf-iq*", *FP4_GGUF), targets=("rocm",),
               when=Requires(families=c.AMD, features_all=any_of("wmma"))),
    Capability(W, "{device} has neither MFMA nor WMMA (Vega-class): dequant + hipBLAS (except MoE)",
               c.LLAMA_MMQ, weights=("gguf-q*", "gguf-iq*", *FP4_GGUF), targets=("rocm",),
               runs_as="dequantized to FP16, hipBLAS GEMM"),
)

METAL = (
    Capability(W, "Metal kernel_mul_mm dequantizes {weights} blocks to half in threadgroup memory and runs "
               "simdgroup_half8x8 MMA with float accumulate (the Metal-4 tensor API is used only on M5+)",
               c.join(c.LLAMA_METAL, c.LLAMA_METAL_DEVICE, c.LLAMA_METAL4),
               weights=("gguf-q*", "gguf-iq*", "gguf-mxfp4*"), targets=("metal",), runs_as=METAL_RUNS_AS),
)

VULKAN = (
    Capability(N, "Vulkan DP4A MMQ with Q8_1 activations and integer-dot mul_mat_vec for legacy quants "
               "(devices with integer dot product)", c.LLAMA_VULKAN, weights=c.GGUF_LEGACY,
               targets=("vulkan",), when=c.GPU_INT_DOT),
    Capability(N, "Vulkan integer-dot MMQ for K-quants (matmul_q*_k_q8_1 pipelines, created when the device has "
               "integer dot product) and integer-dot MMVQ for small batches (Q6_K MMVQ is Intel-only)",
               LLAMA_VULKAN_KQ, weights=("gguf-q2_k*", "gguf-q3_k*", "gguf-q4_k*", "gguf-q5_k*", "gguf-q6_k"),
               targets=("vulkan",), when=c.GPU_INT_DOT),
    Capability(W, "Vulkan dequant shaders (MMQ only where implemented) with f16acc/coopmat matmul; int8 "
               "coopmat for RDNA3/RDNA4 is still an open PR", c.join(c.LLAMA_VULKAN, c.LLAMA_VULKAN_COOPMAT),
               weights=("gguf-q*", "gguf-iq*", "gguf-mxfp4*"), targets=("vulkan",),
               runs_as="blocks dequantized to FP16, FP16 (coopmat) matmul"),
)


PRIORS = {
    ACCELERATOR: RuntimePriors(
        bandwidth_eff=0.7, compute_eff=0.35, layer_overhead_s=1e-5, step_overhead_s=0.5e-3, memory_gib=0.4,
        prefill_chunk=512, kv_cache_bytes=2.0,
        # the compute graph holds the logits of a whole ubatch, and llama-cpp-python keeps an n_batch x vocab
        # scores array
        logits_rows=512,
        source="CUDA graphs for decode; ubatch 512; MMQ on mma.sync int8 (no wgmma/tcgen05), batched decode kernels "
               "less tuned than vLLM's"),
    # the Apple GPU, where its figures differ from the CUDA ones
    "metal": RuntimePriors(
        bandwidth_eff=0.7, compute_eff=0.6, layer_overhead_s=1e-5, step_overhead_s=0.5e-3, memory_gib=0.4,
        prefill_chunk=512, kv_cache_bytes=2.0, logits_rows=512,
        source="ggml Metal backend. Prefill efficiency from llama-bench runs of Llama-3-8B Q4_K_M "
               "(XiongjieDai/GPU-Benchmarks-on-LLM-Inference README, May 2024): pp512 408 and 994 tok/s on M1 Max "
               "32-core and M2 Ultra 76-core, 0.58-0.62 of their derived GPU peaks (in-sample). The same runs "
               "decode at 0.44-0.60 of the memory bandwidth (tg512 35.7 / 78.8 / 49.0 on M1 Max / M2 Ultra / M3 "
               "Max), below this 0.7 prior; it stays at the GPU figure because the SoC's CPU-target figures are "
               "uncalibrated too and lowering Metal alone would rank the CPU cores first"),
    "cpu": RuntimePriors(
        bandwidth_eff=0.55, compute_eff=0.5, layer_overhead_s=5e-5, step_overhead_s=0.5e-3, memory_gib=0.07,
        prefill_chunk=512, kv_cache_bytes=2.0,
        format_compute_eff={"gguf-*:int8": 0.3, "gguf-q4_0": 0.6, "gguf-iq4_nl": 0.6},
        gemv_eff={"quant": 0.16, "gguf-q4_0": 0.32, "gguf-iq4_nl": 0.32},
        # ggml-cpu repacks these at load time into interleaved blocks (ggml/src/ggml-cpu/repack.cpp), unless
        # quantmatch loads it without its extra buffer types (llama_cpp_compat: the AMX crash workaround)
        repacked_gguf_types=frozenset({"q4_0", "iq4_nl"}),
        no_repack_on=Requires(features_any=compat.AMX_FLAGS), repack_switch=compat.EXTRA_BUFTS_ENV,
        # the int8 peak of an AMX CPU is AMX's; without the extra buffer types the vec_dot kernels run on
        # AVX512-VNNI (4x the fp32 rate, not 32x)
        unused_int8_features={"amx_int8": 4 / 32},
        source="ggml CPU backend. Decode GEMV reads f32/f16/bf16 weights at ~55% of the single-thread copy test "
               "(f32 12.4 GB/s against 21.9). The quantized vec_dot kernels (ggml-cpu/arch/x86/quants.c) are built "
               "on 256-bit AVX2 helpers (mul_sum_i8_pairs_float, hsum_float_8) and spend ~10-15 instructions per "
               "32-weight block on unpacking and scales: ~0.16 of the 256-bit fp32 FMA rate per core (11-15 GFLOP/s "
               "measured on one 2.6 GHz core for every type), twice that for Q4_0/IQ4_NL when ggml-cpu repacks them "
               "into interleaved blocks (repack.cpp). Prefill: ~15% of the int8 SIMD rate (format_compute_eff). "
               "python + numpy + llama-cpp-python ~40 MB resident, the reserved compute buffers stay untouched (not "
               f"resident) on CPU ({p.MEASURED_SPR})"),
}
"""Planning priors (quantmatch.sdk.priors). Every target keeps an F16 KV cache unless the scheme sets one."""


class LlamaCppBackend(Backend):
    name = "llama.cpp"
    description = "llama.cpp / ggml: GGUF on CPU, CUDA, HIP, Metal and Vulkan"
    targets = ("cpu", "cuda", "rocm", "metal", "vulkan")
    formats = ("gguf",)
    requires = ("llama-cpp-python>=0.3",)
    install_hint = "pip install llama-cpp-python"
    runner = "quantmatch.plugins.backends.llama_cpp_runner:LlamaCppRunner"
    source = c.LLAMA_CPU
    priors = PRIORS
    kv_caches = ("fp16", "bf16", *KV_QUANT)  # llama.cpp's type_k/type_v (--cache-type-k/-v), set at run time
    # the rows describe llama.cpp (ggml) itself; users install it as the llama-cpp-python distribution, whose
    # version is what since/until bounds and --runtime-version refer to (each release vendors a ggml commit)
    runtime = "llama-cpp-python"
    rate_probe = "quantmatch.plugins.backends.llama_cpp_rates:probe_rates"
    latest_version = "0.3.36"
    capabilities = (
        *KV_CACHE,
        *CPU_FLOAT,
        *FLOAT,
        *CPU,
        *CUDA,
        *ROCM,
        *METAL,
        *VULKAN,
        c.no_kernel("llama.cpp", "GGUF types (legacy, K-, I-quants) and f32/f16/bf16/q8_0/q4_0 KV caches",
                    c.LLAMA_CPU, what="{weights}"),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(LlamaCppBackend)
