"""GPTQ (quantmatch.plugins.methods.algorithms.gptq): layer solve, blockwise calibration, the plugin, the real model."""

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

from quantmatch.plugins.methods.algorithms.blockwise import capture_block_inputs, decoder_blocks
from quantmatch.plugins.methods.algorithms.gptq import (
    GPTQConfig,
    Hessian,
    gptq_model,
    gptq_quantize,
    output_error,
    sequential_stages,
)
from quantmatch.plugins.methods.algorithms.rtn import IntGrid, rtn

pytestmark = pytest.mark.usefixtures("one_thread")


def _layer_problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated inputs with one outlier feature, and a random weight."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 128, generator=g) @ torch.randn(128, 128, generator=g) * 0.2
    x[:, 5] *= 15
    w = torch.randn(48, 128, generator=g) * 0.05
    h = Hessian(128)
    h.add(x)
    return w, h.matrix


GRIDS = [IntGrid(4, 32, True), IntGrid(4, 32, False), IntGrid(3, 64, True), IntGrid(4, 0, True),
         IntGrid(2, 32, False), IntGrid(8, 0, True)]


@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("act_order", [False, True], ids=["natural", "act-order"])
def test_gptq_layer_error_beats_rtn_on_the_same_grid(grid: IntGrid, act_order: bool) -> None:
    w, h = _layer_problem()
    q = gptq_quantize(w, h, grid, GPTQConfig(act_order=act_order))
    assert output_error(w, q.weight, h) < 0.6 * output_error(w, rtn(w, grid).weight, h)


@pytest.mark.parametrize("act_order", [False, True], ids=["natural", "act-order"])
def test_gptq_weights_are_on_contiguous_group_grids(act_order: bool) -> None:
    w, h = _layer_problem(1)
    grid = IntGrid(3, 32, False)
    q = gptq_quantize(w, h, grid, GPTQConfig(act_order=act_order))
    codes = q.codes().float()
    assert codes.min() >= grid.qmin and codes.max() <= grid.qmax
    assert q.scale.shape == (48, 4) and q.zero_point is not None and q.zero_point.shape == (48, 4)
    # every weight is (code - zero) * scale of its own contiguous group of 32 columns: no column index
    rebuilt = (codes - q.zero_point.repeat_interleave(32, dim=1)) * q.scale.repeat_interleave(32, dim=1)
    torch.testing.assert_close(rebuilt, q.weight, rtol=0, atol=1e-6)


