"""Device catalog and device-family detection (vendor libraries faked with monkeypatch)."""

from __future__ import annotations

import json
import platform
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from quantmatch.plugins.devices import _common, amd_rocm, apple_metal, arm_cpu, nvidia, x86_cpu
from quantmatch.sdk.device import Detection, DeviceFamily
from quantmatch.sdk.profile import CONFIDENCES, DEVICE_FAMILIES, TARGETS, HardwareProfile
from tests_support import fake_amdsmi

FAMILIES: list[type[DeviceFamily]] = [
    nvidia.NvidiaFamily,
    amd_rocm.AmdRocmFamily,
    apple_metal.AppleMetalFamily,
    x86_cpu.X86CpuFamily,
    arm_cpu.ArmCpuFamily,
]
MODULES = [nvidia, amd_rocm, apple_metal, x86_cpu, arm_cpu]
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "hardware_catalog.json"
GIB = 2**30


def all_devices() -> list[HardwareProfile]:
    return [p for fam in FAMILIES for p in fam.catalog()]


def by_id(device_id: str) -> HardwareProfile:
    return next(p for p in all_devices() if p.id == device_id)


def only_device(d: Detection) -> HardwareProfile:
    assert d.present, d.reason
    assert len(d.devices) == 1
    return d.devices[0]


# ----------------------------------------------------------------------------------------- catalog


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_catalog_loads(family: type[DeviceFamily]) -> None:
    profiles = family.catalog()
    assert profiles
    assert family.name in DEVICE_FAMILIES
    for p in profiles:
        assert p.family == family.name
        assert p.targets and all(t in TARGETS for t in p.targets)
        assert "fp32" in p.features
        assert not p.detected
    assert family.catalog() is profiles  # cached


def test_reference_ids_present() -> None:
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not available")
    ref_ids = {d["id"] for d in json.loads(REFERENCE.read_text())["devices"]}
    assert len(ref_ids) == 46
    assert ref_ids <= {p.id for p in all_devices()}  # the catalog grows beyond the reference (issue 18)


def test_ids_and_aliases_unique() -> None:
    ids = [p.id for p in all_devices()]
    assert len(ids) == len(set(ids)) >= 46
    aliases = [a for p in all_devices() for a in p.aliases]
    assert len(aliases) == len(set(aliases))
    assert not set(aliases) & set(ids)
    assert by_id("nvidia_h100_sxm").aliases[0] == "h100"
    assert "a100" in by_id("nvidia_a100_80gb_sxm").aliases


def test_every_figure_is_sourced_and_typed() -> None:
    for p in all_devices():
        figures = {"memory": p.memory, "bandwidth": p.bandwidth, **p.peaks}
        for label, fig in figures.items():
            assert fig.confidence in CONFIDENCES, (p.id, label)
            if fig.value is not None:
                assert fig.source, (p.id, label)
            else:
                assert fig.confidence == "unsourced", (p.id, label)
        assert p.memory.unit == "GB" and p.bandwidth.unit == "GB/s"
        for dtype, fig in p.peaks.items():
            assert fig.unit == ("TOPS" if dtype.startswith("int") else "TFLOPS"), (p.id, dtype)
        assert p.sources


def test_uncertain_figures_keep_their_uncertainty() -> None:
    assert by_id("nvidia_b200").memory.confidence == "disputed"
    assert by_id("nvidia_rtx_2080_ti").memory.confidence == "unsourced"
    assert by_id("nvidia_rtx_2080_ti").bandwidth.value is None
    assert {f.confidence for f in by_id("nvidia_a10").peaks.values()} == {"unsourced"}
    assert by_id("amd_mi210").peaks["fp16"].confidence == "derived"
    assert by_id("amd_mi210").bandwidth.confidence == "derived"
    assert by_id("intel_sapphire_rapids").bandwidth.confidence == "derived"
    assert by_id("nvidia_rtx_4090").peaks["fp16_fp16acc"].value == pytest.approx(330.3)
    assert by_id("nvidia_v100_sxm2_32gb").peaks["int8_dp4a"].value == pytest.approx(62.7)


