"""The figures of a device the roofline needs: memory, bandwidth and the peak of each compute dtype.

Catalog figures come with their source. Missing figures stay unknown, except on the machine
quantmatch runs on (``local``): its memory bandwidth is measured with the copy test of
:func:`quantmatch.sdk.bandwidth.measure_copy_bandwidth`, and a CPU's peaks are estimated
from its cores, clock and vector ISA (labelled ``estimate``). A caller that measured better figures
(the planner benchmark measures fp32 GEMM throughput with torch) passes them as overrides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from quantmatch.sdk.kernel_rates import KernelRates
from quantmatch.sdk.profile import Figure, HardwareProfile

__all__ = ["GIB", "DeviceSpec", "Peak", "device_spec", "estimate_cpu_peaks", "vector_fp32_tflops", "with_measurements"]

GIB = float(2**30)

_PEAK_KEYS: dict[str, tuple[str, ...]] = {
    "fp32": ("fp32",),
    "tf32": ("tf32",),
    "fp16": ("fp16", "fp16_fp16acc"),
    "bf16": ("bf16",),
    "int8": ("int8",),
    "fp8": ("fp8", "fp8_fp16acc"),
    "int4": ("int4",),
    "fp4": ("fp4", "nvfp4", "mxfp4"),
}
"""Catalog peak keys to try, in order, for each compute dtype (``*_fp16acc`` figures are the
fp16-accumulate rates of GeForce cards: used only when nothing else is known, and said so)."""


@dataclass(frozen=True)
class Peak:
    """A dense peak in TFLOPS/TOPS with where it came from."""

    dtype: str
    tflops: float
    source: str
    confidence: str
    note: str = ""


@dataclass(frozen=True)
class DeviceSpec:
    """A device as the roofline sees it.

    ``memory_gib`` is the capacity models must fit in (GPU memory, or RAM for CPUs), ``bandwidth_gbs``
    the memory bandwidth in GB/s; either is ``None`` when no source gives it. ``measured`` is true
    when the bandwidth (and the peaks) were measured on this machine, so no efficiency discount
    applies to them. ``kernel_rates``: the runtimes' kernel rates probed on this machine
    (``quantmatch detect --probe``; :mod:`quantmatch.planner.probed`), ``None`` when none are cached.
    """

    profile: HardwareProfile
    memory_gib: float | None
    memory_source: str
    bandwidth_gbs: float | None
    bandwidth_source: str
    bandwidth_confidence: str
    peaks: Mapping[str, Peak] = field(default_factory=lambda: MappingProxyType({}))
    measured: bool = False
    notes: tuple[str, ...] = ()
    kernel_rates: KernelRates | None = None

    @property
    def id(self) -> str:
        return self.profile.id

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def is_cpu(self) -> bool:
        return self.profile.is_cpu

    def has(self, feature: str) -> bool:
        return feature in self.profile.features

    def peak(self, dtype: str) -> Peak | None:
        """The peak for a compute dtype (``fp32``, ``fp16``, ``bf16``, ``int8``, ``fp8``, ``int4``,
        ``fp4``), or ``None`` when no figure is known."""
        if dtype in self.peaks:
            return self.peaks[dtype]
        if dtype == "bf16" and "fp16" in self.peaks and self.has("bf16"):
            p = self.peaks["fp16"]
            return replace(p, dtype="bf16", note="bf16 rate assumed equal to fp16 (same tensor cores)")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "family": self.profile.family, "arch": self.profile.arch,
            "memory_gib": self.memory_gib, "memory_source": self.memory_source,
            "bandwidth_gbs": self.bandwidth_gbs, "bandwidth_source": self.bandwidth_source,
            "bandwidth_confidence": self.bandwidth_confidence, "measured": self.measured,
            "peaks": {k: {"tflops": p.tflops, "source": p.source, "confidence": p.confidence,
                          "note": p.note} for k, p in sorted(self.peaks.items())},
            "notes": list(self.notes),
        }


def _catalog_peaks(profile: HardwareProfile) -> dict[str, Peak]:
    out: dict[str, Peak] = {}
    for dtype, keys in _PEAK_KEYS.items():
        for k in keys:
            fig = profile.peaks.get(k)
            if fig is not None and fig.value:
                note = fig.note
                if k.endswith("_fp16acc"):
                    note = (note + "; " if note else "") + "fp16-accumulate rate (fp32-accumulate unknown)"
                out[dtype] = Peak(dtype, float(fig.value), fig.source, fig.confidence, note)
                break
    return out


def _cpu_mhz() -> float | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    vals = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)]
    return max(vals) if vals else None


def estimate_cpu_peaks(profile: HardwareProfile, mhz: float | None = None) -> dict[str, Peak]:
    """CPU peaks from cores x clock x FLOPs per cycle of the vector ISA (an ``estimate``).

    fp32 FLOPs/cycle/core: 64 with AVX-512 (2 FMA x 16 lanes), 32 with AVX2+FMA (2 x 8), 16 with
    NEON/ASIMD (2 x 4 x 2), 8 otherwise. int8: 4x fp32 with VNNI/dotprod (4-way dot products),
    2x without; bf16: 2x fp32 with AVX512_BF16 or Arm BF16, 16x with AMX-BF16; AMX-INT8 32x.
    """
    cores = profile.cores
    ghz = (mhz or 0.0) / 1000.0
    if not cores or ghz <= 0:
        return {}
    f = profile.cpu_features or profile.features
    if "avx512f" in f:
        fp32 = 64
    elif "avx2" in f and "fma" in f:
        fp32 = 32
    elif "asimd" in f or "neon" in f or profile.family == "arm-cpu":
        fp32 = 16
    else:
        fp32 = 8
    base = cores * ghz * fp32 / 1000.0  # TFLOPS
    how = f"{cores} cores x {ghz:.2f} GHz x {fp32} fp32 FLOP/cycle"
    out = {"fp32": Peak("fp32", base, "estimate", "estimate", how)}
    int8 = 32 if "amx_int8" in f else (4 if f & {"avx512_vnni", "avx_vnni", "dotprod"} else 2)
    out["int8"] = Peak("int8", base * int8, "estimate", "estimate", f"{int8}x fp32 ({how})")
    if "amx_bf16" in f:
        out["bf16"] = Peak("bf16", base * 16, "estimate", "estimate", f"AMX-BF16: 16x fp32 ({how})")
    elif f & {"avx512_bf16", "bf16"}:
        out["bf16"] = Peak("bf16", base * 2, "estimate", "estimate", f"2x fp32 ({how})")
    if "avx512_fp16" in f or "fphp" in f:
        out["fp16"] = Peak("fp16", base * 2, "estimate", "estimate", f"2x fp32 ({how})")
    return out


def vector_fp32_tflops(spec: DeviceSpec) -> float | None:
    """A CPU's fp32 FMA rate at 256-bit vectors, in TFLOPS: its fp32 peak, halved on AVX-512 CPUs.

    The unit the planner states CPU kernel priors in: hand-written quantized kernels (ggml's vec_dot,
    MLAS, oneDNN's small-M paths) are 256-bit code whose speed follows cores x clock, not the widest
    vector the ISA has. ``None`` without an fp32 peak or on an accelerator."""
    if not spec.is_cpu:
        return None
    p = spec.peak("fp32")
    if p is None:
        return None
    wide = "avx512f" in (spec.profile.cpu_features or spec.profile.features)
    return p.tflops * (0.5 if wide else 1.0)


def _mem_gib(fig: Figure) -> float | None:
    return None if fig.value is None else float(fig.value)


def device_spec(profile: HardwareProfile, *, measure: bool = False) -> DeviceSpec:
    """Figures for ``profile``. ``measure`` (used for ``local``) runs the copy test when the bandwidth
    is unknown and estimates CPU peaks from the ISA when the catalog has none.

    Device memory sizes are read as GiB (2^30 bytes), the unit GPU memory is sold in and the unit
    detection reports.
    """
    notes: list[str] = []
    peaks = _catalog_peaks(profile)
    bw = profile.bandwidth
    bandwidth, bw_src, bw_conf = bw.value, bw.source, bw.confidence
    measured = False
    if measure and bandwidth is None and profile.is_cpu:  # the copy test measures host memory only
        from quantmatch.sdk.bandwidth import measure_copy_bandwidth

        fig = measure_copy_bandwidth()
        bandwidth, bw_src, bw_conf = fig.value, f"measured: {fig.note}", "measured"
        measured = fig.value is not None
    elif bw.confidence in ("measured", "detected"):
        measured = bandwidth is not None
    if measure and profile.is_cpu and not peaks:
        peaks = estimate_cpu_peaks(profile, _cpu_mhz())
        if peaks:
            notes.append("CPU peaks estimated from cores x clock x vector ISA")
    rates = None
    if measure and profile.is_cpu:  # the kernels quantmatch detect --probe timed
        import os

        from quantmatch.sdk.kernel_rates import load_kernel_rates

        rates = load_kernel_rates(profile.cores or os.cpu_count() or 1, "wall")
        if rates is not None:
            notes.append(f"CPU kernel rates probed on this machine ({rates.date[:10]}, {rates.threads} threads)")
    if bandwidth is None:
        notes.append("memory bandwidth unknown: tokens/s cannot be predicted (ranking uses relative bytes)")
    if not peaks:
        notes.append("no compute peak known: compute-bound phases cannot be predicted")
    mem = _mem_gib(profile.memory)
    msrc = profile.memory.source or ("unknown" if mem is None else "")
    if mem is None:
        notes.append("memory size unknown: give --memory-budget to check the fit")
    return DeviceSpec(profile, mem, msrc, None if bandwidth is None else float(bandwidth), bw_src or "",
                      bw_conf or "unsourced", MappingProxyType(peaks), measured, tuple(notes), rates)


def with_measurements(spec: DeviceSpec, *, bandwidth_gbs: float | None = None,
                      peaks_tflops: Mapping[str, float] | None = None, source: str = "measured",
                      memory_gib: float | None = None) -> DeviceSpec:
    """A copy of ``spec`` with measured figures (they replace the catalog's and count as achieved)."""
    peaks = dict(spec.peaks)
    for dtype, value in (peaks_tflops or {}).items():
        peaks[dtype] = Peak(dtype, float(value), source, "measured")
    return replace(
        spec,
        bandwidth_gbs=spec.bandwidth_gbs if bandwidth_gbs is None else float(bandwidth_gbs),
        bandwidth_source=spec.bandwidth_source if bandwidth_gbs is None else source,
        bandwidth_confidence=spec.bandwidth_confidence if bandwidth_gbs is None else "measured",
        memory_gib=spec.memory_gib if memory_gib is None else memory_gib,
        memory_source=spec.memory_source if memory_gib is None else source,
        peaks=MappingProxyType(peaks),
        measured=spec.measured or bandwidth_gbs is not None,
        notes=tuple(n for n in spec.notes if "unknown" not in n or bandwidth_gbs is None),
    )
