"""AMD GPUs (ROCm): the catalog (``data/amd_rocm.json``) and live detection.

Detection tries, in order: the ``amdsmi`` Python bindings, the ``rocm-smi`` CLI, and a ROCm build of
torch *if the program already imported it* (importing torch here would make detection slow).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from functools import cache
from types import ModuleType
from typing import Any, NamedTuple

from quantmatch.plugins.devices._common import (
    as_str,
    detected_memory,
    error_text,
    gpu_profile,
    load_profiles,
    match_by_name,
)
from quantmatch.sdk.device import Detection, DeviceFamily
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.profile import Figure, HardwareProfile

__all__ = ["AmdRocmFamily", "igpu_entry", "normalize_gfx", "register_device_families"]

# Architectures missing from the catalog that behave like one that is in it.
_SAME_AS = {
    "gfx940": "gfx942",  # MI300 pre-production steppings
    "gfx941": "gfx942",
    "gfx1101": "gfx1100",  # RDNA3 Navi 32/33 and APUs
    "gfx1102": "gfx1100",
    "gfx1103": "gfx1100",
    "gfx1152": "gfx1150",  # RDNA3.5 APUs (Krackan Point): GFX11 WMMA, no FP8
    "gfx1153": "gfx1150",
    "gfx1200": "gfx1201",  # RDNA4 Navi 44: the same GFX12 WMMA (fp8/bf8) as Navi 48
}
# Integrated GPUs report their graphics brand ("AMD Radeon 8060S Graphics", libdrm amdgpu.ids); the catalog
# names the APU that carries it, whose unified-memory figures are the GPU's.
_IGPU_BRANDS = {
    ("gfx1151", "8060s"): "amd_strix_halo",  # Ryzen AI Max+ 395 / Max 390
    ("gfx1150", "890m"): "amd_strix_point",  # Ryzen AI 9 HX 370 / HX 375
}
_BASELINE = frozenset({"fp32", "fp16"})


class _Gpu(NamedTuple):
    name: str
    gfx: str
    total_bytes: int | None


@cache
def _catalog() -> tuple[HardwareProfile, ...]:
    return load_profiles("amd_rocm.json")


def normalize_gfx(value: str) -> str:
    """``gfx90a:sramecc+:xnack-`` -> ``gfx90a``; rocm-smi's decimal ``gfx9010`` -> ``gfx90a``."""
    gfx = value.strip().lower().split(":")[0]
    m = re.fullmatch(r"gfx9(\d)(1[0-5])", gfx)  # gfx9 steppings above 9 are printed in decimal
    if m:
        gfx = f"gfx9{m.group(1)}{int(m.group(2)):x}"
    return gfx


def _amdsmi() -> ModuleType | None:
    try:
        return importlib.import_module("amdsmi")
    except ImportError:
        return None


