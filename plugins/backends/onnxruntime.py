"""ONNX Runtime: int8 QLinear/MatMulInteger ops and 4-bit MatMulNBits on the CPU, CUDA and ROCm EPs.

On the CPU (MLAS; KleidiAI on ARM64) int8 ops run on integer dot units, and MatMulNBits computes in
int8 when ``accuracy_level=4`` (activations quantized per block), otherwise it dequantizes the
weights for fp32 math. On GPUs MatMulNBits is MatMul(A, Dequantize(B)) + a special GemV, and of the
int8 ops only MatMulInteger uses the tensor cores (cuBLASLt IMMA, CC >= 7.5): int8 QDQ/QOperator
graphs are not runnable on the CUDA EP (use the TensorRT EP).
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
INT8 = ("int8",)
NBITS_WEIGHTS = ("int2", "int3", "int4", "int5", "int6", "int7", "int8")
GPU = ("cuda", "rocm")
CPU = ("cpu",)
FAST_INT8_DOT = Requires(features_any=any_of("avx512_vnni", "avx_vnni", "amx_int8", "dotprod", "i8mm"))

CPU_ROWS = (
    Capability(N, "int8 x int8 (QLinearMatMul / MatMulInteger / DynamicQuantizeMatMul) on the CPU's integer "
               "dot units through MLAS (VNNI/AMX on x86, sdot/i8mm on ARM64)",
               c.join(c.ORT_INT8_CPU, c.ORT_NBITS), weights=INT8, activations=INT8, targets=CPU,
               when=c.INT8_UNIT),
    Capability(N, "MatMulNBits with accuracy_level=4: A is quantized to int8 per block internally and the "
               "product uses VNNI/AMX/sdot/i8mm int8 dot instructions",
               c.join(c.ORT_NBITS, c.ORT_NBITS_INT8), weights=NBITS_WEIGHTS, activations=INT8,
               targets=CPU, when=FAST_INT8_DOT),
    Capability(N, "MatMulNBits with accuracy_level=4: A is quantized to int8 per block; without "
               "VNNI MLAS uses its AVX2 int8 kernels (pmaddubsw) - still integer math",
               c.join(c.ORT_NBITS, c.ORT_NBITS_INT8), weights=NBITS_WEIGHTS, activations=INT8,
               targets=CPU, when=c.INT8_UNIT),
    Capability(W, "{device} has no int8 dot product: MatMulNBits falls back from accuracy_level=4 to "
               "dequantize + fp32", c.join(c.ORT_NBITS, c.ORT_NBITS_GPU), weights=NBITS_WEIGHTS,
               activations=INT8, targets=CPU, runs_as="{weights} weights dequantized, fp32 math"),
    Capability(W, "MatMulNBits with accuracy_level 0-3: activations are not quantized; B is dequantized and "
               "the math runs in fp32 on the CPU", c.join(c.ORT_NBITS, c.ORT_NBITS_GPU),
               weights=NBITS_WEIGHTS, activations=c.FLOAT_ACTS, targets=CPU,
               runs_as="{weights} weights dequantized, fp32 math"),
)

GPU_ROWS = (
    Capability(N, "MatMulInteger on the CUDA EP uses cuBLASLt IMMA (int8 tensor cores) when CC >= 7.5 "
               "(dynamic int8 graphs; int8 QDQ/QOperator graphs are not runnable on the CUDA EP)",
               c.join(c.ORT_IMMA, c.ORT_OPTIMUM_GPU), weights=INT8, activations=INT8, targets=("cuda",),
               when=Requires(families=c.NVIDIA, min_cc=7.5)),
    Capability(U, "int8 models on the {target} EP: only MatMulInteger has an IMMA kernel (CUDA, CC >= 7.5); "
               "'not possible to run quantized models on CUDAExecutionProvider' (use the TensorRT EP)",
               c.join(c.ORT_OPTIMUM_GPU, c.ORT_IMMA), weights=INT8, activations=INT8, targets=GPU),
    Capability(W, "MatMulNBits on GPU = MatMul(A, Dequantize(B)) + special GemV; accuracy_level is a CPU "
               "option, so activations stay 16/32-bit", c.join(c.ORT_NBITS_GPU, c.ORT_NBITS),
               weights=NBITS_WEIGHTS, activations=(*c.FLOAT_ACTS, "int8"), targets=GPU,
               runs_as="{weights} weights dequantized on the GPU, fp16/fp32 GEMM/GemV"),
)


PRIORS = {
    ACCELERATOR: RuntimePriors(
        bandwidth_eff=0.65, compute_eff=0.5, layer_overhead_s=5e-5, step_overhead_s=1e-3, memory_gib=0.5,
        source="ORT CUDA EP: MatMulNBits fused dequant GemV"),
    "cpu": RuntimePriors(
        bandwidth_eff=0.55, compute_eff=0.6, layer_overhead_s=2e-5, step_overhead_s=0.5e-3, memory_gib=0.6,
        gemv_eff={"quant": 0.15},
        source="ORT CPU EP: the fp32 GEMV reads at ~55% of the single-thread copy test; MatMulNBits and "
               "MatMulInteger at M=1 reach ~0.15 of the 256-bit fp32 rate (12 GFLOP/s on one 2.6 GHz core); the "
               "session, its arena and the tokenizer stack hold ~0.6 GiB beyond the weights "
               "(benchmarks/bench_planner.py, 2026-12-05: 0.39-0.55 GiB more than a 0.15 GiB prior predicted for "
               "fp32, int8 and 4-bit graphs)"),
}
"""Planning priors (quantmatch.sdk.priors)."""


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "ONNX Runtime: int8 QLinear/MatMulInteger and MatMulNBits (CPU, CUDA, ROCm EPs)"
    targets = ("cpu", "cuda", "rocm")
    formats = ("onnx",)
    requires = ("onnxruntime>=1.18",)
    install_hint = "pip install onnxruntime  (onnxruntime-gpu for the CUDA EP)"
    runner = "quantmatch.plugins.backends.onnxruntime_runner:OnnxRunner"
    source = c.ORT_NBITS
    priors = PRIORS
    serves_unquantized = True
    capabilities = (
        *c.float_baselines("ONNX Runtime", c.FLOAT_TYPES),
        *CPU_ROWS,
        *GPU_ROWS,
        c.no_kernel("ONNX Runtime", "int8 QLinear/MatMulInteger, MatMulNBits 2-8 bit, fp32/fp16 graphs",
                    c.ORT_NBITS),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(OnnxRuntimeBackend)
