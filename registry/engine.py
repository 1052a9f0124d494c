"""Rule evaluation: turn a backend's capability rows into a verdict for one combination.

Decisions depend only on the device's *signature* (family, arch, features, targets), so they are
memoised per signature; formatting the reasons with the device's name happens afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from quantmatch.registry.citations import catalog_caveats, catalog_sources
from quantmatch.sdk.capability import CATALOG_SOURCE, Capability, Requires
from quantmatch.sdk.profile import HardwareProfile, Provenance
from quantmatch.sdk.verdict import Level, Reason

__all__ = ["Decision", "PluginFailure", "Query", "decide", "native_type", "unmet"]


class PluginFailure(Exception):
    """A plugin's declaration or code raised while a combination was judged."""

    def __init__(self, provenance: Provenance, what: str, error: Exception) -> None:
        self.provenance, self.what, self.error = provenance, what, error
        super().__init__(f"{what} raised {type(error).__name__}: {error}")

# A requested type is satisfied by any of these device operand types.
_TYPE_ALIASES: dict[str, tuple[str, ...]] = {
    "fp8-e4m3": ("fp8-e4m3fn", "fp8-e4m3fnuz"),
    "fp8-e5m2": ("fp8-e5m2", "fp8-e5m2fnuz"),
    "fp4": ("fp4", "nvfp4", "mxfp4"),
    "mxfp6-e2m3": ("mxfp6",),
    "mxfp6-e3m2": ("mxfp6",),
}


def native_type(t: str | None, features: frozenset[str]) -> bool:
    """Whether ``features`` include operand type ``t`` (``fp8-e4m3`` accepts the fn and fnuz variants)."""
    if t is None:
        return False
    return any(x in features for x in _TYPE_ALIASES.get(t, (t,)))


@dataclass(frozen=True)
class Query:
    """The scheme-side half of a combination, reduced to what rows match on."""

    method: str | None
    weights: str
    activations: str | None
    group: int
    symmetric: bool
    layer: str
    target: str


@lru_cache(maxsize=8192)
def _match(pattern: str, value: str) -> bool:
    return fnmatchcase(value, pattern)


def _any_match(patterns: Sequence[str] | None, value: str | None) -> bool:
    if patterns is None or value is None:
        return True
    return any(_match(p, value) for p in patterns)


def _filters_match(cap: Capability, q: Query) -> bool:
    if q.layer not in cap.layers:
        return False
    if cap.targets is not None and q.target not in cap.targets:
        return False
    if cap.methods is not None and q.method is not None and q.method not in cap.methods:
        return False
    if not _any_match(cap.weights, q.weights):
        return False
    if not _any_match(cap.activations, q.activations):
        return False
    if cap.group_sizes is not None and q.group not in cap.group_sizes:
        return False
    return not (cap.symmetric is not None and cap.symmetric != q.symmetric)


def _fmt_set(items: frozenset[str]) -> str:
    return ", ".join(sorted(items))


def unmet(req: Requires, profile: HardwareProfile, q: Query) -> list[str]:
    """The conditions of ``req`` that ``profile`` does not meet (empty: the predicate holds)."""
    out: list[str] = []
    feats = profile.features_for(q.target)
    if req.families is not None and profile.family not in req.families:
        out.append(f"needs a {' or '.join(sorted(req.families))} device ({{device}} is {profile.family})")
    if req.archs is not None and profile.arch not in req.archs:
        out.append(f"needs architecture {' or '.join(sorted(req.archs))} ({{device}} is {profile.arch})")
    if profile.arch in req.not_archs:
        out.append(f"not available on {profile.arch}")
    missing = req.features_all - feats
    if missing:
        out.append(f"needs {_fmt_set(missing)} ({{device}} lacks it)")
    if req.features_any and not (req.features_any & feats):
        out.append(f"needs one of {_fmt_set(req.features_any)} ({{device}} has none)")
    present = req.features_none & feats
    if present:
        out.append(f"does not apply to devices with {_fmt_set(present)}")
    cc = profile.compute_capability
    if req.min_cc is not None and (cc is None or cc < req.min_cc):
        have = f"{{device}} is {cc:.1f}" if cc is not None else "{device} is not an NVIDIA GPU"
        out.append(f"needs compute capability >= {req.min_cc:.1f} ({have})")
    if req.max_cc is not None and (cc is None or cc > req.max_cc):
        have = f"{{device}} is {cc:.1f}" if cc is not None else "{device} is not an NVIDIA GPU"
        out.append(f"needs compute capability <= {req.max_cc:.1f} ({have})")
    compute = q.activations or q.weights
    if req.compute_native and not native_type(compute, feats):
        out.append(f"needs native {compute} math ({{device}} {q.target} has no {compute} unit)")
    if req.weights_native and not native_type(q.weights, feats):
        out.append(f"needs native {q.weights} math ({{device}} {q.target} has no {q.weights} unit)")
    if req.compute_emulated and compute not in profile.emulated:
        out.append(f"no known lowering of {compute} on {{device}}")
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Decision:
    """Which row decided (or none), and the rows that matched the scheme but not the device."""

    level: Level
    row: Capability | None
    provenance: Provenance | None
    misses: tuple[tuple[Capability, Provenance, tuple[str, ...]], ...]