def test_nvidia_facts() -> None:
    h100, a100 = by_id("nvidia_h100_sxm"), by_id("nvidia_a100_80gb_sxm")
    assert "int4" not in h100.features and "int4" in h100.emulated
    assert {"wgmma", "tma", "fp8-e4m3fn", "fp8-e5m2", "int8", "int1", "fp64"} <= h100.features
    assert {"int4", "int1", "bf16", "tf32"} <= a100.features
    assert not {f for f in a100.features if f.startswith("fp8")}
    v100 = by_id("nvidia_v100_sxm2_32gb")
    assert "fp16" in v100.features and not {"int8", "bf16", "tf32"} & v100.features
    assert "int8" in v100.emulated
    b200, rtx5090 = by_id("nvidia_b200"), by_id("nvidia_rtx_5090")
    assert "tcgen05" in b200.features and "wgmma" not in b200.features
    assert "tcgen05" not in rtx5090.features and "wgmma" not in rtx5090.features
    assert {"nvfp4", "mxfp4", "block-scale-mma", "tma"} <= rtx5090.features
    assert "int4" not in b200.features and "int4" not in rtx5090.features
    assert "int4" in by_id("nvidia_rtx_4090").features  # present, low confidence
    assert "LOW CONFIDENCE" in by_id("nvidia_rtx_4090").notes
    assert by_id("nvidia_h200_sxm").features == h100.features
    assert h100.compute_capability == 9.0 and rtx5090.compute_capability == 12.0


def test_amd_facts() -> None:
    mi300x, mi355x = by_id("amd_mi300x"), by_id("amd_mi355x")
    assert {"fp8-e4m3fnuz", "fp8-e5m2fnuz", "tf32", "mfma"} <= mi300x.features
    assert "fp8-e4m3fn" not in mi300x.features
    assert {"fp8-e4m3fn", "fp8-e5m2", "mxfp4", "fp4", "fp6"} <= mi355x.features
    assert "fp8-e4m3fnuz" not in mi355x.features
    assert not {f for f in by_id("amd_mi250x").features if f.startswith("fp8")}
    xtx = by_id("amd_rx_7900_xtx")
    assert {"wmma", "int4", "int8"} <= xtx.features and "rocWMMA" in xtx.notes


def test_apple_facts() -> None:
    m1, m2, m4 = by_id("apple_m1"), by_id("apple_m2"), by_id("apple_m4_max")
    assert not {"i8mm", "bf16"} & m1.cpu_features and "dotprod" in m1.cpu_features
    assert {"i8mm", "bf16"} <= m2.cpu_features
    assert {"sme", "sme2"} <= m4.cpu_features and "sve" not in m4.cpu_features
    for p in (m1, m2, m4):
        assert p.features == {"fp32", "fp16", "bf16", "simdgroup-matrix"}
        assert p.targets == ("metal", "cpu")
        assert "int8" in p.features_for("cpu") and "int8" not in p.features_for("mps")
    assert m4.arch == "apple-m4" and by_id("apple_m2_ultra").arch == "apple-m2"


def test_cpu_facts() -> None:
    zen4, spr = by_id("amd_zen4_genoa"), by_id("intel_sapphire_rapids")
    assert "avx512_bf16" in zen4.features and "avx512_fp16" not in zen4.features
    assert "fp16" not in zen4.features and "fp16" in zen4.emulated
    assert {"amx_int8", "amx_bf16", "avx512_fp16", "int8", "bf16", "fp16"} <= spr.features
    assert "amx_fp16" in by_id("intel_granite_rapids").features
    assert "bf16" in by_id("intel_cascade_lake_sp").emulated
    assert "int8" in by_id("amd_zen3_milan").features
    arm = by_id("arm64_neoverse_generic")
    assert {"asimd", "dotprod", "int8"} <= arm.features and not {"i8mm", "sve"} & arm.features
    for p in [*x86_cpu.X86CpuFamily.catalog(), *arm_cpu.ArmCpuFamily.catalog()]:
        assert p.cpu_features == p.features
        assert "int4" in p.emulated


def test_hookimpls_register_their_family() -> None:
    for module, family in zip(MODULES, FAMILIES):
        got: list[Any] = []
        module.register_device_families(got.append)
        assert got == [family]


# ----------------------------------------------------------------------------------------- helpers


def test_normalize_cpu_flags() -> None:
    assert _common.normalize_cpu_flags(["AVX512VNNI", "avx512bf16", "avx2", " ", "asimddp"]) == {
        "avx512_vnni", "avx512_bf16", "avx2", "dotprod"}


