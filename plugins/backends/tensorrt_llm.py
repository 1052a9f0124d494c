"""TensorRT-LLM (with ModelOpt checkpoints): NVIDIA's compiled inference runtime, CUDA only.

Its support matrix is per GPU generation: FP8 Ada and later, INT8 SmoothQuant Ampere and later,
W4A16 AWQ Ampere and later, W4A8 AWQ Ada and later, FP4/NVFP4 Blackwell and later. There is no
weight-only fallback for FP8 or FP4 on older GPUs: those combinations are refused.
"""

from __future__ import annotations

from quantmatch.plugins.backends import _common as c
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability, Requires
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import ACCELERATOR, RuntimePriors
from quantmatch.sdk.verdict import Level

N, W, U = Level.NATIVE, Level.WEIGHT_ONLY, Level.UNSUPPORTED
FP8 = c.FP8
INT8 = ("int8",)
TRTLLM_MATRIX = ("NVIDIA/TensorRT-LLM docs/source/reference/support-matrix.md @9b062a83 (Precision: Blackwell "
                 "SM100/SM120 FP8, FP4, INT8, INT4; Hopper SM90 and Ada SM89 FP8, INT8, INT4; Ampere SM80/SM86 INT8, "
                 "INT4; 'INT4 AWQ and GPTQ with FP8 activations require SM >= 89'; unlisted architectures get "
                 "community support only)")
DOCS = c.join(c.MODELOPT, c.TRTLLM_DOCS, TRTLLM_MATRIX)
AMPERE_PLUS = Requires(families=c.NVIDIA, min_cc=8.0)
"""'Ampere and later' in the ModelOpt matrix: a generation floor, every later generation included."""

KV_CACHE = (
    *c.kv_float("TensorRT-LLM", c.TRTLLM_DOCS),
    Capability(N, "NVFP4 KV cache uses the trtllm-gen FMHA kernels built for sm100f (tcgen05/TMEM)",
               c.join(c.CLUB3090_NVFP4_KV, c.TRTLLM_NVFP4_KV), weights=("nvfp4",), layers=c.KV,
               when=c.TCGEN05),
    Capability(U, "NVFP4 KV cache requires sm100f (trtllm-gen FMHA); it fails on sm_120 even though NVFP4 "
               "weights work there", c.join(c.TRTLLM_NVFP4_KV, c.CLUB3090_NVFP4_KV), weights=("nvfp4",),
               layers=c.KV),
    Capability(N, "FP8 KV cache on FP8 tensor cores (FP8: Ada and later)", DOCS, weights=FP8, layers=c.KV,
               when=c.NV_FP8),
    Capability(U, "FP8 (including the FP8 KV cache) needs Ada or later; {device} has no FP8 tensor cores",
               DOCS, weights=FP8, layers=c.KV),
)

