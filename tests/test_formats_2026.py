"""OCP MX formats, FP8 e5m2, W4A8 MX mixes, NVFP4/FP8 KV caches and current GGUF types: grammar and hardware."""

from __future__ import annotations

import pytest

from quantmatch.registry import Registry
from quantmatch.registry.conformance import scheme_from_types
from quantmatch.sdk.scheme import GGUF_BITS, GGUF_TYPES, SchemeError, parse_scheme
from quantmatch.sdk.verdict import Level


@pytest.mark.parametrize(("text", "weights", "acts", "bpw"), [
    ("w4a4-mxfp4", "mxfp4", "mxfp4", 4.25),
    ("w6a6-mxfp6e2m3", "mxfp6-e2m3", "mxfp6-e2m3", 6.25),
    ("w6a6-mxfp6e3m2", "mxfp6-e3m2", "mxfp6-e3m2", 6.25),
    ("w8a8-mxfp8", "mxfp8", "mxfp8", 8.25),
    ("w8a8-mxint8", "mxint8", "mxint8", 8.25),
    ("w4a8-mxfp4-mxfp8", "mxfp4", "mxfp8", 4.25),
    ("w6a8-mxfp6e2m3-mxfp8", "mxfp6-e2m3", "mxfp8", 6.25),
    ("w4a8-nvfp4-fp8", "nvfp4", "fp8-e4m3", 4.5),
    ("w8a8-fp8e5m2", "fp8-e5m2", "fp8-e5m2", 8.0),
    ("w4a16-mxfp4", "mxfp4", "fp16", 4.25),
    ("w8a8-int-fp8", "int8", "fp8-e4m3", 8.0),
])
def test_new_formats_parse_and_round_trip(text: str, weights: str, acts: str, bpw: float) -> None:
    s = parse_scheme(text)
    assert (s.weight_type, s.activation_type, s.bits_per_weight) == (weights, acts, bpw)
    assert str(s) == text and parse_scheme(str(s)) == s


def test_one_format_keeps_its_old_meaning() -> None:
    assert parse_scheme("w4a8-fp8").weight_type == "int4"       # int4 weights, fp8 activations, as before
    assert str(parse_scheme("w4a8-int4-fp8")) == "w4a8-fp8"


@pytest.mark.parametrize(("text", "fix"), [
    ("w6a6-mxfp6", "mxfp6e2m3 or mxfp6e3m2"),
    ("w4a16-mxfp4-mxfp8", "weight-only scheme takes one"),
    ("w4a8-mxfp8-mxfp8", "mxfp8 weights are 8-bit"),
    ("w6a6-int", "integer activations are 4 or 8 bits"),
])
def test_bad_mixes_name_the_fix(text: str, fix: str) -> None:
    with pytest.raises(SchemeError, match=fix):
        parse_scheme(text)


def test_kv_formats() -> None:
    assert parse_scheme("w4a16-kvnvfp4").kv_type == "nvfp4"
    s = parse_scheme("bf16-kvfp8e5m2")
    assert (s.kv_type, s.kv_bits) == ("fp8-e5m2", 8)


def test_current_gguf_types() -> None:
    for t in ("q1_0", "q2_0", "nvfp4", "iq1_s", "iq1_m", "iq2_s", "iq2_m", "iq3_xs", "iq3_m", "mxfp4_moe", "q2_k_s"):
        assert t in GGUF_TYPES and t in GGUF_BITS
        assert str(parse_scheme(f"gguf-{t}")) == f"gguf-{t}"
    assert str(parse_scheme("gguf-q4_k")) == "gguf-q4_k_m"   # llama-quantize's alias
    assert parse_scheme("gguf-q1_0").bits_per_weight == 1.125


def test_conformance_spellings() -> None:
    assert str(scheme_from_types("mxfp4", "mxfp8")) == "w4a8-mxfp4-mxfp8"
    assert str(scheme_from_types("mxfp6_e3m2", "mxfp6_e3m2")) == "w6a6-mxfp6e3m2"
    assert str(scheme_from_types("fp8-e5m2", "fp8-e5m2")) == "w8a8-fp8e5m2"
    assert str(scheme_from_types("fp8_e5m2", None, "kv-cache")) == "fp16-kvfp8e5m2"


@pytest.mark.parametrize(("scheme", "device", "level"), [
    ("w4a4-mxfp4", "nvidia_b200", Level.NATIVE),
    ("w4a4-mxfp4", "nvidia_h100_sxm", Level.UNSUPPORTED),
    ("w6a6-mxfp6e2m3", "amd_mi355x", Level.NATIVE),
    ("w6a6-mxfp6e3m2", "amd_mi300x", Level.UNSUPPORTED),
    ("w8a8-mxfp8", "nvidia_rtx_5090", Level.NATIVE),
    ("w4a8-mxfp4-mxfp8", "amd_mi355x", Level.NATIVE),
    ("w4a8-mxfp4-mxfp8", "nvidia_h100_sxm", Level.UNSUPPORTED),
    ("w8a8-fp8e5m2", "nvidia_h100_sxm", Level.NATIVE),
    ("gguf-nvfp4", "nvidia_rtx_5090", Level.NATIVE),
    ("gguf-nvfp4", "nvidia_h100_sxm", Level.WEIGHT_ONLY),
    ("gguf-mxfp4", "amd_mi355x", Level.NATIVE),
    ("gguf-q4_k_m", "intel_sapphire_rapids", Level.NATIVE),
    ("gguf-q1_0", "apple_m4", Level.WEIGHT_ONLY),
    # low-bit weights with float activations are weight-only even where the engine computes the weight type
    ("w4a16", "nvidia_a100_80gb_sxm", Level.WEIGHT_ONLY),
    ("w8a16-fp8", "nvidia_h100_sxm", Level.WEIGHT_ONLY),
    ("w4a16-nvfp4", "nvidia_b200", Level.WEIGHT_ONLY),
    # the M5's GPU neural accelerators compute int8 (Metal-4 tensor API); M1-M4 GPUs have no int8 matrix unit
    ("w8a8-int8", "apple_m5", Level.NATIVE),
    ("w8a8-int8", "apple_m4", Level.UNSUPPORTED),
])
def test_hardware_only_answers(scheme: str, device: str, level: Level) -> None:
    assert Registry().verdict(None, scheme, "hardware", device).level is level


def test_nvfp4_kv_cache_on_hardware() -> None:
    reg = Registry()
    kv = {d: reg.verdict(None, "fp16-kvnvfp4", "hardware", d, layer="kv-cache").level
          for d in ("nvidia_b200", "nvidia_h100_sxm")}
    assert kv == {"nvidia_b200": Level.NATIVE, "nvidia_h100_sxm": Level.UNSUPPORTED}


def test_llama_cpp_fp4_gguf_types_take_fp4_tensor_cores_only_on_the_sm120_family() -> None:
    """llama.cpp's BLACKWELL_MMA_AVAILABLE is compute capability 12.x; B200 (10.0) runs NVFP4 blocks via q8_1."""
    reg = Registry()
    rtx = reg.verdict(None, "gguf-nvfp4", "llama.cpp", "nvidia_rtx_5090")
    b200 = reg.verdict(None, "gguf-nvfp4", "llama.cpp", "nvidia_b200")
    assert "FP4 tensor cores" in rtx.reasons[0].text and "common.cuh" in rtx.reasons[0].source
    assert "q8_1" in b200.reasons[0].text
    assert reg.verdict(None, "gguf-q1_0", "llama.cpp", "nvidia_h100_sxm").level is Level.NATIVE
