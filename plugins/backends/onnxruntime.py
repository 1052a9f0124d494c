"""ONNX Runtime: int8 QLinear/MatMulInteger ops and 4-bit MatMulNBits on the CPU, CUDA and ROCm EPs.

On the CPU (MLAS; KleidiAI on ARM64) int8 ops run on integer dot units through the QGEMM kernel MLAS's
platform check picks (AMX, AVX512-VNNI, AVX-VNNI, AVX2 vpmaddubsw; Arm I8MM on Linux, SDOT), and MatMulNBits
(2, 4 or 8 bits) computes in int8 when ``accuracy_level=4`` and the QNBitGemm dispatch has a CompInt8 kernel
(4/8-bit blocks of 16-256 on AVX2+ x86 or dot-product Arm), otherwise it dequantizes the weights for fp32
math. float8 QDQ graphs run fake-quantized (Q/DQ kernels exist, no float8 matmul).
On GPUs MatMulNBits is MatMul(A, Dequantize(B)) + a special GemV, and of the
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
# ---- CPU run-time gates (MLAS), read at the commits cited ---------------------------------------------------
ORT_PLATFORM = ("microsoft/onnxruntime onnxruntime/core/mlas/lib/platform.cpp @0112bef2 (MLAS_PLATFORM::"
                "MLAS_PLATFORM: cpuid/xcr0 checks pick GemmU8S8Dispatch, QNBitGemmDispatch; HasArmNeonDot, "
                "HasArmNeon_I8MM under __linux__)")
ORT_NBITS_KERNEL = ("microsoft/onnxruntime onnxruntime/contrib_ops/cpu/quantization/matmul_nbits.cc @001d12d2 "
                    "(GetComputeType: CompInt8 only if accuracy_level == 4 and MlasIsQNBitGemmAvailable, else "
                    "CompFp32; ORT_ENFORCE(nbits_ == 2 || nbits_ == 4 || nbits_ == 8))")
ORT_QNBIT = ("microsoft/onnxruntime onnxruntime/core/mlas/lib/qnbitgemm.cpp @001d12d2 (GetQNBitGemmVariant: "
             "CompInt8 variants for 4- and 8-bit blocks of 16/32/64/128/256 only)")
ORT_QDQ_FP8 = ("microsoft/onnxruntime onnxruntime/core/providers/cpu/cpu_execution_provider.cc @a0d18347 "
               "(opset-19 Float8E4M3FN/E5M2 QuantizeLinear and DequantizeLinear kernels under "
               "!DISABLE_FLOAT8_TYPES; the float8 GEMM, com.microsoft GemmFloat8, is registered for the CUDA EP "
               "only) ; "
               "https://onnx.ai/onnx/operators/onnx__QuantizeLinear.html")
ORT_NBITS_BITS_OLD = ("https://pypi.org/project/onnxruntime/1.21.0/ (wheel's onnxruntime_pybind11_state.so: 'Only 4b "
                      "quantization is supported for MatMulNBits op'; same string in 1.18.0 and 1.20.0) ; "
                      "https://pypi.org/project/onnxruntime/1.23.0/ (1.22.0 and 1.23.0: 'Only 4b and 8b quantization "
                      "is supported for MatMulNBits op') ; https://pypi.org/project/onnxruntime/1.24.1/ (1.24.1 to "
                      "1.32.0: 'Only 2b, 4b and 8b ...')")
NBITS_BLOCKS = (0, 16, 32, 64, 128, 256)
"""Group sizes MatMulNBits can run as CompInt8 blocks (qnbitgemm.cpp takes BlkLen 16-256); per-channel (0) counts
because quantmatch's exporter repeats a per-channel scale over blocks of the largest power of two up to 256
dividing K (plugins/methods/onnx_exact.py), so the graph never holds a larger block."""
NBITS_OK = ("int2", "int4", "int8")
NBITS_REFUSED = ("int3", "int5", "int6", "int7")
COMP_INT8 = ("int4", "int8")
AVX512_CORE = any_of("avx512f", "avx512bw", "avx512dq", "avx512vl")
NBITS_FP32 = "{weights} weights dequantized (CompFp32), fp32 GEMM"


def _qgemm(reason: str, runs_as: str, when: Requires) -> Capability:
    """int8 x int8 (QLinearMatMul / MatMulInteger / DynamicQuantizeMatMul) through the MLAS QGEMM kernel the
    platform check picked."""
    return Capability(N, f"int8 x int8 (QLinearMatMul / MatMulInteger / DynamicQuantizeMatMul) through MLAS: "
                      f"{reason}", c.join(ORT_PLATFORM, c.ORT_INT8_CPU), weights=INT8, activations=INT8,
                      targets=CPU, when=when, runs_as=runs_as)


def _comp_int8(reason: str, runs_as: str, when: Requires) -> Capability:
    """MatMulNBits accuracy_level=4 on a QNBitGemm dispatch that has the CompInt8 kernels."""
    return Capability(N, f"MatMulNBits with accuracy_level=4: A is quantized to int8 per block (CompInt8) and "
                      f"multiplied by the {{weights}} blocks with integer dot instructions; {reason}",
                      c.join(ORT_NBITS_KERNEL, ORT_QNBIT, ORT_PLATFORM, c.ORT_NBITS_INT8), weights=COMP_INT8,
                      activations=INT8, targets=CPU, group_sizes=NBITS_BLOCKS, when=when, runs_as=runs_as)


CPU_ROWS = (
    # QGEMM: platform.cpp upgrades GemmU8S8Dispatch / the U8S8 kernels in this order
    _qgemm("AMX-TILE + AMX-INT8 with the OS granting the tile state (MlasInitAMX) selects "
           "MlasGemmU8S8DispatchAmx", "u8s8 AMX tile GEMM", Requires(features_all=any_of("amx_tile", "amx_int8"))),
    _qgemm("AVX512-VNNI selects the MlasGemmU8S8KernelAvx512Vnni (vpdpbusd) kernels", "u8s8 AVX512-VNNI vpdpbusd",
           Requires(features_all=any_of("avx512_vnni"))),
    _qgemm("AVX-VNNI (no AVX-512) selects the MlasGemmU8S8KernelAvxVnni (vpdpbusd, 256-bit) kernels",
           "u8s8 AVX-VNNI vpdpbusd (256-bit)", Requires(features_all=any_of("avx_vnni"),
                                                        features_none=any_of("avx512bw"))),
    _qgemm("without VNNI the AVX2 / AVX512-core U8S8 kernels use vpmaddubsw (16-bit intermediate sums: "
           "full-range u8 x s8 can saturate)", "u8s8 vpmaddubsw + vpmaddwd", Requires(features_all=any_of("avx2"))),
    _qgemm("I8MM on Linux selects the MlasGemmU8X8DispatchUmmla / S8S8 Smmla kernels (the I8MM dispatch is "
           "compiled only under __linux__)", "int8 SMMLA/UMMLA", Requires(families=any_of("arm-cpu"),
                                                                              features_all=any_of("i8mm"))),
    _qgemm("ASIMD dot product selects the MlasGemmU8X8DispatchUdot / S8S8 Sdot kernels (I8MM is not used "
           "outside Linux)", "int8 SDOT/UDOT", Requires(features_all=any_of("dotprod"))),
    Capability(N, "int8 x int8 (QLinearMatMul / MatMulInteger / DynamicQuantizeMatMul) on the CPU's integer "
               "SIMD through MLAS's baseline kernels", c.join(ORT_PLATFORM, c.ORT_INT8_CPU), weights=INT8,
               activations=INT8, targets=CPU, when=c.INT8_UNIT),
    # MatMulNBits (bits 2, 4, 8 only)
    Capability(U, "MatMulNBits takes 2-, 4- and 8-bit weights only (ORT_ENFORCE in the CPU kernel: 'Only 2b, 4b "
               "and 8b quantization is supported for MatMulNBits op')", ORT_NBITS_KERNEL, weights=NBITS_REFUSED,
               targets=CPU),
    Capability(U, "MatMulNBits on the CPU took 4- and 8-bit weights only before onnxruntime 1.24 ('Only 4b and 8b "
               "quantization is supported for MatMulNBits op')", ORT_NBITS_BITS_OLD, weights=("int2",), targets=CPU,
               until="1.24.1"),
    Capability(U, "MatMulNBits on the CPU took 4-bit weights only before onnxruntime 1.22 ('Only 4b quantization is "
               "supported for MatMulNBits op')", ORT_NBITS_BITS_OLD, weights=("int8",), activations=c.FLOAT_ACTS,
               targets=CPU, until="1.22.0"),
    _comp_int8("AVX512-VNNI CPUs get MlasSQNBitGemmDispatchAvx512vnni", "{weights} x int8 blocks, AVX512-VNNI",
               Requires(features_all=any_of("avx512_vnni") | AVX512_CORE)),
    _comp_int8("AVX-512 core CPUs without VNNI get MlasSQNBitGemmDispatchAvx512 (vpmaddubsw)",
               "{weights} x int8 blocks, AVX-512 vpmaddubsw", Requires(features_all=AVX512_CORE)),
    _comp_int8("AVX-VNNI CPUs get MlasSQNBitGemmDispatchAvx2vnni", "{weights} x int8 blocks, AVX-VNNI (256-bit)",
               Requires(features_all=any_of("avx_vnni", "avx2"))),
    _comp_int8("AVX2 CPUs without VNNI get MlasSQNBitGemmDispatchAvx2 (vpmaddubsw); the QNBitGemm dispatch exists "
               "only from AVX2 up", "{weights} x int8 blocks, AVX2 vpmaddubsw", Requires(features_all=any_of("avx2"))),
    _comp_int8("Arm CPUs with the dot product get the NEON QNBitGemm dispatch with its CompInt8 kernels (sdot; "
               "i8mm where present)", "{weights} x int8 blocks, NEON SDOT/SMMLA",
               Requires(features_all=any_of("dotprod"))),
    Capability(W, "MatMulNBits falls back from accuracy_level=4 to dequantize + fp32 (CompFp32): "
               "MlasIsQNBitGemmAvailable is false for {weights} in blocks of this size on {device} (CompInt8 "
               "kernels exist for 4- and 8-bit blocks of 16-256, on x86 from AVX2 up and on Arm with the dot "
               "product)",
               c.join(ORT_NBITS_KERNEL, ORT_PLATFORM, c.ORT_NBITS_GPU), weights=NBITS_OK, activations=INT8,
               targets=CPU, runs_as=NBITS_FP32),
    Capability(W, "MatMulNBits with accuracy_level 0-3: activations are not quantized; B is dequantized and "
               "the math runs in fp32 on the CPU", c.join(c.ORT_NBITS, ORT_NBITS_KERNEL, c.ORT_NBITS_GPU),
               weights=NBITS_OK, activations=c.FLOAT_ACTS, targets=CPU,
               runs_as="{weights} weights dequantized, fp32 math"),
    # float8 QDQ: the CPU EP registers QuantizeLinear/DequantizeLinear for float8, but no float8 MatMul/GEMM
    Capability(E, "float8 QDQ graphs run fake-quantized on the CPU EP: QuantizeLinear/DequantizeLinear accept "
               "float8 (opset 19) but no CPU kernel multiplies float8 and the QDQ fusions cover 8/16-bit integer "
               "and int4 types only, so each DequantizeLinear output feeds an fp32 MatMul", ORT_QDQ_FP8,
               weights=c.FP8, targets=CPU,
               runs_as="fake-quantized: {weights} values quantized and dequantized to fp32, fp32 MatMul"),
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
    runtime = "onnxruntime"
    latest_version = "1.32.0"
    capabilities = (
        Capability(Level.UNSUPPORTED, "ONNX Runtime removed its ROCm execution provider in 1.23 (AMD GPUs run "
                   "through the MIGraphX EP, which quantmatch does not model)",
                   "https://github.com/microsoft/onnxruntime/pull/25181 (Delete ROCM EP) ; "
                   "https://github.com/microsoft/onnxruntime/pull/26733 ('ROCM ep was removed since onnxruntime "
                   "1.23')", targets=("rocm",), layers=c.ALL_LAYERS, since="1.23.0"),
        *c.float_baselines("ONNX Runtime", c.FLOAT_TYPES),
        *CPU_ROWS,
        *GPU_ROWS,
        c.no_kernel("ONNX Runtime", "int8 QLinear/MatMulInteger, MatMulNBits 2-8 bit, fp32/fp16 graphs",
                    c.ORT_NBITS),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(OnnxRuntimeBackend)
