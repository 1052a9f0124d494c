"""Layer-wise precision rules and presets: matching, checks from a config, real per-module quantization."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import tiny_gpt2, tiny_llama  # noqa: F401  (fixtures)

from quantmatch.sdk.layerwise import (
    PRESETS,
    LayerRule,
    LayerwiseError,
    assign,
    check_rules,
    get_preset,
    module_names,
    rules_from,
    summarize,
)
from quantmatch.sdk.model_info import ModelInfo
from tests_support import SMOLLM2_CONFIG

SMOLLM2 = ModelInfo.from_config(SMOLLM2_CONFIG, name="smollm2")
GPT2 = ModelInfo.from_config({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2, "vocab_size": 320})


def hits(info: ModelInfo, preset: str) -> dict[str, int]:
    return {h.rule.name: len(h.hits) for h in check_rules(info, get_preset(preset).rules)}


def test_typical_preset_on_smollm2_hits_every_module_kind() -> None:
    assert hits(SMOLLM2, "typical") == {
        "embeddings": 1, "attention q/k/v": 90, "attention output": 30, "feed-forward": 90,
        "norms": 61, "lm head": 1,
    }
    plan = assign(module_names(SMOLLM2), get_preset("typical").rules)
    assert plan["model.layers.7.self_attn.k_proj"].precision == "int8"  # type: ignore[union-attr]
    assert plan["model.layers.7.mlp.down_proj"].precision == "int4"  # type: ignore[union-attr]
    assert plan["model.layers.7.post_attention_layernorm"].precision == "fp16"  # type: ignore[union-attr]
    assert plan["lm_head"].precision == "fp16"  # type: ignore[union-attr]


def test_every_preset_hits_something_with_every_rule_on_llama_and_gpt2() -> None:
    for name in PRESETS:
        for info in (SMOLLM2, GPT2):
            unused = [h.rule.name for h in check_rules(info, get_preset(name).rules) if h.unused]
            assert unused == [], (name, info.model_type, unused)
    assert hits(GPT2, "typical") == {"embeddings": 2, "attention q/k/v": 2, "attention output": 2,
                                     "feed-forward": 4, "norms": 5, "lm head": 1}


def test_variants_change_only_their_rule() -> None:
    base = {r.name: r.precision for r in get_preset("typical").rules}
    assert {r.name: r.precision for r in get_preset("typical-int4-qkv").rules} == {**base, "attention q/k/v": "int4"}
    assert {r.name: r.precision for r in get_preset("typical-int8-head").rules} == {**base, "lm head": "int8"}


def test_rules_hitting_nothing_are_flagged_and_shadowing_is_reported() -> None:
    rules = rules_from("typical", ["*.experts.*=int4", "model.layers.0.*=int8"])
    report = {h.rule.name: h for h in check_rules(SMOLLM2, rules)}
    assert report["*.experts.*"].unused and not report["*.experts.*"].shadowed
    assert len(report["model.layers.0.*"].hits) == 9  # 7 linears + 2 norms of layer 0, first match wins
    assert "model.layers.0.mlp.up_proj" in report["feed-forward"].shadowed
    lines = summarize(list(report.values()))
    assert any(line.startswith("*.experts.* -> int4: hits nothing") for line in lines)


def test_regex_and_glob_patterns() -> None:
    r = LayerRule.parse(r"re:layers\.(0|1)\.mlp\.(gate|up)_proj$=int2")
    assert r.patterns == (r"re:layers\.(0|1)\.mlp\.(gate|up)_proj$",) and r.precision == "int2"
    assert r.matches("model.layers.1.mlp.up_proj") and not r.matches("model.layers.11.mlp.up_proj")
    g = LayerRule.parse("*.q_proj,*.k_proj=int8")
    assert g.matches("model.layers.3.self_attn.k_proj") and not g.matches("model.layers.3.self_attn.v_proj")


@pytest.mark.parametrize("bad", ["*.mlp.*", "=int4", "*.mlp.*=int5", "re:(=int8"])
def test_malformed_rules(bad: str) -> None:
    with pytest.raises(LayerwiseError):
        LayerRule.parse(bad)


def test_unknown_preset_lists_valid_ones() -> None:
    with pytest.raises(LayerwiseError, match=r"did you mean 'typical'.*valid presets: typical"):
        get_preset("typicl")


def test_plan_flags_precisions_the_method_cannot_produce(tiny_llama: Path) -> None:  # noqa: F811
    from quantmatch.sdk.pipeline import plan_quantization

    ok = plan_quantization(tiny_llama, "hqq", "w4a16-g32-asym", preset="typical")
    assert not ok.fatal and [len(h.hits) for h in ok.rule_hits] == [1, 6, 2, 6, 5, 1]
    bad = plan_quantization(tiny_llama, "hqq", "w4a16-g32-asym", rules=["*.self_attn.*=fp8"])
    assert any("fp8, which hqq does not produce" in p.text for p in bad.fatal)
    unused = plan_quantization(tiny_llama, "quanto", "w8a16", rules=["*.wte=fp16"])
    assert not unused.fatal and any("hits no module" in p.text for p in unused.warnings)


def test_typical_preset_quantizes_per_module_and_reloads(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    import torch

    import quantmatch

    r = quantmatch.quantize(tiny_llama, "quanto", "w4a16-g32-asym", tmp_path / "typ", preset="typical")
    layout = json.loads((r.artifact / "quantization.json").read_text())["modules"]
    assert layout["model.layers.0.self_attn.q_proj"]["weights"] == "qint8"
    assert layout["model.layers.0.self_attn.o_proj"]["weights"] == "qint8"
    assert layout["model.layers.1.mlp.down_proj"] == {"precision": "int4", "weights": "qint4", "activations": "none",
                                                       "group_size": 32, "symmetric": False}
    assert "lm_head" not in layout and len(layout) == 14
    assert r.manifest.details["preset"] == "typical"
    assert r.manifest.details["quantized_modules"] == {"int8": 8, "int4": 6}
    model = quantmatch.load_artifact(r.artifact).model
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "QLinear"
    assert type(model.lm_head) is torch.nn.Linear


def test_int8_head_rule_quantizes_the_tied_head_with_hqq(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    import quantmatch

    r = quantmatch.quantize(tiny_llama, "hqq", "w4a16-g32-asym", tmp_path / "head", preset="typical-int8-head")
    layout = json.loads((r.artifact / "quantization.json").read_text())["modules"]
    assert layout["lm_head"] == {"precision": "int8", "nbits": 8, "group_size": 32, "axis": 1}
    loaded = quantmatch.load_artifact(r.artifact)
    assert type(loaded.model.lm_head).__name__ == "HQQLinear"
    assert type(loaded.model.model.embed_tokens).__name__ == "Embedding"  # the embedding stays 16-bit
