"""KV-cache planning: which KV formats a runtime runs on a device, their memory at the workload's context,
and their quality risk as a prior with its published source (``plan --kv``).

A KV format is a run-time setting of the runtime (llama.cpp's cache types, vLLM's KV-cache dtype,
transformers' quantized cache), not part of the quantized artifact, so whether it runs is asked of the
registry for the runtime alone: the ``kv-cache`` verdict of the candidate's scheme with that ``-kv<fmt>``
suffix on its backend, device and target, without the method. The memory is
:func:`quantmatch.planner.memory.kv_cache_bytes` at ``Scheme.kv_bits`` (block scales included: Q8_0 8.5
bits, Q4_0 4.5 bits per value); the expected quality loss of a quantized cache is part of the candidate's
quality prior (:func:`quantmatch.planner.quality.prior_quality`), and :data:`KV_PRIORS` gives the published
evidence behind each format's risk, with per-family entries (:data:`FAMILY_KV_RISKS`) where a source reports
a family that loses far more than the format's general figure.

``--kv`` semantics (:func:`apply_kv`):

- not given: today's behaviour, the scheme's own KV format (``-kv<fmt>``), else the runtime's default
  (16-bit; fp32 where the runtime computes in fp32 on a CPU);
- a format (``fp16``, ``fp8``, ``q8_0`` ...): that KV format on every candidate; a candidate whose runtime
  cannot run it on the device is rejected at stage ``kv-cache`` with the registry's reason;
- ``auto``: each candidate keeps its default KV cache when it fits (a user expects a quantized cache only
  when needed, as with vLLM's ``--kv-cache-dtype auto``); when it does not fit, the least lossy format
  (:attr:`KVPrior.order`) that the registry runs there, that is not a high risk for the model's family,
  and with which the candidate fits and stays within the tolerance. When no format does both, the
  smallest format within the tolerance is kept, so the memory rejection shows the nearest miss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from quantmatch.planner.hardware import GIB
from quantmatch.planner.memory import kv_cache_bytes
from quantmatch.planner.types import PlanInputError, Tolerance, Workload
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.scheme import KV_FORMATS, Scheme

__all__ = ["FAMILY_KV_RISKS", "KV_CHOICES", "KV_PRIORS", "FamilyKVRisk", "KVChoice", "KVOption", "KVPrior",
           "apply_kv", "kv_decides_note", "kv_options", "kv_risk", "parse_kv"]

KV_CHOICES = ("auto", *KV_FORMATS)
"""Values of ``plan --kv``: ``auto`` or a KV format of the scheme grammar (``sdk.scheme.KV_FORMATS``)."""

_BITS: dict[str, float] = {"fp32": 32.0}


def parse_kv(value: str | None) -> str | None:
    """``--kv``: ``None`` (the scheme's or runtime's own KV format), ``auto`` or a KV format; aliases as the
    scheme grammar takes them (``f16``, ``e4m3``, ``int``). Anything else raises :class:`PlanInputError`
    naming the valid choices."""
    if value is None:
        return None
    v = str(value).strip().lower().replace("-", "_")
    v = {"f16": "fp16", "fp8e4m3": "fp8", "e4m3": "fp8", "e5m2": "fp8e5m2", "fp8_e5m2": "fp8e5m2",
         "fp8_e4m3": "fp8", "int": "int8"}.get(v, v)
    if v not in KV_CHOICES:
        raise PlanInputError(f"invalid --kv {value!r}; valid: {', '.join(KV_CHOICES)}")
    return v


@dataclass(frozen=True)
class KVPrior:
    """The quality risk of one KV format: ``level`` (``none``, ``low``, ``moderate``, ``high``), the
    published figure in words (``risk``) and where it comes from (``source``). ``order`` ranks the formats
    from least to most lossy; ``auto`` tries them in that order."""

    format: str
    order: int
    level: str
    risk: str
    source: str


@dataclass(frozen=True)
class FamilyKVRisk:
    """A model family (Hugging Face ``model_type``) that a source reports losing much more with these KV
    formats than :data:`KV_PRIORS` says in general."""

    model_types: tuple[str, ...]
    formats: tuple[str, ...]
    level: str
    risk: str
    source: str


_LLAMA_7412 = ("ggml-org/llama.cpp PR #7412 (JohannesGaessler, 'CUDA: quantized KV cache demo', comment "
               "2024-05-20): LLaMA-3-8B F16 weights, Wikitext-2")
_VLLM_2279 = ("vllm-project/vllm PR #2279 ('Support FP8-E5M2 KV Cache'): WizardCoder-34B, HumanEval-Python-EN, "
              "KV cache FP16 68.293%, FP8 E5M2 65.854%, FP8 E4M3 67.683%")
_VLLM_DOCS = ("https://docs.vllm.ai/en/latest/features/quantization/quantized_kvcache/ (without calibration "
              "all FP8 KV scales are 1.0; calibration through llm-compressor is the recommended path)")
_LOWBIT = ("quantmatch benchmarks/results/lowbit.json, kv section: SmolLM2-135M, one 4096-token WikiText "
           "window, measured by quantmatch bench")
_HF_BLOG = ("huggingface/blog PR #2045 (kv_cache_quantization.md, 'Blog post on KV cache quantization'): "
            "transformers' quantized cache, LongBench; fp16 / int4 / int2: TREC 63.0 / 63.0 / 55.0, "
            "SAMSum 41.12 / 41.3 / 14.04, TriviaQA 84.28 / 84.76 / 63.64")
_FREETOKEN = ("FlashML-org/FreeToken PR #268 (comment 2026-09-02): a hybrid MoE model on an RTX 4060 Laptop, "
              "greedy GSM8K-150: bf16 KV 0.973, NVFP4 KV 0.973, Q4_0-style (amax) KV 0.83-0.85, Q8_0 0.960")

KV_PRIORS: dict[str, KVPrior] = {
    "fp32": KVPrior("fp32", 0, "none", "fp32 KV cache: no loss (the reference precision)", "unquantized"),
    "fp16": KVPrior("fp16", 0, "none", "16-bit KV cache: no loss beyond the model's own 16-bit compute",
                    "unquantized"),
    "bf16": KVPrior("bf16", 0, "none", "16-bit KV cache: no loss beyond the model's own 16-bit compute",
                    "unquantized"),
    "q8_0": KVPrior("q8_0", 1, "low",
                    "Q8_0 K and V: perplexity 6.2344 vs 6.2322 with an F16 cache (+0.03%), mean KLD 0.00098 vs "
                    "0.00019", _LLAMA_7412),
    "fp8": KVPrior("fp8", 2, "low",
                   "FP8 (e4m3) KV: HumanEval-Python-EN 67.7% vs 68.3% with an FP16 cache (-0.6 points); "
                   "uncalibrated scales are 1.0", f"{_VLLM_2279}; {_VLLM_DOCS}"),
    "int8": KVPrior("int8", 2, "low",
                    "int8 KV (transformers' quantized cache, HQQ): perplexity +0.06% measured on SmolLM2-135M",
                    _LOWBIT),
    "fp8e5m2": KVPrior("fp8e5m2", 3, "moderate",
                       "FP8 e5m2 KV (2 mantissa bits): HumanEval-Python-EN 65.9% vs 68.3% with an FP16 cache "
                       "(-2.4 points)", _VLLM_2279),
    "nvfp4": KVPrior("nvfp4", 4, "moderate",
                     "NVFP4 KV: GSM8K 0.973, the same as bf16, on one hybrid MoE model (a single report; Q4_0 at "
                     "the same bytes lost 12-14 points there)", _FREETOKEN),
    "int4": KVPrior("int4", 5, "moderate",
                    "int4 KV (transformers' quantized cache, recent 128 tokens kept 16-bit): LongBench scores "
                    "as fp16 (TREC 63.0 vs 63.0), perplexity +1.8% measured on SmolLM2-135M",
                    f"{_HF_BLOG}; {_LOWBIT}"),
    "q4_0": KVPrior("q4_0", 6, "high",
                    "Q4_0 K and V: perplexity +5.85% measured on SmolLM2-135M; GSM8K 0.83-0.85 vs 0.973 with a "
                    "bf16 cache on a hybrid MoE model", f"{_LOWBIT}; {_FREETOKEN}"),
}
"""The published evidence behind each KV format's risk (quantmatch's own measurements are named as such)."""

FAMILY_KV_RISKS: tuple[FamilyKVRisk, ...] = (
    FamilyKVRisk(("qwen2",), ("fp8", "fp8e5m2"), "high",
                 "Qwen2/Qwen2.5 (no QK-Norm): a user reports Qwen2.5-Math-7B reaching about 0 accuracy on MATH "
                 "with an FP8 KV cache in vLLM rollouts, while Qwen3-8B-Base (QK-Norm) was unaffected",
                 "verl-project/verl PR #4435 (comment by LZC-BELIEVER, 2026-03-29)"),
    FamilyKVRisk(("gpt_oss",), ("fp8", "fp8e5m2"), "high",
                 "gpt-oss (attention sinks): GPT-OSS-120B GPQA 0.711 with a bf16 KV cache, 0.656 with FP8 "
                 "(trtllm-mha backend)", "sgl-project/sglang PR #9783 (comment by rainj-me, 2025-08-30)"),
    FamilyKVRisk(("gpt_oss",), ("q8_0", "q4_0"), "high",
                 "gpt-oss (attention sinks): gpt-oss-20b with Q8_0 K and V: median KLD 0.055 and the same top "
                 "token at 74.9% of positions against its F16-KV logits (8192 context)",
                 "TheTom/llama-cpp-turboquant issue #305 (2026-08-18)"),
)
"""Families a source reports as much more sensitive than the format's general figure."""


