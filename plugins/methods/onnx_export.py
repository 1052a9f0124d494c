"""Export a Llama-family causal LM to ONNX with explicit KV-cache inputs and outputs (no optimum).

The graph is written from a small torch module that reuses the Hugging Face model's own weights
and norm/MLP modules, with attention spelled out in plain ops so the legacy TorchScript exporter
traces it with dynamic batch, sequence and past lengths:

- inputs: ``input_ids`` (int64 ``[batch, seq]``), ``logit_index`` (int64 ``[n]``: the positions of
  ``seq`` whose logits are returned; ``arange(seq)`` for perplexity, ``[seq - 1]`` for generation),
  and ``past_key_{i}`` / ``past_value_{i}`` (float32 ``[batch, kv_heads, past, head_dim]``; ``past``
  may be 0);
- outputs: ``logits`` (float32 ``[batch, n, vocab]``) and ``present_key_{i}`` / ``present_value_{i}``
  (the past with this step's keys and values appended).

Positions continue from the past length, and the causal mask lets each new token see the whole
past and the new tokens before it; sequences in a batch have equal lengths (no padding). Every
linear layer, the LM head included (a transposed copy when the embeddings are tied), is a
``MatMul`` with a constant weight, which is what ONNX Runtime's quantizers rewrite.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmatch.sdk.errors import InputError

__all__ = ["OnnxExportError", "OnnxLayout", "export_llama", "layout_of"]

OPSET = 17
EXPORTABLE = ("llama", "mistral", "qwen2")
"""``model_type`` values whose decoder layers this exporter spells out (Llama-style attention/MLP)."""


class OnnxExportError(InputError):
    """A model this exporter cannot write (architecture, rope type)."""


@dataclass(frozen=True)
class OnnxLayout:
    """The shapes a runner needs to feed the graph: layers and the KV-cache tensor layout."""

    layers: int
    kv_heads: int
    head_dim: int
    vocab: int

    def to_dict(self) -> dict[str, int]:
        return {"layers": self.layers, "kv_heads": self.kv_heads, "head_dim": self.head_dim, "vocab": self.vocab}


def layout_of(config: Any) -> OnnxLayout:
    """The :class:`OnnxLayout` of a transformers config."""
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return OnnxLayout(int(config.num_hidden_layers), int(getattr(config, "num_key_value_heads", None) or heads),
                      head_dim, int(config.vocab_size))


def _module(hf_model: Any) -> Any:
    import torch

    cfg = hf_model.config
    if cfg.model_type not in EXPORTABLE:
        raise OnnxExportError(f"the ONNX exporter writes {', '.join(EXPORTABLE)} models, not {cfg.model_type!r}")
    rotary = hf_model.model.rotary_emb
    if getattr(rotary, "rope_type", "default") == "dynamic":
        raise OnnxExportError("dynamic RoPE scaling changes with the sequence length; it cannot be exported")
    lay = layout_of(cfg)
    heads = int(cfg.num_attention_heads)

    class Decoder(torch.nn.Module):
        inv_freq: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.embed = hf_model.model.embed_tokens
            self.layers = hf_model.model.layers
            self.norm = hf_model.model.norm
            self.head_t = torch.nn.Parameter(hf_model.lm_head.weight.detach().t().contiguous().clone(),
                                             requires_grad=False)
            self.register_buffer("inv_freq", rotary.inv_freq.detach().float().clone(), persistent=False)
            self.scaling = float(getattr(rotary, "attention_scaling", 1.0))

        @staticmethod
        def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            half = x.shape[-1] // 2
            rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
            return x * cos + rotated * sin

        def forward(self, input_ids: torch.Tensor, logit_index: torch.Tensor, *past: torch.Tensor) -> Any:
            bsz, seq = input_ids.shape[0], input_ids.shape[1]
            past_len = past[0].shape[2]
            pos = torch.arange(seq, dtype=torch.float32) + past_len
            freqs = pos[:, None] * self.inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            cos = (emb.cos() * self.scaling)[None, None]
            sin = (emb.sin() * self.scaling)[None, None]
            rows = torch.arange(seq)[:, None] + past_len
            cols = torch.arange(seq + past_len)[None, :]
            mask = torch.where(cols <= rows, 0.0, -1e9)[None, None]
            h = self.embed(input_ids)
            presents: list[torch.Tensor] = []
            for i, layer in enumerate(self.layers):
                attn = layer.self_attn
                x = layer.input_layernorm(h)
                q = attn.q_proj(x).view(bsz, seq, heads, lay.head_dim).transpose(1, 2)
                k = attn.k_proj(x).view(bsz, seq, lay.kv_heads, lay.head_dim).transpose(1, 2)
                v = attn.v_proj(x).view(bsz, seq, lay.kv_heads, lay.head_dim).transpose(1, 2)
                q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
                k = torch.cat((past[2 * i], k), dim=2)
                v = torch.cat((past[2 * i + 1], v), dim=2)
                presents += [k, v]
                rep = heads // lay.kv_heads
                if rep > 1:
                    k = k[:, :, None].expand(-1, -1, rep, -1, -1).reshape(bsz, heads, -1, lay.head_dim)
                    v = v[:, :, None].expand(-1, -1, rep, -1, -1).reshape(bsz, heads, -1, lay.head_dim)
                scores = torch.matmul(q, k.transpose(2, 3)) * (lay.head_dim ** -0.5) + mask
                out = torch.matmul(torch.softmax(scores, dim=-1), v)
                h = h + attn.o_proj(out.transpose(1, 2).reshape(bsz, seq, heads * lay.head_dim))
                h = h + layer.mlp(layer.post_attention_layernorm(h))
            h = self.norm(torch.index_select(h, 1, logit_index))
            return (torch.matmul(h, self.head_t), *presents)

    return Decoder().eval()


def export_llama(hf_model: Any, path: str | Path) -> OnnxLayout:
    """Write ``hf_model`` (a transformers Llama-family causal LM, fp32) as an ONNX graph at ``path``.

    Raises :class:`OnnxExportError` for architectures or rope types the graph does not spell out.
    Weights larger than protobuf's 2 GB limit go to an external data file beside ``path``.
    """
    import torch

    module = _module(hf_model.float())
    lay = layout_of(hf_model.config)
    past_names = [f"past_{kind}_{i}" for i in range(lay.layers) for kind in ("key", "value")]
    present_names = [n.replace("past_", "present_") for n in past_names]
    ids = torch.zeros((1, 3), dtype=torch.long)
    index = torch.arange(3)
    past = [torch.zeros((1, lay.kv_heads, 2, lay.head_dim)) for _ in past_names]
    axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "seq"}, "logit_index": {0: "n"},
                                       "logits": {0: "batch", 1: "n"}}
    axes.update({n: {0: "batch", 2: "past"} for n in past_names})
    axes.update({n: {0: "batch", 2: "total"} for n in present_names})
    big = sum(p.numel() * 4 for p in module.parameters()) > 1_800_000_000
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (ids, index, *past), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input_ids", "logit_index", *past_names],
                          output_names=["logits", *present_names], dynamic_axes=axes, do_constant_folding=True)
    if big:
        import onnx

        model = onnx.load(str(path))
        onnx.save_model(model, str(path), save_as_external_data=True, location=Path(path).name + ".data")
    return lay