def test_match_by_name() -> None:
    cat = nvidia.NvidiaFamily.catalog()
    assert _common.match_by_name("NVIDIA H100 80GB HBM3", cat).id == "nvidia_h100_sxm"  # type: ignore[union-attr]
    assert _common.match_by_name("NVIDIA H100 PCIe", cat).id == "nvidia_h100_pcie"  # type: ignore[union-attr]
    assert _common.match_by_name("NVIDIA A100-SXM4-40GB", cat).id == "nvidia_a100_40gb_sxm"  # type: ignore[union-attr]
    assert _common.match_by_name("NVIDIA A10", cat).id == "nvidia_a10"  # type: ignore[union-attr]
    assert _common.match_by_name("NVIDIA GeForce RTX 2080", cat) is None


def test_copy_bandwidth_small() -> None:
    fig = _common.measure_copy_bandwidth(size_mib=4, repeats=2)
    assert fig.value is not None and fig.value > 0
    assert fig.source == "measured" and "single-thread memcpy" in fig.note


# ----------------------------------------------------------------------------------------- NVIDIA


class FakeNVMLError(Exception):
    pass


def fake_pynvml(gpus: list[tuple[str, tuple[int, int], int]], fail_init: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    state = {"shutdown": False}

    def init() -> None:
        if fail_init:
            raise FakeNVMLError("Driver Not Loaded")

    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: state.update(shutdown=True)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: gpus[h][0]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCudaComputeCapability = lambda h: gpus[h][1]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=gpus[h][2])  # type: ignore[attr-defined]
    mod.state = state  # type: ignore[attr-defined]
    return mod


def test_nvidia_detects_h100(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_pynvml([("NVIDIA H100 80GB HBM3", (9, 0), 80 * GIB)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    p = only_device(nvidia.NvidiaFamily.detect())
    assert p.arch == "sm_90" and p.compute_capability == 9.0 and p.detected
    assert {"wgmma", "fp8-e4m3fn"} <= p.features and "int4" not in p.features and "int4" in p.emulated
    assert p.memory.value == 80.0 and p.memory.source == "detected"
    assert p.peaks["fp8"].value == pytest.approx(1978.9) and p.peaks["fp8"].confidence == "estimate"
    assert "nvidia_h100_sxm" in p.notes
    assert fake.state["shutdown"]  # type: ignore[attr-defined]


def test_nvidia_arch_features_not_a_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_pynvml([
        (b"NVIDIA GeForce RTX 5090", (12, 0), 32 * GIB),  # type: ignore[list-item]
        ("NVIDIA Jetson AGX Orin", (8, 7), 32 * GIB),
        ("NVIDIA GeForce GTX 1080", (6, 1), 8 * GIB),
    ])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    d = nvidia.NvidiaFamily.detect()
    assert not d.reason
    rtx, orin, gtx = d.devices
    assert rtx.name == "NVIDIA GeForce RTX 5090" and "tcgen05" not in rtx.features and "nvfp4" in rtx.features
    assert orin.arch == "sm_87" and "int4" in orin.features and "nvidia_jetson_agx_orin" in orin.notes
    assert gtx.features == {"fp32", "fp16", "dp4a"} and not gtx.peaks and gtx.bandwidth.value is None


def test_nvidia_nvml_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], fail_init=True))
    d = nvidia.NvidiaFamily.detect()
    assert not d.present and "NVML" in d.reason and "Driver Not Loaded" in d.reason


def test_nvidia_missing_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    d = nvidia.NvidiaFamily.detect()
    assert not d.present and "nvidia-ml-py is not installed" in d.reason


def test_nvidia_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(nvidia, "_nvml", boom)
    d = nvidia.NvidiaFamily.detect()
    assert not d.present and "unexpected" in d.reason


# ----------------------------------------------------------------------------------------- AMD


def test_amd_amdsmi_mi300x(monkeypatch: pytest.MonkeyPatch, no_rocm: None) -> None:
    fake = fake_amdsmi("AMD Instinct MI300X VF", "gfx942", 192 * GIB)
    monkeypatch.setattr(amd_rocm, "_amdsmi", lambda: fake)
    p = only_device(amd_rocm.AmdRocmFamily.detect())
    assert p.arch == "gfx942" and p.family == "amd-rocm"
    assert "fp8-e4m3fnuz" in p.features and "fp8-e4m3fn" not in p.features
    assert p.memory.value == 192.0 and p.memory.confidence == "detected"
    assert p.bandwidth.value == 5300.0 and "amd_mi300x" in p.notes


