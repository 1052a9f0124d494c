"""Build a :class:`~quantmatch.planner.plan.Plan`: enumerate, predict, filter, rank, explain.

1. Candidates are every (method, scheme, backend, target) the registry does not prune on the device
   for this model's shapes (``Registry.combinations(..., model=...)``), plus the unquantized
   baselines (16-bit; also fp32 on CPUs) on the runtimes that serve a plain checkpoint as is
   (``Backend.serves_unquantized``). Pruned
   combinations become ``registry`` rejections with the registry's reason; for MoE models the expert
   layers' verdict and for ``-kv*`` schemes the KV-cache verdict must be runnable too.
2. Each candidate gets memory, prefill/decode roofline, expected quality and the quantization job.
   On the local device, speeds and peak memory that ``quantmatch bench`` measured for the same
   combination at compatible settings replace the predictions (:mod:`.measured`), as measured
   perplexity and KL divergence replace the quality priors.
3. It is rejected when it does not fit (``memory``), when its expected loss exceeds the tolerance
   (``quality``: the perplexity change, mean KL divergence or same-top-token share outside a bound
   of :class:`~quantmatch.planner.types.Tolerance`), or when the job cannot run on this machine
   (``job``, ``local`` only).
4. The rest are ranked by the preference: ``fastest`` (request throughput: prefill plus ``gen``
   decode steps), ``smallest`` (memory) or ``most-accurate`` (expected loss), ties broken by the
   other two. Models under 500M parameters get the 16-bit baseline first whenever it fits (unless
   ``smallest`` is asked for explicitly).
5. When nothing qualifies the plan says so instead of failing: the most accurate options that fit
   (``over-tolerance``) or the smallest option and how far it is over (``nothing-fits``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from quantmatch.planner.footprint import gguf_type_fractions, harmonic_mix, weight_layout
from quantmatch.planner.hardware import GIB, DeviceSpec, device_spec
from quantmatch.planner.job import estimate_job
from quantmatch.planner.kv import apply_kv, kv_decides_note, kv_options, parse_kv
from quantmatch.planner.measured import apply_measured
from quantmatch.planner.memory import estimate_memory
from quantmatch.planner.plan import Candidate, Plan, Rejection
from quantmatch.planner.priors import method_priors, runtime_priors
from quantmatch.planner.probed import probed_path
from quantmatch.planner.produce import Production, production
from quantmatch.planner.quality import estimate_quality
from quantmatch.planner.roofline import compute_path, dequant_mode, estimate_phases
from quantmatch.planner.shapes import (
    ModelSource,
    ParamBreakdown,
    builtin_shapes,
    param_breakdown,
    quantize_source,
    resolve_model,
)
from quantmatch.planner.types import Tolerance, Workload, parse_budget, parse_preference
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.priors import RuntimePriors
from quantmatch.sdk.profile import HardwareProfile
from quantmatch.sdk.scheme import Scheme, parse_scheme
from quantmatch.sdk.store import MeasuredRun, measured_runs, results_path
from quantmatch.sdk.verdict import Level, Verdict

__all__ = ["SMALL_MODEL_PARAMS", "baseline_backends", "plan", "plan_devices"]

SMALL_MODEL_PARAMS = 500_000_000
"""Below this size the planner recommends 16-bit whenever it fits: small models lose more to
quantization and gain little from it."""


def _registry(reg: Any) -> Any:
    if reg is not None:
        return reg
    from quantmatch.registry import Registry

    return Registry()


def baseline_backends(registry: Any = None) -> list[str]:
    """The backends that serve an unquantized Hugging Face checkpoint as is
    (``Backend.serves_unquantized``); the planner offers the unquantized baselines on them."""
    return [e.name for e in _registry(registry).backends() if e.obj.serves_unquantized]


def _baseline_schemes(profile: HardwareProfile) -> list[str]:
    if profile.is_cpu:
        return ["fp32", "bf16"]
    return ["bf16" if "bf16" in profile.features else "fp16"]


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).name or text).strip("-").lower()
    return s or "model"


def _command(src: ModelSource, model_arg: str, c: Candidate) -> str | None:
    """The ``quantmatch quantize`` line for ``c`` (``None`` for the unquantized baseline); an exported plan
    (GPTQ on llama.cpp) asks for the target format with ``--format``."""
    if c.method is None:
        return None
    spec = quantize_source(src, model_arg)
    arg = spec if " " not in spec else f'"{spec}"'
    fmt = f" --format {c.export_format}" if c.export_format else ""
    return (f"quantmatch quantize {arg} --method {c.method} --scheme {c.scheme}{fmt} "
            f"--out {_slug(model_arg)}-{c.scheme}{'-' + c.export_format if c.export_format else ''}")


def _model_keys(src: ModelSource) -> tuple[str, ...]:
    keys = [src.name]
    for s in builtin_shapes():
        if s.id == src.name:
            keys.append(s.hf_id)
    return tuple(keys)


class _Builder:
    """Evaluates candidates for one (model, device, workload); holds the shared inputs."""

    def __init__(self, src: ModelSource, params: ParamBreakdown, spec: DeviceSpec, workload: Workload,
                 budget: float | None, local: bool, results_db: Path | None, out_dir: Path | None,
                 reg: Any) -> None:
        self.src, self.info, self.params, self.spec = src, src.info, params, spec
        self.workload, self.budget, self.local = workload, budget, local
        self.out_dir, self.reg = out_dir, reg
        store = results_db or results_path()
        self.results_db = store if store.is_file() else None
        # bench measures this machine only, so its figures stand for the local device and no other
        self.measured: dict[tuple[str, str, str], MeasuredRun] = (
            measured_runs(_model_keys(src), spec.id, self.results_db) if local and self.results_db else {})
        self.largest_linear = max((lin.in_features * lin.out_features for lin in _sample_linears(self.info)),
                                  default=0)
        caps = [(v, s) for v, s in ((spec.memory_gib, f"{spec.name} memory"), (budget, "memory budget"))
                if v is not None]
        self.capacity: float | None = min(caps)[0] if caps else None
        self.capacity_source: str = min(caps)[1] if caps else "unknown"

    def exported_as(self, v: Verdict) -> tuple[str, Scheme] | None:
        """``(format, scheme it runs as)`` when ``v``'s backend runs an exact export of the method's artifact
        (GPTQ w4a16-g32 on llama.cpp: ``("gguf", gguf-q4_0)``), read from the plugins' declarations."""
        exported = self.reg.exported_as(v.method, v.scheme, v.backend)
        return None if exported is None else (str(exported[0].artifact_format), exported[1])

    def evaluate(self, v: Verdict, kv: str | None = None) -> Candidate:
        """``kv``: a KV format the runtime is set to (``plan --kv``); the candidate's scheme stays ``v``'s."""
        info, params, spec, wl = self.info, self.params, self.spec, self.workload
        asked: Scheme = self.reg.scheme(v.scheme)
        shown = str(asked)
        if kv is not None:
            asked = replace(asked, kv_cache=kv)
        exported = self.exported_as(v)
        # an exported artifact runs as the target format's scheme (speed, memory); its quality is the method's
        s: Scheme = exported[1] if exported else asked
        if kv is not None:
            s = replace(s, kv_cache=kv)
        runtime = runtime_priors(v.backend, v.target, self.reg)
        mp = method_priors(v.method, self.reg)
        path = compute_path(v, s, spec)
        dense = 2.0
        if runtime.float_dtype == "fp32" and v.target == "cpu" and not s.is_baseline:
            dense = 4.0  # quantmatch's CPU runners load torch models in fp32 (the bf16 baseline aside)
            if path.dtype in ("fp16", "bf16"):
                note = (path.note + "; " if path.note else "") + f"{v.backend} computes in fp32 on the CPU"
                path = replace(path, dtype="fp32", peak=spec.peak("fp32") if spec.is_cpu else path.peak, note=note)
        repack = s.is_gguf and _repacks(runtime, spec.profile, v.target, s)
        table, gemv = runtime.format_compute_eff, runtime.gemv_eff
        if s.is_gguf and runtime.repacked_gguf_types and not repack:  # no repacked kernels then
            table = _without(table, runtime.repacked_gguf_types)
            gemv = _without(gemv, runtime.repacked_gguf_types)
        scale = _format_scale(table, info, s, path.dtype)
        int8_peak = path.peak is None or path.peak.dtype == "int8"  # not a fallback to the fp32 peak
        if int8_peak and not repack:
            features = spec.profile.features_for(v.target)
            for feature, fraction in runtime.unused_int8_features.items():
                if feature in features:
                    scale *= fraction
        if scale != 1.0:
            path = replace(path, compute_scale=scale, note=(path.note + "; " if path.note else "")
                           + f"{v.backend}'s kernels for {s}: x{scale:.2g} compute efficiency")
        dq = dequant_mode(runtime, v, s)
        if v.target == "cpu":
            cast = runtime.cast_eff.get("fp8", 0.0) if "fp8" in (s.weight_format or "") else 0.0
            path = replace(path, gemv_eff=_gemv_eff(gemv, info, s, path.dtype, dq), cast_eff=cast)
            if spec.is_cpu:  # this machine's probed kernel rates, where cached, replace the fitted priors
                path = probed_path(path, spec.kernel_rates, v.backend, v.target, info, s)
        layout = weight_layout(info, params, s, v.method if not exported else None, dense, mp)
        act_bytes = 4.0 if path.dtype == "fp32" or dense == 4.0 else 2.0
        if s.kv_bits:
            kv_bytes = s.kv_bits / 8
        elif runtime.kv_cache_bytes is not None:
            kv_bytes = runtime.kv_cache_bytes
        elif s.is_gguf:  # a GGUF model's KV cache is F16
            kv_bytes = 2.0
        else:
            kv_bytes = act_bytes
        width = 4.0 if path.dtype == "fp32" else 2.0
        expanded = self.largest_linear * width if dq == "materialize" else 0.0
        if dq == "load":  # the whole expanded copy is resident next to the packed one
            expanded = layout.quantized_params * width * (1.0 + runtime.decompress_retained)
        if repack:
            # the repacked tensors go into new buffers; the mmapped originals were read once
            repacked = sum(f for t, f in gguf_type_fractions(info, s.weight_format[5:]).items()
                           if t in runtime.repacked_gguf_types)
            expanded += repacked * (layout.quantized_bytes - layout.expert_bytes)
        load_peak = None
        if v.method and runtime.load_copy_bytes and v.target == "cpu":
            load_peak = runtime.import_gib + (layout.quantized_params * runtime.load_copy_bytes
                                              + layout.total_bytes) / GIB
        mem = estimate_memory(info, layout, wl, runtime, kv_bytes, act_bytes, expanded,
                              self.capacity, self.capacity_source, load_peak)
        prefill, decode = estimate_phases(info, params, layout, wl, path, spec, runtime, dq, kv_bytes, act_bytes,
                                          s.weight_bits)
        prefill, decode, mem = apply_measured(prefill, decode, mem, self._measured(v, s), wl)
        keys = _model_keys(self.src) if self.results_db is not None else ()
        quality = estimate_quality(asked, v.method, params.total, info.hidden_size, keys, v.backend,
                                   self.results_db, runs_as=_runs_as_scheme(asked, v), priors=mp.quality)
        needs_cal = False
        if v.method:
            try:
                needs_cal = bool(self.reg.method(v.method).needs_calibration)
            except Exception:
                needs_cal = False
        job = estimate_job(v.method, needs_cal, info, params, layout, spec, self.local, self.out_dir, mp.job)
        rank_t = prefill.rank_time_s + wl.gen * decode.rank_time_s
        known = prefill.time_s is not None and decode.time_s is not None
        req = rank_t if known else None
        thr = wl.batch * wl.gen / rank_t if known and rank_t > 0 else None
        return Candidate(
            method=v.method, scheme=shown, backend=v.backend, target=v.target, level=v.level.value,
            runs_as=v.runs_as if not exported else f"exported to {exported[0]} as {exported[1]}: {v.runs_as or ''}"
            .rstrip(": "), verdict_reason=v.reasons[0].text if v.reasons else "",
            export_format=exported[0] if exported else None,
            memory=mem, prefill=prefill, decode=decode, quality=quality, job=job,
            request_s=req, throughput_tps=thr, rank_request_s=rank_t, sources=v.sources,
        )

    def _measured(self, v: Verdict, s: Scheme) -> MeasuredRun | None:
        """The bench run of this combination here (bench's runners run on the CPU)."""
        if v.target != "cpu":
            return None
        return self.measured.get(((v.method or "none").lower(), str(s).lower(), v.backend.lower()))


