"""Expected quality loss (perplexity change, percent) of a scheme and method: priors or measurements.

Priors come from published tables, quoted in ``/work/shared/reference/hardware_facts.md`` section 11.5:

- llama.cpp ``QUANT_OPTIONS`` (tools/quantize/quantize.cpp): perplexity change of each GGUF type at
  Llama-3-8B (Q4_K_M +0.18, Q8_0 +0.0026 ...), divided by the F16 perplexity of the same model on
  the same text (6.7684, llama.cpp tools/perplexity/README.md "LLaMA 3 8b Scoreboard"; the types
  QUANT_OPTIONS does not list (Q4_1, Q5_0, Q5_1, IQ*) come from that scoreboard);
- torchao's Llama-3.1-8B table (WikiText perplexity, bf16 7.33): fp8-rowwise 7.42, int8 weight-only
  7.35, int8 dynamic 7.45, mxfp8 7.60, nvfp4 8.45.

Everything else is composed from those anchors (a weight term by bits and group size, an
activation term, a KV-cache term). Q4_0 is exactly round-to-nearest INT4 with a scale per 32
weights, so it anchors plain RTN; a method that keeps less of RTN's loss at the same bits and group,
or of the int8 activations' loss, says so in its priors with the published source
(:class:`~quantmatch.sdk.priors.QualityPriors`, declared by the method). Model size scales the loss
(:func:`size_factor`). A measurement in the results store (:mod:`quantmatch.sdk.store`)
replaces the prior, and the estimate says which it is. When the registry runs a scheme in a
fallback form (W8A8-FP8 on an A100 runs weight-only), the estimate is for what runs and says so.

Fidelity terms: each estimate also carries the expected mean KL divergence to the unquantized model
(nats per next-token position, KL(P_ref || Q), as ``llama-perplexity --kl-divergence`` reports it) and the
expected same-top-token percentage; see :data:`KLD_SCOREBOARD`, :func:`kld_from_ppl` and
:func:`top1_from_kld`. A KLD measured by ``quantmatch bench`` replaces that prior too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from quantmatch.planner.priors import method_priors
from quantmatch.sdk.priors import QualityPriors
from quantmatch.sdk.scheme import Scheme
from quantmatch.sdk.store import measured_fidelity, measured_quality

__all__ = ["QualityEstimate", "estimate_quality", "kld_from_ppl", "size_factor", "top1_from_kld"]

QUANT_OPTIONS = ("ggml-org/llama.cpp tools/quantize/quantize.cpp QUANT_OPTIONS (PPL change @ Llama-3-8B; "
                 "hardware_facts.md 11.5)")
SCOREBOARD = "ggml-org/llama.cpp tools/perplexity/README.md (LLaMA 3 8b Scoreboard, F16 PPL 6.7684)"
TORCHAO = "pytorch/ao quantization table, Llama-3.1-8B WikiText PPL (bf16 7.33; hardware_facts.md 11.5)"
ESTIMATE = "quantmatch estimate composed from the llama.cpp and torchao anchors"

_L3_F16_PPL = 6.7684
_GGUF_DPPL: dict[str, tuple[float, str]] = {
    "q2_k": (3.52, QUANT_OPTIONS), "q3_k_s": (1.63, QUANT_OPTIONS), "q3_k_m": (0.66, QUANT_OPTIONS),
    "q3_k_l": (0.56, QUANT_OPTIONS), "q4_0": (0.47, QUANT_OPTIONS), "q4_k_s": (0.27, QUANT_OPTIONS),
    "q4_k_m": (0.18, QUANT_OPTIONS), "q5_k_s": (0.10, QUANT_OPTIONS), "q5_k_m": (0.06, QUANT_OPTIONS),
    "q6_k": (0.022, QUANT_OPTIONS), "q8_0": (0.0026, QUANT_OPTIONS),
    "q4_1": (0.494238, SCOREBOARD), "q5_0": (0.135923, SCOREBOARD), "q5_1": (0.125879, SCOREBOARD),
    "iq4_nl": (0.248562, SCOREBOARD), "iq4_xs": (0.246254, SCOREBOARD), "iq3_s": (0.806473, SCOREBOARD),
    "iq3_xxs": (1.290849, SCOREBOARD), "iq2_xs": (5.043388, SCOREBOARD), "iq2_xxs": (8.843541, SCOREBOARD),
    "f32": (0.0, QUANT_OPTIONS), "f16": (0.0, QUANT_OPTIONS), "bf16": (0.0, QUANT_OPTIONS),
}

_TORCHAO_BF16 = 7.33
_TORCHAO = {"fp8-rowwise": 7.42, "int8-weight-only": 7.35, "int8-dynamic": 7.45, "mxfp8": 7.60, "nvfp4": 8.45}


def _pct(ppl: float, base: float) -> float:
    return (ppl - base) / base * 100.0


# Round-to-nearest integer weights with a scale per 32 weights, by bit width (percent PPL change at
# Llama-3-8B scale). 8/5/4 bits are llama.cpp's Q8_0 / Q5_0 / Q4_0, which are exactly that; 6, 3, 2
# and 1 bits are quantmatch estimates (roughly 3x more loss per bit removed, collapse below 3 bits).
_RTN_G32 = {8: _GGUF_DPPL["q8_0"][0] / _L3_F16_PPL * 100, 6: 0.6,
            5: _GGUF_DPPL["q5_0"][0] / _L3_F16_PPL * 100, 4: _GGUF_DPPL["q4_0"][0] / _L3_F16_PPL * 100,
            3: 25.0, 2: 300.0, 1: 1000.0}

_ACT = {  # activation term, percent
    "int8": _pct(_TORCHAO["int8-dynamic"], _TORCHAO_BF16) - _pct(_TORCHAO["int8-weight-only"], _TORCHAO_BF16),
    "fp8-e4m3": 0.8,
    "mxfp8": 2.5,
    "nvfp4": 9.0,
    "mxfp4": 14.0,
    "int4": 60.0,
}
_KV = {"fp8": 0.1, "int8": 0.1, "q8_0": 0.05, "int4": 1.5, "q4_0": 2.3, "nvfp4": 1.5, "fp16": 0.0, "bf16": 0.0}
"""KV-cache term, percent at Llama-3-8B size (scaled by ``size_factor`` like the rest). Checked against
``benchmarks/results/lowbit.json`` (SmolLM2-135M, one 4096-token WikiText window, factor 2.54): llama.cpp
Q8_0 K/V -0.002% (prior +0.13%); Q4_0 K/V +5.85%, so ``q4_0`` is 2.3 (it was 1.5: llama.cpp rounds every
token's keys to 32-value blocks, outlier channels included, and keeps no recent window in full precision);
transformers' HQQ cache int8 +0.06% (prior +0.25%), int4 +1.8% (prior +3.8%: it keeps the last 128
tokens unquantized)."""

# ---- fidelity terms: mean KL divergence and same top token -------------------------------------------
KLD_SCOREBOARD = ("ggml-org/llama.cpp tools/perplexity/README.md (LLaMA 3 8b Scoreboard, revision f364eb6f, "
                  "KLD column vs FP16)")
KLD_MAPPED = "mean KLD mapped from the perplexity prior: 0.68 * ln(1 + dPPL%/100) ** 0.85 (fit to the scoreboard)"
TOP1_MAPPED = ("same top token mapped from the mean KLD: 100 - 39 * KLD ** 0.44 (fit to llama.cpp's LLaMA 2 vs. "
               "LLaMA 3 comparison, revision f364eb6f)")

_GGUF_KLD: dict[str, float] = {
    # LLaMA 3 8b Scoreboard, revision f364eb6f (tools/perplexity/README.md), rows without an imatrix
    "q8_0": 0.001355, "q6_k": 0.005452, "q5_k_m": 0.010762, "q5_k_s": 0.016595, "q5_1": 0.018045,
    "q5_0": 0.022239, "q4_k_m": 0.031273, "q4_k_s": 0.043136, "q4_1": 0.071683, "q4_0": 0.071940,
    "q3_k_l": 0.087176, "q3_k_m": 0.101913, "q3_k_s": 0.228217, "q2_k": 0.445132,
    # the i-quants exist there only with an imatrix (WT 10m; iq1_s WT 1m)
    "iq4_nl": 0.035742, "iq4_xs": 0.036334, "iq3_m": 0.102534, "iq3_s": 0.111278, "iq3_xs": 0.138693,
    "iq3_xxs": 0.183625, "iq2_m": 0.325989, "iq2_s": 0.439197, "iq2_xs": 0.546290, "iq2_xxs": 0.812022,
    "iq1_m": 1.393084, "iq1_s": 2.211278,
    # same README, "LLaMA 3 BF16 vs. FP16 comparison": a 16-bit conversion of a bf16 model
    "f16": 0.00002515, "bf16": 0.0, "f32": 0.0,
}
"""Published mean KL divergence (nats) of each GGUF type against FP16 at Llama-3-8B (Wikitext-2)."""

KLD_A, KLD_B = 0.68, 0.85
"""``kld = KLD_A * ln(PPL_q / PPL_ref) ** KLD_B``: least squares in log-log space over the 14 GGUF types
of the scoreboard without an imatrix (Q8_0 ... Q2_K, their ln PPL ratio against the reference PPL 6.2316)."""
TOP1_C, TOP1_B = 39.0, 0.44
"""``top1 = 100 - TOP1_C * kld ** TOP1_B`` (percent): least squares in log-log space over the eight pairs
(Mean KLD, Same top p) of llama.cpp's "LLaMA 2 vs. LLaMA 3 Quantization comparison" (revision f364eb6f:
Llama-3-8B and Llama-2-7B at Q8_0, Q6_K, Q4_K_M, Q2_K)."""


def kld_from_ppl(pct: float) -> float:
    """Mean KL divergence (nats) for a perplexity change of ``pct`` percent, where no KLD is published.

    Theory says the two should be close: the log perplexity change is the cross-entropy change on the
    text, which equals KL(P_ref || Q) when the text follows the reference model. llama.cpp's LLaMA 3
    8b Scoreboard (revision f364eb6f) bears that out from Q5_K_S down (KLD / ln PPL ratio 0.98-1.07),
    while at small losses the KLD is larger (Q8_0: ln ratio 0.00042, KLD 0.00136; Q6_K 0.0035 vs
    0.0055). The power law ``0.68 * ln(1 + pct/100) ** 0.85`` fitted to its 14 types without an imatrix
    stays within x0.69 (Q8_0) to x1.27 (Q5_K_S) of every one of them, within x0.95-x1.18 from Q6_K to
    Q3_K_M; by hand for Q4_K_M: ln(6.407115 / 6.231636) = 0.02777, 0.68 * 0.02777 ** 0.85 = 0.0323
    against 0.031273 published.
    """
    if pct <= 0:
        return 0.0
    return float(KLD_A * math.log1p(pct / 100.0) ** KLD_B)


def top1_from_kld(kld: float) -> float:
    """Expected percentage of positions whose most likely next token is unchanged, at mean KLD ``kld``.

    ``100 - 39 * kld ** 0.44``, fitted to the published (Mean KLD, Same top p) pairs of llama.cpp's
    "LLaMA 2 vs. LLaMA 3 Quantization comparison" (revision f364eb6f; Llama-3-8B: 0.001355 -> 97.674%,
    0.005452 -> 96.031%, 0.031273 -> 91.901%, 0.445132 -> 71.138%; Llama-2-7B: 0.000369 -> 98.846%,
    0.002098 -> 97.520%, 0.012686 -> 94.665%, 0.108903 -> 85.584%): all within 1.5 points. By hand for
    Llama-3-8B Q4_K_M: 39 * 0.031273 ** 0.44 = 39 * 0.2177 = 8.49, so 91.5% against 91.9%. How many
    top tokens a given KLD flips depends on how peaked the reference's predictions are (the text,
    the model), so this is the weakest of the three priors; see docs/planner.md for the checks.
    """
    if kld <= 0:
        return 100.0
    return float(max(0.0, 100.0 - TOP1_C * kld**TOP1_B))


@dataclass(frozen=True)
class QualityEstimate:
    """Expected perplexity change in percent; ``basis`` is ``baseline``, ``prior`` or ``measured``.

    ``estimated_as`` names the scheme the estimate is for when it differs from the one requested:
    the form the registry says actually runs (``w8a16-fp8`` for W8A8-FP8 on a GPU without FP8 math).
    ``kld``: expected mean KL divergence to the unquantized model (nats per token); ``top1_pct``: expected
    percentage of positions with the same most likely next token. Each has its own basis
    (``baseline``, ``prior`` or ``measured``) and source: a store can hold a measured perplexity and no
    KLD, or the reverse.
    """

    delta_pct: float
    basis: str
    source: str
    note: str = ""
    estimated_as: str | None = None
    kld: float = 0.0
    kld_basis: str = "baseline"
    kld_source: str = ""
    top1_pct: float = 100.0
    top1_basis: str = "baseline"
    top1_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"delta_pct": round(self.delta_pct, 3), "basis": self.basis, "source": self.source,
                "note": self.note, "estimated_as": self.estimated_as,
                "kld": float(f"{self.kld:.4g}"), "kld_basis": self.kld_basis, "kld_source": self.kld_source,
                "top1_pct": round(self.top1_pct, 2), "top1_basis": self.top1_basis,
                "top1_source": self.top1_source}


REFERENCE_PARAMS = 8e9
"""The anchors are Llama-3(.1)-8B figures: a model of this size gets factor 1."""
SMALL_PARAMS = 3e9


def size_factor(params: int) -> float:
    """How much a model of ``params`` parameters loses relative to the 8B anchors, for the same scheme.

    Below ~3B models lose more: ``(3e9 / params) ** 0.3``, at most 3 (a quantmatch estimate). Above
    8B they lose somewhat less: ``(8e9 / params) ** 0.075``, at least 0.75 (0.85 at 70B). The
    exponent is fitted to the relative RTN INT4 g128 losses of the AWQ paper's Table 4, which shrink
    from 7B to 65-70B (LLaMA 5.68 -> 5.96 is +4.9%, 65B 3.53 -> 3.67 +4.0%; Llama-2-7B +4.8%, 70B
    3.32 -> 3.46 +4.2%), about x0.85 over a 9x larger model. The trend in relative perplexity is
    weak and not universal (AWQ's own rows are flat, and llama.cpp's Llama-3-70B K-quants lose more
    than 8B: Q4_K_M +4.8% vs +2.7%), so the factor is deliberately mild; absolute perplexity
    changes shrink much faster with size.
    """
    if params <= 0:
        return 1.0
    if params < SMALL_PARAMS:
        return float(min(3.0, (SMALL_PARAMS / params) ** 0.3))
    if params > REFERENCE_PARAMS:
        return float(max(0.75, (REFERENCE_PARAMS / params) ** 0.075))
    return 1.0


def _group_factor(group: int | None, hidden: int) -> float:
    g = group or hidden
    return max(0.6, 1.0 + 0.25 * math.log2(max(g, 8) / 32))


def _weight_term(s: Scheme, method: str | None, hidden: int, q: QualityPriors) -> tuple[float, str, str]:
    """(percent, source, note) for the weights of ``s`` made by ``method`` (whose priors are ``q``) at
    Llama-3-8B scale."""
    wf = s.weight_format
    if wf == "fp8-e4m3":
        return 0.4, ESTIMATE, "FP8 e4m3 weights, per-channel scales"
    if wf == "mxfp8":
        return 1.2, ESTIMATE, "MXFP8 weights (block 32, e8m0 scales)"
    if wf == "nvfp4":
        return 6.0, ESTIMATE, "NVFP4 weights (block 16, fp8 scales), about INT4 RTN at group 16"
    if wf == "mxfp4":
        return 9.0, ESTIMATE, "MXFP4 weights (block 32, power-of-two scales)"
    if wf in ("nf4", "fp4"):
        base = _RTN_G32[4] * _group_factor(64, hidden) * (0.8 if wf == "nf4" else 1.1)
        return base, ESTIMATE, f"bitsandbytes {wf.upper()} (block 64), relative to INT4 RTN"
    bits = s.weight_bits
    if bits == 8 and not s.group_size:
        v = _pct(_TORCHAO["int8-weight-only"], _TORCHAO_BF16) * q.rtn_loss_fraction
        return v, TORCHAO, "INT8 per-channel weights (torchao int8 weight-only)"
    base = _RTN_G32.get(bits, 1000.0) * _group_factor(s.group_size, hidden)
    if not s.symmetric:
        base *= 0.9
    factor = q.rtn_loss_fraction
    src = SCOREBOARD if bits in (4, 5, 8) else ESTIMATE
    how = f"INT{bits} RTN anchored on llama.cpp Q{bits}_0" if bits in (4, 5, 8) else f"INT{bits} weights"
    g = f"group {s.group_size}" if s.group_size else "per-channel"
    if factor != 1.0:
        how += f", x{factor:g} for {method}"
        src = f"{src}; {q.source}"
    return base * factor, src, f"{how} ({g})"


def prior_quality(s: Scheme, method: str | None, params: int, hidden: int,
                  priors: QualityPriors | None = None) -> QualityEstimate:
    """The prior for scheme ``s`` made by ``method`` on a model of ``params`` parameters. ``priors``:
    the method's declaration (looked up in the default registry when not given)."""
    if s.is_baseline:
        return QualityEstimate(0.0, "baseline", "unquantized", "reference precision",
                               kld_source="unquantized", top1_source="unquantized")
    f = size_factor(params)
    size_note = f"; x{f:.2f} for a {params / 1e9:.3g}B-parameter model" if abs(f - 1.0) >= 0.005 else ""
    if s.is_gguf:
        t = s.weight_format[5:]
        dppl, src = _GGUF_DPPL.get(t, (1.0, ESTIMATE))
        pct = dppl / _L3_F16_PPL * 100.0
        kv = _KV.get(s.kv_cache or "", 0.0)
        if t in _GGUF_KLD:
            kld, ksrc = _GGUF_KLD[t] + kld_from_ppl(kv), KLD_SCOREBOARD
            if kv:
                ksrc += f"; KV cache: {KLD_MAPPED}"
        else:
            kld, ksrc = kld_from_ppl(pct + kv), KLD_MAPPED
        return _prior((pct + kv) * f, src, f"GGUF {t.upper()}: +{dppl:g} PPL at Llama-3-8B{size_note}",
                      kld * f, ksrc)
    q = priors if priors is not None else method_priors(method).quality
    w, src, note = _weight_term(s, method, hidden, q)
    parts = [note]
    total = w
    if not s.weight_only:
        at = s.activation_type or ""
        a = _ACT.get(at, 5.0)
        if at == "int8":
            if s.static_activations:
                a *= 2.0
            a *= q.int8_static_activation_loss if s.static_activations else q.int8_activation_loss
            src = TORCHAO if src == TORCHAO or s.weight_bits == 8 else src
        elif at == "fp8-e4m3" and s.weight_bits == 8:
            total, a = _pct(_TORCHAO["fp8-rowwise"], _TORCHAO_BF16), 0.0
            src, parts = TORCHAO, ["FP8 weights and activations (torchao fp8-rowwise)"]
        elif at == "nvfp4" and s.weight_format == "nvfp4":
            total, a = _pct(_TORCHAO["nvfp4"], _TORCHAO_BF16), 0.0
            src, parts = TORCHAO, ["NVFP4 weights and activations (torchao nvfp4)"]
        elif at == "mxfp8":
            total, a = _pct(_TORCHAO["mxfp8"], _TORCHAO_BF16), 0.0
            src, parts = TORCHAO, ["MXFP8 weights and activations (torchao mxfp8)"]
        if a:
            total += a
            parts.append(f"{at} activations +{a:.2g}%")
        if at == "int4":
            parts.append("INT4 activations need outlier rotation (QuaRot/SpinQuant) to be usable")
    if s.kv_cache:
        k = _KV.get(s.kv_cache, 1.0)
        total += k
        parts.append(f"{s.kv_cache} KV cache +{k:g}%")
    return _prior(total * f, src, "; ".join(parts) + size_note, kld_from_ppl(total) * f, KLD_MAPPED)


