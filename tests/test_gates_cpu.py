"""Run-time kernel gates of the CPU runtimes (llama.cpp, ONNX Runtime, PyTorch, vLLM's CPU backend).

Each test judges the same scheme on two CPUs that differ only in the flag (or family) the runtime checks
when it picks a kernel, and expects two different verdicts: a different level where the fallback is a
different kind of execution, otherwise a different kernel named in the reason or ``runs_as``. The CPUs are
built from a catalog profile of the family with ``dataclasses.replace``, so the tests do not depend on which
CPUs the catalog lists.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from quantmatch.registry.registry import Registry
from quantmatch.sdk.profile import HardwareProfile
from quantmatch.sdk.verdict import Level, Verdict

N, W, E, U = Level.NATIVE, Level.WEIGHT_ONLY, Level.EMULATED, Level.UNSUPPORTED

X86_BASE = frozenset({"fp32", "int8", "fma", "f16c", "avx2"})
AVX512_CORE = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"})
ARM_BASE = frozenset({"fp32", "int8", "asimd", "fp16", "dotprod"})
LOWERED = {"bf16": "converted to fp32 (no native BF16)", "fp16": "converted to fp32",
           "int4": "unpacked to int8 for integer dot products"}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def cpu(reg: Registry, family: str, flags: frozenset[str] | set[str], tag: str) -> HardwareProfile:
    """A CPU of ``family`` whose cores have exactly ``flags`` (BF16/FP16 lowered unless the flags name them)."""
    base = reg.devices(family)[0]
    flags = frozenset(flags)
    lowered = {k: val for k, val in LOWERED.items() if k not in flags}
    return replace(base, id=f"{base.id}-{tag}", features=flags, cpu_features=flags,
                   emulated=MappingProxyType(lowered), targets=("cpu",))


def differ(reg: Registry, a: HardwareProfile, b: HardwareProfile, method: str | None, scheme: str, backend: str,
           layer: str = "linear") -> tuple[Verdict, Verdict]:
    va = reg.verdict(method, scheme, backend, a, "cpu", layer)
    vb = reg.verdict(method, scheme, backend, b, "cpu", layer)
    assert (va.level, va.reasons[0].text, va.runs_as) != (vb.level, vb.reasons[0].text, vb.runs_as)
    return va, vb


def runs(v: Verdict) -> str:
    return f"{v.reasons[0].text} | {v.runs_as or ''}".lower()


# ---- llama.cpp (ggml-cpu) ----------------------------------------------------------------------------------------

def test_llama_amx_types(reg: Registry) -> None:
    spr = cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE | {"avx512_vnni", "amx_tile", "amx_int8"}, "amx")
    no_amx = cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE | {"avx512_vnni", "amx_tile"}, "noamx")
    for scheme in ("gguf-q4_k_m", "gguf-q8_0", "gguf-q6_k"):  # qtype_has_amx_kernels covers K-quants and Q8_0
        a, b = differ(reg, spr, no_amx, None, scheme, "llama.cpp")
        assert a.level is N and "amx" in runs(a) and b.level is N and "amx" not in runs(b)
    # IQ4_NL has no AMX kernel: the same verdict on both
    assert "amx" not in runs(reg.verdict(None, "gguf-iq4_nl", "llama.cpp", spr, "cpu"))


def test_llama_repack_avx2(reg: Registry) -> None:
    avx2 = cpu(reg, "x86-cpu", X86_BASE, "avx2")
    no_avx2 = cpu(reg, "x86-cpu", X86_BASE - {"avx2"}, "noavx2")
    for scheme, layout in (("gguf-q4_0", "q4_0_8x8"), ("gguf-q4_k_m", "q4_k_8x8"), ("gguf-iq4_nl", "8x8")):
        a, b = differ(reg, avx2, no_avx2, None, scheme, "llama.cpp")
        assert a.level is N and layout in runs(a) and "repacked" in runs(a)
        assert b.level is N and "vec_dot" in runs(b)


def test_llama_repack_q2_k_needs_avx512(reg: Registry) -> None:
    a, b = differ(reg, cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE, "avx512"), cpu(reg, "x86-cpu", X86_BASE, "avx2"),
                  None, "gguf-q2_k", "llama.cpp")
    assert "q2_k_8x8" in runs(a) and "vec_dot" in runs(b)


def test_llama_repack_arm_i8mm_vs_dotprod(reg: Registry) -> None:
    i8mm = cpu(reg, "arm-cpu", ARM_BASE | {"i8mm"}, "i8mm")
    dot = cpu(reg, "arm-cpu", ARM_BASE, "dot")
    a, b = differ(reg, i8mm, dot, None, "gguf-q4_0", "llama.cpp")
    assert "smmla" in runs(a) and "sdot" in runs(b)
    a, b = differ(reg, i8mm, dot, None, "gguf-q6_k", "llama.cpp")
    assert "8x8" in runs(a) and "8x4" in runs(b)
    # without the dot product nothing is repacked for Q4_0: the row-by-row vec_dot
    _, c = differ(reg, dot, cpu(reg, "arm-cpu", ARM_BASE - {"dotprod"}, "nodot"), None, "gguf-q4_0", "llama.cpp")
    assert c.level is N and "vec_dot" in runs(c)


def test_llama_scalar_fallback_without_integer_simd(reg: Registry) -> None:
    a, b = differ(reg, cpu(reg, "x86-cpu", X86_BASE, "int8"), cpu(reg, "x86-cpu", {"fp32"}, "scalar"), None,
                  "gguf-q4_k_m", "llama.cpp")
    assert a.level is N and b.level is E


def test_llama_f16_native_only_with_arm_fp16_arithmetic(reg: Registry) -> None:
    a, b = differ(reg, cpu(reg, "arm-cpu", ARM_BASE, "fp16"), cpu(reg, "arm-cpu", ARM_BASE - {"fp16"}, "nofp16"), None,
                  "gguf-f16", "llama.cpp")
    assert a.level is N and b.level is W
    # x86: AVX512_FP16 is not used by ggml-cpu, F16 is converted to F32 even where the CPU has it
    spr = cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE | {"avx512_fp16", "fp16"}, "fp16")
    assert reg.verdict(None, "gguf-f16", "llama.cpp", spr, "cpu").level is W


def test_llama_bf16_dot_gated_on_avx512_bf16(reg: Registry) -> None:
    zen4 = X86_BASE | AVX512_CORE | {"avx512_vnni"}
    a, b = differ(reg, cpu(reg, "x86-cpu", zen4 | {"avx512_bf16", "bf16"}, "bf16"), cpu(reg, "x86-cpu", zen4, "nobf16"),
                  None, "gguf-bf16", "llama.cpp")
    assert a.level is N and b.level is W and "simd" in runs(b)
    # Arm FEAT_BF16 is not used: a scalar loop
    arm = reg.verdict(None, "gguf-bf16", "llama.cpp", cpu(reg, "arm-cpu", ARM_BASE | {"bf16"}, "bf16"), "cpu")
    assert arm.level is W and "scalar" in runs(arm)


# ---- ONNX Runtime (MLAS) -----------------------------------------------------------------------------------------

def test_ort_qgemm_dispatch(reg: Registry) -> None:
    vnni = X86_BASE | AVX512_CORE | {"avx512_vnni"}
    a, b = differ(reg, cpu(reg, "x86-cpu", vnni | {"amx_tile", "amx_int8"}, "amx"), cpu(reg, "x86-cpu", vnni, "vnni"),
                  None, "w8a8-int8", "onnxruntime")
    assert "amx" in runs(a) and "avx512-vnni" in runs(b) and a.level is b.level is N
    a, b = differ(reg, cpu(reg, "x86-cpu", vnni, "vnni"), cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE, "novnni"),
                  None, "w8a8-int8", "onnxruntime")
    assert "vpmaddubsw" in runs(b)
    a, b = differ(reg, cpu(reg, "x86-cpu", X86_BASE | {"avx_vnni"}, "avxvnni"), cpu(reg, "x86-cpu", X86_BASE, "avx2"),
                  None, "w8a8-int8", "onnxruntime")
    assert "avx-vnni" in runs(a) and "vpmaddubsw" in runs(b)


def test_ort_arm_i8mm_only_on_linux(reg: Registry) -> None:
    linux = cpu(reg, "arm-cpu", ARM_BASE | {"i8mm"}, "i8mm")
    a, b = differ(reg, linux, cpu(reg, "arm-cpu", ARM_BASE, "dot"), None, "w8a8-int8", "onnxruntime")
    assert "smmla" in runs(a) and "sdot" in runs(b)
    # the same cores on macOS (Apple's family): the I8MM dispatch is compiled only under __linux__
    _, mac = differ(reg, linux, replace(linux, id="mac-i8mm", family="apple-metal"), None, "w8a8-int8", "onnxruntime")
    assert "sdot" in runs(mac) and mac.level is N


def test_ort_matmulnbits_comp_int8_needs_avx2_or_dotprod(reg: Registry) -> None:
    a, b = differ(reg, cpu(reg, "x86-cpu", X86_BASE, "avx2"), cpu(reg, "x86-cpu", X86_BASE - {"avx2"}, "noavx2"),
                  "onnx", "w4a8-int8-g32", "onnxruntime")
    assert a.level is N and b.level is W and "compfp32" in runs(b)
    a, b = differ(reg, cpu(reg, "arm-cpu", ARM_BASE, "dot"), cpu(reg, "arm-cpu", ARM_BASE - {"dotprod"}, "nodot"),
                  "onnx", "w4a8-int8-g32", "onnxruntime")
    assert a.level is N and b.level is W
    a, b = differ(reg, cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE | {"avx512_vnni"}, "vnni"),
                  cpu(reg, "x86-cpu", X86_BASE | {"avx_vnni"}, "avxvnni"), "onnx", "w4a8-int8-g32", "onnxruntime")
    assert "avx512-vnni" in runs(a) and "avx-vnni" in runs(b)


def test_ort_matmulnbits_bits_and_blocks(reg: Registry) -> None:
    dev = cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE | {"avx512_vnni"}, "vnni")
    assert reg.verdict(None, "w3a8-int8-g32", "onnxruntime", dev, "cpu").level is U  # nbits 2/4/8 only
    two = reg.verdict(None, "w2a8-int8-g32", "onnxruntime", dev, "cpu")  # no 2-bit CompInt8 variant
    assert two.level is W and "compfp32" in runs(two)
    assert reg.verdict(None, "w4a8-int8-g512", "onnxruntime", dev, "cpu").level is W  # blocks of 16-256 only


def test_ort_fp8_qdq_is_fake_quantized(reg: Registry) -> None:
    v = reg.verdict(None, "w8a8-fp8", "onnxruntime", cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE, "x"), "cpu")
    assert v.level is E and "fake-quantized" in runs(v)


# ---- PyTorch (CPU) -----------------------------------------------------------------------------------------------

def test_torch_bf16_onednn_gate(reg: Registry) -> None:
    clx = X86_BASE | AVX512_CORE | {"avx512_vnni"}
    a, b = differ(reg, cpu(reg, "x86-cpu", clx, "clx"), cpu(reg, "x86-cpu", clx - {"avx512bw"}, "nobw"), None, "bf16",
                  "torch")
    assert a.level is b.level is E and "onednn" in runs(a) and "cpublas" in runs(b)
    a, b = differ(reg, cpu(reg, "x86-cpu", clx | {"avx512_bf16", "bf16"}, "bf16"), cpu(reg, "x86-cpu", clx, "clx"),
                  None, "bf16", "torch")
    assert a.level is N and b.level is E


def test_torch_int4pack_isa(reg: Registry) -> None:
    a, b = differ(reg, cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE, "avx512"), cpu(reg, "x86-cpu", X86_BASE, "avx2"),
                  None, "w4a16-g128-bf16", "torch")
    assert a.level is b.level is W and "512-bit" in runs(a) and "256-bit" in runs(b)
    _, c = differ(reg, cpu(reg, "x86-cpu", X86_BASE, "avx2"), cpu(reg, "x86-cpu", X86_BASE - {"avx2"}, "noavx2"),
                  None, "w4a16-g128-bf16", "torch")
    assert c.level is W and "scalar" in runs(c)


def test_torch_fp8_on_cpu_is_fake_quantized(reg: Registry) -> None:
    v = reg.verdict("fp8", "w8a8-fp8", "torch", cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE, "x"), "cpu")
    assert v.level is E and "fake-quantized" in runs(v)


# ---- vLLM CPU backend --------------------------------------------------------------------------------------------

def test_vllm_cpu_int8_w8a8_not_in_macos_builds(reg: Registry) -> None:
    linux = cpu(reg, "arm-cpu", ARM_BASE | {"i8mm"}, "linux")
    a, b = differ(reg, linux, replace(linux, id="mac", family="apple-metal"), None, "w8a8-int8", "vllm")
    assert a.level is N and b.level is U


def test_vllm_cpu_wna16_needs_avx512(reg: Registry) -> None:
    a, b = differ(reg, cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE, "avx512"), cpu(reg, "x86-cpu", X86_BASE, "avx2"),
                  "gptq", "w4a16-g128", "vllm")
    assert a.level is W and b.level is U


def test_vllm_cpu_fp8_kv_cache_needs_avx512_or_amx(reg: Registry) -> None:
    a, b = differ(reg, cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE, "avx512"), cpu(reg, "x86-cpu", X86_BASE, "avx2"),
                  None, "fp16-kvfp8", "vllm", "kv-cache")
    assert a.level is W and b.level is U


def test_vllm_cpu_fp8_w8a8_amx_gates(reg: Registry) -> None:
    amx = X86_BASE | AVX512_CORE | {"avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"}
    a, b = differ(reg, cpu(reg, "x86-cpu", amx | {"amx_fp8"}, "amxfp8"), cpu(reg, "x86-cpu", amx, "amx"), "fp8",
                  "w8a8-fp8", "vllm")
    assert a.level is N and b.level is W  # AMX-FP8 kernel, then the W8A16 AMX kernel
    _, c = differ(reg, cpu(reg, "x86-cpu", amx, "amx"), cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE, "noamx"), "fp8",
                  "w8a8-fp8", "vllm")
    assert c.level is E and "fake-quantized" in runs(c)  # torch._scaled_mm fallback upcasts on the CPU


# ---- facts that changed between runtime versions ----------------------------------------------------------------

def test_vllm_cpu_fp8_kv_cache_by_version(reg: Registry) -> None:
    avx2 = cpu(reg, "x86-cpu", X86_BASE, "avx2")
    levels = {ver: reg.at_versions({"vllm": ver}).verdict(None, "fp16-kvfp8", "vllm", avx2, "cpu", "kv-cache").level
              for ver in ("0.11.0", "0.13.0", "0.34.0")}
    assert levels == {"0.11.0": W, "0.13.0": U, "0.34.0": U}  # e5m2 storage, then ignored, then ISA-gated


def test_vllm_cpu_wna16_ipex_before_0_14(reg: Registry) -> None:
    avx2 = cpu(reg, "x86-cpu", X86_BASE, "avx2")
    old = reg.at_versions({"vllm": "0.13.0"}).verdict("gptq", "w4a16-g128", "vllm", avx2, "cpu")
    new = reg.at_versions({"vllm": "0.34.0"}).verdict("gptq", "w4a16-g128", "vllm", avx2, "cpu")
    assert old.level is W and "ipex" in runs(old) and new.level is U


def test_ort_matmulnbits_bits_by_version(reg: Registry) -> None:
    dev = cpu(reg, "x86-cpu", X86_BASE, "avx2")

    def level(ver: str, scheme: str) -> Level:
        return reg.at_versions({"onnxruntime": ver}).verdict(None, scheme, "onnxruntime", dev, "cpu").level

    assert [level(v, "w8a32") for v in ("1.21.0", "1.22.0")] == [U, W]
    assert [level(v, "w2a8-int8-g32") for v in ("1.23.0", "1.24.1")] == [U, W]


def test_vllm_cpu_fp8_w8a8_by_version(reg: Registry) -> None:
    zen4 = cpu(reg, "x86-cpu", X86_BASE | AVX512_CORE | {"avx512_vnni"}, "zen4")
    levels = [reg.at_versions({"vllm": ver}).verdict("fp8", "w8a8-fp8", "vllm", zen4, "cpu").level
              for ver in ("0.9.2", "0.15.0", "0.34.0")]
    assert levels == [U, E, E]  # docs v0.9.2 refuse it; torch._scaled_mm fallbacks from v0.15.0
