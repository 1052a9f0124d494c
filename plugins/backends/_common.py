"""What the built-in runtime backends share: device predicates, type groups and source strings.

Sources are written exactly as /work/shared/reference/hardware_facts.md gives them (a URL, or
``owner/repo path @commit``), so that every verdict can be traced back to the fact it rests on.
"""

from __future__ import annotations

from quantmatch.sdk.capability import Capability, Requires, any_of
from quantmatch.sdk.verdict import Level

# ---- layers ---------------------------------------------------------------------------------
ALL_LAYERS = ("linear", "moe", "kv-cache")
KV = ("kv-cache",)
LINEAR = ("linear",)
MOE = ("moe",)

# ---- type groups (as rows match them: Scheme.weight_type / Scheme.activation_type) ------------
BASELINES = ("fp32", "tf32", "fp16", "bf16")
FLOAT_ACTS = ("fp32", "fp16", "bf16")
HALF_ACTS = ("fp16", "bf16")
INT_WEIGHTS = ("int1", "int2", "int3", "int4", "int5", "int6", "int8")
INT4_INT8 = ("int4", "int8")
FP8 = ("fp8-e4m3",)
FP4_BLOCK = ("nvfp4", "mxfp4")

GGUF_LEGACY = ("gguf-q4_0", "gguf-q4_1", "gguf-q5_0", "gguf-q5_1", "gguf-q8_0")
GGUF_IQUANTS = ("gguf-iq*",)
GGUF_QUANT = ("gguf-q*", "gguf-iq*", "gguf-tq*", "gguf-mxfp4", "gguf-mxfp4_moe", "gguf-nvfp4")
"""Every quantized GGUF type (legacy, k-quants, i-quants, ternary, mxfp4)."""

FORMATS_ONLY: tuple[str, ...] = ()
"""``methods=FORMATS_ONLY``: a row that matches only queries without a method (the number formats
alone); with a method named, an empty ``methods`` filter never matches (registry/engine.py)."""

# ---- device predicates ------------------------------------------------------------------------
NVIDIA = any_of("nvidia")
AMD = any_of("amd-rocm")
X86 = any_of("x86-cpu")

ON_NVIDIA = Requires(families=NVIDIA)
ON_GPU = Requires(families=NVIDIA | AMD)
FP8_NATIVE = Requires(features_any=any_of("fp8-e4m3fn", "fp8-e4m3fnuz"))
NV_FP8 = Requires(families=NVIDIA, features_any=any_of("fp8-e4m3fn", "fp8-e4m3fnuz"))
GPU_FP8 = Requires(families=NVIDIA | AMD, features_any=any_of("fp8-e4m3fn", "fp8-e4m3fnuz"))
FNUZ_FP8 = Requires(families=AMD, features_all=any_of("fp8-e4m3fnuz"))
OCP_FP8_AMD = Requires(families=AMD, features_all=any_of("fp8-e4m3fn"))
TCGEN05 = Requires(families=NVIDIA, features_all=any_of("tcgen05"))
"""The sm_100 family (B200/B300): tcgen05 + TMEM. sm_120 is numerically higher but lacks it."""
SM120_BLOCK_SCALE = Requires(families=NVIDIA, features_all=any_of("block-scale-mma"),
                             features_none=any_of("tcgen05"))
"""Blackwell GeForce / RTX PRO (sm_120): block-scaled ``mma.sync``, no tcgen05, no wgmma."""
INT8_UNIT = Requires(features_any=any_of("int8"))
GPU_INT_DOT = Requires(features_any=any_of("dp4a", "integer-dot"))
COMPUTE_NATIVE = Requires(compute_native=True)
COMPUTE_EMULATED = Requires(compute_emulated=True)

BNB_ROCM_ARCHS = any_of("gfx90a", "gfx942", "gfx950", "gfx1100", "gfx1101", "gfx1102", "gfx1103",
                        "gfx1150", "gfx1151", "gfx1152", "gfx1153", "gfx1200", "gfx1201")
"""Architectures the bitsandbytes ROCm wheel is built for (bnb installation.mdx)."""

