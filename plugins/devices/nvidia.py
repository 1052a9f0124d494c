"""NVIDIA GPUs: the catalog (``data/nvidia.json``) and live detection through NVML (``nvidia-ml-py``)."""

from __future__ import annotations

import contextlib
import importlib
from functools import cache
from types import ModuleType

from quantmatch.plugins.devices._common import as_str, detected_memory, error_text, gpu_profile, load_profiles
from quantmatch.sdk.device import Detection, DeviceFamily
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.profile import HardwareProfile

__all__ = ["NvidiaFamily", "register_device_families"]

# Architectures missing from the catalog that behave like one that is in it.
_SAME_AS = {
    "sm_87": "sm_86",  # Jetson Orin: assumed identical to sm_86 (UNSOURCED)
    "sm_103": "sm_100",  # B300
    "sm_121": "sm_120",  # GB10 (DGX Spark)
}


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


def _profile(index: int, name: str, major: int, minor: int, total_bytes: int | None) -> HardwareProfile:
    cc = float(f"{major}.{minor}")
    return gpu_profile(
        id=f"local-cuda-{index}", name=name, vendor="nvidia", family=NvidiaFamily.name,
        arch=f"sm_{major}{minor}", targets=("cuda", "vulkan"), catalog=_catalog(), same_as=_SAME_AS,
        fallback=_baseline_features(cc), memory=detected_memory(total_bytes, "NVML total device memory"),
        probe="NVML", compute_capability=cc,
    )


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
