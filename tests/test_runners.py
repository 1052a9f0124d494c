"""The runner interface on real backends: torch, ONNX Runtime (export + its quantizers) and llama.cpp.

Fast tests use the tiny random Llama of ``quantmatch.testing``; ``slow`` ones the bundled SmolLM2-135M.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from quantmatch.measure import RUNNERS, MeasureConfig, RunnerError, measure, runner_for
from quantmatch.measure.run import time_generation
from quantmatch.sdk.evaluate import perplexity, token_ids

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TEXT = ("The weights are grouped and each group has one scale. " * 40) + "the model of the scale was not one. " * 40
SMALL = MeasureConfig(tokens=192, window=64, prompt=12, new_tokens=6, batch=3, repeats=1, warmup=1)
NEAR_FP32 = 3e-3
"""Relative NLL difference from fp32 torch that a working int8/int4 graph stays within on the tiny model
(they measure under 1e-3). The random tiny model predicts almost uniformly, so even a collapsed
quantization moves its NLL by only 1-2% (zeroed or shuffled int8 weights: -0.9%, -1.3%; activations
read with a wrong zero point: +1.9%): a looser tolerance would not catch one."""


def eval_perplexity(model, ids: list[int], window: int) -> tuple[float, int, int]:
    """The protocol of ``quantmatch eval`` computed directly on a torch model (an independent reference)."""
    nll, count, windows = 0.0, 0, 0
    with torch.no_grad():
        for s in range(0, len(ids), window):
            chunk = ids[s: s + window]
            if len(chunk) < 2:
                continue
            logits = model(input_ids=torch.tensor([chunk])).logits[0, :-1].double()
            nll -= float(torch.log_softmax(logits, -1)[torch.arange(len(chunk) - 1), torch.tensor(chunk[1:])].sum())
            count, windows = count + len(chunk) - 1, windows + 1
    return math.exp(nll / count), count, windows


def _greedy_full(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy tokens by recomputing the whole sequence every step (no cache): the reference."""
    import torch

    ids = list(prompt)
    out = []
    with torch.inference_mode():
        for _ in range(steps):
            nxt = int(model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].argmax())
            out.append(nxt)
            ids.append(nxt)
    return out


@pytest.fixture(scope="module")
def torch_runner(tiny_llama_dir: Path):
    r = runner_for("torch", 1)
    r.load(tiny_llama_dir)
    yield r
    r.close()


def test_runner_registry_names_backends() -> None:
    """Runners come from the backends that name one: the built-ins, and any plugin's (the example's
    ``example-torch`` when it is installed)."""
    from quantmatch.sdk.pluginhost import get_host

    builtin = {"torch", "optimum-quanto", "hqq", "onnxruntime", "llama.cpp"}
    assert builtin <= set(RUNNERS)
    assert set(RUNNERS) - builtin == {n for n in get_host().runnable_backends() if n not in builtin}
    assert all(runner_for(name, 1).backend == name for name in RUNNERS)
    with pytest.raises(KeyError, match="no runner for backend 'vllm'"):
        runner_for("vllm")


def test_torch_perplexity_matches_quantmatch_eval(torch_runner, tiny_llama_dir: Path) -> None:
    ids = token_ids(torch_runner.tokenize, TEXT, 150)
    ppl, predicted, windows = perplexity(torch_runner, ids, 64)
    ref, ref_pred, ref_windows = eval_perplexity(torch_runner.model, ids, 64)
    assert (predicted, windows) == (ref_pred, ref_windows) == (147, 3)
    assert math.isfinite(ppl) and ppl == pytest.approx(ref, rel=1e-5)


def test_torch_decode_uses_the_kv_cache(torch_runner) -> None:
    prompt = token_ids(torch_runner.tokenize, TEXT, 10)
    t = time_generation(torch_runner, [prompt], 5)
    assert torch_runner.cached_tokens() == len(prompt) + 5  # one token fed per step, not the whole sequence
    assert list(t.tokens[0]) == _greedy_full(torch_runner.model, prompt, 6)
    batch = time_generation(torch_runner, [prompt, prompt[::-1]], 3)
    assert batch.tokens[0] == t.tokens[0][:4] and len(batch.tokens) == 2
    assert t.decode_tps > 0 and t.prefill_tps > 0


