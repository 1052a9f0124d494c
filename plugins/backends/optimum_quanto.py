"""optimum-quanto: PyTorch quantized tensors (int2/int4/int8/fp8 weights, int8/fp8 activations).

quanto dispatches a few optimized kernels and dequantizes everywhere else: int8 x int8 through
``torch._int_mm`` (CUDA; CPU with torch >= 2.6), AWQ int4 (fp16, group 128) and TinyGemm int4
(bf16, group 128) on CUDA with cc major >= 8 (TinyGemm also on CPU), Marlin FP8 weights on cc >= 8,
``_weight_int8pack_mm`` for bf16 x int8 on MPS. Its README says kernels for all mixed matrix
multiplications on all devices are still to be implemented.
"""

from __future__ import annotations

from quantmatch.plugins.backends import _common as c
from quantmatch.plugins.backends import _priors as p
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability, Requires
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import ACCELERATOR, RuntimePriors
from quantmatch.sdk.verdict import Level

N, W, E, U = Level.NATIVE, Level.WEIGHT_ONLY, Level.EMULATED, Level.UNSUPPORTED
INT8 = ("int8",)
FP8 = c.FP8
QUANTO_WEIGHTS = ("int2", "int4", "int8")
CC8 = Requires(families=c.NVIDIA, min_cc=8.0)
DEQUANT = "{weights} weights dequantized to {activations}, {activations} matmul"

ACTIVATIONS = (
    Capability(N, "int8 x int8 runs torch._int_mm (integer tensor cores) when tokens > 16 and dims % 8 == 0",
               c.QUANTO_QBYTES_MM, weights=INT8, activations=INT8, targets=("cuda", "rocm"),
               when=c.INT8_UNIT),
    Capability(N, "int8 x int8 runs torch._int_mm on the CPU's integer dot units (torch >= 2.6)",
               c.QUANTO_QBYTES_MM, weights=INT8, activations=INT8, targets=("cpu",), when=c.INT8_UNIT),
    Capability(E, "no int8 x int8 kernel for {device} on {target}: both operands are dequantized and "
               "multiplied in float (slower than 16-bit)", c.join(c.QUANTO_QBYTES_MM, c.QUANTO_README),
               weights=INT8, activations=INT8, runs_as="int8 operands dequantized, float matmul"),
    Capability(U, "FP8 is not a Metal/MPS dtype (no FP8 in the Metal/MPS matmul type tables)",
               c.METAL_TYPE_TABLE, weights=FP8, targets=("metal",)),
    Capability(E, "quanto has no FP8 x FP8 matmul kernel: activations and weights are dequantized and "
               "multiplied in 16-bit", c.join(c.QUANTO_QBYTES_MM, c.QUANTO_README), weights=FP8,
               activations=FP8, runs_as="FP8 operands dequantized, 16-bit matmul"),
)

