"""The crossover (planner/crossover.py): the batch at which a plan stops beating 16-bit and 8-bit plans.

The expected batches are derived here from the roofline's formula, not read from the planner: a
weight-only int4 plan that dequantizes in the kernel is compute-bound at the crossover
(``B x F / (peak x compute_eff x format_eff)``) while the 16-bit plan is still memory-bound
(``(W16 + B x k) / (bandwidth x bandwidth_eff)``); both add the runtime's dispatch overhead, and
"beats" means more than 1% faster (``TIE``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest

from quantmatch.cli import main
from quantmatch.planner import plan
from quantmatch.planner.crossover import TIE, Crossover, crossovers, is_eight_bit
from quantmatch.planner.hardware import Peak, device_spec
from quantmatch.planner.priors import runtime_priors
from quantmatch.registry import Registry
from quantmatch.sdk.model_info import ModelInfo

W4 = "w4a16-g128"


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def _tiny() -> ModelInfo:
    return ModelInfo(model_type="llama", hidden_size=1024, intermediate_size=4096, num_layers=4, num_heads=16,
                     num_kv_heads=4, head_dim=64, vocab_size=32000, max_position_embeddings=8192, name="tiny")


def _hand_decode_crossover(info: ModelInfo, bw_gbs: float, fp16_tflops: float, reg: Registry,
                           prompt: int, gen: int) -> float:
    """The batch at which vLLM's W4A16 decode step stops being 1% faster than vLLM's BF16 one, by hand.

    Per sequence and step: F = 2 x (linear weights + LM head) + 4 x heads x head_dim x context x layers FLOPs;
    k = KV cache (2 x layers x kv_heads x head_dim x 2 bytes x context) + activations (hidden x 2 bytes x 2 x
    layers). W16 = 2 bytes x (linear weights + LM head + norms)."""
    rt = runtime_priors("vllm", "cuda", reg)
    h, i, L, V = info.hidden_size, info.intermediate_size, info.num_layers, info.vocab_size
    q, kv = info.num_heads * info.head_dim, info.num_kv_heads * info.head_dim
    linear = L * (h * q + 2 * h * kv + q * h + 3 * h * i)
    head = V * h
    norms = L * 2 * h + h
    ctx = prompt + gen // 2
    flops = 2.0 * (linear + head) + 4.0 * info.num_heads * info.head_dim * ctx * L
    per_seq = L * kv * 2 * 2.0 * ctx + h * 2.0 * 2 * L
    w16 = 2.0 * (linear + head + norms)
    bw = bw_gbs * 1e9 * rt.bandwidth_eff
    rate4 = fp16_tflops * 1e12 * rt.compute_eff * rt.format_compute_eff["int4:fp16"]
    overhead = L * rt.layer_overhead_s + rt.step_overhead_s
    # B F / rate4 + O = (1 - TIE) ((W16 + B k) / bw + O)
    return ((1 - TIE) * w16 / bw - TIE * overhead) / (flops / rate4 - (1 - TIE) * per_seq / bw)


def _find(p: Any, scheme: str, backend: str, method: str | None = "rtn") -> Any:
    pool = list(p.candidates) + [r.candidate for r in p.rejections if r.candidate is not None]
    return next(c for c in pool if c.scheme == scheme and c.backend == backend and c.target == "cuda"
                and c.method == method)


def test_hand_computed_tiny_model(reg: Registry) -> None:
    info = _tiny()
    spec = device_spec(reg.device("a100"))
    peaks = {d: Peak(d, 100.0, "test", "sourced") for d in ("fp16", "bf16")}
    peaks["int8"] = Peak("int8", 200.0, "test", "sourced")
    spec = replace(spec, bandwidth_gbs=1000.0, peaks=MappingProxyType(peaks))
    p = plan(info, spec, prompt=64, gen=64, tolerance=1000, registry=reg)
    w4, bf16 = _find(p, W4, "vllm"), _find(p, "bf16", "vllm", None)
    assert w4.level == "weight-only"
    expected = _hand_decode_crossover(info, 1000.0, 100.0, reg, 64, 64)
    assert 2 < expected < 4096
    (x,) = crossovers(p, w4, reg, metric="decode", comparators=[bf16], vs="16-bit")
    assert x.status == "crosses"
    assert x.batch is not None and abs(x.batch - expected) <= 1, (x.batch, expected)
    # the regime the hand formula assumes: int4 compute-bound and bf16 memory-bound there
    at = plan(info, spec, batch=x.batch, prompt=64, gen=64, tolerance=1000, registry=reg)
    d4, d16 = _find(at, W4, "vllm").decode, _find(at, "bf16", "vllm", None).decode
    assert d4.ridge is not None and d4.intensity > d4.ridge  # compute time above memory time
    assert d16.ridge is not None and d16.intensity < d16.ridge
    assert x.winner == "BF16 (vllm)" and not x.tie


def test_llama_8b_a100_against_catalog_figures(reg: Registry) -> None:
    spec = device_spec(reg.device("a100"))
    fp16 = spec.peak("fp16")
    assert fp16 is not None and spec.bandwidth_gbs is not None
    p = plan("llama-3.1-8b", "a100", registry=reg)
    info = p.model.info
    assert (info.hidden_size, info.num_layers, info.vocab_size) == (4096, 32, 128256)
    w4, bf16 = _find(p, "w4a16-g128", "vllm", "gptq"), _find(p, "bf16", "vllm", None)
    expected = _hand_decode_crossover(info, spec.bandwidth_gbs, fp16.tflops, reg, 512, 256)
    (x,) = crossovers(p, w4, reg, metric="decode", comparators=[bf16], vs="16-bit")
    assert x.batch is not None and abs(x.batch - expected) <= 1, (x.batch, expected)
    # on these catalog figures (2039 GB/s, 312 TFLOPS) the decode step crosses at about 120 sequences
    assert 100 < expected < 140


def _request(p: Any, c: Any) -> float:
    return float(next(x for x in p.candidates if x.key == c.key).rank_request_s)


def test_request_crossover_matches_plans_at_neighbouring_batches(reg: Registry) -> None:
    """The search's integer batch agrees with two independent plans: one batch below it the candidate is more
    than 1% faster per request than the best 8-bit plan, at it not."""
    p = plan("llama-3.1-8b", "a100", registry=reg)
    top = p.top
    assert top is not None and top.crossover
    x8 = next(x for x in top.crossover if x.vs == "8-bit")
    assert x8.status == "crosses" and x8.batch is not None and x8.batch > 2
    for b, beats in ((x8.batch - 1, True), (x8.batch, False)):
        at = plan("llama-3.1-8b", "a100", batch=b, registry=reg)
        best8 = min((c for c in at.candidates if is_eight_bit(c)), key=lambda c: c.rank_request_s)
        assert (_request(at, top) < best8.rank_request_s * (1 - TIE)) is beats, b
    assert "up to batch ~" in x8.sentence and "NVIDIA A100" in x8.sentence


def test_eight_bit_is_native_eight_bit_weights(reg: Registry) -> None:
    p = plan("llama-3.1-8b", "h100", registry=reg)
    eights = {c.scheme for c in p.candidates if is_eight_bit(c)}
    assert "w8a8-fp8" in eights and "gguf-q8_0" in eights
    assert not any(s.startswith("w4") or s == "bf16" for s in eights)
    assert all(c.level == "native" for c in p.candidates if is_eight_bit(c))


def test_plan_json_has_crossover(reg: Registry) -> None:
    d = plan("llama-3.1-8b", "a100", registry=reg).to_dict()
    xs = d["crossover"]
    assert [x["vs"] for x in xs] == ["16-bit", "8-bit"]
    assert d["plans"][0]["crossover"] == xs
    assert set(xs[0]) >= {"vs", "comparator", "batch", "prompt", "winner", "sentence", "status"}
    assert isinstance(Crossover(**{**xs[0]}).to_dict(), dict)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_batch_sweep_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "llama-3.1-8b", "--device", "a100", "--batch", "1,8,32,128", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["batches"] == [1, 8, 32, 128]
    assert [r["batch"] for r in d["sweep"]] == [1, 8, 32, 128]
    tops = [r["top"]["scheme"] for r in d["sweep"]]
    # memory-bound at small batch: 4-bit weights win; compute-bound at 128: int8 math wins
    assert tops[0].startswith("w4a16") and tops[-1].startswith("w8a8")
    x8 = next(x for x in d["plans"][0]["crossover"] if x["vs"] == "8-bit")
    assert 8 < x8["batch"] <= 32  # where the winner changes in the sweep


def test_cli_batch_sweep_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "llama-3.1-8b", "--device", "a100", "--batch", "1,128")
    assert code == 0
    assert "Batch sweep" in out and "w8a8-int8" in out and "up to batch ~" in out


def test_cli_plan_prints_crossover(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "llama-3.1-8b", "--device", "a100")
    assert code == 0
    assert "Crossover: " in out and "faster than BF16" in " ".join(out.split())


def test_cli_single_batch_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "llama-3.1-8b", "--device", "a100", "--batch", "8", "--json")
    assert code == 0
    d = json.loads(out)
    assert "sweep" not in d and d["plans"][0]["workload"]["batch"] == 8


@pytest.mark.parametrize("bad", ["1,x", "1,0", "4,-2", "1,,8"])
def test_cli_bad_batch_list(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    code, _, err = run(capsys, "plan", "llama-3.1-8b", "--device", "a100", "--batch", bad)
    assert code == 2
    assert "--batch" in err and "1,8,32,128" in err and "Traceback" not in err


def test_cli_explain_crossover(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "gptq", "w4a16-g128", "vllm", "a100")
    assert code == 0
    flat = " ".join(out.split())
    assert "assuming llama-3.1-8b" in flat and "W4A16-G128 (vllm)" in flat and "up to batch ~" in flat
    code, out, _ = run(capsys, "explain", "gptq", "w4a16-g128", "vllm", "a100", "--json")
    d = json.loads(out)
    assert d["crossover"]["model"] == "llama-3.1-8b" and d["crossover"]["crossovers"][0]["vs"] == "16-bit"
