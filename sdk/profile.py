"""Hardware profiles: what a device is, what it computes natively, and where every figure came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "CONFIDENCES",
    "DEVICE_FAMILIES",
    "TARGETS",
    "Figure",
    "HardwareProfile",
    "Provenance",
    "canonical_target",
]

DEVICE_FAMILIES = ("nvidia", "amd-rocm", "apple-metal", "intel-gpu", "x86-cpu", "arm-cpu")
"""Device families the built-in plugins know; third-party plugins may add more."""

TARGETS = ("cuda", "rocm", "metal", "xpu", "vulkan", "cpu")
"""Execution targets inside a runtime (``xpu``: Intel GPUs through SYCL/Level Zero, as PyTorch names them).
``mps`` is accepted as an alias of ``metal`` (the Apple GPU)."""

_TARGET_ALIASES = {"mps": "metal", "hip": "rocm", "gpu": "cuda"}

Confidence = Literal["sourced", "derived", "unsourced", "disputed", "detected", "measured", "estimate"]
CONFIDENCES: tuple[str, ...] = ("sourced", "derived", "unsourced", "disputed", "detected", "measured", "estimate")


def canonical_target(target: str | None) -> str | None:
    """Return the canonical execution-target name (``mps`` -> ``metal``); ``None`` stays ``None``."""
    if target is None:
        return None
    t = target.strip().lower()
    return _TARGET_ALIASES.get(t, t)


@dataclass(frozen=True)
class Provenance:
    """Which plugin (and which distribution at which version) contributed an item."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.plugin} ({self.distribution} {self.version})"


BUILTIN = Provenance("builtin", "quantmatch", "0")