WEIGHT_ONLY = (
    Capability(W, "Marlin FP8 weight kernel (cc major >= 8): FP8 weights dequantized in registers, 16-bit "
               "tensor-core math", c.QUANTO_QBYTES, weights=FP8, activations=c.HALF_ACTS, targets=("cuda",),
               when=CC8, runs_as="FP8 weights dequantized by Marlin, {activations} MMA"),
    Capability(W, "AWQ int4 kernel (fp16, group 128, cc major >= 8): int4 weights dequantized in the GEMM",
               c.QUANTO_QBITS, weights=("int4",), activations=("fp16",), group_sizes=(128,),
               targets=("cuda",), when=CC8, runs_as="int4 weights dequantized in the AWQ GEMM, fp16 MMA"),
    Capability(W, "TinyGemm int4 (_weight_int4pack_mm; bf16, group 128, CUDA cc major >= 8)", c.QUANTO_QBITS,
               weights=("int4",), activations=("bf16",), group_sizes=(128,), targets=("cuda",), when=CC8,
               runs_as="int4 weights dequantized by tinygemm, bf16 MMA"),
    Capability(W, "TinyGemmWeightQBitsTensor on CPU (_weight_int4pack_mm; bf16, group 128)", c.QUANTO_QBITS,
               weights=("int4",), activations=("bf16",), group_sizes=(128,), targets=("cpu",),
               when=c.COMPUTE_NATIVE, runs_as="int4 weights dequantized by _weight_int4pack_mm, bf16 math"),
    Capability(W, "bf16 x int8 on MPS uses _weight_int8pack_mm (torch >= 2.4, bf16 activations, dims % 32)",
               c.QUANTO_QBYTES_MM, weights=INT8, activations=("bf16",), targets=("metal",),
               when=c.COMPUTE_NATIVE, runs_as="int8 weights dequantized by _weight_int8pack_mm, bf16 math"),
    Capability(W, "the MPS extension only unpacks: no optimized mixed matmul, so {weights} weights are "
               "dequantized and multiplied in {activations} (some ops fall back to the CPU)",
               c.join(c.QUANTO_README, c.QUANTO_QBYTES_MM, c.QUANTO_MPS_FALLBACK), weights=QUANTO_WEIGHTS,
               activations=c.FLOAT_ACTS, targets=("metal",), when=c.COMPUTE_NATIVE, runs_as=DEQUANT),
    Capability(W, "generic quanto path: {weights} weights dequantized, then a {activations} matmul (no "
               "specialised kernel for this device/dtype/group)", c.join(c.QUANTO_QBITS, c.QUANTO_README),
               weights=(*QUANTO_WEIGHTS, *FP8), activations=c.FLOAT_ACTS, when=c.COMPUTE_NATIVE,
               runs_as=DEQUANT),
    c.lowered_compute(c.QUANTO_README, weights=(*QUANTO_WEIGHTS, *FP8)),
)


PRIORS = {
    ACCELERATOR: RuntimePriors(
        bandwidth_eff=0.55, compute_eff=0.45, layer_overhead_s=3e-4, step_overhead_s=3e-3, memory_gib=0.6,
        dequant_follows_verdict=True, source="eager PyTorch plus quanto's Marlin/AWQ kernels (cc >= 8)"),
    "cpu": RuntimePriors(
        bandwidth_eff=0.55, compute_eff=0.5, layer_overhead_s=1e-3, step_overhead_s=3e-3, memory_gib=0.45,
        dequant="materialize", dequant_follows_verdict=True, dequant_passes=2.0, gemv_eff={"quant": 0.08},
        cast_eff={"fp8": 0.0034}, **p.TORCH_CPU_LOAD,
        source="no CPU kernels for weight-only types: weights dequantized to fp32 per forward in ~2 elementwise "
               "passes; its QTensor machinery (activation quantizer, qbytes_mm rescale, autograd Function wrappers) "
               "costs ~0.1 ms per linear beyond eager PyTorch's dispatch (torch.profiler: ~35 ms of an 88 ms step); "
               "int8 activations run torch._int_mm (0.08 of the 256-bit fp32 rate at M=1); float8 weights are cast "
               "element by element (x86 has no fp8 conversion instructions: ~0.0034 elements per FLOP of that rate) "
               f"({p.MEASURED_SPR})"),
}
"""Planning priors (quantmatch.sdk.priors). The weight-only path follows the kernel the verdict names."""


class OptimumQuantoBackend(Backend):
    name = "optimum-quanto"
    description = "optimum-quanto quantized tensors in PyTorch (CUDA, ROCm, MPS, CPU)"
    targets = ("cuda", "rocm", "metal", "cpu")
    formats = ("quanto",)
    requires = ("optimum-quanto>=0.2.4", "torch>=2.4")
    install_hint = "pip install optimum-quanto"
    runner = "quantmatch.plugins.backends.torch_runner:QuantoRunner"
    source = c.QUANTO_README
    priors = PRIORS
    capabilities = (
        *ACTIVATIONS,
        *WEIGHT_ONLY,
        c.no_kernel("optimum-quanto", "int2/int4/int8/fp8 weights, int8/fp8 activations", c.QUANTO_README),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(OptimumQuantoBackend)
