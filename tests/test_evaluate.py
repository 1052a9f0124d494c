"""Evaluation: the windowed perplexity protocol, sizes, memory, artifacts of every kind, bad input."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from tiny_models import tiny_llama  # noqa: F401  (fixture)

import quantmatch
from quantmatch.cli import main
from quantmatch.sdk.calibration import CalibrationError, CalibrationSpec, calibration_samples, packaged_text
from quantmatch.sdk.evaluate import evaluate, perplexity, token_ids
from quantmatch.sdk.models import resolve_model

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
WIKITEXT = REPO.parent / "shared" / "data" / "wikitext-2-raw-test.txt"


def reference_perplexity(model: object, ids: list[int], window: int) -> float:
    """The protocol written out with transformers' own loss (mean NLL per window, re-weighted)."""
    total, count = 0.0, 0
    for s in range(0, len(ids), window):
        chunk = torch.tensor(ids[s: s + window])[None]
        if chunk.shape[1] < 2:
            continue
        with torch.no_grad():
            loss = model(input_ids=chunk, labels=chunk).loss  # type: ignore[operator]
        total += float(loss) * (chunk.shape[1] - 1)
        count += chunk.shape[1] - 1
    return math.exp(total / count)


def test_windowed_perplexity_matches_transformers_loss(tiny_llama: Path) -> None:  # noqa: F811
    model, tok = resolve_model(tiny_llama).load()
    ids = tok(packaged_text("tiny-shakespeare-heldout"), add_special_tokens=False)["input_ids"][:100]
    ppl, predicted, windows = perplexity(model, ids, 32)
    assert (predicted, windows) == (31 * 3 + 3, 4)  # windows of 32, 32, 32 and 4 tokens
    assert ppl == pytest.approx(reference_perplexity(model, ids, 32), rel=1e-5)
    _, predicted65, windows65 = perplexity(model, ids[:65], 32)
    assert (predicted65, windows65) == (62, 2)  # a last window of one token predicts nothing
    # a random model is close to uniform over its 320 ids, far from a trained one
    assert 100 < ppl < 1000


def test_token_prefix_equals_full_tokenization(tiny_llama: Path) -> None:  # noqa: F811
    _, tok = resolve_model(tiny_llama).load()
    text = packaged_text("tiny-shakespeare")

    def encode(t: str) -> list[int]:
        return list(tok(t, add_special_tokens=False)["input_ids"])

    assert token_ids(encode, text, 2000) == encode(text)[:2000]
    assert token_ids(encode, "short text", 2000) == encode("short text")


def test_evaluate_model_directory_reports_sizes_and_memory(tiny_llama: Path) -> None:  # noqa: F811
    r = evaluate(tiny_llama, tokens=300, window=128)
    assert r.kind == "model" and r.method is None and r.compute_dtype == "float32"
    assert (r.tokens, r.windows, r.window, r.text) == (300, 3, 128, "tiny-shakespeare-heldout")
    assert r.weights_bytes == (tiny_llama / "model.safetensors").stat().st_size
    assert r.size_bytes == sum(p.stat().st_size for p in tiny_llama.iterdir())
    assert r.peak_rss_bytes > 50 * 2**20
    d = r.to_dict()
    assert set(d) >= {"perplexity", "size_bytes", "peak_rss_bytes", "tokens", "window"}


