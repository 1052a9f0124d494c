"""2026 CPU catalog: Intel Core Ultra (Meteor/Lunar/Arrow Lake) and the Arm parts runtimes dispatch on.

Detection is tested from faked ``/proc/cpuinfo`` text only (the same seams as tests/test_devices.py).
The verdict tests are relational: two devices that differ in a flag get different answers, two that share
the dispatch flags get the same deciding row.
"""

from __future__ import annotations

from typing import Any

import pytest

from quantmatch.plugins.devices import arm_cpu, x86_cpu
from quantmatch.registry import Registry
from quantmatch.sdk.device import Detection
from quantmatch.sdk.profile import HardwareProfile
from quantmatch.sdk.verdict import Level, Verdict

CORE_ULTRA = ("intel_meteor_lake", "intel_lunar_lake", "intel_arrow_lake")
ARM_PARTS = ("aws_graviton2", "aws_graviton3", "aws_graviton4", "nvidia_grace")
AVX512_OR_AMX = ("avx512", "amx")


def catalog() -> dict[str, HardwareProfile]:
    return {p.id: p for p in [*x86_cpu.X86CpuFamily.catalog(), *arm_cpu.ArmCpuFamily.catalog()]}


def only_device(d: Detection) -> HardwareProfile:
    assert d.present, d.reason
    assert len(d.devices) == 1
    return d.devices[0]


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def verdict(reg: Registry, method: str | None, scheme: str, backend: str, device: str) -> Verdict:
    return reg.verdict(method, scheme, backend, device, "cpu", "linear")


def text(v: Verdict) -> str:
    return v.reasons[0].text.lower()


def rule(v: Verdict) -> str:
    """The deciding reason with the device's name taken out (so two devices can share a rule)."""
    return text(v).replace(catalog()[v.device].name.lower(), "{device}") if v.device in catalog() else text(v)


# ----------------------------------------------------------------------------------------- catalog


@pytest.mark.parametrize("device_id", [*CORE_ULTRA, *ARM_PARTS])
def test_entries_are_sourced(device_id: str) -> None:
    p = catalog()[device_id]
    assert p.sources and all(s.strip() for s in p.sources)
    assert p.targets == ("cpu",) and not p.detected
    assert p.cpu_features == p.features and "fp32" in p.features and "int8" in p.features
    bw = p.bandwidth
    assert bw.unit == "GB/s" and bw.value and bw.source and bw.confidence in ("sourced", "derived")
    if bw.confidence == "derived":
        assert bw.note or bw.source.startswith("derived")  # says how it was derived
    assert "int4" in p.emulated
    assert p.notes


def test_core_ultra_is_avx_vnni_without_avx512_or_amx() -> None:
    cat = catalog()
    for device_id in CORE_ULTRA:
        p = cat[device_id]
        assert {"avx2", "fma", "f16c", "avx_vnni", "int8"} <= p.features, device_id
        assert not [f for f in p.features if f.startswith(AVX512_OR_AMX)], device_id
        assert "bf16" in p.emulated and "fp16" in p.emulated  # no AVX512_BF16 / AVX512_FP16
        assert p.vendor == "intel" and p.family == "x86-cpu"
    # XED (Intel): Arrow Lake adds AVX-VNNI-INT8 over Alder Lake, Lunar Lake = all of Arrow Lake
    assert "avx_vnni_int8" in cat["intel_arrow_lake"].features
    assert "avx_vnni_int8" in cat["intel_lunar_lake"].features
    assert "avx_vnni_int8" not in cat["intel_meteor_lake"].features
    assert cat["intel_meteor_lake"].features == cat["intel_alder_lake"].features
    assert "intelxed/xed" in " ".join(cat["intel_arrow_lake"].sources)
    # memory bandwidth: on-package LPDDR5X-8533 and dual-channel DDR5-6400, derived
    assert cat["intel_lunar_lake"].bandwidth.value == pytest.approx(136.5)
    assert cat["intel_arrow_lake"].bandwidth.value == pytest.approx(102.4)
    assert cat["intel_arrow_lake"].bandwidth.confidence == "derived"


