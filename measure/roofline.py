"""Each measured decode figure against its roofline on this machine.

A decode step of ``batch`` sequences reads the weights once and each sequence's KV cache, and does
``flops_per_token`` of matmul work per sequence. Its limits in tokens/s are

- bandwidth: ``batch * bandwidth / (weight_bytes + batch * kv_bytes)``;
- compute: ``peak(dtype) / flops_per_token``, with the measured GEMM rate of the dtype the math
  runs in (``int8`` for native integer paths, ``bf16`` for a bf16 baseline, else ``fp32``);

the roofline is the smaller one, and the fraction achieved is measured / roofline. Weight bytes are
what the backend holds (packed low-bit weights as stored): runtimes that expand weights before the
matmul move more than this, which shows as a low fraction.

A GEMM microbenchmark measures one kernel; a decode step at batch 1 may take another (a GEMV path).
When a decode figure beats the compute limit, that limit evidently did not bind: it is dropped (the
bandwidth limit remains) and ``note`` says so, rather than reporting more than 100% of a roofline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from quantmatch.measure.machine import MachineFigures

__all__ = ["Roofline", "compute_dtype", "decode_roofline", "flops_per_token"]


@dataclass(frozen=True)
class Roofline:
    """Limits (tokens/s) of one decode figure and the fraction of the binding one achieved."""

    batch: int
    bytes_per_step: int
    flops_per_token: float
    compute_dtype: str
    bandwidth_tps: float | None
    compute_tps: float | None
    measured_tps: float | None
    note: str = ""

    @property
    def limit_tps(self) -> float | None:
        vals = [v for v in (self.bandwidth_tps, self.compute_tps) if v]
        return min(vals) if vals else None

    @property
    def bound(self) -> str:
        if self.bandwidth_tps and self.compute_tps:
            return "memory" if self.bandwidth_tps <= self.compute_tps else "compute"
        return "memory" if self.bandwidth_tps else ("compute" if self.compute_tps else "unknown")

    @property
    def achieved(self) -> float | None:
        limit = self.limit_tps
        return self.measured_tps / limit if (limit and self.measured_tps) else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(limit_tps=self.limit_tps, bound=self.bound, achieved=self.achieved)
        return d


def flops_per_token(info: Any, context: float) -> float:
    """Matmul FLOPs per token of a model (:class:`~quantmatch.sdk.model_info.ModelInfo`): 2 per weight of
    every linear layer a token passes (``k`` of the experts for MoE), plus attention over ``context``."""
    total = 0.0
    experts = max(info.num_experts, 1)
    for lin in info.linear_layers():
        share = info.experts_per_token / experts if lin.kind.startswith("moe_expert") else 1.0
        total += 2.0 * lin.in_features * lin.out_features * share
    total += 4.0 * info.num_layers * info.num_heads * info.head_dim * context
    return float(total)


def compute_dtype(level: str, scheme: str) -> str:
    """The GEMM dtype whose measured peak bounds compute: ``int8`` for native integer paths (W8A8,
    W4A8, GGUF quants on integer dot products), ``bf16`` for a bf16 baseline, else ``fp32``."""
    s = scheme.lower()
    if level == "native" and ("a8-int8" in s or (s.startswith("gguf-") and s not in ("gguf-f32", "gguf-f16",
                                                                                   "gguf-bf16"))):
        return "int8"
    if s == "bf16":
        return "bf16"
    return "fp32"


def decode_roofline(measured_tps: float | None, weight_bytes: int, kv_bytes: int, flops: float,
                    machine: MachineFigures, dtype: str, batch: int = 1) -> Roofline:
    """The :class:`Roofline` of one decode figure (``kv_bytes`` and ``flops`` are per sequence)."""
    step_bytes = weight_bytes + batch * kv_bytes
    bw = machine.bandwidth_gbps
    bandwidth_tps = batch * bw * 1e9 / step_bytes if (bw and step_bytes) else None
    peak = machine.peak(dtype)
    compute_tps = peak / flops if (peak and flops) else None
    note = ""
    if compute_tps and measured_tps and measured_tps > 1.05 * compute_tps:
        note = (f"measured {measured_tps:.1f} tok/s beats the {dtype} GEMM limit of {compute_tps:.1f}: the decode "
                "kernel is not the benchmarked GEMM's, so only the bandwidth limit applies")
        compute_tps = None
    return Roofline(batch, step_bytes, flops, dtype, bandwidth_tps, compute_tps, measured_tps, note)
