"""Tiny models built from configs, for plugin tests: :mod:`quantmatch.sdk.synthetic`, re-exported."""

from __future__ import annotations

from quantmatch.sdk.synthetic import (
    TINY_GPT2_CONFIG,
    TINY_LLAMA_CONFIG,
    MissingDependency,
    tiny_config,
    tiny_model_info,
    write_tiny_config,
    write_tiny_model,
)

__all__ = [
    "TINY_GPT2_CONFIG",
    "TINY_LLAMA_CONFIG",
    "MissingDependency",
    "tiny_config",
    "tiny_model_info",
    "write_tiny_config",
    "write_tiny_model",
]
