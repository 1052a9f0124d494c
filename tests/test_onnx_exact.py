"""Exact ONNX Runtime export of compressed-tensors checkpoints (quantmatch.plugins.methods.onnx_exact).

Tolerances (measured on the tiny Llama, 48-64 tokens, logits error relative to the largest |logit|):

- weight-only, symmetric: ~3e-7 (fp32 rounding; asserted < 1e-5). The graph's effective weights equal
  compressed-tensors' float32 decompression bit for bit.
- weight-only, asymmetric: ~3e-4, because transformers dequantizes asymmetric packed checkpoints in the
  stored fp16 (the ``"dequantize": true`` workaround), so the torch reference's weights are rounded to
  fp16; asserted < 2e-3 (the exported weights are still bit-exact, tested against the float32 decompression).
- W8A8: ~3e-7 where no activation rounds differently; an activation within float rounding of a rounding
  tie lands one int8 step away in one runtime, which moves the logits by up to ~6e-3; asserted < 2e-2
  with the same top token at >= 95% of positions. The integer product itself is exact (tested per layer).
- options (w4a16-g32): ``accuracy_level=4`` (int8 activations per block) ~5e-3, asserted < 3e-2;
  ``head="int8"`` (Q8_0-rounded LM head, run at level 4) ~8e-3, asserted < 3e-2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from calibrated_support import one_thread  # noqa: F401  (fixture)

from quantmatch.plugins.methods.onnx_exact import check_exportable, export_compressed, unpack_int32
from quantmatch.sdk.export import ExportRefused
from tests_support import CheckpointTensors

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = [int(i) for i in np.random.default_rng(0).integers(0, 300, 48)]
LINEAR_LAYERS = 14  # 2 decoder layers x (q, k, v, o, gate, up, down); the LM head stays float


def _quantize(tiny_llama_dir: Path, out: Path, method: str, scheme: str) -> Path:
    from quantmatch.sdk.calibration import CalibrationSpec
    from quantmatch.sdk.pipeline import quantize

    return Path(quantize(tiny_llama_dir, method, scheme, out,
                         calibration=CalibrationSpec(samples=4, seq_len=32, seed=3), seed=3).artifact)


def _export(src: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    out.mkdir()
    details = dict(export_compressed(src, out, **kwargs))
    json.dumps(details)  # the manifest stores it
    (out / "quantmatch.json").write_text(json.dumps({"details": details}), encoding="utf-8")
    return details


def _runner(directory: Path) -> Any:
    from quantmatch.sdk.pluginhost import get_host

    runner = get_host().runner("onnxruntime", 1)
    runner.load(directory)
    return runner


def _torch_logits(src: Path, ids: list[int]) -> Any:
    from quantmatch.plugins.methods._compressed import load_compressed

    model, _ = load_compressed(src, "float32")
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _rel(a: Any, b: Any) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _const_matmuls(path: Path) -> int:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return sum(n.op_type == "MatMul" and n.input[1] in weights for n in graph.node)


# ---- weight-only: MatMulNBits -------------------------------------------------------------------------
WEIGHT_ONLY = [("rtn", "w4a16-g32", 1e-5), ("gptq", "w4a16-g32", 1e-5), ("gptq", "w4a16-g64-asym", 2e-3),
               ("rtn", "w4a16", 1e-5), ("rtn", "w8a16", 3e-2), ("rtn", "w2a16-g32-asym", 2e-3)]
"""``rtn-w8a16``: 8-bit blocks run at accuracy level 4 (activations rounded to int8 per block; ONNX Runtime
has no fast 8-bit kernel at the fp32 levels), so its tolerance is the int8 activations' (about 5e-3)."""


