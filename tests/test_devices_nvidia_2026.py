"""NVIDIA devices added for issue 18: catalog figures with sources, NVML detection, verdicts that follow features.

Only NVML (``pynvml``) is faked; the catalog, matching and registry are the real ones.
"""

from __future__ import annotations

import sys
import types

import pytest

from quantmatch.plugins.devices import nvidia
from quantmatch.registry import Registry
from quantmatch.sdk.profile import HardwareProfile
from quantmatch.sdk.verdict import Level

GIB = 2**30
NEW = ("nvidia_b300", "nvidia_jetson_thor", "nvidia_rtx_pro_6000_blackwell", "nvidia_dgx_spark_gb10",
       "nvidia_jetson_agx_orin", "nvidia_rtx_4060", "nvidia_rtx_4070")
CUTLASS = "NVIDIA/cutlass include/cute/arch/config.hpp @7107b055"


def by_id(device_id: str) -> HardwareProfile:
    return next(p for p in nvidia.NvidiaFamily.catalog() if p.id == device_id)


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


# ----------------------------------------------------------------------------------------- catalog


@pytest.mark.parametrize("device_id", NEW)
def test_new_device_in_catalog_with_sourced_memory_and_bandwidth(device_id: str) -> None:
    p = by_id(device_id)
    assert p.family == "nvidia" and p.targets == ("cuda", "vulkan") and p.compute_capability
    assert p.arch == f"sm_{str(p.compute_capability).replace('.', '')}"
    for fig in (p.memory, p.bandwidth):
        assert fig.value and fig.source and fig.confidence == "sourced", (device_id, fig)
    for dtype, fig in p.peaks.items():  # every peak names its source; derived/disputed ones say why
        assert fig.source and fig.confidence in ("sourced", "derived", "disputed"), (device_id, dtype)
        if fig.confidence != "sourced":
            assert fig.note, (device_id, dtype)
    assert p.sources and p.notes and p.aliases


def test_catalog_figures() -> None:
    assert by_id("nvidia_b300").memory.value == 288 and by_id("nvidia_b300").bandwidth.value == 8000
    assert by_id("nvidia_rtx_pro_6000_blackwell").memory.value == 96
    assert by_id("nvidia_rtx_pro_6000_blackwell").bandwidth.value == by_id("nvidia_rtx_5090").bandwidth.value
    assert by_id("nvidia_dgx_spark_gb10").memory.value == 128 and by_id("nvidia_dgx_spark_gb10").bandwidth.value == 273
    assert by_id("nvidia_jetson_thor").memory.value == 128 and by_id("nvidia_jetson_thor").bandwidth.value == 273
    assert by_id("nvidia_jetson_agx_orin").memory.value == 64
    assert by_id("nvidia_jetson_agx_orin").bandwidth.value == pytest.approx(204.8)
    assert by_id("nvidia_rtx_4060").bandwidth.value == 272 and by_id("nvidia_rtx_4070").bandwidth.value == 504
    # Figures quoted "with sparsity" are halved and say so.
    assert by_id("nvidia_dgx_spark_gb10").peaks["fp4"].confidence == "derived"
    assert by_id("nvidia_dgx_spark_gb10").peaks["fp4"].value == 500
    # B300's FP4 differs between HGX and GB300 quotes; its INT8 is not taken from B200.
    assert by_id("nvidia_b300").peaks["fp4"].confidence == "disputed"
    assert "int8" not in by_id("nvidia_b300").peaks


def test_feature_sets_follow_cutlass() -> None:
    b200, b300, thor = by_id("nvidia_b200"), by_id("nvidia_b300"), by_id("nvidia_jetson_thor")
    rtx5090, pro = by_id("nvidia_rtx_5090"), by_id("nvidia_rtx_pro_6000_blackwell")
    spark = by_id("nvidia_dgx_spark_gb10")
    # sm_103 and sm_110: tcgen05 like sm_100; sm_103 has no tcgen05 kind::i8.
    assert {"tcgen05", "nvfp4", "mxfp4", "mxfp8", "block-scale-mma"} <= b300.features
    assert "int8" not in b300.features and "int8" in b300.emulated and "wgmma" not in b300.features
    assert b300.features == b200.features - {"int8"}
    assert thor.features == b200.features and "int8" in thor.features
    assert CUTLASS in b300.sources and CUTLASS in thor.sources and CUTLASS in spark.sources
    # sm_120 boards and sm_121 (GB10): block-scaled mma.sync, no tcgen05, no wgmma.
    assert pro.features == rtx5090.features == spark.features
    assert "tcgen05" not in spark.features and "wgmma" not in spark.features
    assert {"sve", "sve2", "i8mm", "bf16", "dotprod"} <= spark.cpu_features and "sme" not in spark.cpu_features
    # sm_87 Orin: Ampere tensor cores (bf16, tf32, int8, int4), no FP8.
    orin = by_id("nvidia_jetson_agx_orin")
    assert {"bf16", "tf32", "int8", "int4"} <= orin.features
    assert not {f for f in orin.features if f.startswith("fp8")}
    assert orin.features == by_id("nvidia_rtx_3090").features and "i8mm" not in orin.cpu_features
    # Ada mid-range: the RTX 4090's feature set (FP8 mma.sync on sm_89).
    for sku in ("nvidia_rtx_4060", "nvidia_rtx_4070"):
        assert by_id(sku).features == by_id("nvidia_rtx_4090").features and "fp8-e4m3fn" in by_id(sku).features
    assert (b300.compute_capability, thor.compute_capability, spark.compute_capability) == (10.3, 11.0, 12.1)


