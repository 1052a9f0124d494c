"""SmoothQuant W8A8 (quantmatch.plugins.methods.algorithms.smoothquant) and its int8 execution (int8_runtime)."""

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
    real_model,
    real_ppl,
    real_samples,
    token_batch,
)

from quantmatch.plugins.backends.int8_runtime import (
    KERNELS,
    Int8Linear,
    convert_to_int8,
    fastest_int8_kernel,
    int8_layers,
)
from quantmatch.plugins.methods.algorithms.blockwise import capture_block_inputs, decoder_blocks, run_block
from quantmatch.plugins.methods.algorithms.export import attach
from quantmatch.plugins.methods.algorithms.rtn import (
    fake_quantize_per_token,
    fake_quantize_static,
    static_activation_scale,
)
from quantmatch.plugins.methods.algorithms.smoothquant import SmoothQuantConfig, smooth_block, smoothquant_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _w8a8(model: torch.nn.Module, calib: torch.Tensor, config: SmoothQuantConfig) -> torch.nn.Module:
    """A copy of ``model`` quantized to W8A8 and attached as a compressed-tensors model (fake quant)."""
    q = copy.deepcopy(model)
    res = smoothquant_model(q, calib, lambda n: n != "lm_head", config, batch_size=8)
    attach(q, res.weights, "static" if config.static else "dynamic", res.input_scales)
    return q


def test_smoothing_leaves_the_block_function_unchanged() -> None:
    model = outlier_llama()
    batches = capture_block_inputs(model, token_batch(4, 16, 1))
    block = decoder_blocks(model)[0]
    before = run_block(block, batches)[0].hidden
    scales, alphas = smooth_block(block, batches, SmoothQuantConfig(static=True))
    assert set(scales) == set(alphas) == {"input_layernorm", "self_attn.v_proj", "post_attention_layernorm",
                                          "mlp.up_proj"}
    assert all(a in SmoothQuantConfig.alphas for a in alphas.values())
    torch.testing.assert_close(run_block(block, batches)[0].hidden, before, rtol=1e-4, atol=1e-5)


def test_smoothing_flattens_the_outlier_channels() -> None:
    model = outlier_llama()
    batches = capture_block_inputs(model, token_batch(4, 16, 1))
    block = decoder_blocks(model)[0]
    spread = []
    for _ in range(2):
        seen: list[torch.Tensor] = []
        h = block.self_attn.q_proj.register_forward_pre_hook(lambda m, a, s=seen: s.append(a[0].abs().amax((0, 1))))
        run_block(block, batches)
        h.remove()
        m = torch.stack(seen).amax(0)
        spread.append(float(m.max() / m.median()))
        smooth_block(block, batches, SmoothQuantConfig(alpha=0.5))
    assert spread[1] < spread[0] / 3


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_smoothquant_beats_naive_w8a8_with_outlier_channels(static: bool) -> None:
    model = outlier_llama()
    calib, test = token_batch(16, 32, 1), token_batch(4, 32, 2)
    ref = logits(model, test)
    smooth = _w8a8(model, calib, SmoothQuantConfig(alpha=0.5, static=static))
    naive = _w8a8(model, calib, SmoothQuantConfig(smooth=False, static=static))
    assert logits_mse(smooth, ref, test) < 0.5 * logits_mse(naive, ref, test)


def test_static_scales_cover_the_calibration_range() -> None:
    model = outlier_llama()
    res = smoothquant_model(copy.deepcopy(model), token_batch(8, 16, 1), lambda n: n != "lm_head",
                            SmoothQuantConfig(static=True))
    # down_proj (the SwiGLU product) keeps per-token activations by default: 2 blocks x 6 static layers
    assert len(res.input_scales) == 12 and all(float(s) > 0 for s in res.input_scales.values())
    assert not any("down_proj" in n for n in res.input_scales) and len(res.weights) == 14
    assert all(w.grid.bits == 8 and w.zero_point is None and w.scale.shape[1] == 1 for w in res.weights.values())
    every = smoothquant_model(copy.deepcopy(model), token_batch(8, 16, 1), lambda n: n != "lm_head",
                              SmoothQuantConfig(static=True, dynamic_layers=()))
    assert len(every.input_scales) == 14