def _shifted_texts(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A weight, a calibration Hessian and an evaluation Hessian whose inputs share per-channel scales
    and part of their correlations, like two text domains seen by one layer."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(128, generator=g) * 2 + 0.1
    shared = torch.randn(128, 128, generator=g)
    hessians = []
    for rows in (512, 4096):
        mix = shared + 0.7 * torch.randn(128, 128, generator=g)
        h = Hessian(128)
        h.add((torch.randn(rows, 128, generator=g) @ mix) * scale)
        hessians.append(h.matrix)
    return torch.randn(48, 128, generator=g) * 0.05, hessians[0], hessians[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shrinkage_trades_calibration_fit_for_transfer_to_another_text(seed: int) -> None:
    w, h_cal, h_eval = _shifted_texts(seed)
    grid = IntGrid(4, 32, True)
    textbook = gptq_quantize(w, h_cal, grid, GPTQConfig(shrink=0.0)).weight
    shrunk = gptq_quantize(w, h_cal, grid, GPTQConfig(shrink=0.5)).weight
    # textbook GPTQ fits the calibration text best but loses to round-to-nearest on the other text
    assert output_error(w, textbook, h_cal) < output_error(w, shrunk, h_cal)
    assert output_error(w, textbook, h_eval) > output_error(w, rtn(w, grid).weight, h_eval)
    assert output_error(w, shrunk, h_eval) < output_error(w, rtn(w, grid).weight, h_eval)


def test_shrink_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        GPTQConfig(shrink=1.5)


def test_hessian_is_a_running_average_over_batches() -> None:
    x = torch.randn(300, 16)
    h = Hessian(16)
    for chunk in x.split(70):
        h.add(chunk)
    torch.testing.assert_close(h.matrix, 2 * x.t() @ x / 300, rtol=1e-5, atol=1e-5)


def test_dead_inputs_and_dampening_keep_the_solve_finite() -> None:
    w, h = _layer_problem()
    h = h.clone()
    h[:, 7] = 0
    h[7, :] = 0  # an input channel that is always zero
    q = gptq_quantize(w, h, IntGrid(4, 32, True))
    assert torch.isfinite(q.weight).all() and bool((q.weight[:, 7] == 0).all())


def test_true_sequential_stages_follow_the_block() -> None:
    model = outlier_llama(kv_heads=2)
    batches = capture_block_inputs(model, token_batch(4, 16, 1), batch_size=2)
    assert len(batches) == 2 and batches[0].hidden.shape == (2, 16, 64)
    block = decoder_blocks(model)[0]
    names = [n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]
    assert sequential_stages(block, batches[0], names) == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]


@pytest.mark.parametrize("true_sequential", [True, False])
def test_gptq_model_beats_rtn_and_is_deterministic(true_sequential: bool) -> None:
    model = outlier_llama()
    calib, test = token_batch(64, 32, 1), token_batch(4, 32, 2)
    ref = logits(model, test)
    grid = IntGrid(4, 32, True)
    config = GPTQConfig(true_sequential=true_sequential)
    seen: list[tuple[str, int, int]] = []
    q1 = copy.deepcopy(model)
    result = gptq_model(q1, calib, lambda n: grid, config, batch_size=16, progress=lambda *a: seen.append(a))
    assert seen == [("quantize", 1, 2), ("quantize", 2, 2)]
    assert len(result) == 14 and "lm_head" not in result
    assert logits_mse(q1, ref, test) < 0.6 * logits_mse(quantize_all_rtn(model, grid), ref, test)
    q2 = copy.deepcopy(model)
    gptq_model(q2, calib, lambda n: grid, config, batch_size=16)
    assert all(torch.equal(a, b) for a, b in zip(q1.state_dict().values(), q2.state_dict().values()))


def test_grid_function_can_leave_layers_in_float() -> None:
    model = outlier_llama()
    before = model.model.layers[0].mlp.down_proj.weight.clone()
    result = gptq_model(model, token_batch(4, 16, 1), lambda n: None if "down_proj" in n else IntGrid(4, 32, True))
    assert not any("down_proj" in n for n in result)
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, before)


def test_gptq_plugin_writes_a_checkpoint_and_refuses_group_128(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from quantmatch.sdk.calibration import CalibrationSpec
    from quantmatch.sdk.pipeline import QuantizeError, load_artifact, quantize

    cal = CalibrationSpec(samples=4, seq_len=32)
    res = quantize(tiny_llama_dir, "gptq", "w4a16-g32", tmp_path / "out", calibration=cal)
    assert res.manifest.details["quantized_layers"] == 14 and res.manifest.details["gptq"]["act_order"] is True
    assert res.manifest.details["calibration"]["samples"] == 4
    loaded = load_artifact(res.artifact, "float32")
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and loaded.tokenizer is not None
    with pytest.raises(QuantizeError, match="group size 128 does not divide in_features 64"):
        quantize(tiny_llama_dir, "gptq", "w4a16-g128", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


# ---- the real model -------------------------------------------------------------------------------
@pytest.mark.slow
def test_gptq_beats_rtn_on_smollm2() -> None:
    """W3 g64 (where the gap is large) and W4 g64, 16 x 256 calibration tokens, 4096 WikiText tokens."""
    model, tok = real_model()
    samples = real_samples(tok, 16, 256)
    results = {}
    for bits in (3, 4):
        grid = IntGrid(bits, 64, True)
        rtn_ppl = real_ppl(quantize_all_rtn(model, grid), tok)
        q = copy.deepcopy(model)
        gptq_model(q, samples, lambda n, g=grid: None if n == "lm_head" else g, GPTQConfig(act_order=True))
        results[bits] = (real_ppl(q, tok), rtn_ppl)
    (g3, r3), (g4, r4) = results[3], results[4]
    assert g4 < r4, results
    assert g3 < 0.8 * r3, results
