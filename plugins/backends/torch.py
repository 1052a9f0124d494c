"""PyTorch (eager, with transformers): unquantized baselines and compressed-tensors checkpoints.

Baselines are native where the device computes the dtype, emulated where it only has a lowering
(bf16 on Cascade Lake, for example). Quantized checkpoints loaded through transformers run on plain
torch ops: ``torch._int_mm`` for int8 x int8, ``torch._scaled_mm`` for FP8 (compute capability >= 8.9
or MI300). Weight-only compressed-tensors checkpoints are decompressed to the float type when they
load (or on the first forward): the running model is as large and as fast as the float one, so on
CUDA and ROCm they are *emulated* (a smaller file, no run-time win); vLLM is what runs them packed.
On the CPU quantmatch's runner packs int4 grids (groups of 32-256, or per-channel) and per-channel
symmetric int8 for PyTorch's weight-only kernels instead (``packed_linear``): weight-only there.
MPS has int4/int8 weight-only kernels (``_weight_int4pack_mm``, ``_weight_int8pack_mm``,
macOS 15+).
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
FP8 = c.FP8
GPU = ("cuda", "rocm")
WEIGHT_TYPES = (*c.INT_WEIGHTS, *FP8, *c.FP4_BLOCK)
ALWAYS_CPU = Requires()
DEQUANT = "{weights} weights decompressed to {activations}, {activations} matmul"
TRANSFORMERS_QUANTIZED_CACHE = ("huggingface/transformers src/transformers/cache_utils.py (QuantizedCache, "
                                "HQQQuantizedLayer: nbits 1/2/3/4/8, residual_length)")

# ---- CPU run-time gates, read at the commits cited ------------------------------------------------------------
TORCH_MKLDNN_BF16 = ("pytorch/pytorch aten/src/ATen/native/mkldnn/Utils.h (mkldnn_bf16_device_check: x86 "
                     "ideep::has_bf16_type_support(), 'bf16 path needs the cpu support avx_ne_convert or avx512bw, "
                     "avx512vl and avx512dq'; Arm cpuinfo_has_arm_bf16(); text verified via GitHub-indexed mirror "
                     "id 6505418653)")
TORCH_INT4MM_ISA = ("pytorch/pytorch aten/src/ATen/native/cpu/int4mm_kernel.cpp @00b919af (tinygemm_kernel: "
                    "CPU_CAPABILITY_AVX512 and CPU_CAPABILITY_AVX2 bodies for bf16 activations, an aarch64 NEON "
                    "body, else the scalar loop; the capability is torch.backends.cpu.get_cpu_capability())")
TORCH_SCALED_MM_CPU = ("pytorch/pytorch aten/src/ATen/native/Blas.cpp @017943b7 (_scaled_mm_out_cpu: oneDNN "
                       "mkldnn_scaled_mm only if cpuinfo_has_x86_amx_int8(), else _scaled_mm_out_cpu_emulated: "
                       "'mat1.to(kFloat)' ... at::matmul in fp32)")
CT_FAKE_QUANT = ("neuralmagic/compressed-tensors src/compressed_tensors/quantization/lifecycle/forward.py @b29792fd "
                 "(wrap_module_forward_quantized: '(fake) quantize input activations')")
AVX512_CORE = any_of("avx512f", "avx512bw", "avx512dq", "avx512vl")
TORCH_XPU_BLAS = ("pytorch/pytorch aten/src/ATen/native/mkldnn/xpu/Blas.cpp @26a39059 (XPU mm/addmm/bmm: "
                  "onednn::matmul; _int_mm_out_xpu: onednn::quantized_matmul s8 x s8 -> s32; _weight_int4pack_mm_xpu: "
                  "onednn::woq_matmul_int4)")
XMX_TYPES = ("intel/llvm sycl/doc/extensions/experimental/sycl_ext_matrix/sycl_ext_oneapi_matrix.asciidoc @0102582a "
             "(Intel XMX supported combinations: s8/u8, fp16, bf16 on DG2 and PVC; tf32 on PVC only)")
XPU_FLOAT = Capability(N, "PyTorch XPU sends {weights} matmuls to oneDNN, which runs them on the XMX matrix engines "
                       "of {device}", c.join(TORCH_XPU_BLAS, XMX_TYPES),
                       weights=("tf32", "fp16", "bf16"), layers=c.ALL_LAYERS,
                       targets=("xpu",), when=Requires(features_all=any_of("xmx"), compute_native=True))
XPU_INT8 = Capability(N, "int8 x int8 through torch._int_mm on XPU: oneDNN quantized_matmul (s8 x s8 -> s32) on the "
                      "XMX int8 path of {device}", c.join(TORCH_XPU_BLAS, XMX_TYPES), weights=INT8,
                      activations=INT8, targets=("xpu",), when=Requires(features_all=any_of("xmx", "int8")))

CPU_BF16 = (
    Capability(E, "bf16 matmuls on {device} go to oneDNN (mkldnn_bf16_device_check holds: AVX512BW/VL/DQ), which "
               "has no native BF16 unit here and computes in fp32", TORCH_MKLDNN_BF16, weights=("bf16",),
               targets=("cpu",), when=Requires(features_all=AVX512_CORE, compute_emulated=True),
               runs_as="oneDNN bf16 matmul lowered to fp32 FMA on AVX-512 ({lowering})"),
    Capability(E, "bf16 matmuls on {device} go to oneDNN (mkldnn_bf16_device_check holds: AVX-NE-CONVERT), which "
               "converts BF16 to fp32 for the math", TORCH_MKLDNN_BF16, weights=("bf16",), targets=("cpu",),
               when=Requires(features_all=any_of("avx_ne_convert"), compute_emulated=True),
               runs_as="oneDNN bf16 matmul, BF16 converted with AVX-NE-CONVERT, fp32 FMA"),
    Capability(E, "bf16 matmuls on {device} skip oneDNN (mkldnn_bf16_device_check fails: no AVX-NE-CONVERT and no "
               "AVX512BW/VL/DQ, or no Arm FEAT_BF16) and take ATen's own cpublas gemm, widening BF16 to fp32",
               TORCH_MKLDNN_BF16, weights=("bf16",), targets=("cpu",), when=c.COMPUTE_EMULATED,
               runs_as="ATen cpublas gemm: BF16 widened to fp32 ({lowering})"),
)

BASELINES = (
    XPU_FLOAT,
    Capability(N, "bf16 on MPS: the Apple GPU computes bfloat natively (PyTorch MPS bf16 needs macOS 14 or "
               "newer; op coverage is incomplete)", c.TORCH_MPS_BF16, weights=("bf16",), layers=c.ALL_LAYERS,
               targets=("metal",), when=c.COMPUTE_NATIVE),
    *CPU_BF16,
    *c.float_baselines("PyTorch", c.FLOAT_TYPES, layers=c.ALL_LAYERS),
    Capability(U, "{device} has no {weights} unit and no known lowering for it on {target}", c.FLOAT_TYPES,
               weights=c.BASELINES, layers=c.ALL_LAYERS),
)

INT8_W8A8 = (
    XPU_INT8,
    Capability(E, "MPS has no int8 x int8 matmul (torch._int_mm for MPS only landed in nightly) and the "
               "M1-M4 GPUs have no int8 matrix units: the product runs in float",
               c.join(c.TORCH_MPS_INT_MM, c.METAL_TYPE_TABLE, c.LLAMA_METAL4), weights=INT8, activations=INT8,
               targets=("metal",), runs_as="int8 operands widened to float for the matmul"),
    Capability(N, "int8 x int8 through torch._int_mm on int8 matrix/dot units (cuBLASLt IMMA on CUDA)",
               c.join(c.QUANTO_QBYTES_MM, c.ORT_IMMA), weights=INT8, activations=INT8, when=c.INT8_UNIT),
    Capability(E, "no int8 matrix unit for torch._int_mm: {lowering}",
               c.join(c.QUANTO_QBYTES_MM, c.ORT_IMMA), weights=INT8, activations=INT8,
               when=c.COMPUTE_EMULATED, runs_as="{lowering}"),
)

FP8_ROWS = (
    Capability(E, "FP8 W8A8 compressed-tensors checkpoints on the CPU run fake-quantized: the FP8 weights are "
               "decompressed to {activations} and compressed-tensors' wrapped forward quantizes each input to FP8 "
               "and dequantizes it before a float matmul (no CPU has FP8 arithmetic; even torch._scaled_mm on CPU "
               "upcasts to fp32 unless AMX-INT8 routes it to oneDNN)",
               c.join(CT_FAKE_QUANT, c.TRANSFORMERS_CT_DECOMPRESS, TORCH_SCALED_MM_CPU), weights=FP8,
               activations=FP8, targets=("cpu",),
               runs_as="fake-quantized: activations quantized to FP8 and dequantized, FP8 weights decompressed, "
                       "float matmul"),
    Capability(U, "no FP8 type in the Metal/MPS matmul type tables (MPP MatMul2d lists half, bfloat, float "
               "and int8 only)", c.METAL_TYPE_TABLE, weights=FP8, targets=("metal",)),
    Capability(N, "FP8 x FP8 through torch._scaled_mm on FP8 tensor/matrix cores "
               "(FineGrainedFP8 needs compute capability >= 8.9; MI300 computes FNUZ FP8)",
               c.join(c.TRANSFORMERS_FP8, c.NV_FORUM_ADA_FP8, c.ROCM_PRECISION), weights=FP8,
               activations=FP8, targets=GPU, when=c.GPU_FP8),
    Capability(U, "FP8 matmul (torch._scaled_mm, transformers FineGrainedFP8) needs FP8 tensor cores "
               "(compute capability >= 8.9, or MI300); {device} has none",
               c.join(c.TRANSFORMERS_FP8, c.ROCM_PRECISION), weights=FP8, activations=FP8),
)

KV_QUANTIZED = (
    Capability(W, "{weights} KV cache through transformers' QuantizedCache (HQQ backend): keys and values stored "
               "as {weights} codes with a scale and zero point per group, dequantized to the compute type for "
               "the attention math (the most recent tokens are kept unquantized)", TRANSFORMERS_QUANTIZED_CACHE,
               weights=c.INT4_INT8, activations=c.INT4_INT8, layers=c.KV, targets=("cpu", "cuda", "rocm"),
               runs_as="{weights} KV dequantized to the compute type for the attention math"),
)

WEIGHT_ONLY = (
    Capability(U, "PyTorch has no INT4 x INT4 GEMM; INT4 only appears as weight-only", c.PTX_MMA,
               weights=("int4",), activations=("int4",)),
    Capability(W, "MPS int4/int8 weight-only kernels (_weight_int4pack_mm / _weight_int8pack_mm, macOS 15+)",
               c.TORCH_MPS_WEIGHT_ONLY, weights=c.INT4_INT8, activations=c.FLOAT_ACTS, targets=("metal",),
               methods=c.FORMATS_ONLY, when=c.COMPUTE_NATIVE,
               runs_as="{weights} weights unpacked in the MPS kernel, {activations} math"),
    Capability(U, "transformers does not load compressed-tensors (or AWQ) checkpoints on Metal (its "
               "quantization overview lists them \u274c for Metal)", c.TRANSFORMERS_OVERVIEW,
               weights=WEIGHT_TYPES, activations=c.FLOAT_ACTS, targets=("metal",)),
    *(Capability(W, "{weights} weight-only compressed-tensors checkpoints on the CPU: quantmatch's torch runner "
                 "packs the codes for PyTorch's _weight_int4pack_mm_for_cpu (groups of 32-256, or a multiple / "
                 "per-channel scale repeated; asymmetric zero points folded) instead of decompressing them; the "
                 f"kernel unpacks nibbles and multiplies in fp32 ({isa})",
                 c.join(c.TORCH_CPU_INT4PACK, TORCH_INT4MM_ISA), weights=("int2", "int3", "int4"),
                 activations=c.FLOAT_ACTS, targets=("cpu",), group_sizes=(0, 32, 64, 128, 256, 512, 1024),
                 when=when, runs_as=f"{{weights}} weights unpacked inside the kernel, {math}")
      for isa, math, when in (
          ("ATen CPU capability AVX512: AVX512F/BW/VL/DQ", "512-bit fp32 FMA on bf16 activations",
           Requires(features_all=AVX512_CORE)),
          ("ATen CPU capability AVX2", "256-bit fp32 FMA on bf16 activations", Requires(features_all=any_of("avx2"))),
          ("aarch64 NEON body", "NEON fp32 FMA", Requires(features_all=any_of("asimd"))),
          ("no vectorized body for this CPU: scalar loop", "scalar fp32 math (slow)", ALWAYS_CPU))),
    Capability(W, "int8 weight-only per-channel symmetric compressed-tensors checkpoints on the CPU: quantmatch's "
               "torch runner packs them for PyTorch's _weight_int8pack_mm (one scale per output row) instead "
               "of decompressing them", c.TORCH_CPU_INT8PACK, weights=("int8",), activations=c.FLOAT_ACTS,
               targets=("cpu",), group_sizes=(0,), symmetric=True,
               runs_as="int8 weights widened inside the kernel, bf16 math"),
    Capability(E, "compressed-tensors checkpoints loaded by transformers: the {weights} weights are "
               "decompressed to {activations} at load (or on the first forward), so the running model holds "
               "and reads full-size weights: a smaller file, no memory or speed win (vLLM runs them packed)",
               c.join(c.TRANSFORMERS_OVERVIEW, c.TRANSFORMERS_CT_DECOMPRESS), weights=WEIGHT_TYPES,
               activations=c.FLOAT_ACTS, when=c.COMPUTE_NATIVE, runs_as=DEQUANT),
    c.lowered_compute(c.TRANSFORMERS_OVERVIEW, weights=WEIGHT_TYPES),
)


PRIORS = {
    ACCELERATOR: RuntimePriors(
        bandwidth_eff=0.65, compute_eff=0.55, layer_overhead_s=2.5e-4, step_overhead_s=3e-3, memory_gib=0.6,
        dequant="materialize", dequant_follows_verdict=True, decompresses_at_load=True,
        source="eager PyTorch/transformers: ~15 kernel launches per layer from Python; compressed-tensors "
               "decompresses weight-only layers per forward"),
    "cpu": RuntimePriors(
        bandwidth_eff=0.55, compute_eff=0.6, layer_overhead_s=4.5e-4, step_overhead_s=2e-3, memory_gib=0.4,
        dequant="materialize", dequant_follows_verdict=True, decompresses_at_load=True,
        gemv_eff={"quant": 0.08, "bf16": 0.08, "fp16": 0.08}, decompress_retained=0.4, **p.TORCH_CPU_LOAD,
        source="eager PyTorch/transformers on CPU: ~195 aten calls per decoder layer per token at ~2.5 us each "
               "outside the matmuls (0.45 ms per layer); the fp32 GEMV (aten::mm) reads at ~55% of the single-thread "
               "copy test; bf16 GEMV and torch._int_mm at M=1 are compute-bound at ~0.08 of the 256-bit fp32 rate "
               "(aten::mm 44 ms per token in bf16 and 45 ms in fp32; _int_mm 31 ms for the int8 layers); python + "
               "torch + transformers + generate ~0.4 GiB resident; compressed-tensors checkpoints are decompressed "
               f"to fp32 and the allocator keeps ~0.4 of that size from the temporaries ({p.MEASURED_SPR})"),
}
"""Planning priors (quantmatch.sdk.priors). The weight-only path follows the kernel the verdict names;
weight-only compressed-tensors checkpoints are decompressed when they load."""


class TorchBackend(Backend):
    name = "torch"
    description = "PyTorch eager (with transformers): float baselines and compressed-tensors checkpoints"
    targets = ("cuda", "rocm", "metal", "xpu", "cpu")
    formats = ("compressed-tensors", "torch")
    requires = ("torch>=2.4", "transformers>=4.46")
    install_hint = "pip install 'quantmatch[torch]'"
    runner = "quantmatch.plugins.backends.torch_runner:TorchRunner"
    reference = True
    source = c.TRANSFORMERS_OVERVIEW
    priors = PRIORS
    serves_unquantized = True
    runtime = "torch"
    rate_probe = "quantmatch.plugins.backends.torch_rates:probe_rates"
    latest_version = "2.13.0"  # torch._scaled_mm on CPU and the int4pack kernels exercised here
    kv_caches = ("int8", "int4")  # transformers' QuantizedCache in the runner, set at run time
    capabilities = (
        *KV_QUANTIZED,
        *BASELINES,
        *INT8_W8A8,
        *FP8_ROWS,
        *WEIGHT_ONLY,
        c.no_kernel("PyTorch", "fp32/tf32/fp16/bf16, int8 x int8 (_int_mm), FP8 (_scaled_mm), weight-only "
                    "int/fp8 checkpoints", c.TRANSFORMERS_OVERVIEW),
    )


@hookimpl
def register_backends(register: Register[type[Backend]]) -> None:
    register(TorchBackend)