Rows = tuple[tuple[Capability, Provenance], ...]


def candidate_rows(rows: Rows, q: Query) -> Rows:
    """The rows whose scheme filters match ``q`` (independent of the device, so cacheable)."""
    out = []
    for cap, prov in rows:
        try:
            if _filters_match(cap, q):
                out.append((cap, prov))
        except Exception as e:
            raise PluginFailure(prov, f"the scheme filters of its capability {cap.reason!r}", e) from e
    return tuple(out)


def decide(rows: Rows, profile: HardwareProfile, q: Query) -> Decision:
    """First row (of those matching ``q``) whose predicate holds decides; the rest explain."""
    misses: list[tuple[Capability, Provenance, tuple[str, ...]]] = []
    for cap, prov in rows:
        try:
            failures = unmet(cap.when, profile, q)
        except Exception as e:
            raise PluginFailure(prov, f"the device predicate of its capability {cap.reason!r}", e) from e
        if failures:
            misses.append((cap, prov, tuple(failures)))
            continue
        return Decision(cap.level, cap, prov, tuple(misses))
    return Decision(Level.UNSUPPORTED, None, None, tuple(misses))


class _SafeDict(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(text: str, profile: HardwareProfile, q: Query) -> str:
    """Fill ``{device}``, ``{arch}``, ``{weights}``, ``{activations}``, ``{target}``, ``{lowering}``."""
    if "{" not in text:
        return text
    compute = q.activations or q.weights
    return text.format_map(_SafeDict(device=profile.name, arch=profile.arch, weights=q.weights,
                                     activations=q.activations or "", target=q.target,
                                     method=q.method or "",
                                     lowering=profile.emulated.get(compute, "no known lowering")))


def _source(cap: Capability, profile: HardwareProfile, q: Query) -> str:
    if cap.source != CATALOG_SOURCE:
        return cap.source
    return catalog_sources(profile, _catalog_types(cap, q))


def _catalog_types(cap: Capability, q: Query) -> tuple[str, ...]:
    """The operand types a catalog-sourced row rests on: the compute type, and the weights' when the row
    needs them native too."""
    compute = q.activations or q.weights
    return (compute, q.weights) if cap.when.weights_native and q.weights != compute else (compute,)


def _deciding_reason(cap: Capability, prov: Provenance, profile: HardwareProfile, q: Query) -> Reason:
    try:
        text = render(cap.reason, profile, q)
    except Exception as e:
        raise PluginFailure(prov, f"formatting the reason {cap.reason!r}", e) from e
    if cap.source == CATALOG_SOURCE:
        notes = catalog_caveats(profile, _catalog_types(cap, q), profile.features_for(q.target))
        text += "".join(f"; {n}" for n in notes)
    return Reason(text, _source(cap, profile, q), prov.plugin)


def reasons_for(decision: Decision, profile: HardwareProfile, q: Query, backend: str) -> tuple[Reason, ...]:
    """Human-readable reasons: the deciding row first, then why better rows did not apply."""
    out: list[Reason] = []
    if decision.row is not None and decision.provenance is not None:
        out.append(_deciding_reason(decision.row, decision.provenance, profile, q))
    else:
        acts = f" x {q.activations}" if q.activations else ""
        out.append(Reason(f"{backend} declares no {q.layer} kernel for {q.weights}{acts} on "
                          f"{q.target} for {profile.name}", "", ""))
    for cap, prov, failures in decision.misses:
        if cap.level.rank >= decision.level.rank and decision.row is not None:
            continue
        why = "; ".join(render(f, profile, q) for f in failures)
        try:
            text = render(cap.reason, profile, q)
        except Exception as e:
            raise PluginFailure(prov, f"formatting the reason {cap.reason!r}", e) from e
        out.append(Reason(f"not {cap.level.value}: {text} - {why}", _source(cap, profile, q), prov.plugin))
    return tuple(out)
