"""Quantized KV caches run for real: llama.cpp Q8_0/Q4_0 K/V, transformers' int8/int4 quantized cache (HQQ),
the runner contract that asks for them (``MeasureConfig.kv_cache``/``context``, ``Runner.kv_caches``,
``kv_cache_bytes``), the registry that no longer prunes them, and ``bench --context`` recording them.

Fast: tiny random Llamas. llama.cpp's quantized K needs a head dimension that is a multiple of its 32-value
blocks, so its tests use a tiny Llama with ``head_dim`` 32 (the shared fixture's is 16).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from tiny_models import llama_config, save_tiny_model

from quantmatch.measure import RUNNERS, MeasureConfig, RunnerError, measure, runner_for
from quantmatch.measure.run import time_generation
from quantmatch.sdk.errors import InputError
from quantmatch.sdk.evaluate import token_ids

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
np = pytest.importorskip("numpy")

TEXT = ("The weights are grouped and each group has one scale. " * 60) + "the model of the scale was not one. " * 60
gguf_needed = pytest.mark.skipif(RUNNERS["llama.cpp"].missing() != [], reason="llama-cpp-python not installed")
hqq_needed = pytest.mark.skipif(RUNNERS["hqq"].missing() != [], reason="hqq not installed")
CTX = MeasureConfig(tokens=400, window=400, prompt=16, new_tokens=4, batch=2, repeats=1, warmup=1)


def _llama_head32(out: Path) -> Path:
    """A tiny random Llama with ``head_dim`` 32 (hidden 128, 4 heads, 2 KV heads, tied), with the tiny tokenizer."""
    return save_tiny_model(out, llama_config(hidden=128, tie=True))


@pytest.fixture(scope="module")
def head32_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _llama_head32(tmp_path_factory.mktemp("tiny-llama-head32"))


@pytest.fixture(scope="module")
def head32_gguf(head32_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("llama_cpp")
    from quantmatch.plugins.methods.gguf_convert import convert_hf_to_gguf

    out = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    convert_hf_to_gguf(head32_dir, out, "f32")
    return out


# ---- the contract ------------------------------------------------------------------------------------
def test_measure_config_takes_a_kv_format_and_a_context() -> None:
    cfg = MeasureConfig(prompt=16, new_tokens=4, warmup=2, kv_cache="q8_0", context=4096)
    assert (cfg.decode_start, cfg.mean_decode_context) == (4096, 4096 + 2 + 2)
    assert MeasureConfig(prompt=16, new_tokens=4, warmup=2).decode_start == 16
    assert MeasureConfig(**cfg.to_dict()) == cfg  # what bench sends to its worker
    with pytest.raises(InputError, match=r"unknown KV-cache format 'q5_0'.*q8_0"):
        MeasureConfig(kv_cache="q5_0")
    with pytest.raises(InputError, match="context must be positive"):
        MeasureConfig(context=0)


def test_backends_and_their_runners_declare_the_same_kv_formats() -> None:
    from quantmatch.sdk.pluginhost import get_host

    host = get_host()
    for backend in ("llama.cpp", "torch"):
        assert host.runner_class(backend).kv_caches == host.backends[backend].obj.kv_caches
    assert RUNNERS["llama.cpp"].kv_caches == ("fp16", "bf16", "q8_0", "q4_0")
    assert RUNNERS["torch"].kv_caches == ("int8", "int4") and RUNNERS["onnxruntime"].kv_caches == ()


def test_an_unsupported_kv_format_is_refused_with_the_ones_that_run(tiny_llama_dir: Path) -> None:
    with pytest.raises(RunnerError, match=r"does not run a q8_0 KV cache; it runs the KV-cache formats int8, int4"):
        runner_for("torch", 1).configure(MeasureConfig(kv_cache="q8_0"))
    with pytest.raises(RunnerError, match=r"formats fp16, bf16, q8_0, q4_0"):
        RUNNERS["llama.cpp"].check_kv_cache("int8")
    with pytest.raises(RunnerError, match="only its default KV cache"):
        RUNNERS["onnxruntime"].check_kv_cache("int8")
    assert RUNNERS["onnxruntime"].check_kv_cache(None) is None
    # measure() refuses before loading anything, whatever the runner's own configure() does
    r = runner_for("onnxruntime", 1)
    with pytest.raises(RunnerError, match="only its default KV cache"):
        measure(r, tiny_llama_dir / "not-loaded", TEXT, MeasureConfig(kv_cache="int4"))


def test_the_registry_keeps_kv_formats_the_runtime_sets() -> None:
    from quantmatch.registry import Registry

    reg = Registry()
    for scheme in ("gguf-q4_0-kvq8_0", "gguf-q4_0-kvq4_0"):
        verdicts = {v.layer: v for v in reg.explain("gguf", scheme, "llama.cpp", "local")}
        assert verdicts["linear"].runnable and verdicts["kv-cache"].runnable, verdicts
    bad = reg.verdict("gguf", "gguf-q4_0-kvint8", "llama.cpp", "local")
    assert not bad.runnable
    assert bad.reasons[0].text == "llama.cpp sets its KV cache at run time to fp16, bf16, q8_0, q4_0, not int8"
    torch_kv = reg.explain("rtn", "w4a16-g64-kvint8", "torch", "local")
    assert all(v.runnable for v in torch_kv) and torch_kv[-1].level.value == "weight-only"
    # a KV format a method would have to write is still the method's to declare
    assert not reg.verdict("gptq", "w4a16-g64-kvfp8", "torch", "local").runnable


# ---- llama.cpp -----------------------------------------------------------------------------------------
def _llama_run(path: Path, kv: str | None, ids: list[int]) -> tuple[Any, float, int, str, list[int]]:
    """(logits, nll, KV bytes after a 100-token prefill and 3 steps, compute, greedy tokens)."""
    r = runner_for("llama.cpp", 1)
    r.configure(MeasureConfig(tokens=400, window=400, prompt=100, new_tokens=3, batch=2, warmup=0, kv_cache=kv))
    r.load(path)
    try:
        logits, nll = r.logits(ids), r.nll(ids)
        gen = time_generation(r, [ids[:100]], 3)
        assert r.cached_tokens() == 103
        return logits, nll, r.kv_cache_bytes(), r.compute, list(gen.tokens[0])
    finally:
        r.close()


@gguf_needed
def test_llamacpp_runs_quantized_k_and_v(head32_gguf: Path) -> None:
    r = runner_for("llama.cpp", 1)
    r.load(head32_gguf)
    ids = token_ids(r.tokenize, TEXT, 300)
    r.close()
    runs = {kv: _llama_run(head32_gguf, kv, ids) for kv in (None, "fp16", "q8_0", "q4_0")}
    f16, q8, q4 = runs["fp16"], runs["q8_0"], runs["q4_0"]
    assert runs[None][3] == "llama.cpp CPU (F16 KV cache)" and q8[3] == "llama.cpp CPU (Q8_0 KV cache, flash attention)"
    assert np.array_equal(runs[None][0], f16[0])  # fp16 is the default cache
    # bytes per cached value: F16 2, Q8_0 34/32, Q4_0 18/32 (32-value blocks with an F16 scale); llama.cpp's
    # state also keeps each cell's position and sequence ids (12 bytes), which the tiny model's rows do not dwarf
    meta = 12 * 103
    assert (f16[2] - meta) / (q8[2] - meta) == pytest.approx(2 / (34 / 32), rel=0.02)
    assert (f16[2] - meta) / (q4[2] - meta) == pytest.approx(2 / (18 / 32), rel=0.02)
    per_token = 2 * 2 * 2 * 32 * 2  # layers, K and V, KV heads, head_dim, F16 bytes
    assert f16[2] - meta == pytest.approx(103 * per_token, rel=0.01)
    # the quantized cache shows in the scores from the first chunk on, more for 4 bits, and stays close
    d8, d4 = (float(np.abs(x[0] - f16[0]).max()) for x in (q8, q4))
    spread = float(f16[0].std())
    assert 0 < d8 < d4 < 0.5 * spread, (d8, d4, spread)
    assert q8[1] != f16[1] and abs(q8[1] / f16[1] - 1) < 0.01 and abs(q4[1] / f16[1] - 1) < 0.03
    assert all(0 <= t < 320 for t in q4[4])


@gguf_needed
def test_llamacpp_prefills_a_context_longer_than_one_batch(head32_gguf: Path, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Prompts beyond one llama_batch go in pieces and give the same next token (the batch cut at 64 here)."""
    from quantmatch.plugins.backends import llama_cpp_runner

    r = runner_for("llama.cpp", 1)
    r.configure(MeasureConfig(tokens=400, window=64, prompt=150, new_tokens=2, batch=2, warmup=0, kv_cache="q8_0"))
    r.load(head32_gguf)
    try:
        ids = token_ids(r.tokenize, TEXT, 300)
        whole = r.prefill([ids[:150], ids[150:300]])
        monkeypatch.setattr(llama_cpp_runner, "_BATCH", 64)
        assert r.prefill([ids[:150], ids[150:300]]) == whole
        assert (r.cached_tokens(0), r.cached_tokens(1)) == (150, 150)
        assert r.step(whole) and r.cached_tokens(1) == 151
    finally:
        r.close()