def kv_risk(fmt: str, info: ModelInfo | None = None) -> tuple[str, str, str]:
    """``(level, risk sentence, source)`` of KV format ``fmt`` for ``info``'s family."""
    if info is not None:
        for f in FAMILY_KV_RISKS:
            if info.model_type in f.model_types and fmt in f.formats:
                return f.level, f.risk, f.source
    p = KV_PRIORS.get(fmt)
    if p is None:
        return "unknown", f"{fmt} KV cache: no published figure", "none"
    return p.level, p.risk, p.source


def _bits(fmt: str) -> float:
    if fmt in _BITS:
        return _BITS[fmt]
    bits = Scheme("fp16", 16, kv_cache=fmt).kv_bits
    return float(bits if bits is not None else 16)


@dataclass(frozen=True)
class KVChoice:
    """The KV cache a candidate runs with: its format, bits per value (block scales included), GiB for the
    whole batch at the workload's context, the risk and its source, and how it was chosen (``scheme``,
    ``runtime default``, ``--kv``, ``auto: ...``)."""

    format: str
    bits: float
    gib: float
    level: str
    risk: str
    source: str
    how: str

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "gib": round(self.gib, 3), "bits": self.bits, "level": self.level,
                "risk": self.risk, "source": self.source, "how": self.how}


