"""Exact GGUF export of compressed-tensors checkpoints (plugins/methods/gguf_export.py).

The tiny Llama (hidden 64, intermediate 128: every row a multiple of the 32-value block) is quantized
by round-to-nearest; the exported blocks are decoded with ``gguf.quants`` and compared with
compressed-tensors' own unpacking and dequantization, and llama.cpp's logits with torch's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")
pytest.importorskip("compressed_tensors")

from quantmatch.plugins.methods.gguf_convert import _read_model, _write_file, permute_qk  # noqa: E402
from quantmatch.plugins.methods.gguf_export import GGUF_FILE, export_compressed, export_refusals  # noqa: E402
from quantmatch.sdk.errors import InputError  # noqa: E402
from quantmatch.sdk.export import ExportRefused  # noqa: E402
from tests_support import CheckpointTensors  # noqa: E402

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness; the weights scale with the group and the model of one is the model of all. ") * 4


@pytest.fixture(scope="module")
def artifacts(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``artifacts(scheme)``: a round-to-nearest artifact of the tiny Llama (made once per scheme)."""
    from quantmatch.sdk.pipeline import quantize

    root = tmp_path_factory.mktemp("rtn")
    made: dict[str, Path] = {}

    def get(scheme: str) -> Path:
        if scheme not in made:
            made[scheme] = quantize(tiny_llama_dir, "rtn", scheme, root / scheme, threads=1).artifact
        return made[scheme]

    return get


def _checkpoint(model_dir: Path, out: Path, bits: int, group: int, symmetric: bool = True) -> Path:
    """A compressed-tensors checkpoint on any grid (the methods refuse some, e.g. group 16)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantmatch.plugins.methods.algorithms.export import attach, round_scales, save_compressed
    from quantmatch.plugins.methods.algorithms.rtn import IntGrid, rtn

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    grid = IntGrid(bits, group, symmetric)
    with torch.no_grad():
        weights = round_scales({n: rtn(m.weight, grid) for n, m in model.named_modules()
                                if isinstance(m, torch.nn.Linear) and n != "lm_head"}, torch.float16)
        attach(model, weights)
        save_compressed(model, out, AutoTokenizer.from_pretrained(str(model_dir)), dtype=torch.float16)
    return out


def _export(src: Path, out: Path, **kw: Any) -> dict[str, Any]:
    out.mkdir(parents=True)
    details = export_compressed(src, out, **kw)
    assert sorted(p.name for p in out.iterdir()) == [GGUF_FILE]
    json.dumps(details)  # JSON-able, for the manifest
    return details


def _checkpoint_weights(src: Path) -> dict[str, tuple[Any, Any]]:
    """``{module: (w, w16)}``: compressed-tensors' own unpacking and dequantization of every quantized
    layer, with the stored scales in float32 (``w``: what the codes mean) and as stored (``w16``: the
    library's fp16 arithmetic, which rounds ``q * s`` to fp16)."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize

    qc = json.loads((src / "config.json").read_text())["quantization_config"]
    args = QuantizationArgs(**qc["config_groups"]["group_0"]["weights"])
    out = {}
    with CheckpointTensors(src) as f:
        keys = set(f.keys())
        for key in sorted(k for k in keys if k.endswith(".weight_scale")):
            m = key.removesuffix(".weight_scale")
            s = f.get_tensor(key)
            if f"{m}.weight_packed" in keys:
                shape = torch.Size(f.get_tensor(f"{m}.weight_shape").tolist())
                q = unpack_from_int32(f.get_tensor(f"{m}.weight_packed"), args.num_bits, shape)
            else:
                q = f.get_tensor(f"{m}.weight")
            z = f.get_tensor(f"{m}.weight_zero_point") if f"{m}.weight_zero_point" in keys else None
            if z is not None and z.dtype == torch.int32:
                z = unpack_from_int32(z, args.num_bits, torch.Size((q.shape[0], s.shape[1])), packed_dim=0)
            out[m] = (dequantize(q, s.float(), z, args).numpy(), dequantize(q, s, z, args).float().numpy())
    return out


def _gguf_weights(path: Path, src: Path) -> dict[str, tuple[str, Any]]:
    """``{HF module: (GGUF type, weight dequantized by gguf.quants, Q/K rows back in HF order)}``."""
    cfg = json.loads((src / "config.json").read_text())
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    out = {}
    for m in _checkpoint_weights(src):
        t = tensors[names.get_name(f"{m}.weight", try_suffixes=(".weight",))]
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        if m.endswith(("q_proj", "k_proj")):  # undo permute_qk (rows only)
            heads = n_head if m.endswith("q_proj") else n_kv
            w = w.reshape(heads, w.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)
        out[m] = (t.tensor_type.name.lower(), w)
    return out


# ---- exactness -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("scheme", "qtype", "bitwise"), [
    ("w4a16-g32", "q4_0", True), ("w4a16-g64-asym", "q4_1", False), ("w8a16", "q8_0", True),
    ("w3a16-g32", "q4_0", True)])
