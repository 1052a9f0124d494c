"""x86-64 CPUs: the catalog (``data/x86_cpu.json``) and detection from ``/proc/cpuinfo`` / py-cpuinfo.

Brand strings are often generic ("Intel(R) Xeon(R) Processor" in VMs), so the microarchitecture is
inferred from the ISA flags. Linux hides ``amx_fp16`` from ``/proc/cpuinfo``, so Granite Rapids is
only recognised by its brand string.

Intel Core Ultra client parts (Meteor, Lunar and Arrow Lake) show the same AVX2 + AVX-VNNI flags as
Alder Lake (Linux keeps ``avx_vnni_int8`` KVM-only, so it is not listed), so they are recognised by their
CPUID family/model (Linux intel-family.h; LLVM host detection) or by the brand string
("Intel(R) Core(TM) Ultra 7 155H" = Meteor Lake, ``2xxV`` = Lunar Lake, other ``2xx`` = Arrow Lake).
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterable
from functools import cache
from types import MappingProxyType
from typing import Any

from quantmatch.plugins.devices._common import (
    catalog_copy,
    cpu_blocks,
    detected_memory,
    error_text,
    load_profiles,
    measure_copy_bandwidth,
    meminfo_total_bytes,
    normalize_cpu_flags,
    physical_cores,
    read_text,
    unmeasured_bandwidth,
)
from quantmatch.sdk.device import Detection, DeviceFamily
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.profile import Figure, HardwareProfile

__all__ = [
    "X86CpuFamily",
    "infer_microarchitecture",
    "operand_types",
    "register_device_families",
]

_X86_MACHINES = frozenset({"x86_64", "amd64", "x64", "i386", "i686", "x86"})

# The ISA flags kept in a detected profile (the rest of /proc/cpuinfo does not affect quantization).
ISA_FLAGS = frozenset({
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd",
    "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
    "avx512vbmi", "avx512_vbmi2", "avx512ifma", "avx512_vp2intersect", "avx512_bitalg", "avx512_vpopcntdq",
    "gfni", "vaes", "avx_vnni_int8", "avx_ifma", "avx_ne_convert",
})
_AVX512_CORE = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"})

# Intel family 6 client models (Linux arch/x86/include/asm/intel-family.h; LLVM compiler-rt host detection).
_INTEL_CLIENT_MODELS = {
    0xAA: "meteor_lake", 0xAC: "meteor_lake",  # METEORLAKE_L, METEORLAKE
    0xBD: "lunar_lake",  # LUNARLAKE_M
    0xC5: "arrow_lake", 0xC6: "arrow_lake", 0xB5: "arrow_lake",  # ARROWLAKE_H, ARROWLAKE (S), ARROWLAKE_U
}
# "Intel(R) Core(TM) Ultra 7 155H": series 1 = Meteor Lake; series 2 with a V suffix = Lunar Lake, else Arrow Lake.
_CORE_ULTRA = re.compile(r"\bUltra\s+\d+\s+([12])\d\d([A-Z]*)\b")


@cache
def _catalog() -> tuple[HardwareProfile, ...]:
    return load_profiles("x86_cpu.json")


def _machine() -> str:
    return platform.machine()


def _read_proc_cpuinfo() -> str | None:
    return read_text("/proc/cpuinfo")


def _read_meminfo() -> str | None:
    return read_text("/proc/meminfo")


def _py_cpuinfo() -> dict[str, Any] | None:
    """py-cpuinfo's report (about a second: it may run CPUID in a subprocess), or ``None``."""
    try:
        import cpuinfo

        info = cpuinfo.get_cpu_info()
    except Exception:
        return None
    return info if isinstance(info, dict) else None


def _cpu_count() -> int | None:
    return os.cpu_count()


def operand_types(flags: Iterable[str]) -> frozenset[str]:
    """Operand types the vector/matrix units take natively, derived from the ISA flags."""
    f = set(flags)
    types = {"fp32"}
    if "avx2" in f or f & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        types.add("int8")  # avx2 pmaddubsw, VNNI vpdpbusd, AMX tdpbssd
    if f & {"avx512_bf16", "amx_bf16"}:
        types.add("bf16")
    if f & {"avx512_fp16", "amx_fp16"}:
        types.add("fp16")
    return frozenset(types)