def _prior(pct: float, src: str, note: str, kld: float, kld_src: str) -> QualityEstimate:
    """A prior estimate: the perplexity change, the mean KLD (both already scaled for the model's size)
    and the same-top-token share that KLD implies."""
    return QualityEstimate(pct, "prior", src, note, kld=kld, kld_basis="prior", kld_source=kld_src,
                           top1_pct=top1_from_kld(kld), top1_basis="prior", top1_source=TOP1_MAPPED)


def estimate_quality(s: Scheme, method: str | None, params: int, hidden: int, model_keys: tuple[str, ...],
                     backend: str | None = None, store: Path | None = None,
                     runs_as: Scheme | None = None, priors: QualityPriors | None = None) -> QualityEstimate:
    """Measured figures from the results store where they exist for any of ``model_keys``, else the priors.

    The perplexity change and the fidelity (mean KLD, same top token) are looked up separately: a
    measured KLD replaces the KLD prior even when no perplexity change is stored, and the reverse;
    a measured KLD without a measured top-token share gives that share by :func:`top1_from_kld`.
    ``runs_as``: the scheme that actually executes when the registry falls back (weight-only for a
    W*A* scheme); the prior is then that scheme's, labelled with ``estimated_as``. ``priors``: the
    method's declaration (looked up in the default registry when not given).
    """
    if runs_as is None:
        q = prior_quality(s, method, params, hidden, priors)
    else:
        q = prior_quality(runs_as, method, params, hidden, priors)
        q = replace(q, estimated_as=str(runs_as),
                    note=f"runs as {runs_as} (registry fallback: activations stay 16-bit): {q.note}")
    keys = [k for k in model_keys if k]
    for key in keys:
        m = measured_quality(key, method, str(s), store, backend)
        if m is not None:
            q = replace(q, delta_pct=m, basis="measured", source="quantmatch results store",
                        note=f"measured perplexity change for {key}", estimated_as=None)
            break
    for key in keys:
        fid = measured_fidelity(key, method, str(s), backend, store)
        if fid is None:
            continue
        where = f"quantmatch results store ({key}, {fid.backend or 'any backend'}, {fid.date[:10]})"
        top1, top1_basis, top1_src = fid.top1_pct, "measured", where
        if top1 is None:
            top1, top1_basis, top1_src = top1_from_kld(fid.kld_mean), "prior", f"{TOP1_MAPPED}, from the measured KLD"
        return replace(q, kld=fid.kld_mean, kld_basis="measured", kld_source=where,
                       top1_pct=float(top1), top1_basis=top1_basis, top1_source=top1_src)
    return q
