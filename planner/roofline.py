"""Roofline speed of prefill and decode for one candidate on one device.

For each phase the planner counts FLOPs and bytes moved:

- FLOPs: 2 per multiply-accumulate of every linear layer a token passes through (k of E experts for
  MoE, the output head included) plus attention: 4 x heads x head dim x context per token and layer.
- Bytes: the weights as stored (read once per decode step for the whole batch, once per prefill
  chunk), the KV cache read at the current context, and, for runtimes that expand low-bit weights
  before the matmul, the expanded copy written and read again.

Arithmetic intensity (FLOPs per byte) is compared with the device's ridge point for the compute
dtype that actually runs: the low-precision peak for a ``native`` verdict (int8, fp8, int4, fp4),
the 16-bit peak for ``weight-only`` (low-bit bytes, 16-bit math), and the 16-bit (fp32 on CPUs
without native half precision) peak with a penalty for ``emulated``. Time is the larger of
compute time and memory time at the runtime's achieved fraction of the peaks, plus its dispatch
overhead; the phase is memory-, compute- or overhead-bound accordingly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from quantmatch.planner.footprint import WeightLayout
from quantmatch.planner.hardware import DeviceSpec, Peak, vector_fp32_tflops
from quantmatch.planner.shapes import ParamBreakdown, attention_windows, kv_bytes_per_token
from quantmatch.planner.types import Workload
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.priors import RuntimePriors
from quantmatch.sdk.scheme import Scheme
from quantmatch.sdk.verdict import Level, Verdict

__all__ = ["EMULATION_PENALTY", "ComputePath", "PhaseEstimate", "compute_path", "dequant_mode", "estimate_phases"]

EMULATION_PENALTY = 0.5
"""Fraction of the achieved compute an ``emulated`` path keeps (conversions on the fly, no native
unit): a prior. Bandwidth is not discounted: widening bf16/fp16 to fp32 in registers costs compute,
not memory traffic, and low-bit weights that are expanded first pay for it in bytes
(``materialize``)."""

NOMINAL_BANDWIDTH_GBS = 100.0
"""Used only to rank candidates relative to each other when a device's bandwidth is unknown."""

_ACT_PEAK = {"int8": "int8", "fp8-e4m3": "fp8", "mxfp8": "fp8", "int4": "int4", "nvfp4": "fp4", "mxfp4": "fp4"}
_FUSED_WORDS = ("in registers", "inside", "in the gemm", "by marlin", "by machete", "by tinygemm",
                "in-kernel")
_MATERIALIZE_WORDS = ("decompressed to", "dequantized to", "dequantized, ", "converted to", "dequantized on")


@dataclass(frozen=True)
class ComputePath:
    """The dtype whose peak bounds the math, the efficiency multiplier, and why.

    ``gemv_eff`` and ``cast_eff`` are the runtime's CPU kernel priors that apply to this candidate
    (:class:`~quantmatch.sdk.priors.RuntimePriors`; 0: none): the decode GEMV rate per
    sequence and the rate of converting a weight format without conversion instructions, both as
    fractions of the cores' 256-bit fp32 rate.

    ``gemv_rate``/``gemm_rate``: the runtime's kernel rates probed on this machine
    (:mod:`quantmatch.sdk.kernel_rates`), in FLOP/s per sequence for the decode GEMV and FLOP/s for
    many-row products; when set they replace ``gemv_eff`` and the compute peak times the efficiency
    priors. ``rate_basis``: ``probed ...``, ``prior ...`` (a CPU candidate with no probed rate) or empty."""

    dtype: str
    peak: Peak | None
    penalty: float
    note: str
    compute_scale: float = 1.0
    gemv_eff: float = 0.0
    cast_eff: float = 0.0
    gemv_rate: float = 0.0
    gemm_rate: float = 0.0
    rate_basis: str = ""


