"""The built-in runtime backends against the reference facts.

(a) the public conformance file agrees case for case; (b) facts from hardware_facts.md that the public
cases do not cover are pinned, with the reason that explains them; (c) every verdict explains itself:
non-empty reasons, and the deciding reason names its source.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from quantmatch.registry import Registry, run_conformance
from quantmatch.sdk.verdict import Level, Verdict

PUBLIC = Path(__file__).resolve().parents[2] / "shared" / "reference" / "conformance_public.json"

N, W, E, U = Level.NATIVE, Level.WEIGHT_ONLY, Level.EMULATED, Level.UNSUPPORTED


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


# ---- (a) the public cases ---------------------------------------------------------------------
def test_public_conformance_cases_all_agree(reg: Registry) -> None:
    if not PUBLIC.exists():
        pytest.skip("shared reference conformance_public.json not available")
    report = run_conformance(PUBLIC, reg)
    wrong = [(r.case.get("id"), r.status, r.case.get("expected"), r.got.level.value if r.got else r.error)
             for r in report.results if r.status != "agree"]
    assert report.count("unmapped") == 0, wrong
    assert report.count("agree") == len(report.results) == 50, wrong


# ---- (b) facts the public cases do not pin ----------------------------------------------------
def v(reg: Registry, method: str | None, scheme: str, backend: str, device: str, target: str | None = None,
      layer: str = "linear") -> Verdict:
    return reg.verdict(method, scheme, backend, device, target, layer)


def text(verdict: Verdict) -> str:
    return verdict.reasons[0].text.lower()


@pytest.mark.parametrize("device", ["nvidia_l4", "nvidia_h100_pcie", "nvidia_l40s", "nvidia_b200"])
def test_vllm_fp8_w8a8_native_on_fp8_tensor_cores(reg: Registry, device: str) -> None:
    assert v(reg, "fp8", "w8a8-fp8", "vllm", device).level is N


def test_vllm_fp8_on_amd_fnuz_native_mi250x_upcast(reg: Registry) -> None:
    mi300 = v(reg, "fp8", "w8a8-fp8", "vllm", "amd_mi300x")
    assert mi300.level is N and "fnuz" in text(mi300)
    mi250 = v(reg, "fp8", "w8a8-fp8", "vllm", "amd_mi250x")
    assert mi250.level is W and mi250.runs_as and "upcast" in mi250.runs_as.lower()
    assert "gfx90a" in text(mi250)


def test_vllm_fp8_moe_needs_sm89_marlin_moe_on_a100(reg: Registry) -> None:
    a100 = v(reg, "fp8", "w8a8-fp8", "vllm", "a100", layer="moe")
    assert a100.level is W and "marlin" in (a100.runs_as or "").lower()
    assert "fused-moe" in text(a100) and "8.9" in text(a100)
    assert v(reg, "fp8", "w8a8-fp8", "vllm", "h100", layer="moe").level is N


def test_tensorrt_llm_nvfp4_blackwell_only(reg: Registry) -> None:
    assert v(reg, "rtn", "w4a4-nvfp4", "tensorrt-llm", "nvidia_b200").level is N
    h100 = v(reg, "rtn", "w4a4-nvfp4", "tensorrt-llm", "h100")
    assert h100.level is U and "blackwell" in text(h100)


def test_vllm_nvfp4_w4a4_per_blackwell_family(reg: Registry) -> None:
    b200 = v(reg, "rtn", "w4a4-nvfp4", "vllm", "nvidia_b200")
    rtx = v(reg, "rtn", "w4a4-nvfp4", "vllm", "nvidia_rtx_5090")
    h100 = v(reg, "rtn", "w4a4-nvfp4", "vllm", "h100")
    assert b200.level is N and "tcgen05" in text(b200)
    assert rtx.level is N and "sm_120" in text(rtx) and "block" in text(rtx) and text(rtx) != text(b200)
    assert h100.level is W and "marlin" in (h100.runs_as or "").lower()


def test_vllm_mxfp4_on_sm120_falls_back_to_marlin(reg: Registry) -> None:
    rtx = v(reg, "rtn", "w4a4-mxfp4", "vllm", "nvidia_rtx_5090")
    assert rtx.level is W and "family" in text(rtx)
    assert v(reg, "rtn", "w4a4-mxfp4", "vllm", "nvidia_b200").level is N


@pytest.mark.parametrize("backend", ["vllm", "tensorrt-llm"])
def test_nvfp4_kv_cache_needs_sm100_family(reg: Registry, backend: str) -> None:
    rtx = v(reg, None, "fp16-kvnvfp4", backend, "nvidia_rtx_5090", layer="kv-cache")
    assert rtx.level is U and "sm_120" in text(rtx)
    assert v(reg, None, "fp16-kvnvfp4", backend, "nvidia_b200", layer="kv-cache").level is N


def test_vllm_fp8_kv_cache(reg: Registry) -> None:
    assert v(reg, None, "fp16-kvfp8", "vllm", "h100", layer="kv-cache").level is N
    a100 = v(reg, None, "fp16-kvfp8", "vllm", "a100", layer="kv-cache")
    assert a100.level is W and a100.runs_as


def test_llama_cpp_per_backend(reg: Registry) -> None:
    metal = v(reg, "gguf", "gguf-q4_k_m", "llama.cpp", "apple_m4", "metal")
    assert metal.level is W and "half" in (metal.runs_as or "")
    assert v(reg, "gguf", "gguf-q4_k_m", "llama.cpp", "amd_zen3_milan", "cpu").level is N
    amx = v(reg, "gguf", "gguf-q4_0", "llama.cpp", "intel_sapphire_rapids", "cpu")
    assert amx.level is N and "amx" in text(amx)
    # KV cache: integer dot where the target has one (judgement, said in the reason), else dequantized
    assert v(reg, None, "fp16-kvq8_0", "llama.cpp", "h100", "cuda", layer="kv-cache").level is N
    assert v(reg, None, "fp16-kvq8_0", "llama.cpp", "apple_m2", "metal", layer="kv-cache").level is W


def test_bitsandbytes_llm_int8_needs_turing(reg: Registry) -> None:
    v100 = v(reg, "bitsandbytes", "w8a8-int8", "bitsandbytes", "nvidia_v100_sxm2_32gb")
    assert v100.level is U and "7.5" in text(v100)


def test_onnxruntime_matmulnbits_int8_without_vnni(reg: Registry) -> None:
    zen3 = v(reg, "onnx", "w4a8-int8-g32", "onnxruntime", "amd_zen3_milan", "cpu")
    assert zen3.level is N and "avx2" in text(zen3) and "vnni" in text(zen3)
    spr = v(reg, "onnx", "w4a8-int8-g32", "onnxruntime", "intel_sapphire_rapids", "cpu")
    assert spr.level is N and "accuracy_level=4" in text(spr)


def test_vllm_wna16_kernel_choice(reg: Registry) -> None:
    h100 = v(reg, "gptq", "w4a16-g128", "vllm", "h100")
    assert h100.level is W and "machete" in (h100.runs_as or "").lower()
    t4 = v(reg, "awq", "w4a16-g128-asym", "vllm", "t4")
    assert t4.level is W and "marlin" in (t4.runs_as or "").lower()
    assert v(reg, "awq", "w4a16-g128-asym", "vllm", "nvidia_v100_sxm2_32gb").level is U


def test_vllm_int8_w8a8_refusals(reg: Registry) -> None:
    assert v(reg, "smoothquant", "w8a8-int8", "vllm", "amd_mi250x").level is U
    assert v(reg, "smoothquant", "w8a8-int8", "vllm", "nvidia_v100_sxm2_32gb").level is U
    assert v(reg, "smoothquant", "w8a8-int8", "vllm", "t4").level is N


def test_tensorrt_llm_generation_floors(reg: Registry) -> None:
    assert v(reg, None, "w4a8-fp8", "tensorrt-llm", "nvidia_l40s").level is N
    assert v(reg, "smoothquant", "w8a8-int8", "tensorrt-llm", "t4").level is U
    assert v(reg, "fp8", "w8a8-fp8", "tensorrt-llm", "a100").level is U


def test_torch_baselines(reg: Registry) -> None:
    clx = v(reg, None, "bf16", "torch", "intel_cascade_lake_sp", "cpu")
    assert clx.level is E and clx.runs_as
    assert v(reg, None, "bf16", "torch", "a100").level is N
    assert v(reg, None, "tf32", "torch", "t4").level is U


# ---- (c) every verdict explains itself --------------------------------------------------------
def _assert_explained(verdict: Verdict) -> None:
    assert verdict.reasons, verdict
    assert all(r.text.strip() for r in verdict.reasons), verdict
    if verdict.backend != "hardware":  # the pseudo-backend is the device catalog, not a runtime
        assert verdict.reasons[0].source.strip(), (verdict.backend, verdict.scheme, verdict.reasons[0].text)
    assert "{" not in " ".join(r.text for r in verdict.reasons), verdict.reasons
    assert verdict.runs_as is None or "{" not in verdict.runs_as


@pytest.mark.parametrize("layer", ["linear", "moe", "kv-cache"])
def test_every_verdict_has_reasons_and_a_sourced_deciding_reason(reg: Registry, layer: str) -> None:
    count = 0
    for device in reg.devices():
        for verdict in reg.combinations(device, layer=layer):
            _assert_explained(verdict)
            count += 1
    assert count > 1000


def test_public_case_verdicts_are_explained(reg: Registry) -> None:
    if not PUBLIC.exists():
        pytest.skip("shared reference conformance_public.json not available")
    for result in run_conformance(PUBLIC, reg).results:
        assert result.got is not None
        _assert_explained(result.got)


def test_cases_written_for_the_2026_catalog_all_agree() -> None:
    """Our own v2 cases (tests/data/conformance_2026.json): new devices, formats, gates, versions, disputes."""
    path = Path(__file__).resolve().parent / "data" / "conformance_2026.json"
    report = run_conformance(path)
    bad = [(r.case["id"], r.status, r.error or (r.got.level.value if r.got else None)) for r in report.results
           if r.status != "agree"]
    assert not bad and len(report.results) >= 40
    assert any(c.get("runtime_version") for c in (r.case for r in report.results))
    assert any(c.get("disputed") for c in (r.case for r in report.results))