@dataclass(frozen=True)
class KVOption:
    """One KV format for a runtime on a device: the registry's verdict (``level``, ``reason``), its GiB at
    the workload's context and its risk."""

    format: str
    runnable: bool
    level: str
    reason: str
    bits: float
    gib: float
    risk_level: str
    risk: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "runnable": self.runnable, "verdict": self.level, "reason": self.reason,
                "bits": self.bits, "gib": round(self.gib, 3), "risk_level": self.risk_level, "risk": self.risk,
                "source": self.source}


def _gib(info: ModelInfo, wl: Workload, bits: float) -> float:
    return kv_cache_bytes(info, wl, bits / 8) / GIB


def _default_format(scheme: Scheme, kv_bytes: float) -> str:
    if scheme.kv_cache:
        return scheme.kv_cache
    return "fp32" if kv_bytes >= 4 else "fp16"


def choice_for(c: Any, info: ModelInfo, wl: Workload, how: str, scheme: Scheme) -> KVChoice:
    """The :class:`KVChoice` of an evaluated candidate ``c`` (its memory estimate holds the KV bytes)."""
    fmt = _default_format(scheme, c.memory.kv_bytes)
    level, risk, source = kv_risk(fmt, info)
    return KVChoice(fmt, c.memory.kv_bytes * 8, c.memory.kv_cache_gib, level, risk, source, how)


def kv_verdict(reg: Any, v: Any, fmt: str, info: ModelInfo) -> Any:
    """The registry's ``kv-cache`` verdict for ``fmt`` on ``v``'s runtime, device and target (no method:
    the KV format is the runtime's setting, not the artifact's)."""
    s = replace(reg.scheme(v.scheme), kv_cache=fmt)
    return reg.verdict(None, s, v.backend, v.device, v.target, layer="kv-cache", model=info)