def _emulated(flags: frozenset[str]) -> dict[str, str]:
    out = {}
    if "bf16" not in flags:
        out["bf16"] = "converted to fp32 (no AVX512_BF16)"
    if "fp16" not in flags:
        out["fp16"] = "converted to fp32 via F16C" if "f16c" in flags else "converted to fp32 in software"
    out["int4"] = "unpacked to int8 for integer dot products"
    return out


def _vendor(vendor_id: str, brand: str) -> str:
    text = f"{vendor_id} {brand}".lower()
    if "genuineintel" in text or "intel" in text:
        return "intel"
    if "authenticamd" in text or re.search(r"\bamd\b", text):
        return "amd"
    return "unknown"


def _generic_level(f: frozenset[str]) -> str:
    if f >= _AVX512_CORE:
        return "x86-64-v4"
    if {"avx2", "fma", "bmi2"} <= f:
        return "x86-64-v3"
    if {"sse4_2", "popcnt"} <= f:
        return "x86-64-v2"
    return "x86-64"


def _intel_client(brand: str, family_model: tuple[int, int] | None) -> str | None:
    """``meteor_lake`` / ``lunar_lake`` / ``arrow_lake`` from the CPUID family/model or the brand string."""
    if family_model and family_model[0] == 6 and family_model[1] in _INTEL_CLIENT_MODELS:
        return _INTEL_CLIENT_MODELS[family_model[1]]
    m = _CORE_ULTRA.search(brand)
    if m:
        if m.group(1) == "1":
            return "meteor_lake"
        return "lunar_lake" if m.group(2).startswith("V") else "arrow_lake"
    return None


def infer_microarchitecture(vendor: str, flags: Iterable[str], brand: str = "",
                            family_model: tuple[int, int] | None = None) -> str:
    """The catalog microarchitecture id (``sapphire_rapids``, ``zen4`` ...) or an ``x86-64-vN`` level.

    ``family_model`` is the CPUID (family, model) pair when known (``/proc/cpuinfo`` "cpu family"/"model").
    """
    f = frozenset(flags)
    if vendor == "intel":
        if "amx_fp16" in f or ("amx_int8" in f and re.search(r"Xeon\(R\)\s+6\d{3}P\b", brand)):
            return "granite_rapids"
        if "amx_int8" in f or "avx512_fp16" in f:
            return "sapphire_rapids"
        if "avx512_bf16" in f:
            return "cooper_lake"
        if "avx512_vnni" in f and f & {"avx512_vbmi2", "avx512ifma", "gfni"}:
            return "ice_lake_sp"
        if "avx512_vnni" in f:
            return "cascade_lake"
        if "avx512f" in f:
            return "skylake_sp"
        client = _intel_client(brand, family_model)
        if client:
            return client
        if "avx_vnni" in f:
            return "alder_lake"
    elif vendor == "amd":
        if "avx512_bf16" in f and "avx_vnni" in f:
            return "zen5"
        if "avx512_bf16" in f:
            return "zen4"
        if "avx2" in f and "vaes" in f:
            return "zen3"
    return _generic_level(f)


def _family_model(block: dict[str, str]) -> tuple[int, int] | None:
    """(family, model) from a /proc/cpuinfo block ("cpu family", "model"; decimal), or ``None``."""
    fam, model = block.get("cpu family", ""), block.get("model", "")
    return (int(fam), int(model)) if fam.isdigit() and model.isdigit() else None


def _read_cpu() -> tuple[str, str, frozenset[str], list[dict[str, str]], list[str]]:
    """(brand, vendor_id, flags, /proc/cpuinfo blocks, what was read)."""
    text = _read_proc_cpuinfo()
    blocks = cpu_blocks(text) if text else []
    first = blocks[0] if blocks else {}
    brand, vendor_id = first.get("model name", ""), first.get("vendor_id", "")
    raw = first.get("flags", "").split()
    read = ["/proc/cpuinfo"] if blocks else []
    if not brand:  # py-cpuinfo is slow: only when /proc/cpuinfo is missing or incomplete
        info = _py_cpuinfo()
        if info:
            brand = str(info.get("brand_raw", "") or "")
            vendor_id = vendor_id or str(info.get("vendor_id_raw", "") or "")
            raw += [str(x) for x in info.get("flags", ()) or ()]
            read.append("py-cpuinfo")
    return brand, vendor_id, normalize_cpu_flags(raw), blocks, read