@dataclass(frozen=True)
class PhaseEstimate:
    """One phase (``prefill`` or ``decode``) of the workload.

    ``flops``/``bytes`` are per pass over ``tokens`` tokens; ``time_s`` and ``tokens_per_s`` are
    ``None`` when a figure they need is unknown (``rank_time_s`` is then computed with nominal figures,
    for ordering only). ``bound`` is ``memory``, ``compute``, ``overhead`` or ``unknown``.
    ``basis`` is ``predicted`` (the roofline) or ``measured`` (``quantmatch bench`` on this machine:
    ``tokens_per_s``, ``time_s`` and ``rank_time_s`` are then the measurement's, ``note`` says where
    it comes from, and :attr:`predicted_tokens_per_s` keeps the roofline's figure).
    """

    phase: str
    tokens: int
    flops: float
    bytes: float
    intensity: float
    ridge: float | None
    bound: str
    compute_dtype: str
    peak_tflops: float | None
    bandwidth_gbs: float | None
    time_s: float | None
    tokens_per_s: float | None
    rank_time_s: float
    note: str = ""
    basis: str = "predicted"
    predicted: float | None = None

    @property
    def predicted_tokens_per_s(self) -> float | None:
        """The roofline's tokens/s, whatever the basis of :attr:`tokens_per_s`."""
        return self.predicted if self.basis == "measured" else self.tokens_per_s

    def to_dict(self) -> dict[str, Any]:
        pred = self.predicted_tokens_per_s
        return {
            "phase": self.phase, "tokens": self.tokens, "flops": self.flops, "bytes": self.bytes,
            "intensity_flop_per_byte": round(self.intensity, 3),
            "ridge_flop_per_byte": None if self.ridge is None else round(self.ridge, 3),
            "bound": self.bound, "compute_dtype": self.compute_dtype,
            "peak_tflops": None if self.peak_tflops is None else round(self.peak_tflops, 4),
            "bandwidth_gbs": None if self.bandwidth_gbs is None else round(self.bandwidth_gbs, 2),
            "time_s": self.time_s,
            "tokens_per_s": None if self.tokens_per_s is None else round(self.tokens_per_s, 3),
            "basis": self.basis, "predicted_tokens_per_s": None if pred is None else round(pred, 3),
            "note": self.note,
        }


def _native_half(spec: DeviceSpec, target: str, dtype: str) -> bool:
    feats = spec.profile.features_for(target)
    return dtype in feats or (dtype == "fp16" and not spec.profile.is_cpu and target != "cpu")


def compute_path(verdict: Verdict, scheme: Scheme, spec: DeviceSpec) -> ComputePath:
    """Which peak bounds the math of ``scheme`` as ``verdict`` says it runs on ``spec``."""
    target = verdict.target
    on_cpu = target == "cpu"
    level = verdict.level
    half = "bf16" if scheme.compute_dtype == "bf16" else "fp16"
    penalty = 1.0
    note = ""
    if scheme.is_baseline:
        dtype = scheme.compute_dtype
    elif scheme.is_gguf:
        t = scheme.weight_format[5:]
        if t in ("f32", "f16", "bf16"):
            dtype = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}[t]
        elif level is Level.NATIVE:
            dtype, note = "int8", "llama.cpp multiplies quantized blocks with int8-quantized activations"
        else:
            dtype = "fp16"
    elif level is Level.NATIVE and not scheme.weight_only:
        dtype = _ACT_PEAK.get(scheme.activation_type or "", half)
    elif scheme.compute_dtype == "fp32":
        dtype = "fp32"
    else:
        dtype = half
    if dtype in ("fp16", "bf16", "tf32") and (on_cpu or level is Level.EMULATED) and \
            not _native_half(spec, target, dtype):
        note = note or f"no native {dtype} unit: math in fp32"
        dtype = "fp32"
    if level is Level.EMULATED:
        penalty = EMULATION_PENALTY
        note = (note + "; " if note else "") + f"emulated: x{EMULATION_PENALTY:g} of the achieved compute"
    if on_cpu and not spec.is_cpu:
        # An SoC's catalog peaks are its GPU's; nothing records the CPU cores' rate.
        note = (note + "; " if note else "") + f"no peak known for the CPU cores of {spec.name}"
        return ComputePath(dtype, None, penalty, note)
    peak = spec.peak(dtype)
    if peak is None and dtype not in ("fp16", "bf16", "fp32"):
        fallback = "fp32" if on_cpu else half
        alt = spec.peak(fallback) or (spec.peak("fp16") if not on_cpu else None)
        if alt is not None:
            note = (note + "; " if note else "") + f"no {dtype} peak known: bounded by the {alt.dtype} peak"
            peak = alt
    if peak is None and dtype in ("fp16", "bf16"):
        peak = spec.peak("fp16") or spec.peak("bf16")
    if peak is None and dtype == "fp32" and not on_cpu:
        tf32, half_peak = spec.peak("tf32"), spec.peak("fp16") or spec.peak("bf16")
        if tf32 is not None:
            peak = tf32
            note = (note + "; " if note else "") + "fp32 GEMMs bounded by the TF32 tensor-core peak"
        elif half_peak is not None:
            peak = Peak("fp32", half_peak.tflops / 4, half_peak.source, "estimate",
                        "fp32 assumed at 1/4 of the 16-bit tensor-core peak")
            note = (note + "; " if note else "") + peak.note
    return ComputePath(dtype, peak, penalty, note)


