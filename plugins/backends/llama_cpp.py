"""llama.cpp (ggml): GGUF models on CPU, CUDA, HIP/ROCm, Metal and Vulkan.

What executes differs per ggml backend: the CPU quantizes activations to Q8_0/Q8_K and uses integer
SIMD dot products (AMX for Q4_0/Q4_1 on Sapphire Rapids builds); CUDA and HIP run MMQ/MMVQ on
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

KV_CACHE = (
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
    Capability(N, "AMX path (GGML_AMX_TILE/INT8/BF16 builds): Q4_0/Q4_1 unpacked to q8 for s8s8 tile GEMM "
               "(batch 1 uses VNNI); ollama dropped its SPR AMX build (~10% slower there, +6.5% on EMR)",
               c.join(c.LLAMA_AMX, c.LLAMA_CPU), weights=("gguf-q4_0", "gguf-q4_1"), targets=("cpu",),
               when=Requires(features_all=any_of("amx_int8"))),
    Capability(N, "vec_dot with activations quantized to Q8_0/Q8_K: integer SIMD dot (AVX2, "
               "AVX512-VNNI/AVX-VNNI dpbusd, NEON sdot; SMMLA nrows=2 with i8mm)", c.LLAMA_CPU,
               weights=QUANT, targets=("cpu",), when=c.INT8_UNIT),
    Capability(E, "{device} has no integer SIMD dot: ggml's scalar vec_dot fallback", c.LLAMA_CPU,
               weights=QUANT, targets=("cpu",), runs_as="scalar integer dot products"),
)

CUDA = (
    Capability(N, "{weights}: native FP4 activation path (use_native_fp4) on FP4 tensor cores",
               c.LLAMA_MMQ, weights=("gguf-mxfp4",), targets=("cuda",),
               when=Requires(families=c.NVIDIA, features_all=any_of("mxfp4"))),
    Capability(N, "MMQ: activations quantized to q8_1 (quantize_mmq_q8_1_cuda) and multiplied with int8 MMA "
               "(Turing+ always); dp4a MMVQ for small batches", c.LLAMA_MMQ,
               weights=("gguf-q*", "gguf-iq*", "gguf-mxfp4"), targets=("cuda",),
               when=Requires(families=c.NVIDIA, features_all=any_of("int8"))),
    Capability(N, "dp4a MMQ (CC >= 6.1) on q8_1 activations for batch < MMQ_DP4A_MAX_BATCH_SIZE; on GPUs "
               "with FP16 MMA larger batches use dequant + cuBLAS FP16", c.LLAMA_MMQ,
               weights=("gguf-q*", "gguf-iq*", "gguf-mxfp4"), targets=("cuda",),
               when=Requires(families=c.NVIDIA, features_all=any_of("dp4a"))),
    Capability(W, "no int8 dot on {device}: blocks dequantized, then cuBLAS FP16", c.LLAMA_MMQ,
               weights=("gguf-q*", "gguf-iq*", "gguf-mxfp4"), targets=("cuda",),
               runs_as="dequantized to FP16, cuBLAS FP16 GEMM"),
)

ROCM = (
    Capability(N, "HIP MMQ on CDNA (MFMA; always on CDNA3, conditional on older CDNA): q8_1 activations, "
               "integer matrix math", c.LLAMA_MMQ, weights=("gguf-q*", "gguf-iq*", "gguf-mxfp4"),
               targets=("rocm",), when=Requires(families=c.AMD, features_all=any_of("mfma"))),
    Capability(N, "RDNA3 WMMA MMQ for most types (Q2_K/Q6_K/IQ2 only at small batch, else dequant + "
               "hipBLAS); token generation uses integer-dot MMVQ", c.LLAMA_MMQ,
               weights=("gguf-q*", "gguf-iq*", "gguf-mxfp4"), targets=("rocm",),
               when=Requires(families=c.AMD, features_all=any_of("wmma"))),
    Capability(W, "{device} has neither MFMA nor WMMA (Vega-class): dequant + hipBLAS (except MoE)",
               c.LLAMA_MMQ, weights=("gguf-q*", "gguf-iq*", "gguf-mxfp4"), targets=("rocm",),
               runs_as="dequantized to FP16, hipBLAS GEMM"),
)

METAL = (
    Capability(W, "Metal kernel_mul_mm dequantizes {weights} blocks to half in threadgroup memory and runs "
               "simdgroup_half8x8 MMA with float accumulate (the Metal-4 tensor API is used only on M5+)",
               c.join(c.LLAMA_METAL, c.LLAMA_METAL_DEVICE, c.LLAMA_METAL4),
               weights=("gguf-q*", "gguf-iq*", "gguf-mxfp4"), targets=("metal",), runs_as=METAL_RUNS_AS),
)

VULKAN = (
    Capability(N, "Vulkan DP4A MMQ with Q8_1 activations and integer-dot mul_mat_vec for legacy quants "
               "(devices with integer dot product)", c.LLAMA_VULKAN, weights=c.GGUF_LEGACY,
               targets=("vulkan",), when=c.GPU_INT_DOT),
    Capability(W, "Vulkan dequant shaders (MMQ only where implemented) with f16acc/coopmat matmul; int8 "
               "coopmat for RDNA3/RDNA4 is still an open PR", c.join(c.LLAMA_VULKAN, c.LLAMA_VULKAN_COOPMAT),
               weights=("gguf-q*", "gguf-iq*", "gguf-mxfp4"), targets=("vulkan",),
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
    capabilities = (
        *KV_CACHE,
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
