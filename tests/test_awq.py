"""AWQ (plugins/methods/algorithms/awq.py): folded scales, scale and clipping searches, the plugin, the real model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from calibrated_support import (
    logits,
    logits_mse,
    one_thread,  # noqa: F401  (fixture)
    outlier_llama,
    quantize_all_rtn,
    real_model,
    real_ppl,
    real_samples,
    token_batch,
)

from quantmatch.plugins.methods.algorithms.awq import AWQConfig, awq_model, search_clip
from quantmatch.plugins.methods.algorithms.blockwise import capture_block_inputs, decoder_blocks, run_block
from quantmatch.plugins.methods.algorithms.rtn import IntGrid, rtn
from quantmatch.plugins.methods.algorithms.scaling import fold_scales, llama_scale_groups

pytestmark = pytest.mark.usefixtures("one_thread")
GRID = IntGrid(3, 32, False)


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_scale_groups_fold_v_into_o_only_without_gqa(kv_heads: int) -> None:
    block = decoder_blocks(outlier_llama(kv_heads=kv_heads))[0]
    prevs = [g.prev for g in llama_scale_groups(block)]
    expected = ["input_layernorm", "self_attn.v_proj", "post_attention_layernorm", "mlp.up_proj"]
    assert prevs == (expected if kv_heads == 4 else [p for p in expected if p != "self_attn.v_proj"])


def test_folding_any_positive_scales_leaves_the_block_function_unchanged() -> None:
    model = outlier_llama()
    batches = capture_block_inputs(model, token_batch(2, 16, 1))
    block = decoder_blocks(model)[0]
    before = run_block(block, batches)[0].hidden
    g = torch.Generator().manual_seed(0)
    for group in llama_scale_groups(block):
        width = dict(block.named_modules())[group.linears[0]].in_features
        fold_scales(block, group, torch.rand(width, generator=g) * 10 + 0.1)
    torch.testing.assert_close(run_block(block, batches)[0].hidden, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_awq_scales_leave_the_float_model_unchanged(kv_heads: int) -> None:
    model = outlier_llama(kv_heads=kv_heads)
    test = token_batch(2, 32, 2)
    ref = logits(model, test)
    scaled = copy.deepcopy(model)
    assert awq_model(scaled, token_batch(8, 32, 1), lambda n: GRID, quantize=False) == {}
    norm = scaled.model.layers[0].input_layernorm.weight
    assert not torch.equal(norm, model.model.layers[0].input_layernorm.weight), "no scale was folded"
    torch.testing.assert_close(logits(scaled, test), ref, rtol=1e-4, atol=1e-4)


def test_awq_beats_rtn_on_the_same_asymmetric_grid() -> None:
    model = outlier_llama()
    calib, test = token_batch(32, 32, 1), token_batch(4, 32, 2)
    ref = logits(model, test)
    q = copy.deepcopy(model)
    seen: list[tuple[str, int, int]] = []
    result = awq_model(q, calib, lambda n: GRID, AWQConfig(search_samples=16), batch_size=8,
                       progress=lambda *a: seen.append(a))
    assert seen[-1] == ("quantize", 2, 2) and len(result) == 14
    assert all(r.zero_point is not None for r in result.values())
    assert logits_mse(q, ref, test) < 0.7 * logits_mse(quantize_all_rtn(model, GRID), ref, test)


def test_awq_is_deterministic() -> None:
    model = outlier_llama()
    calib = token_batch(8, 16, 1)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    awq_model(a, calib, lambda n: GRID)
    awq_model(b, calib, lambda n: GRID)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_clip_search_never_worsens_the_layer_output() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 64, generator=g) * 0.02
    w[:, 3] *= 8  # a few large weights stretch their group's range
    x = torch.randn(512, 64, generator=g)
    ratios = search_clip(w, x, GRID)
    assert ratios.shape == (32, 2) and bool((ratios <= 1).all()) and bool((ratios >= 0.5).all())
    err = lambda q: float((x @ (w - q).t()).pow(2).mean())  # noqa: E731
    assert err(rtn(w, GRID, clip=ratios).weight) < err(rtn(w, GRID).weight)


def test_awq_plugin_checkpoint_reloads_with_zero_points(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from quantmatch.sdk.calibration import CalibrationSpec
    from quantmatch.sdk.pipeline import QuantizeError, load_artifact, quantize

    res = quantize(tiny_llama_dir, "awq", "w4a16-g32-asym", tmp_path / "out",
                   calibration=CalibrationSpec(samples=4, seq_len=32))
    assert res.manifest.details["awq"]["n_grid"] == 20
    assert load_artifact(res.artifact, "float32").model is not None
    with pytest.raises(QuantizeError, match="does not produce symmetric weights"):
        quantize(tiny_llama_dir, "awq", "w4a16-g32", tmp_path / "sym")


# ---- the real model -------------------------------------------------------------------------------
@pytest.mark.slow
def test_awq_beats_rtn_on_smollm2() -> None:
    """W4 g64 asymmetric, 16 x 256 calibration tokens (8 score the candidates), 4096 WikiText tokens."""
    model, tok = real_model()
    grid = IntGrid(4, 64, False)
    rtn_ppl = real_ppl(quantize_all_rtn(model, grid), tok)
    awq_model(model, real_samples(tok, 16, 256), lambda n: None if n == "lm_head" else grid,
              AWQConfig(search_samples=8))
    assert real_ppl(model, tok) < rtn_ppl
