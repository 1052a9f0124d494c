"""The feature-flag vocabulary of hardware profiles."""

from __future__ import annotations

__all__ = ["ARCH_FEATURES", "CPU_FLAGS", "CPU_UNITS", "OPERAND_TYPES"]

OPERAND_TYPES = frozenset({
    "fp64", "fp32", "tf32", "fp16", "bf16", "fp8-e4m3fn", "fp8-e5m2", "fp8-e4m3fnuz", "fp8-e5m2fnuz",
    "fp6", "fp4", "nvfp4", "mxfp8", "mxfp6", "mxfp4", "int8", "int4", "int2", "int1",
})
"""Matrix/vector-engine operand types a device computes natively."""

ARCH_FEATURES = frozenset({
    "mma-sync", "wmma", "cp-async", "dp4a", "wgmma", "tma", "tcgen05", "block-scale-mma",
    "mfma", "integer-dot", "simdgroup-matrix", "metal-tensor-api", "xmx",
})
"""Architecture features (instruction families) that runtimes key their kernels on."""

CPU_FLAGS = frozenset({
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512vbmi",
    "avx512_vbmi2", "avx512ifma", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
    "amx_int8", "amx_bf16", "amx_fp16", "asimd", "dotprod", "i8mm", "sve", "sve2", "sme", "sme2",
})
"""CPU ISA flags in Linux ``/proc/cpuinfo`` spelling (arm ``asimddp`` is normalised to ``dotprod``)."""

CPU_UNITS: dict[str, tuple[tuple[str, str], ...]] = {
    "int8": (("amx_int8", "AMX-INT8 tiles"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
             ("i8mm", "Arm I8MM (SMMLA)"), ("dotprod", "Arm SDOT/UDOT")),
    "bf16": (("amx_bf16", "AMX-BF16 tiles"), ("avx512_bf16", "AVX512-BF16")),
    "fp16": (("amx_fp16", "AMX-FP16 tiles"), ("avx512_fp16", "AVX512-FP16")),
}
"""The CPU units that compute an operand type, as (flag, unit name), best first: a CPU verdict names them."""