def _runs_as_scheme(s: Scheme, v: Verdict) -> Scheme | None:
    """The scheme that actually runs when the registry falls back to weight-only for a W*A* scheme
    (W8A8-FP8 on an A100 runs as FP8 weights with 16-bit activations): its activations stay 16-bit,
    so its loss is the weight-only scheme's. ``None`` when the scheme runs as requested."""
    if v.level is not Level.WEIGHT_ONLY or s.weight_only or s.is_gguf or s.is_baseline:
        return None
    return replace(s, activation_format=None, activation_bits=16, static_activations=False)


def _repacks(runtime: RuntimePriors, profile: HardwareProfile, target: str, s: Scheme) -> bool:
    """Whether the runtime repacks GGUF types at load on this device (``RuntimePriors.repacked_gguf_types``,
    ``no_repack_on``, ``repack_switch``)."""
    if not runtime.repacked_gguf_types:
        return False
    switch = os.environ.get(runtime.repack_switch, "").strip() if runtime.repack_switch else ""
    if switch in ("0", "1"):
        return switch == "1"
    if runtime.no_repack_on is None:
        return True
    from quantmatch.registry.engine import Query, unmet

    q = Query(None, s.weight_type, s.activation_type, s.group_size or 0, s.symmetric, "linear", target)
    return bool(unmet(runtime.no_repack_on, profile, q))