@pytest.mark.parametrize(("method", "scheme", "tol"), WEIGHT_ONLY, ids=[f"{m}-{s}" for m, s, _ in WEIGHT_ONLY])
def test_weight_only_exports_to_matmulnbits(method: str, scheme: str, tol: float, tiny_llama_dir: Path,
                                            tmp_path: Path) -> None:
    src = _quantize(tiny_llama_dir, tmp_path / "src", method, scheme)
    details = _export(src, tmp_path / "onnx")
    assert details["exact"] and details["requantized"] == [] and details["widened"] == []
    assert details["ops"]["MatMulNBits"] == LINEAR_LAYERS and details["kernels"] == {"MatMulNBits": LINEAR_LAYERS}
    assert details["source_format"] == "compressed-tensors" and details["source_method"] == method
    bits = int(scheme[1])
    assert details["bits"] == [bits]
    group = int(scheme.split("-g")[1].split("-")[0]) if "-g" in scheme else None
    # per-channel: blocks of the largest power of two dividing K (64 and 128 here)
    assert details["block_size"] == (group if group else [64, 128])
    assert _const_matmuls(tmp_path / "onnx" / "model.onnx") == 1  # the LM head, which the checkpoint left float
    assert {"model.onnx", "config.json", "tokenizer.json"} <= {p.name for p in (tmp_path / "onnx").iterdir()}
    assert "quantization_config" not in json.loads((tmp_path / "onnx" / "config.json").read_text())
    runner = _runner(tmp_path / "onnx")
    assert runner.compute == ("MatMulNBits fp32" if bits < 8 else
                              "MatMulNBits 8-bit, int8 activations per block (accuracy_level 4: ONNX Runtime has "
                              "no fast 8-bit kernel at the fp32 levels)")
    got, ref = runner.logits(IDS), _torch_logits(src, IDS)
    assert _rel(got, ref) < tol
    assert (got.argmax(-1) == ref.argmax(-1)).all()
    # decoding with the KV cache gives the same next tokens as the full pass
    assert runner.prefill([IDS[:40]]) == [int(got[39].argmax())]
    assert runner.step([IDS[40]]) == [int(got[40].argmax())]


def _effective_weights(graph: Path) -> dict[str, Any]:
    """Each MatMulNBits node's weight as ONNX Runtime dequantizes it: the node run alone on the identity."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(graph))
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs["accuracy_level"] = 1  # dequantize the stored blocks exactly (level 4 would round the identity too)
        k, n = attrs["K"], attrs["N"]
        g = helper.make_graph([helper.make_node("MatMulNBits", ["A", *node.input[1:]], ["Y"], domain="com.microsoft",
                                                **attrs)], "one",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [k, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [k, n])],
                              [inits[i] for i in node.input[1:]])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=8)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        name = node.name.removesuffix("/MatMulNBits").lstrip("/").replace("/", ".")
        out[name] = sess.run(None, {"A": np.eye(k, dtype=np.float32)})[0].T
    return out


def _ct_float32_weights(src: Path) -> dict[str, Any]:
    """compressed-tensors' own unpacking and dequantization of every packed layer, in float32."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize

    qc = json.loads((src / "config.json").read_text())["quantization_config"]
    args = QuantizationArgs(**next(iter(qc["config_groups"].values()))["weights"])
    state: Any = CheckpointTensors(src).tensors
    out = {}
    for key in state:
        if key.endswith(".weight_packed"):
            name = key.removesuffix(".weight_packed")
            shape = torch.Size(state[f"{name}.weight_shape"].tolist())
            scale = state[f"{name}.weight_scale"].float()
            zp = state.get(f"{name}.weight_zero_point")
            if zp is not None:
                zp = unpack_from_int32(zp, args.num_bits, torch.Size((shape[0], scale.shape[1])), packed_dim=0)
            codes = unpack_from_int32(state[key], args.num_bits, shape)
            out[name] = dequantize(codes, scale, zp, args).numpy()
    return out


@pytest.mark.parametrize(("method", "scheme"), [("gptq", "w4a16-g64-asym"), ("rtn", "w8a16")])
def test_matmulnbits_weights_equal_the_float32_decompression(method: str, scheme: str, tiny_llama_dir: Path,
                                                             tmp_path: Path) -> None:
    src = _quantize(tiny_llama_dir, tmp_path / "src", method, scheme)
    _export(src, tmp_path / "onnx")
    got, ref = _effective_weights(tmp_path / "onnx" / "model.onnx"), _ct_float32_weights(src)
    assert set(got) == set(ref) and len(got) == LINEAR_LAYERS
    for name in ref:
        assert np.array_equal(got[name], ref[name]), name


