"""NVIDIA GPUs: the catalog (``data/nvidia.json``) and live detection through NVML (``nvidia-ml-py``)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import re
from functools import cache
from types import ModuleType

from quantmatch.plugins.devices._common import (
    GIB,
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
from quantmatch.sdk.profile import HardwareProfile

__all__ = ["NvidiaFamily", "register_device_families"]

# Architectures missing from the catalog that behave like one that is in it.
_SAME_AS = {
    # Thor: CUDA 12.8/12.9 called it sm_101, CUDA 13.0 renamed it sm_110 (NVIDIA/cutlass CHANGELOG.md @7107b055).
    "sm_101": "sm_110",
}

# NVML names that do not contain the catalog name's model words: extra words that let ``match_by_name`` find the
# entry. Jetson modules of one SoC share a name ("Orin (nvgpu)" for AGX, NX and Nano; "NVIDIA Thor" for T5000 and
# T4000), so their figures are taken only when the reported memory identifies the catalog's module.
_NAME_HINTS: tuple[tuple[str, str, int], ...] = (
    # (word in the NVML name, words to add, minimum reported memory in GiB; 0 = any)
    ("gb10", "DGX Spark", 0),  # "NVIDIA GB10"
    ("gb300", "B300", 0),  # Grace-Blackwell Ultra superchip GPU
    ("orin", "Jetson AGX Orin", 48),  # only the 64 GB AGX Orin module is in the catalog
    ("thor", "Jetson AGX T5000", 96),  # only the 128 GB T5000 module is in the catalog
    ("t5000", "Jetson AGX Thor", 0),
)

# Words that name a different SKU of the same chip family (RTX 4070 Ti / SUPER / Laptop, RTX PRO 6000 Max-Q,
# RTX 4090 D): a catalog entry whose name lacks them does not lend its figures to such a board.
_VARIANT_WORDS = frozenset({"ti", "super", "laptop", "mobile", "max", "q", "d"})


@cache
def _catalog() -> tuple[HardwareProfile, ...]:
    return load_profiles("nvidia.json")


def _nvml() -> ModuleType | None:
    """The ``pynvml`` module of nvidia-ml-py, or ``None`` when it is not installed."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def _baseline_features(cc: float) -> frozenset[str]:
    """What any GPU of this compute capability has, for architectures the catalog does not know."""
    feats = {"fp32"}
    if cc >= 5.3:
        feats.add("fp16")
    if cc >= 6.1:
        feats.add("dp4a")
    if cc >= 7.0:
        feats |= {"mma-sync", "wmma"}
    return frozenset(feats)


def _words(name: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", name.lower()))


def _match_name(name: str, total_bytes: int | None) -> str:
    """The NVML name with the words that let it match its catalog entry (see ``_NAME_HINTS``)."""
    words = _words(name)
    extra = [add for word, add, min_gib in _NAME_HINTS
             if word in words and (not min_gib or (total_bytes or 0) >= min_gib * GIB)]
    return " ".join([name, *extra])


def _sku_catalog(match_name: str, arch: str) -> tuple[HardwareProfile, ...]:
    """The catalog, with the entry the name would match hidden when the board is another SKU of it."""
    catalog = _catalog()
    ref_arch = arch if any(p.arch == arch for p in catalog) else _SAME_AS.get(arch, arch)
    match = match_by_name(match_name, [p for p in catalog if p.arch == ref_arch])
    if match is None or not (_words(match_name) - _words(match.name)) & _VARIANT_WORDS:
        return catalog
    # An entry with no model words never matches by name; it still gives the architecture its features.
    return tuple(dataclasses.replace(p, name="") if p is match else p for p in catalog)


def _profile(index: int, name: str, major: int, minor: int, total_bytes: int | None) -> HardwareProfile:
    cc = float(f"{major}.{minor}")
    arch = f"sm_{major}{minor}"
    match_name = _match_name(name, total_bytes)
    profile = gpu_profile(
        id=f"local-cuda-{index}", name=match_name, vendor="nvidia", family=NvidiaFamily.name,
        arch=arch, targets=("cuda", "vulkan"), catalog=_sku_catalog(match_name, arch), same_as=_SAME_AS,
        fallback=_baseline_features(cc), memory=detected_memory(total_bytes, "NVML total device memory"),
        probe="NVML", compute_capability=cc,
    )
    words = _words(name)
    held_back = [add for word, add, min_gib in _NAME_HINTS
                 if min_gib and word in words and (total_bytes or 0) < min_gib * GIB]
    notes = profile.notes
    if held_back and "matched catalog entry" not in notes:
        notes += (f"; '{name}' names several modules of this SoC and the reported memory does not identify the "
                  f"catalog's {' / '.join(held_back)} module, so that module's figures are not assumed")
    return dataclasses.replace(profile, name=name, notes=notes)


def _shutdown(nv: ModuleType) -> None:
    with contextlib.suppress(Exception):
        nv.nvmlShutdown()


def _detect() -> Detection:
    nv = _nvml()
    if nv is None:
        return Detection(NvidiaFamily.name, (), "nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    try:
        nv.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded ...
        return Detection(NvidiaFamily.name, (),
                         f"NVML could not start ({error_text(e)}): no NVIDIA driver or GPU")
    devices: list[HardwareProfile] = []
    errors: list[str] = []
    try:
        for i in range(int(nv.nvmlDeviceGetCount())):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
                name = as_str(nv.nvmlDeviceGetName(h))
                major, minor = nv.nvmlDeviceGetCudaComputeCapability(h)
                try:
                    total: int | None = int(nv.nvmlDeviceGetMemoryInfo(h).total)
                except Exception:
                    total = None
                devices.append(_profile(i, name, int(major), int(minor), total))
            except Exception as e:
                errors.append(f"GPU {i}: {error_text(e)}")
    except Exception as e:
        errors.append(f"NVML: {error_text(e)}")
    finally:
        _shutdown(nv)
    reason = "; ".join(errors) if errors else ("" if devices else "NVML reports no NVIDIA GPU")
    return Detection(NvidiaFamily.name, tuple(devices), reason)


class NvidiaFamily(DeviceFamily):
    """NVIDIA GPUs (CUDA). Features are keyed by architecture: sm_120 is not a superset of sm_100."""

    name = "nvidia"
    vendor = "nvidia"
    description = "NVIDIA GPUs (CUDA); live detection through NVML"
    requires = ("nvidia-ml-py",)

    @classmethod
    def catalog(cls) -> tuple[HardwareProfile, ...]:
        return _catalog()

    @classmethod
    def detect(cls) -> Detection:
        try:
            return _detect()
        except Exception as e:  # detection must never raise
            return Detection(cls.name, (), f"NVIDIA detection failed: {error_text(e)}")


@hookimpl
def register_device_families(register: Register[type[DeviceFamily]]) -> None:
    register(NvidiaFamily)