def _without(table: Mapping[str, float], gguf_types: frozenset[str]) -> dict[str, float]:
    """``table`` without the entries of these GGUF types (``gguf-q4_0`` for ``q4_0``)."""
    dropped = {f"gguf-{t}" for t in gguf_types}
    return {k: x for k, x in table.items() if k not in dropped}


def _mixed_over_types(info: ModelInfo, s: Scheme, factor: Any) -> float:
    """A per-GGUF-type factor mixed over the types the layers of ``s`` end up in, weighted by time
    (harmonic); 0 when a type has none."""
    return harmonic_mix(gguf_type_fractions(info, s.weight_format[5:]), factor)


def _format_factor(table: Mapping[str, float], weight_type: str, dtype: str) -> float:
    """``RuntimePriors.format_compute_eff`` for one weight type computed in ``dtype``: the type's own
    entry, else the first pattern qualified with this dtype (``gguf-*:int8``), else the first plain
    pattern (``gguf-*``), else 1."""
    if weight_type in table:
        return float(table[weight_type])
    for qualified in (True, False):
        for key, x in table.items():
            pattern, _, key_dtype = key.partition(":")
            if bool(key_dtype) == qualified and key_dtype in ("", dtype) and fnmatchcase(weight_type, pattern):
                return float(x)
    return 1.0