def test_blocks_hold_the_checkpoint_grid(artifacts: Any, tmp_path: Path, scheme: str, qtype: str,
                                         bitwise: bool) -> None:
    src = artifacts(scheme)
    seen: list[tuple[str, int, int]] = []
    if scheme.startswith("w3"):  # held exactly only in 4-bit nibbles: refused unless asked for, then widened
        with pytest.raises(ExportRefused, match="int3 codes: no legacy GGUF block stores 3-bit codes"):
            export_compressed(src, tmp_path / "refused")
    details = _export(src, tmp_path / "out", progress=lambda *a: seen.append(a),
                      allow_requantize=scheme.startswith("w3"))
    assert details["exported_from"] == str(src) and details["source_format"] == "compressed-tensors"
    assert details["gguf_file"] == GGUF_FILE and details["head"] == "source"
    assert details["source_method"] == "rtn" and details["source_scheme"] == scheme
    # exact: the codes are carried, nothing rounded again (Q4_1's minimum is the one fp16 rounding, recorded)
    assert details["exact"] is True and details["requantized"] == []
    # 14 linear layers; embeddings and the (ignored, untied) head F16; 5 norms F32
    assert details["tensor_types"] == {qtype: 14, "f16": 2, "f32": 5}
    assert seen[-1][0] == "export" and seen[-1][1] == seen[-1][2] == 21
    assert details["widened"] == (sorted(_checkpoint_weights(src)) if scheme.startswith("w3") else [])
    ref = _checkpoint_weights(src)
    got = _gguf_weights(tmp_path / "out" / GGUF_FILE, src)
    for m, (w, w16) in ref.items():
        t, g = got[m]
        assert t == qtype
        if bitwise:  # bit for bit: fp16 scales and the codes are stored as they are
            assert np.array_equal(g, w), m
        else:  # Q4_1's minimum -(z + 8) * s is rounded to fp16: by at most 2^-11 of |m| <= 15 s
            assert np.abs(g - w).max() <= 2.0**-11 * 2 * np.abs(w).max(), m
        # compressed-tensors' fp16 arithmetic rounds q * s: the GGUF holds the unrounded value
        assert np.abs(g - w16).max() <= 2.0**-10 * np.abs(w16).max(), m
    rounding = details["scale_rounding_max_rel"]
    assert (rounding == 0.0) if bitwise else (0.0 < rounding <= 2.0**-11)


def test_q_and_k_rows_are_permuted_like_the_float_converter(artifacts: Any, tmp_path: Path) -> None:
    src = artifacts("w4a16-g32")
    _export(src, tmp_path / "out")
    cfg = json.loads((src / "config.json").read_text())
    tensors = {t.name: t for t in gguf.GGUFReader(tmp_path / "out" / GGUF_FILE).tensors}
    w, _ = _checkpoint_weights(src)["model.layers.1.self_attn.k_proj"]
    t = tensors["blk.1.attn_k.weight"]
    permuted = permute_qk(w, cfg["num_attention_heads"], cfg["num_key_value_heads"])
    assert not np.array_equal(permuted, w)
    assert np.array_equal(gguf.quants.dequantize(t.data, t.tensor_type), permuted)