# ---- torch ---------------------------------------------------------------------------------------------
def _torch_runner(path: Path, kv: str | None) -> Any:
    r = runner_for("torch", 1)
    r.configure(MeasureConfig(kv_cache=kv))
    r.load(path)
    return r


@hqq_needed
def test_torch_quantized_cache_scores_through_the_cache_and_decodes(tiny_llama_dir: Path) -> None:
    from quantmatch.plugins.backends.torch_runner import KV_CHUNK

    plain = _torch_runner(tiny_llama_dir, None)
    ids = token_ids(plain.tokenize, TEXT, 400)
    ref = plain.logits(ids)
    plain.prefill([ids[:200]])
    plain.step([1])
    plain_bytes = plain.kv_cache_bytes()
    values = 2 * 2 * 2 * 16  # layers, K and V, KV heads, head_dim
    assert plain_bytes == 201 * values * 4  # fp32 DynamicCache
    diffs = {}
    for kv, bits in (("int8", 8), ("int4", 4)):
        r = _torch_runner(tiny_llama_dir, kv)
        try:
            assert r.output_head() is None  # fidelity scores the chunked logits, not a cache-less forward
            got = r.logits(ids)
            # the first chunk attends to itself unquantized; later chunks read earlier ones back quantized
            assert np.allclose(got[:KV_CHUNK], ref[:KV_CHUNK], atol=1e-4)
            diffs[kv] = float(np.abs(got[KV_CHUNK:] - ref[KV_CHUNK:]).max())
            x = got[:-1].astype(np.float64)
            lse = x.max(1) + np.log(np.exp(x - x.max(1)[:, None]).sum(1))
            assert r.nll(ids) == pytest.approx(float((lse - x[np.arange(len(x)), ids[1:]]).sum()), rel=1e-5)
            nxt = r.prefill([ids[:200], ids[200:400]])
            nxt = r.step(nxt)
            assert len(nxt) == 2 and r.cached_tokens() == 201
            # 200 prompt tokens quantized (codes, fp32 scale and zero per group of 16), 1 residual token in fp32,
            # for both sequences
            quantized = 200 * values * (bits / 8 + 2 * 4 / 16)
            assert r.kv_cache_bytes() == pytest.approx(2 * (quantized + values * 4))
            assert r.kv_value_bytes("float32") == bits / 8 + 2 * 4 / 64
        finally:
            r.close()
    assert 0 < diffs["int8"] < diffs["int4"] < 1.0, diffs
    plain.close()


