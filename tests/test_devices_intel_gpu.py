"""The Intel GPU family (``intel-gpu``, the ``xpu`` target): catalog, detection, listing, verdicts and planning.

Only the outside world is faked: ``xpu-smi discovery -j`` output, a DRM sysfs tree under ``tmp_path`` and an
imported XPU torch.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

from quantmatch.cli.main import main
from quantmatch.plugins.devices import intel_gpu
from quantmatch.registry import Registry
from quantmatch.sdk.device import Detection
from quantmatch.sdk.profile import CONFIDENCES, DEVICE_FAMILIES, TARGETS, HardwareProfile
from quantmatch.sdk.verdict import Level

REPO = Path(__file__).resolve().parents[1]
IDS = ("intel_arc_a770", "intel_arc_b580", "intel_max_1550")
GIB = 2**30


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


@pytest.fixture
def nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No xpu-smi, an empty sysfs tree, torch not imported."""
    root = tmp_path / "drm"
    root.mkdir()
    monkeypatch.setattr(intel_gpu, "_xpu_smi_json", lambda: None)
    monkeypatch.setattr(intel_gpu, "SYSFS_DRM", str(root))
    monkeypatch.setattr(intel_gpu, "_torch", lambda: None)
    return root


def card(root: Path, n: int, vendor: str, device: str) -> None:
    dev = root / f"card{n}" / "device"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text(vendor + "\n")
    (dev / "device").write_text(device + "\n")


def only(det: Detection) -> HardwareProfile:
    assert det.family == "intel-gpu" and len(det.devices) == 1, det
    p = det.devices[0]
    assert p.detected and p.family == "intel-gpu" and "xpu" in p.targets
    return p


# ---- catalog -------------------------------------------------------------------------------------------------
def test_family_and_target_are_known() -> None:
    assert "intel-gpu" in DEVICE_FAMILIES and "xpu" in TARGETS
    assert intel_gpu.IntelGpuFamily.name == "intel-gpu"


@pytest.mark.parametrize("device_id", IDS)
def test_catalog_entry_is_sourced(device_id: str, reg: Registry) -> None:
    d = reg.device(device_id)
    assert d.family == "intel-gpu" and d.vendor == "intel" and d.compute_capability is None
    assert d.sources and "xmx" in d.features and "xpu" in d.targets
    assert not ({"fp8-e4m3fn", "fp8-e5m2", "fp8-e4m3fnuz"} & d.features), "no FP8 XMX type on these generations"
    for what, fig in (("memory", d.memory), ("bandwidth", d.bandwidth), *d.peaks.items()):
        assert fig.confidence in CONFIDENCES
        assert fig.value is None or fig.source, f"{device_id} {what} has no source"
    assert d.memory.value and d.bandwidth.value


def test_catalog_figures(reg: Registry) -> None:
    a770, b580, pvc = (reg.device(i) for i in IDS)
    assert (a770.memory.value, a770.bandwidth.value, a770.arch) == (16.0, 560.0, "dg2")
    assert (b580.memory.value, b580.bandwidth.value, b580.arch) == (12.0, 456.0, "bmg")
    assert (pvc.memory.value, pvc.bandwidth.value, pvc.arch) == (128.0, 3276.8, "pvc")
    assert "tf32" in pvc.features and "tf32" not in a770.features  # joint_matrix: tf32 on PVC only
    assert pvc.targets == ("xpu",) and a770.targets == ("xpu", "vulkan")


# ---- detection -----------------------------------------------------------------------------------------------
def test_nothing_found_says_why(nothing: Path) -> None:
    det = intel_gpu.IntelGpuFamily.detect()
    assert not det.present and "xpu-smi" in det.reason and "torch not imported" in det.reason


@pytest.mark.parametrize(("pci", "device_id"), [("0x56a0", "intel_arc_a770"), ("0xe20b", "intel_arc_b580"),
                                                ("0x0bd5", "intel_max_1550")])
def test_sysfs_pci_id(nothing: Path, pci: str, device_id: str, reg: Registry) -> None:
    card(nothing, 0, "0x8086", pci)
    p = only(intel_gpu.IntelGpuFamily.detect())
    ref = reg.device(device_id)
    assert p.arch == ref.arch and p.name == ref.name and p.features == ref.features
    assert p.bandwidth.value == ref.bandwidth.value and p.bandwidth.confidence == "estimate"
    assert "sysfs" in p.sources[0]


def test_sysfs_skips_integrated_and_other_vendors(nothing: Path) -> None:
    card(nothing, 0, "0x8086", "0x7d55")  # Meteor Lake integrated graphics
    card(nothing, 1, "0x10de", "0x2684")  # an NVIDIA board
    det = intel_gpu.IntelGpuFamily.detect()
    assert not det.present and "0x7d55" in det.reason


def test_sysfs_unknown_sku_of_a_known_arch(nothing: Path) -> None:
    card(nothing, 0, "0x8086", "0xe20c")  # Arc B570: Battlemage, not in the catalog
    p = only(intel_gpu.IntelGpuFamily.detect())
    assert p.arch == "bmg" and "xmx" in p.features and p.bandwidth.value is None