def dequant_mode(runtime: RuntimePriors, verdict: Verdict, scheme: Scheme) -> str:
    """``none`` (the math reads the stored format), ``fused`` or ``materialize`` (see
    :class:`~quantmatch.sdk.priors.RuntimePriors`), or ``load``: the weights are expanded once when the
    model loads (a runtime that ``decompresses_at_load``) and the running model holds and reads the
    expanded copy."""
    if scheme.is_baseline or (verdict.level is Level.NATIVE and (not scheme.weight_only or scheme.is_gguf)):
        return "none"
    text = (verdict.runs_as or "").lower()
    if verdict.level is Level.EMULATED and runtime.decompresses_at_load and "decompressed to" in text:
        return "load"
    if verdict.level is Level.EMULATED:
        return "materialize"
    if not runtime.dequant_follows_verdict:
        return runtime.dequant
    if any(w in text for w in _FUSED_WORDS):
        return "fused"
    if any(w in text for w in _MATERIALIZE_WORDS):
        return "materialize"
    return runtime.dequant


def _attn_flops(info: ModelInfo, context: int) -> float:
    """Attention FLOPs of one token at ``context`` (QK^T and AV over every layer)."""
    per = 4.0 * info.num_heads * info.head_dim
    return float(sum(per * (context if w is None else min(context, w)) for w in attention_windows(info)))


def _attn_prefill_flops(info: ModelInfo, prompt: int) -> float:
    """Causal attention FLOPs of a whole prompt (each token attends to the ones before it)."""
    per = 4.0 * info.num_heads * info.head_dim
    total = 0.0
    for w in attention_windows(info):
        if w is None or w >= prompt:
            total += per * prompt * (prompt + 1) / 2
        else:
            total += per * (w * (w + 1) / 2 + (prompt - w) * w)
    return total


def _experts_touched(params: ParamBreakdown, tokens: int) -> float:
    """Expected fraction of experts a batch of ``tokens`` tokens routes to (uniform routing)."""
    if not params.experts:
        return 1.0
    k, e = params.experts_per_token, params.experts
    return 1.0 - (1.0 - k / e) ** max(tokens, 1)


def _phase(name: str, tokens: int, flops: float, nbytes: float, path: ComputePath, spec: DeviceSpec,
           runtime: RuntimePriors, passes: int, layers: int, rows: int = 0, cast_s: float = 0.0,
           vec: float | None = None) -> PhaseEstimate:
    """``rows``: sequences per decode step (the GEMV's M, for ``path.gemv_eff``); ``cast_s``: time
    spent converting weights per pass (``path.cast_eff``), added to the compute time; ``vec``: the
    cores' 256-bit fp32 rate in TFLOPS (:func:`vector_fp32_tflops`)."""
    bw = spec.bandwidth_gbs
    be = runtime.bandwidth_eff  # of a catalog peak, or of the copy test (a memcpy, not a kernel)
    peak = path.peak
    ce = 1.0 if (peak is not None and peak.confidence == "measured") else runtime.compute_eff
    ce *= path.compute_scale
    bw_eff = (bw if bw is not None else NOMINAL_BANDWIDTH_GBS) * be * 1e9
    t_mem = nbytes / bw_eff
    peak_rate = peak.tflops * 1e12 * ce * path.penalty if peak is not None else None
    if path.gemm_rate:  # the runtime's many-row kernel, probed here
        peak_rate = path.gemm_rate
    rate = peak_rate
    gemv_bound = False
    per_seq = path.gemv_rate or (vec * 1e12 * path.gemv_eff if vec is not None and path.gemv_eff else 0.0)
    if rows and per_seq:  # the GEMV kernel's own rate, per sequence, up to the GEMM rate
        gemv = per_seq * rows
        gemv_bound = rate is None or gemv < rate
        rate = gemv if gemv_bound else rate
    t_comp = flops / rate if rate is not None else 0.0
    t_cast = passes * cast_s  # on the same cores as the memory passes it feeds: adds, does not overlap
    overhead = passes * (layers * runtime.layer_overhead_s + runtime.step_overhead_s)
    t = max(t_mem, t_comp) + t_cast + overhead
    if overhead > max(t_mem, t_comp, t_cast):
        bound = "overhead"
    elif t_cast > max(t_mem, t_comp):
        bound = "compute"
    elif rate is None and bw is not None:
        bound = "memory" if name == "decode" else "unknown"
    else:
        bound = "memory" if t_mem >= t_comp else "compute"
    ridge = None
    if rate is not None and bw is not None:
        ridge = rate / (bw * be * 1e9)
    known = bw is not None and (rate is not None or bound == "memory")
    notes = [path.note] if path.note else []
    if gemv_bound and path.gemv_rate:
        notes.append(f"{runtime.name}'s decode GEMV: probed {path.gemv_rate / 1e9:.3g} GFLOP/s per sequence")
    elif gemv_bound:
        notes.append(f"{runtime.name}'s decode GEMV: x{path.gemv_eff:g} of the 256-bit fp32 rate per sequence")
    if path.rate_basis:
        notes.append(f"kernel rates: {path.rate_basis}")
    if cast_s:
        notes.append(f"weights converted without conversion instructions: {cast_s * 1e3:.3g} ms per pass")
    if rate is None:
        notes.append(f"no {path.dtype} compute peak known: {'bandwidth-only bound' if bw else 'relative only'}")
    if bw is None:
        notes.append("bandwidth unknown: tokens/s not predicted")
    return PhaseEstimate(
        phase=name, tokens=tokens, flops=flops, bytes=nbytes, intensity=flops / nbytes if nbytes else math.inf,
        ridge=ridge, bound=bound, compute_dtype=path.dtype,
        peak_tflops=None if rate is None else rate / 1e12,
        bandwidth_gbs=None if bw is None else bw * be,
        time_s=t if known else None, tokens_per_s=tokens / t if known and t > 0 else None,
        rank_time_s=t, note="; ".join(notes),
    )


