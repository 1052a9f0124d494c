"""Arm64 CPUs on Linux: the catalog (``data/arm_cpu.json``) and detection from ``/proc/cpuinfo``.

The kernel's ``Features`` line names what matters for quantized kernels: ``asimddp`` (SDOT/UDOT),
``i8mm`` (SMMLA), ``bf16``, ``sve``/``sve2`` and ``asimdhp`` (fp16 arithmetic). Apple Silicon under
macOS is described by the apple-metal family instead.

The core is recognised from ``CPU implementer``/``CPU part`` (Arm Ltd 0x41: 0xd0c Neoverse N1 = Graviton2,
0xd40 V1 = Graviton3, 0xd4f V2 = Graviton4 or NVIDIA Grace; aws/aws-graviton-getting-started
perfrunbook/utilities/measure_aggregated_pmu_stats.py @83d74f4c). Graviton4 and Grace share the V2 core and
its dispatch flags; /proc/cpuinfo has no reliable SoC id for them, so both map to arch ``neoverse-v2`` and the
closest catalog entry is only a hint (Grace lists sm3/sm4, which AWS's HWCAP table shows absent on Graviton4).
The profile's flags are always the ones the kernel reports.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from functools import cache
from types import MappingProxyType

from quantmatch.plugins.devices._common import (
    cpu_blocks,
    detected_memory,
    error_text,
    load_profiles,
    measure_copy_bandwidth,
    meminfo_total_bytes,
    normalize_cpu_flags,
    read_text,
    unmeasured_bandwidth,
)
from quantmatch.sdk.device import Detection, DeviceFamily
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.profile import HardwareProfile

__all__ = ["ArmCpuFamily", "operand_types", "register_device_families"]

_ARM_MACHINES = frozenset({"aarch64", "arm64", "armv8l", "armv8b"})

ISA_FLAGS = frozenset({
    "asimd", "dotprod", "asimdhp", "fphp", "i8mm", "bf16", "ebf16", "sve", "sve2", "svei8mm", "svebf16",
    "sme", "sme2", "smei8i32", "smeb16f32", "smef16f32",
})

# MIDR part numbers of Arm Ltd (implementer 0x41) server cores, for a readable name only.
_ARM_PARTS = {
    "0xd0c": "Neoverse N1", "0xd40": "Neoverse V1", "0xd49": "Neoverse N2", "0xd4f": "Neoverse V2",
    "0xd8e": "Neoverse N3", "0xd84": "Neoverse V3",
}
# Arm Ltd part -> the catalog architecture id of the parts runtimes dispatch on.
_PART_ARCH = {"0xd0c": "neoverse-n1", "0xd40": "neoverse-v1", "0xd4f": "neoverse-v2"}


@cache
def _catalog() -> tuple[HardwareProfile, ...]:
    return load_profiles("arm_cpu.json")


def _machine() -> str:
    return platform.machine()


def _read_proc_cpuinfo() -> str | None:
    return read_text("/proc/cpuinfo")


def _read_meminfo() -> str | None:
    return read_text("/proc/meminfo")


def _cpu_count() -> int | None:
    return os.cpu_count()


def operand_types(flags: Iterable[str]) -> frozenset[str]:
    """Operand types the SIMD/matrix units take natively, derived from the ISA flags."""
    f = set(flags)
    types = {"fp32"}
    if f & {"dotprod", "i8mm"}:
        types.add("int8")
    if "bf16" in f:
        types.add("bf16")
    if f & {"asimdhp", "fphp"}:
        types.add("fp16")
    return frozenset(types)


def _emulated(features: frozenset[str]) -> dict[str, str]:
    out = {"int4": "unpacked to int8 for integer dot products"}
    if "bf16" not in features:
        out["bf16"] = "converted to fp32 (no FEAT_BF16)"
    return out


def _part(block: dict[str, str]) -> str | None:
    """The Arm Ltd MIDR part number (``0xd4f``) of a /proc/cpuinfo block, or ``None`` for other implementers."""
    if block.get("cpu implementer", "").lower() != "0x41":
        return None
    return block.get("cpu part", "").lower() or None


def _catalog_entry(arch: str, flags: frozenset[str]) -> tuple[HardwareProfile | None, str]:
    """The catalog entry closest to a recognised core, and a note saying how sure that is."""
    same = [p for p in _catalog() if p.arch == arch]
    if not same:
        return None, ""
    if len(same) == 1:
        return same[0], f"catalog entry {same[0].id} (other SoCs with this core read the same)"
    # Neoverse V2: Graviton4 or Grace. Only a hint: AWS lists no SM3/SM4 on Graviton4, GH200 dumps show them.
    hint = "nvidia_grace" if flags & {"sm4", "svesm4"} else "aws_graviton4"
    entry = next((p for p in same if p.id == hint), same[0])
    others = ", ".join(p.id for p in same if p is not entry)
    return entry, (f"closest catalog entry {entry.id} (hint from the sm3/sm4 flags, not an SoC id; "
                   f"could also be {others}: same core and dispatch flags)")


def _core_name(block: dict[str, str]) -> str:
    name = block.get("model name", "")
    if name:
        return name
    part = block.get("cpu part", "").lower()
    if block.get("cpu implementer", "").lower() == "0x41" and part in _ARM_PARTS:
        return f"Arm {_ARM_PARTS[part]}"
    return "Arm64 CPU"


def _detect(measure_bandwidth: bool) -> Detection:
    machine = _machine()
    if machine.lower() not in _ARM_MACHINES:
        return Detection(ArmCpuFamily.name, (), f"not an Arm64 machine ({machine or 'unknown architecture'})")
    text = _read_proc_cpuinfo()
    blocks = [b for b in cpu_blocks(text) if "features" in b] if text else []
    if not blocks:
        return Detection(ArmCpuFamily.name, (),
                         "no Features line in /proc/cpuinfo (not Linux; on macOS see apple-metal)")
    first = blocks[0]
    flags = normalize_cpu_flags(first["features"].split())
    features = (flags & ISA_FLAGS) | operand_types(flags)
    generic = _catalog()[0] if _catalog() else None
    name = _core_name(first)
    part = _part(first)
    arch = _PART_ARCH.get(part or "") or ("neoverse" if "Neoverse" in name else "aarch64")
    entry, entry_note = _catalog_entry(arch, flags)
    logical = _cpu_count()
    notes = ["features from the /proc/cpuinfo Features line"]
    if part in _PART_ARCH:
        notes.append(f"CPU part {part}: {arch}")
    if entry_note:
        notes.append(entry_note)
    if logical:
        notes.append(f"{logical} logical CPUs")
    ref = entry or generic
    profile = HardwareProfile(
        id="local-cpu", name=name, vendor="arm", family=ArmCpuFamily.name, arch=arch,
        arch_name=ref.arch_name if ref else "AArch64", targets=("cpu",), features=features,
        cpu_features=features, emulated=MappingProxyType(_emulated(features)),
        memory=detected_memory(meminfo_total_bytes(_read_meminfo()), "/proc/meminfo MemTotal"),
        bandwidth=measure_copy_bandwidth() if measure_bandwidth else unmeasured_bandwidth(),
        cores=logical, sources=("/proc/cpuinfo",), notes="; ".join(notes), detected=True,
    )
    return Detection(ArmCpuFamily.name, (profile,))


class ArmCpuFamily(DeviceFamily):
    """Arm64 CPUs on Linux (Neoverse, Graviton, Ampere, Grace ...): NEON dotprod, i8mm, bf16, SVE."""

    name = "arm-cpu"
    vendor = "arm"
    description = "Arm64 CPUs on Linux; detection from /proc/cpuinfo"
    requires = ()

    @classmethod
    def catalog(cls) -> tuple[HardwareProfile, ...]:
        return _catalog()

    @classmethod
    def detect(cls, measure_bandwidth: bool = False) -> Detection:
        """Detect this machine's CPU; ``measure_bandwidth`` adds a ~1 s memory-copy test."""
        try:
            return _detect(measure_bandwidth)
        except Exception as e:  # detection must never raise
            return Detection(cls.name, (), f"Arm CPU detection failed: {error_text(e)}")


@hookimpl
def register_device_families(register: Register[type[DeviceFamily]]) -> None:
    register(ArmCpuFamily)
