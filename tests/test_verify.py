"""``quantmatch verify``: real microbenchmarks on this CPU, judged against the registry's claimed levels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantmatch.measure import RUNNERS
from quantmatch.measure.verify import COMPUTE_WIN, MEMORY_WIN, Probe, judge, observed_level, probe_key, verify
from quantmatch.registry import Registry
from quantmatch.sdk.store import read_evidence

pytest.importorskip("torch")
onnx_needed = pytest.mark.skipif(RUNNERS["onnxruntime"].missing() != [], reason="onnxruntime/onnx not installed")


def probe(speedup: float, weight_ratio: float, gemv: float = 1.0) -> Probe:
    """A probe whose timings give these ratios (fp32 takes 1 ms at M=256 and at M=1)."""
    return Probe("k", (256, 1536, 1536), 1e-3, 1e-3 / speedup, 1e-3, 1e-3 / gemv, 1000, int(1000 / weight_ratio))


def test_observed_levels_and_judgement() -> None:
    assert observed_level(probe(COMPUTE_WIN + 0.5, 4)) == "native"
    assert observed_level(probe(0.9, MEMORY_WIN + 1)) == "weight-only"
    assert observed_level(probe(0.5, 1.0)) == "emulated"
    assert judge("native", probe(2.0, 4)) == (True, "native")
    assert judge("native", probe(0.05, 4)) == (False, "weight-only")  # int8 weights, no compute win: drift
    assert judge("weight-only", probe(0.9, 6.4)) == (True, "weight-only")
    assert judge("weight-only", probe(1.9, 6.4)) == (False, "native")
    assert judge("emulated", probe(0.4, 2.0, gemv=0.5)) == (True, "emulated")  # fp8 weights, slower: no win
    assert judge("emulated", probe(0.4, 2.0, gemv=1.6)) == (False, "weight-only")
    p = probe(2.0, 4)
    assert "2.00x fp32" in p.figure() and "0.25x fp32 bytes" in p.figure()


def test_probe_keys() -> None:
    assert probe_key("onnx", "w8a8-int8", "onnxruntime") == ("ort:w8a8-int8", "")
    assert probe_key("rtn", "w8a8-int8", "torch") == probe_key("smoothquant", "w8a8-int8", "torch")
    assert probe_key(None, "bf16", "torch") == ("torch-bf16", "")
    assert probe_key(None, "fp32", "torch")[0] is None
    assert probe_key("gguf", "gguf-q4_k_m", "llama.cpp") == ("gguf:q4_k_m", "")
    key, why = probe_key("gptq", "w4a16-g64", "vllm")
    assert key is None and "no runner for vllm" in why
    # compressed-tensors weight-only checkpoints on torch: one probe per scheme, whichever method wrote it
    assert probe_key("gptq", "w4a16-g64", "torch") == probe_key("rtn", "w4a16-g64", "torch") == ("ct:w4a16-g64", "")
    assert probe_key("awq", "w4a16-g128-asym", "torch") == ("ct:w4a16-g128-asym", "")
    assert probe_key("fp8", "w8a16-fp8", "torch") == ("ct:w8a16-fp8", "")
    key, why = probe_key("rtn", "w4a16-nvfp4", "torch")
    assert key is None and "w4a16-nvfp4" in why


def test_compressed_tensors_layer_is_packed_until_its_first_forward() -> None:
    """What the probe times: the library's packed int4 layer, which its first forward decompresses to fp32."""
    pytest.importorskip("compressed_tensors")
    import torch

    from quantmatch.plugins.backends.torch_probes import compressed_linear
    from quantmatch.plugins.backends.torch_runner import module_bytes

    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 128, bias=False).eval().requires_grad_(False)
    w = lin.weight.detach().clone()
    x = torch.randn(3, 256)
    with torch.inference_mode():
        q = compressed_linear(lin, "w4a16-g64")
        packed = module_bytes(q, skip_input_embedding=False)
        y = q(x)
    # int4 codes packed in int32 plus one fp32 scale per 64 weights: 4.5 bits a weight
    assert packed == pytest.approx(w.nelement() * (4 + 32 / 64) / 8, abs=64)
    assert q[0].weight.dtype == torch.float32 and q[0].weight.shape == w.shape
    assert module_bytes(q, skip_input_embedding=False) >= w.nelement() * 4
    rel = float((y - x @ w.T).norm() / (x @ w.T).norm())
    assert 0 < rel < 0.2  # the int4 weights' outputs, not fp32's and not garbage