def test_measure_reports_every_figure(tiny_llama_dir: Path) -> None:
    r = measure(runner_for("torch", 1), tiny_llama_dir, TEXT, SMALL, "float32", kv_layout=(2, 2, 16, 4),
                flops_per_token=1e6)
    assert r.threads == 1 and r.compute == "float32" and r.load_seconds > 0
    assert math.isfinite(r.perplexity) and r.ppl_tokens == 189 and r.ppl_windows == 3
    assert r.prefill_tps > 0 and r.decode_tps > 0 and r.decode_batch_tps and r.batch == 3
    assert r.peak_rss_bytes >= r.rss_before_load > 0
    # fp32: every parameter and buffer (rotary frequencies) but the (untied) input embedding table
    model = _model(tiny_llama_dir)
    held = sum(t.numel() for t in [*model.parameters(), *model.buffers()])
    assert r.weight_bytes_per_token == 4 * (held - 320 * 64)
    assert r.kv_bytes_per_token == int(2 * 2 * 2 * 16 * 4 * (12 + 1 + 6 / 2))
    assert "torch" in r.versions


@pytest.mark.parametrize("scheme", ["w4a16-g64-asym", "w2a16-g64-asym"])
def test_quanto_packed_weights_run_in_the_runner(tiny_llama_dir: Path, tmp_path: Path, scheme: str) -> None:
    """quanto's packed int2/int4 weights fail under torch.inference_mode: the runner must not use it."""
    pytest.importorskip("optimum.quanto")
    from quantmatch.sdk.pipeline import quantize

    out = tmp_path / "q"
    quantize(tiny_llama_dir, "quanto", scheme, out)
    r = measure(runner_for("optimum-quanto", 1), out, TEXT, SMALL, "float32", kv_layout=(2, 2, 16, 4),
                flops_per_token=1e6)
    ref = measure(runner_for("torch", 1), tiny_llama_dir, TEXT, SMALL, "float32", kv_layout=(2, 2, 16, 4),
                  flops_per_token=1e6)
    assert r.decode_tps > 0 and math.isfinite(r.perplexity)
    assert abs(math.log(r.perplexity / ref.perplexity)) < 0.05