# ---- sources ------------------------------------------------------------------------------------
VLLM_DOCS = "https://docs.vllm.ai/en/v0.9.2/features/quantization/supported_hardware.html"
VLLM_DOCS_LATEST = "https://docs.vllm.ai/quantization/"
VLLM_FP8 = "vllm-project/vllm vllm/model_executor/layers/quantization/fp8.py @0071b24b"
VLLM_FP8_DOC = "vllm-project/vllm docs/features/quantization/fp8.md"
VLLM_INT8_DOC = "vllm-project/vllm docs/features/quantization/int8.md"
VLLM_INT4_DOC = "vllm-project/vllm docs/features/quantization/int4.md"
VLLM_MARLIN = "vllm-project/vllm vllm/model_executor/layers/quantization/utils/marlin_utils.py @007d5005"
VLLM_MARLIN_KERNEL = ("vllm-project/vllm vllm/model_executor/layers/quantization/kernels/mixed_precision/"
                      "marlin.py")
VLLM_MACHETE = "vllm-project/vllm vllm/model_executor/layers/quantization/kernels/mixed_precision/machete.py"
VLLM_WNA16_ORDER = ("vllm-project/vllm vllm/model_executor/layers/quantization/kernels/mixed_precision/"
                    "__init__.py")
VLLM_AWQ = "vllm-project/vllm vllm/model_executor/layers/quantization/awq.py @000796ac"
VLLM_AWQ_ERR = "https://github.com/vllm-project/vllm/issues/1488 ; https://github.com/vllm-project/vllm/issues/4202"
VLLM_GGUF = ("vllm-project/vllm vllm/model_executor/layers/quantization/gguf.py "
             "(_fused_mul_mat_gguf; GitHub-indexed copies)")
VLLM_NVFP4 = ("vllm-project/vllm vllm/model_executor/layers/quantization/compressed_tensors/schemes/"
              "compressed_tensors_w4a4_nvfp4.py ; vllm-project/vllm "
              "vllm/model_executor/layers/quantization/utils/nvfp4_utils.py")
VLLM_MXFP4_SM120 = "https://github.com/vllm-project/vllm/issues/31085"
VLLM_FAMILY_100 = "https://github.com/vllm-project/vllm/issues/33416"
VLLM_MARLIN_TURING = "https://github.com/vllm-project/vllm/pull/29901"
VLLM_FP8_MARLIN_PR = "https://github.com/vllm-project/vllm/pull/5975"
VLLM_FP8_MOE_A100 = "https://github.com/vllm-project/vllm/issues/18182 ; https://github.com/vllm-project/vllm/issues/54318"
VLLM_ROCM = "vllm-project/vllm vllm/platforms/rocm.py ; https://github.com/vllm-project/vllm/issues/19782"
VLLM_ROCM_AWQ = "https://github.com/vllm-project/vllm/issues/11249"
VLLM_MI250_FP8 = "https://github.com/vllm-project/vllm/pull/44369"
VLLM_QUARK = "vllm-project/vllm docs/features/quantization/quark.md"
LLMCOMPRESSOR_SCHEMES = "vllm-project/llm-compressor docs choosing-scheme.md"
CLUB3090_NVFP4_KV = "https://github.com/noonghunna/club-3090/pull/574"
TRTLLM_NVFP4_KV = "https://github.com/NVIDIA/TensorRT-LLM/issues/10241"

MODELOPT = "https://nvidia.github.io/Model-Optimizer/guides/0_support_matrix.html"
TE_MATRIX = "https://nvidia.github.io/TransformerEngine/support_matrix.html"
TRTLLM_DOCS = "https://nvidia.github.io/TensorRT-LLM/features/quantization.html"
CUTLASS_BLACKWELL = "NVIDIA/cutlass media/docs/cpp/blackwell_functionality.md @7107b055"
CUTLASS_SM89 = "NVIDIA/cutlass include/cute/arch/mma_sm89.hpp @7107b055"
WGMMA_TYPES = "https://reviews.llvm.org/D157695"
NV_FORUM_ADA_FP8 = "https://forums.developer.nvidia.com/t/fp8-fp16-accumulation-on-ada-rtx-4090/294400.md"
NO_FP4_HOPPER = "https://github.com/tile-ai/TileRT/issues/48"

ROCM_PRECISION = "ROCm/ROCm docs/reference/precision-support.rst @e396b489 (Matrix core support tables)"
ROCM_MI300_FP8 = ("https://github.com/ROCm/AMDMIGraphX/pull/3547 ; https://github.com/ROCm/ROCm/issues/6561")

BNB_INSTALL = "https://huggingface.co/docs/bitsandbytes/v0.50.0/installation"
BNB_FUNCTIONAL = "https://huggingface.co/docs/bitsandbytes/reference/functional"