# ---- bench ---------------------------------------------------------------------------------------------
@gguf_needed
@hqq_needed
def test_bench_runs_kv_formats_at_a_context(head32_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from quantmatch.measure.bench import Bench, parse_combos

    monkeypatch.setenv("QUANTMATCH_CACHE_DIR", str(tmp_path / "cache"))
    db = tmp_path / "results.sqlite"
    config = MeasureConfig(tokens=128, window=64, prompt=8, new_tokens=4, batch=2, repeats=1, warmup=1, context=96)
    bench = Bench(str(head32_dir), config=config, threads=1, work_dir=tmp_path / "work", store=db,
                  quick_machine=True, timeout=600)
    report = bench.run(parse_combos("gguf:gguf-q8_0-kvq8_0:llama.cpp,none:fp32-kvint8:torch,"
                                    "gguf:gguf-q8_0-kvint8:llama.cpp"))
    by = {r.combo.key: r for r in report.results}
    base, q8, t8 = by["none:fp32:torch"], by["gguf:gguf-q8_0-kvq8_0:llama.cpp"], by["none:fp32-kvint8:torch"]
    assert base.status == q8.status == t8.status == "ok", (base.reason, q8.reason, t8.reason)
    assert Path(q8.artifact).name == "gguf-gguf-q8_0"  # the artifact of the scheme without its -kv suffix
    tokens = 96 + 1 + 4  # the context, the warm-up step, the timed steps
    for res, kv in ((base, None), (q8, "q8_0"), (t8, "int8")):
        run = res.run
        assert (run["kv_cache"], run["context"], run["kv_tokens"]) == (kv, 96, tokens)
        assert run["kv_bytes"] > 0 and run["decode_tps"] > 0 and run["peak_rss_bytes"] > 0
        assert run["fidelity"] is not None
    assert base.run["kv_bytes"] == tokens * 2 * 2 * 2 * 32 * 4  # fp32 DynamicCache
    assert q8.run["kv_bytes"] == pytest.approx(tokens * (2 * 2 * 2 * 32 * 34 / 32 + 12), rel=0.01)
    assert "Q8_0 KV cache" in q8.run["compute"]
    skipped = by["gguf:gguf-q8_0-kvint8:llama.cpp"]
    assert skipped.status == "skipped" and "fp16, bf16, q8_0, q4_0, not int8" in skipped.reason
    con = sqlite3.connect(db)
    rows = dict((r[0], r[1:]) for r in con.execute("SELECT scheme, kv_cache, context, kv_bytes, decode_context "
                                                   "FROM results"))
    figure = con.execute("SELECT figure FROM evidence WHERE scheme = 'gguf-q8_0-kvq8_0'").fetchone()[0]
    con.close()
    assert rows["gguf-q8_0-kvq8_0"] == ("q8_0", 96, q8.run["kv_bytes"], 96 + 1 + 2)
    assert rows["fp32-kvint8"][:2] == ("int8", 96) and rows["fp32"][:2] == (None, 96)
    assert "q8_0 KV cache" in figure
