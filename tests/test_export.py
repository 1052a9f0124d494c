"""Exact exports as declared data: the registry judges exported combinations, ``export`` refuses what a
format cannot hold, and the CLI, bench and planner route through the same declarations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantmatch.registry import Registry
from quantmatch.sdk.errors import InputError, UnknownChoiceError
from quantmatch.sdk.export import ExportRefused, ExportRule, export_route, export_targets
from quantmatch.sdk.scheme import parse_scheme
from quantmatch.sdk.verdict import Level

SPR = "intel_sapphire_rapids"


def test_rules_hold_groups_that_are_block_multiples() -> None:
    q4_0 = ExportRule("int4", True, "gguf-q4_0", group_multiple=32)
    assert q4_0.why_not(parse_scheme("w4a16-g32")) is None
    assert q4_0.why_not(parse_scheme("w4a16-g128")) is None
    assert q4_0.why_not(parse_scheme("w4a16")) is None  # per-channel: the row scale repeated per block
    assert q4_0.why_not(parse_scheme("w4a16-g16")) == "group 16 is not a multiple of the 32-value blocks"
    assert q4_0.why_not(parse_scheme("w4a16-g64-asym")) == "the grid is asymmetric"
    assert q4_0.why_not(parse_scheme("w3a16-g64")) == "int3 weights are not int4"
    assert q4_0.why_not(parse_scheme("w4a8-int8-g32")) == "int8 activations"
    nbits = ExportRule("int4", False, "w4a32-g{group}{asym}", group_sizes=(16, 32, 64, 128, 256))
    assert nbits.scheme_for(parse_scheme("w4a16-g64-asym")) == "w4a32-g64-asym"
    assert nbits.why_not(parse_scheme("w4a16-g8-asym")) == "group 8 is not one of 16/32/64/128/256"


def test_registry_judges_gptq_on_llama_cpp_as_the_gguf_type_it_exports_to() -> None:
    reg = Registry()
    v = reg.verdict("gptq", "w4a16-g32", "llama.cpp", SPR)
    assert v.level is Level.NATIVE and v.method == "gptq" and v.scheme == "w4a16-g32"
    texts = [r.text for r in v.reasons]
    assert any("exported exactly to gguf" in t and "gguf-q4_0" in t for t in texts)
    assert reg.verdict("awq", "w4a16-g64-asym", "llama.cpp", SPR).runnable
    assert reg.verdict("gptq", "w8a16", "llama.cpp", SPR).runnable
    # a grid GGUF's 32-value blocks cannot hold: pruned, with the reason and the flag that rounds it again
    three = reg.verdict("gptq", "w3a16-g64", "llama.cpp", SPR)
    assert three.level is Level.UNSUPPORTED
    assert "cannot hold w3a16-g64 exactly" in three.reasons[0].text and "--allow-requantize" in three.reasons[0].text
    # ONNX Runtime: MatMulNBits with fp32 activations (weight-only on a CPU), SmoothQuant as int8 x int8
    assert reg.verdict("gptq", "w4a16-g32", "onnxruntime", SPR).level is Level.WEIGHT_ONLY
    assert reg.verdict("smoothquant", "w8a8-int8-static", "onnxruntime", SPR).level is Level.NATIVE
    # the backends that load the format themselves are untouched
    assert reg.export_route(reg.method("gptq"), "torch") is None
    combos = {(v.method, v.scheme, v.backend) for v in reg.combinations(SPR, include_unsupported=False)}
    assert ("gptq", "w4a16-g32", "llama.cpp") in combos and ("awq", "w4a16-g64-asym", "onnxruntime") in combos


def test_export_route_refuses_with_the_reason_and_lists_formats() -> None:
    assert {"gguf", "onnx"} <= set(export_targets("compressed-tensors"))
    owner, _spec, rule = export_route("compressed-tensors", parse_scheme("w4a16-g64-asym"), "gguf")
    assert owner.name == "gguf" and rule is not None and rule.runs_as == "gguf-q4_1"
    with pytest.raises(ExportRefused, match=r"group 16.*--allow-requantize"):
        export_route("compressed-tensors", parse_scheme("w4a16-g16"), "gguf")
    assert export_route("compressed-tensors", parse_scheme("w4a16-g16"), "gguf", allow_requantize=True)[2] is None
    with pytest.raises(UnknownChoiceError, match="gguf"):
        export_route("compressed-tensors", parse_scheme("w4a16-g32"), "tflite")
    with pytest.raises(InputError, match="nothing exports"):
        export_route("quanto", parse_scheme("w4a16-g32"), "gguf")


def _fake_artifact(tmp_path: Path, scheme: str) -> Path:
    """A manifest-only compressed-tensors artifact: refusals must come before any weight is read."""
    from quantmatch.sdk.artifact import Manifest, write_manifest

    d = tmp_path / f"art-{scheme}"
    d.mkdir()
    write_manifest(d, Manifest(method="gptq", scheme=scheme, artifact_format="compressed-tensors",
                               source_model="smollm2-135m"))
    return d


def test_cli_export_refusals_exit_2_and_write_nothing(tmp_path: Path) -> None:
    from quantmatch.cli.main import main

    art = _fake_artifact(tmp_path, "w4a16-g16")
    out = tmp_path / "out"
    assert main(["export", str(art), "--to", "gguf", "--out", str(out)]) == 2
    assert main(["export", str(art), "--to", "tflite", "--out", str(out)]) == 2
    assert main(["export", str(tmp_path), "--to", "gguf", "--out", str(out)]) == 2  # not an artifact
    assert not out.exists()
    out.mkdir()
    assert main(["export", str(_fake_artifact(tmp_path, "w4a16-g32")), "--to", "gguf", "--out", str(out)]) == 2
    assert list(out.iterdir()) == []  # an existing --out without --force is left alone


def test_cli_export_messages_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.cli.main import main

    art = _fake_artifact(tmp_path, "w3a16-g64")
    assert main(["export", str(art), "--to", "gguf", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot hold w3a16-g64 exactly" in err and "--allow-requantize" in err and "Traceback" not in err


def test_planner_runs_an_exported_plan_as_its_target_type_and_says_how_to_make_it() -> None:
    from quantmatch.planner import plan

    p = plan("smollm2-135m", device=SPR, tolerance="chat")
    rows = {(c.method, c.scheme, c.backend): c for c in p.candidates}
    c = rows.get(("gptq", "w8a16", "llama.cpp"))
    assert c is not None and c.export_format == "gguf"
    assert c.command is not None and "--format gguf" in c.command
    q8 = rows[("gguf", "gguf-q8_0", "llama.cpp")]
    assert c.decode.tokens_per_s == pytest.approx(q8.decode.tokens_per_s, rel=0.15)  # runs as Q8_0
    assert json.loads(json.dumps(c.to_dict()))["export_format"] == "gguf"


# ---- end to end on the tiny Llama: real artifacts, real runtimes ----------------------------------------------

@pytest.fixture(scope="module")
def rtn_g32(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from quantmatch.sdk.pipeline import quantize

    return quantize(tiny_llama_dir, "rtn", "w4a16-g32", tmp_path_factory.mktemp("rtn") / "art", threads=1).artifact


def test_cli_export_to_gguf_loads_and_runs_where_the_format_is_made_for(rtn_g32: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_cpp")
    from quantmatch.cli.main import main
    from quantmatch.sdk.artifact import read_manifest
    from quantmatch.sdk.evaluate import evaluate
    from quantmatch.sdk.pipeline import load_artifact

    out = tmp_path / "gguf"
    assert main(["export", str(rtn_g32), "--to", "gguf", "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["export"]
    assert data["format"] == "gguf" and data["runs_as"] == "gguf-q4_0" and data["exact"] is True
    m = read_manifest(out)
    assert (m.method, m.scheme, m.artifact_format) == ("rtn", "w4a16-g32", "gguf")
    assert m.details["exported_by"] == "gguf" and m.details["exported_from"] == str(rtn_g32.resolve())
    assert m.details["tensor_types"]["q4_0"] == 14 and m.details["requantized"] == []
    assert sorted(p.name for p in out.iterdir()) == ["model.gguf", "quantmatch.json"]
    # loading dispatches on the format (the gguf plugin), not on the method that made the codes
    loaded = load_artifact(out)
    assert loaded.tokenizer is None and type(loaded.model).__name__ == "GGUFModel"
    ours = evaluate(out, tokens=256, window=128, reference="none", threads=1)
    theirs = evaluate(rtn_g32, tokens=256, window=128, reference="none", threads=1)
    assert ours.runtime == "llama.cpp" and theirs.runtime == "torch"
    # the same codes: perplexity within the kernels' rounding (llama.cpp rounds activations to Q8_0 blocks)
    assert ours.perplexity == pytest.approx(theirs.perplexity, rel=0.01)
    # replacing needs --force; an exporter option that does not exist is refused before anything is written
    assert main(["export", str(rtn_g32), "--to", "gguf", "--out", str(out)]) == 2
    assert main(["export", str(rtn_g32), "--to", "gguf", "--out", str(tmp_path / "x"), "--option", "nope=1"]) == 2
    assert "head" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["export", str(rtn_g32), "--to", "gguf", "--out", str(out), "--force", "--option", "head=q8_0"]) == 0
    assert read_manifest(out).details["head"] == "q8_0"


def test_quantize_with_format_writes_the_export_only(tiny_llama_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    from quantmatch.sdk.pipeline import quantize

    res = quantize(tiny_llama_dir, "rtn", "w8a16", tmp_path / "q8", artifact_format="gguf", threads=1)
    assert res.manifest.artifact_format == "gguf" and res.manifest.details["runs_as"] == "gguf-q8_0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q8"]  # the intermediate checkpoint is gone
    with pytest.raises(UnknownChoiceError, match="Valid export formats: gguf, onnx"):
        quantize(tiny_llama_dir, "rtn", "w4a16-g64-asym", tmp_path / "no", artifact_format="onnx-nope")
    with pytest.raises(ExportRefused, match=r"llama\.cpp quantizes activations itself"):  # before quantizing
        quantize(tiny_llama_dir, "rtn", "w8a8-int8", tmp_path / "no", artifact_format="gguf")
    assert not (tmp_path / "no").exists()


def test_bench_runs_an_exported_combination(tiny_llama_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from quantmatch.measure.bench import Bench, Combo
    from quantmatch.sdk.runner import MeasureConfig

    cfg = MeasureConfig(tokens=256, window=128, prompt=16, new_tokens=4, batch=2, repeats=1, warmup=1)
    bench = Bench(str(tiny_llama_dir), config=cfg, threads=1, work_dir=tmp_path / "work", save=False,
                  quick_machine=True, timeout=600)
    combo = Combo("rtn", "w4a16-g32", "llama.cpp")
    assert bench.artifact_dir(combo).name == "rtn-w4a16-g32-gguf" and bench.export_format(combo) == "gguf"
    report = bench.run([combo])
    res = report.result(combo.key)
    assert res is not None and res.status == "ok", res and res.reason
    assert (bench.artifact_dir(Combo("rtn", "w4a16-g32", "torch")) / "quantmatch.json").is_file()  # made once
    assert "llama.cpp" in res.run["compute"] and res.run["perplexity"] > 1  # type: ignore[index]


def test_cli_quantize_format_refusals_come_with_the_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.cli.main import main

    args = ["quantize", "smollm2-135m", "--method", "gptq", "--out", "/nonexistent/out", "--dry-run"]
    assert main([*args, "--scheme", "w3a16-g64", "--format", "gguf"]) == 2
    assert "cannot hold w3a16-g64 exactly" in capsys.readouterr().err
    assert main([*args, "--scheme", "w4a16-g32", "--format", "tflite"]) == 2
    assert "Valid export formats: gguf, onnx" in capsys.readouterr().err
    assert main([*args, "--scheme", "w4a16-g32", "--format", "gguf"]) == 0
    assert main([*args, "--scheme", "w4a16-g32", "--format", "compressed-tensors"]) == 0  # the method's own