def apply_kv(mode: str | None, v: Any, evaluate: Callable[..., Any], reg: Any, info: ModelInfo, wl: Workload,
             tol: Tolerance) -> tuple[Any, tuple[str, str] | None]:
    """Evaluate verdict ``v`` under ``--kv mode``: ``(candidate, None)``, or ``(None, (stage, reason))`` when
    the forced KV format does not run there. ``evaluate(v, kv=fmt)`` is the planner's candidate builder."""
    scheme: Scheme = reg.scheme(v.scheme)
    if mode is None:
        c = evaluate(v)
        how = "scheme" if scheme.kv_cache else "runtime default"
        return replace(c, kv=choice_for(c, info, wl, how, scheme)), None
    if mode != "auto":
        kv_v = kv_verdict(reg, v, mode, info)
        if not kv_v.runnable:
            why = kv_v.reasons[0].text if kv_v.reasons else "unsupported"
            return None, ("kv-cache", f"kv-cache layers: {mode} KV cache: {why}")
        c = evaluate(v, kv=mode)
        return replace(c, kv=choice_for(c, info, wl, "--kv", replace(scheme, kv_cache=mode))), None
    c = evaluate(v)
    if c.memory.fits is not False:
        how = "auto: the default KV cache fits"
        return replace(c, kv=choice_for(c, info, wl, how, scheme)), None
    default_bits = c.memory.kv_bytes * 8
    tried: list[tuple[str, Any]] = []
    for fmt in sorted(KV_PRIORS, key=lambda f: (KV_PRIORS[f].order, -_bits(f))):
        family_high = any(info.model_type in f.model_types and fmt in f.formats and f.level == "high"
                          for f in FAMILY_KV_RISKS)
        if fmt == "fp32" or _bits(fmt) >= default_bits or family_high:
            continue
        if not kv_verdict(reg, v, fmt, info).runnable:
            continue
        cand = evaluate(v, kv=fmt)
        ok = not tol.failures(cand.quality)
        if ok and cand.memory.fits is not False:
            how = f"auto: the default {_default_format(scheme, c.memory.kv_bytes)} KV cache does not fit; {fmt} does"
            return replace(cand, kv=choice_for(cand, info, wl, how, replace(scheme, kv_cache=fmt))), None
        if ok:
            tried.append((fmt, cand))
    if tried:
        fmt, cand = min(tried, key=lambda t: t[1].memory.total_gib)
        how = f"auto: nothing fits; {fmt} is the smallest KV cache within the tolerance"
        return replace(cand, kv=choice_for(cand, info, wl, how, replace(scheme, kv_cache=fmt))), None
    how = "auto: no quantized KV cache runs here within the tolerance"
    return replace(c, kv=choice_for(c, info, wl, how, scheme)), None


def kv_options(reg: Any, top: Any, info: ModelInfo, wl: Workload, profile: Any) -> tuple[KVOption, ...]:
    """Every KV format of :data:`KV_CHOICES` for the top plan's runtime on the device: verdict, GiB, risk."""
    if top is None:
        return ()
    out = []
    sch = reg.scheme(top.scheme)
    for fmt in KV_FORMATS:
        s = replace(sch, kv_cache=fmt)
        kv_v = reg.verdict(None, s, top.backend, profile, top.target, layer="kv-cache", model=info)
        level, risk, source = kv_risk(fmt, info)
        bits = _bits(fmt)
        out.append(KVOption(fmt, bool(kv_v.runnable), kv_v.level.value,
                            kv_v.reasons[0].text if kv_v.reasons else "", bits, _gib(info, wl, bits),
                            level, risk, source))
    return tuple(out)


def kv_decides_note(top: Any, wl: Workload) -> str | None:
    """A note when the top plan's KV cache is larger than its weights (long context or large batch)."""
    if top is None:
        return None
    m = top.memory
    weights = m.weights_gib + m.kept_gib
    if m.kv_cache_gib <= weights:
        return None
    return (f"the KV cache decides this plan's memory: {m.kv_cache_gib:.2f} GiB at context {wl.ctx} x batch "
            f"{wl.batch} against {weights:.2f} GiB of weights (--kv auto or --kv fp8/q8_0 shrinks it where the "
            "runtime runs it)")