def _format_scale(table: Mapping[str, float], info: ModelInfo, s: Scheme, dtype: str) -> float:
    """The runtime's extra compute-efficiency factor for the weights of ``s``; for a GGUF scheme mixed
    over the types its layers end up in."""
    if not table:
        return 1.0
    if not s.is_gguf:
        return _format_factor(table, s.weight_type, dtype)
    return _mixed_over_types(info, s, lambda t: _format_factor(table, f"gguf-{t}", dtype))


def _gemv_eff(table: Any, info: ModelInfo, s: Scheme, dtype: str, dq: str) -> float:
    """The runtime's decode GEMV prior (``RuntimePriors.gemv_eff``) for ``s``: ``quant`` for weights
    the kernel reads packed (a GGUF type's own entry first), the compute dtype's for 16-bit weights;
    0 when none applies."""
    if not table:
        return 0.0
    packed = not s.is_baseline and dq in ("none", "fused") and not (s.is_gguf and dtype != "int8")
    if not packed:
        return float(table.get(dtype, 0.0))
    if not s.is_gguf:
        return float(table.get("quant", 0.0))
    return _mixed_over_types(info, s, lambda t: table.get(f"gguf-{t}", table.get("quant", 0.0)))


def _sample_linears(info: ModelInfo) -> list[Any]:
    """The linear layers of the first decoder layer (all layers have the same shapes)."""
    return [lin for lin in info.linear_layers() if ".layers.0." in lin.name or ".h.0." in lin.name]


_LEVEL_ORDER = {"native": 0, "weight-only": 1, "emulated": 2, "unsupported": 3}


def _rank_key(pref: str, c: Candidate, targets: tuple[str, ...] = ()) -> tuple[float, ...]:
    speed = round(c.rank_request_s, 9)
    tail = (_LEVEL_ORDER.get(c.level, 9), targets.index(c.target) if c.target in targets else 99)
    if pref == "smallest":
        return (round(c.memory.total_gib, 4), c.quality.delta_pct, speed, *tail)
    if pref == "most-accurate":
        return (round(c.quality.delta_pct, 4), speed, c.memory.total_gib, *tail)
    return (speed, c.quality.delta_pct, c.memory.total_gib, *tail)


