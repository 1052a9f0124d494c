"""Exact parameter counts of a model shape, and the shape facts the planner's arithmetic needs.

Models are resolved by :func:`quantmatch.sdk.models.resolve_model` (a directory or ``config.json``, a
GGUF header, a built-in shape, a bundled alias, a hub id), re-exported here. Nothing here loads
weights or imports torch.

Parameter counts are computed from the shapes, module type by module type (embeddings, attention
with its biases and q/k norms, dense MLP, MoE experts and router, norms, LM head), so a tied LM head
costs nothing and a Mixtral expert counts once per expert.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.model_shapes import BuiltinShape, builtin_shapes, find_builtin
from quantmatch.sdk.models import ModelSource
from quantmatch.sdk.models import resolve_model as _resolve

__all__ = [
    "BuiltinShape",
    "ModelSource",
    "ParamBreakdown",
    "builtin_shapes",
    "kv_bytes_per_token",
    "param_breakdown",
    "quantize_source",
    "resolve_model",
]

_QKV_BIAS_TYPES = frozenset({"qwen2", "qwen2_moe"})
_QK_NORM_TYPES = frozenset({"gemma3_text", "gemma3", "qwen3", "qwen3_moe"})
_FOUR_NORM_TYPES = frozenset({"gemma2", "gemma3_text", "gemma3"})
_SLIDING_PATTERN = {"gemma2": 2}
"""Every n-th layer is global (full attention), the others use the sliding window. Gemma-3 states
``sliding_window_pattern`` in its config (6); Gemma-2 alternates."""


@dataclass(frozen=True)
class ParamBreakdown:
    """Exact parameter counts per module type. ``lm_head`` is 0 when tied to the embeddings.

    ``attention`` includes q/k/v/o weights, their biases and q/k norms; ``mlp`` the dense gated MLP;
    ``moe_experts`` every expert's weights and ``moe_router`` the gates; ``norms`` every layer norm
    and the final norm; ``positions`` learned position embeddings (GPT-2 style).
    """

    embeddings: int
    attention: int
    mlp: int
    moe_experts: int
    moe_router: int
    norms: int
    lm_head: int
    positions: int
    tied: bool
    experts: int = 0
    experts_per_token: int = 0

    @property
    def total(self) -> int:
        return (self.embeddings + self.attention + self.mlp + self.moe_experts + self.moe_router
                + self.norms + self.lm_head + self.positions)

    @property
    def linear(self) -> int:
        """Parameters of the decoder's linear layers: what weight quantization compresses."""
        return self.attention + self.mlp + self.moe_experts

    @property
    def output_params(self) -> int:
        """Parameters the output projection reads (the embedding matrix when tied)."""
        return self.embeddings if self.tied else self.lm_head

    @property
    def active_linear(self) -> int:
        """Linear parameters one token passes through (k of E experts for MoE)."""
        if not self.experts:
            return self.linear
        return self.attention + self.mlp + self.moe_experts * self.experts_per_token // self.experts

    @property
    def active(self) -> int:
        """Parameters one token multiplies with: active linears, router and the output projection."""
        return self.active_linear + self.moe_router + self.output_params

    def to_dict(self) -> dict[str, Any]:
        return {"embeddings": self.embeddings, "attention": self.attention, "mlp": self.mlp,
                "moe_experts": self.moe_experts, "moe_router": self.moe_router, "norms": self.norms,
                "lm_head": self.lm_head, "positions": self.positions, "tied_embeddings": self.tied,
                "total": self.total, "active_per_token": self.active}


def param_breakdown(info: ModelInfo) -> ParamBreakdown:
    """Count every parameter of ``info`` from its shapes (no rule of thumb)."""
    h, L, V = info.hidden_size, info.num_layers, info.vocab_size
    mt = info.model_type
    raw = info.raw
    if mt == "gpt2":
        inner = info.intermediate_size
        attn = L * (h * 3 * h + 3 * h + h * h + h)
        mlp = L * (h * inner + inner + inner * h + h)
        norms = L * 2 * 2 * h + 2 * h  # LayerNorm weight + bias, twice per block, plus ln_f
        positions = info.max_position_embeddings * h
        return ParamBreakdown(V * h, attn, mlp, 0, 0, norms, 0 if info.tie_word_embeddings else V * h,
                              positions, info.tie_word_embeddings)
    hd = info.head_dim
    q, kv = info.num_heads * hd, info.num_kv_heads * hd
    per_attn = h * q + 2 * h * kv + q * h
    if bool(raw.get("attention_bias", mt in _QKV_BIAS_TYPES)):
        per_attn += q + 2 * kv
        if raw.get("attention_bias") is True and mt not in _QKV_BIAS_TYPES:
            per_attn += h  # o_proj bias when the config says every attention projection has one
    if mt in _QK_NORM_TYPES:
        per_attn += 2 * hd
    norms_per_layer = 4 if mt in _FOUR_NORM_TYPES else 2
    experts = info.num_experts
    if experts:
        moe = L * experts * 3 * h * info.moe_intermediate_size
        router = L * h * experts
        mlp = 0
    else:
        moe = router = 0
        mlp = L * 3 * h * info.intermediate_size
    return ParamBreakdown(
        embeddings=V * h,
        attention=L * per_attn,
        mlp=mlp,
        moe_experts=moe,
        moe_router=router,
        norms=L * norms_per_layer * h + h,
        lm_head=0 if info.tie_word_embeddings else V * h,
        positions=0,
        tied=info.tie_word_embeddings,
        experts=experts,
        experts_per_token=info.experts_per_token if experts else 0,
    )


def attention_windows(info: ModelInfo) -> list[int | None]:
    """Per layer: the sliding-window length, or ``None`` for full attention.

    Only Gemma-2/3 are modelled with sliding layers (their runtimes allocate window-sized caches for
    them); other configs that declare a window get full-length caches, as vLLM and transformers
    allocate by default.
    """
    window = info.raw.get("sliding_window")
    mt = info.model_type
    if not window or mt not in ("gemma2", "gemma3_text", "gemma3"):
        return [None] * info.num_layers
    pattern = int(info.raw.get("sliding_window_pattern") or _SLIDING_PATTERN.get(mt, 6))
    return [None if (i + 1) % pattern == 0 else int(window) for i in range(info.num_layers)]


def kv_bytes_per_token(info: ModelInfo, context: int, kv_bytes: float) -> float:
    """KV-cache bytes of one sequence at ``context`` tokens: layers x KV heads x head dim x 2 x bytes,
    with sliding-window layers capped at their window."""
    per_layer = info.num_kv_heads * info.head_dim * 2 * kv_bytes
    return float(sum(per_layer * (context if w is None else min(context, w)) for w in attention_windows(info)))


def resolve_model(model: str | Path | ModelInfo | ModelSource) -> ModelSource:
    """:func:`quantmatch.sdk.models.resolve_model` for shapes only: a built-in shape's hub id resolves from
    the table without the network, the bundled alias without its distribution."""
    return _resolve(model, shapes_only=True)


def quantize_source(src: ModelSource, model_arg: str) -> str:
    """The model argument ``quantmatch quantize`` (and ``plan --run``) understands for ``src``.

    A path, a hub id or the bundled alias stays as given; a built-in shape's short name, which has no
    weights, becomes the hub id its table entry records (``llama-3.1-8b`` -> ``meta-llama/Llama-3.1-8B``).
    """
    if src.kind != "builtin" or "/" in model_arg:
        return model_arg
    shape = find_builtin(src.name)
    return shape.hf_id if shape is not None else model_arg