LINEAR = (
    *c.float_baselines("TensorRT-LLM", c.TRTLLM_DOCS),
    # FP8 W8A8
    Capability(N, "FP8 W8A8 on FP8 tensor cores (ModelOpt/TensorRT-LLM FP8: Ada and later)",
               c.join(DOCS, c.TE_MATRIX, c.CUTLASS_SM89), weights=FP8, activations=FP8, when=c.NV_FP8),
    Capability(U, "FP8 needs Ada or later (FP8 tensor cores, compute capability >= 8.9); TensorRT-LLM has "
               "no FP8 weight-only fallback", c.join(DOCS, c.TE_MATRIX), weights=FP8, activations=FP8),
    # INT8 SmoothQuant
    Capability(N, "INT8 SmoothQuant W8A8 on int8 tensor cores (ModelOpt: Ampere and later on Linux, Ada and "
               "later on Windows)", DOCS, weights=INT8, activations=INT8, when=AMPERE_PLUS),
    Capability(U, "INT8 SmoothQuant is listed for Ampere and later only", DOCS, weights=INT8,
               activations=INT8),
    # W4A8 AWQ: INT4 weights, FP8 activations
    Capability(N, "W4A8 AWQ: INT4 weights upconverted to FP8 in registers, FP8 tensor-core math "
               "(ModelOpt W4A8: Ada and later)", DOCS, weights=("int4",), activations=FP8, when=c.NV_FP8),
    Capability(U, "ModelOpt W4A8 (INT4 weights, FP8 activations): 'GPUs: Ada and Later' - it needs FP8 "
               "tensor cores, which {device} lacks", DOCS, weights=("int4",), activations=FP8),
    # weight-only
    Capability(W, "W4A16 AWQ / INT8 weight-only: {weights} weights upconverted in registers, {activations} "
               "tensor-core math (ModelOpt W4A16 AWQ: Ampere and later)", DOCS, weights=c.INT4_INT8,
               activations=c.HALF_ACTS, when=AMPERE_PLUS,
               runs_as="{weights} weights upconverted to {activations} in registers, {activations} MMA"),
    Capability(U, "W4A16 AWQ is listed for Ampere and later only", DOCS, weights=c.INT4_INT8,
               activations=c.HALF_ACTS),
    # FP4
    Capability(N, "{weights} W4A4 on tcgen05 block-scaled MMA (kind::mxf4nvf4; FP4: Blackwell and later)",
               c.join(DOCS, c.CUTLASS_BLACKWELL, c.TE_MATRIX), weights=c.FP4_BLOCK,
               activations=c.FP4_BLOCK, when=c.TCGEN05),
    Capability(N, "{weights} W4A4 on sm_120 block-scaled mma.sync (FP4: Blackwell and later; "
               "TransformerEngine lists NVFP4 as 'Partial' on 12.0)",
               c.join(DOCS, c.CUTLASS_BLACKWELL, c.TE_MATRIX), weights=c.FP4_BLOCK,
               activations=c.FP4_BLOCK, when=c.SM120_BLOCK_SCALE),
    Capability(U, "FP4/NVFP4 needs Blackwell (FP4 tensor cores); {device} has none",
               c.join(DOCS, c.NO_FP4_HOPPER, c.TE_MATRIX), weights=c.FP4_BLOCK, activations=c.FP4_BLOCK),
    Capability(N, "MXFP8 on tcgen05 block-scaled MMA (sm_100 family)", c.join(c.TE_MATRIX, DOCS),
               weights=("mxfp8",), activations=("mxfp8",), when=c.TCGEN05),
    Capability(U, "MXFP8 is not available on {device} (TransformerEngine: MXFP8 \u274c on 12.0; needs the "
               "sm_100 family)", c.TE_MATRIX, weights=("mxfp8",), activations=("mxfp8",)),
)


PRIORS = {
    ACCELERATOR: RuntimePriors(
        bandwidth_eff=0.82, compute_eff=0.65, layer_overhead_s=5e-6, step_overhead_s=0.5e-3, memory_gib=1.2,
        prefill_chunk=8192, source="compiled engine, CUDA graphs"),
}
"""Planning priors (quantmatch.sdk.priors)."""


class TensorRTLLMBackend(Backend):
    name = "tensorrt-llm"
    description = "NVIDIA TensorRT-LLM with ModelOpt checkpoints (FP8, INT8 SQ, AWQ, NVFP4)"
    targets = ("cuda",)
    formats = ("compressed-tensors", "modelopt")
    requires = ("tensorrt-llm",)
    install_hint = "pip install tensorrt-llm  (Linux, NVIDIA GPU)"
    runtime = "tensorrt-llm"
    latest_version = ""
    """No row is bounded by version: the rows follow the support matrix at 9b062a83 (container 25.06)."""
    source = c.TRTLLM_DOCS
    priors = PRIORS
    serves_unquantized = True
    capabilities = (
        *KV_CACHE,
        *LINEAR,
        c.no_kernel("TensorRT-LLM", "FP8, INT8 SmoothQuant, W4A16/W4A8 AWQ, NVFP4/MXFP4, FP8/NVFP4 KV cache",
                    DOCS),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(TensorRTLLMBackend)