def _fmt_tps(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _why(pref: str, c: Candidate, first: Candidate, tol: Tolerance, rank: int, small_rule: bool) -> tuple[str, ...]:
    out: list[str] = []
    if rank == 1:
        if small_rule and c.is_baseline:
            out.append("models under 500M parameters lose more to quantization and are cheap to keep at "
                       "16-bit; it fits, so the planner recommends it")
        else:
            what = {"fastest": "highest predicted request throughput",
                    "smallest": "smallest memory footprint",
                    "most-accurate": "lowest expected quality loss"}[pref]
            out.append(f"{what} among the plans that fit and meet the {tol.text} tolerance")
    else:
        if pref == "fastest":
            ratio = c.rank_request_s / first.rank_request_s if first.rank_request_s else 1.0
            if ratio > 1.005:
                out.append(f"{(ratio - 1) * 100:.0f}% longer request than #1")
            elif ratio < 0.995:
                out.append(f"{1 / ratio:.2g}x faster than #1, which stays first as the 16-bit baseline of a "
                           "small model")
            else:
                out.append("as fast as #1 (ties broken by quality, then memory)")
        elif pref == "smallest":
            out.append(f"+{c.memory.total_gib - first.memory.total_gib:.2f} GiB vs #1")
        else:
            out.append(f"+{c.quality.delta_pct - first.quality.delta_pct:.2f}% expected PPL vs #1")
    d = c.decode
    speed = f", {_fmt_tps(d.tokens_per_s)} tok/s" if d.tokens_per_s else ""
    if d.basis == "measured":
        speed += f" measured (predicted {_fmt_tps(d.predicted_tokens_per_s)})"
    out.append(f"decode {d.bound}-bound in {d.compute_dtype}{speed}")
    if c.level != "native":
        out.append(f"{c.level}: {c.runs_as or c.verdict_reason}")
    return tuple(out)


def _pretty(scheme: str) -> str:
    return scheme.upper()


def _summary(plan_top: Candidate | None, baseline: Candidate | None, evaluated: list[Candidate],
             spec: DeviceSpec, wl: Workload) -> list[str]:
    out: list[str] = []
    ref = baseline
    d_ref = ref.decode if ref else (plan_top.decode if plan_top else None)
    if d_ref is not None:
        s = f"Decode at batch {wl.batch} on {spec.name} is {d_ref.bound}-bound"
        if d_ref.ridge:
            s += f" (arithmetic intensity {d_ref.intensity:.3g} FLOP/byte vs a ridge point of {d_ref.ridge:.3g})"
        out.append(s + ".")
    if plan_top is not None and ref is not None and plan_top.key != ref.key:
        br = ref.decode.bytes / plan_top.decode.bytes if plan_top.decode.bytes else 0
        sp = ref.decode.rank_time_s / plan_top.decode.rank_time_s if plan_top.decode.rank_time_s else 0
        verb = "fewer" if br >= 1 else "more"
        bases = {plan_top.decode.basis, ref.decode.basis}
        speed = (f"and was measured at {sp:.1f}x its decode speed" if bases == {"measured"} else
                 f"so it predicts about {sp:.1f}x the decode speed" if bases == {"predicted"} else
                 f"so it runs about {sp:.1f}x the decode speed (one of the two measured, one predicted)")
        out.append(f"{_pretty(plan_top.scheme)} ({plan_top.backend}) reads {max(br, 1 / br if br else 0):.1f}x "
                   f"{verb} bytes per decode step than {_pretty(ref.scheme)}, {speed}.")
        if plan_top.decode.bound != ref.decode.bound:
            why = (": the GEMV kernel's rate of unpacking blocks, not the bandwidth, sets its pace"
                   if "decode GEMV" in plan_top.decode.note else "")
            out.append(f"{_pretty(plan_top.scheme)} itself decodes {plan_top.decode.bound}-bound{why}.")
    p_ref = ref.prefill if ref else (plan_top.prefill if plan_top else None)
    if p_ref is not None:
        s = f"Prefill of {wl.batch} x {wl.prompt} tokens is {p_ref.bound}-bound"
        if p_ref.bound == "unknown":
            s = (f"Prefill of {wl.batch} x {wl.prompt} tokens cannot be placed on the roofline: no compute "
                 f"peak is known for {spec.name}")
        if p_ref.ridge:
            s += f" (intensity {p_ref.intensity:.3g} vs ridge {p_ref.ridge:.3g})"
        if p_ref.bound == "compute" and ref is not None:
            timed = [c for c in evaluated if c.prefill.peak_tflops is not None]
            wo = [c for c in timed if c.level == "weight-only" and c.memory.bits_per_weight <= 5
                  and c.prefill.compute_dtype in ("fp16", "bf16")]
            nat = [c for c in timed if c.level == "native" and c.method is not None
                   and not parse_scheme(c.scheme).is_gguf and c.prefill.compute_dtype not in ("fp16", "bf16", "fp32")]
            parts = []
            if wo:
                w = min(wo, key=lambda c: c.prefill.rank_time_s)
                x = ref.prefill.rank_time_s / w.prefill.rank_time_s
                parts.append(f"{_pretty(w.scheme)} gives {'no' if x < 1.15 else 'some'} speed-up there "
                             f"({x:.2f}x: it computes in {w.prefill.compute_dtype})")
            if nat:
                n = min(nat, key=lambda c: c.prefill.rank_time_s)
                x = ref.prefill.rank_time_s / n.prefill.rank_time_s
                parts.append(f"{_pretty(n.scheme)} does ({x:.2f}x on the {n.prefill.compute_dtype} peak)")
            elif wo:
                parts.append(f"no scheme computes natively below 16-bit on {spec.name} here")
            if parts:
                s += ": " + (" but ".join(parts) if len(parts) == 2 else parts[0])
        out.append(s + ".")
    return out


def plan(model: str | Path | ModelInfo | ModelSource, device: str | HardwareProfile | DeviceSpec = "local", *,
         batch: int = 1, prompt: int = 512, gen: int = 256, context: int | None = None,
         tolerance: str | float | Tolerance | None = "chat", memory_budget: float | str | None = None,
         prefer: str | None = "fastest", registry: Any = None, results_db: Path | None = None,
         out_dir: Path | None = None, max_kld: str | float | None = None,
         min_top1: str | float | None = None, kv: str | None = None) -> Plan:
    """Recommend a precision, method and runtime for ``model`` on ``device``.

    ``model``: a built-in name (``llama-3.1-8b``, ``smollm2-135m`` ...), a model directory or
    ``config.json``, or a ``.gguf`` file. ``device``: a catalog id or alias, ``local`` (detected;
    bandwidth measured by the copy test), a :class:`HardwareProfile` or a :class:`DeviceSpec` with
    measured figures. ``tolerance``: ``chat`` (3%, mean KLD 0.04), ``code`` (1%, 0.01), ``reasoning``
    (0.5%, 0.005), a percentage (perplexity only) or a :class:`Tolerance`. ``max_kld``: the largest
    expected mean KL divergence (nats per token; replaces the class's), ``min_top1``: the smallest
    expected same-top-token percentage. ``memory_budget``: GiB. ``prefer``: ``fastest``, ``smallest``
    or ``most-accurate``. ``kv``: the KV-cache format, ``None`` (the scheme's or runtime's own), a format
    (``fp16``, ``fp8``, ``int8``, ``q8_0``, ``q4_0`` ...: every candidate, rejected at stage ``kv-cache`` where
    its runtime cannot run it) or ``auto`` (a quantized cache only where the default one does not fit; see
    :mod:`quantmatch.planner.kv`).

    Bad input raises :class:`~quantmatch.planner.types.PlanInputError`,
    :class:`~quantmatch.registry.UnknownChoiceError` (unknown device or model name, with the closest
    choices) or :class:`~quantmatch.sdk.model_info.ModelInfoError` (unreadable config). Nothing fitting is
    not an error: see :attr:`Plan.status`.
    """
    wl = Workload(batch, prompt, gen, context)
    tol = Tolerance.parse(tolerance, max_kld, min_top1)
    budget = parse_budget(memory_budget)
    pref = parse_preference(prefer)
    kv_mode = parse_kv(kv)
    src = resolve_model(model)
    reg = _registry(registry)
    return _plan_one(src, model, device, wl, tol, budget, pref, reg, results_db, out_dir, kv_mode)


def plan_devices(model: str | Path | ModelInfo | ModelSource,
                 devices: Sequence[str | HardwareProfile | DeviceSpec], **kwargs: Any) -> list[Plan]:
    """One :func:`plan` per device (the model is resolved once)."""
    if not devices:
        from quantmatch.planner.types import PlanInputError

        raise PlanInputError("no device given; use --device ID (repeatable) or --device local")
    src = resolve_model(model)
    reg = _registry(kwargs.pop("registry", None))
    wl = Workload(kwargs.pop("batch", 1), kwargs.pop("prompt", 512), kwargs.pop("gen", 256),
                  kwargs.pop("context", None))
    tol = Tolerance.parse(kwargs.pop("tolerance", "chat"), kwargs.pop("max_kld", None), kwargs.pop("min_top1", None))
    budget = parse_budget(kwargs.pop("memory_budget", None))
    pref = parse_preference(kwargs.pop("prefer", "fastest"))
    results_db, out_dir = kwargs.pop("results_db", None), kwargs.pop("out_dir", None)
    kv_mode = parse_kv(kwargs.pop("kv", None))
    if kwargs:
        raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
    return [_plan_one(src, model, d, wl, tol, budget, pref, reg, results_db, out_dir, kv_mode)
            for d in _unique_devices(devices, reg)]


def _device_key(device: str | HardwareProfile | DeviceSpec, reg: Any) -> str:
    if isinstance(device, (DeviceSpec, HardwareProfile)):
        return device.id
    return str(reg.device(device).id)


def _unique_devices(devices: Sequence[Any], reg: Any) -> list[Any]:
    """``devices`` in order with repeats dropped (``h100`` and ``nvidia_h100_sxm`` are one device)."""
    seen: set[str] = set()
    out = []
    for d in devices:
        key = _device_key(d, reg)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _resolve_device(device: str | HardwareProfile | DeviceSpec, reg: Any) -> tuple[DeviceSpec, bool]:
    if isinstance(device, DeviceSpec):
        return device, device.profile.detected
    local = isinstance(device, str) and device.strip().lower() == "local"
    profile = reg.device(device)
    local = local or profile.detected
    return device_spec(profile, measure=local), local


def _plan_one(src: ModelSource, model_arg: Any, device: Any, wl: Workload, tol: Tolerance, budget: float | None,
              pref: str, reg: Any, results_db: Path | None, out_dir: Path | None, kv: str | None = None) -> Plan:
    spec, local = _resolve_device(device, reg)
    profile = spec.profile
    info = src.info
    params = param_breakdown(info)
    b = _Builder(src, params, spec, wl, budget, local, results_db, out_dir, reg)
    rejections: list[Rejection] = []
    evaluated: list[Candidate] = []
    notes: list[str] = list(spec.notes)
    if info.max_position_embeddings and wl.ctx > info.max_position_embeddings:
        notes.append(f"context {wl.ctx} exceeds the model's max_position_embeddings "
                     f"{info.max_position_embeddings}")

    verdicts: list[Verdict] = list(reg.combinations(profile, model=info, include_unsupported=True))
    for be_name in baseline_backends(reg):
        be = reg.backend(be_name)
        for t in profile.targets:
            if t not in be.targets:
                continue
            for s in _baseline_schemes(profile):
                v = reg.verdict(None, s, be_name, profile, t, model=info)
                if v.runnable:
                    verdicts.append(v)
    seen: set[tuple[Any, ...]] = set()
    for v in verdicts:
        key = (v.method, v.scheme, v.backend, v.target)
        if key in seen:
            continue
        seen.add(key)
        if kv is not None and reg.scheme(v.scheme).kv_cache:
            continue  # --kv sets every candidate's KV cache: the scheme without its -kv suffix stands for it
        if not v.runnable:
            rejections.append(Rejection(v.method, v.scheme, v.backend, v.target, "registry",
                                        v.reasons[0].text if v.reasons else "unsupported", v.level.value))
            continue
        extra = _layer_problem(reg, v, info)
        if extra is not None:
            rejections.append(Rejection(v.method, v.scheme, v.backend, v.target, extra[0], extra[1], v.level.value))
            continue
        cand, kv_problem = apply_kv(kv, v, b.evaluate, reg, info, wl, tol)
        if kv_problem is not None:
            rejections.append(Rejection(v.method, v.scheme, v.backend, v.target, *kv_problem, v.level.value))
            continue
        evaluated.append(cand)

    evaluated, note = _comparable(evaluated, wl, spec)
    if note:
        notes.append(note)
    baselines = [c for c in evaluated if c.is_baseline]
    baseline = min(baselines, key=lambda c: c.rank_request_s) if baselines else None
    evaluated = [_with_speedups(c, baseline) for c in evaluated]
    if baseline is not None:
        baseline = next(c for c in evaluated if c.key == baseline.key)

    feasible: list[Candidate] = []
    fitting: list[Candidate] = []
    for c in evaluated:
        if c.memory.fits is False:
            over = c.memory.over_gib or 0.0
            rejections.append(Rejection(
                c.method, c.scheme, c.backend, c.target, "memory",
                f"needs {c.memory.total_gib:.2f} GiB, {c.memory.capacity_gib:.2f} GiB available "
                f"({c.memory.capacity_source}): {over:.2f} GiB over", c.level, c))
            continue
        if c.job.feasible is False:
            rejections.append(Rejection(c.method, c.scheme, c.backend, c.target, "job",
                                        f"the {c.method} job cannot run here: {c.job.reason}", c.level, c))
            continue
        fitting.append(c)
        failed = tol.failures(c.quality)
        if failed:
            rejections.append(Rejection(c.method, c.scheme, c.backend, c.target, "quality", "; ".join(failed),
                                        c.level, c))
            continue
        feasible.append(c)

    small_rule = params.total < SMALL_MODEL_PARAMS and pref != "smallest"
    if feasible:
        status = "ok"
        ranked = sorted(feasible, key=lambda c: _rank_key(pref, c, profile.targets))
        if small_rule:
            base = [c for c in ranked if c.is_baseline]
            if base:
                ranked.remove(base[0])
                ranked.insert(0, base[0])
    elif fitting:
        status = "over-tolerance"
        ranked = sorted(fitting, key=lambda c: _rank_key("most-accurate", c, profile.targets))
        notes.append(f"no plan meets the {tol.text} tolerance: the most accurate plans that fit are listed")
    elif evaluated:
        status = "nothing-fits"
        smallest = min(evaluated, key=lambda c: (c.memory.total_gib, c.quality.delta_pct))
        ranked = [smallest]
        cap = smallest.memory.capacity_gib or 0.0
        notes.append(f"nothing fits in {cap:.2f} GiB ({smallest.memory.capacity_source}): the smallest option, "
                     f"{smallest.label}, needs {smallest.memory.total_gib:.2f} GiB "
                     f"({smallest.memory.over_gib or 0.0:.2f} GiB over)")
    else:
        status = "nothing-fits"
        ranked = []
        notes.append(f"the registry prunes every combination for {src.name} on {spec.name}")

    final: list[Candidate] = []
    first = ranked[0] if ranked else None
    arg = str(model_arg) if not isinstance(model_arg, (ModelInfo, ModelSource)) else src.name
    made: dict[tuple[str | None, str], Production] = {}
    for i, c in enumerate(ranked, 1):
        why = _why(pref if status == "ok" else "most-accurate", c, first or c, tol, i, small_rule)
        if status == "nothing-fits":
            why = (f"nothing fits: the smallest option, {c.memory.over_gib or 0.0:.2f} GiB over", *why[1:])
        elif status == "over-tolerance" and i == 1:
            why = (f"no plan meets the {tol.text} tolerance; this is the most accurate that fits", *why[1:])
        if (c.method, c.scheme) not in made:
            made[(c.method, c.scheme)] = production(c.method, reg, quantize_source(src, arg), c.scheme)
        made_here = made[(c.method, c.scheme)]
        if not made_here.producible:
            why = (*why, f"quantmatch cannot produce it here: {made_here.reason}")
        final.append(_replace(c, rank=i, why=why,
                              command=_command(src, arg, c) if made_here.implemented else None,
                              producible_here=made_here.producible,
                              production="" if made_here.producible else made_here.reason,
                              produce_with=made_here.how))
    if status == "nothing-fits":
        top_key = final[0].key if final else None
        rejections = [r for r in rejections if r.candidate is None or r.candidate.key != top_key]
    rejections.sort(key=_rejection_key)
    summary = _summary(final[0] if final else None, baseline, evaluated, spec, wl)
    if local and spec.bandwidth_confidence == "measured":
        notes.append(f"local bandwidth {spec.bandwidth_gbs:g} GB/s from {spec.bandwidth_source}")
    kv_note = kv_decides_note(final[0] if final else None, wl)
    if kv_note:
        notes.append(kv_note)
    from quantmatch.planner.crossover import attach_crossovers  # it re-evaluates with _Builder

    return attach_crossovers(Plan(src, params, spec, wl, tol, pref, budget, status, tuple(final), tuple(rejections),
                                  tuple(summary), baseline, tuple(notes), kv_mode=kv or "default",
                                  kv_options=kv_options(reg, final[0] if final else None, info, wl, profile)), reg)


_STAGE_ORDER = {"memory": 0, "quality": 1, "job": 2, "moe": 3, "kv-cache": 4, "registry": 5}


def _rejection_key(r: Rejection) -> tuple[Any, ...]:
    """By stage, then the nearest misses first (least over the limit, least over the tolerance)."""
    metric = 0.0
    if r.candidate is not None:
        metric = r.candidate.memory.total_gib if r.stage == "memory" else r.candidate.quality.delta_pct
    return (_STAGE_ORDER.get(r.stage, 9), metric, r.method or "", r.scheme, r.backend, r.target)


def _layer_problem(reg: Any, v: Verdict, info: ModelInfo) -> tuple[str, str] | None:
    """A pruned MoE-expert or KV-cache verdict for a candidate whose linear verdict is runnable."""
    s = reg.scheme(v.scheme)
    layers = []
    if info.is_moe and not s.is_baseline:
        layers.append("moe")
    if s.kv_cache:
        layers.append("kv-cache")
    for layer in layers:
        lv = reg.verdict(v.method, s, v.backend, v.device, v.target, layer=layer, model=info)
        if not lv.runnable:
            return layer, f"{layer} layers: {lv.reasons[0].text if lv.reasons else 'unsupported'}"
    return None


def _comparable(cands: list[Candidate], wl: Workload, spec: DeviceSpec) -> tuple[list[Candidate], str]:
    """Rank by decode alone when some candidates' prefill has no compute peak and others' has one.

    Without a peak a prefill counts only its memory time, which would let those candidates (the CPU
    cores of an SoC whose catalog peaks are the GPU's) win on a prefill nobody could predict.
    """
    unknown = [c for c in cands if c.prefill.peak_tflops is None]
    if not unknown or len(unknown) == len(cands):
        return cands, ""
    where = sorted({c.target for c in unknown})
    return ([_replace(c, rank_request_s=wl.gen * c.decode.rank_time_s) for c in cands],
            f"prefill speed is unknown on {spec.name} for the {'/'.join(where)} target (no compute peak): "
            "plans are ranked by decode speed")


def _replace(c: Candidate, **kw: Any) -> Candidate:
    return replace(c, **kw)


def _with_speedups(c: Candidate, base: Candidate | None) -> Candidate:
    if base is None:
        return c
    sp = base.prefill.rank_time_s / c.prefill.rank_time_s if c.prefill.rank_time_s else None
    sd = base.decode.rank_time_s / c.decode.rank_time_s if c.decode.rank_time_s else None
    return _replace(c, speedup_prefill=sp, speedup_decode=sd)