def test_arm_parts_flags_follow_the_aws_hwcap_table() -> None:
    cat = catalog()
    g2, g3, g4, grace = (cat[i] for i in ARM_PARTS)
    assert (g2.arch, g3.arch, g4.arch, grace.arch) == ("neoverse-n1", "neoverse-v1", "neoverse-v2", "neoverse-v2")
    assert {"asimd", "dotprod", "asimdhp", "fp16", "int8"} <= g2.features
    assert not {"bf16", "i8mm", "sve", "sve2", "sme"} & g2.features and "bf16" in g2.emulated
    assert {"sve", "svei8mm", "svebf16", "i8mm", "bf16", "dotprod"} <= g3.features
    assert not {"sve2", "sme", "sme2"} & g3.features and "bf16" not in g3.emulated
    for p in (g4, grace):
        assert {"sve", "sve2", "svei8mm", "svebf16", "i8mm", "bf16", "dotprod"} <= p.features
        assert not {"sme", "sme2"} & p.features
    assert g4.features == grace.features  # same core, same dispatch flags
    assert (g2.cores, g3.cores, g4.cores, grace.cores) == (64, 64, 96, 72)
    assert grace.bandwidth.value == pytest.approx(500.0) and grace.bandwidth.confidence == "derived"
    assert "aws/aws-graviton-getting-started" in " ".join(g3.sources)
    assert "SVE vector length 256" in g3.notes and "SVE vector length 128" in g4.notes
    # the generic entry stays for the public reference cases
    generic = cat["arm64_neoverse_generic"]
    assert generic.arch == "neoverse" and not {"i8mm", "sve"} & generic.features


def test_new_aliases_resolve(reg: Registry) -> None:
    for alias, device_id in [("graviton3", "aws_graviton3"), ("grace", "nvidia_grace"), ("lnl", "intel_lunar_lake"),
                             ("arrow-lake", "intel_arrow_lake"), ("mtl", "intel_meteor_lake")]:
        assert reg.device(alias).id == device_id


# ----------------------------------------------------------------------------------------- x86 detection

MTL_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht "
    "syscall nx pdpe1gb rdtscp lm constant_tsc pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt "
    "aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed adx "
    "smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves avx_vnni umip pku ospke waitpkg gfni vaes "
    "vpclmulqdq rdpid movdiri movdir64b fsrm md_clear serialize arch_lbr ibt flush_l1d arch_capabilities"
)


def intel_cpuinfo(brand: str, model: int | None, flags: str = MTL_FLAGS, cpus: int = 2) -> str:
    model_line = f"cpu family\t: 6\nmodel\t\t: {model}\n" if model is not None else ""
    return "\n".join(
        f"processor\t: {i}\nvendor_id\t: GenuineIntel\n{model_line}model name\t: {brand}\nphysical id\t: 0\n"
        f"core id\t\t: {i}\ncpu cores\t: {cpus}\nflags\t\t: {flags}\n"
        for i in range(cpus)
    )


