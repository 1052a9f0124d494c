"""compressed-tensors artifacts load from safetensors only: pickled weights are never unpickled."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import tiny_llama  # noqa: F401  (fixture)

from quantmatch.sdk.artifact import ArtifactError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from quantmatch.plugins.methods._compressed import load_compressed  # noqa: E402


def test_pickled_weights_are_refused_not_unpickled(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    from safetensors.torch import load_file

    d = tmp_path / "pickled"
    d.mkdir()
    for f in tiny_llama.iterdir():
        if f.suffix != ".safetensors":
            (d / f.name).write_bytes(f.read_bytes())
    # transformers would read this file with torch.load (an unpickler) unless told to use safetensors only
    torch.save(load_file(str(tiny_llama / "model.safetensors")), d / "pytorch_model.bin")
    with pytest.raises(ArtifactError, match="re-create it with `quantmatch quantize"):
        load_compressed(d)
    model, tokenizer = load_compressed(tiny_llama)  # the same checkpoint in safetensors loads
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer is not None
