"""Measured speed and memory in place of the predictions, where the measurement fits the workload.

``quantmatch bench`` stores, per combination and device (:class:`~quantmatch.sdk.store.MeasuredRun`),
prefill tokens/s of one ``prompt``-token sequence, decode tokens/s of one sequence and of ``batch``
sequences at a mean KV-cache length of ``decode_context``, and the peak RSS of the whole run. A
figure stands in for the prediction only for a workload it describes:

- prefill: batch 1 and a prompt within :data:`LENGTH_BAND` of the measured one;
- decode: the measured batch (1, or the batched decode's) and a mean decode context within
  :data:`LENGTH_BAND` of the measured one;
- peak RSS: at most the measured batch and a mean decode context within :data:`LENGTH_BAND`.

Everything else stays predicted. The replaced estimates say ``measured`` and keep the prediction.
"""

from __future__ import annotations

import math
from dataclasses import replace

from quantmatch.planner.hardware import GIB
from quantmatch.planner.memory import MemoryEstimate
from quantmatch.planner.roofline import PhaseEstimate
from quantmatch.planner.types import Workload
from quantmatch.sdk.store import MeasuredRun

__all__ = ["LENGTH_BAND", "apply_measured", "decode_figure", "prefill_figure", "rss_figure"]

LENGTH_BAND = 2.0
"""How far (as a factor either way) a workload's prompt or decode context may be from the measured one
for the measured figure to stand for it: per-token costs grow with the context (KV-cache reads,
attention), slowly at the lengths ``quantmatch bench`` measures."""


def _near(wanted: float, measured: float | None) -> bool:
    return measured is not None and measured > 0 and measured / LENGTH_BAND <= wanted <= measured * LENGTH_BAND


def _positive(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) and x > 0 else None


def prefill_figure(run: MeasuredRun, wl: Workload) -> float | None:
    """Measured prefill tokens/s for ``wl``, or ``None`` when the measurement does not describe it."""
    if wl.batch != 1 or not _near(wl.prompt, run.prompt):
        return None
    return _positive(run.prefill_tps)


def decode_figure(run: MeasuredRun, wl: Workload) -> float | None:
    """Measured decode tokens/s (all sequences together) for ``wl``, or ``None``."""
    if not _near(wl.mean_decode_context, run.decode_context):
        return None
    if wl.batch == 1:
        return _positive(run.decode_tps)
    return _positive(run.decode_batch_tps) if wl.batch == run.batch else None


def rss_figure(run: MeasuredRun, wl: Workload) -> float | None:
    """Measured peak RSS in bytes for ``wl``, or ``None``."""
    if run.batch is None or wl.batch > run.batch or not _near(wl.mean_decode_context, run.decode_context):
        return None
    return _positive(run.peak_rss)


def _source(run: MeasuredRun) -> str:
    return f"measured by quantmatch bench on this machine ({run.date[:10]})"


def _phase(p: PhaseEstimate, tps: float, settings: str, run: MeasuredRun) -> PhaseEstimate:
    t = p.tokens / tps
    pred = "?" if p.tokens_per_s is None else f"{p.tokens_per_s:.3g}"
    note = f"{_source(run)}: {settings}; predicted {pred} tok/s" + (f" ({p.note})" if p.note else "")
    return replace(p, time_s=t, tokens_per_s=tps, rank_time_s=t, basis="measured", predicted=p.tokens_per_s,
                   note=note)


def _memory(m: MemoryEstimate, rss: float) -> MemoryEstimate:
    total = rss / GIB
    cap = m.capacity_gib
    return replace(m, total_gib=total, fits=None if cap is None else total <= cap,
                   headroom_gib=None if cap is None else cap - total, basis="measured", predicted=m.total_gib)


def apply_measured(prefill: PhaseEstimate, decode: PhaseEstimate, memory: MemoryEstimate, run: MeasuredRun | None,
                   wl: Workload) -> tuple[PhaseEstimate, PhaseEstimate, MemoryEstimate]:
    """The estimates with every figure of ``run`` that describes ``wl`` put in place of the prediction."""
    if run is None:
        return prefill, decode, memory
    p = prefill_figure(run, wl)
    if p is not None:
        prefill = _phase(prefill, p, f"batch 1, prompt {run.prompt}", run)
    d = decode_figure(run, wl)
    if d is not None:
        decode = _phase(decode, d, f"batch {wl.batch}, mean context {run.decode_context:.0f}", run)
    rss = rss_figure(run, wl)
    if rss is not None:
        memory = _memory(memory, rss)
    return prefill, decode, memory
