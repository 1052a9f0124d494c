"""Shared pieces of the GPTQ / AWQ / SmoothQuant / compressed-tensors tests.

- ``one_thread``: autouse-able fixture; tiny models run thousands of small ops, which are many times
  slower with several threads on a busy machine;
- :func:`outlier_llama`: a tiny random Llama with planted outlier channels (large RMSNorm weights on a
  few channels, a few large ``up_proj`` rows), the case calibrated methods exist for;
- :func:`logits_mse`, :func:`quantize_all_rtn`: comparisons against round-to-nearest;
- real-model helpers for the ``slow`` tests (``smollm2-135m`` and WikiText-2 from ``../shared/data``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CALIB_TEXT = SHARED_DATA / "tiny-shakespeare.txt"
EVAL_TEXT = SHARED_DATA / "wikitext-2-raw-test.txt"


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def outlier_llama(seed: int = 0, kv_heads: int = 4, hidden: int = 64, layers: int = 2) -> Any:
    """A tiny random Llama whose activations have a few large channels (like trained LLMs)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            layer.input_layernorm.weight[[3 + i, 17]] = 25.0
            layer.post_attention_layernorm.weight[[5, 40 - i]] = 20.0
            layer.mlp.up_proj.weight[[7, 60]] *= 30.0
    return model


def token_batch(n: int, length: int, seed: int) -> Any:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, length), generator=g)


@torch.no_grad()
def logits(model: Any, ids: Any) -> Any:
    return model(input_ids=ids).logits


def logits_mse(model: Any, reference: Any, ids: Any) -> float:
    return float((logits(model, ids) - reference).pow(2).mean())


@torch.no_grad()
def quantize_all_rtn(model: Any, grid: Any) -> Any:
    """A copy of ``model`` with every decoder linear layer rounded to ``grid``."""
    from quantmatch.plugins.methods.algorithms.rtn import rtn

    out = copy.deepcopy(model)
    for name, m in out.named_modules():
        if isinstance(m, torch.nn.Linear) and name != "lm_head":
            m.weight.copy_(rtn(m.weight, grid).weight)
    return out


# ---- the real model (slow tests) -----------------------------------------------------------------
def real_model() -> tuple[Any, Any]:
    """``(fp32 model, tokenizer)`` of smollm2-135m; skips where the bundled model or data are missing."""
    if not (CALIB_TEXT.is_file() and EVAL_TEXT.is_file()):
        pytest.skip(f"needs {CALIB_TEXT} and {EVAL_TEXT}")
    from quantmatch.sdk.models import ModelSourceError, resolve_model

    try:
        return resolve_model("smollm2-135m").load("float32")  # type: ignore[no-any-return]
    except ModelSourceError as e:
        pytest.skip(str(e))


def real_samples(tokenizer: Any, samples: int, seq_len: int) -> Any:
    from quantmatch.sdk.calibration import CalibrationSpec, calibration_samples

    return calibration_samples(tokenizer, CalibrationSpec(str(CALIB_TEXT), samples, seq_len, seed=0))


def real_ppl(model: Any, tokenizer: Any, tokens: int = 4096) -> float:
    """Perplexity on the first ``tokens`` WikiText-2 test tokens, 1024-token windows."""
    from quantmatch.sdk.evaluate import perplexity, token_ids

    ids = token_ids(lambda t: tokenizer(t, add_special_tokens=False)["input_ids"],
                    EVAL_TEXT.read_text(encoding="utf-8"), tokens)
    return perplexity(model, ids, 1024)[0]