def _detect(measure_bandwidth: bool) -> Detection:
    machine = _machine()
    if machine.lower() not in _X86_MACHINES:
        return Detection(X86CpuFamily.name, (), f"not an x86 machine ({machine or 'unknown architecture'})")
    brand, vendor_id, flags, blocks, read = _read_cpu()
    if not flags and not brand:
        return Detection(X86CpuFamily.name, (),
                         "could not read the CPU (no /proc/cpuinfo and py-cpuinfo failed or is missing)")
    vendor = _vendor(vendor_id, brand)
    family_model = _family_model(blocks[0]) if blocks else None
    uarch = infer_microarchitecture(vendor, flags, brand, family_model)
    entry = next((p for p in _catalog() if p.arch == uarch), None)
    kept = (flags & ISA_FLAGS) | operand_types(flags)
    how = "the ISA flags"
    if vendor == "intel" and uarch in set(_INTEL_CLIENT_MODELS.values()):
        how = ("the CPUID family/model" if family_model and family_model[1] in _INTEL_CLIENT_MODELS
               else "the brand string")
    notes = [f"microarchitecture inferred from {how} ({', '.join(read)}): {uarch}"]
    if entry is not None:
        notes.append(f"catalog entry {entry.id}")
    if uarch == "sapphire_rapids":
        notes.append("Granite Rapids also reads as sapphire_rapids here (Linux hides amx_fp16)")
    if uarch in ("lunar_lake", "arrow_lake") and "avx_vnni_int8" not in kept:
        notes.append("the part has AVX-VNNI-INT8, which /proc/cpuinfo does not list (not added: flags are as read)")
    logical = _cpu_count()
    cores = physical_cores(blocks) or logical
    if logical:
        notes.append(f"{logical} logical CPUs")
    peaks = {k: catalog_copy(v, entry) for k, v in entry.peaks.items()} if entry else {}
    bandwidth: Figure = measure_copy_bandwidth() if measure_bandwidth else unmeasured_bandwidth()
    profile = HardwareProfile(
        id="local-cpu", name=f"{brand or 'x86-64 CPU'} (inferred: {uarch})", vendor=vendor,
        family=X86CpuFamily.name, arch=uarch, arch_name=entry.arch_name if entry else uarch,
        targets=("cpu",), features=kept, cpu_features=kept, emulated=MappingProxyType(_emulated(kept)),
        memory=detected_memory(meminfo_total_bytes(_read_meminfo()), "/proc/meminfo MemTotal"),
        bandwidth=bandwidth, peaks=MappingProxyType(peaks), cores=cores, sources=tuple(read),
        notes="; ".join(notes), detected=True,
    )
    return Detection(X86CpuFamily.name, (profile,))


class X86CpuFamily(DeviceFamily):
    """x86-64 CPUs (Intel Xeon/Core, AMD EPYC/Ryzen): AVX2, AVX-512, VNNI, BF16, AMX."""

    name = "x86-cpu"
    vendor = "x86"
    description = "x86-64 CPUs; detection from /proc/cpuinfo (py-cpuinfo elsewhere)"
    requires = ("py-cpuinfo",)

    @classmethod
    def catalog(cls) -> tuple[HardwareProfile, ...]:
        return _catalog()

    @classmethod
    def detect(cls, measure_bandwidth: bool = False) -> Detection:
        """Detect this machine's CPU; ``measure_bandwidth`` adds a ~1 s memory-copy test."""
        try:
            return _detect(measure_bandwidth)
        except Exception as e:  # detection must never raise
            return Detection(cls.name, (), f"x86 CPU detection failed: {error_text(e)}")


@hookimpl
def register_device_families(register: Register[type[DeviceFamily]]) -> None:
    register(X86CpuFamily)