# ----------------------------------------------------------------------------------------- detection


def fake_pynvml(gpus: list[tuple[str, tuple[int, int], int | None]]) -> types.ModuleType:
    """NVML with these GPUs; a memory of ``None`` raises like NVML's NOT_SUPPORTED on Jetson and GB10."""
    mod = types.ModuleType("pynvml")
    mod.nvmlInit = lambda: None  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: gpus[h][0]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCudaComputeCapability = lambda h: gpus[h][1]  # type: ignore[attr-defined]

    def memory(h: int) -> types.SimpleNamespace:
        total = gpus[h][2]
        if total is None:
            raise RuntimeError("Not Supported")
        return types.SimpleNamespace(total=total)

    mod.nvmlDeviceGetMemoryInfo = memory  # type: ignore[attr-defined]
    return mod


def detect_one(monkeypatch: pytest.MonkeyPatch, name: str, cc: tuple[int, int], total: int | None) -> HardwareProfile:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([(name, cc, total)]))
    d = nvidia.NvidiaFamily.detect()
    assert not d.reason and len(d.devices) == 1, d.reason
    return d.devices[0]


@pytest.mark.parametrize(("name", "cc", "total", "entry"), [
    ("NVIDIA B300 SXM6 AC", (10, 3), 270 * GIB, "nvidia_b300"),
    ("NVIDIA GB300", (10, 3), 270 * GIB, "nvidia_b300"),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", (12, 0), 95 * GIB, "nvidia_rtx_pro_6000_blackwell"),
    ("NVIDIA GB10", (12, 1), None, "nvidia_dgx_spark_gb10"),
    ("Orin (nvgpu)", (8, 7), 61 * GIB, "nvidia_jetson_agx_orin"),
    ("NVIDIA Thor", (11, 0), 122 * GIB, "nvidia_jetson_thor"),
    ("NVIDIA GeForce RTX 4070", (8, 9), 12 * GIB, "nvidia_rtx_4070"),
    ("NVIDIA GeForce RTX 4060", (8, 9), 8 * GIB, "nvidia_rtx_4060"),
])
def test_nvml_name_maps_to_catalog_entry(monkeypatch: pytest.MonkeyPatch, name: str, cc: tuple[int, int],
                                         total: int | None, entry: str) -> None:
    p = detect_one(monkeypatch, name, cc, total)
    ref = by_id(entry)
    assert p.name == name and p.detected and p.arch == ref.arch and p.compute_capability == ref.compute_capability
    assert p.features == ref.features and dict(p.emulated) == dict(ref.emulated)
    assert f"matched catalog entry {entry}" in p.notes
    assert p.bandwidth.value == ref.bandwidth.value and p.bandwidth.confidence == "estimate"
    if total is None:  # NVML has no memory size for GB10: the catalog's, marked as an estimate
        assert p.memory.value == ref.memory.value and p.memory.confidence == "estimate"
    else:
        assert p.memory.source == "detected"


@pytest.mark.parametrize(("name", "cc", "total", "arch_entry"), [
    ("Orin (nvgpu)", (8, 7), None, "nvidia_jetson_agx_orin"),  # AGX, NX or Nano: memory not reported
    ("NVIDIA Thor", (11, 0), 60 * GIB, "nvidia_jetson_thor"),  # a 64 GB T4000, not the T5000
    ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", (12, 0), 95 * GIB, "nvidia_rtx_pro_6000_blackwell"),
    ("NVIDIA GeForce RTX 4070 Ti", (8, 9), 12 * GIB, "nvidia_rtx_4070"),
    ("NVIDIA GeForce RTX 4060 Laptop GPU", (8, 9), 8 * GIB, "nvidia_rtx_4060"),
])
def test_other_skus_get_arch_features_but_not_the_figures(monkeypatch: pytest.MonkeyPatch, name: str,
                                                          cc: tuple[int, int], total: int | None,
                                                          arch_entry: str) -> None:
    p = detect_one(monkeypatch, name, cc, total)
    assert p.features == by_id(arch_entry).features
    assert p.bandwidth.value is None and not p.peaks and "no catalog entry for this SKU" in p.notes


