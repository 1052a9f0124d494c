"""What the built-in method plugins share."""

from __future__ import annotations

from quantmatch.model_info import LLAMA_FAMILY

HF_CAUSAL_LM = LLAMA_FAMILY | {"gpt2"}
"""Architectures the built-in torch methods accept: the Llama family and GPT-2."""
