"""bitsandbytes: LLM.int8() and NF4/FP4 4-bit linear layers for PyTorch (CUDA, ROCm, Apple, CPU).

LLM.int8() multiplies int8 activations by int8 weights on integer tensor cores (CUDA CC >= 7.5),
keeping outlier columns in fp16. NF4/FP4 store 4-bit weights and dequantize them to the compute
dtype (CUDA CC >= 6.0). v0.48/v0.50 list AMD (ROCm wheel for CDNA/RDNA targets), Apple Silicon
(``backends/mps``) and CPU (x86-64 needs AVX2) as supported. The rows follow the run-time choices of
bitsandbytes' own backends: the ROCm wheel's target list per release, and, on CPU since 0.50, a real int8
GEMM only where PyTorch's CPU capability is AVX512 (elsewhere the int8 product is computed in fp32).
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
BNB = "bitsandbytes-foundation/bitsandbytes"
BNB_HEAD = "95f9af30"
"""The bitsandbytes commit read (main after 0.50.1); tags read: 0.48.0 @406fb6aa, 0.49.0 @26f0c7a9,
0.50.0 @c5d481be, 0.50.1 @37d2a938."""
BNB_INSTALL_050 = f"{BNB} docs/source/installation.mdx @37d2a938 (0.50.1: ROCm wheel targets per ROCm version)"
BNB_INSTALL_049 = f"{BNB} docs/source/installation.mdx @26f0c7a9 (0.49.0)"
BNB_INSTALL_048 = f"{BNB} docs/source/installation.mdx @406fb6aa (0.48.0)"
BNB_CPU_OPS = (f"{BNB} bitsandbytes/backends/cpu/ops.py @{BNB_HEAD} (int8_linear_matmul: torch._int_mm only if "
               "torch >= 2.6 and get_cpu_capability() == 'AVX512')")
BNB_CPU_OPS_049 = (f"{BNB} bitsandbytes/backends/cpu/ops.py @26f0c7a9 (int8_linear_matmul: torch._int_mm if "
                   "torch >= 2.6)")
BNB_DEFAULT_OPS = (f"{BNB} bitsandbytes/backends/default/ops.py @{BNB_HEAD} (int8_linear_matmul 'default': "
                   "torch.matmul(A.float(), B.float().t()))")
BNB_CUDA_OPS = (f"{BNB} bitsandbytes/backends/cuda/ops.py @{BNB_HEAD} (int8_linear_matmul: cigemmlt_32, fp32 "
                "fallback when lda % 4 != 0)")
BNB_BACKENDS = (f"{BNB} bitsandbytes/backends/ @c5d481be (0.50.0 adds mps; the 0.45.0 tree has no backends/, "
                "0.46.0 has cpu, cuda, default)")
TORCH_AVX512 = ("pytorch/pytorch aten/src/ATen/native/DispatchStub.cpp (compute_cpu_capability: AVX512 needs avx512vl, "
                "avx512bw, avx512dq and fma3; GitHub-indexed copies)")

BNB_XPU_OPS = (f"{BNB} bitsandbytes/backends/xpu/ops.py @0155ecc6 (int8_linear_matmul registered for xpu as "
               "torch._int_mm only when torch >= 2.9, else the 'default' fp32 matmul; dequantize_4bit and gemv_4bit as "
               "SYCL kernels (Triton fallback); gemm_4bit: gemv_4bit for one row, else _gemm_4bit_default_impl)")
TORCH_XPU_INT_MM = ("pytorch/pytorch aten/src/ATen/native/mkldnn/xpu/Blas.cpp @26a39059 (_int_mm_out_xpu: "
                    "onednn::quantized_matmul s8 x s8 -> s32)")
XMX_INT8 = Requires(features_all=any_of("xmx", "int8"))

ROCM_050 = any_of("gfx908", "gfx90a", "gfx942", "gfx950", "gfx1250", "gfx1030", "gfx1031", "gfx1032", "gfx1033",
                  "gfx1034", "gfx1035", "gfx1036", "gfx1100", "gfx1101", "gfx1102", "gfx1103", "gfx1150", "gfx1151",
                  "gfx1152", "gfx1153", "gfx1200", "gfx1201")
"""0.50.1's ROCm wheels: 6.4-7.2 builds (gfx90a, gfx942, gfx950, gfx1100-1103, gfx1150-1153, gfx1200/1201)
plus the ROCm 7.14 build (adds gfx908, gfx1030-1036, gfx1250)."""
ROCM_049 = any_of("gfx90a", "gfx942", "gfx950", "gfx1100", "gfx1101", "gfx1150", "gfx1151", "gfx1200", "gfx1201")
ROCM_048 = any_of("gfx90a", "gfx942", "gfx1100")
AVX512 = any_of("avx512vl", "avx512bw", "avx512dq")
DEQUANT = "{weights} weights dequantized to {activations}, {activations} matmul"

COMMON = (
    Capability(U, "{device} ({arch}) is not among the bitsandbytes ROCm wheel targets of 0.50 (CDNA gfx908, "
               "gfx90a, gfx942, gfx950, gfx1250; RDNA gfx1030-1036, gfx1100-1103, gfx1150-1153, gfx1200, gfx1201); "
               "a source build with -DBNB_ROCM_ARCH is needed", BNB_INSTALL_050, targets=("rocm",),
               when=Requires(families=c.AMD, not_archs=ROCM_050), since="0.50.0"),
    Capability(U, "{device} ({arch}) is not among the bitsandbytes 0.49 ROCm wheel targets (gfx90a, gfx942, "
               "gfx950, gfx1100, gfx1101, gfx1150, gfx1151, gfx1200, gfx1201)", BNB_INSTALL_049, targets=("rocm",),
               when=Requires(families=c.AMD, not_archs=ROCM_049), since="0.49.0", until="0.50.0"),
    Capability(U, "{device} ({arch}) is not among the bitsandbytes ROCm wheel targets before 0.49 (gfx90a, "
               "gfx942, gfx1100)", BNB_INSTALL_048, targets=("rocm",),
               when=Requires(families=c.AMD, not_archs=ROCM_048), until="0.49.0"),
    Capability(U, "the bitsandbytes x86-64 CPU wheel requires AVX2, which {device} lacks", c.BNB_INSTALL,
               targets=("cpu",), when=Requires(families=c.X86, features_none=any_of("avx2"))),
    Capability(U, "bitsandbytes before 0.46 has no CPU backend (bitsandbytes/backends/ first appears in 0.46.0 "
               "with cpu, cuda and default)", BNB_BACKENDS, targets=("cpu",), layers=c.ALL_LAYERS, until="0.46.0"),
    Capability(U, "bitsandbytes before 0.49 does not support Apple Silicon (0.49 docs: 'experimental support "
               "... Apple Silicon'; backends/mps arrives in 0.50.0)", c.join(BNB_INSTALL_049, BNB_BACKENDS),
               targets=("metal",), layers=c.ALL_LAYERS, until="0.49.0"),
)

LLM_INT8 = (
    Capability(N, "LLM.int8(): int8_linear_matmul runs cuBLASLt igemmlt on integer tensor cores (outlier "
               "columns stay fp16); requires CUDA CC >= 7.5", c.join(SRC, BNB_CUDA_OPS),
               weights=INT8, activations=INT8, targets=("cuda",), when=Requires(families=c.NVIDIA, min_cc=7.5)),
    Capability(U, "LLM.int8() requires CUDA compute capability >= 7.5 (integer tensor cores)", c.BNB_INSTALL,
               weights=INT8, activations=INT8, targets=("cuda",)),
    Capability(N, "LLM.int8() on ROCm: 'all features supported for both consumer RDNA and Data Center CDNA'; "
               "int8 matmul on the int8 matrix cores (hipBLASLt)", c.join(c.BNB_INSTALL, BNB_CUDA_OPS),
               weights=INT8, activations=INT8, targets=("rocm",),
               when=Requires(families=c.AMD, features_all=any_of("int8"))),
    Capability(E, "LLM.int8() on Apple Silicon (backends/mps): the M1-M4 GPUs have no int8 matrix units and "
               "MPS has no int8 x int8 matmul (torch._int_mm for MPS is nightly-only), so the int8 product "
               "runs in float", c.join(c.BNB_INSTALL, c.TORCH_MPS_INT_MM, c.METAL_TYPE_TABLE), weights=INT8,
               activations=INT8, targets=("metal",), runs_as="int8 operands widened to float for the matmul"),
    Capability(N, "LLM.int8() on Intel XPU (backends/xpu): int8_linear_matmul is torch._int_mm, oneDNN s8 x s8 -> "
               "s32 on the XMX int8 path of {device}; this needs torch >= 2.9 (with an older torch bitsandbytes "
               "registers no XPU int8 kernel and the 'default' backend multiplies the int8 operands in fp32)",
               c.join(BNB_XPU_OPS, TORCH_XPU_INT_MM, BNB_DEFAULT_OPS, BNB_INSTALL_048), weights=INT8, activations=INT8,
               targets=("xpu",), when=XMX_INT8, since="0.48.0"),
    # CPU: since 0.50.0 the int8 kernel is registered only where PyTorch's CPU capability is AVX512.
    Capability(N, "LLM.int8() on CPU: int8_linear_matmul is torch._int_mm (oneDNN int8 GEMM) because PyTorch "
               "reports CPU capability AVX512 on {device}", c.join(BNB_CPU_OPS, TORCH_AVX512), weights=INT8,
               activations=INT8, targets=("cpu",), when=Requires(families=c.X86, features_all=AVX512),
               since="0.50.0"),
    Capability(E, "LLM.int8() on a CPU without AVX-512 (PyTorch capability below AVX512, or any Arm CPU): "
               "bitsandbytes registers no CPU int8 kernel, so the 'default' backend multiplies the int8 operands "
               "in fp32 (torch.matmul(A.float(), B.float().t())): int8 storage, fake-quantized math",
               c.join(BNB_CPU_OPS, BNB_DEFAULT_OPS, TORCH_AVX512), weights=INT8, activations=INT8,
               targets=("cpu",), since="0.50.0", runs_as="int8 operands widened to fp32, fp32 matmul"),
    Capability(N, "LLM.int8() on CPU (0.46-0.49): int8 x int8 matmul through torch._int_mm on the CPU's "
               "integer dot units (torch >= 2.6)", c.join(BNB_CPU_OPS_049, c.QUANTO_QBYTES_MM), weights=INT8,
               activations=INT8, targets=("cpu",), when=c.INT8_UNIT, until="0.50.0"),
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
    Capability(W, "NF4/FP4 on Intel XPU (backends/xpu): SYCL gemv_4bit for single-token decode, otherwise the 4-bit "
               "weights are dequantized (SYCL dequantize_4bit) to {activations} for a oneDNN matmul",
               c.join(BNB_XPU_OPS, BNB_INSTALL_048), weights=FOUR_BIT, activations=c.FLOAT_ACTS, targets=("xpu",),
               when=c.COMPUTE_NATIVE, since="0.48.0", runs_as=DEQUANT),
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
    targets = ("cuda", "rocm", "metal", "xpu", "cpu")
    formats = ("bitsandbytes",)
    requires = ("bitsandbytes>=0.45", "torch>=2.4")
    install_hint = "pip install bitsandbytes"
    source = c.BNB_INSTALL
    runtime = "bitsandbytes"
    latest_version = "0.50.1"
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