def test_artifact_uses_the_same_protocol_and_stays_close_at_8_bits(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    base = evaluate(tiny_llama, tokens=400, window=128)
    art = quantmatch.quantize(tiny_llama, "quanto", "w8a16", tmp_path / "w8")
    r = evaluate(art.artifact, tokens=400, window=128)
    assert (r.kind, r.method, r.scheme) == ("artifact", "quanto", "w8a16")
    assert (r.tokens, r.windows) == (base.tokens, base.windows)
    assert r.perplexity == pytest.approx(base.perplexity, rel=0.01)
    assert r.perplexity != base.perplexity  # it really ran the quantized weights
    assert r.size_bytes == art.size_bytes + (art.artifact / "quantmatch.json").stat().st_size
    assert r.weights_bytes < base.weights_bytes


def test_default_eval_text_is_not_the_calibration_text() -> None:
    held_out, calibration = packaged_text("tiny-shakespeare-heldout"), packaged_text("tiny-shakespeare")
    assert len(held_out) > 20_000 and len(calibration) > 35_000
    assert held_out[:500] not in calibration


def test_calibration_samples_are_seeded_windows(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    _, tok = resolve_model(tiny_llama).load()
    a = calibration_samples(tok, CalibrationSpec(samples=5, seq_len=40, seed=1))
    b = calibration_samples(tok, CalibrationSpec(samples=5, seq_len=40, seed=1))
    c = calibration_samples(tok, CalibrationSpec(samples=5, seq_len=40, seed=2))
    assert a.shape == (5, 40) and torch.equal(a, b) and not torch.equal(a, c)
    text = tmp_path / "cal.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    mine = calibration_samples(tok, CalibrationSpec(source=str(text), samples=2, seq_len=16))
    assert tok.decode(mine[0]).strip().split()[0] in "the quick brown fox jumps over lazy dog."
    with pytest.raises(CalibrationError, match="fewer than the sample length"):
        calibration_samples(tok, CalibrationSpec(source=str(text), samples=1, seq_len=100_000))
    with pytest.raises(CalibrationError, match="no such file"):
        calibration_samples(tok, CalibrationSpec(source="./missing.txt"))


def test_dataset_name_without_datasets_or_network_is_a_clear_error() -> None:
    from quantmatch.sdk.calibration import load_text

    with pytest.raises(CalibrationError, match=r"datasets|cache"):
        load_text("wikitext:wikitext-2-raw-v1:train")


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the gguf extra")
def test_gguf_artifact_is_scored_by_llama_cpp_with_the_same_protocol(tiny_llama: Path,  # noqa: F811
                                                                      tmp_path: Path) -> None:
    base = evaluate(tiny_llama, tokens=300, window=128)
    art = quantmatch.quantize(tiny_llama, "gguf", "gguf-f32", tmp_path / "f32")
    r = evaluate(art.artifact, tokens=300, window=128)
    assert (r.method, r.compute_dtype, r.tokens, r.windows) == ("gguf", "llama.cpp", 300, 3)
    assert r.perplexity == pytest.approx(base.perplexity, rel=1e-3)  # F32: the same numbers


def test_cli_eval_table_json_and_bad_input(tiny_llama: Path, tmp_path: Path,  # noqa: F811
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tiny_llama), "--tokens", "200", "--window", "100"]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "peak RSS" in out and "200 tokens, 2 windows of 100" in out
    text = tmp_path / "t.txt"
    text.write_text("All the world's a stage, and all the men and women merely players. " * 20)
    assert main(["eval", str(tiny_llama), "--text", str(text), "--tokens", "50", "--window", "25", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)["evaluation"]
    assert ev["text"] == str(text) and ev["tokens"] == 50 and ev["windows"] == 2
    assert main(["eval", str(tiny_llama), "--text", str(tmp_path / "missing.txt")]) == 2
    assert "no such text file" in capsys.readouterr().err
    assert main(["eval", str(tiny_llama), "--window", "1"]) == 2
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "quantmatch.json").write_text("{}")
    assert main(["eval", str(bogus)]) == 2
    assert "re-create the artifact" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not WIKITEXT.is_file(), reason="needs ../shared/data/wikitext-2-raw-test.txt")
def test_smollm2_fp32_baseline_on_a_wikitext_slice() -> None:
    pytest.importorskip("gguf")
    r = evaluate("smollm2-135m", text=WIKITEXT, tokens=1024, window=1024)
    assert r.windows == 1 and 12 < r.perplexity < 16  # 13.70 on this first window
