"""The planner's answer: ranked plans, the rejected options with their reasons, and a summary.

These dataclasses are the stable Python API (``quantmatch.plan()`` returns a :class:`Plan`); the
``--json`` output is their :meth:`to_dict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from quantmatch.planner.crossover import Crossover
from quantmatch.planner.hardware import DeviceSpec
from quantmatch.planner.job import JobEstimate
from quantmatch.planner.kv import KVChoice, KVOption
from quantmatch.planner.memory import MemoryEstimate
from quantmatch.planner.quality import QualityEstimate
from quantmatch.planner.roofline import PhaseEstimate
from quantmatch.planner.shapes import ModelSource, ParamBreakdown
from quantmatch.planner.types import Tolerance, Workload

__all__ = ["STATUSES", "Candidate", "Plan", "Rejection", "comparison"]

STATUSES = ("ok", "over-tolerance", "nothing-fits")
"""``ok``: at least one plan fits and meets the tolerance. ``over-tolerance``: plans fit, but none
meets the tolerance (the most accurate that fit are listed). ``nothing-fits``: no option fits; the
smallest is listed with how far it is over."""


@dataclass(frozen=True)
class Candidate:
    """One way to run the model: method x scheme x backend x target, with its predictions.

    ``method`` is ``None`` for the unquantized 16/32-bit baseline. ``speedup_*`` compare with the
    fastest 16-bit baseline on the same device (``None`` when there is none or a time is unknown).
    ``request_s`` is prefill plus ``gen`` decode steps; ``throughput_tps`` the generated tokens per
    second over the whole request for the whole batch. ``command`` is the ``quantmatch quantize``
    line that produces the artifact (``None`` for the baseline and for methods quantmatch does not
    implement). ``producible_here`` says whether that command works on this machine now;
    ``production`` says why not and ``produce_with`` how to get the artifact instead (the method's
    own tool, or the requirements to install first). ``export_format`` is set when the backend runs an
    exact export of the method's artifact (GPTQ on llama.cpp: ``gguf``); ``command`` then asks for it.
    ``kv``: the KV cache it runs with (format, bits, GiB at the workload's context, risk and source).
    ``crossover``: where it stops beating the 16-bit and the best 8-bit plan (:mod:`.crossover`; set on the
    top plans only, empty elsewhere).
    """

    method: str | None
    scheme: str
    backend: str
    target: str
    level: str
    runs_as: str | None
    verdict_reason: str
    memory: MemoryEstimate
    prefill: PhaseEstimate
    decode: PhaseEstimate
    quality: QualityEstimate
    job: JobEstimate
    request_s: float | None
    throughput_tps: float | None
    rank_request_s: float
    speedup_prefill: float | None = None
    speedup_decode: float | None = None
    rank: int = 0
    why: tuple[str, ...] = ()
    command: str | None = None
    sources: tuple[str, ...] = ()
    producible_here: bool = True
    production: str = ""
    produce_with: str = ""
    export_format: str | None = None
    kv: KVChoice | None = None
    crossover: tuple[Crossover, ...] = ()

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.method or "none", self.scheme, self.backend, self.target)

    @property
    def label(self) -> str:
        return f"{self.scheme} ({self.method or 'unquantized'}, {self.backend}/{self.target})"

    @property
    def is_baseline(self) -> bool:
        return self.method is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "method": self.method, "scheme": self.scheme, "backend": self.backend,
            "target": self.target, "level": self.level, "runs_as": self.runs_as,
            "verdict_reason": self.verdict_reason, "memory": self.memory.to_dict(),
            "prefill": self.prefill.to_dict(), "decode": self.decode.to_dict(),
            "quality": self.quality.to_dict(), "job": self.job.to_dict(),
            "request_s": self.request_s,
            "throughput_tps": None if self.throughput_tps is None else round(self.throughput_tps, 3),
            "speedup_prefill": None if self.speedup_prefill is None else round(self.speedup_prefill, 3),
            "speedup_decode": None if self.speedup_decode is None else round(self.speedup_decode, 3),
            "why": list(self.why), "command": self.command, "sources": list(self.sources),
            "producible_here": self.producible_here, "production": self.production,
            "produce_with": self.produce_with, "export_format": self.export_format,
            "kv": None if self.kv is None else self.kv.to_dict(),
            "crossover": [x.to_dict() for x in self.crossover] or None,
        }


@dataclass(frozen=True)
class Rejection:
    """A candidate that is not recommended, and why.

    ``stage``: ``registry`` (pruned: no kernel, wrong hardware, shape), ``moe``/``kv-cache`` (that
    layer type is unsupported), ``memory`` (does not fit), ``quality`` (beyond the tolerance) or
    ``job`` (the quantization job cannot run on this machine). ``candidate`` holds the predictions
    when the candidate was evaluated before being rejected.
    """

    method: str | None
    scheme: str
    backend: str
    target: str
    stage: str
    reason: str
    level: str | None = None
    candidate: Candidate | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"method": self.method, "scheme": self.scheme, "backend": self.backend,
                             "target": self.target, "stage": self.stage, "reason": self.reason,
                             "level": self.level}
        if self.candidate is not None:
            c = self.candidate
            d["memory_total_gib"] = round(c.memory.total_gib, 3)
            d["quality_delta_pct"] = round(c.quality.delta_pct, 3)
            d["quality_kld"] = float(f"{c.quality.kld:.4g}")
            d["quality_top1_pct"] = round(c.quality.top1_pct, 2)
            d["decode_tps"] = c.decode.tokens_per_s
        return d


@dataclass(frozen=True)
class Plan:
    """The recommendation for one model on one device under one workload.

    ``kv_mode``: ``plan --kv`` (``default``, ``auto`` or a format); ``kv_options``: every KV format for the
    top plan's runtime on the device, with the registry's verdict, GiB at the context and risk.
    """

    model: ModelSource
    params: ParamBreakdown
    device: DeviceSpec
    workload: Workload
    tolerance: Tolerance
    preference: str
    memory_budget_gib: float | None
    status: str
    candidates: tuple[Candidate, ...]
    rejections: tuple[Rejection, ...]
    summary: tuple[str, ...]
    baseline: Candidate | None = None
    notes: tuple[str, ...] = field(default=())
    kv_mode: str = "default"
    kv_options: tuple[KVOption, ...] = ()

    @property
    def top(self) -> Candidate | None:
        """The recommended candidate (for ``nothing-fits``: the smallest option)."""
        return self.candidates[0] if self.candidates else None

    @property
    def command(self) -> str | None:
        """The top plan's ``quantmatch quantize`` line (``None`` when quantmatch cannot make it)."""
        return self.top.command if self.top else None

    @property
    def best_producible(self) -> Candidate | None:
        """The best-ranked plan whose artifact quantmatch can produce on this machine."""
        return next((c for c in self.candidates if c.producible_here), None)

    def rejected(self, stage: str | None = None) -> list[Rejection]:
        return [r for r in self.rejections if stage is None or r.stage == stage]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "params": self.params.to_dict(),
            "device": self.device.to_dict(),
            "workload": self.workload.to_dict(),
            "tolerance": self.tolerance.to_dict(),
            "preference": self.preference,
            "memory_budget_gib": self.memory_budget_gib,
            "status": self.status,
            "summary": list(self.summary),
            "notes": list(self.notes),
            "command": self.command,
            "producible": None if self.best_producible is None else {
                "rank": self.best_producible.rank, "command": self.best_producible.command},
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "plans": [c.to_dict() for c in self.candidates],
            "rejected": [r.to_dict() for r in self.rejections],
            "kv_mode": self.kv_mode,
            "kv_options": [o.to_dict() for o in self.kv_options],
            "crossover": None if self.top is None or not self.top.crossover else
            [x.to_dict() for x in self.top.crossover],
        }


def comparison(plans: Sequence[Plan]) -> list[dict[str, Any]]:
    """One row per device: its status and best plan (``best`` is ``None`` when nothing was evaluated)."""
    rows: list[dict[str, Any]] = []
    for p in plans:
        b = p.top
        best = None if b is None else {
            "rank": b.rank, "scheme": b.scheme, "method": b.method, "backend": b.backend, "target": b.target,
            "level": b.level, "memory_gib": round(b.memory.total_gib, 3), "fits": b.memory.fits,
            "prefill_tps": b.prefill.tokens_per_s, "decode_tps": b.decode.tokens_per_s,
            "throughput_tps": None if b.throughput_tps is None else round(b.throughput_tps, 3),
            "quality_delta_pct": round(b.quality.delta_pct, 3), "quality_basis": b.quality.basis,
            "quality_kld": float(f"{b.quality.kld:.4g}"), "quality_kld_basis": b.quality.kld_basis,
            "speed_basis": {"prefill": b.prefill.basis, "decode": b.decode.basis}, "memory_basis": b.memory.basis,
            "producible_here": b.producible_here, "command": b.command}
        rows.append({"device": p.device.id, "name": p.device.name, "status": p.status, "best": best})
    return rows