# ---- W8A8: MatMulInteger ------------------------------------------------------------------------------
W8A8 = [("smoothquant", "w8a8-int8"), ("smoothquant", "w8a8-int8-static"), ("rtn", "w8a8-int8-static")]


@pytest.mark.parametrize(("method", "scheme"), W8A8, ids=[f"{m}-{s}" for m, s in W8A8])
def test_w8a8_exports_to_an_integer_graph(method: str, scheme: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    src = _quantize(tiny_llama_dir, tmp_path / "src", method, scheme)
    details = _export(src, tmp_path / "onnx")
    ops = details["ops"]
    assert details["exact"] and details["kernels"] == {"MatMulInteger": LINEAR_LAYERS} and "MatMulNBits" not in ops
    assert ops["MatMulInteger"] == LINEAR_LAYERS and details["int8_weights"] in ("int8", "uint8")
    if scheme.endswith("static"):
        # per layer: q/k/v share one quantized input, o_proj has its own, gate/up share one; down_proj's
        # activations stay per token (both methods' default)
        assert ops["QuantizeLinear"] == 6 and ops["ReduceMax"] == 2
    else:
        assert "QuantizeLinear" not in ops and ops["ReduceMax"] == 8  # per token: 4 distinct inputs per layer
    assert _const_matmuls(tmp_path / "onnx" / "model.onnx") == 1
    runner = _runner(tmp_path / "onnx")
    assert runner.compute.startswith("int8 MatMulInteger")
    got, ref = runner.logits(IDS), _torch_logits(src, IDS)
    assert _rel(got, ref) < 2e-2
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.95


def test_w8a8_with_uint8_weights(tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The u8 x u8 form (CPUs without VNNI) computes the same integer products."""
    monkeypatch.setenv("QUANTMATCH_ONNX_INT8_WEIGHTS", "uint8")
    src = _quantize(tiny_llama_dir, tmp_path / "src", "rtn", "w8a8-int8")
    assert _export(src, tmp_path / "onnx")["int8_weights"] == "uint8"
    got, ref = _runner(tmp_path / "onnx").logits(IDS), _torch_logits(src, IDS)
    assert _rel(got, ref) < 2e-2


@pytest.mark.parametrize("weights", ["int8", "uint8"])
@pytest.mark.parametrize("mode", ["static", "token"])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_integer_layer_is_exact(weights: str, mode: str, symmetric: bool) -> None:
    """One rewritten layer against integer arithmetic: the same codes, exact int32 products."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from quantmatch.plugins.methods.onnx_exact import _Layer, _Plan, _Rewriter

    rng = np.random.default_rng(1)
    n, k, m = 48, 96, 9
    codes = rng.integers(-128, 128, (n, k)).astype(np.int8)
    scale = (rng.random((n, 1)) * 0.01 + 1e-3).astype(np.float16).astype(np.float32)
    zero = None if symmetric else rng.integers(-20, 20, (n, 1)).astype(np.int16)
    x = rng.standard_normal((1, m, k)).astype(np.float32)
    in_scale = float(np.float32(np.abs(x).max() / 127.5 * 0.8))  # some activations clip
    layer = _Layer(codes, scale, zero, in_scale if mode == "static" else None)
    plan = _Plan("layer", "int8", 8, 8, 0, 0, 0, symmetric, mode)
    rw = _Rewriter(weights)
    nodes = rw.replace(helper.make_node("MatMul", ["x", "w"], ["y"]), plan, layer)
    g = helper.make_graph(nodes, "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, n])], rw.initializers)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    s = np.float32(in_scale) if mode == "static" else np.abs(x).max(-1, keepdims=True) / np.float32(127.5)
    q = np.clip(np.round(x / s), -128, 127).astype(np.int64)
    w = codes.astype(np.int64) - (0 if zero is None else zero.astype(np.int64))
    acc = (q @ w.T).astype(np.float64)
    want = acc * np.float64(s) * scale[:, 0].astype(np.float64)
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


# ---- refusals and requantizing ------------------------------------------------------------------------
def test_three_bit_is_refused_then_widened_exactly(tiny_llama_dir: Path, tmp_path: Path) -> None:
    src = _quantize(tiny_llama_dir, tmp_path / "src", "rtn", "w3a16-g64")
    with pytest.raises(ExportRefused, match="3-bit codes") as e:
        check_exportable(src)
    assert "--allow-requantize" in str(e.value) and len(e.value.reasons) == 1
    with pytest.raises(ExportRefused, match="3-bit codes"):
        export_compressed(src, tmp_path)
    assert list(tmp_path.iterdir()) == [src]  # refused before writing anything
    details = _export(src, tmp_path / "onnx", allow_requantize=True)
    assert details["exact"] and len(details["widened"]) == LINEAR_LAYERS and details["bits"] == [4]
    assert _rel(_runner(tmp_path / "onnx").logits(IDS), _torch_logits(src, IDS)) < 1e-5


def _group8_artifact(tiny_llama_dir: Path, out: Path) -> Path:
    """A checkpoint with int4 groups of 8, which quantmatch's methods do not offer but compressed-tensors holds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantmatch.plugins.methods.algorithms.export import attach, round_scales, save_compressed
    from quantmatch.plugins.methods.algorithms.rtn import IntGrid, rtn

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    weights = {n: rtn(m.weight, IntGrid(4, 8, True)) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    attach(model, round_scales(weights, torch.float16))
    save_compressed(model, out, AutoTokenizer.from_pretrained(str(tiny_llama_dir)), dtype=torch.float16)
    return out


def test_group_8_is_refused_then_requantized(tiny_llama_dir: Path, tmp_path: Path) -> None:
    src = _group8_artifact(tiny_llama_dir, tmp_path / "src")
    with pytest.raises(ExportRefused, match="group size 8") as e:
        check_exportable(src)
    assert "--allow-requantize" in str(e.value)
    details = _export(src, tmp_path / "onnx", allow_requantize=True)
    assert not details["exact"] and len(details["requantized"]) == LINEAR_LAYERS and details["block_size"] == 32
    got, ref = _runner(tmp_path / "onnx").logits(IDS), _torch_logits(src, IDS)
    assert np.isfinite(got).all() and 1e-5 < _rel(got, ref) < 0.5  # a coarser grid: close, not equal


def test_what_no_graph_holds_is_refused_even_when_requantizing(tiny_llama_dir: Path, tmp_path: Path) -> None:
    src = _quantize(tiny_llama_dir, tmp_path / "src", "rtn", "w8a8-int8")
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"]["config_groups"]["group_0"]["input_activations"]["num_bits"] = 4
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportRefused, match="int4 symmetric activations") as e:
        check_exportable(src, allow_requantize=True)
    assert "--allow-requantize" not in str(e.value) and "quantize the float model" in str(e.value)


def test_not_a_compressed_tensors_checkpoint(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from quantmatch.sdk.errors import InputError

    with pytest.raises(InputError, match="not a compressed-tensors checkpoint"):
        check_exportable(tiny_llama_dir)
    with pytest.raises(InputError, match=r"no config\.json"):
        export_compressed(tmp_path, tmp_path)
    shutil.copytree(tiny_llama_dir, tmp_path / "gpt2")
    config = json.loads((tmp_path / "gpt2" / "config.json").read_text())
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({
        **config, "model_type": "gpt2", "quantization_config": {"quant_method": "compressed-tensors"}}))
    with pytest.raises(InputError, match="not 'gpt2'"):
        check_exportable(tmp_path / "gpt2")


@pytest.mark.parametrize("bits", range(1, 9))
def test_unpack_matches_compressed_tensors_packing(bits: int) -> None:
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    g = torch.Generator().manual_seed(bits)
    for cols in (64, 70, 33):
        codes = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (5, cols), generator=g, dtype=torch.int8)
        assert np.array_equal(unpack_int32(pack_to_int32(codes, bits).numpy(), bits, cols), codes.numpy())
        by_rows = pack_to_int32(codes, bits, packed_dim=0).numpy()
        assert np.array_equal(unpack_int32(np.ascontiguousarray(by_rows.T), bits, 5).T, codes.numpy())


# ---- the real model -------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_rtn_w4a16_g32_perplexity_matches(tmp_path: Path) -> None:
    """RTN w4a16-g32 of smollm2-135m: the exported graph's perplexity on two 256-token WikiText-2 windows
    equals the compressed-tensors checkpoint's in torch (float32) within 0.5% (measured: ~1e-6)."""
    from calibrated_support import EVAL_TEXT

    import quantmatch
    from quantmatch.sdk.models import ModelSourceError

    if not EVAL_TEXT.is_file():
        pytest.skip(f"needs {EVAL_TEXT}")
    try:
        src = quantmatch.quantize("smollm2-135m", "rtn", "w4a16-g32", tmp_path / "rtn").artifact
    except ModelSourceError as e:
        pytest.skip(str(e))
    details = _export(src, tmp_path / "onnx")
    assert details["exact"] and details["kernels"] == {"MatMulNBits": 210} and details["block_size"] == 32
    runner = _runner(tmp_path / "onnx")
    ids = runner.tokenize(EVAL_TEXT.read_text(encoding="utf-8")[:20000])[:512]
    windows = [ids[:256], ids[256:512]]
    ort_nll = sum(runner.nll(w) for w in windows)
    from quantmatch.plugins.methods._compressed import load_compressed

    model, _ = load_compressed(src, "float32")
    torch_nll = 0.0
    with torch.no_grad():
        for w in windows:
            t = torch.tensor([w])
            torch_nll += float(model(t, labels=t).loss) * (len(w) - 1)
    n = sum(len(w) - 1 for w in windows)
    assert abs(np.exp(ort_nll / n) / np.exp(torch_nll / n) - 1) < 0.005


# ---- options: accuracy_level and head -----------------------------------------------------------------
def _node_attrs(graph: Path, op: str) -> list[dict[str, Any]]:
    import onnx
    from onnx import helper

    model = onnx.load(str(graph), load_external_data=False)
    return [{a.name: helper.get_attribute_value(a) for a in n.attribute} | {"name": n.name}
            for n in model.graph.node if n.op_type == op]


def test_accuracy_level_4_rounds_activations_only(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """Level 4: every MatMulNBits node says so, weights are untouched (still exact), logits move by the
    per-block int8 rounding of the activations (measured 5.1e-3 of the largest |logit|, same top token
    everywhere; asserted < 3e-2)."""
    src = _quantize(tiny_llama_dir, tmp_path / "src", "gptq", "w4a16-g32")
    details = _export(src, tmp_path / "onnx", accuracy_level=4)
    assert details["exact"] and details["accuracy_level"] == 4 and details["head"] == "source"
    assert details["compute"] == "MatMulNBits int8 activations per block (accuracy_level 4)"
    attrs = _node_attrs(tmp_path / "onnx" / "model.onnx", "MatMulNBits")
    assert len(attrs) == LINEAR_LAYERS and {a["accuracy_level"] for a in attrs} == {4}
    assert _const_matmuls(tmp_path / "onnx" / "model.onnx") == 1
    runner = _runner(tmp_path / "onnx")
    assert runner.compute == details["compute"]
    got, ref = runner.logits(IDS), _torch_logits(src, IDS)
    assert _rel(got, ref) < 3e-2
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_int8_head_replaces_only_the_float_head(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """``head="int8"``: the float LM head becomes MatMulNBits 8-bit blocks of 32 (Q8_0 rounding); ``exact``
    stays about the quantized layers. The head node runs at accuracy level 4 (int8 activations) whatever the
    layers' level. Logits measured 7.6e-3 of the largest |logit| off (4.9e-3 from the weights alone, at
    level 1; each head weight within half a Q8_0 step), same top token everywhere; asserted < 3e-2."""
    src = _quantize(tiny_llama_dir, tmp_path / "src", "gptq", "w4a16-g32")
    details = _export(src, tmp_path / "onnx", head="int8")
    assert details["exact"] and details["requantized"] == [] and details["head"] == "int8"
    assert details["kernels"] == {"MatMulNBits": LINEAR_LAYERS} and details["ops"]["MatMulNBits"] == LINEAR_LAYERS + 1
    assert 0 < details["head_rounding_max_abs"] < 1e-2 and details["accuracy_level"] == 1
    assert details["head_accuracy_level"] == 4  # ONNX Runtime's only fast 8-bit kernel
    assert details["compute"] == "MatMulNBits fp32 + int8 head (MatMulNBits 8-bit, accuracy_level 4)"
    graph = tmp_path / "onnx" / "model.onnx"
    assert _const_matmuls(graph) == 0
    (head,) = [a for a in _node_attrs(graph, "MatMulNBits") if a["name"] == "/lm_head/MatMulNBits"]
    assert head["bits"] == 8 and head["block_size"] == 32 and head["N"] == 320 and head["K"] == 64
    others = {a["accuracy_level"] for a in _node_attrs(graph, "MatMulNBits") if a["name"] != head["name"]}
    assert head["accuracy_level"] == 4 and others == {1}
    w = _torch_lm_head(src)  # [N, K]: the head in ONNX Runtime's dequantization is Q8_0's rounding of it
    eff = _effective_weights(graph)["lm_head"]
    step = np.abs(w.reshape(320, 2, 32)).max(-1, keepdims=True) / 127
    assert np.all(np.abs(eff - w).reshape(320, 2, 32) <= step / 2 * (1 + 1e-4))  # half a step, float rounding
    assert np.isclose(np.abs(eff - w).max(), details["head_rounding_max_abs"], rtol=1e-5)
    source = tmp_path / "source"
    _export(src, source)
    assert _details_of(tmp_path / "onnx")["weight_bytes_per_token"] < _details_of(source)["weight_bytes_per_token"]
    runner = _runner(tmp_path / "onnx")
    got, ref = runner.logits(IDS), _torch_logits(src, IDS)
    exact = _runner(source).logits(IDS)
    assert _rel(got, exact) < 3e-2 and _rel(got, ref) < 3e-2
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.95
    assert runner.prefill([IDS[:40]]) == [int(got[39].argmax())]


def _torch_lm_head(src: Path) -> Any:
    from quantmatch.plugins.methods._compressed import load_compressed

    model, _ = load_compressed(src, "float32")
    return model.lm_head.weight.detach().float().numpy()


def _details_of(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / "quantmatch.json").read_text())["details"])


def test_options_through_export_artifact(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """export_artifact validates the options the ONNX plugin declares and passes them on; an unknown key
    or a value outside the choices is refused before anything is written."""
    from quantmatch.sdk.errors import InputError
    from quantmatch.sdk.export import export_artifact
    from quantmatch.sdk.options import OptionsError

    src = _quantize(tiny_llama_dir, tmp_path / "src", "rtn", "w4a16-g32")
    with pytest.raises(OptionsError, match="unknown export to onnx option 'accuracy'") as e:
        export_artifact(src, "onnx", tmp_path / "bad", options={"accuracy": 4})
    assert isinstance(e.value, InputError) and "accuracy_level" in str(e.value)
    with pytest.raises(OptionsError, match="accuracy_level expects one of 1, 4"):
        export_artifact(src, "onnx", tmp_path / "bad", options={"accuracy_level": 2})
    with pytest.raises(OptionsError, match="head expects one of 'source', 'int8'"):
        export_artifact(src, "onnx", tmp_path / "bad", options={"head": "q8_0"})
    assert not (tmp_path / "bad").exists()
    result = export_artifact(src, "onnx", tmp_path / "onnx", options={"accuracy_level": "4", "head": "int8"})
    details = result.manifest.details
    assert result.exact and details["accuracy_level"] == 4 and details["head"] == "int8"
    attrs = _node_attrs(tmp_path / "onnx" / "model.onnx", "MatMulNBits")
    assert len(attrs) == LINEAR_LAYERS + 1 and {a["accuracy_level"] for a in attrs} == {4}
