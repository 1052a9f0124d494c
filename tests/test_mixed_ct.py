"""Mixed-precision compressed-tensors recipes (plugins/methods/_mixed_ct.py): per-layer schemes in one checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressed_tensors")

from quantmatch.plugins.methods._compressed import load_compressed  # noqa: E402
from quantmatch.plugins.methods._mixed_ct import MixedRecipeError, decompressed_state, fused_conflicts  # noqa: E402
from quantmatch.plugins.methods.rtn import RTNQuantizer  # noqa: E402
from quantmatch.sdk.quantizer import UnitVariant  # noqa: E402

MLP = [f"model.layers.{i}.mlp.{p}" for i in range(2) for p in ("gate_proj", "up_proj", "down_proj")]
ATTN = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]

# (mlp scheme, attention scheme, modules kept float, expected overall format)
RECIPES = {
    "int4-sym+w8a8": ("w4a16-g32", "w8a8-int8", (), "mixed-precision"),
    "int4-asym+w8a16+float": ("w4a16-g32-asym", "w8a16", ("model.layers.1.mlp.down_proj",), "pack-quantized"),
}


def _assignments(mlp: str, attn: str, floats: tuple[str, ...]) -> dict[str, str]:
    return {**{m: mlp for m in MLP}, **{a: attn for a in ATTN}, **{f: "fp16" for f in floats}}


@pytest.fixture(scope="module", params=list(RECIPES))
def mixed(request: pytest.FixtureRequest, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    mlp, attn, floats, fmt = RECIPES[request.param]
    q = RTNQuantizer()
    assignments = _assignments(mlp, attn, floats)
    out = tmp_path_factory.mktemp("mixed") / "ckpt"
    art = q.quantize_mixed(str(tiny_llama_dir), assignments, out, threads=1)
    variants = {(v.unit, v.scheme): v for v in q.unit_variants(str(tiny_llama_dir), [mlp, attn, "fp16"], threads=1)}
    return {"assignments": assignments, "out": out, "art": art, "variants": variants, "mlp": mlp, "attn": attn,
            "floats": floats, "format": fmt}


def _weight_bytes(out: Path, modules: list[str]) -> int:
    from safetensors.torch import load_file

    state = load_file(str(out / "model.safetensors"))
    return sum(t.numel() * t.element_size() for k, t in state.items()
               if any(k.startswith(m + ".") for m in modules))


def test_config_groups_target_the_assigned_modules(mixed: Any) -> None:
    qc = json.loads((mixed["out"] / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == mixed["format"]
    floats = list(mixed["floats"])
    assert sorted(qc["ignore"]) == sorted(["lm_head", *floats])
    groups = {frozenset(g["targets"]): g for g in qc["config_groups"].values()}
    assert len(groups) == 2
    mlp = groups[frozenset(m for m in MLP if m not in floats)]
    attn = groups[frozenset(ATTN)]
    assert (mlp["weights"]["num_bits"], mlp["weights"]["group_size"], mlp["weights"]["strategy"]) == (4, 32, "group")
    assert mlp["weights"]["symmetric"] == (not mixed["mlp"].endswith("asym")) and mlp["format"] == "pack-quantized"
    assert (attn["weights"]["num_bits"], attn["weights"]["strategy"]) == (8, "channel")
    if mixed["attn"] == "w8a8-int8":
        assert attn["format"] == "int-quantized"
        assert attn["input_activations"]["dynamic"] is True and attn["input_activations"]["strategy"] == "token"
    else:
        assert attn["format"] == "pack-quantized" and attn["input_activations"] is None
    assert mixed["art"].quantized_layers == len(MLP) + len(ATTN) - len(floats)


def test_safetensors_hold_packed_int4_and_int8_codes(mixed: Any) -> None:
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors.torch import load_file

    state = load_file(str(mixed["out"] / "model.safetensors"))
    down = "model.layers.0.mlp.down_proj"  # [64, 128]: 8 int4 codes per int32
    packed = state[f"{down}.weight_packed"]
    assert packed.dtype == torch.int32 and tuple(packed.shape) == (64, 16)
    codes = unpack_from_int32(packed, 4, (64, 128))
    assert int(codes.min()) >= -8 and int(codes.max()) <= 7 and len(torch.unique(codes)) > 8
    q = "model.layers.0.self_attn.q_proj"  # [64, 64]
    if mixed["attn"] == "w8a8-int8":
        assert state[f"{q}.weight"].dtype == torch.int8 and tuple(state[f"{q}.weight"].shape) == (64, 64)
        c8 = state[f"{q}.weight"]
    else:
        assert tuple(state[f"{q}.weight_packed"].shape) == (64, 16)  # 4 int8 codes per int32
        c8 = unpack_from_int32(state[f"{q}.weight_packed"], 8, (64, 64))
    assert int(c8.abs().max()) > 100  # the per-channel absmax reaches the edge of the int8 grid
    for f in mixed["floats"]:
        assert state[f"{f}.weight"].dtype == torch.float16 and f"{f}.weight_scale" not in state


def test_weight_bytes_equal_the_variants_nbytes(mixed: Any) -> None:
    chosen = [mixed["variants"][(u, s)] for u, s in mixed["assignments"].items()]
    assert _weight_bytes(mixed["out"], list(mixed["assignments"])) == sum(v.nbytes for v in chosen)
    by = {(v.unit, v.scheme): v.nbytes for v in chosen}
    # hand-computed: down_proj [64, 128] int4 g32: packed 64 x 16 int32 + scales 64 x 4 fp16 + weight_shape 2 x int64,
    # asym adds zero points packed along the output dim: 8 x 4 int32
    asym = 8 * 4 * 4 if mixed["mlp"].endswith("asym") else 0
    assert by[("model.layers.0.mlp.down_proj", mixed["mlp"])] == 64 * 16 * 4 + 64 * 4 * 2 + 16 + asym
    # q_proj [64, 64] int8 per channel: int8 codes (int-quantized) or 64 x 16 int32 (packed), scales 64 x 1 fp16
    q_bytes = 64 * 64 + 64 * 2 if mixed["attn"] == "w8a8-int8" else 64 * 16 * 4 + 64 * 2 + 16
    assert by[("model.layers.0.self_attn.q_proj", mixed["attn"])] == q_bytes
    assert mixed["variants"][("model.layers.0.mlp.down_proj", "fp16")].nbytes == 64 * 128 * 2


def test_variant_weights_equal_the_checkpoints_decompression(mixed: Any) -> None:
    state = decompressed_state(mixed["out"])
    for unit, scheme in mixed["assignments"].items():
        v = mixed["variants"][(unit, scheme)]
        assert isinstance(v, UnitVariant) and v.hf_name == f"{unit}.weight" and v.weight.dtype == np.float32
        stored = state[f"{unit}.weight"].float().numpy()
        np.testing.assert_array_equal(v.weight, stored, err_msg=f"{unit} {scheme}")


def test_loaded_checkpoint_is_close_to_the_float_model(mixed: Any, tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()
    model, _ = load_compressed(mixed["out"], "float32")
    ids = torch.randint(3, 320, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref(ids).logits.float()
        got = model(ids).logits.float()
        # the float model with every assigned weight replaced by its variant: the checkpoint up to activations
        for unit, scheme in mixed["assignments"].items():
            ref.get_submodule(unit).weight.copy_(torch.from_numpy(mixed["variants"][(unit, scheme)].weight))
        sim = ref(ids).logits.float()
    err = (got - want).abs().max() / want.abs().max()
    assert 0 < err < 0.1, err
    tol = 0.02 if mixed["attn"] == "w8a8-int8" else 1e-3  # int8 per-token activations run in the loaded model only
    assert ((got - sim).abs().max() / want.abs().max()) < tol


def test_unit_variants_skip_groups_that_do_not_divide(tiny_llama_dir: Path) -> None:
    got = {(v.unit, v.scheme) for v in RTNQuantizer().unit_variants(str(tiny_llama_dir), ["w4a16-g128"])}
    assert got == {(f"model.layers.{i}.mlp.down_proj", "w4a16-g128") for i in range(2)}  # in_features 128; others 64


@pytest.mark.parametrize(("assignments", "options", "needle"), [
    ({"model.layers.0.mlp.down_prj": "w4a16-g32"}, {}, "did you mean model.layers.0.mlp.down_proj"),
    ({"model.layers.0.mlp.down_proj": "w8a8-int8-static"}, {}, "static activation"),
    ({"model.layers.0.mlp.down_proj": "w4a16-nvfp4"}, {}, "does not write it"),
    ({"model.layers.0.mlp.gate_proj": "w8a16", "model.layers.0.mlp.up_proj": "w4a16-g32"}, {}, "gate_proj=w8a16"),
    ({"model.layers.0.self_attn.o_proj": "w4a16-g128"}, {}, "group size does not divide"),
    ({"model.layers.0.mlp.down_proj": "w4a16-g32", "model.layers.1.mlp.down_proj": "w4a16-g32-bf16"}, {},
     "dtype=float16"),
])
def test_bad_recipes_are_refused_with_the_fix(assignments: dict[str, str], options: dict[str, Any], needle: str,
                                              tiny_llama_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MixedRecipeError, match=needle.replace("(", r"\(")):
        RTNQuantizer().quantize_mixed(str(tiny_llama_dir), assignments, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_split_fused_layers_pass_without_the_check_and_with_globs(tiny_llama_dir: Path, tmp_path: Path) -> None:
    recipe = {"model.layers.0.mlp.gate_proj": "w8a16", "*.mlp.*": "w4a16-g32"}
    art = RTNQuantizer().quantize_mixed(str(tiny_llama_dir), recipe, tmp_path / "out", fused_check=False,
                                        base_scheme="w8a16", threads=1)
    assert art.details["recipe"] == {"w4a16-g32": 5, "w8a16": 9}
    assert fused_conflicts(art.details["assignments"]) == ["model.layers.0.mlp: gate_proj=w8a16, up_proj=w4a16-g32"]
    model, _ = load_compressed(tmp_path / "out", "float32")
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, 320)