@pytest.fixture
def fake_x86(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(x86_cpu, "_machine", lambda: "x86_64")
    monkeypatch.setattr(x86_cpu, "_read_meminfo", lambda: "MemTotal:       32768000 kB\n")

    def no_py_cpuinfo() -> None:
        raise AssertionError("py-cpuinfo must not run when /proc/cpuinfo has a model name")

    monkeypatch.setattr(x86_cpu, "_py_cpuinfo", no_py_cpuinfo)

    def use(text: str | None) -> HardwareProfile:
        monkeypatch.setattr(x86_cpu, "_read_proc_cpuinfo", lambda: text)
        return only_device(x86_cpu.X86CpuFamily.detect())

    return use


@pytest.mark.parametrize(("brand", "model", "arch", "how"), [
    ("Intel(R) Core(TM) Ultra 7 155H", 0xAA, "meteor_lake", "family/model"),
    ("Intel(R) Core(TM) Ultra 7 258V", 0xBD, "lunar_lake", "family/model"),
    ("Intel(R) Core(TM) Ultra 9 285K", 0xC6, "arrow_lake", "family/model"),
    ("Intel(R) Core(TM) Ultra 5 125U", None, "meteor_lake", "brand string"),
    ("Intel(R) Core(TM) Ultra 7 268V", None, "lunar_lake", "brand string"),
    ("Intel(R) Core(TM) Ultra 9 275HX", None, "arrow_lake", "brand string"),
])
def test_x86_detects_core_ultra(fake_x86: Any, brand: str, model: int | None, arch: str, how: str) -> None:
    p = fake_x86(intel_cpuinfo(brand, model))
    assert p.arch == arch and p.vendor == "intel" and p.detected
    assert p.name == f"{brand} (inferred: {arch})"
    assert how in p.notes and f"catalog entry intel_{arch}" in p.notes
    assert p.arch_name == catalog()[f"intel_{arch}"].arch_name
    # the flags are the ones read: AVX-VNNI and AVX2, no AVX-512, no AMX
    assert {"avx_vnni", "avx2", "fma", "f16c", "int8", "fp32"} <= p.features
    assert not [f for f in p.features if f.startswith(AVX512_OR_AMX)]
    assert "bf16" in p.emulated and "fp16" in p.emulated
    if arch in ("lunar_lake", "arrow_lake"):  # hidden by Linux: said, not invented
        assert "avx_vnni_int8" not in p.features and "AVX-VNNI-INT8" in p.notes


def test_x86_model_number_beats_a_generic_brand(fake_x86: Any) -> None:
    p = fake_x86(intel_cpuinfo("Intel(R) Processor", 0xC5))  # ARROWLAKE_H, e.g. in a VM
    assert p.arch == "arrow_lake" and "family/model" in p.notes


def test_x86_alder_lake_still_alder_lake(fake_x86: Any) -> None:
    p = fake_x86(intel_cpuinfo("12th Gen Intel(R) Core(TM) i7-12700H", 0x9A))
    assert p.arch == "alder_lake" and "ISA flags" in p.notes


@pytest.mark.parametrize(("flags", "brand", "family_model", "expected"), [
    ({"avx2", "avx_vnni"}, "Intel(R) Core(TM) Ultra 7 165U", None, "meteor_lake"),
    ({"avx2", "avx_vnni"}, "Intel(R) Core(TM) Ultra 5 226V", None, "lunar_lake"),
    ({"avx2", "avx_vnni"}, "Intel(R) Core(TM) Ultra 5 225", None, "arrow_lake"),
    ({"avx2", "avx_vnni"}, "", (6, 0xAC), "meteor_lake"),
    ({"avx2", "avx_vnni"}, "", (6, 0xB5), "arrow_lake"),
    ({"avx2", "avx_vnni"}, "", (6, 0x97), "alder_lake"),
    ({"avx2", "avx512f", "amx_int8"}, "", (6, 0x8F), "sapphire_rapids"),
])
def test_infer_core_ultra(flags: set[str], brand: str, family_model: tuple[int, int] | None,
                          expected: str) -> None:
    assert x86_cpu.infer_microarchitecture("intel", flags, brand, family_model) == expected


# ----------------------------------------------------------------------------------------- Arm detection

# /proc/cpuinfo Features lines. N1: archspec/archspec-json#41 (Graviton2-class N1). V1/V2: the AWS HWCAP table
# (aws/aws-graviton-getting-started runtime-feature-detection.md). Grace: archspec/archspec#159 (GH200).
N1_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"
V1_FEATURES = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 "
    "sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 "
    "dgh rng"
)
GRAVITON4_FEATURES = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 "
    "asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg dcpodp sve2 sveaes svepmull svebitperm "
    "svesha3 flagm2 frint svei8mm svebf16 i8mm bf16 dgh rng bti"
)
GRACE_FEATURES = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 "
    "sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb dcpodp sve2 sveaes svepmull svebitperm "
    "svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh"
)


