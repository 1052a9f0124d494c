"""Helpers shared by the built-in device families: catalog loading, CPU flags, name matching, probes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

from quantmatch.sdk.bandwidth import measure_copy_bandwidth
from quantmatch.sdk.device import load_catalog_file
from quantmatch.sdk.profile import UNKNOWN_BW, Figure, HardwareProfile

__all__ = [
    "GIB",
    "as_str",
    "catalog_copy",
    "cpu_blocks",
    "detected_memory",
    "error_text",
    "gpu_profile",
    "load_profiles",
    "match_by_name",
    "measure_copy_bandwidth",
    "meminfo_total_bytes",
    "normalize_cpu_flags",
    "physical_cores",
    "read_text",
    "unmeasured_bandwidth",
]

PACKAGE = "quantmatch.plugins.devices"
GIB = 2**30

# py-cpuinfo's CPUID decoder and other tools spell some flags differently from Linux /proc/cpuinfo;
# the catalog uses the Linux spellings.
_FLAG_ALIASES = {
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "avx512vbmi2": "avx512_vbmi2",
    "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq",
    "avx512vp2intersect": "avx512_vp2intersect",
    "avxvnni": "avx_vnni",
    "amxtile": "amx_tile",
    "amxint8": "amx_int8",
    "amxbf16": "amx_bf16",
    "amxfp16": "amx_fp16",
    "sse4.1": "sse4_1",
    "sse4.2": "sse4_2",
    "asimddp": "dotprod",
}


def load_profiles(filename: str) -> tuple[HardwareProfile, ...]:
    """The catalog shipped as ``data/<filename>`` of this package, as profiles."""
    return tuple(HardwareProfile.from_dict(d) for d in load_catalog_file(PACKAGE, f"data/{filename}"))


def normalize_cpu_flags(flags: Iterable[str]) -> frozenset[str]:
    """Lower-case flags in the catalog spelling: Linux /proc/cpuinfo names, ``dotprod`` for ``asimddp``."""
    out = set()
    for f in flags:
        f = f.strip().lower()
        if f:
            out.add(_FLAG_ALIASES.get(f, f))
    return frozenset(out)


# Words that do not tell two SKUs apart ("NVIDIA GeForce RTX 4090", "AMD Instinct MI300X VF").
_GENERIC_TOKENS = frozenset({
    "nvidia", "geforce", "tesla", "quadro", "rtx", "sxm", "sxm2", "sxm3", "sxm4", "sxm5", "pcie", "nvl",
    "hbm2", "hbm2e", "hbm3", "hbm3e", "amd", "instinct", "radeon", "rx", "vf", "apple",
})


def _tokens(name: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", name.lower())


def _model_tokens(name: str) -> set[str]:
    return {t for t in _tokens(name) if t not in _GENERIC_TOKENS and not re.fullmatch(r"\d+gb", t)}


def match_by_name(name: str, candidates: Iterable[HardwareProfile]) -> HardwareProfile | None:
    """The catalog device whose name best matches a reported name, or ``None``.

    Every model token of the catalog name (``h100``, ``2080``+``ti``, ``mi300x``) must appear in the
    reported name; among those, the one sharing most tokens wins and ties keep catalog order (so
    "NVIDIA H100 80GB HBM3" picks the SXM entry before the PCIe one).
    """
    reported = set(_tokens(name))
    best: HardwareProfile | None = None
    best_score = 0
    for p in candidates:
        model = _model_tokens(p.name)
        if not model or not model <= reported:
            continue
        score = len(set(_tokens(p.name)) & reported)
        if score > best_score:
            best, best_score = p, score
    return best


def error_text(e: BaseException) -> str:
    """``ExceptionType: message`` for reasons shown to users."""
    msg = str(e).strip()
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def as_str(value: object) -> str:
    """A vendor library's string (some return ``bytes``)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def gpu_profile(
    *,
    id: str,
    name: str,
    vendor: str,
    family: str,
    arch: str,
    targets: tuple[str, ...],
    catalog: Iterable[HardwareProfile],
    same_as: Mapping[str, str],
    fallback: frozenset[str],
    memory: Figure,
    probe: str,
    compute_capability: float | None = None,
) -> HardwareProfile:
    """A detected GPU described by the catalog: features from its architecture, figures from its SKU.

    ``same_as`` maps an architecture missing from the catalog to one that behaves the same;
    ``fallback`` are the conservative features of an architecture nobody knows.
    """
    catalog = tuple(catalog)
    ref_arch = arch if any(p.arch == arch for p in catalog) else same_as.get(arch, arch)
    same_arch = [p for p in catalog if p.arch == ref_arch]
    match = match_by_name(name, same_arch)
    notes: list[str] = []
    if same_arch:
        ref = match or same_arch[0]
        features, emulated, arch_name = ref.features, ref.emulated, ref.arch_name
        if ref_arch != arch:
            notes.append(f"{arch} is not in the catalog: assumed to behave like {ref_arch}")
    else:
        features, emulated, arch_name = fallback, MappingProxyType({}), ""
        notes.append(f"{arch} is not in the catalog: only baseline features are assumed")
    bandwidth, peaks = UNKNOWN_BW, {}
    sources: tuple[str, ...] = (probe,)
    if match:
        notes.append(f"matched catalog entry {match.id}: bandwidth and peaks are its figures")
        bandwidth = catalog_copy(match.bandwidth, match)
        peaks = {k: catalog_copy(v, match) for k, v in match.peaks.items()}
        sources = (probe, *match.sources)
        if memory.value is None:
            memory = catalog_copy(match.memory, match)
    else:
        notes.append("no catalog entry for this SKU: bandwidth and peaks unknown")
    return HardwareProfile(
        id=id, name=name, vendor=vendor, family=family, arch=arch, arch_name=arch_name,
        compute_capability=compute_capability, targets=targets, features=features, emulated=emulated,
        memory=memory, bandwidth=bandwidth, peaks=MappingProxyType(peaks), sources=sources,
        notes="; ".join(notes), detected=True,
    )