def test_amd_rocm_smi(monkeypatch: pytest.MonkeyPatch, no_rocm: None) -> None:
    out = json.dumps({"card0": {"Card Series": "AMD INSTINCT MI250X", "GFX Version": "gfx9010"},
                      "system": {"Driver version": "6.2.4"}})
    monkeypatch.setattr(amd_rocm, "_rocm_smi_json", lambda: out)
    p = only_device(amd_rocm.AmdRocmFamily.detect())
    assert p.arch == "gfx90a" and "mfma" in p.features
    assert p.memory.value == 128.0 and p.memory.confidence == "estimate"  # from the catalog


def test_amd_torch_rocm(monkeypatch: pytest.MonkeyPatch, no_rocm: None) -> None:
    props = types.SimpleNamespace(name="AMD Instinct MI210", gcnArchName="gfx90a:sramecc+:xnack-",
                                  total_memory=64 * GIB)
    torch = types.SimpleNamespace(
        version=types.SimpleNamespace(hip="6.2.41133", cuda=None),
        cuda=types.SimpleNamespace(device_count=lambda: 1, get_device_properties=lambda i: props),
    )
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setattr(amd_rocm, "_torch", lambda: sys.modules.get("torch"))
    p = only_device(amd_rocm.AmdRocmFamily.detect())
    assert p.arch == "gfx90a" and "amd_mi210" in p.notes and "fp8-e4m3fnuz" not in p.features


def test_amd_cuda_torch_is_not_rocm(monkeypatch: pytest.MonkeyPatch, no_rocm: None) -> None:
    torch = types.SimpleNamespace(version=types.SimpleNamespace(hip=None, cuda="12.4"))
    monkeypatch.setattr(amd_rocm, "_torch", lambda: torch)
    d = amd_rocm.AmdRocmFamily.detect()
    assert not d.present and "not a ROCm build" in d.reason


def test_amd_not_present(no_rocm: None) -> None:
    d = amd_rocm.AmdRocmFamily.detect()
    assert not d.present
    for tried in ("amdsmi", "rocm-smi", "torch"):
        assert tried in d.reason


def test_amd_unknown_arch(monkeypatch: pytest.MonkeyPatch, no_rocm: None) -> None:
    fake = fake_amdsmi("AMD Radeon RX 6800 XT", "gfx1030", 16 * GIB)  # RDNA2: not in the catalog
    monkeypatch.setattr(amd_rocm, "_amdsmi", lambda: fake)
    p = only_device(amd_rocm.AmdRocmFamily.detect())
    assert p.features == {"fp32", "fp16"} and "not in the catalog" in p.notes


def test_normalize_gfx() -> None:
    assert amd_rocm.normalize_gfx("gfx90a:sramecc+:xnack-") == "gfx90a"
    assert amd_rocm.normalize_gfx("gfx9010") == "gfx90a"
    assert amd_rocm.normalize_gfx("gfx1100") == "gfx1100"
    assert amd_rocm.normalize_gfx("gfx942") == "gfx942"


# ----------------------------------------------------------------------------------------- Apple


def fake_sysctl(values: dict[str, str]) -> Any:
    return lambda name: values.get(name)


M2_PRO = {
    "machdep.cpu.brand_string": "Apple M2 Pro",
    "hw.memsize": str(32 * GIB),
    "hw.optional.AdvSIMD": "1",
    "hw.optional.arm.FEAT_FP16": "1",
    "hw.optional.arm.FEAT_DotProd": "1",
    "hw.optional.arm.FEAT_I8MM": "1",
    "hw.optional.arm.FEAT_BF16": "1",
    "hw.optional.arm.FEAT_SME": "0",
}


def test_apple_m2_pro(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apple_metal, "_platform", lambda: ("Darwin", "arm64"))
    monkeypatch.setattr(apple_metal, "_run_sysctl", fake_sysctl(M2_PRO))
    p = only_device(apple_metal.AppleMetalFamily.detect())
    assert p.name == "Apple M2 Pro" and p.arch == "apple-m2" and p.targets == ("metal", "cpu")
    assert "simdgroup-matrix" in p.features
    assert {"i8mm", "bf16", "dotprod", "int8", "fp16"} <= p.cpu_features and "sme" not in p.cpu_features
    assert p.memory.value == 32.0 and p.bandwidth.value == 200.0
    assert not p.emulated


def test_apple_m1_without_feat_sysctls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apple_metal, "_platform", lambda: ("Darwin", "arm64"))
    monkeypatch.setattr(apple_metal, "_run_sysctl", fake_sysctl({"machdep.cpu.brand_string": "Apple M1"}))
    p = only_device(apple_metal.AppleMetalFamily.detect())
    assert p.cpu_features == by_id("apple_m1").cpu_features and "bf16" in p.emulated
    assert p.memory.value is None