def test_torch_runner_computes_w8a8_with_integer_kernels(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """A W8A8 int8 checkpoint runs through Int8Linear (an integer matmul), not compressed-tensors'
    quantize-dequantize forward, and scores like that forward."""
    from quantmatch.plugins.backends.int8_runtime import Int8Linear
    from quantmatch.sdk.pipeline import load_artifact, quantize

    out = tmp_path / "w8a8"
    quantize(tiny_llama_dir, "rtn", "w8a8-int8", out)
    r = runner_for("torch", 1)
    r.load(out)
    swapped = [m for m in r.model.modules() if isinstance(m, Int8Linear)]
    assert len(swapped) == 2 * 7 and "int8" in r.compute
    ids = token_ids(r.tokenize, TEXT, 150)
    ppl, _, _ = perplexity(r, ids, 64)
    ref, _, _ = eval_perplexity(load_artifact(out).model, ids, 64)
    assert abs(math.log(ppl / ref)) < NEAR_FP32
    r.close()


@pytest.mark.parametrize("scheme", ["w4a16-g32", "w4a16-g32-asym"])
def test_torch_runner_decompresses_weight_only_checkpoints_into_plain_layers(tiny_llama_dir: Path, tmp_path: Path,
                                                                             scheme: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """No int8 layers to swap and packed kernels off (tests/test_packed_linear.py covers them): the
    checkpoint is decompressed at load into plain linear layers (no quantization wrapper left to run per
    forward, no first-forward hook) and scores like transformers' load, whose layers compressed-tensors
    decompresses on the first forward."""
    from quantmatch.sdk.pipeline import load_artifact, quantize

    monkeypatch.setenv("QUANTMATCH_PACKED_KERNELS", "0")

    out = tmp_path / scheme
    quantize(tiny_llama_dir, "rtn", scheme, out)
    r = runner_for("torch", 1)
    r.load(out)
    assert "int8" not in r.compute and not hasattr(r.model, "ct_decompress_hook")
    linears = [m for m in r.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and not any(hasattr(m, "quantization_scheme") or hasattr(m, "weight_scale") for m in linears)
    ids = token_ids(r.tokenize, TEXT, 150)
    ppl, _, _ = perplexity(r, ids, 64)
    ref, _, _ = eval_perplexity(load_artifact(out).model, ids, 64)
    assert ppl == pytest.approx(ref, rel=1e-4)
    r.close()


def _model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path))


# ---- ONNX Runtime -----------------------------------------------------------------------------------
onnx_needed = pytest.mark.skipif(RUNNERS["onnxruntime"].missing() != [], reason="onnxruntime/onnx not installed")


@pytest.fixture(scope="module")
def onnx_artifacts(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("onnxruntime")
    from quantmatch.plugins.backends.onnxruntime_runner import quantize_onnx

    root = tmp_path_factory.mktemp("onnx")
    return {s: quantize_onnx(tiny_llama_dir, s, root / s) for s in ("fp32", "w8a8-int8", "w4a32-g32",
                                                                    "w4a8-int8-g32")}


@onnx_needed
def test_onnx_fp32_export_matches_torch(onnx_artifacts: dict[str, Path], torch_runner) -> None:
    r = runner_for("onnxruntime", 1)
    r.load(onnx_artifacts["fp32"])
    try:
        ids = token_ids(r.tokenize, TEXT, 64)
        assert ids == token_ids(torch_runner.tokenize, TEXT, 64)
        assert r.nll(ids) == pytest.approx(torch_runner.nll(ids), rel=1e-4)
        prompt = ids[:10]
        t = time_generation(r, [prompt, ids[10:20]], 4)
        assert r.cached_tokens() == 10 + 4  # presents fed back as the next past: a KV cache, not recompute
        assert list(t.tokens[0]) == _greedy_full(torch_runner.model, prompt, 5)
    finally:
        r.close()


@onnx_needed
def test_onnx_int8_dynamic_graph_runs_integer_kernels(onnx_artifacts: dict[str, Path], torch_runner) -> None:
    import onnxruntime as ort

    from quantmatch.plugins.backends.onnxruntime_runner import op_counts
    from quantmatch.sdk.artifact import read_manifest

    path = onnx_artifacts["w8a8-int8"]
    ops = op_counts(path / "model.onnx")
    # every linear layer of the 2-layer model but down_proj (6 each) and the LM head become integer MatMuls
    assert ops.get("MatMulInteger", 0) + ops.get("DynamicQuantizeMatMul", 0) == 13
    assert ops.get("MatMul", 0) == 6  # attention scores and values (2 per layer) and down_proj stay float
    # ONNX Runtime's optimizer fuses them at load: the optimized graph holds DynamicQuantizeMatMul
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(path.parent / "optimized-int8.onnx")
    ort.InferenceSession(str(path / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    fused = op_counts(opts.optimized_model_filepath)
    assert fused.get("DynamicQuantizeMatMul", 0) + fused.get("MatMulIntegerToFloat", 0) >= 13
    manifest = read_manifest(path)
    assert (manifest.method, manifest.scheme, manifest.artifact_format) == ("onnx", "w8a8-int8", "onnx")
    assert manifest.details["fp32_matmuls"] == 2 and "smoothquant_alpha" in manifest.details
    r = measure(runner_for("onnxruntime", 1), path, TEXT, SMALL)
    assert math.isfinite(r.perplexity) and r.decode_tps > 0 and r.decode_batch_tps
    assert r.compute == "int8 (dynamic)"
    assert 0 < r.weight_bytes_per_token < _fp32_bytes(onnx_artifacts)
    ort_runner = runner_for("onnxruntime", 1)
    ort_runner.load(path)
    try:
        ids = token_ids(ort_runner.tokenize, TEXT, 64)
        assert ort_runner.nll(ids) == pytest.approx(torch_runner.nll(ids), rel=NEAR_FP32)
    finally:
        ort_runner.close()


def _corrupt_copy(artifact: Path, dest: Path) -> Path:
    """A copy of ``artifact`` whose graph file was cut in half (an interrupted download or copy)."""
    import shutil

    shutil.copytree(artifact, dest)
    graph = dest / "model.onnx"
    data = graph.read_bytes()
    graph.write_bytes(data[: len(data) // 2])
    return dest


@onnx_needed
def test_onnx_corrupt_artifact_says_to_recreate_it(onnx_artifacts: dict[str, Path], tmp_path: Path) -> None:
    broken = _corrupt_copy(onnx_artifacts["w8a8-int8"], tmp_path / "broken")
    with pytest.raises(RunnerError, match=r"ONNX Runtime cannot load this graph .*re-create the artifact"):
        runner_for("onnxruntime", 1).load(broken)


@onnx_needed
def test_bench_records_a_corrupt_onnx_artifact_as_failed(onnx_artifacts: dict[str, Path], tiny_llama_dir: Path,
                                                          tmp_path: Path) -> None:
    from quantmatch.measure.bench import Bench, Combo

    bench = Bench(str(tiny_llama_dir), config=SMALL, threads=1, work_dir=tmp_path / "work", save=False,
                  quick_machine=True, timeout=600)
    combo = Combo("onnx", "w8a8-int8", "onnxruntime")
    _corrupt_copy(onnx_artifacts["w8a8-int8"], bench.artifact_dir(combo))  # the cached artifact bench reuses
    report = bench.run([combo])
    res = report.result(combo.key)
    assert res is not None and res.status == "failed"
    assert res.reason.startswith("RunnerError: ") and "re-create the artifact" in res.reason
    assert report.result("none:fp32:torch").status == "ok"  # type: ignore[union-attr]
    assert report.exit_code == 1


def _fp32_bytes(arts: dict[str, Path]) -> int:
    from quantmatch.sdk.artifact import read_manifest

    return int(read_manifest(arts["fp32"]).details["weight_bytes_per_token"])


@onnx_needed
@pytest.mark.parametrize(("scheme", "level"), [("w4a32-g32", 0), ("w4a8-int8-g32", 4)])
def test_onnx_matmulnbits_accuracy_levels(onnx_artifacts: dict[str, Path], torch_runner, scheme: str,
                                          level: int) -> None:
    import onnx

    path = onnx_artifacts[scheme] / "model.onnx"
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 15
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["bits"] == 4 and attrs["block_size"] == 32 and attrs.get("accuracy_level", 0) == level
    r = runner_for("onnxruntime", 1)
    r.load(onnx_artifacts[scheme])
    try:
        ids = token_ids(r.tokenize, TEXT, 64)
        assert r.nll(ids) == pytest.approx(torch_runner.nll(ids), rel=NEAR_FP32)
        assert len(time_generation(r, [ids[:8]], 3).tokens[0]) == 4
    finally:
        r.close()


@onnx_needed
def test_onnx_static_qdq_with_smoothquant(tiny_llama_dir: Path, tmp_path: Path, torch_runner) -> None:
    from quantmatch.plugins.backends.onnxruntime_runner import op_counts, quantize_onnx
    from quantmatch.sdk.calibration import CalibrationSpec

    out = quantize_onnx(tiny_llama_dir, "w8a8-int8-static", tmp_path / "static",
                        calibration=CalibrationSpec(samples=2, seq_len=32))
    ops = op_counts(out / "model.onnx")
    assert ops["QuantizeLinear"] >= 13 and ops["DequantizeLinear"] >= 26
    # only the weight MatMuls but down_proj get int8 inputs: attention products and down_proj read floats
    import onnx

    graph = onnx.load(str(out / "model.onnx")).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    int8_inputs = [n.name for n in graph.node
                   if n.op_type == "MatMul" and producer.get(n.input[0]) == "DequantizeLinear"]
    assert len(int8_inputs) == 13 and not any("down_proj" in n for n in int8_inputs)
    r = runner_for("onnxruntime", 1)
    r.load(out)
    try:
        ids = token_ids(r.tokenize, TEXT, 64)
        assert r.nll(ids) == pytest.approx(torch_runner.nll(ids), rel=NEAR_FP32)
    finally:
        r.close()


def test_smoothquant_folding_keeps_the_float_function(tiny_llama_dir: Path) -> None:
    import torch

    from quantmatch.plugins.methods.algorithms.smoothquant import smooth_model

    model = _model(tiny_llama_dir).eval()
    ids = torch.randint(0, 320, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    norm = model.model.layers[0].input_layernorm.weight.clone()
    chosen = smooth_model(model, ids)
    assert len(chosen) == 6 and all(0 < a < 1 for a in chosen.values())  # 2 blocks x 3 scale groups
    with torch.inference_mode():
        after = model(input_ids=ids).logits
    assert not torch.equal(norm, model.model.layers[0].input_layernorm.weight)
    assert torch.allclose(before, after, atol=1e-4)


# ---- llama.cpp ---------------------------------------------------------------------------------------
gguf_needed = pytest.mark.skipif(RUNNERS["llama.cpp"].missing() != [], reason="llama-cpp-python not installed")


@gguf_needed
def test_llamacpp_runner_scores_and_batches(tiny_llama_dir: Path, tmp_path: Path, torch_runner) -> None:
    from quantmatch.plugins.methods.gguf_convert import convert_hf_to_gguf

    path = tmp_path / "tiny-f32.gguf"
    convert_hf_to_gguf(tiny_llama_dir, path, "f32")
    r = runner_for("llama.cpp", 1)
    r.configure(SMALL)
    r.load(path)
    try:
        ids = token_ids(r.tokenize, TEXT, 64)
        assert ids == token_ids(torch_runner.tokenize, TEXT, 64)
        # F32 weights; the F16 KV cache is the only difference from torch
        assert r.nll(ids) == pytest.approx(torch_runner.nll(ids), rel=2e-3)
        prompt = ids[:10]
        single = time_generation(r, [prompt], 4)
        assert r.cached_tokens() == 14
        assert list(single.tokens[0]) == _greedy_full(torch_runner.model, prompt, 5)
        batch = time_generation(r, [prompt, ids[10:20], ids[20:30]], 4)
        assert batch.tokens[0] == single.tokens[0] and r.cached_tokens(2) == 14
    finally:
        r.close()


@gguf_needed
def test_llamacpp_refuses_a_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    r = runner_for("llama.cpp", 1)
    with pytest.raises(RunnerError, match="cannot load this GGUF file"):
        r.load(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunnerError, match=r"no \.gguf file"):
        r.load(tmp_path / "empty")
    with pytest.raises(RunnerError, match="no such GGUF file"):
        r.load(tmp_path / "nothing-here")


def test_artifact_of_another_backend_is_refused(tmp_path: Path) -> None:
    r = runner_for("onnxruntime", 1)
    with pytest.raises(RunnerError, match="not an ONNX artifact"):
        r.load(tmp_path)


# ---- the real model ----------------------------------------------------------------------------------
@pytest.mark.slow
@onnx_needed
@gguf_needed
def test_smollm2_runners_agree_on_perplexity(tmp_path: Path) -> None:
    """fp32 torch, the fp32 ONNX export and llama.cpp Q8_0 score SmolLM2 alike (same protocol)."""
    import quantmatch
    from quantmatch.plugins.backends.onnxruntime_runner import quantize_onnx
    from quantmatch.sdk.evaluate import _load_text

    text, _ = _load_text(None)
    cfg = MeasureConfig(tokens=1024, window=512, prompt=32, new_tokens=8, batch=2, repeats=1, warmup=1)
    base = measure(runner_for("torch"), "smollm2-135m", text, cfg, "float32")
    onnx = measure(runner_for("onnxruntime"), quantize_onnx("smollm2-135m", "fp32", tmp_path / "onnx"), text, cfg)
    q8 = tmp_path / "q8"
    quantmatch.quantize("smollm2-135m", "gguf", "gguf-q8_0", q8)
    gguf = measure(runner_for("llama.cpp"), q8, text, cfg)
    assert onnx.perplexity == pytest.approx(base.perplexity, rel=1e-3)
    assert gguf.perplexity == pytest.approx(base.perplexity, rel=0.01)
    assert gguf.weight_bytes_per_token < 0.3 * base.weight_bytes_per_token
    assert base.sample and onnx.sample
