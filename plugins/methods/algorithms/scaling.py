"""Per-channel scales folded between two ops, the re-parametrisation AWQ and SmoothQuant share.

A :class:`ScaleGroup` is an op (``prev``: an RMSNorm, or a linear layer) whose output feeds only the
``linears``. Dividing ``prev``'s output channels by ``s`` and multiplying the linears' input columns
by ``s`` leaves the float function unchanged: ``(x / s) @ (W * s)^T = x @ W^T``. Quantization then
sees the rescaled weights (and, for W8A8, the rescaled activations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["ScaleGroup", "fold_scales", "llama_scale_groups"]


@dataclass(frozen=True)
class ScaleGroup:
    """``prev`` feeds ``linears``; ``inspect`` is the module whose output measures a candidate's error.

    Names are relative to the decoder block (``input_layernorm``, ``self_attn.q_proj`` ...).
    """

    prev: str
    linears: tuple[str, ...]
    inspect: str


_NORM_TYPES = ("RMSNorm", "LayerNorm")


def llama_scale_groups(block: nn.Module) -> list[ScaleGroup]:
    """The foldable pairs of a Llama-family decoder block.

    ``input_layernorm -> q/k/v`` and ``post_attention_layernorm -> gate/up`` always;
    ``up_proj -> down_proj`` (SwiGLU multiplies up's output, so its rows can carry the scale);
    ``v_proj -> o_proj`` only without grouped-query attention (with it, ``v_proj`` has fewer output
    channels than ``o_proj`` has inputs, and one scale cannot serve the heads that share it).
    """
    mods = dict(block.named_modules())
    needed = ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
              "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    missing = [n for n in needed if n not in mods]
    if missing:
        raise ValueError(f"{type(block).__name__} lacks {', '.join(missing)}: scale folding supports "
                         "Llama-style blocks (separate q/k/v and gate/up projections)")
    for norm in ("input_layernorm", "post_attention_layernorm"):
        if not type(mods[norm]).__name__.endswith(_NORM_TYPES) or "Gemma" in type(mods[norm]).__name__:
            raise ValueError(f"{norm} is a {type(mods[norm]).__name__}; scales fold only into a plain "
                             "RMSNorm/LayerNorm weight")
    groups = [ScaleGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                         "self_attn")]
    v, o = mods["self_attn.v_proj"], mods["self_attn.o_proj"]
    if isinstance(v, nn.Linear) and isinstance(o, nn.Linear) and v.out_features == o.in_features:
        groups.append(ScaleGroup("self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj"))
    groups.append(ScaleGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"))
    groups.append(ScaleGroup("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"))
    return groups


@torch.no_grad()
def fold_scales(block: nn.Module, group: ScaleGroup, scales: Tensor) -> None:
    """Divide ``prev``'s output channels by ``scales`` and multiply the linears' inputs by them."""
    mods = dict(block.named_modules())
    prev = mods[group.prev]
    s = scales.detach().float()
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s.view(-1, 1).to(prev.weight.dtype))
    else:
        prev.weight.div_(s.to(prev.weight.dtype))
    bias = getattr(prev, "bias", None)
    if isinstance(bias, Tensor):
        bias.div_(s.to(bias.dtype))
    for name in group.linears:
        lin = mods[name]
        lin.weight.mul_(s.view(1, -1).to(lin.weight.dtype))
