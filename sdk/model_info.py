"""Model shapes read from a config, without loading any weights.

``ModelInfo`` is what shape-aware checks and the planner see: the architecture and the exact shapes
of every linear layer, so group-size divisibility, head dimensions and tied embeddings can be judged
before anything is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.errors import InputError

__all__ = ["LLAMA_FAMILY", "LinearShape", "ModelInfo", "ModelInfoError"]

LLAMA_FAMILY = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm", "smollm3", "gemma", "gemma2",
                          "gemma3_text", "phi3", "mixtral", "qwen2_moe", "qwen3_moe"})


class ModelInfoError(InputError):
    """A config that cannot be read as a causal LM shape."""


@dataclass(frozen=True)
class LinearShape:
    """One linear layer: its module name, input and output features, and its kind."""

    name: str
    in_features: int
    out_features: int
    kind: str  # attn_qkv | attn_out | mlp_in | mlp_out | moe_expert_in | moe_expert_out | lm_head


@dataclass(frozen=True)
class ModelInfo:
    """The shape of a decoder-only causal LM, from its ``config.json`` (or GGUF metadata)."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    max_position_embeddings: int = 0
    architectures: tuple[str, ...] = ()
    name: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], name: str = "") -> ModelInfo:
        """Read a Hugging Face config dict (Llama family, GPT-2, Mixtral-style MoE)."""
        if "text_config" in cfg and "hidden_size" not in cfg:
            merged = dict(cfg["text_config"])
            merged.setdefault("architectures", cfg.get("architectures", ()))
            cfg = merged
        mt = str(cfg.get("model_type", "")).lower()
        try:
            if mt == "gpt2" or "n_embd" in cfg:
                hidden = int(cfg["n_embd"])
                heads = int(cfg["n_head"])
                return cls(
                    model_type=mt or "gpt2",
                    hidden_size=hidden,
                    intermediate_size=int(cfg.get("n_inner") or 4 * hidden),
                    num_layers=int(cfg["n_layer"]),
                    num_heads=heads,
                    num_kv_heads=heads,
                    head_dim=hidden // heads,
                    vocab_size=int(cfg["vocab_size"]),
                    tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
                    max_position_embeddings=int(cfg.get("n_positions", 0) or 0),
                    architectures=tuple(cfg.get("architectures") or ()),
                    name=name,
                    raw=dict(cfg),
                )
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            kv = int(cfg.get("num_key_value_heads") or heads)
            head_dim = int(cfg.get("head_dim") or hidden // heads)
            experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 0)
            return cls(
                model_type=mt,
                hidden_size=hidden,
                intermediate_size=int(cfg.get("intermediate_size") or 4 * hidden),
                num_layers=int(cfg["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=kv,
                head_dim=head_dim,
                vocab_size=int(cfg["vocab_size"]),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                num_experts=experts,
                experts_per_token=int(cfg.get("num_experts_per_tok") or 0),
                moe_intermediate_size=int(cfg.get("moe_intermediate_size") or cfg.get("intermediate_size")
                                          or 0) if experts else 0,
                max_position_embeddings=int(cfg.get("max_position_embeddings") or 0),
                architectures=tuple(cfg.get("architectures") or ()),
                name=name,
                raw=dict(cfg),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ModelInfoError(
                f"config of {name or 'model'} lacks a readable {e} (model_type={mt or '?'}); "
                "expected a Hugging Face causal-LM config.json"
            ) from e

    @classmethod
    def from_path(cls, path: str | Path) -> ModelInfo:
        """Read ``config.json`` from a model directory, or a config file given directly."""
        p = Path(path)
        cfg_path = p / "config.json" if p.is_dir() else p
        if not cfg_path.exists():
            raise ModelInfoError(f"{path}: no config.json found (give a model directory or a config file)")
        if cfg_path.suffix == ".gguf":
            raise ModelInfoError(f"{path}: reading GGUF metadata needs the `gguf` package "
                                 "(pip install 'quantmatch[torch]')")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ModelInfoError(f"{cfg_path}: not a readable JSON config ({e})") from e
        if not isinstance(cfg, dict):
            raise ModelInfoError(f"{cfg_path}: expected a JSON object")
        return cls.from_config(cfg, name=p.name)

    # ---- shapes ----------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def linear_layers(self) -> Iterator[LinearShape]:
        """Every linear layer with its module name as transformers names it."""
        h, hd = self.hidden_size, self.head_dim
        q_out, kv_out = self.num_heads * hd, self.num_kv_heads * hd
        if self.model_type == "gpt2":
            for i in range(self.num_layers):
                p = f"transformer.h.{i}"
                yield LinearShape(f"{p}.attn.c_attn", h, 3 * h, "attn_qkv")
                yield LinearShape(f"{p}.attn.c_proj", h, h, "attn_out")
                yield LinearShape(f"{p}.mlp.c_fc", h, self.intermediate_size, "mlp_in")
                yield LinearShape(f"{p}.mlp.c_proj", self.intermediate_size, h, "mlp_out")
        else:
            for i in range(self.num_layers):
                p = f"model.layers.{i}"
                yield LinearShape(f"{p}.self_attn.q_proj", h, q_out, "attn_qkv")
                yield LinearShape(f"{p}.self_attn.k_proj", h, kv_out, "attn_qkv")
                yield LinearShape(f"{p}.self_attn.v_proj", h, kv_out, "attn_qkv")
                yield LinearShape(f"{p}.self_attn.o_proj", q_out, h, "attn_out")
                if self.is_moe:
                    inter = self.moe_intermediate_size
                    for e in range(self.num_experts):
                        ep = f"{p}.block_sparse_moe.experts.{e}"
                        yield LinearShape(f"{ep}.w1", h, inter, "moe_expert_in")
                        yield LinearShape(f"{ep}.w3", h, inter, "moe_expert_in")
                        yield LinearShape(f"{ep}.w2", inter, h, "moe_expert_out")
                else:
                    yield LinearShape(f"{p}.mlp.gate_proj", h, self.intermediate_size, "mlp_in")
                    yield LinearShape(f"{p}.mlp.up_proj", h, self.intermediate_size, "mlp_in")
                    yield LinearShape(f"{p}.mlp.down_proj", self.intermediate_size, h, "mlp_out")
        yield LinearShape("lm_head", h, self.vocab_size, "lm_head")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "num_experts": self.num_experts,
        }
