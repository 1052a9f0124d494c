"""Where the weight bytes go for one scheme: quantized linears, layers kept in 16-bit, the output head.

Quantized linear layers cost :attr:`~quantmatch.sdk.scheme.Scheme.bits_per_weight` (scales and zero
points included: W4 g128 asym = 4.16 bits, GGUF Q4_K_M ~ 4.89). What stays in higher precision
follows each format's convention:

- Methods quantize the decoder's linear layers and keep embeddings, norms, MoE routers and
  ``lm_head`` in 16-bit, unless their priors say they quantize the output head or the embedding
  too (``MethodPriors.quantizes_output``/``quantizes_embeddings``: MLX both, ONNX MatMulNBits the
  head).
- GGUF (llama.cpp ``llama_tensor_get_type``): norms stay F32, the output head (or the tied token
  embedding) becomes Q6_K, and k-quant tensors whose row length is not a multiple of 256 fall back
  to a legacy type (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> IQ4_NL), so models with
  hidden size 576 get bigger than their nominal type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from quantmatch.planner.priors import method_priors
from quantmatch.planner.shapes import ParamBreakdown
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.priors import MethodPriors
from quantmatch.sdk.scheme import GGUF_BITS, Scheme

__all__ = ["WeightLayout", "gguf_type_fractions", "harmonic_mix", "weight_layout"]

_KQUANT_FALLBACK = {"q2_k": "iq4_nl", "q3_k_s": "iq4_nl", "q3_k_m": "iq4_nl", "q3_k_l": "iq4_nl",
                    "iq3_s": "iq4_nl", "iq3_xxs": "iq4_nl", "iq2_xs": "iq4_nl", "iq2_xxs": "iq4_nl",
                    "iq4_xs": "iq4_nl", "q4_k_s": "q5_0", "q4_k_m": "q5_0", "q5_k_s": "q5_1",
                    "q5_k_m": "q5_1", "q6_k": "q8_0", "tq1_0": "q4_0", "tq2_0": "q4_0"}
_GGUF_BASE = {"q4_k_m": "q4_k_s", "q5_k_m": "q5_k_s", "q3_k_m": "q3_k_s", "q3_k_l": "q3_k_s"}
"""The plain k-quant of each mix (for the token embedding, which the mixes do not upgrade)."""


@dataclass(frozen=True)
class WeightLayout:
    """Stored bytes of a model under one scheme.

    ``quantized_bytes`` covers the decoder's quantized linear layers (``expert_bytes`` is the MoE
    experts' part of it); ``kept_bytes`` everything stored at higher precision (embeddings, norms,
    routers, the head when it is kept); ``output_bytes`` the output projection as stored (the tied
    embedding when tied), which every decode step reads in full; ``unquantized_linear_bytes`` the
    quantized layers' size once expanded to the compute dtype (``expand_bytes`` per weight).
    """

    quantized_params: int
    quantized_bytes: float
    expert_bytes: float
    kept_bytes: float
    output_bytes: float
    norm_bytes: float
    bits_per_weight: float
    expand_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.quantized_bytes + self.kept_bytes

    @property
    def unquantized_linear_bytes(self) -> float:
        return self.quantized_params * self.expand_bytes

    @property
    def dense_read_bytes(self) -> float:
        """Bytes a decode step reads besides the MoE experts: dense linears, head, norms."""
        return self.quantized_bytes - self.expert_bytes + self.output_bytes + self.norm_bytes


def harmonic_mix(shares: Mapping[str, float], rate: Callable[[str], float]) -> float:
    """A per-type rate mixed over weight ``shares`` (type -> fraction), weighted by time: the work of each
    share at its own rate adds up. 0 when a type's rate is not positive."""
    rates = {t: float(rate(t)) for t in shares}
    if any(x <= 0 for x in rates.values()):
        return 0.0
    return 1.0 / sum(f / rates[t] for t, f in shares.items())


def gguf_type_fractions(info: ModelInfo, gtype: str) -> dict[str, float]:
    """Fraction of the decoder's linear weights stored in each GGUF type once k-quant fallbacks apply
    (``{"q5_0": 0.8, "q4_k": 0.2}`` for SmolLM2 at Q4_K_M: its 576-wide rows fall back)."""
    fb = _KQUANT_FALLBACK.get(gtype)
    out: dict[str, float] = {}
    total = 0
    for lin in info.linear_layers():
        if lin.kind == "lm_head" or not (".layers.0." in lin.name or ".h.0." in lin.name):
            continue
        n = lin.in_features * lin.out_features
        t = gtype if fb is None or lin.in_features % 256 == 0 else fb
        out[t] = out.get(t, 0) + n
        total += n
    return {t: n / total for t, n in out.items()} if total else {gtype: 1.0}


