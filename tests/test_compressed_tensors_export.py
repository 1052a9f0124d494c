"""compressed-tensors checkpoints (plugins/methods/algorithms/export.py) and the quantize/eval path around them."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
from calibrated_support import logits, one_thread, outlier_llama, token_batch  # noqa: F401  (fixture)

from quantmatch.plugins.methods.algorithms.export import attach, round_scales, save_compressed
from quantmatch.plugins.methods.algorithms.rtn import IntGrid, QuantizedWeight, rtn, static_activation_scale

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    ("w4-g32-sym", IntGrid(4, 32, True), None, "pack-quantized"),
    ("w4-g32-asym", IntGrid(4, 32, False), None, "pack-quantized"),
    ("w3-g64-sym", IntGrid(3, 64, True), None, "pack-quantized"),
    ("w2-g32-asym", IntGrid(2, 32, False), None, "pack-quantized"),
    ("w8-channel", IntGrid(8, 0, True), None, "pack-quantized"),
    ("w8a8-dynamic", IntGrid(8, 0, True), "dynamic", "int-quantized"),
    ("w8a8-static", IntGrid(8, 0, True), "static", "int-quantized"),
]


def _quantized(model: torch.nn.Module, grid: IntGrid) -> dict[str, QuantizedWeight]:
    return {n: rtn(m.weight, grid) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n != "lm_head"}


def _export(model: torch.nn.Module, grid: IntGrid, act: str | None, out: Path,
            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, dict[str, QuantizedWeight]]:
    """Attach, record the in-memory logits, save; returns those logits and the weights written."""
    weights = round_scales(_quantized(model, grid), dtype)
    scales = {n: static_activation_scale(torch.tensor(4.0)) for n in weights} if act == "static" else None
    attach(model, weights, act, scales)
    ref = logits(model, token_batch(2, 24, 5))
    save_compressed(model, out, dtype=dtype)
    return ref, weights


@pytest.mark.parametrize(("label", "grid", "act", "fmt"), CASES, ids=[c[0] for c in CASES])
def test_checkpoint_reloads_in_transformers_with_the_same_logits(label: str, grid: IntGrid, act: str | None,
                                                                 fmt: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    ref, _ = _export(outlier_llama(kv_heads=2), grid, act, tmp_path)
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == fmt and qc["ignore"] == ["lm_head"]
    group = qc["config_groups"]["group_0"]
    assert group["weights"]["num_bits"] == grid.bits and group["weights"]["symmetric"] == grid.symmetric
    assert (group["input_activations"] or {}).get("dynamic", None) == {None: None, "dynamic": True,
                                                                        "static": False}[act]
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    torch.testing.assert_close(logits(reloaded, token_batch(2, 24, 5)), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("grid", [IntGrid(4, 32, False), IntGrid(3, 64, True), IntGrid(8, 0, True)], ids=str)
def test_the_library_stores_exactly_our_codes(grid: IntGrid, tmp_path: Path) -> None:
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors.torch import load_file

    _, weights = _export(outlier_llama(), grid, None, tmp_path, dtype=torch.float16)
    state = load_file(str(tmp_path / "model.safetensors"))
    name = "model.layers.1.mlp.down_proj"
    ours = weights[name]
    stored = unpack_from_int32(state[f"{name}.weight_packed"], grid.bits, tuple(state[f"{name}.weight_shape"].tolist()))
    assert torch.equal(stored.to(torch.int8), ours.codes())
    assert state[f"{name}.weight_scale"].dtype == torch.float16
    assert torch.equal(state[f"{name}.weight_scale"].float(), ours.scale.float())


def test_sixteen_bit_storage_keeps_the_int8_codes(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    _, weights = _export(outlier_llama(), IntGrid(8, 0, True), "static", tmp_path, dtype=torch.bfloat16)
    state = load_file(str(tmp_path / "model.safetensors"))
    for name, qw in weights.items():
        assert torch.equal(state[f"{name}.weight"], qw.codes()), name
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"


def test_several_grids_become_several_config_groups(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = outlier_llama()
    weights = {n: rtn(m.weight, IntGrid(8 if "down_proj" in n else 4, 32, True))
               for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    attach(model, weights)
    ref = logits(model, token_batch(2, 16, 5))
    save_compressed(model, tmp_path)
    groups = json.loads((tmp_path / "config.json").read_text())["quantization_config"]["config_groups"]
    assert sorted(len(g["targets"]) for g in groups.values()) == [2, 12]
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
    torch.testing.assert_close(logits(reloaded, token_batch(2, 16, 5)), ref, rtol=0, atol=1e-5)


# ---- the method plugins end to end --------------------------------------------------------------------
PLUGIN_RUNS = [("gptq", "w4a16-g32"), ("awq", "w3a16-g32-asym"), ("smoothquant", "w8a8-int8"),
               ("rtn", "w3a16-g64"), ("rtn", "w8a8-int8-static")]


@pytest.mark.parametrize(("method", "scheme"), PLUGIN_RUNS, ids=[f"{m}-{s}" for m, s in PLUGIN_RUNS])
def test_quantize_eval_and_determinism(method: str, scheme: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    from quantmatch.sdk.calibration import CalibrationSpec
    from quantmatch.sdk.evaluate import evaluate
    from quantmatch.sdk.pipeline import quantize

    cal = CalibrationSpec(samples=4, seq_len=32, seed=3)
    digests = []
    for run in ("a", "b"):
        res = quantize(tiny_llama_dir, method, scheme, tmp_path / run, calibration=cal, seed=3)
        shards = sorted(res.artifact.glob("*.safetensors"))
        digests.append(hashlib.sha256(b"".join(p.read_bytes() for p in shards)).hexdigest())
    assert digests[0] == digests[1], "same seed, different checkpoint"
    assert res.manifest.artifact_format == "compressed-tensors" and res.manifest.details["dtype"] == "float16"
    # streamed: one shard per block and per tensor outside the blocks, with the index transformers follows
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "quantmatch.json"} <= {
        p.name for p in res.artifact.iterdir()} and len(shards) == 5
    ev = evaluate(res.artifact, tokens=300, window=100)
    assert ev.kind == "artifact" and ev.method == method and 1 < ev.perplexity < 1000


def test_interrupted_quantization_leaves_no_artifact_and_resumes(tiny_llama_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import quantmatch.plugins.methods.algorithms.gptq as gptq
    from quantmatch.sdk.calibration import CalibrationSpec
    from quantmatch.sdk.pipeline import quantize

    real = gptq.gptq_block
    calls = []

    def interrupted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    cal = CalibrationSpec(samples=2, seq_len=16)
    monkeypatch.setattr(gptq, "gptq_block", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quantize(tiny_llama_dir, "gptq", "w4a16-g32", tmp_path / "out", calibration=cal)
    # Ctrl-C in block 2: no artifact, no temporary directory, only the job's progress (block 1 done)
    assert [p.name for p in tmp_path.iterdir()] == [".out.quantmatch-job"]
    assert json.loads((tmp_path / ".out.quantmatch-job" / "job.json").read_text())["done"] == 1
    res = quantize(tiny_llama_dir, "gptq", "w4a16-g32", tmp_path / "out", calibration=cal)
    assert res.manifest.details["streamed"]["resumed_from"] == 1 and len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_cli_quantizes_with_progress_per_block(tiny_llama_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.cli import main

    out = tmp_path / "cli"
    args = ["quantize", str(tiny_llama_dir), "--method", "gptq", "--scheme", "w4a16-g32", "--out", str(out),
            "--samples", "2", "--seq-len", "16"]
    assert main(args) == 0
    assert (out / "quantmatch.json").is_file()
    assert main([*args[:5], "w4a16-g128", "--out", str(tmp_path / "no")]) == 2
    assert "group size 128 does not divide" in capsys.readouterr().err


def test_cli_passes_method_options(tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.cli import main

    out = tmp_path / "sq"
    base = ["quantize", str(tiny_llama_dir), "--method", "smoothquant", "--scheme", "w8a8-int8-static",
            "--samples", "2", "--seq-len", "16"]
    assert main([*base, "--out", str(out), "--option", "dynamic_layers=[]", "--option", "alpha=0.5", "--json"]) == 0
    details = json.loads(capsys.readouterr().out)["result"]["manifest"]["details"]["smoothquant"]
    assert details["alpha"] == 0.5 and details["dynamic_layers"] == [] and details["static_layers"] == 14
    assert main([*base, "--out", str(tmp_path / "x"), "--option", "damp"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "y"), "--option", "seed=3"]) == 2
    assert "--seed" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_model_copy_is_untouched_by_attach() -> None:
    model = outlier_llama()
    before = copy.deepcopy(model.state_dict())
    attach(copy.deepcopy(model), _quantized(model, IntGrid(4, 32, True)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_static_checkpoint_with_per_token_down_proj_reloads(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from quantmatch.plugins.backends.int8_runtime import convert_to_int8

    model = outlier_llama()
    weights = _quantized(model, IntGrid(8, 0, True))
    scales = {n: static_activation_scale(torch.tensor(4.0)) for n in weights if "down_proj" not in n}
    attach(model, weights, "static", scales)
    ref = logits(model, token_batch(2, 16, 5))
    save_compressed(model, tmp_path)
    groups = json.loads((tmp_path / "config.json").read_text())["quantization_config"]["config_groups"]
    kinds = sorted((len(g["targets"]), g["input_activations"]["strategy"], g["input_activations"]["dynamic"])
                   for g in groups.values())
    assert kinds == [(2, "token", True), (12, "tensor", False)]
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    torch.testing.assert_close(logits(reloaded, token_batch(2, 16, 5)), ref, rtol=0, atol=1e-5)
    assert convert_to_int8(reloaded) == 14
    torch.testing.assert_close(logits(reloaded, token_batch(2, 16, 5)), ref, rtol=1e-3, atol=1e-3)
