"""What a verdict that cites the device's catalog (:data:`~quantmatch.sdk.capability.CATALOG_SOURCE`) rests on:
the sources the catalog records for the figures and features involved, and the caveats that go with them
(disputed or derived figures, FP8 that is the FNUZ variant, the CPU unit that does the math)."""

from __future__ import annotations

from quantmatch.sdk.features import CPU_UNITS
from quantmatch.sdk.profile import Figure, HardwareProfile

__all__ = ["catalog_caveats", "catalog_sources"]

# operand type -> the key of its peak in HardwareProfile.peaks
_PEAK_KEY = {"fp8-e4m3": "fp8", "fp8-e5m2": "fp8", "mxfp8": "fp8", "nvfp4": "fp4", "mxfp4": "fp4", "mxfp6": "fp6"}
_FNUZ = {"fp8-e4m3": "fp8-e4m3fnuz", "fp8-e5m2": "fp8-e5m2fnuz"}
_SHAKY = ("derived", "unsourced", "disputed", "estimate")


def _peaks(profile: HardwareProfile, dtype: str) -> list[tuple[str, Figure]]:
    """The peak figures of ``dtype`` (``int8`` also finds ``int8_dp4a``)."""
    key = _PEAK_KEY.get(dtype, dtype)
    return [(k, f) for k, f in sorted(profile.peaks.items()) if k == key or k.startswith(key + "_")]


def catalog_sources(profile: HardwareProfile, types: tuple[str, ...]) -> str:
    """The peak figures' sources for ``types``, then the entry's own references (which the catalog keeps
    for its feature flags), joined with `` ; ``."""
    found = [f.source for t in types for _k, f in _peaks(profile, t) if f.source]
    found.extend(profile.sources)
    unique = list(dict.fromkeys(s.strip() for s in found if s.strip()))
    return " ; ".join(unique) or f"{profile.id}: no source recorded in its catalog entry"


def catalog_caveats(profile: HardwareProfile, types: tuple[str, ...], features: frozenset[str]) -> list[str]:
    """What the reader must know about the figures and units a verdict on ``types`` rests on."""
    out = []
    for t in dict.fromkeys(types):
        for key, fig in _peaks(profile, t):
            if fig.confidence in _SHAKY and fig.value is not None:
                text = fig.note.removeprefix(f"{fig.confidence}: ")
                note = f": {text}" if text else ""
                out.append(f"the {key} peak ({fig.value:g} {fig.unit}) is {fig.confidence}{note}")
        fnuz = _FNUZ.get(t)
        if fnuz and fnuz in features and t + "fn" not in features and t not in features:
            out.append(f"FP8 on {profile.name} is the FNUZ variant ({fnuz}: no infinities, max 240), not OCP "
                       f"{t}fn, so e4m3fn checkpoints are converted on load")
        units = [f"{name} ({flag})" for flag, name in CPU_UNITS.get(t, ()) if flag in features]
        if units and t in features:
            out.append(f"{t} runs on {', '.join(units)}")
    return out
