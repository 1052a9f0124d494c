"""bitsandbytes: LLM.int8() and NF4/FP4 4-bit linear layers for PyTorch (CUDA, ROCm, Apple, CPU).

LLM.int8() multiplies int8 activations by int8 weights on integer tensor cores (CUDA CC >= 7.5),
keeping outlier columns in fp16. NF4/FP4 store 4-bit weights and dequantize them to the compute
dtype (CUDA CC >= 6.0). v0.48/v0.50 list AMD (ROCm wheel for CDNA/RDNA targets), Apple Silicon
(``backends/mps``) and CPU (x86-64 needs AVX2) as supported.
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
FOUR_BIT = ("nf4", "fp4")
SRC = c.join(c.BNB_INSTALL, c.BNB_FUNCTIONAL)
ROCM_WHEEL = Requires(families=c.AMD, archs=c.BNB_ROCM_ARCHS)
DEQUANT = "{weights} weights dequantized to {activations}, {activations} matmul"

COMMON = (
    Capability(U, "{device} ({arch}) is not among the bitsandbytes ROCm wheel targets (CDNA gfx90a, gfx942, "
               "gfx950; RDNA gfx1100-1103, gfx1150-1153, gfx1200, gfx1201)", c.BNB_INSTALL, targets=("rocm",),
               when=Requires(families=c.AMD, not_archs=c.BNB_ROCM_ARCHS)),
    Capability(U, "the bitsandbytes x86-64 CPU wheel requires AVX2, which {device} lacks", c.BNB_INSTALL,
               targets=("cpu",), when=Requires(families=c.X86, features_none=any_of("avx2"))),
)

LLM_INT8 = (
    Capability(N, "LLM.int8(): int8_linear_matmul runs on integer tensor cores (outlier columns "
               "stay fp16); requires CUDA CC >= 7.5", SRC, weights=INT8, activations=INT8, targets=("cuda",),
               when=Requires(families=c.NVIDIA, min_cc=7.5)),
    Capability(U, "LLM.int8() requires CUDA compute capability >= 7.5 (integer tensor cores)", c.BNB_INSTALL,
               weights=INT8, activations=INT8, targets=("cuda",)),
    Capability(N, "LLM.int8() on ROCm: 'all features supported for both consumer RDNA and Data Center CDNA'; "
               "int8 matmul on the int8 matrix cores", c.BNB_INSTALL, weights=INT8, activations=INT8,
               targets=("rocm",), when=Requires(families=c.AMD, features_all=any_of("int8"))),
    Capability(E, "LLM.int8() on Apple Silicon (backends/mps): the M1-M4 GPUs have no int8 matrix units and "
               "MPS has no int8 x int8 matmul (torch._int_mm for MPS is nightly-only), so the int8 product "
               "runs in float", c.join(c.BNB_INSTALL, c.TORCH_MPS_INT_MM, c.METAL_TYPE_TABLE), weights=INT8,
               activations=INT8, targets=("metal",), runs_as="int8 operands widened to float for the matmul"),
    Capability(N, "LLM.int8() on CPU: int8 x int8 matmul on the CPU's integer dot units (torch._int_mm on "
               "CPU)", c.join(c.BNB_INSTALL, c.QUANTO_QBYTES_MM), weights=INT8, activations=INT8,
               targets=("cpu",), when=c.INT8_UNIT),
)

FOUR = (
    Capability(W, "NF4/FP4 on CUDA (CC >= 6.0): 4-bit weights dequantized to {activations} for the matmul",
               c.BNB_INSTALL, weights=FOUR_BIT, activations=c.FLOAT_ACTS, targets=("cuda",),
               when=Requires(families=c.NVIDIA, min_cc=6.0, compute_native=True), runs_as=DEQUANT),
    Capability(W, "NF4/FP4 on ROCm (official AMD support in v0.50): 4-bit weights dequantized to "
               "{activations}", c.BNB_INSTALL, weights=FOUR_BIT, activations=c.FLOAT_ACTS, targets=("rocm",),
               when=Requires(families=c.AMD, compute_native=True), runs_as=DEQUANT),
    Capability(W, "NF4/FP4 on Apple Silicon (backends/mps, officially supported): 4-bit weights dequantized "
               "to {activations}", c.BNB_INSTALL, weights=FOUR_BIT, activations=c.FLOAT_ACTS,
               targets=("metal",), when=c.COMPUTE_NATIVE, runs_as=DEQUANT),
    Capability(W, "NF4/FP4 on CPU: 4-bit weights dequantized to {activations} on the CPU cores",
               c.BNB_INSTALL, weights=FOUR_BIT, activations=c.FLOAT_ACTS, targets=("cpu",),
               when=c.COMPUTE_NATIVE, runs_as=DEQUANT),
    c.lowered_compute(c.BNB_INSTALL, weights=FOUR_BIT),
)


PRIORS = {
    ACCELERATOR: RuntimePriors(
        bandwidth_eff=0.55, compute_eff=0.45, layer_overhead_s=3e-4, step_overhead_s=3e-3, memory_gib=0.6,
        dequant_follows_verdict=True,
        source="eager PyTorch plus bnb gemv_4bit (decode) / dequantize + GEMM (prefill)"),
    "cpu": RuntimePriors(
        bandwidth_eff=0.55, compute_eff=0.5, layer_overhead_s=3e-4, step_overhead_s=3e-3, memory_gib=0.45,
        dequant="materialize", dequant_follows_verdict=True, gemv_eff=p.CPU_GEMV_PRIOR,
        source="bnb CPU backend; not measured here: ggml's decode GEMV figures"),
}
"""Planning priors (quantmatch.sdk.priors). The weight-only path follows the kernel the verdict names."""


class BitsAndBytesBackend(Backend):
    name = "bitsandbytes"
    description = "bitsandbytes LLM.int8() and NF4/FP4 layers (CUDA, ROCm, Apple Silicon, CPU)"
    targets = ("cuda", "rocm", "metal", "cpu")
    formats = ("bitsandbytes",)
    requires = ("bitsandbytes>=0.45", "torch>=2.4")
    install_hint = "pip install bitsandbytes"
    source = c.BNB_INSTALL
    priors = PRIORS
    capabilities = (
        *COMMON,
        *LLM_INT8,
        *FOUR,
        c.no_kernel("bitsandbytes", "LLM.int8() W8A8 and NF4/FP4 weight-only linear layers", c.BNB_INSTALL),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(BitsAndBytesBackend)