def test_orin_name_shared_by_modules_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    p = detect_one(monkeypatch, "Orin (nvgpu)", (8, 7), None)
    assert "fp8-e4m3fn" not in p.features and "names several modules" in p.notes


def test_thor_before_cuda_13_reports_sm_101(monkeypatch: pytest.MonkeyPatch) -> None:
    p = detect_one(monkeypatch, "NVIDIA Thor", (10, 1), 122 * GIB)
    assert p.arch == "sm_101" and p.features == by_id("nvidia_jetson_thor").features and "sm_110" in p.notes


# ----------------------------------------------------------------------------------------- verdicts


def level(reg: Registry, scheme: str, backend: str, device: str) -> Level:
    return reg.verdict(None, scheme, backend, device).level


def test_b300_nvfp4_native_through_tcgen05(reg: Registry) -> None:
    assert level(reg, "w4a4-nvfp4", "vllm", "nvidia_b300") is Level.NATIVE
    assert level(reg, "w4a4-nvfp4", "tensorrt-llm", "nvidia_b300") is Level.NATIVE
    # The vLLM reason is the sm_100-family (tcgen05) path, not the sm_120 mma.sync one.
    v = reg.verdict(None, "w4a4-nvfp4", "vllm", "nvidia_b300")
    assert "sm_120" not in v.reasons[0].text


def test_b300_int8_is_not_native_hardware_math(reg: Registry) -> None:
    assert level(reg, "w8a8-int8", "hardware", "nvidia_b200") is Level.NATIVE
    v = reg.verdict(None, "w8a8-int8", "hardware", "nvidia_b300")
    assert v.level is Level.EMULATED and "kind::i8" in v.reasons[0].text


def test_sm120_boards_and_gb10_share_the_rtx_5090_verdicts(reg: Registry) -> None:
    for scheme in ("w4a4-nvfp4", "w4a4-mxfp4", "w8a8-fp8"):
        expected = level(reg, scheme, "vllm", "nvidia_rtx_5090")
        assert level(reg, scheme, "vllm", "nvidia_rtx_pro_6000_blackwell") is expected
        assert level(reg, scheme, "vllm", "nvidia_dgx_spark_gb10") is expected
    # NVFP4 W4A4 native through block-scaled mma.sync; MXFP4 falls back to Marlin (weight-only) on sm_12x.
    assert level(reg, "w4a4-nvfp4", "vllm", "dgx-spark") is Level.NATIVE
    assert level(reg, "w4a4-mxfp4", "vllm", "nvidia_rtx_pro_6000_blackwell") is Level.WEIGHT_ONLY
    assert level(reg, "w4a4-mxfp4", "vllm", "nvidia_b300") is Level.NATIVE


def test_thor_has_datacenter_blackwell_fp4(reg: Registry) -> None:
    assert level(reg, "w4a4-nvfp4", "tensorrt-llm", "nvidia_jetson_thor") is Level.NATIVE
    assert level(reg, "w4a4-nvfp4", "hardware", "jetson-thor") is Level.NATIVE


def test_orin_fp8_is_not_native(reg: Registry) -> None:
    assert level(reg, "w8a8-fp8", "vllm", "nvidia_jetson_agx_orin") is Level.WEIGHT_ONLY
    assert level(reg, "w8a8-fp8", "hardware", "nvidia_jetson_agx_orin") is Level.UNSUPPORTED
    assert level(reg, "w8a8-fp8", "tensorrt-llm", "nvidia_jetson_agx_orin") is Level.UNSUPPORTED
    assert level(reg, "w8a8-int8", "vllm", "agx-orin") is Level.NATIVE


def test_ada_mid_range_fp8_native_unlike_ampere(reg: Registry) -> None:
    for sku in ("nvidia_rtx_4060", "nvidia_rtx_4070"):
        assert level(reg, "w8a8-fp8", "vllm", sku) is Level.NATIVE
        assert level(reg, "w4a4-nvfp4", "vllm", sku) is Level.WEIGHT_ONLY
    assert level(reg, "w8a8-fp8", "vllm", "nvidia_rtx_3090") is Level.WEIGHT_ONLY
