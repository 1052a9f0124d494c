"""Tiny random causal LMs built from configs, with a small trained BPE tokenizer, saved to a directory.

Used by the quantization, evaluation and model-resolution tests: real transformers models (Llama,
GPT-2) whose shapes are small enough to quantize and evaluate in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from quantmatch.sdk.calibration import packaged_text

VOCAB = 320
"""Model vocabulary; the tokenizer uses fewer ids (the 256 byte symbols, ``<eos>`` and merges)."""


def make_tokenizer(vocab_size: int = 300) -> Any:
    """A byte-level BPE trained on the packaged calibration text (fast, deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([packaged_text("tiny-shakespeare")], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def llama_config(hidden: int = 64, layers: int = 2, tie: bool = False) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=tie)


def gpt2_config(hidden: int = 64, layers: int = 2) -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB, n_embd=hidden, n_layer=layers, n_head=4, n_positions=512)


def save_tiny_model(directory: Path, config: Any, seed: int = 0) -> Path:
    """Build a random model from ``config`` (seeded), save it with the tokenizer; return the directory."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    make_tokenizer().save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (hidden 64, 2 layers, tied embeddings) with its tokenizer."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), llama_config(tie=True))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 (hidden 64, 2 layers; Conv1D layers) with its tokenizer."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), gpt2_config())