def test_apple_not_mac(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apple_metal, "_platform", lambda: ("Linux", "x86_64"))
    d = apple_metal.AppleMetalFamily.detect()
    assert not d.present and d.reason == "not a macOS arm64 machine (Linux x86_64)"


def test_apple_brand_to_id() -> None:
    assert apple_metal.catalog_id_for_brand("Apple M2 Pro") == "apple_m2_pro"
    assert apple_metal.catalog_id_for_brand("Apple M4") == "apple_m4"
    assert apple_metal.catalog_id_for_brand("Intel(R) Core(TM) i9") is None


# ----------------------------------------------------------------------------------------- x86

SPR_FLAGS = (
    "fpu vme sse sse2 ssse3 sse4_1 sse4_2 popcnt avx f16c fma avx2 bmi1 bmi2 avx512f avx512dq avx512ifma "
    "avx512cd avx512bw avx512vl avx512vbmi avx512_vbmi2 gfni vaes avx512_vnni avx512_bitalg avx512_vpopcntdq "
    "avx_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 hypervisor"
)
ZEN4_FLAGS = (
    "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx f16c fma avx2 bmi1 bmi2 avx512f avx512dq avx512ifma "
    "avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vbmi2 gfni vaes avx512_vnni avx512_bitalg"
)


def cpuinfo_text(brand: str, vendor: str, flags: str, cpus: int = 2) -> str:
    blocks = [
        f"processor\t: {i}\nvendor_id\t: {vendor}\nmodel name\t: {brand}\nphysical id\t: 0\n"
        f"siblings\t: {cpus}\ncore id\t\t: {i}\ncpu cores\t: {cpus}\nflags\t\t: {flags}\n"
        for i in range(cpus)
    ]
    return "\n".join(blocks)


@pytest.fixture
def fake_x86(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(x86_cpu, "_machine", lambda: "x86_64")
    monkeypatch.setattr(x86_cpu, "_read_meminfo", lambda: "MemTotal:       65536000 kB\n")

    def no_py_cpuinfo() -> None:
        raise AssertionError("py-cpuinfo must not run when /proc/cpuinfo has a model name")

    monkeypatch.setattr(x86_cpu, "_py_cpuinfo", no_py_cpuinfo)

    def use(text: str | None) -> None:
        monkeypatch.setattr(x86_cpu, "_read_proc_cpuinfo", lambda: text)

    return use


def test_x86_generic_xeon_is_sapphire_rapids(fake_x86: Any) -> None:
    fake_x86(cpuinfo_text("Intel(R) Xeon(R) Processor", "GenuineIntel", SPR_FLAGS, cpus=4))
    p = only_device(x86_cpu.X86CpuFamily.detect())
    assert p.id == "local-cpu" and p.arch == "sapphire_rapids" and p.vendor == "intel"
    assert p.name == "Intel(R) Xeon(R) Processor (inferred: sapphire_rapids)"
    assert {"amx_int8", "amx_bf16", "avx512_vnni", "int8", "bf16", "fp16", "fp32"} <= p.features
    assert "hypervisor" not in p.features and p.cpu_features == p.features
    assert p.emulated.keys() == {"int4"}
    assert p.cores == 4 and p.memory.value == 62.5 and p.memory.source == "detected"
    assert p.bandwidth.value is None and p.bandwidth.source == "measured"
    assert p.arch_name.startswith("Sapphire Rapids")


def test_x86_zen4(fake_x86: Any) -> None:
    fake_x86(cpuinfo_text("AMD EPYC 9654 96-Core Processor", "AuthenticAMD", ZEN4_FLAGS))
    p = only_device(x86_cpu.X86CpuFamily.detect())
    assert p.arch == "zen4" and p.vendor == "amd"
    assert "avx512_bf16" in p.features and "bf16" in p.features
    assert "avx512_fp16" not in p.features and "fp16" not in p.features and "fp16" in p.emulated


def test_x86_py_cpuinfo_fallback(monkeypatch: pytest.MonkeyPatch, fake_x86: Any) -> None:
    fake_x86(None)
    info = {"brand_raw": "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "vendor_id_raw": "GenuineIntel",
            "flags": ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd",
                      "avx512vnni"]}
    monkeypatch.setattr(x86_cpu, "_py_cpuinfo", lambda: info)
    p = only_device(x86_cpu.X86CpuFamily.detect())
    assert "avx512_vnni" in p.features and "avx512vnni" not in p.features
    assert p.arch == "cascade_lake" and "py-cpuinfo" in p.sources