QUANTO_README = "huggingface/optimum-quanto README.md @e33f8202"
QUANTO_QBYTES_MM = "huggingface/optimum-quanto optimum/quanto/library/qbytes_mm.py @e33f8202"
QUANTO_QBITS = "huggingface/optimum-quanto optimum/quanto/tensor/weights/qbits.py @e33f8202"
QUANTO_QBYTES = "huggingface/optimum-quanto optimum/quanto/tensor/weights/qbytes.py @e33f8202"
QUANTO_MPS_FALLBACK = "https://github.com/deepbeepmeep/Wan2GP/pull/1775"

HQQ_README = "mobiusml/hqq Readme.md @e0b1d00e"
HQQ_TORCHAO = "mobiusml/hqq hqq/backends/torchao.py @e0b1d00e"
HQQ_BITBLAS = "mobiusml/hqq hqq/backends/bitblas.py @e0b1d00e"
HQQ_GEMLITE = "mobiusml/hqq hqq/backends/gemlite.py @e0b1d00e"
HQQ_MPS = "https://github.com/dropbox/hqq/issues/52"

LLAMA_CPU = ("ggml-org/llama.cpp ggml/src/ggml-cpu/ggml-cpu.c type_traits_cpu "
             "(vec_dot_type=Q8_K / Q8_0; nrows=2 with __ARM_FEATURE_MATMUL_INT8)")
LLAMA_AMX = "https://github.com/ggml-org/llama.cpp/pull/8998 ; https://github.com/ggml-org/llama.cpp/pull/7707"
LLAMA_MMQ = "ggml-org/llama.cpp ggml/src/ggml-cuda/mmq.cu @027ef876 (ggml_cuda_should_use_mmq)"
LLAMA_METAL = ("ggml-org/llama.cpp ggml/src/ggml-metal/ggml-metal.metal "
               "kernel_mul_mm<half,...,simdgroup_half8x8,...,dequantize_*> instantiations")
LLAMA_METAL_DEVICE = "ggml-org/llama.cpp ggml/src/ggml-metal/ggml-metal-device.m"
LLAMA_METAL4 = "https://github.com/ggml-org/llama.cpp/pull/16634"
LLAMA_VULKAN = ("https://github.com/ggml-org/llama.cpp/pull/12135 ; "
                "https://github.com/ggml-org/llama.cpp/pull/14903")
LLAMA_VULKAN_COOPMAT = "https://github.com/ggml-org/llama.cpp/pull/27952"

ORT_NBITS = ("ONNX Runtime ContribOperators MatMulNBits accuracy_level "
             "(0 unset,1 fp32,2 fp16,3 bf16,4 int8); microsoft/Olive pass doc")
ORT_NBITS_INT8 = "https://github.com/microsoft/onnxruntime/pull/27820"
ORT_NBITS_GPU = ("https://github.com/microsoft/onnxruntime/pull/17890 "
                 "(MatMulNBits CPU/GPU = MatMul(A, Dequantize(B)) + GemV)")
ORT_IMMA = "https://github.com/microsoft/onnxruntime/pull/3413"
ORT_INT8_CPU = "https://github.com/microsoft/onnxruntime/pull/7033"
ORT_OPTIMUM_GPU = "HF optimum ORT GPU guide"

TRANSFORMERS_OVERVIEW = "huggingface/transformers docs/source/en/quantization/overview.md @1d883ec"
TRANSFORMERS_CT_DECOMPRESS = ("huggingface/transformers src/transformers/quantizers/quantizer_compressed_tensors.py "
                              "(5.x: 'dequantize=True dequantizes the weights at load time, while dequantize=False "
                              "... lets compressed-tensors decompress them on the first forward pass'); measured by "
                              "quantmatch verify: 1.02x the fp32 layer's resident bytes")
TRANSFORMERS_FP8 = "huggingface/transformers FineGrainedFP8 ('compute capability >= 8.9 (e.g 4090/H100)')"
TORCH_MPS_BF16 = "https://github.com/pytorch/pytorch/pull/119641"
TORCH_MPS_WEIGHT_ONLY = "https://github.com/pytorch/pytorch/pull/130715"
TORCH_CPU_INT4PACK = ("pytorch/pytorch aten/src/ATen/native/cpu/int4mm_kernel.cpp @v2.13.0 (weight_to_int4pack_kernel, "
                      "int4pack_mm_kernel: groups 32/64/128/256, vectorized for bf16 activations)")