def test_verify_checks_compressed_tensors_weight_only_claims(tmp_path: Path) -> None:
    pytest.importorskip("compressed_tensors")
    report = verify(threads=1, store=tmp_path / "results.sqlite",
                    only=lambda m, s, b: b == "torch" and s == "w4a16-g64")
    checks = {c.method: c for c in report.checks}
    assert {"gptq", "rtn"} <= set(checks)
    assert len({c.figure for c in checks.values()}) == 1  # one kernel, measured once
    c = checks["gptq"]
    assert c.claimed == "weight-only" and c.probe is not None
    # the torch runner packs int4 g64 codes for PyTorch's CPU kernel (issue 17): the layer holds packed
    # nibbles, a memory win the registry claims and the probe measures
    assert "packed for PyTorch's CPU kernel" in c.kernel and "_weight_int4pack_mm_for_cpu" in c.kernel, c.kernel
    assert c.probe["weight_ratio"] >= MEMORY_WIN, c.probe
    ev = read_evidence(report.device, tmp_path / "results.sqlite")[("gptq", "w4a16-g64", "torch")]
    assert ev[0].kind == "verify"


@onnx_needed
def test_verify_measures_int8_gemm_on_this_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "results.sqlite"
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(db))
    wanted = {("onnxruntime", "w8a8-int8"), ("torch", "w8a8-int8")}
    report = verify(threads=1, only=lambda m, s, b: (b, s) in wanted)
    checks = {(c.method, c.backend): c for c in report.checks}
    ort = checks[("onnx", "onnxruntime")]
    # MatMulInteger through ONNX Runtime's MLAS kernels: integer math, measurably faster than fp32 here
    assert ort.claimed == "native" and ort.status == "agrees", ort.figure
    assert ort.probe and ort.probe["compute_speedup"] >= COMPUTE_WIN
    assert ort.probe["weight_ratio"] == pytest.approx(4, rel=0.01)
    assert "MatMulInteger" in ort.kernel
    torch_checks = [c for (m, b), c in checks.items() if b == "torch"]
    assert torch_checks and all(c.status in ("agrees", "drift") and c.figure for c in torch_checks)
    assert len({c.figure for c in torch_checks}) == 1  # one kernel, measured once for every method on it
    assert report.exit_code == (1 if any(c.status == "drift" for c in report.checks) else 0)
    v = Registry().verdict("onnx", "w8a8-int8", "onnxruntime", "local")
    ev = [e for e in v.evidence if e.kind == "verify"]
    assert ev and ev[0].agrees is True and ev[0].figure.startswith("agrees (native)")
    assert "onnxruntime" in ev[0].versions


@onnx_needed
def test_cli_verify_json(capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.cli import main

    code = main(["verify", "--backend", "onnxruntime", "--scheme", "w4a32-g32", "--threads", "1", "--no-store",
                 "--json"])
    out = json.loads(capsys.readouterr().out)["verify"]
    assert [(c["method"], c["scheme"], c["claimed"]) for c in out["checks"]] == [("onnx", "w4a32-g32", "weight-only")]
    check = out["checks"][0]
    assert check["status"] in ("agrees", "drift") and check["probe"]["weight_ratio"] > MEMORY_WIN
    assert code == (1 if check["status"] == "drift" else 0)
    assert out["store"] == ""


@pytest.mark.slow
@onnx_needed
def test_every_probe_runs_on_this_machine(tmp_path: Path) -> None:
    """The whole verify: every runnable combination is judged or says why not; no microbenchmark fails."""
    report = verify(threads=1, store=tmp_path / "results.sqlite")
    assert report.count("failed") == 0, [(c.method, c.scheme, c.backend, c.note) for c in report.checks
                                         if c.status == "failed"]
    judged = {(c.backend, c.scheme) for c in report.checks if c.status in ("agrees", "drift")}
    assert {("onnxruntime", "w8a8-int8"), ("onnxruntime", "w4a32-g32"), ("hqq", "w4a16-g64-asym"),
            ("optimum-quanto", "w8a16"), ("llama.cpp", "gguf-q8_0"), ("torch", "bf16")} <= judged
    assert all(c.note for c in report.checks if c.status == "unchecked")
    assert Path(report.store).is_file()
