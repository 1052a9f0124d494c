"""optimum-quanto: PyTorch quantized tensors (int2/int4/int8/fp8 weights, int8/fp8 activations).

The rows follow the checks quanto 0.2.7 makes when it picks a kernel (``WeightQBitsTensor.create``,
``WeightQBytesTensor.create``, the ``quanto::qbytes_mm`` dispatch and the extension loader):

- the ``quanto_cuda`` extension (AWQ int4 and Marlin FP8 kernels) loads only on Linux with a CUDA build of
  torch (``torch.version.cuda``); a ROCm build gets the ``quanto_hip`` extension, which only unpacks, and
  MPS gets ``quanto_mps``, which only unpacks;
- AWQ int4 (fp16, group 128, out_features >= 128), TinyGemm int4 on CUDA (bf16, group 128, CUDA >= 12.1) and
  Marlin FP8 weights (``qfloat8_e4m3fn``, no activation quantization, fp16/bf16) need
  ``torch.cuda.get_device_capability()[0] >= 8``; TinyGemm int4 also runs on any CPU (no ISA check);
- int8 x int8 runs ``torch._int_mm`` on CUDA/ROCm (tokens > 16, multiples of 8) and on CPU (torch >= 2.6);
- the MPS ``_weight_int8pack_mm`` path is registered on ``quanto_py::qbytes_mm``, an operator that is never
  defined, so on MPS ``quanto::qbytes_mm`` takes its default (dequantize) implementation;
- everything else quantizes activations (if asked) and dequantizes before a float matmul: the kernels
  that take 16-bit inputs call ``input.dequantize()``, the rest go through ``qfallback``. Such
  activations are fake-quantized: the verdict says so and is ``emulated``, never ``native``.
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
"""``torch.cuda.get_device_capability(data.device)[0] >= 8`` on a CUDA build (``torch.version.cuda``)."""
DEQUANT = "{weights} weights dequantized to {activations}, {activations} matmul"
FAKE_QUANT = ("{activations} activations fake-quantized (quantized, then dequantized) and {weights} weights "
              "dequantized to 16-bit, float matmul")

LATEST = "0.2.7"
_Q = "huggingface/optimum-quanto"
_V027 = "089d86ef"  # tag v0.2.7
_V026 = "f3c400e9"  # tag v0.2.6
_V025 = "d802bfaf"  # tag v0.2.5
_V024 = "832f7f5c"  # tag v0.2.4
Q_MM = f"{_Q} optimum/quanto/library/qbytes_mm.py @{_V027}"
Q_EXT = f"{_Q} optimum/quanto/library/extensions/__init__.py @{_V027}"
Q_CUDA_EXT = f"{_Q} optimum/quanto/library/extensions/cuda/__init__.py @{_V027}"
Q_QBITS = f"{_Q} optimum/quanto/tensor/weights/qbits.py @{_V027}"
Q_QBYTES = f"{_Q} optimum/quanto/tensor/weights/qbytes.py @{_V027}"
Q_TINYGEMM = f"{_Q} optimum/quanto/tensor/weights/tinygemm/qbits.py @{_V027}"
Q_AWQ = f"{_Q} optimum/quanto/tensor/weights/awq/qbits.py @{_V027}"
Q_QMODULE = f"{_Q} optimum/quanto/nn/qmodule.py @{_V027} (quantize_input: quantize_activation)"
Q_FALLBACK = f"{_Q} optimum/quanto/tensor/qtensor.py @{_V027} (qfallback dequantizes every QTensor argument)"
Q_README = f"{_Q} README.md @{_V027}"
Q_MM_OLD = (f"{_Q} optimum/quanto/library/qbytes_mm.py @{_V026} (torch > 2.5.0) ; {_Q} "
            f"optimum/quanto/library/qbytes_mm.py @{_V025} (torch > 2.4.1) ; {_Q} "
            f"optimum/quanto/library/qbytes_mm.py @{_V024} (torch > 2.4.0)")
Q_MARLIN_SINCE = (f"{_Q} optimum/quanto/tensor/weights/qbytes.py @{_V025} (MarlinF8QBytesTensor first selected) ; "
                  f"{_Q} optimum/quanto/tensor/qbytes.py @{_V024} (no Marlin FP8 path)")
Q_HIP_EXT = (f"{_Q} optimum/quanto/library/extensions/__init__.py @{_V026} (quanto_hip: unpack only) ; "
             f"{_Q} optimum/quanto/library/extensions/hip/__init__.py @{_V027}")
Q_MPS = (f"{Q_MM} (qbytes_mm_impl_mps is registered on quanto_py::qbytes_mm, which is never defined; "
         "quanto::qbytes_mm has CPU, CUDA and default kernels only) ; "
         f"{_Q} optimum/quanto/library/extensions/mps/__init__.py @{_V027} (unpack only)")

ACTIVATIONS = (
    Capability(N, "int8 x int8 runs torch._int_mm (integer tensor cores) when tokens > 16, tokens % 8 == 0 and "
               "both dims % 8 == 0; smaller batches (decode) take the default path, where the int8 activations "
               "are fake-quantized (dequantized with the weights, float matmul)",
               c.join(Q_MM, Q_QBYTES), weights=INT8, activations=INT8, targets=("cuda", "rocm"),
               when=c.INT8_UNIT),
    Capability(N, "int8 x int8 runs torch._int_mm on the CPU's integer dot units (quanto 0.2.7 gates it on "
               "torch >= 2.6; older torch fake-quantizes: both operands dequantized, float matmul)",
               Q_MM, weights=INT8, activations=INT8, targets=("cpu",), when=c.INT8_UNIT, since="0.2.7"),
    Capability(N, "int8 x int8 runs torch._int_mm on the CPU's integer dot units (quanto 0.2.4-0.2.6 gate it on "
               "torch > 2.4.0, > 2.4.1 and > 2.5.0 respectively)",
               Q_MM_OLD, weights=INT8, activations=INT8, targets=("cpu",), when=c.INT8_UNIT, until="0.2.7"),
    Capability(E, "no int8 x int8 kernel for {device} on {target}: the int8 activations are fake-quantized "
               "(quantized, then dequantized with the weights) and multiplied in float (slower than 16-bit)",
               c.join(Q_MM, Q_README), weights=INT8, activations=INT8,
               runs_as="int8 activations fake-quantized, int8 weights dequantized, float matmul"),
    Capability(U, "FP8 is not a Metal/MPS dtype (no FP8 in the Metal/MPS matmul type tables)",
               c.METAL_TYPE_TABLE, weights=FP8, targets=("metal",)),
    Capability(U, "FP8 is not a Metal/MPS dtype (no FP8 in the Metal/MPS matmul type tables): quanto cannot "
               "quantize activations to it", c.METAL_TYPE_TABLE, activations=FP8, targets=("metal",)),
    Capability(E, "quanto has no float8 matmul: {activations} activations are fake-quantized (quantized per "
               "tensor, then dequantized) and {weights} weights dequantized, a 16-bit matmul (slower than "
               "16-bit alone)", c.join(Q_MM, Q_QMODULE, Q_FALLBACK, Q_README),
               weights=(*QUANTO_WEIGHTS, *FP8), activations=FP8, runs_as=FAKE_QUANT),
    Capability(E, "quanto has no {weights} x int8 kernel: the int8 activations are fake-quantized (the int4 "
               "kernels call input.dequantize(), the rest go through qfallback) and {weights} weights "
               "dequantized, a 16-bit matmul", c.join(Q_TINYGEMM, Q_AWQ, Q_FALLBACK, Q_QMODULE),
               weights=("int2", "int4", *FP8), activations=INT8, runs_as=FAKE_QUANT),
)

WEIGHT_ONLY = (
    Capability(W, "Marlin FP8 weight kernel (qfloat8_e4m3fn, no activation quantization, CUDA cc major >= 8, "
               "quanto_cuda extension: Linux and a CUDA build; dims >= 64 and multiples of 64/128): FP8 weights "
               "dequantized in registers, 16-bit tensor-core math", c.join(Q_QBYTES, Q_EXT),
               weights=FP8, activations=c.HALF_ACTS, targets=("cuda",), when=CC8,
               runs_as="FP8 weights dequantized by Marlin, {activations} MMA", since="0.2.5"),
    Capability(W, "AWQ int4 kernel (fp16, group 128, out_features >= 128, CUDA cc major >= 8, quanto_cuda "
               "extension: Linux and a CUDA build): int4 weights dequantized in the GEMM",
               c.join(Q_QBITS, Q_CUDA_EXT, Q_EXT), weights=("int4",), activations=("fp16",), group_sizes=(128,),
               targets=("cuda",), when=CC8, runs_as="int4 weights dequantized in the AWQ GEMM, fp16 MMA"),
    Capability(W, "TinyGemm int4 (_weight_int4pack_mm; bf16, group 128, a CUDA >= 12.1 build, CUDA cc major "
               ">= 8)", c.join(Q_QBITS, Q_TINYGEMM), weights=("int4",), activations=("bf16",),
               group_sizes=(128,), targets=("cuda",), when=CC8,
               runs_as="int4 weights dequantized by tinygemm, bf16 MMA"),
    Capability(W, "TinyGemmWeightQBitsTensor on CPU (_weight_int4pack_mm_for_cpu; bf16, group 128; quanto checks "
               "only the device type, no CPU ISA)", c.join(Q_QBITS, Q_TINYGEMM), weights=("int4",),
               activations=("bf16",), group_sizes=(128,), targets=("cpu",), when=c.COMPUTE_NATIVE,
               runs_as="int4 weights dequantized by _weight_int4pack_mm, bf16 math"),
    Capability(W, "quanto on MPS: the MPS extension only unpacks and qbytes_mm's _weight_int8pack_mm path is "
               "registered on an operator quanto never calls, so {weights} weights are dequantized and "
               "multiplied in {activations} (some ops fall back to the CPU)",
               c.join(Q_MPS, Q_README, c.QUANTO_MPS_FALLBACK), weights=QUANTO_WEIGHTS,
               activations=c.FLOAT_ACTS, targets=("metal",), when=c.COMPUTE_NATIVE, runs_as=DEQUANT),
    Capability(W, "quanto on a ROCm build: the HIP extension only unpacks, and the AWQ/TinyGemm/Marlin kernels "
               "need a CUDA build (torch.version.cuda), so {weights} weights are dequantized, then a "
               "{activations} matmul", c.join(Q_HIP_EXT, Q_QBITS, Q_QBYTES), weights=(*QUANTO_WEIGHTS, *FP8),
               activations=c.FLOAT_ACTS, targets=("rocm",), when=c.COMPUTE_NATIVE, runs_as=DEQUANT,
               since="0.2.6"),
    Capability(W, "generic quanto path: {weights} weights dequantized, then a {activations} matmul (no "
               "specialised kernel for this device/dtype/group)", c.join(Q_QBITS, Q_QBYTES, Q_MM, Q_README),
               weights=(*QUANTO_WEIGHTS, *FP8), activations=c.FLOAT_ACTS, when=c.COMPUTE_NATIVE,
               runs_as=DEQUANT),
    c.lowered_compute(Q_README, weights=(*QUANTO_WEIGHTS, *FP8)),
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
    source = Q_README
    runtime = "optimum-quanto"
    latest_version = LATEST
    priors = PRIORS
    capabilities = (
        *ACTIVATIONS,
        *WEIGHT_ONLY,
        c.no_kernel("optimum-quanto", "int2/int4/int8/fp8 weights, int8/fp8 activations", Q_README),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(OptimumQuantoBackend)