TORCH_CPU_INT8PACK = ("pytorch/pytorch aten/src/ATen/native/cpu/int8mm_kernel.cpp @v2.13.0 (int8pack_mm_kernel: "
                      "one scale per output channel)")
TORCH_MPS_INT_MM = "https://github.com/Comfy-Org/ComfyUI/issues/16458"
METAL_TYPE_TABLE = ("https://techboards.net/threads/apple-a19-m5-gpu-neural-accelerators.5297/latest "
                    "(MPPTensorOpsMatMul2d.h type table)")
PTX_MMA = ("https://docs.nvidia.com/cuda/parallel-thread-execution/index.html"
           "#warp-level-matrix-instructions-mma "
           "(Target ISA notes; text verified via GitHub-indexed mirror id 4436016401)")

LLVM_X86_CLX = "https://reviews.llvm.org/D62835"

TORCHAO_DOCS = "pytorch/ao docs/source/inference.md"
TORCHAO_API = "pytorch/ao torchao/quantization/quant_api.py"
TORCHAO_FNUZ = "https://github.com/pytorch/ao/pull/4130"

MLX_CONVERT = "ml-explore/mlx-lm mlx_lm/convert.py"
MLX_LEARNED = "ml-explore/mlx-lm LEARNED_QUANTS.md"


def join(*sources: str) -> str:
    """Several sources for one row, joined the way verdicts split them."""
    return " ; ".join(s for s in sources if s)


FLOAT_TYPES = join(PTX_MMA, ROCM_PRECISION, LLVM_X86_CLX, TORCH_MPS_BF16)
"""Which devices compute fp16/bf16/tf32/fp32 natively (NVIDIA PTX notes, ROCm tables, LLVM x86, MPS)."""


def float_baselines(runtime: str, source: str, *, layers: tuple[str, ...] = ("linear", "moe")
                    ) -> tuple[Capability, ...]:
    """Unquantized fp32/tf32/fp16/bf16: native where the unit computes the type, else emulated."""
    return (
        Capability(Level.NATIVE, f"{runtime} runs unquantized {{weights}} on native {{weights}} units "
                   f"({{target}})", source, weights=BASELINES, layers=layers,
                   when=COMPUTE_NATIVE),
        Capability(Level.EMULATED, f"{runtime} accepts {{weights}} without a native {{weights}} unit: "
                   "{lowering}", source, weights=BASELINES, layers=layers, when=COMPUTE_EMULATED,
                   runs_as="{lowering}"),
    )


def kv_float(runtime: str, source: str) -> tuple[Capability, ...]:
    """An unquantized (fp16/bf16/fp32) KV cache: native where the unit computes that type."""
    return (
        Capability(Level.NATIVE, f"{runtime} keeps the KV cache in {{weights}}, computed natively "
                   "on {target}", source, weights=FLOAT_ACTS, layers=KV, when=COMPUTE_NATIVE),
        Capability(Level.EMULATED, f"{runtime} keeps the KV cache in {{weights}} without a native "
                   "{weights} unit: {lowering}", source, weights=FLOAT_ACTS, layers=KV,
                   when=COMPUTE_EMULATED, runs_as="{lowering}"),
    )


def lowered_compute(source: str, weights: tuple[str, ...]) -> Capability:
    """Weight-only schemes whose 16-bit compute dtype the unit lacks (fp16 on a CPU without
    AVX512_FP16): still weight-only - the weights stay low-bit - with the math lowered as the device
    entry says. Baselines, not this row, are where a missing dtype makes a verdict ``emulated``."""
    return Capability(Level.WEIGHT_ONLY, "{weights} weights are dequantized for the matmul; the unit has no "
                      "native {activations} math on {target}, so it is lowered: {lowering}", source,
                      weights=weights, activations=FLOAT_ACTS, when=COMPUTE_EMULATED,
                      runs_as="{weights} weights dequantized; {activations} math lowered ({lowering})")


def no_kernel(runtime: str, offers: str, source: str,
              what: str = "{weights} weights with {activations} math") -> Capability:
    """The last row of a backend: anything not declared above is refused, with what *is* offered."""
    return Capability(Level.UNSUPPORTED, f"{runtime} has no {{target}} kernel for {what} on this layer type "
                      f"on {{device}} ({runtime} offers: {offers})", source, layers=ALL_LAYERS)