# ---- llama.cpp against torch -------------------------------------------------------------------------

def _log_softmax(x: Any) -> Any:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _compare(got: Any, ref: Any) -> tuple[float, float]:
    """``(max |Δlogit| / max |logit|, mean KL(ref || got))``."""
    lp, lq = _log_softmax(ref), _log_softmax(got)
    kl = float((np.exp(lp) * (lp - lq)).sum(-1).mean())
    return float(np.abs(got - ref).max() / np.abs(ref).max()), kl


def _f32_gguf(src: Path, exported: Path, out: Path) -> Path:
    """The exported file with every tensor dequantized to F32: llama.cpp with the same weights, float kernels."""
    reader = gguf.GGUFReader(exported / GGUF_FILE)
    tensors = ((t.name, gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32), None)
               for t in reader.tensors)
    out.mkdir()
    _write_file(out / "f32.gguf", src, _read_model(src), int(gguf.LlamaFileType.ALL_F32), "f32", None, tensors)
    return out


@pytest.mark.parametrize("scheme", ["w4a16-g32", "w4a16-g64-asym", "w8a16"])
def test_llama_cpp_logits_match_the_torch_checkpoint(artifacts: Any, tmp_path: Path, scheme: str) -> None:
    pytest.importorskip("llama_cpp")
    from quantmatch.sdk.pluginhost import get_host

    src = artifacts(scheme)
    _export(src, tmp_path / "out")
    f32 = _f32_gguf(src, tmp_path / "out", tmp_path / "f32")
    host = get_host()
    torch_runner = host.runner("torch", 1)
    torch_runner.load(src)
    ids = torch_runner.tokenize(TEXT)[:128]
    ref = torch_runner.logits(ids)
    errors = {}
    for name, path in (("export", tmp_path / "out"), ("f32", f32)):
        runner = host.runner("llama.cpp", 1)
        runner.load(path)
        try:
            assert runner.tokenize(TEXT)[:128] == ids
            errors[name] = _compare(runner.logits(ids), ref)
        finally:
            runner.close()
    # measured (tiny random model, logits up to ~0.7): the export 0.6% of the largest logit, KL 3e-7;
    # the same weights in F32 kernels 0.01% (Q4_1: 0.09%, its fp16 minimum), KL < 1e-8. The rest is
    # llama.cpp rounding activations to Q8_0 blocks for its integer dot products.
    rel, kl = errors["export"]
    assert rel < 0.03 and kl < 1e-5, errors
    rel_f32, kl_f32 = errors["f32"]
    assert rel_f32 < 0.005 and kl_f32 < 1e-7, errors
    assert rel_f32 < 0.5 * rel, errors


# ---- refusals and requantizing ---------------------------------------------------------------------

def test_group_16_is_refused_then_requantized_when_allowed(tiny_llama_dir: Path, tmp_path: Path) -> None:
    src = _checkpoint(tiny_llama_dir, tmp_path / "g16", 4, 16)
    with pytest.raises(ExportRefused) as e:
        export_compressed(src, tmp_path)
    assert isinstance(e.value, InputError)
    text = str(e.value)
    assert "group 16 does not fill 32-value blocks (14 layers" in text and "--allow-requantize" in text
    assert e.value.reasons == export_refusals(src)
    assert list(tmp_path.iterdir()) == [src]  # nothing written
    details = _export(src, tmp_path / "out", allow_requantize=True)
    assert details["exact"] is False and len(details["requantized"]) == 14
    assert details["tensor_types"]["q4_0"] == 14
    ref = _checkpoint_weights(src)
    got = _gguf_weights(tmp_path / "out" / GGUF_FILE, src)
    m = "model.layers.0.mlp.up_proj"
    assert not np.array_equal(got[m][1], ref[m][0])  # rounded again onto 32-value blocks
    assert np.abs(got[m][1] - ref[m][0]).max() < 0.5 * np.abs(ref[m][0]).max()