@pytest.mark.parametrize(("vendor", "flags", "brand", "expected"), [
    ("intel", {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"}, "", "sapphire_rapids"),
    ("intel", {"avx2", "avx512f", "amx_int8"}, "Intel(R) Xeon(R) 6980P", "granite_rapids"),
    ("intel", {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "", "cooper_lake"),
    ("intel", {"avx2", "avx512f", "avx512_vnni", "avx512_vbmi2"}, "", "ice_lake_sp"),
    ("intel", {"avx2", "avx512f", "avx512_vnni"}, "", "cascade_lake"),
    ("intel", {"avx2", "avx512f"}, "", "skylake_sp"),
    ("intel", {"avx2", "avx_vnni"}, "", "alder_lake"),
    ("amd", {"avx2", "avx512f", "avx512_bf16", "avx_vnni"}, "", "zen5"),
    ("amd", {"avx2", "vaes"}, "", "zen3"),
    ("amd", {"avx2", "fma", "bmi2"}, "", "x86-64-v3"),
    ("unknown", {"sse4_2", "popcnt"}, "", "x86-64-v2"),
])
def test_infer_microarchitecture(vendor: str, flags: set[str], brand: str, expected: str) -> None:
    assert x86_cpu.infer_microarchitecture(vendor, flags, brand) == expected


def test_x86_measure_bandwidth(monkeypatch: pytest.MonkeyPatch, fake_x86: Any) -> None:
    fake_x86(cpuinfo_text("AMD EPYC 9654 96-Core Processor", "AuthenticAMD", ZEN4_FLAGS))
    monkeypatch.setattr(x86_cpu, "measure_copy_bandwidth", lambda: _common.measure_copy_bandwidth(4, 1))
    p = only_device(x86_cpu.X86CpuFamily.detect(measure_bandwidth=True))
    assert p.bandwidth.value is not None and p.bandwidth.value > 0 and p.bandwidth.confidence == "measured"


def test_x86_not_x86(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(x86_cpu, "_machine", lambda: "aarch64")
    d = x86_cpu.X86CpuFamily.detect()
    assert not d.present and "aarch64" in d.reason


# ----------------------------------------------------------------------------------------- Arm

N1_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
"""


def test_arm_neoverse_n1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arm_cpu, "_machine", lambda: "aarch64")
    monkeypatch.setattr(arm_cpu, "_read_proc_cpuinfo", lambda: N1_CPUINFO)
    monkeypatch.setattr(arm_cpu, "_read_meminfo", lambda: None)
    p = only_device(arm_cpu.ArmCpuFamily.detect())
    assert p.name == "Arm Neoverse N1" and p.arch == "neoverse-n1" and p.family == "arm-cpu"
    assert {"asimd", "dotprod", "int8", "fp16", "fp32"} <= p.features
    assert not {"i8mm", "bf16", "sve"} & p.features and "bf16" in p.emulated
    assert p.memory.value is None


def test_arm_graviton3_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    text = N1_CPUINFO.replace("asimddp", "asimddp sve i8mm bf16 svebf16 svei8mm").replace("0xd0c", "0xd40")
    monkeypatch.setattr(arm_cpu, "_machine", lambda: "aarch64")
    monkeypatch.setattr(arm_cpu, "_read_proc_cpuinfo", lambda: text)
    p = only_device(arm_cpu.ArmCpuFamily.detect())
    assert {"sve", "i8mm", "bf16"} <= p.features and "bf16" not in p.emulated


def test_arm_not_arm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arm_cpu, "_machine", lambda: "x86_64")
    d = arm_cpu.ArmCpuFamily.detect()
    assert not d.present and "x86_64" in d.reason


# ----------------------------------------------------------------------------------------- this machine


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_real_detection_never_raises(family: type[DeviceFamily]) -> None:
    d = family.detect()
    assert isinstance(d, Detection) and d.family == family.name
    assert d.present or d.reason


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="needs an x86-64 machine")
def test_real_x86_detection() -> None:
    p = only_device(x86_cpu.X86CpuFamily.detect())
    assert p.family == "x86-cpu" and p.detected and "fp32" in p.features
    assert p.features - {"fp32", "int8", "bf16", "fp16"}  # real ISA flags were read
    assert p.cores and p.cores >= 1
