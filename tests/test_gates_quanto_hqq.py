"""The run-time gates optimum-quanto and HQQ apply when they pick a kernel, one test per gate.

Each gate test asks about the same scheme on two devices that differ only in that gate (a catalog
profile and a ``dataclasses.replace`` of it under a new id) and expects two different verdicts. A
last group checks that fake-quantized activations (quantized, then dequantized before a float matmul)
are never ``native`` and say so.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from packaging.version import Version

from quantmatch.plugins.backends.hqq import HQQBackend
from quantmatch.plugins.backends.optimum_quanto import OptimumQuantoBackend
from quantmatch.registry import Registry
from quantmatch.sdk.profile import HardwareProfile
from quantmatch.sdk.verdict import Level, Verdict

N, W, E, U = Level.NATIVE, Level.WEIGHT_ONLY, Level.EMULATED, Level.UNSUPPORTED


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def ask(reg: Registry, method: str | None, scheme: str, backend: str, device: str | HardwareProfile,
        target: str | None = None) -> Verdict:
    return reg.verdict(method, scheme, backend, device, target, "linear")


def variant(reg: Registry, device: str, suffix: str, **changes: object) -> HardwareProfile:
    """``device`` with ``changes`` only, under its own id (the registry caches decisions by device id)."""
    base = reg.device(device)
    return replace(base, id=f"{base.id}__{suffix}", **changes)


def differ(a: Verdict, b: Verdict) -> bool:
    return (a.level, a.reasons[0].text, a.runs_as) != (b.level, b.reasons[0].text, b.runs_as)


def text(v: Verdict) -> str:
    return f"{v.reasons[0].text} {v.runs_as or ''}".lower()


# ---- optimum-quanto ------------------------------------------------------------------------------
@pytest.mark.parametrize(("scheme", "kernel"), [
    ("w4a16-g128", "awq"),            # WeightQBitsTensor.create: AWQ, fp16, group 128, cc major >= 8
    ("w4a16-g128-bf16", "tinygemm"),  # TinyGemm on CUDA, bf16, group 128, cc major >= 8
    ("w8a16-fp8", "marlin"),          # WeightQBytesTensor.create: Marlin FP8, cc major >= 8
])
def test_quanto_cuda_kernels_need_compute_capability_8(reg: Registry, scheme: str, kernel: str) -> None:
    a100 = ask(reg, "quanto", scheme, "optimum-quanto", "nvidia_a100_80gb_sxm")
    cc75 = ask(reg, "quanto", scheme, "optimum-quanto",
               variant(reg, "nvidia_a100_80gb_sxm", "cc75", compute_capability=7.5))
    assert differ(a100, cc75)
    assert a100.level is W and kernel in text(a100)
    assert cc75.level is W and kernel not in text(cc75) and "dequantized to" in (cc75.runs_as or "")


def test_quanto_cuda_kernels_need_a_cuda_build_not_rocm(reg: Registry) -> None:
    """AWQ/TinyGemm/Marlin need ``torch.version.cuda``; a ROCm build loads the unpack-only HIP extension."""
    cuda = ask(reg, "quanto", "w4a16-g128-bf16", "optimum-quanto", "nvidia_a100_80gb_sxm")
    rocm = ask(reg, "quanto", "w4a16-g128-bf16", "optimum-quanto",
               variant(reg, "nvidia_a100_80gb_sxm", "rocm", family="amd-rocm", targets=("rocm",)), "rocm")
    assert differ(cuda, rocm)
    assert "tinygemm" in text(cuda)
    assert rocm.level is W and "rocm" in text(rocm) and "tinygemm" not in (rocm.runs_as or "").lower()
    assert "quanto on a rocm build" in text(ask(reg, "quanto", "w4a16-g128-bf16", "optimum-quanto", "amd_mi300x"))


def test_quanto_int8_x_int8_needs_an_integer_unit(reg: Registry) -> None:
    """qbytes_mm runs torch._int_mm; without integer tensor cores the int8 activations are fake-quantized."""
    a100 = ask(reg, "quanto", "w8a8-int8-static", "optimum-quanto", "nvidia_a100_80gb_sxm")
    dev = reg.device("nvidia_a100_80gb_sxm")
    no_int8 = ask(reg, "quanto", "w8a8-int8-static", "optimum-quanto",
                  variant(reg, "nvidia_a100_80gb_sxm", "noint8", features=dev.features - {"int8"}))
    assert a100.level is N and "_int_mm" in text(a100)
    assert no_int8.level is E and "fake-quantized" in text(no_int8)


def test_quanto_cpu_tinygemm_has_no_isa_gate(reg: Registry) -> None:
    """TinyGemm on CPU checks only the device type: any CPU with native bf16 gets it."""
    for dev in ("amd_zen4_genoa", "intel_sapphire_rapids"):
        v = ask(reg, "quanto", "w4a16-g128-bf16", "optimum-quanto", dev)
        assert v.level is W and "_weight_int4pack_mm" in text(v)


def test_quanto_mps_int8pack_path_is_not_reached(reg: Registry) -> None:
    """The MPS qbytes_mm kernel is registered on quanto_py::qbytes_mm, which nothing defines or calls."""
    v = ask(reg, "quanto", "w8a16-bf16", "optimum-quanto", "apple_m2", "mps")
    assert v.level is W and "dequantized to" in (v.runs_as or "")
    assert "quanto_py::qbytes_mm" in " ".join(v.sources)


# ---- fake-quantized activations -----------------------------------------------------------------
@pytest.mark.parametrize(("scheme", "device"), [
    ("w8a8-fp8", "nvidia_h100_sxm"),               # no float8 matmul in quanto, even on FP8 tensor cores
    ("w8a8-fp8", "nvidia_a100_80gb_sxm"),
    ("w4a8-int8-static-g128", "nvidia_a100_80gb_sxm"),  # int4 kernels call input.dequantize()
    ("w4a8-fp8-g128", "nvidia_l40s"),
    ("w8a8-int8-static", "nvidia_v100_sxm2_32gb"),       # no int8 unit: qbytes_mm default path
])
def test_quanto_fake_quantized_activations_are_not_native(reg: Registry, scheme: str, device: str) -> None:
    v = ask(reg, "quanto", scheme, "optimum-quanto", device)
    assert v.level is not N and v.level is E
    assert "fake-quantized" in text(v) and "dequantized" in text(v)


def test_quanto_fp8_activations_cannot_be_quantized_on_mps(reg: Registry) -> None:
    v = ask(reg, "quanto", "w8a8-fp8", "optimum-quanto", "apple_m3", "mps")
    assert v.level is U


# ---- HQQ -----------------------------------------------------------------------------------------
def test_hqq_torchao_int4_needs_compute_capability_8(reg: Registry) -> None:
    a100 = ask(reg, "hqq", "w4a16-g64-asym-bf16", "hqq", "nvidia_a100_80gb_sxm")
    cc75 = ask(reg, "hqq", "w4a16-g64-asym-bf16", "hqq",
               variant(reg, "nvidia_a100_80gb_sxm", "cc75", compute_capability=7.5))
    assert differ(a100, cc75)
    assert "torchao_int4" in text(a100) and "tinygemm" in text(a100)
    assert cc75.level is W and "default pytorch backend" in text(cc75)


def test_hqq_torchao_int4_on_rocm_needs_a_cdna2_or_later_arch(reg: Registry) -> None:
    mi300 = ask(reg, "hqq", "w4a16-g64-asym-bf16", "hqq", "amd_mi300x")
    rdna = ask(reg, "hqq", "w4a16-g64-asym-bf16", "hqq", variant(reg, "amd_mi300x", "gfx1100", arch="gfx1100"))
    assert differ(mi300, rdna)
    assert "tinygemm" in text(mi300) and "rocm" in text(mi300)
    assert rdna.level is W and "default pytorch backend" in text(rdna)


def test_hqq_fused_fp16_backends_need_an_nvidia_gpu(reg: Registry) -> None:
    nv = ask(reg, "hqq", "w2a16-g64-asym", "hqq", "nvidia_a100_80gb_sxm")
    other = ask(reg, "hqq", "w2a16-g64-asym", "hqq",
                variant(reg, "nvidia_a100_80gb_sxm", "family", family="amd-rocm"), "cuda")
    assert differ(nv, other)
    assert "gemlite" in text(nv)
    assert other.level is W and "default pytorch backend" in text(other)


def test_hqq_compute_dtype_picks_the_backend(reg: Registry) -> None:
    """torchao_int4 asserts bfloat16; GemLite/BitBLAS take float16 (same device, same weights)."""
    bf16 = ask(reg, "hqq", "w4a16-g64-asym-bf16", "hqq", "nvidia_a100_80gb_sxm")
    fp16 = ask(reg, "hqq", "w4a16-g64-asym", "hqq", "nvidia_a100_80gb_sxm")
    assert "torchao_int4" in text(bf16) and "gemlite" in text(fp16)


def test_hqq_cpu_is_weight_only_dequantize(reg: Registry) -> None:
    v = ask(reg, "hqq", "w4a16-g64-asym-bf16", "hqq", "intel_sapphire_rapids")
    assert v.level is W and "dequantized to" in (v.runs_as or "")


# ---- declarations ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", [OptimumQuantoBackend, HQQBackend])
def test_runtime_versions_are_declared(backend: type) -> None:
    assert backend.runtime and Version(backend.latest_version)
    for cap in backend.capabilities:
        for bound in (cap.since, cap.until):
            if bound is not None:
                assert Version(bound) <= Version(backend.latest_version) or bound == cap.until
        if cap.since and cap.until:
            assert Version(cap.since) < Version(cap.until)


def test_version_split_rows_come_newest_first() -> None:
    caps = OptimumQuantoBackend.capabilities
    cpu_int8 = [c for c in caps if c.weights == ("int8",) and c.activations == ("int8",) and c.targets == ("cpu",)]
    assert [c.since for c in cpu_int8] == ["0.2.7", None] and [c.until for c in cpu_int8] == [None, "0.2.7"]
    marlin = [c for c in HQQBackend.capabilities if "marlin" in c.reason.lower() and c.until]
    assert marlin and marlin[0].until == "0.2.8"
