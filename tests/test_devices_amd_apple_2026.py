"""AMD (MI350X, RDNA4, Strix Halo/Point) and Apple M5 catalog entries, their detection and the verdicts they change.

The outside world is faked as in tests/test_devices.py: the ``amdsmi`` module, ``rocm-smi`` JSON, an imported ROCm
torch, and ``sysctl``.
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest

from quantmatch.plugins.devices import amd_rocm, apple_metal
from quantmatch.registry import Registry
from quantmatch.sdk.profile import CONFIDENCES, HardwareProfile
from tests_support import fake_amdsmi

GIB = 2**30
NEW_AMD = ("amd_mi350x", "amd_rx_9070_xt", "amd_strix_halo", "amd_strix_point")


def by_id(device_id: str) -> HardwareProfile:
    catalog = [*amd_rocm.AmdRocmFamily.catalog(), *apple_metal.AppleMetalFamily.catalog()]
    return next(p for p in catalog if p.id == device_id)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


# ----------------------------------------------------------------------------------------- catalog


@pytest.mark.parametrize("device_id", [*NEW_AMD, "apple_m5"])
def test_entries_are_sourced(device_id: str) -> None:
    p = by_id(device_id)
    assert p.sources and p.notes and p.aliases
    for label, f in {"memory": p.memory, "bandwidth": p.bandwidth, **p.peaks}.items():
        assert f.confidence in CONFIDENCES, label
        assert f.source if f.value is not None else f.confidence == "unsourced", label
        if f.confidence == "derived":
            assert "derived" in f.note, label  # a derived figure says how


def test_amd_entries() -> None:
    mi350x, mi355x = by_id("amd_mi350x"), by_id("amd_mi355x")
    assert mi350x.arch == mi355x.arch == "gfx950" and mi350x.features == mi355x.features
    assert (mi350x.memory.value, mi350x.bandwidth.value) == (288.0, 8000.0)
    assert mi350x.peaks["fp8"].value < mi355x.peaks["fp8"].value  # lower clock
    assert {f.confidence for f in mi350x.peaks.values()} == {"derived"}

    rdna4, rdna3 = by_id("amd_rx_9070_xt"), by_id("amd_rx_7900_xtx")
    assert (rdna4.arch, rdna4.arch_name, rdna4.memory.value) == ("gfx1201", "RDNA4", 16.0)
    assert {"wmma", "fp8-e4m3fn", "fp8-e5m2", "int8", "int4"} <= rdna4.features
    assert not {"fp8-e4m3fnuz", "mfma", "mxfp4"} & rdna4.features  # OCP FP8, WMMA only, no MX
    assert not {f for f in rdna3.features if f.startswith("fp8")}

    halo, point = by_id("amd_strix_halo"), by_id("amd_strix_point")
    assert (halo.arch, point.arch) == ("gfx1151", "gfx1150")
    assert halo.features == point.features == {"bf16", "fp16", "fp32", "int4", "int8", "integer-dot", "wmma"}
    assert (halo.memory.value, halo.bandwidth.value) == (128.0, 256.0)
    assert point.bandwidth.value == 120.0
    for apu in (halo, point):
        assert apu.targets == ("rocm", "vulkan", "cpu") and apu.arch_name == "RDNA3.5"
        assert {"avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni"} <= apu.cpu_features
        assert "avx512_fp16" not in apu.cpu_features and "fp16" in apu.emulated
        assert "int8" in apu.features_for("cpu") and "wmma" not in apu.features_for("cpu")


def test_apple_m5_entry() -> None:
    m5, m4 = by_id("apple_m5"), by_id("apple_m4")
    assert (m5.arch, m5.memory.value, m5.bandwidth.value) == ("apple-m5", 32.0, 153.0)
    assert m5.features - m4.features == {"metal-tensor-api", "int8"}  # the GPU neural accelerators compute int8
    assert "metal-tensor-api" in m5.notes and "is_nax_available" in m5.notes
    assert {"sme", "sme2", "i8mm", "bf16", "dotprod"} <= m5.cpu_features and "sve" not in m5.cpu_features
    assert any("ml-explore/mlx mlx/backend/metal/device.cpp @" in s for s in m5.sources)


# ----------------------------------------------------------------------------------------- detection


def only(d: Any) -> HardwareProfile:
    assert d.present, d.reason
    assert len(d.devices) == 1
    return d.devices[0]


@pytest.mark.parametrize(("name", "gfx", "entry"), [
    ("AMD Instinct MI350X", "gfx950", "amd_mi350x"),
    ("AMD Instinct MI355X", "gfx950", "amd_mi355x"),
    ("AMD Radeon RX 9070 XT", "gfx1201", "amd_rx_9070_xt"),
    ("AMD Radeon 8060S Graphics", "gfx1151", "amd_strix_halo"),
    ("AMD Radeon 890M Graphics", "gfx1150", "amd_strix_point"),
])
def test_amdsmi_detects(monkeypatch: pytest.MonkeyPatch, no_rocm: None, name: str, gfx: str, entry: str) -> None:
    monkeypatch.setattr(amd_rocm, "_amdsmi", lambda: fake_amdsmi(name, gfx, 16 * GIB))
    p = only(amd_rocm.AmdRocmFamily.detect())
    ref = by_id(entry)
    assert p.name == name and p.arch == gfx and p.detected
    assert f"matched catalog entry {entry}" in p.notes
    assert p.features == ref.features and p.bandwidth.value == ref.bandwidth.value
    assert p.memory.value == 16.0  # what the GPU reports, not the catalog's maximum


def test_rocm_smi_detects_rdna4(monkeypatch: pytest.MonkeyPatch, no_rocm: None) -> None:
    out = json.dumps({"card0": {"Card Series": "AMD Radeon RX 9070 XT", "GFX Version": "gfx1201"}})
    monkeypatch.setattr(amd_rocm, "_rocm_smi_json", lambda: out)
    p = only(amd_rocm.AmdRocmFamily.detect())
    assert "amd_rx_9070_xt" in p.notes and "fp8-e4m3fn" in p.features and p.bandwidth.value == 640.0


def test_rocm_smi_name_only_finds_mi350x(monkeypatch: pytest.MonkeyPatch, no_rocm: None) -> None:
    out = json.dumps({"card0": {"Card Series": "AMD Instinct MI350X"}})  # older rocm-smi: no GFX Version
    monkeypatch.setattr(amd_rocm, "_rocm_smi_json", lambda: out)
    p = only(amd_rocm.AmdRocmFamily.detect())
    assert p.arch == "gfx950" and "amd_mi350x" in p.notes


def test_torch_rocm_detects_strix_halo(monkeypatch: pytest.MonkeyPatch, no_rocm: None) -> None:
    props = types.SimpleNamespace(name="AMD Radeon 8060S Graphics", gcnArchName="gfx1151", total_memory=96 * GIB)
    torch = types.SimpleNamespace(version=types.SimpleNamespace(hip="6.4"),
                                  cuda=types.SimpleNamespace(device_count=lambda: 1,
                                                             get_device_properties=lambda i: props))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setattr(amd_rocm, "_torch", lambda: sys.modules.get("torch"))
    p = only(amd_rocm.AmdRocmFamily.detect())
    assert "amd_strix_halo" in p.notes and p.memory.value == 96.0 and "fp8-e4m3fn" not in p.features


@pytest.mark.parametrize(("name", "gfx", "like"), [
    ("AMD Radeon 8050S Graphics", "gfx1151", "amd_strix_halo"),  # another SKU: arch features, no figures
    ("AMD Radeon RX 9060 XT", "gfx1200", "amd_rx_9070_xt"),  # RDNA4 Navi 44 behaves like gfx1201
    ("AMD Radeon 860M Graphics", "gfx1152", "amd_strix_point"),
])
def test_other_skus_get_arch_features(monkeypatch: pytest.MonkeyPatch, no_rocm: None, name: str, gfx: str,
                                      like: str) -> None:
    monkeypatch.setattr(amd_rocm, "_amdsmi", lambda: fake_amdsmi(name, gfx, 8 * GIB))
    p = only(amd_rocm.AmdRocmFamily.detect())
    assert p.arch == gfx and p.features == by_id(like).features
    assert "no catalog entry for this SKU" in p.notes and p.bandwidth.value is None


def test_igpu_entry() -> None:
    assert amd_rocm.igpu_entry("Radeon 8060S Graphics", "gfx1151").id == "amd_strix_halo"  # type: ignore[union-attr]
    assert amd_rocm.igpu_entry("AMD Radeon 890M Graphics", "gfx1151") is None  # brand and arch must agree
    assert amd_rocm.igpu_entry("AMD Radeon RX 9070 XT", "gfx1201") is None


M5_SYSCTL = {
    "machdep.cpu.brand_string": "Apple M5",
    "hw.memsize": str(24 * GIB),
    "hw.optional.AdvSIMD": "1",
    "hw.optional.arm.FEAT_FP16": "1",
    "hw.optional.arm.FEAT_DotProd": "1",
    "hw.optional.arm.FEAT_I8MM": "1",
    "hw.optional.arm.FEAT_BF16": "1",
    "hw.optional.arm.FEAT_SME": "1",
    "hw.optional.arm.FEAT_SME2": "1",
}


@pytest.mark.parametrize(("brand", "exact"), [("Apple M5", True), ("Apple M5 Pro", False)])
def test_apple_m5_detected(monkeypatch: pytest.MonkeyPatch, brand: str, exact: bool) -> None:
    monkeypatch.setattr(apple_metal, "_platform", lambda: ("Darwin", "arm64"))
    monkeypatch.setattr(apple_metal, "_run_sysctl", lambda name: {**M5_SYSCTL,
                                                                   "machdep.cpu.brand_string": brand}.get(name))
    p = only(apple_metal.AppleMetalFamily.detect())
    assert p.arch == "apple-m5" and "metal-tensor-api" in p.features
    assert {"sme2", "i8mm", "bf16", "int8"} <= p.cpu_features and not p.emulated
    assert p.memory.value == 24.0
    if exact:
        assert "matched catalog entry apple_m5" in p.notes and p.bandwidth.value == 153.0
    else:
        assert "GPU features of apple_m5 assumed" in p.notes and p.bandwidth.value is None
    assert apple_metal.catalog_id_for_brand(brand) == ("apple_m5" if exact else "apple_m5_pro")


# ----------------------------------------------------------------------------------------- verdicts


def level(registry: Registry, scheme: str, backend: str, device: str, target: str | None = None) -> str:
    return str(registry.verdict(None, scheme, backend, device, target=target).level.value)


def test_rdna4_fp8_differs_from_rdna3(registry: Registry) -> None:
    assert level(registry, "w8a8-fp8", "vllm", "amd_rx_9070_xt") == "native"
    assert level(registry, "w8a8-fp8", "vllm", "amd_rx_7900_xtx") == "unsupported"
    assert level(registry, "w8a8-fp8", "vllm", "amd_strix_halo") == "unsupported"  # RDNA3.5: no FP8


def test_mi350x_mx_native_rdna4_emulated(registry: Registry) -> None:
    assert level(registry, "w4a4-mxfp4", "vllm", "amd_mi350x") == "native"
    assert level(registry, "w4a4-mxfp4", "vllm", "amd_rx_9070_xt") == "emulated"
    assert level(registry, "w4a4-mxfp4", "vllm", "amd_mi300x") == "emulated"


def test_apu_cpu_cores_use_their_own_flags(registry: Registry) -> None:
    assert level(registry, "w8a8-int8", "onnxruntime", "amd_strix_point", "cpu") == "native"
    assert level(registry, "gguf-q4_k_m", "llama.cpp", "amd_strix_halo", "cpu") == "native"
    assert level(registry, "gguf-q4_k_m", "llama.cpp", "amd_strix_halo", "rocm") == "native"


def test_apple_m5_verdicts(registry: Registry) -> None:
    for device in ("apple_m5", "apple_m4"):
        assert level(registry, "w4a16-int4", "mlx", device) == "weight-only"
        assert level(registry, "w8a8-int8", "onnxruntime", device, "cpu") == "native"