def test_activation_quantized_checkpoints_are_refused(artifacts: Any, tmp_path: Path) -> None:
    src = artifacts("w8a8-int8")
    why = "llama.cpp quantizes activations itself; export the weight-only scheme or use --to onnx"
    with pytest.raises(ExportRefused, match=re.escape(why)):
        export_compressed(src, tmp_path)
    details = _export(src, tmp_path / "out", allow_requantize=True)
    # the int8 weights are held exactly; only the activation quantization is dropped
    assert details["exact"] is False and details["requantized"] == []
    assert details["activations_dropped"] == ["int8 dynamic per-token"]
    assert details["tensor_types"]["q8_0"] == 14
    for m, (w, _) in _checkpoint_weights(src).items():
        assert np.array_equal(_gguf_weights(tmp_path / "out" / GGUF_FILE, src)[m][1], w)
        break


def test_rows_that_are_not_whole_blocks_are_refused(tmp_path: Path) -> None:
    from tiny_models import llama_config, save_tiny_model

    model_dir = save_tiny_model(tmp_path / "h48", llama_config(hidden=48))  # intermediate 96
    src = _checkpoint(model_dir, tmp_path / "ckpt", 4, 0, symmetric=False)
    reasons = export_refusals(src)
    assert len(reasons) == 1 and reasons[0].startswith("in_features 48 is not a multiple of 32 (12 layers")
    details = _export(src, tmp_path / "out", allow_requantize=True)
    assert details["tensor_types"]["q4_1"] == 2  # the two down_proj (96 columns) stay exact
    assert details["tensor_types"]["f16"] == 12 + 2 and len(details["requantized"]) == 12


def test_head_q8_0_and_bad_input(artifacts: Any, tiny_llama_dir: Path, tmp_path: Path) -> None:
    src = artifacts("w4a16-g32")
    details = _export(src, tmp_path / "out", head="q8_0")
    assert details["head"] == "q8_0" and details["tensor_types"] == {"q4_0": 14, "q8_0": 2, "f32": 5}
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "out" / GGUF_FILE).tensors}
    assert types["token_embd.weight"] == types["output.weight"] == "Q8_0"
    with pytest.raises(ValueError, match="head must be one of source, q8_0"):
        export_compressed(src, tmp_path, head="q4_0")
    with pytest.raises(InputError, match="not a compressed-tensors checkpoint"):
        export_compressed(tiny_llama_dir, tmp_path)


# ---- the real model (slow) ---------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_rtn_w4a16_g32_perplexity_matches_torch(tmp_path: Path) -> None:
    """SmolLM2-135M, round-to-nearest w4a16-g32, exported to Q4_0: llama.cpp's perplexity within 0.5% of
    the compressed-tensors checkpoint's in torch, on 4 windows of 256 tokens of the packaged text."""
    pytest.importorskip("llama_cpp")
    from quantmatch.sdk.calibration import packaged_text
    from quantmatch.sdk.evaluate import perplexity
    from quantmatch.sdk.pipeline import quantize
    from quantmatch.sdk.pluginhost import get_host

    src = quantize("smollm2-135m", "rtn", "w4a16-g32", tmp_path / "rtn", threads=2).artifact
    details = _export(src, tmp_path / "out")
    assert details["exact"] is True and details["tensor_types"]["q4_0"] == 210
    host = get_host()
    text = packaged_text("tiny-shakespeare-heldout")
    ppl = {}
    for name, path in (("torch", src), ("llama.cpp", tmp_path / "out")):
        runner = host.runner(name, 2)
        runner.load(path)
        try:
            ids = runner.tokenize(text)[:1024]
            ppl[name] = perplexity(runner, ids, 256)[0]
        finally:
            runner.close()
    print(f"\nperplexity (4 x 256 tokens): {ppl}")
    assert ppl["llama.cpp"] == pytest.approx(ppl["torch"], rel=0.005)