def _rocm_smi_json() -> str | None:
    """``rocm-smi --showproductname --json`` output, or ``None`` when the CLI is missing or fails."""
    exe = shutil.which("rocm-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--showproductname", "--json"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 and out.stdout.strip() else None


def _torch() -> Any | None:
    """torch only when it is already imported (never import it here)."""
    return sys.modules.get("torch")


def _via_amdsmi(mod: ModuleType) -> list[_Gpu]:
    mod.amdsmi_init()
    try:
        gpus = []
        for h in mod.amdsmi_get_processor_handles():
            info = mod.amdsmi_get_gpu_asic_info(h)
            total: int | None = None
            with contextlib.suppress(Exception):  # memory is optional
                total = int(mod.amdsmi_get_gpu_memory_total(h, mod.AmdSmiMemoryType.VRAM))
            name = as_str(info.get("market_name", ""))
            gpus.append(_Gpu(name, as_str(info.get("target_graphics_version", "")), total))
        return gpus
    finally:
        with contextlib.suppress(Exception):
            mod.amdsmi_shut_down()


def _via_rocm_smi(text: str) -> list[_Gpu]:
    data = json.loads(text)
    gpus = []
    for key, card in sorted(data.items()):
        if not key.lower().startswith("card") or not isinstance(card, dict):
            continue
        fields = {k.lower(): as_str(v) for k, v in card.items()}
        name = fields.get("card series") or fields.get("card model") or key
        gpus.append(_Gpu(name, fields.get("gfx version", ""), None))
    return gpus


def _via_torch(torch: Any) -> list[_Gpu]:
    gpus = []
    for i in range(int(torch.cuda.device_count())):
        props = torch.cuda.get_device_properties(i)
        total = getattr(props, "total_memory", None)
        gpus.append(_Gpu(str(props.name), str(getattr(props, "gcnArchName", "")),
                         int(total) if total else None))
    return gpus


def igpu_entry(name: str, gfx: str) -> HardwareProfile | None:
    """The catalog APU whose integrated GPU reports ``name`` on ``gfx`` (``"AMD Radeon 8060S Graphics"``)."""
    tokens = set(re.findall(r"[a-z0-9]+", name.lower()))
    by_id = {p.id: p for p in _catalog()}
    for (arch, brand), entry in _IGPU_BRANDS.items():
        if arch == gfx and brand in tokens:
            return by_id.get(entry)
    return None


def _profile(index: int, gpu: _Gpu, probe: str) -> HardwareProfile:
    gfx = normalize_gfx(gpu.gfx) if gpu.gfx else ""
    name = gpu.name or gfx or "AMD GPU"
    if not gfx:  # older rocm-smi prints no GFX version: find it from the product name
        hit = match_by_name(name, _catalog())
        gfx = hit.arch if hit else "gfx-unknown"
    memory = (detected_memory(gpu.total_bytes, f"{probe} VRAM total") if gpu.total_bytes
              else Figure(None, "GB", "", "unsourced", f"{probe} does not report memory"))
    apu = igpu_entry(name, gfx)
    profile = gpu_profile(
        id=f"local-rocm-{index}", name=apu.name if apu else name, vendor="amd", family=AmdRocmFamily.name,
        arch=gfx, targets=("rocm", "vulkan"), catalog=_catalog(), same_as=_SAME_AS, fallback=_BASELINE,
        memory=memory, probe=probe,
    )
    return replace(profile, name=name) if apu else profile


def _detect() -> Detection:
    tried: list[str] = []
    mod = _amdsmi()
    if mod is None:
        tried.append("amdsmi not installed")
    else:
        try:
            gpus = _via_amdsmi(mod)
            if gpus:
                return Detection(AmdRocmFamily.name,
                                 tuple(_profile(i, g, "amdsmi") for i, g in enumerate(gpus)))
            tried.append("amdsmi found no GPU")
        except Exception as e:
            tried.append(f"amdsmi failed ({error_text(e)})")
    text = _rocm_smi_json()
    if text is None:
        tried.append("rocm-smi not on PATH or failed")
    else:
        try:
            gpus = _via_rocm_smi(text)
            if gpus:
                return Detection(AmdRocmFamily.name,
                                 tuple(_profile(i, g, "rocm-smi") for i, g in enumerate(gpus)))
            tried.append("rocm-smi listed no GPU")
        except Exception as e:
            tried.append(f"rocm-smi output unreadable ({error_text(e)})")
    torch = _torch()
    if torch is None:
        tried.append("torch not imported")
    elif not getattr(getattr(torch, "version", None), "hip", None):
        tried.append("torch is not a ROCm build")
    else:
        try:
            gpus = _via_torch(torch)
            if gpus:
                return Detection(AmdRocmFamily.name,
                                 tuple(_profile(i, g, "torch (ROCm)") for i, g in enumerate(gpus)))
            tried.append("torch (ROCm) sees no GPU")
        except Exception as e:
            tried.append(f"torch (ROCm) failed ({error_text(e)})")
    return Detection(AmdRocmFamily.name, (), "no AMD GPU found: " + "; ".join(tried))


class AmdRocmFamily(DeviceFamily):
    """AMD GPUs under ROCm (CDNA Instinct and RDNA Radeon). FP8 is FNUZ on CDNA3, OCP on CDNA4."""

    name = "amd-rocm"
    vendor = "amd"
    description = "AMD GPUs (ROCm/HIP); live detection through amdsmi, rocm-smi or an imported ROCm torch"
    requires = ("amdsmi",)

    @classmethod
    def catalog(cls) -> tuple[HardwareProfile, ...]:
        return _catalog()

    @classmethod
    def detect(cls) -> Detection:
        try:
            return _detect()
        except Exception as e:  # detection must never raise
            return Detection(cls.name, (), f"AMD detection failed: {error_text(e)}")


@hookimpl
def register_device_families(register: Register[type[DeviceFamily]]) -> None:
    register(AmdRocmFamily)