# ---- int8 execution --------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", KERNELS)
def test_integer_kernels_are_exact_over_the_full_int8_range(kernel: str) -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-128, 128, (96, 160), generator=g, dtype=torch.int8)
    codes[:4] = 127
    codes[4:8] = -128
    layer = Int8Linear(codes, torch.ones(96), input_scale=torch.tensor(1.0), kernel=kernel)
    x = torch.randint(-128, 128, (33, 160), generator=g).float()
    x[:3] = 127
    x[3:6] = -128
    expected = (x.double() @ codes.double().t()).float()
    assert torch.equal(layer(x), expected) and layer.kernel == kernel
    if kernel == "ort":
        assert layer.onnx_ops == ("MatMulInteger",)
        assert [i.type for i in layer._session.get_inputs()] == ["tensor(uint8)"]


def test_the_fastest_kernel_is_chosen_once_and_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    fastest_int8_kernel.cache_clear()
    monkeypatch.setenv("QUANTMATCH_INT8_KERNEL", "ort")
    assert fastest_int8_kernel(1) == "ort"
    assert Int8Linear(torch.ones(4, 8, dtype=torch.int8), torch.ones(4), threads=1).kernel == "ort"
    fastest_int8_kernel.cache_clear()
    monkeypatch.delenv("QUANTMATCH_INT8_KERNEL")
    assert fastest_int8_kernel(1) in KERNELS
    fastest_int8_kernel.cache_clear()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("static", [True, False], ids=["static", "per-token"])
def test_int8_linear_matches_fake_quantization(static: bool, kernel: str) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(48, 64, generator=g) * 0.05
    scale = w.abs().amax(1) / 127.5
    codes = torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8)
    x = torch.randn(3, 7, 64, generator=g)
    x_scale = static_activation_scale(x.abs().max() * 0.8)
    layer = Int8Linear(codes, scale, torch.randn(48, generator=g), x_scale if static else None, kernel=kernel)
    xq = fake_quantize_static(x, x_scale) if static else fake_quantize_per_token(x)
    expected = xq @ (codes.float() * scale[:, None]).t() + layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_int8_runtime_model_matches_the_fake_quantized_model(static: bool) -> None:
    model = outlier_llama()
    q = _w8a8(model, token_batch(8, 32, 1), SmoothQuantConfig(static=static))
    test = token_batch(2, 32, 2)
    ref = logits(q, test)
    assert len(int8_layers(q)) == 14
    assert convert_to_int8(q) == 14 and int8_layers(q) == []
    out = logits(q, test)
    # rounding decisions may flip where float paths differ by one ulp; the results stay close
    assert float((out - ref).abs().max()) < 0.02 * float(ref.abs().max())
    loss = lambda lg: float(torch.nn.functional.cross_entropy(lg[:, :-1].flatten(0, 1), test[:, 1:].flatten()))  # noqa: E731
    assert abs(loss(out) - loss(ref)) < 1e-3


def test_int8_runtime_runs_a_reloaded_checkpoint(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from quantmatch.sdk.calibration import CalibrationSpec
    from quantmatch.sdk.pipeline import load_artifact, quantize

    res = quantize(tiny_llama_dir, "smoothquant", "w8a8-int8-static", tmp_path / "sq",
                   calibration=CalibrationSpec(samples=4, seq_len=32), dtype="float32")
    ids = token_batch(1, 24, 3) % 300
    fake = load_artifact(res.artifact, "float32").model
    real = load_artifact(res.artifact, "float32").model
    assert convert_to_int8(real) == 14
    a, b = logits(fake, ids), logits(real, ids)
    assert float((a - b).abs().max()) < 0.02 * float(a.abs().max())


# ---- the real model -------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoothquant_static_w8a8_on_smollm2() -> None:
    """Static W8A8 (per-tensor; down_proj per-token) with 16 x 256 calibration tokens: within 3% of fp32
    and far below naive W8A8. The benchmark's 128 x 512 calibration gives +1.7% (goal: 2%; docs/benchmarks.md)."""
    model, tok = real_model()
    fp = real_ppl(model, tok)
    samples = real_samples(tok, 16, 256)
    smooth = _w8a8(model, samples, SmoothQuantConfig(static=True))
    naive = _w8a8(model, samples, SmoothQuantConfig(smooth=False, static=True))
    sq, nv = real_ppl(smooth, tok), real_ppl(naive, tok)
    assert sq < fp * 1.03 and sq < fp + 0.5 * (nv - fp), (fp, sq, nv)