def test_xpu_smi(nothing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = {"device_list": [{"device_id": 0, "device_name": "Intel(R) Data Center GPU Max 1550", "device_type": "GPU",
                            "pci_device_id": "0xbd5", "vendor_name": "Intel(R) Corporation"}]}
    monkeypatch.setattr(intel_gpu, "_xpu_smi_json", lambda: json.dumps(out))
    p = only(intel_gpu.IntelGpuFamily.detect())
    assert p.arch == "pvc" and p.name == "Intel(R) Data Center GPU Max 1550" and p.memory.value == 128.0


def test_xpu_smi_garbage_falls_through(nothing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intel_gpu, "_xpu_smi_json", lambda: "not json")
    card(nothing, 0, "0x8086", "0x56a0")
    p = only(intel_gpu.IntelGpuFamily.detect())
    assert p.arch == "dg2"


def fake_torch(name: str, total: int) -> Any:
    props = types.SimpleNamespace(name=name, total_memory=total)
    xpu = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 1,
                                get_device_properties=lambda i: props)
    return types.SimpleNamespace(xpu=xpu)


def test_imported_torch_xpu(nothing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intel_gpu, "_torch", lambda: fake_torch("Intel(R) Arc(TM) B580 Graphics", 12 * GIB))
    p = only(intel_gpu.IntelGpuFamily.detect())
    assert p.arch == "bmg" and p.memory.value == 12.0 and p.memory.confidence == "detected"


def test_detection_never_raises(nothing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> str:
        raise RuntimeError("driver crashed")
    monkeypatch.setattr(intel_gpu, "_xpu_smi_json", boom)
    det = intel_gpu.IntelGpuFamily.detect()
    assert not det.present and "driver crashed" in det.reason


def test_module_does_not_import_torch() -> None:
    assert "import torch" not in (REPO / "plugins" / "devices" / "intel_gpu.py").read_text()


# ---- listing, docs and planning ------------------------------------------------------------------------------
def test_devices_family_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "--family", "intel-gpu", "--json"]) == 0
    ids = {d["id"] for d in json.loads(capsys.readouterr().out)["devices"]}
    assert ids == set(IDS)


@pytest.mark.parametrize("device_id", IDS)
def test_docs_page_and_plan(device_id: str, reg: Registry) -> None:
    from quantmatch.planner import plan

    page = REPO / "docs" / "matrix" / f"{device_id}.md"
    assert page.is_file() and reg.device(device_id).name in page.read_text(encoding="utf-8")
    p = plan("llama-3.1-8b", device_id)
    assert p.device.profile.id == device_id
    assert p.candidates or p.rejections


# ---- one verdict per xpu backend row -------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "scheme", "backend", "device", "level", "words"), [
    # torch
    (None, "bf16", "torch", "intel_max_1550", Level.NATIVE, "XMX"),
    (None, "tf32", "torch", "intel_max_1550", Level.NATIVE, "XMX"),
    (None, "tf32", "torch", "intel_arc_a770", Level.UNSUPPORTED, "no tf32 unit"),
    (None, "w8a8-int8", "torch", "intel_arc_b580", Level.NATIVE, "_int_mm on XPU"),
    # vllm
    (None, "w8a8-fp8", "vllm", "intel_arc_a770", Level.WEIGHT_ONLY, "XPUW8A16FP8LinearKernel"),
    (None, "w8a8-int8", "vllm", "intel_max_1550", Level.NATIVE, "TritonInt8ScaledMMLinearKernel"),
    (None, "w4a8-int", "vllm", "intel_arc_b580", Level.NATIVE, "XPUW4A8IntLinearKernel"),
    ("gptq", "w4a16-g128", "vllm", "intel_arc_b580", Level.WEIGHT_ONLY, "XPUwNa16LinearKernel"),
    (None, "w4a4-mxfp4", "vllm", "intel_max_1550", Level.EMULATED, "fp4_gemm"),
    (None, "gguf-q4_k_m", "vllm", "intel_arc_a770", Level.UNSUPPORTED, "supported_quantization"),
    # bitsandbytes
    ("bitsandbytes", "w8a8-int8", "bitsandbytes", "intel_arc_a770", Level.NATIVE, "torch._int_mm"),
    ("bitsandbytes", "w4a16-nf4", "bitsandbytes", "intel_max_1550", Level.WEIGHT_ONLY, "gemv_4bit"),
])
def test_xpu_rows(reg: Registry, method: str | None, scheme: str, backend: str, device: str, level: Level,
                  words: str) -> None:
    v = reg.verdict(method, scheme, backend, device, "xpu")
    assert v.level == level, v.reasons
    assert words in v.reasons[0].text and v.reasons[0].source


def test_fp8_is_never_native_on_xpu(reg: Registry) -> None:
    for device in IDS:
        for backend in ("torch", "vllm"):
            assert reg.verdict(None, "w8a8-fp8", backend, device, "xpu").level != Level.NATIVE


def test_other_backends_have_no_xpu_target(reg: Registry) -> None:
    v = reg.verdict(None, "w4a16-g128", "tensorrt-llm", "intel_max_1550", None)
    assert v.level == Level.UNSUPPORTED
    assert any("xpu" in r.text for r in v.reasons)


def test_version_bounds_of_xpu_rows(reg: Registry) -> None:
    old = reg.at_versions({"vllm": "0.16.0"})
    assert old.verdict(None, "w4a8-int", "vllm", "intel_arc_b580", "xpu").level != Level.NATIVE
    bnb_old = reg.at_versions({"bitsandbytes": "0.46.0"})
    assert bnb_old.verdict("bitsandbytes", "w8a8-int8", "bitsandbytes", "intel_arc_a770",
                           "xpu").level == Level.UNSUPPORTED
