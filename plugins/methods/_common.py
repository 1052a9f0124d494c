"""What the built-in method plugins share: the architectures they accept and the torch options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from quantmatch.sdk.model_info import LLAMA_FAMILY
from quantmatch.sdk.options import MethodOptions, option

__all__ = ["HF_CAUSAL_LM", "CompressedOptions", "TorchOptions"]

HF_CAUSAL_LM = LLAMA_FAMILY | {"gpt2"}
"""Architectures the built-in torch methods accept: the Llama family and GPT-2."""


@dataclass(frozen=True)
class TorchOptions(MethodOptions):
    """Options of every built-in PyTorch method (quanto, HQQ, GPTQ, AWQ, SmoothQuant, RTN)."""

    exclude: tuple[str, ...] = option(("lm_head",), "glob patterns of linear layers kept in float (empty: the "
                                                    "LM head); a layer rule wins over them")
    dtype: Literal["float16", "bfloat16", "float32"] | None = option(
        None, "float type the artifact stores (null: from the scheme: float16, bfloat16 for -bf16, float32 for a32)")


@dataclass(frozen=True)
class CompressedOptions(TorchOptions):
    """Options of the methods that write compressed-tensors checkpoints (GPTQ, AWQ, SmoothQuant, RTN)."""

    threads: int | None = option(None, "torch threads while quantizing (null: torch's default)")
