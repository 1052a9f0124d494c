"""KV-cache planning (``plan --kv``): memory at the context per KV format, auto switching when the 16-bit
cache does not fit, kv-cache rejections with the registry's reason, the CLI flag and the JSON keys.

Every memory figure is computed here by hand from 2 (K and V) x layers x KV heads x head dim x context x
batch x bytes per value (llama-3.1-8b: 32 layers, 8 KV heads, head dim 128).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from quantmatch.cli import main
from quantmatch.planner import plan
from quantmatch.planner.kv import FAMILY_KV_RISKS, KV_CHOICES, KV_PRIORS, kv_risk, parse_kv
from quantmatch.planner.shapes import resolve_model
from quantmatch.planner.types import PlanInputError
from quantmatch.registry import Registry
from quantmatch.sdk.scheme import KV_FORMATS

GIB = 2**30
CTX, BATCH = 32768, 4
KV_FP16_BYTES = 2 * 32 * 8 * 128 * CTX * BATCH * 2  # = 16 GiB


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


@pytest.fixture(scope="module")
def h100_default(reg: Registry):  # type: ignore[no-untyped-def]
    return plan("llama-3.1-8b", "h100", batch=BATCH, context=CTX, registry=reg)


def _find(p, method, scheme, backend, target="cuda"):  # type: ignore[no-untyped-def]
    return next((c for c in p.candidates if (c.method, c.scheme, c.backend, c.target) == (method, scheme, backend,
                                                                                        target)), None)


def test_kv_memory_hand_computed(h100_default) -> None:  # type: ignore[no-untyped-def]
    assert KV_FP16_BYTES == 17_179_869_184
    base = h100_default.baseline
    assert base is not None and base.kv is not None
    assert base.memory.kv_cache_gib * GIB == pytest.approx(KV_FP16_BYTES)
    assert base.kv.format == "fp16" and base.kv.bits == 16 and base.kv.gib == pytest.approx(16.0)
    assert base.kv.how == "runtime default"
    opts = {o.format: o for o in h100_default.kv_options}
    assert set(opts) == set(KV_FORMATS)
    assert opts["fp16"].gib * GIB == pytest.approx(KV_FP16_BYTES)
    assert opts["fp8"].gib * GIB == pytest.approx(KV_FP16_BYTES / 2)
    # Q8_0: 34 bytes per 32 values (8.5 bits); Q4_0: 18 bytes per 32 values (4.5 bits)
    assert opts["q8_0"].gib * GIB == pytest.approx(2 * 32 * 8 * 128 * CTX * BATCH * 34 / 32)
    assert opts["q4_0"].gib * GIB == pytest.approx(2 * 32 * 8 * 128 * CTX * BATCH * 18 / 32)
    # the KV cache (16 GiB) outweighs any 8B plan's weights: the note says the KV cache decides the plan
    assert any("KV cache decides" in n for n in h100_default.notes)


def test_forced_fp8_halves_the_cache_and_adds_its_loss(reg: Registry, h100_default) -> None:  # type: ignore[no-untyped-def]
    p = plan("llama-3.1-8b", "h100", batch=BATCH, context=CTX, kv="fp8", registry=reg)
    key = ("awq", "w4a16-g32-asym", "tensorrt-llm")
    c16 = _find(h100_default, *key)
    c8 = _find(p, *key)
    assert c16 is not None and c8 is not None
    assert c8.kv is not None and c8.kv.format == "fp8" and c8.kv.how == "--kv"
    assert c8.memory.kv_cache_gib * GIB == pytest.approx(KV_FP16_BYTES / 2)
    assert c16.memory.total_gib - c8.memory.total_gib == pytest.approx(8.0, abs=1e-6)
    assert c8.quality.delta_pct > c16.quality.delta_pct  # the KV term of the quality prior
    assert c8.scheme == "w4a16-g32-asym"  # the artifact is unchanged: the KV format is the runtime's setting
    assert p.kv_mode == "fp8"


def test_auto_switches_when_fp16_does_not_fit(reg: Registry) -> None:
    # 20 GiB: an INT4 8B model (~5.7 GiB of weights) fits with an 8 GiB FP8 cache, not with a 16 GiB FP16 one
    default = plan("llama-3.1-8b", "h100", batch=BATCH, context=CTX, memory_budget=20, registry=reg)
    auto = plan("llama-3.1-8b", "h100", batch=BATCH, context=CTX, memory_budget=20, kv="auto", registry=reg)
    key = ("awq", "w4a16-g32-asym", "tensorrt-llm", "cuda")
    assert any((r.method, r.scheme, r.backend, r.target) == key and r.stage == "memory" for r in default.rejections)
    c = _find(auto, *key[:3])
    assert c is not None and c.kv is not None
    assert c.kv.format == "fp8" and "does not fit" in c.kv.how
    assert c.memory.fits is True and c.memory.kv_cache_gib == pytest.approx(8.0)
    # llama.cpp runs no FP8 cache: its candidates switch to Q8_0, the least lossy format it runs
    g = _find(auto, "gguf", "gguf-q4_k_m", "llama.cpp")
    assert g is not None and g.kv is not None and g.kv.format == "q8_0"
    assert g.memory.kv_cache_gib * GIB == pytest.approx(2 * 32 * 8 * 128 * CTX * BATCH * 34 / 32)


def test_auto_keeps_fp16_when_it_fits(reg: Registry) -> None:
    p = plan("llama-3.1-8b", "h100", kv="auto", registry=reg)
    # the runtime's own cache: 16-bit, or fp32 where the runtime keeps one (ONNX Runtime's fp32 graphs)
    assert p.candidates and all(c.kv is not None and c.kv.format in ("fp16", "fp32") for c in p.candidates)
    assert all(c.kv.bits == 32 for c in p.candidates if c.kv and c.kv.format == "fp32")
    assert all(c.kv.how == "auto: the default KV cache fits" for c in p.candidates if c.kv)


def test_unsupported_kv_format_is_rejected_with_the_registry_reason(reg: Registry) -> None:
    p = plan("llama-3.1-8b", "h100", kv="q8_0", registry=reg)
    kv_rej = [r for r in p.rejections if r.stage == "kv-cache"]
    vllm = [r for r in kv_rej if r.backend == "vllm"]
    assert vllm, "vLLM runs no Q8_0 KV cache: its candidates must be rejected at stage kv-cache"
    s = replace(reg.scheme(vllm[0].scheme), kv_cache="q8_0")
    v = reg.verdict(None, s, "vllm", reg.device("h100"), "cuda", layer="kv-cache",
                    model=resolve_model("llama-3.1-8b").info)
    assert not v.runnable and v.reasons[0].text in vllm[0].reason
    # what remains runs Q8_0: llama.cpp
    assert p.candidates and {c.backend for c in p.candidates} == {"llama.cpp"}
    assert all(c.kv is not None and c.kv.format == "q8_0" for c in p.candidates)


def test_parse_kv() -> None:
    assert parse_kv(None) is None
    assert parse_kv("AUTO") == "auto" and parse_kv("f16") == "fp16" and parse_kv("e4m3") == "fp8"
    with pytest.raises(PlanInputError) as e:
        parse_kv("bogus")
    assert all(k in str(e.value) for k in KV_CHOICES)


def test_priors_cover_every_format_with_a_source() -> None:
    assert set(KV_FORMATS) <= set(KV_PRIORS)
    for f in KV_FORMATS:
        level, risk, source = kv_risk(f)
        assert level in ("none", "low", "moderate", "high") and risk and source
        if level != "none":
            assert source != "unquantized"
    ranked = sorted(KV_FORMATS, key=lambda f: KV_PRIORS[f].order)
    assert ranked.index("q8_0") < ranked.index("fp8") < ranked.index("fp8e5m2") < ranked.index("q4_0")


def test_family_risk_overrides_and_auto_avoids_it(reg: Registry) -> None:
    qwen = resolve_model("qwen2.5-7b").info
    assert qwen.model_type == "qwen2"
    level, risk, source = kv_risk("fp8", qwen)
    assert level == "high" and "verl" in source and "Qwen2.5-Math-7B" in risk
    assert kv_risk("fp8", resolve_model("llama-3.1-8b").info)[0] == "low"
    assert any("qwen2" in f.model_types for f in FAMILY_KV_RISKS)
    # 7B Qwen2.5 (28 layers, 4 KV heads, head dim 128) at 128k x 8: a 56 GiB FP16 cache does not fit 80 GiB
    # with the weights; auto must not pick FP8 for this family
    p = plan("qwen2.5-7b", "h100", batch=8, context=131072, kv="auto", registry=reg)
    assert p.candidates
    assert all(c.kv is None or c.kv.format not in ("fp8", "fp8e5m2") for c in p.candidates)


def test_cli_kv_q4_0_on_a_llama_cpp_device(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "llama-3.1-8b", "--device", "zen4", "--kv", "q4_0", "--context", "8192", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    (p,) = json.loads(out)["plans"]
    plans = p["plans"]
    assert plans and all(c["kv"]["format"] == "q4_0" for c in plans)
    assert {"format", "gib", "bits", "risk", "source"} <= set(plans[0]["kv"])
    assert plans[0]["kv"]["bits"] == 4.5
    assert plans[0]["kv"]["gib"] == pytest.approx(2 * 32 * 8 * 128 * 8192 * 1 * 18 / 32 / GIB, abs=1e-3)
    assert p["kv_mode"] == "q4_0"
    opts = {o["format"]: o for o in p["kv_options"]}
    assert set(opts) == set(KV_FORMATS)
    keys = {"format", "runnable", "verdict", "reason", "bits", "gib", "risk_level", "risk", "source"}
    assert keys <= set(opts["q4_0"])
    assert opts["q4_0"]["runnable"] is True
    assert any(r["stage"] == "kv-cache" for r in p["rejected"])  # torch runs no Q4_0 cache


def test_cli_kv_human_section(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "llama-3.1-8b", "--device", "h100", "--context", "32768", "--batch", "4",
                 "--kv", "auto", "--memory-budget", "20GiB"])
    out = capsys.readouterr().out
    assert code == 0
    assert "KV cache (" in out and "--kv auto" in out
    for f in ("fp16", "fp8", "q8_0", "q4_0"):
        assert f in out


def test_cli_kv_bogus_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "llama-3.1-8b", "--device", "h100", "--kv", "bogus"])
    cap = capsys.readouterr()
    assert code == 2
    msg = cap.err + cap.out
    assert "--kv" in msg and "q8_0" in msg and "auto" in msg and "Traceback" not in msg
