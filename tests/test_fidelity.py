"""Fidelity: KL divergence, same top token, flips and intervals against a direct numpy computation; the
compact reference against the full one; eval and compare on real (tiny and bundled) models."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import tiny_llama  # noqa: F401  (fixture)

from quantmatch.cli import main
from quantmatch.sdk.fidelity import (
    FidelityError,
    Reference,
    compute_reference,
    kl_full,
    score,
    summarize,
)

V = 400


class FixedLogits:
    """Scores a window with logits drawn from a seed and the window's tokens: the same window always gets the
    same logits (an input for the computation under test, like a runner's output)."""

    def __init__(self, seed: int, noise: float = 0.0, sharp: float = 4.0) -> None:
        self.seed, self.noise, self.sharp = seed, noise, sharp

    def logits(self, ids: list[int]) -> np.ndarray:
        rng = np.random.default_rng([self.seed, len(ids), *ids[:4]])
        base = self.sharp * rng.standard_normal((len(ids), V))
        if self.noise:
            base = base + self.noise * np.random.default_rng([99, len(ids), *ids[:4]]).standard_normal(base.shape)
        return base.astype(np.float32)


def direct(ref: FixedLogits, q: FixedLogits, ids: list[int], window: int) -> dict[str, np.ndarray]:
    """Everything computed the obvious way, full vocabulary, float64."""
    out: dict[str, list[Any]] = {"kld": [], "same": [], "nll_ref": [], "nll": [], "ref_right": [], "right": []}
    for s in range(0, len(ids), window):
        chunk = ids[s: s + window]
        if len(chunk) < 2:
            continue
        a = ref.logits(chunk)[:-1].astype(np.float64)
        b = q.logits(chunk)[:-1].astype(np.float64)
        p = np.exp(a - a.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        r = np.exp(b - b.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        tgt = np.asarray(chunk[1:])
        out["kld"].append((p * np.log(p / r)).sum(1))
        out["same"].append(p.argmax(1) == r.argmax(1))
        out["nll_ref"].append(-np.log(p[np.arange(len(p)), tgt]))
        out["nll"].append(-np.log(r[np.arange(len(r)), tgt]))
        out["ref_right"].append(p.argmax(1) == tgt)
        out["right"].append(r.argmax(1) == tgt)
    return {k: np.concatenate(v) for k, v in out.items()}


IDS = [int(t) for t in np.random.default_rng(1).integers(0, V, 300)]


def test_exact_with_the_whole_vocabulary() -> None:
    ref = compute_reference(FixedLogits(0), IDS, 128, top_k=V)
    s = score(FixedLogits(0, noise=0.5), ref)
    d = direct(FixedLogits(0), FixedLogits(0, noise=0.5), IDS, 128)
    assert ref.positions == 127 + 127 + 43
    np.testing.assert_allclose(s.kld, d["kld"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(s.nll, d["nll"], rtol=1e-6)
    np.testing.assert_allclose(s.nll_ref, d["nll_ref"], rtol=1e-6)
    assert (s.same_top == d["same"]).all() and (s.right == d["right"]).all() and (s.ref_right == d["ref_right"]).all()
    assert 0.2 < s.same_top.mean() < 0.99  # the noise changes some top tokens, not all


@pytest.mark.parametrize("k", [1, 4, 32])
def test_top_k_falls_short_by_exactly_the_tail_term(k: int) -> None:
    ref_scorer, q_scorer = FixedLogits(3), FixedLogits(3, noise=0.4)
    compact = score(q_scorer, compute_reference(ref_scorer, IDS, 128, top_k=k)).kld
    full = direct(ref_scorer, q_scorer, IDS, 128)["kld"]
    assert (compact <= full + 1e-9).all()  # the log-sum inequality: never above the full divergence
    # the gap is the reference's tail mass times the divergence within the tail (the documented bound)
    gap = []
    for s in range(0, len(IDS), 128):
        chunk = IDS[s: s + 128]
        a = ref_scorer.logits(chunk)[:-1].astype(np.float64)
        b = q_scorer.logits(chunk)[:-1].astype(np.float64)
        lp = a - np.log(np.exp(a - a.max(1, keepdims=True)).sum(1, keepdims=True)) - a.max(1, keepdims=True)
        lq = b - np.log(np.exp(b - b.max(1, keepdims=True)).sum(1, keepdims=True)) - b.max(1, keepdims=True)
        top = np.argsort(-lp, axis=1)[:, :k]
        mask = np.ones_like(lp, bool)
        np.put_along_axis(mask, top, False, axis=1)
        pt, qt = np.where(mask, np.exp(lp), 0), np.where(mask, np.exp(lq), 0)
        prest, qrest = pt.sum(1), qt.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            inner = np.where(mask, (pt / prest[:, None]) * np.log((pt / prest[:, None]) / (qt / qrest[:, None])), 0)
        gap.append(prest * np.nansum(inner, axis=1))
    np.testing.assert_allclose(full - compact, np.concatenate(gap), atol=2e-6)


class WithHead(FixedLogits):
    """Logits that are a linear function of a last hidden state, with the head exposed (as the torch runner
    does for a reference model); ``cap`` applies a soft cap afterwards, which the head cannot reproduce."""

    D = 16

    def __init__(self, seed: int, cap: float | None = None) -> None:
        super().__init__(seed)
        rng = np.random.default_rng(seed + 100)
        self.weight = rng.standard_normal((V, self.D)).astype(np.float32)
        self.bias = rng.standard_normal(V).astype(np.float32)
        self.cap = cap

    def output_head(self) -> tuple[np.ndarray, np.ndarray]:
        return self.weight, self.bias

    def final_hidden(self, ids: list[int]) -> np.ndarray:
        return np.random.default_rng([self.seed, len(ids), *ids[:4]]).standard_normal((len(ids), self.D)).astype(
            np.float32)

    def logits(self, ids: list[int]) -> np.ndarray:
        x = self.final_hidden(ids) @ self.weight.T + self.bias
        return (self.cap * np.tanh(x / self.cap) if self.cap else x).astype(np.float32)


def test_exact_reference_through_the_output_head() -> None:
    ref_scorer = WithHead(7)
    ref = compute_reference(ref_scorer, IDS, 128)
    assert ref.exact and ref.meta["form"] == "exact" and ref.top_k == V
    assert ref.hidden is not None and ref.hidden.shape == (ref.positions, WithHead.D)
    s = score(FixedLogits(0, noise=0.5), ref)
    full = []
    for _, chunk in ref.chunks():
        full.append(kl_full(ref_scorer.logits(chunk)[:-1], FixedLogits(0, noise=0.5).logits(chunk)[:-1]))
    np.testing.assert_allclose(s.kld, np.concatenate(full), rtol=1e-4, atol=1e-6)
    capped = compute_reference(WithHead(7, cap=3.0), IDS, 128)  # not linear in the hidden state: compact form
    assert not capped.exact and capped.meta["form"] == "top-k"
    assert "not a plain linear" in capped.meta["exact_unavailable"]


def test_summary_against_numpy_and_the_wilson_formula() -> None:
    ref = compute_reference(FixedLogits(5), IDS, 100, top_k=V)
    s = score(FixedLogits(5, noise=0.3), ref)
    f = summarize(s, V)
    d = direct(FixedLogits(5), FixedLogits(5, noise=0.3), IDS, 100)
    n = len(d["kld"])
    assert f.tokens == n
    assert f.kld_mean == pytest.approx(d["kld"].mean(), rel=1e-5)
    assert f.kld_ci95 == pytest.approx(1.959964 * d["kld"].std(ddof=1) / math.sqrt(n), rel=1e-4)
    assert f.kld_p99 == pytest.approx(np.percentile(d["kld"], 99), rel=1e-4)
    assert f.kld_median == pytest.approx(np.median(d["kld"]), rel=1e-4)
    assert f.kld_max == pytest.approx(d["kld"].max(), rel=1e-5)
    assert f.top1_pct == pytest.approx(100 * d["same"].mean())
    assert f.ppl == pytest.approx(math.exp(d["nll"].mean()), rel=1e-6)
    assert f.ppl_ratio == pytest.approx(math.exp(d["nll"].mean() - d["nll_ref"].mean()), rel=1e-6)
    assert f.flips_lost == int((d["ref_right"] & ~d["right"]).sum())
    assert f.flips_gained == int((~d["ref_right"] & d["right"]).sum())
    assert sum(f.histogram) == n
    # Wilson 95% interval, worked by hand for 95 of 100: (0.8883, 0.9785)
    hits = np.zeros(100, bool)
    hits[:95] = True
    w = summarize(type(s)(np.zeros(100), np.zeros(100), np.full(100, 0.01), hits, hits, hits))
    assert (w.top1_low, w.top1_high) == (pytest.approx(88.83, abs=0.01), pytest.approx(97.85, abs=0.01))
    assert w.kld_ci95 < 1e-15 and w.histogram[3] == 100  # 0.01 falls in the (1e-3, 1e-2] decade


def test_kl_full_is_zero_for_the_same_distribution() -> None:
    x = FixedLogits(0).logits(IDS[:10])
    assert np.abs(kl_full(x, x)).max() < 1e-12
    assert (kl_full(x, x + np.float32(3.0)) < 1e-9).all()  # a shift of every logit is the same distribution


def test_reference_file_round_trip_and_refusal(tmp_path: Path) -> None:
    ref = compute_reference(FixedLogits(0), IDS, 128, top_k=8, meta={"model": "m"})
    path = ref.save(tmp_path / "sub" / "ref.npz")
    assert [p.name for p in path.parent.iterdir()] == ["ref.npz"]  # no temporary file left behind
    back = Reference.load(path)
    assert back.meta["model"] == "m" and back.top_k == 8 and back.window == 128
    np.testing.assert_array_equal(back.top_ids, ref.top_ids)
    np.testing.assert_array_equal(back.ids, ref.ids)
    (tmp_path / "bad.npz").write_bytes(b"not a reference")
    with pytest.raises(FidelityError, match="not a quantmatch reference file"):
        Reference.load(tmp_path / "bad.npz")


def test_vocabulary_mismatch_is_refused() -> None:
    ref = compute_reference(FixedLogits(0), IDS, 128, top_k=4)

    class Small:
        def logits(self, ids: list[int]) -> np.ndarray:
            return np.zeros((len(ids), 10), np.float32)

    with pytest.raises(FidelityError, match="vocabulary"):
        score(Small(), ref)


# ---- real models ------------------------------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QUANTMATCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_eval_measures_fidelity_against_the_manifest_model(tiny_llama: Path, tmp_path: Path,  # noqa: F811
                                                          cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    import quantmatch

    art = quantmatch.quantize(tiny_llama, "rtn", "w4a16-g32", tmp_path / "w4")
    code, first = run_json(capsys, "eval", str(art.artifact), "--tokens", "300", "--window", "128")
    assert code == 0
    ev = first["evaluation"]
    f = ev["fidelity"]
    assert ev["reference"]["model"] == str(tiny_llama) and ev["reference"]["cached"] is False
    assert ev["runtime"] == "torch" and ev["tokenizer_agrees"] is True and ev["reference"]["form"] == "exact"
    assert f["tokens"] == 127 + 127 + 43 and f["kld_mean"] > 0 and 0 < f["top1_pct"] <= 100
    assert ev["perplexity"] == pytest.approx(f["ppl"], rel=1e-6)
    assert len(list((cache / "fidelity").glob("reference-*.npz"))) == 1
    code, second = run_json(capsys, "eval", str(art.artifact), "--tokens", "300", "--window", "128")
    assert second["evaluation"]["reference"]["cached"] is True
    assert second["evaluation"]["fidelity"]["kld_mean"] == pytest.approx(f["kld_mean"], rel=1e-6)
    code, plain = run_json(capsys, "eval", str(art.artifact), "--tokens", "300", "--window", "128",
                           "--reference", "none")
    assert plain["evaluation"]["fidelity"] is None
    assert plain["evaluation"]["perplexity"] == pytest.approx(ev["perplexity"], rel=1e-6)
    # the model against itself: no divergence, every top token the same
    code, same = run_json(capsys, "eval", str(tiny_llama), "--tokens", "300", "--window", "128",
                          "--reference", str(tiny_llama))
    g = same["evaluation"]["fidelity"]
    assert g["kld_mean"] < 1e-9 and g["top1_pct"] == 100.0 and g["ppl_ratio"] == pytest.approx(1.0)


def test_compare_ranks_by_divergence(tiny_llama: Path, tmp_path: Path, cache: Path,  # noqa: F811
                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    import quantmatch

    w8 = quantmatch.quantize(tiny_llama, "rtn", "w8a16", tmp_path / "w8").artifact
    w3 = quantmatch.quantize(tiny_llama, "rtn", "w3a16-g32", tmp_path / "w3").artifact
    code, out = run_json(capsys, "compare", str(w3), str(w8), "--tokens", "300", "--window", "128")
    assert code == 0
    rows = out["comparison"]["artifacts"]
    assert [r["scheme"] for r in rows] == ["w8a16", "w3a16-g32"]  # ranked best first, whatever the order given
    assert rows[0]["fidelity"]["kld_mean"] < rows[1]["fidelity"]["kld_mean"]
    assert rows[0]["size_bytes"] > rows[1]["size_bytes"]
    assert len(list((cache / "fidelity").glob("reference-*.npz"))) == 1  # one reference for both
    assert main(["compare", str(w8)]) == 2
    assert "at least two" in capsys.readouterr().err
    main(["compare", str(w8), str(w3), "--text", str(tmp_path / "missing.txt")])
    assert "no such text file" in capsys.readouterr().err


def test_compare_refuses_artifacts_of_different_models(tiny_llama: Path, tmp_path: Path, cache: Path,  # noqa: F811
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    import shutil

    from tiny_models import llama_config, save_tiny_model

    import quantmatch

    other = save_tiny_model(tmp_path / "other", llama_config(tie=True), seed=1)
    a = quantmatch.quantize(tiny_llama, "rtn", "w8a16", tmp_path / "a").artifact
    b = quantmatch.quantize(other, "rtn", "w8a16", tmp_path / "b").artifact
    shutil.rmtree(other)  # the manifests name different models: refused before anything loads
    assert main(["compare", str(a), str(b)]) == 2
    assert "different models" in capsys.readouterr().err
    # eval of an artifact whose model is gone: perplexity alone, with the reason and the flag
    code, out = run_json(capsys, "eval", str(b), "--tokens", "200", "--window", "100")
    assert code == 0 and out["evaluation"]["fidelity"] is None and out["evaluation"]["perplexity"] > 1
    assert "--reference MODEL" in out["evaluation"]["reference"]["error"]
    assert main(["eval", str(b), "--tokens", "200", "--reference", str(other)]) == 2  # asked for: an error


@pytest.mark.slow
def test_gguf_file_scores_alike_in_llama_cpp_and_dequantized_in_torch(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The same Q4_0 file: llama.cpp (its own kernels, 8-bit activations in the dot products) and torch on
    the dequantized weights agree on mean KL divergence within 5% or 0.001."""
    pytest.importorskip("llama_cpp")
    import quantmatch

    art = quantmatch.quantize("smollm2-135m", "gguf", "gguf-q4_0", tmp_path / "q4_0")
    gguf = str(art.artifact / "model.gguf")
    figures = {}
    for runtime in ("llama.cpp", "torch"):
        code, out = run_json(capsys, "eval", gguf, "--reference", "smollm2-135m", "--tokens", "1024",
                             *(["--runtime", runtime] if runtime == "torch" else []))
        assert code == 0
        assert out["evaluation"]["runtime"] == runtime  # a bare .gguf file runs in llama.cpp unless told
        figures[runtime] = out["evaluation"]["fidelity"]["kld_mean"]
    a, b = figures["llama.cpp"], figures["torch"]
    assert abs(a - b) <= max(0.001, 0.05 * b), figures
    assert 0.05 < b < 1.0  # a real 4-bit loss, not a trivially equal pair


@pytest.mark.slow
def test_exact_reference_equals_the_full_distributions_on_the_bundled_model(tmp_path: Path) -> None:
    """The exact reference (hidden states and LM head) against every one of the 49,152 log-probabilities kept,
    on a real 4-bit artifact; the top-32 compact form is a lower bound, well short on this flat-tailed model."""
    pytest.importorskip("llama_cpp")
    import quantmatch
    from quantmatch.sdk.calibration import packaged_text
    from quantmatch.sdk.evaluate import token_ids
    from quantmatch.sdk.pluginhost import get_host
    from quantmatch.sdk.runner import MeasureConfig

    art = quantmatch.quantize("smollm2-135m", "gguf", "gguf-q4_k_m", tmp_path / "q4km")
    host = get_host()
    ref_runner = host.reference_runner()
    ref_runner.load("smollm2-135m")
    ids = token_ids(ref_runner.tokenize, packaged_text("tiny-shakespeare-heldout"), 512)
    refs = {"exact": compute_reference(ref_runner, ids, 512), "full": compute_reference(ref_runner, ids, 512, 49152),
            "top32": compute_reference(ref_runner, ids, 512, 32)}
    ref_runner.close()
    assert refs["exact"].exact and not refs["full"].exact
    runner = host.runner_for_format("gguf")
    runner.configure(MeasureConfig(tokens=512, window=512, batch=1))
    runner.load(art.artifact)
    f = {k: summarize(score(runner, r)) for k, r in refs.items()}
    runner.close()
    assert f["exact"].kld_mean == pytest.approx(f["full"].kld_mean, rel=1e-4)
    assert f["exact"].kld_p99 == pytest.approx(f["full"].kld_p99, rel=1e-3)
    assert f["exact"].top1_pct == f["full"].top1_pct == f["top32"].top1_pct
    assert 0.5 * f["full"].kld_mean < f["top32"].kld_mean < f["full"].kld_mean
