"""Apple Silicon (Metal GPU + Arm CPU cores): the catalog (``data/apple_metal.json``) and detection.

Detection reads ``sysctl``: the brand string names the chip ("Apple M2 Pro"), ``hw.memsize`` the
unified memory, and ``hw.optional.arm.FEAT_*`` (macOS 12+) the CPU cores' ISA features.
"""

from __future__ import annotations

import platform
import re
import subprocess
from functools import cache
from types import MappingProxyType

from quantmatch.plugins.devices._common import catalog_copy, detected_memory, error_text, load_profiles
from quantmatch.sdk.device import Detection, DeviceFamily
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.profile import UNKNOWN_BW, HardwareProfile

__all__ = ["AppleMetalFamily", "catalog_id_for_brand", "register_device_families"]

# sysctl name -> catalog flag of the CPU cores
_CPU_SYSCTLS = {
    "hw.optional.AdvSIMD": "asimd",
    "hw.optional.arm.FEAT_FP16": "fp16",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_BF16": "bf16",
    "hw.optional.arm.FEAT_SME": "sme",
    "hw.optional.arm.FEAT_SME2": "sme2",
}
_GPU_BASELINE = frozenset({"fp32", "fp16", "bf16", "simdgroup-matrix"})


@cache
def _catalog() -> tuple[HardwareProfile, ...]:
    return load_profiles("apple_metal.json")


def _platform() -> tuple[str, str]:
    return platform.system(), platform.machine()


def _run_sysctl(name: str) -> str | None:
    """``sysctl -n name``, or ``None`` when the key does not exist or sysctl fails."""
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value else None


def catalog_id_for_brand(brand: str) -> str | None:
    """``"Apple M2 Pro"`` -> ``"apple_m2_pro"``; ``None`` when the brand names no M-series chip."""
    m = re.search(r"\bM(\d+)(?:\s+(Pro|Max|Ultra))?\b", brand, re.IGNORECASE)
    if not m:
        return None
    tier = f"_{m.group(2).lower()}" if m.group(2) else ""
    return f"apple_m{m.group(1)}{tier}"


def _reference(brand: str) -> tuple[HardwareProfile | None, HardwareProfile | None, int | None]:
    """(exact catalog entry, same-or-nearest-older generation entry, generation) for a brand string."""
    cid = catalog_id_for_brand(brand)
    if cid is None:
        return None, None, None
    gen = int(re.findall(r"\d+", cid)[0])
    by_id = {p.id: p for p in _catalog()}
    exact = by_id.get(cid)
    older = [p for p in _catalog() if int(p.arch.removeprefix("apple-m")) <= gen]
    nearest = exact or (max(older, key=lambda p: int(p.arch.removeprefix("apple-m"))) if older else None)
    return exact, nearest, gen


def _cpu_features(fallback: HardwareProfile | None) -> tuple[frozenset[str], str]:
    flags = {flag for key, flag in _CPU_SYSCTLS.items() if (_run_sysctl(key) or "0").strip() == "1"}
    if not flags - {"asimd"}:
        if fallback is not None:
            return fallback.cpu_features, f"FEAT_* sysctls not readable: CPU features of {fallback.id}"
        flags = {"asimd"}
        note = "hw.optional.arm.FEAT_* not readable (macOS 11?): CPU features unknown beyond asimd"
    else:
        note = "CPU features from sysctl hw.optional.arm.FEAT_*"
    flags.add("asimd")  # every arm64 Mac has Advanced SIMD
    types = {"fp32"}
    if "dotprod" in flags or "i8mm" in flags:
        types.add("int8")
    return frozenset(flags | types), note


def _detect() -> Detection:
    system, machine = _platform()
    if system != "Darwin" or machine != "arm64":
        return Detection(AppleMetalFamily.name, (), f"not a macOS arm64 machine ({system} {machine})")
    brand = _run_sysctl("machdep.cpu.brand_string") or "Apple Silicon"
    exact, nearest, gen = _reference(brand)
    cpu, cpu_note = _cpu_features(nearest)
    notes = [cpu_note]
    if exact is not None:
        notes.append(f"matched catalog entry {exact.id}")
    elif nearest is not None:
        notes.append(f"no catalog entry for {brand!r}: GPU features of {nearest.id} assumed")
    else:
        notes.append(f"unrecognised chip {brand!r}: baseline Apple GPU features assumed")
    emulated = {} if "bf16" in cpu else {
        "bf16": "CPU cores: converted to fp32 (no FEAT_BF16); the GPU has Metal bfloat"}
    memsize = _run_sysctl("hw.memsize")
    memory = detected_memory(int(memsize) if memsize and memsize.isdigit() else None, "sysctl hw.memsize")
    profile = HardwareProfile(
        id="local-metal", name=brand, vendor="apple", family=AppleMetalFamily.name,
        arch=f"apple-m{gen}" if gen else "apple",
        arch_name=f"Apple M{gen}" if gen else "Apple Silicon", targets=("metal", "cpu"),
        features=nearest.features if nearest else _GPU_BASELINE, cpu_features=cpu,
        emulated=MappingProxyType(emulated), memory=memory,
        bandwidth=catalog_copy(exact.bandwidth, exact) if exact else UNKNOWN_BW,
        sources=("sysctl", *(exact.sources if exact else ())), notes="; ".join(notes), detected=True,
    )
    return Detection(AppleMetalFamily.name, (profile,))


class AppleMetalFamily(DeviceFamily):
    """Apple Silicon SoCs: the GPU through Metal (``metal``/``mps``) and the CPU cores (``cpu``)."""

    name = "apple-metal"
    vendor = "apple"
    description = "Apple Silicon (Metal GPU and Arm CPU cores); detection through sysctl"
    requires = ()

    @classmethod
    def catalog(cls) -> tuple[HardwareProfile, ...]:
        return _catalog()

    @classmethod
    def detect(cls) -> Detection:
        try:
            return _detect()
        except Exception as e:  # detection must never raise
            return Detection(cls.name, (), f"Apple detection failed: {error_text(e)}")


@hookimpl
def register_device_families(register: Register[type[DeviceFamily]]) -> None:
    register(AppleMetalFamily)