def read_text(path: str) -> str | None:
    """A text file's content, or ``None`` when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_blocks(text: str) -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as one ``{key: value}`` dict per logical processor."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip().lower()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def physical_cores(blocks: list[dict[str, str]]) -> int | None:
    """Physical cores from ``/proc/cpuinfo``: ``cpu cores`` per socket times distinct ``physical id``."""
    pairs = {(b.get("physical id"), b.get("core id")) for b in blocks if "core id" in b}
    if pairs:
        return len(pairs)
    for b in blocks:
        if b.get("cpu cores", "").isdigit():
            sockets = len({x.get("physical id") for x in blocks}) or 1
            return int(b["cpu cores"]) * sockets
    return None


def meminfo_total_bytes(text: str | None) -> int | None:
    """``MemTotal`` of ``/proc/meminfo`` in bytes."""
    if not text:
        return None
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def detected_memory(total_bytes: int | None, what: str) -> Figure:
    """A detected memory size in binary GB (GiB), the unit vendors use for device memory."""
    if not total_bytes:
        return Figure(None, "GB", "", "unsourced", f"{what} could not be read")
    return Figure(round(total_bytes / GIB, 2), "GB", "detected", "detected", f"{what} (GiB)")


def unmeasured_bandwidth() -> Figure:
    return Figure(None, "GB/s", "measured", "measured",
                  "not measured: detect(measure_bandwidth=True) runs a copy test")


def catalog_copy(figure: Figure, entry: HardwareProfile) -> Figure:
    """A catalog figure reused for a detected device: same source, confidence at most ``estimate``."""
    if figure.value is None:
        return figure
    conf = figure.confidence if figure.confidence in ("unsourced", "disputed", "derived") else "estimate"
    note = f"from catalog entry {entry.id}" + (f"; {figure.note}" if figure.note else "")
    return Figure(figure.value, figure.unit, figure.source, conf, note)