def arm_cpuinfo(features: str, part: str, implementer: str = "0x41", cpus: int = 2) -> str:
    return "\n".join(
        f"processor\t: {i}\nBogoMIPS\t: 2000.00\nFeatures\t: {features}\nCPU implementer\t: {implementer}\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 1\n"
        for i in range(cpus)
    )


@pytest.fixture
def fake_arm(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(arm_cpu, "_machine", lambda: "aarch64")
    monkeypatch.setattr(arm_cpu, "_read_meminfo", lambda: None)
    monkeypatch.setattr(arm_cpu, "_cpu_count", lambda: 72)

    def use(text: str) -> HardwareProfile:
        monkeypatch.setattr(arm_cpu, "_read_proc_cpuinfo", lambda: text)
        return only_device(arm_cpu.ArmCpuFamily.detect())

    return use


def test_arm_detects_graviton2_n1(fake_arm: Any, reg: Registry) -> None:
    p = fake_arm(arm_cpuinfo(N1_FEATURES, "0xd0c"))
    assert p.arch == "neoverse-n1" and p.name == "Arm Neoverse N1" and p.family == "arm-cpu"
    assert p.arch_name == catalog()["aws_graviton2"].arch_name and "aws_graviton2" in p.notes
    assert {"asimd", "dotprod", "asimdhp", "fp16", "int8"} <= p.features
    assert not {"i8mm", "bf16", "sve"} & p.features and "bf16" in p.emulated
    assert reg.catalog_match(p).id == "aws_graviton2"  # type: ignore[union-attr]


def test_arm_detects_graviton3_v1(fake_arm: Any, reg: Registry) -> None:
    p = fake_arm(arm_cpuinfo(V1_FEATURES, "0xd40"))
    assert p.arch == "neoverse-v1" and "aws_graviton3" in p.notes
    assert {"sve", "svei8mm", "svebf16", "i8mm", "bf16", "dotprod"} <= p.features and "sve2" not in p.features
    assert reg.catalog_match(p).id == "aws_graviton3"  # type: ignore[union-attr]


@pytest.mark.parametrize(("features", "hint", "other"), [
    (GRAVITON4_FEATURES, "aws_graviton4", "nvidia_grace"),
    (GRACE_FEATURES, "nvidia_grace", "aws_graviton4"),
])
def test_arm_v2_is_neoverse_v2_and_names_both_candidates(fake_arm: Any, reg: Registry, features: str, hint: str,
                                                        other: str) -> None:
    p = fake_arm(arm_cpuinfo(features, "0xd4f"))
    assert p.arch == "neoverse-v2" and p.arch_name == catalog()[hint].arch_name
    assert f"closest catalog entry {hint}" in p.notes and other in p.notes and "hint" in p.notes
    assert {"sve", "sve2", "svei8mm", "svebf16", "i8mm", "bf16", "dotprod"} <= p.features
    assert reg.catalog_match(p) is None  # Graviton4 and Grace share the architecture: no single match


def test_arm_keeps_the_flags_it_reads(fake_arm: Any) -> None:
    # a V2 whose kernel/hypervisor hides i8mm and bf16: the catalog entry must not add them back
    masked = GRAVITON4_FEATURES.replace(" svei8mm svebf16 i8mm bf16", "")
    p = fake_arm(arm_cpuinfo(masked, "0xd4f"))
    assert p.arch == "neoverse-v2"
    assert not {"i8mm", "bf16", "svei8mm", "svebf16"} & p.features and "bf16" in p.emulated
    assert {"sve2", "dotprod"} <= p.features


def test_arm_unknown_core_stays_generic(fake_arm: Any) -> None:
    p = fake_arm(arm_cpuinfo(N1_FEATURES, "0xd01", implementer="0x48"))  # HiSilicon TaiShan v110
    assert p.arch == "aarch64" and p.name == "Arm64 CPU" and "catalog entry" not in p.notes
    p = fake_arm(arm_cpuinfo(N1_FEATURES, "0xd49"))  # Neoverse N2: named, not in the catalog
    assert p.arch == "neoverse" and p.name == "Arm Neoverse N2"


# ----------------------------------------------------------------------------------------- verdicts


def test_bf16_flag_splits_graviton2_from_v1_v2(reg: Registry) -> None:
    g2 = verdict(reg, None, "bf16", "torch", "aws_graviton2")  # no FEAT_BF16: converted to fp32
    assert g2.level is not Level.NATIVE and g2.runs_as
    for device_id in ("aws_graviton3", "aws_graviton4", "nvidia_grace"):
        v = verdict(reg, None, "bf16", "torch", device_id)
        assert v.level is Level.NATIVE and v.level != g2.level, device_id


@pytest.mark.parametrize("scheme", ["gguf-q4_0", "gguf-q4_k_m"])
def test_llama_cpp_i8mm_flag_changes_the_arm_kernel(reg: Registry, scheme: str) -> None:
    g2 = verdict(reg, "gguf", scheme, "llama.cpp", "aws_graviton2")  # dotprod, no i8mm
    g3 = verdict(reg, "gguf", scheme, "llama.cpp", "aws_graviton3")  # i8mm
    assert g2.level is Level.NATIVE and g3.level is Level.NATIVE
    assert rule(g2) != rule(g3)


def test_same_dispatch_flags_same_verdicts(reg: Registry) -> None:
    for method, scheme, backend in [("gguf", "gguf-q4_0", "llama.cpp"), ("gguf", "gguf-q4_k_m", "llama.cpp"),
                                    ("gguf", "gguf-bf16", "llama.cpp"), ("onnx", "w4a8-int8-g32", "onnxruntime"),
                                    (None, "bf16", "torch")]:
        g4 = verdict(reg, method, scheme, backend, "aws_graviton4")
        grace = verdict(reg, method, scheme, backend, "nvidia_grace")
        assert (g4.level, rule(g4)) == (grace.level, rule(grace)), scheme
        mtl = verdict(reg, method, scheme, backend, "intel_meteor_lake")
        adl = verdict(reg, method, scheme, backend, "intel_alder_lake")
        assert (mtl.level, rule(mtl)) == (adl.level, rule(adl)), scheme


def test_onnxruntime_avx_vnni_row_on_core_ultra_not_on_zen3(reg: Registry) -> None:
    zen3 = verdict(reg, "onnx", "w4a8-int8-g32", "onnxruntime", "amd_zen3_milan")  # AVX2, no VNNI
    for device_id in CORE_ULTRA:
        v = verdict(reg, "onnx", "w4a8-int8-g32", "onnxruntime", device_id)
        assert v.level is Level.NATIVE and rule(v) != rule(zen3), device_id


def test_llama_cpp_amx_row_needs_amx(reg: Registry) -> None:
    spr = verdict(reg, "gguf", "gguf-q4_0", "llama.cpp", "intel_sapphire_rapids")
    for device_id in (*CORE_ULTRA, *ARM_PARTS):
        v = verdict(reg, "gguf", "gguf-q4_0", "llama.cpp", device_id)
        assert v.level is Level.NATIVE and rule(v) != rule(spr), device_id


def test_fp16_flag_splits_arm_from_core_ultra(reg: Registry) -> None:
    arm = verdict(reg, "gguf", "gguf-f16", "llama.cpp", "aws_graviton2")  # asimdhp: native fp16 arithmetic
    assert arm.level is Level.NATIVE
    for device_id in CORE_ULTRA:  # F16C converts only, no AVX512_FP16
        v = verdict(reg, "gguf", "gguf-f16", "llama.cpp", device_id)
        assert v.level is not Level.NATIVE and v.level != arm.level, device_id
