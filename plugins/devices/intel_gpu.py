"""Intel GPUs (Arc and Data Center GPU Max, the ``xpu`` target): the catalog (``data/intel_gpu.json``) and
live detection.

Detection tries, in order: the ``xpu-smi discovery -j`` CLI (Intel XPU Manager), the Linux DRM sysfs tree
(``/sys/class/drm/card*/device/vendor`` = ``0x8086`` with a PCI device id from the kernel's ``pciids.h``
tables), and an XPU build of torch *if the program already imported it* (importing torch here would make
detection slow). Integrated Intel graphics and unknown Intel device ids are not reported: only the discrete
Alchemist (DG2), Battlemage (BMG) and Ponte Vecchio (PVC) ids are known.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from typing import Any, NamedTuple

from quantmatch.plugins.devices._common import (
    detected_memory,
    error_text,
    gpu_profile,
    load_profiles,
    match_by_name,
    read_text,
)
from quantmatch.sdk.device import Detection, DeviceFamily
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.profile import Figure, HardwareProfile

__all__ = ["IntelGpuFamily", "arch_of_pci_id", "register_device_families"]

INTEL_VENDOR = 0x8086
SYSFS_DRM = "/sys/class/drm"

# PCI device ids per architecture: torvalds/linux include/drm/intel/pciids.h (INTEL_DG2_G10/G11/G12_IDS,
# INTEL_BMG_IDS, INTEL_PVC_IDS).
_DG2 = frozenset({
    0x5690, 0x5691, 0x5692, 0x56A0, 0x56A1, 0x56A2, 0x56BE, 0x56BF,  # ACM-G10
    0x5693, 0x5694, 0x5695, 0x56A5, 0x56A6, 0x56B0, 0x56B1, 0x56BA, 0x56BB, 0x56BC, 0x56BD,  # ACM-G11
    0x5696, 0x5697, 0x56A3, 0x56A4, 0x56B2, 0x56B3,  # ACM-G12
})
_BMG = frozenset({0xE202, 0xE209, 0xE20B, 0xE20C, 0xE20D, 0xE210, 0xE211, 0xE212, 0xE215, 0xE216,
                  0xE220, 0xE221, 0xE222, 0xE223})
_PVC = frozenset({0x0B69, 0x0B6E, 0x0BD4, 0x0BD5, 0x0BD6, 0x0BD7, 0x0BD8, 0x0BD9, 0x0BDA, 0x0BDB,
                  0x0BE0, 0x0BE1, 0x0BE5})
# Device ids whose SKU the catalog carries (pci.ids: "DG2 [Arc A770]", "Battlemage G21 [Arc B580]"; Intel's
# Kubernetes resource driver: 0x0bd5/0x0bd6 "Ponte Vecchio XT (2 Tile) [Data Center GPU Max 1550]").
_SKU = {0x56A0: "Intel Arc A770", 0xE20B: "Intel Arc B580", 0x0BD5: "Intel Data Center GPU Max 1550",
        0x0BD6: "Intel Data Center GPU Max 1550"}
_ARCH_NAMES = {"dg2": "Alchemist (DG2)", "bmg": "Battlemage (BMG)", "pvc": "Ponte Vecchio (PVC)"}
_BASELINE = frozenset({"fp32", "fp16"})


class _Gpu(NamedTuple):
    name: str
    arch: str  # "" when only the name is known
    total_bytes: int | None


@cache
def _catalog() -> tuple[HardwareProfile, ...]:
    return load_profiles("intel_gpu.json")


def arch_of_pci_id(device_id: int) -> str | None:
    """``dg2``/``bmg``/``pvc`` for a known discrete Intel GPU PCI device id, else ``None``."""
    if device_id in _DG2:
        return "dg2"
    if device_id in _BMG:
        return "bmg"
    if device_id in _PVC:
        return "pvc"
    return None


def _hex(value: object) -> int | None:
    try:
        return int(str(value).strip(), 16)
    except ValueError:
        return None


def _name_for(device_id: int, arch: str) -> str:
    return _SKU.get(device_id) or f"Intel {_ARCH_NAMES[arch]} GPU [8086:{device_id:04x}]"


def _xpu_smi_json() -> str | None:
    """``xpu-smi discovery -j`` output, or ``None`` when the CLI is missing or fails."""
    exe = shutil.which("xpu-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "discovery", "-j"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 and out.stdout.strip() else None


def _via_xpu_smi(text: str) -> list[_Gpu]:
    data = json.loads(text)
    gpus = []
    for dev in data.get("device_list", []) if isinstance(data, dict) else []:
        if not isinstance(dev, dict) or str(dev.get("device_type", "GPU")).upper() != "GPU":
            continue
        pci = _hex(dev.get("pci_device_id", ""))
        arch = arch_of_pci_id(pci) if pci is not None else None
        name = str(dev.get("device_name") or "").strip()
        if arch is None and not name:
            continue
        gpus.append(_Gpu(name or _name_for(pci or 0, arch or "dg2"), arch or "", None))
    return gpus


def _via_sysfs(root: str) -> tuple[list[_Gpu], list[str]]:
    """Discrete Intel GPUs under ``root`` (``/sys/class/drm``), and the Intel device ids it did not know."""
    gpus: list[_Gpu] = []
    unknown: list[str] = []
    seen: set[str] = set()
    for card in sorted(glob.glob(os.path.join(root, "card[0-9]*"))):
        if "-" in os.path.basename(card):  # connectors (card0-DP-1) share the card's device
            continue
        dev = os.path.join(card, "device")
        real = os.path.realpath(dev)
        if real in seen:
            continue
        vendor = _hex(read_text(os.path.join(dev, "vendor")) or "")
        if vendor != INTEL_VENDOR:
            continue
        seen.add(real)
        device_id = _hex(read_text(os.path.join(dev, "device")) or "")
        if device_id is None:
            continue
        arch = arch_of_pci_id(device_id)
        if arch is None:
            unknown.append(f"0x{device_id:04x}")
            continue
        gpus.append(_Gpu(_name_for(device_id, arch), arch, None))
    return gpus, unknown


def _torch() -> Any | None:
    """torch only when it is already imported (never import it here)."""
    return sys.modules.get("torch")


def _via_torch(torch: Any) -> list[_Gpu]:
    xpu = torch.xpu
    gpus = []
    for i in range(int(xpu.device_count())):
        props = xpu.get_device_properties(i)
        total = getattr(props, "total_memory", None)
        gpus.append(_Gpu(str(props.name), "", int(total) if total else None))
    return gpus


def _profile(index: int, gpu: _Gpu, probe: str) -> HardwareProfile:
    arch = gpu.arch
    if not arch:  # only a marketing name: find the architecture from the catalog SKU it names
        hit = match_by_name(gpu.name, _catalog())
        arch = hit.arch if hit else "intel-gpu-unknown"
    memory = (detected_memory(gpu.total_bytes, f"{probe} memory total") if gpu.total_bytes
              else Figure(None, "GB", "", "unsourced", f"{probe} does not report memory"))
    targets = tuple(next((p.targets for p in _catalog() if p.arch == arch), ("xpu",)))
    return gpu_profile(
        id=f"local-xpu-{index}", name=gpu.name, vendor="intel", family=IntelGpuFamily.name, arch=arch,
        targets=targets, catalog=_catalog(), same_as={}, fallback=_BASELINE, memory=memory, probe=probe,
    )


def _detect() -> Detection:
    tried: list[str] = []
    sysfs_root = SYSFS_DRM
    text = _xpu_smi_json()
    if text is None:
        tried.append("xpu-smi not on PATH or failed")
    else:
        try:
            gpus = _via_xpu_smi(text)
            if gpus:
                return Detection(IntelGpuFamily.name, tuple(_profile(i, g, "xpu-smi") for i, g in enumerate(gpus)))
            tried.append("xpu-smi listed no GPU")
        except Exception as e:
            tried.append(f"xpu-smi output unreadable ({error_text(e)})")
    try:
        gpus, unknown = _via_sysfs(sysfs_root)
        if gpus:
            return Detection(IntelGpuFamily.name,
                             tuple(_profile(i, g, "sysfs PCI id") for i, g in enumerate(gpus)))
        if unknown:
            tried.append(f"{sysfs_root} lists Intel graphics {', '.join(unknown)} (integrated or unknown: not an "
                         "Arc/Data Center GPU id)")
        else:
            tried.append(f"no Intel GPU under {sysfs_root}")
    except Exception as e:
        tried.append(f"{sysfs_root} unreadable ({error_text(e)})")
    torch = _torch()
    if torch is None:
        tried.append("torch not imported")
    elif not hasattr(torch, "xpu") or not torch.xpu.is_available():
        tried.append("torch has no available XPU")
    else:
        try:
            gpus = _via_torch(torch)
            if gpus:
                return Detection(IntelGpuFamily.name,
                                 tuple(_profile(i, g, "torch (XPU)") for i, g in enumerate(gpus)))
            tried.append("torch (XPU) sees no GPU")
        except Exception as e:
            tried.append(f"torch (XPU) failed ({error_text(e)})")
    return Detection(IntelGpuFamily.name, (), "no Intel GPU found: " + "; ".join(tried))


class IntelGpuFamily(DeviceFamily):
    """Intel discrete GPUs with XMX matrix engines: Arc (Xe-HPG, Xe2-HPG) and Data Center GPU Max (Xe-HPC)."""

    name = "intel-gpu"
    vendor = "intel"
    description = ("Intel Arc and Data Center GPU Max (xpu target: SYCL / Level Zero); live detection through "
                   "xpu-smi, DRM sysfs PCI ids or an imported XPU torch")
    requires = ()

    @classmethod
    def catalog(cls) -> tuple[HardwareProfile, ...]:
        return _catalog()

    @classmethod
    def detect(cls) -> Detection:
        try:
            return _detect()
        except Exception as e:  # detection must never raise
            return Detection(cls.name, (), f"Intel GPU detection failed: {error_text(e)}")


@hookimpl
def register_device_families(register: Register[type[DeviceFamily]]) -> None:
    register(IntelGpuFamily)
