"""Synthetic models built from configs: shapes without torch, random weights with it.

What probes, benchmarks and the plugin test kit (:mod:`quantmatch.testing`, which re-exports these)
build instead of downloading a model. The tiny configs are small enough that a random model saves in
well under a second, and shaped so that group sizes 32 and 64 divide every linear layer (group 128 does
not divide the 64-wide layers: a method's shape check can be exercised too).
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

from quantmatch.sdk.model_info import ModelInfo

__all__ = [
    "TINY_GPT2_CONFIG",
    "TINY_LLAMA_CONFIG",
    "MissingDependency",
    "tiny_config",
    "tiny_model_info",
    "write_tiny_config",
    "write_tiny_model",
]

TINY_LLAMA_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "vocab_size": 320, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
}
"""A two-layer Llama (GQA: 4 query heads, 2 KV heads) with a 320-token vocabulary."""

TINY_GPT2_CONFIG: dict[str, Any] = {
    "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 64, "n_inner": 256, "n_layer": 2,
    "n_head": 4, "n_positions": 256, "vocab_size": 320, "bos_token_id": 1, "eos_token_id": 2,
    "tie_word_embeddings": True, "torch_dtype": "float32",
}
"""A two-layer GPT-2 with a 320-token vocabulary."""

_CONFIGS = {"llama": TINY_LLAMA_CONFIG, "gpt2": TINY_GPT2_CONFIG}
_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_WORDS = ("the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at",
          "from", "which", "it", "an", "be", "are", "this", "or", "had", "not", "but", "were", "they",
          "have", "one", "all", "their", "has", "been", "more", "model", "weights", "scale", "group")


class MissingDependency(ImportError):
    """torch, transformers or tokenizers is not installed; the message says how to install them."""


def tiny_config(arch: str = "llama") -> dict[str, Any]:
    """A fresh copy of the tiny config for ``arch`` (``llama`` or ``gpt2``)."""
    try:
        return copy.deepcopy(_CONFIGS[arch])
    except KeyError:
        raise ValueError(f"unknown tiny architecture {arch!r} (valid: {', '.join(_CONFIGS)})") from None


def tiny_model_info(arch: str = "llama") -> ModelInfo:
    """The tiny model's shapes, as ``check()`` and the registry see them (no weights anywhere)."""
    return ModelInfo.from_config(tiny_config(arch), name=f"tiny-{arch}")


def write_tiny_config(path: str | Path, arch: str = "llama") -> Path:
    """Write only ``config.json`` into ``path`` (a directory, created): enough for shape checks."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(tiny_config(arch), indent=2), encoding="utf-8")
    return out


def _require() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as e:
        raise MissingDependency(f"a tiny model with weights needs torch and transformers ({e}); "
                                "install them with: pip install 'quantmatch[torch]'") from e
    return torch, transformers


def _write_tokenizer(out: Path, vocab_size: int) -> None:
    """A byte-level BPE (GPT-2 style) trained here on synthetic text: no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(10)) + f". {rng.randint(0, 999)}" for _ in range(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>",
        pad_token="<|im_end|>")
    fast.save_pretrained(out)


def write_tiny_model(path: str | Path, arch: str = "llama", seed: int = 0) -> Path:
    """Save a tiny random model with its tokenizer into ``path`` (``save_pretrained``, safetensors).

    Deterministic for a given ``seed``. Raises :class:`MissingDependency` without torch/transformers
    (the ``tiny_llama_dir``/``tiny_gpt2_dir`` fixtures turn that into a skip).
    """
    torch, transformers = _require()
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = tiny_config(arch)
    _write_tokenizer(out, int(cfg_dict["vocab_size"]))
    cfg_dict.pop("architectures")
    model_type = cfg_dict.pop("model_type")
    cfg_dict.pop("torch_dtype")
    config = transformers.AutoConfig.for_model(model_type, **cfg_dict)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    return out