def _gguf_linear_bits(info: ModelInfo, gtype: str) -> tuple[float, float]:
    """(bits per weight of the linear layers on average, of the expert layers) with k-quant fallbacks."""
    bits = GGUF_BITS.get(gtype, 16.0)
    fb = _KQUANT_FALLBACK.get(gtype)
    if fb is None:
        return bits, bits
    fb_bits = GGUF_BITS[fb]
    tot = w = ex_tot = ex_w = 0.0
    for lin in info.linear_layers():  # every decoder layer has the same shapes: layer 0 is enough
        if lin.kind == "lm_head" or not (".layers.0." in lin.name or ".h.0." in lin.name):
            continue
        n = lin.in_features * lin.out_features
        b = bits if lin.in_features % 256 == 0 else fb_bits
        tot += n * b
        w += n
        if lin.kind.startswith("moe"):
            ex_tot += n * b
            ex_w += n
    avg = tot / w if w else bits
    return avg, (ex_tot / ex_w if ex_w else avg)


def weight_layout(info: ModelInfo, params: ParamBreakdown, scheme: Scheme, method: str | None,
                  dense_bytes: float = 2.0, priors: MethodPriors | None = None) -> WeightLayout:
    """The bytes of ``info`` quantized to ``scheme`` by ``method`` (``None``: unquantized) as the runtime
    holds them. ``dense_bytes``: the width of what is not quantized, and of the quantized layers once
    expanded (2: stored 16-bit; 4 for runtimes that load the model in fp32). ``priors``: the method's
    declaration (looked up in the default registry when not given)."""
    h = info.hidden_size
    if scheme.is_baseline:
        b = 4.0 if scheme.weight_format in ("fp32", "tf32") else 2.0
        lin = params.linear
        out = params.output_params * b
        return WeightLayout(lin, lin * b, params.moe_experts * b,
                            (params.total - lin) * b, out, params.norms * b, b * 8, b)
    if scheme.is_gguf:
        gtype = scheme.weight_format[5:]
        if gtype in ("f32", "f16", "bf16"):
            b = GGUF_BITS[gtype] / 8
            lin = params.linear
            return WeightLayout(lin, lin * b, params.moe_experts * b,
                                (params.embeddings + params.lm_head + params.moe_router) * b + params.norms * 4,
                                params.output_params * b, params.norms * 4, b * 8, b)
        avg, ex = _gguf_linear_bits(info, gtype)
        row_ok = h % 256 == 0
        out_type = "q8_0" if gtype == "q8_0" or not row_ok else "q6_k"
        out_bits = GGUF_BITS[out_type]
        if params.tied:
            emb_bytes, out_bytes = params.embeddings * out_bits / 8, params.embeddings * out_bits / 8
        else:
            base = _GGUF_BASE.get(gtype, gtype)
            emb_bits = GGUF_BITS[base] if row_ok or base not in _KQUANT_FALLBACK else GGUF_BITS[_KQUANT_FALLBACK[base]]
            emb_bytes = params.embeddings * emb_bits / 8
            out_bytes = params.lm_head * out_bits / 8
        kept = emb_bytes + (0.0 if params.tied else out_bytes) + params.norms * 4 + params.moe_router * 4
        lin_bytes = (params.linear - params.moe_experts) * avg / 8 + params.moe_experts * ex / 8
        return WeightLayout(params.linear, lin_bytes, params.moe_experts * ex / 8, kept, out_bytes,
                            params.norms * 4, avg, 2.0)
    bpw = scheme.bits_per_weight
    expand = dense_bytes
    q_params = params.linear
    q_bytes = q_params * bpw / 8
    kept_params = params.norms + params.moe_router + params.positions
    mp = priors if priors is not None else method_priors(method)
    emb_q = mp.quantizes_embeddings
    out_q = mp.quantizes_output or (params.tied and emb_q)
    kept = kept_params * dense_bytes
    emb_bytes = params.embeddings * (bpw / 8 if emb_q else dense_bytes)
    if params.tied:
        out_bytes = emb_bytes
        kept += emb_bytes
    else:
        out_bytes = params.lm_head * (bpw / 8 if out_q else dense_bytes)
        kept += emb_bytes + out_bytes
    return WeightLayout(q_params, q_bytes, params.moe_experts * bpw / 8, kept, out_bytes,
                        params.norms * dense_bytes, bpw, expand)
