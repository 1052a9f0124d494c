"""Registry verdicts for the combinations the product exists to answer, with reasons and sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantmatch.registry import Registry, UnknownChoiceError
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.verdict import Level
from tests_support import SMOLLM2_CONFIG


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def test_fp8_w8a8_on_a100_runs_weight_only_through_marlin(reg: Registry) -> None:
    v = reg.verdict("fp8", "w8a8-fp8", "vllm", "nvidia_a100_80gb_sxm")
    assert v.level is Level.WEIGHT_ONLY
    assert v.runs_as and "marlin" in v.runs_as.lower()
    assert any("8.9" in r.text for r in v.reasons)
    assert v.sources and all(r.text for r in v.reasons)
    assert reg.verdict("fp8", "w8a8-fp8", "vllm", "h100").level is Level.NATIVE


def test_w4a4_int4_compute_a100_native_h100_not(reg: Registry) -> None:
    a100 = reg.verdict(None, "w4a4-int4", "hardware", "a100")
    h100 = reg.verdict(None, "w4a4-int4", "hardware", "h100")
    assert a100.level is Level.NATIVE
    assert h100.level is Level.EMULATED
    assert "s8" in h100.reasons[0].text
    # no runtime runs W4A4 INT4 on a Hopper: pruned everywhere
    runtime = [v for v in reg.combinations("h100") if v.scheme == "w4a4-int4"]
    assert runtime and all(v.level is Level.UNSUPPORTED for v in runtime)


def test_hardware_questions(reg: Registry) -> None:
    assert reg.hardware("t4", "int4").level is Level.NATIVE
    assert reg.hardware("nvidia_l4", "fp8-e4m3").level is Level.NATIVE
    assert reg.hardware("a100", "fp8-e4m3").level is Level.UNSUPPORTED
    assert reg.hardware("amd_mi300x", "fp8-e4m3").level is Level.NATIVE
    assert reg.hardware("amd_mi250x", "fp8-e4m3").level is Level.UNSUPPORTED
    assert reg.hardware("intel_cascade_lake_sp", "bf16").level is Level.EMULATED
    assert reg.hardware("amd_zen4_genoa", "bf16").level is Level.NATIVE
    assert reg.hardware("nvidia_b200", "nvfp4").level is Level.NATIVE


def test_group_size_128_pruned_for_hidden_576(reg: Registry) -> None:
    model = ModelInfo.from_config(SMOLLM2_CONFIG, name="smollm2-135m")
    v = reg.verdict("gptq", "w4a16-g128", "vllm", "h100", model=model)
    assert v.level is Level.UNSUPPORTED
    text = v.reasons[0].text
    assert "group size 128 does not divide in_features 576 of model.layers.0.self_attn.q_proj" in text
    assert "64" in text  # the fix names a group size that divides
    ok = reg.verdict("gptq", "w4a16-g64", "vllm", "h100", model=model)
    assert ok.level is not Level.UNSUPPORTED


def test_architecture_refused_before_loading(reg: Registry) -> None:
    model = ModelInfo.from_config({**SMOLLM2_CONFIG, "model_type": "mamba"}, name="m")
    v = reg.verdict("awq", "w4a16-g64-asym", "vllm", "h100", model=model)
    assert v.level is Level.UNSUPPORTED and "mamba" in v.reasons[0].text


def test_combinations_sorted_best_first_and_deterministic(reg: Registry) -> None:
    combos = reg.combinations("h100")
    ranks = [v.level.rank for v in combos]
    assert ranks == sorted(ranks)
    assert [v.to_dict() for v in combos] == [v.to_dict() for v in Registry().combinations("h100")]
    assert {v.level for v in combos} >= {Level.NATIVE, Level.WEIGHT_ONLY, Level.UNSUPPORTED}
    for v in combos:
        assert v.reasons and v.reasons[0].text


def test_layer_types_can_differ(reg: Registry) -> None:
    lin = reg.verdict("fp8", "w8a8-fp8", "vllm", "a100", layer="linear")
    kv = reg.verdict(None, "fp16-kvnvfp4", "vllm", "nvidia_rtx_5090", layer="kv-cache")
    kv_b200 = reg.verdict(None, "fp16-kvnvfp4", "vllm", "nvidia_b200", layer="kv-cache")
    assert lin.layer == "linear" and kv.layer == "kv-cache"
    assert kv.level is Level.UNSUPPORTED and kv_b200.level is Level.NATIVE


def test_unknown_choices_name_the_closest(reg: Registry) -> None:
    with pytest.raises(UnknownChoiceError) as e:
        reg.device("h10")
    assert "h100" in str(e.value)
    with pytest.raises(UnknownChoiceError) as e:
        reg.backend("vlm")
    assert "vllm" in str(e.value)
    with pytest.raises(UnknownChoiceError):
        reg.method("gtpq")


def test_aliases_and_local(reg: Registry) -> None:
    assert reg.device("h100").id == "nvidia_h100_sxm"
    local = reg.device("local")
    assert local.detected and local.family in ("x86-cpu", "arm-cpu", "nvidia", "amd-rocm", "apple-metal")
    assert reg.combinations("local")


def test_every_capability_records_plugin_and_version(reg: Registry) -> None:
    for v in reg.combinations("amd_mi300x"):
        if v.provenance is not None:
            assert v.provenance.distribution and v.provenance.version


def test_public_conformance_file_in_json(reg: Registry) -> None:
    path = Path(__file__).resolve().parents[2] / "shared" / "reference" / "conformance_public.json"
    if not path.exists():
        pytest.skip("shared reference not available")
    from quantmatch.registry import run_conformance

    report = run_conformance(path, reg)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["disagree"] == 0 and d["unmapped"] == 0 and d["agree"] == d["total"]


def test_hardware_verdicts_cite_the_catalog_sources(reg: Registry) -> None:
    h100 = reg.verdict(None, "w4a4-int4", "hardware", "h100")
    catalog = reg.device("h100")
    assert set(catalog.sources) <= set(h100.sources)
    assert not any("catalog entry" in s for s in h100.sources)
    ada = reg.verdict(None, "w4a4-int4", "hardware", "4090")
    int4 = reg.device("4090").peaks["int4"]
    assert ada.level is Level.NATIVE and ada.sources[0] == int4.source
    assert "the int4 peak (1321.2 TOPS) is disputed" in ada.reasons[0].text


def test_hardware_verdicts_carry_the_catalog_caveats(reg: Registry) -> None:
    mi300 = reg.verdict(None, "w8a8-fp8", "hardware", "mi300x")
    assert mi300.level is Level.NATIVE and "FNUZ variant (fp8-e4m3fnuz" in mi300.reasons[0].text
    assert "FNUZ" not in reg.verdict(None, "w8a8-fp8", "hardware", "h100").reasons[0].text
    spr = reg.verdict(None, "w8a8-int8", "hardware", "spr")
    assert spr.level is Level.NATIVE
    assert "int8 runs on AMX-INT8 tiles (amx_int8), AVX512-VNNI (avx512_vnni)" in spr.reasons[0].text
    derived = reg.verdict(None, "w8a8-int8", "hardware", "amd_mi210")
    assert "the int8 peak (181 TOPS) is derived: MI250 (208 CU, 362.1) scaled" in derived.reasons[0].text