def estimate_phases(info: ModelInfo, params: ParamBreakdown, layout: WeightLayout, workload: Workload,
                    path: ComputePath, spec: DeviceSpec, runtime: RuntimePriors, dequant: str,
                    kv_bytes: float, act_bytes: float, weight_bits: int = 16) -> tuple[PhaseEstimate, PhaseEstimate]:
    """(prefill, decode) estimates for one candidate (``weight_bits``: the scheme's weight bit width)."""
    B, P = workload.batch, workload.prompt
    L = info.num_layers
    expand = 4.0 if path.dtype == "fp32" else 2.0
    lin_flops = 2.0 * (params.active_linear + params.moe_router + params.output_params)
    passes_dq = runtime.dequant_passes + runtime.extra_passes.get(weight_bits, 0.0)

    # ---- decode: one step generates one token for each of the B sequences ----------------------
    c = workload.mean_decode_context
    d_flops = B * (lin_flops + _attn_flops(info, c))
    touched = _experts_touched(params, B)
    w_read = layout.dense_read_bytes + layout.expert_bytes * touched
    if dequant == "materialize":
        expanded = (layout.quantized_params - (params.moe_experts * (1 - touched))) * expand
        w_read += 2 * expanded * passes_dq
    elif dequant == "load":
        w_read += (layout.quantized_params * expand - layout.quantized_bytes) * (1 if not layout.expert_bytes
                                                                                 else touched)
    d_bytes = w_read + B * kv_bytes_per_token(info, c, kv_bytes) + B * info.hidden_size * act_bytes * 2 * L
    cast_s = 0.0
    vec = vector_fp32_tflops(spec)
    if dequant == "materialize" and path.cast_eff and vec:
        cast_s = layout.quantized_params / (vec * 1e12 * path.cast_eff)
    decode = _phase("decode", B, d_flops, d_bytes, path, spec, runtime, 1, L, rows=B, cast_s=cast_s, vec=vec)

    # ---- prefill: B prompts of P tokens, in chunks of the runtime's prefill size ----------------
    tokens = B * P
    chunk = runtime.prefill_chunk or tokens
    passes = max(1, math.ceil(tokens / chunk))
    p_flops = tokens * lin_flops + B * _attn_prefill_flops(info, P)
    touched_p = _experts_touched(params, min(tokens, chunk))
    w_pass = layout.dense_read_bytes + layout.expert_bytes * touched_p
    if dequant == "materialize":
        w_pass += 2 * layout.quantized_params * expand * passes_dq
    elif dequant == "load":
        w_pass += layout.quantized_params * expand - layout.quantized_bytes
    inter = info.moe_intermediate_size * max(1, info.experts_per_token) if info.is_moe else info.intermediate_size
    act_traffic = tokens * L * (10 * info.hidden_size + 3 * inter) * act_bytes
    p_bytes = passes * w_pass + B * kv_bytes_per_token(info, P, kv_bytes) + act_traffic
    prefill = _phase("prefill", tokens, p_flops, p_bytes, path, spec, runtime, passes, L, cast_s=cast_s)
    return prefill, decode
