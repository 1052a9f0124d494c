"""Peak memory of serving a model: weights, KV cache, activation workspace and the runtime itself.

``total = weights + kv_cache + activations + runtime``, in GiB:

- weights: :class:`~quantmatch.planner.footprint.WeightLayout` (quantized linears with their scales
  and zero points, plus the layers kept in 16-bit);
- KV cache: layers x KV heads x head dim x 2 (K and V) x context x batch x KV bytes (Gemma's
  sliding-window layers hold only their window);
- activations: one prefill chunk's hidden states and MLP intermediates, the last position's logits
  (fp32), and, for runtimes that expand low-bit weights before the matmul, one expanded layer;
- runtime: :attr:`~quantmatch.sdk.priors.RuntimePriors.memory_gib`, as the backend declares it (CUDA
  context, Python with torch imported, graphs, compute buffers).

It fits when the total is at most the capacity: the device memory, or the memory budget when one
is given (the smaller of the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quantmatch.planner.footprint import WeightLayout
from quantmatch.planner.hardware import GIB
from quantmatch.planner.shapes import kv_bytes_per_token
from quantmatch.planner.types import Workload
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.priors import RuntimePriors

__all__ = ["MemoryEstimate", "estimate_memory", "kv_cache_bytes"]


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory of one candidate in GiB, and whether it fits the capacity (``None``: capacity unknown).

    ``basis`` is ``predicted`` (the sum of the parts) or ``measured``: ``total_gib`` is then the peak
    RSS ``quantmatch bench`` measured on this machine (fit and headroom follow it), the parts stay the
    prediction's and :attr:`predicted_total_gib` keeps their sum.
    """

    weights_gib: float
    kept_gib: float
    kv_cache_gib: float
    activations_gib: float
    runtime_gib: float
    total_gib: float
    capacity_gib: float | None
    capacity_source: str
    fits: bool | None
    headroom_gib: float | None
    kv_bytes: float
    bits_per_weight: float
    basis: str = "predicted"
    predicted: float | None = None
    load_peak_gib: float | None = None

    @property
    def predicted_total_gib(self) -> float:
        """The predicted total, whatever the basis of :attr:`total_gib`."""
        return self.predicted if self.basis == "measured" and self.predicted is not None else self.total_gib

    @property
    def over_gib(self) -> float | None:
        """How far over the capacity (0 when it fits, ``None`` when unknown)."""
        return None if self.headroom_gib is None else max(0.0, -self.headroom_gib)

    def to_dict(self) -> dict[str, Any]:
        r = 3
        return {"weights_gib": round(self.weights_gib, r), "kept_16bit_gib": round(self.kept_gib, r),
                "kv_cache_gib": round(self.kv_cache_gib, r), "activations_gib": round(self.activations_gib, r),
                "runtime_gib": round(self.runtime_gib, r), "total_gib": round(self.total_gib, r),
                "load_peak_gib": None if self.load_peak_gib is None else round(self.load_peak_gib, r),
                "basis": self.basis, "predicted_total_gib": round(self.predicted_total_gib, r),
                "capacity_gib": None if self.capacity_gib is None else round(self.capacity_gib, r),
                "capacity_source": self.capacity_source, "fits": self.fits,
                "headroom_gib": None if self.headroom_gib is None else round(self.headroom_gib, r),
                "kv_bytes_per_value": self.kv_bytes, "bits_per_weight": round(self.bits_per_weight, 3)}


def activation_bytes(info: ModelInfo, workload: Workload, act_bytes: float, chunk: int | None,
                     logits_rows: int = 0) -> float:
    """Workspace of one prefill pass: hidden/residual/norm/attention outputs and MLP intermediates of
    the tokens in the pass, fp32 logits of the last position of each sequence, and the vocab-sized
    rows a runtime reserves up front (``logits_rows``)."""
    tokens = workload.batch * workload.prompt
    if chunk:
        tokens = min(tokens, chunk)
    inter = info.moe_intermediate_size * max(1, info.experts_per_token) if info.is_moe else info.intermediate_size
    q = info.num_heads * info.head_dim
    per_token = (4 * info.hidden_size + q + 3 * inter) * act_bytes
    return tokens * per_token + (workload.batch + logits_rows) * info.vocab_size * 4.0


def kv_cache_bytes(info: ModelInfo, workload: Workload, kv_bytes: float) -> float:
    """KV-cache bytes of the whole batch at the workload's context: 2 (K and V) x layers x KV heads x head
    dim x context x batch x ``kv_bytes`` per value (block scales included: Q8_0 is 34/32 bytes per value),
    sliding-window layers capped at their window."""
    return workload.batch * kv_bytes_per_token(info, workload.ctx, kv_bytes)


def estimate_memory(info: ModelInfo, layout: WeightLayout, workload: Workload, runtime: RuntimePriors,
                    kv_bytes: float, act_bytes: float, expanded_layer_bytes: float,
                    capacity_gib: float | None, capacity_source: str, load_peak_gib: float | None = None
                    ) -> MemoryEstimate:
    """Peak memory of ``layout`` serving ``workload`` on ``runtime``; compared with ``capacity_gib``.
    ``load_peak_gib``: the process's peak while loading, when the loader has one of its own."""
    kv = kv_cache_bytes(info, workload, kv_bytes)
    acts = activation_bytes(info, workload, act_bytes, runtime.prefill_chunk, runtime.logits_rows) \
        + expanded_layer_bytes
    weights = layout.quantized_bytes / GIB
    kept = layout.kept_bytes / GIB
    total = weights + kept + kv / GIB + acts / GIB + runtime.memory_gib
    if load_peak_gib is not None:
        total = max(total, load_peak_gib)
    fits = None if capacity_gib is None else total <= capacity_gib
    headroom = None if capacity_gib is None else capacity_gib - total
    return MemoryEstimate(weights, kept, kv / GIB, acts / GIB, runtime.memory_gib, total, capacity_gib,
                          capacity_source, fits, headroom, kv_bytes, layout.bits_per_weight,
                          load_peak_gib=load_peak_gib)
