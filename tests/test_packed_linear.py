"""Weight-only int4/int8 layers on PyTorch's packed CPU kernels (plugins/backends/packed_linear.py).

Tolerances: with float32 activations the kernels compute the checkpoint's weights exactly and differ
from ``x @ W^T`` only by float32 summation order (1e-5 of the output's scale); with bfloat16
activations (the default: the only vectorized x86 path) activations, scales and outputs are rounded to
bfloat16, 8 mantissa bits: within 1e-2 of the output's scale per layer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from calibrated_support import one_thread, outlier_llama  # noqa: F401  (fixture)

from quantmatch.plugins.backends.packed_linear import (
    Int4PackedLinear,
    Int8PackedLinear,
    PackResult,
    int4_group_size,
    pack_weight_only,
)

pytestmark = pytest.mark.usefixtures("one_thread")

EXACT = 1e-5
BF16 = 1e-2
TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun. " * 3


def _grid(n: int, k: int, group: int, bits: int, symmetric: bool,
          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Random codes on our grid (signed, ``w = (q - z) * s``) and their dequantized weight."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    groups = k // (group or k)
    codes = torch.randint(lo, hi + 1, (n, k), generator=g, dtype=torch.int8)
    scale = torch.rand(n, groups, generator=g) * 0.05 + 0.01
    zp = None if symmetric else torch.randint(lo, hi + 1, (n, groups), generator=g, dtype=torch.int32)
    z = 0.0 if zp is None else zp.double().repeat_interleave(k // groups, 1)
    weight = (codes.double() - z) * scale.double().repeat_interleave(k // groups, 1)
    return codes, scale, zp, weight


def _check(layer: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, tol: float) -> None:
    x = torch.randn(2, 3, weight.shape[1], generator=torch.Generator().manual_seed(1))
    ref = x.double() @ weight.T + (0.0 if bias is None else bias.double())
    y = layer(x)
    assert y.shape == (2, 3, weight.shape[0]) and y.dtype == torch.float32
    err = float((y.double() - ref).abs().max() / ref.abs().max())
    assert err < tol, err


INT4_CASES = [  # (label, k, group, bits, symmetric, kernel group)
    ("g32-sym", 256, 32, 4, True, 32),
    ("g32-asym", 256, 32, 4, False, 32),
    ("g64-sym", 256, 64, 4, True, 64),
    ("g64-asym", 256, 64, 4, False, 64),
    ("g128-sym", 256, 128, 4, True, 128),
    ("g128-asym", 256, 128, 4, False, 128),
    ("channel-sym", 192, 0, 4, True, 64),  # one group of 192 = three kernel groups of 64
    ("channel-asym", 512, 0, 4, False, 256),
    ("g512-sym", 1024, 512, 4, True, 256),  # a multiple of a supported size
    ("int3-g64-asym", 256, 64, 3, False, 64),  # narrower codes fit the nibbles unchanged
    ("int2-g32-sym", 256, 32, 2, True, 32),
]


@pytest.mark.parametrize(("label", "k", "group", "bits", "symmetric", "kernel_group"), INT4_CASES,
                         ids=[c[0] for c in INT4_CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_int4_layer_computes_the_dequantized_weight(label: str, k: int, group: int, bits: int, symmetric: bool,
                                                    kernel_group: int, dtype: torch.dtype) -> None:
    codes, scale, zp, weight = _grid(48, k, group, bits, symmetric)
    bias = torch.randn(48)
    layer = Int4PackedLinear(codes, scale, zp, bias, dtype=dtype)
    assert layer.group_size == kernel_group and layer.weight_int4.dtype == torch.uint8
    assert layer.weight_int4.shape == (48, k // 2) and layer.scale_and_zero.shape == (k // kernel_group, 48, 2)
    _check(layer, weight, bias, EXACT if dtype == torch.float32 else BF16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_int8_layer_computes_the_dequantized_weight(dtype: torch.dtype) -> None:
    codes, scale, _, weight = _grid(40, 96, 0, 8, True)
    layer = Int8PackedLinear(codes, scale, dtype=dtype)
    assert layer.weight_int8.dtype == torch.int8 and layer.scale.shape == (40,)
    _check(layer, weight, None, EXACT if dtype == torch.float32 else BF16)


def test_bfloat16_inputs_stay_bfloat16() -> None:
    codes, scale, _, _ = _grid(16, 64, 32, 4, True)
    assert Int4PackedLinear(codes, scale)(torch.randn(1, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_kernel_limits_are_refused() -> None:
    assert int4_group_size(576, 576) == 64 and int4_group_size(96, 96) == 32
    assert int4_group_size(256, 16) is None and int4_group_size(80, 80) is None
    codes, scale, _, _ = _grid(24, 64, 32, 4, True)
    with pytest.raises(ValueError, match="multiple of 16"):
        Int4PackedLinear(codes, scale)
    codes, scale, _, _ = _grid(32, 64, 16, 4, True)
    with pytest.raises(ValueError, match="multiple of 32"):
        Int4PackedLinear(codes, scale)
    codes, scale, _, _ = _grid(16, 64, 32, 8, True)
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        Int4PackedLinear(codes, scale)
    codes, scale, _, _ = _grid(16, 40, 0, 8, True)
    with pytest.raises(ValueError, match="multiple of 16"):
        Int8PackedLinear(codes, scale)
    Int8PackedLinear(codes, scale, dtype=torch.float32)  # the float32 kernel takes any K


# ---- pack_weight_only on models -------------------------------------------------------------------

def _attached(grid: Any, tmp_path: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """outlier_llama with every linear but the head on ``grid`` (compressed-tensors attached, decompressed
    in place); saved as a checkpoint under ``tmp_path`` when given."""
    from quantmatch.plugins.methods.algorithms.export import attach, round_scales, save_compressed
    from quantmatch.plugins.methods.algorithms.rtn import rtn

    model = outlier_llama(kv_heads=2)
    weights = round_scales({n: rtn(m.weight, grid) for n, m in model.named_modules()
                            if isinstance(m, torch.nn.Linear) and n != "lm_head"}, torch.float32)
    attach(model, weights, None, None)
    if tmp_path is not None:
        save_compressed(model, tmp_path, dtype=torch.float32)
    return model, weights


def test_in_memory_model_packs_from_its_compressed_tensors_state() -> None:
    from quantmatch.plugins.methods.algorithms.rtn import IntGrid

    model, weights = _attached(IntGrid(4, 32, False))
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    result = pack_weight_only(model, dtype=torch.float32)
    assert set(result.packed) == set(weights) and set(result.packed.values()) == {"int4 g32"} and not result.left
    assert "lm_head" not in result.packed and not hasattr(model, "ct_decompress_hook")
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("bits", "group", "symmetric", "why"), [
    (4, 16, True, "group size 16 is not a multiple of 32"),
    (8, 32, True, "grouped int8"),
    (8, 0, False, "asymmetric int8"),
])
def test_grids_the_kernels_cannot_hold_stay_float(bits: int, group: int, symmetric: bool, why: str) -> None:
    from quantmatch.plugins.methods.algorithms.rtn import IntGrid

    model, weights = _attached(IntGrid(bits, group, symmetric))
    result = pack_weight_only(model)
    assert not result.packed and set(result.left) == set(weights) and result.note() == ""
    assert all(why in v for v in result.left.values())


def test_packing_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantmatch.plugins.methods.algorithms.rtn import IntGrid

    monkeypatch.setenv("QUANTMATCH_PACKED_KERNELS", "0")
    model, _ = _attached(IntGrid(4, 32, True))
    assert pack_weight_only(model) == PackResult()


def test_note_names_kernels_groups_and_leftovers() -> None:
    r = PackResult({"a": "int4 g64", "b": "int4 g32", "c": "int8"}, {"d": "why"})
    assert r.note() == (" + int4 packed (_weight_int4pack_mm_for_cpu, g32/g64, bf16 activations)"
                        " + int8 packed (_weight_int8pack_mm, bf16 activations); 1 weight-only layers decompressed")


def test_checkpoint_codes_that_do_not_match_the_loaded_weight_are_not_packed(tmp_path: Path) -> None:
    """An asymmetric checkpoint loads dequantized (no compressed-tensors state): the codes come from the
    safetensors, and only when they reproduce the weight transformers loaded."""
    from transformers import AutoModelForCausalLM

    from quantmatch.plugins.methods.algorithms.rtn import IntGrid

    _attached(IntGrid(4, 64, False), tmp_path)
    model: Any = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
    model.eval()
    assert not hasattr(model.model.layers[0].self_attn.q_proj, "quantization_scheme")
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.mul_(2.0)
    result = pack_weight_only(model)
    assert "do not reproduce" in result.left["model.layers.0.self_attn.q_proj"]
    assert len(result.packed) == 2 * 7 - 1 and set(result.packed.values()) == {"int4 g64"}


# ---- the torch runner --------------------------------------------------------------------------------

def _load(path: Path, packed: bool) -> Any:
    from quantmatch.sdk.pluginhost import get_host

    before = os.environ.pop("QUANTMATCH_PACKED_KERNELS", None)
    if not packed:
        os.environ["QUANTMATCH_PACKED_KERNELS"] = "0"
    try:
        r = get_host().runner("torch", 1)
        r.load(path)
    finally:
        os.environ.pop("QUANTMATCH_PACKED_KERNELS", None)
        if before is not None:
            os.environ["QUANTMATCH_PACKED_KERNELS"] = before
    return r


def _float_bytes_saved(model: torch.nn.Module) -> int:
    """float32 weight bytes minus packed bytes, over the packed layers of ``model``."""
    saved = 0
    for m in model.modules():
        if isinstance(m, Int4PackedLinear):
            saved += 4 * m.out_features * m.in_features - m.weight_int4.numel() - 2 * m.scale_and_zero.numel()
        elif isinstance(m, Int8PackedLinear):
            saved += 4 * m.out_features * m.in_features - m.weight_int8.numel() - 2 * m.scale.numel()
    return saved


@pytest.mark.parametrize(("method", "scheme", "kernel", "cls"), [
    ("rtn", "w4a16-g32", "_weight_int4pack_mm_for_cpu, g32", Int4PackedLinear),
    ("gptq", "w4a16-g32", "_weight_int4pack_mm_for_cpu, g32", Int4PackedLinear),
    ("rtn", "w4a16-g64-asym", "_weight_int4pack_mm_for_cpu, g64", Int4PackedLinear),
    ("rtn", "w8a16", "_weight_int8pack_mm", Int8PackedLinear),
])
def test_torch_runner_runs_weight_only_checkpoints_on_packed_kernels(method: str, scheme: str, kernel: str, cls: type,
                                                                     tiny_llama_dir: Path, tmp_path: Path) -> None:
    from quantmatch.sdk.calibration import CalibrationSpec
    from quantmatch.sdk.pipeline import quantize

    out = tmp_path / f"{method}-{scheme}"
    quantize(tiny_llama_dir, method, scheme, out, calibration=CalibrationSpec(samples=2, seq_len=32))
    packed, plain = _load(out, True), _load(out, False)
    assert kernel in packed.compute and "bf16 activations" in packed.compute and "packed" not in plain.compute
    assert len([m for m in packed.model.modules() if isinstance(m, cls)]) == 2 * 7
    assert not hasattr(packed.model, "ct_decompress_hook")
    ids = packed.tokenize(TEXT)
    a, b = packed.logits(ids), plain.logits(ids)
    assert a.dtype == np.float32 and np.abs(a - b).max() < BF16 * np.abs(b).max()
    assert len(packed.prefill([ids[:8]])) == 1 and len(packed.step([ids[8]])) == 1 and packed.cached_tokens() == 9
    saved = _float_bytes_saved(packed.model)
    assert saved > 0 and packed.weight_bytes_per_token() == plain.weight_bytes_per_token() - saved
    packed.close()
    plain.close()