@dataclass(frozen=True)
class Figure:
    """A number with its unit and its origin.

    ``source`` is a URL or ``owner/repo path @commit`` for catalog figures, or the literal
    ``detected``/``measured``/``estimate`` for figures taken on the running machine.
    ``confidence`` keeps the uncertainty of the source: ``unsourced``, ``derived`` (computed from
    other figures) and ``disputed`` (sources disagree) must be shown as such to users.
    """

    value: float | None
    unit: str
    source: str
    confidence: Confidence = "sourced"
    note: str = ""

    @property
    def known(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "source": self.source,
            "confidence": self.confidence,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Figure:
        return cls(
            value=None if d.get("value") is None else float(d["value"]),
            unit=str(d.get("unit", "")),
            source=str(d.get("source", "")),
            confidence=d.get("confidence", "sourced"),
            note=str(d.get("note", "")),
        )

    def __str__(self) -> str:
        if self.value is None:
            return "unknown"
        v = f"{self.value:g}"
        flag = "" if self.confidence in ("sourced", "detected", "measured") else f" ({self.confidence})"
        return f"{v} {self.unit}{flag}"


UNKNOWN_GB = Figure(None, "GB", "", "unsourced")
UNKNOWN_BW = Figure(None, "GB/s", "", "unsourced")


@dataclass(frozen=True)
class HardwareProfile:
    """One device: a catalog entry or the machine quantmatch runs on.

    Contract:

    - ``family`` is one of :data:`DEVICE_FAMILIES` (or a family a plugin adds); ``arch`` is the
      architecture id (``sm_90``, ``gfx942``, ``apple-m2``, ``sapphire_rapids`` ...).
    - ``features`` are the flags of the device's main compute unit (the GPU for a GPU, the CPU cores
      for a CPU): matrix/vector-engine operand types (``int8``, ``int4``, ``fp8-e4m3fn``,
      ``fp8-e4m3fnuz``, ``nvfp4``, ``mxfp4``, ``bf16``, ``tf32`` ...), architecture features
      (``wgmma``, ``tcgen05``, ``mma-sync``, ``dp4a``, ``mfma`` ...) and ISA flags (``avx512_vnni``,
      ``amx_int8``, ``dotprod``, ``i8mm`` ...). Capabilities are modelled as features, not as a
      numeric floor: a higher compute capability is not a superset (sm_120 has no ``tcgen05``).
    - ``cpu_features`` are the flags of the CPU cores that the ``cpu`` target runs on (equal to
      ``features`` for CPU devices; the SoC's CPU for Apple; empty when the host is unknown).
    - ``emulated`` maps an operand type the hardware accepts without a native unit to how it is
      lowered (for example Hopper: ``int4`` -> ``s4 mma.sync compiled to s8 SASS``).
    - ``peaks`` are dense peaks per compute dtype in TFLOPS (floats) or TOPS (integers).
    - every :class:`Figure` names its source; ``sources`` lists the device's references.
    """

    id: str
    name: str
    vendor: str
    family: str
    arch: str
    arch_name: str = ""
    compute_capability: float | None = None
    targets: tuple[str, ...] = ()
    features: frozenset[str] = frozenset()
    cpu_features: frozenset[str] = frozenset()
    emulated: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    memory: Figure = UNKNOWN_GB
    bandwidth: Figure = UNKNOWN_BW
    peaks: Mapping[str, Figure] = field(default_factory=lambda: MappingProxyType({}))
    cores: int | None = None
    sources: tuple[str, ...] = ()
    notes: str = ""
    aliases: tuple[str, ...] = ()
    detected: bool = False
    provenance: Provenance = BUILTIN

    @property
    def main_target(self) -> str:
        return self.targets[0] if self.targets else "cpu"

    @property
    def is_cpu(self) -> bool:
        return self.main_target == "cpu"

    def features_for(self, target: str | None) -> frozenset[str]:
        """The feature set of the unit that executes on ``target`` (``cpu`` uses the CPU cores)."""
        t = canonical_target(target) or self.main_target
        if t == "cpu":
            return self.cpu_features if not self.is_cpu else self.features
        return self.features

    def peak(self, dtype: str) -> Figure | None:
        return self.peaks.get(dtype)

    def with_provenance(self, provenance: Provenance) -> HardwareProfile:
        return replace(self, provenance=provenance)

    @cached_property
    def _signature(self) -> tuple[Any, ...]:
        return (
            self.family,
            self.arch,
            self.compute_capability,
            self.targets,
            self.features,
            self.cpu_features,
            tuple(sorted(self.emulated.items())),
        )

    def signature(self) -> tuple[Any, ...]:
        """What verdicts depend on: two devices with the same signature get the same verdicts."""
        return self._signature

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "vendor": self.vendor,
            "family": self.family,
            "arch": self.arch,
            "arch_name": self.arch_name,
            "compute_capability": self.compute_capability,
            "targets": list(self.targets),
            "features": sorted(self.features),
            "cpu_features": sorted(self.cpu_features),
            "emulated": dict(sorted(self.emulated.items())),
            "memory": self.memory.to_dict(),
            "bandwidth": self.bandwidth.to_dict(),
            "peaks": {k: v.to_dict() for k, v in sorted(self.peaks.items())},
            "cores": self.cores,
            "sources": list(self.sources),
            "notes": self.notes,
            "aliases": list(self.aliases),
            "detected": self.detected,
            "plugin": self.provenance.plugin,
            "distribution": self.provenance.distribution,
            "version": self.provenance.version,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], provenance: Provenance = BUILTIN) -> HardwareProfile:
        """Build a profile from the catalog's JSON form (the inverse of :meth:`to_dict`)."""
        features = frozenset(d.get("features", ()))
        cpu = d.get("cpu_features")
        family = str(d["family"])
        cpu_features = frozenset(cpu) if cpu is not None else (
            features if family.endswith("-cpu") else frozenset()
        )
        cc = d.get("compute_capability")
        return cls(
            id=str(d["id"]),
            name=str(d.get("name", d["id"])),
            vendor=str(d.get("vendor", "")),
            family=family,
            arch=str(d.get("arch", "")),
            arch_name=str(d.get("arch_name", "")),
            compute_capability=None if cc is None else float(cc),
            targets=tuple(canonical_target(t) or t for t in d.get("targets", ())),
            features=features,
            cpu_features=cpu_features,
            emulated=MappingProxyType(dict(d.get("emulated", {}))),
            memory=Figure.from_dict(d["memory"]) if "memory" in d else UNKNOWN_GB,
            bandwidth=Figure.from_dict(d["bandwidth"]) if "bandwidth" in d else UNKNOWN_BW,
            peaks=MappingProxyType({k: Figure.from_dict(v) for k, v in d.get("peaks", {}).items()}),
            cores=d.get("cores"),
            sources=tuple(d.get("sources", ())),
            notes=str(d.get("notes", "")),
            aliases=tuple(d.get("aliases", ())),
            detected=bool(d.get("detected", False)),
            provenance=provenance,
        )
