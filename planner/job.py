"""What running the quantization method itself needs: RAM, accelerator memory, disk and time.

The job loads the 16-bit checkpoint and writes the artifact. What else it does is the method's
declaration (:class:`~quantmatch.sdk.priors.JobPriors`): calibrated methods keep calibration
activations for one decoder layer (samples x tokens, and the MLP's intermediates for some), some keep
one fp32 Hessian per distinct linear input of a layer (in_features^2 x 4 bytes: the MLP down
projection's is the largest); data-free methods cost FLOPs per weight; some convert tensor by tensor
or export an fp32 graph, and write intermediate files.

Time = disk I/O (checkpoint read, artifact and intermediates written, at ``DISK_GBS``) + calibration
FLOPs / (the device's 16-bit peak x ``JOB_GPU_EFF``, or a CPU's fp32 peak x ``JOB_CPU_EFF``). The
efficiencies are priors chosen so that AWQ on a 7B model on an A100-class GPU takes the 10-15 minutes
AutoAWQ reports (hardware_facts.md 11.5, timing anchors). Feasibility is checked only when planning
for ``local``, against this machine's RAM, accelerator memory and free disk.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmatch.planner.footprint import WeightLayout
from quantmatch.planner.hardware import GIB, DeviceSpec
from quantmatch.planner.priors import method_priors
from quantmatch.planner.shapes import ParamBreakdown
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.priors import JobPriors

__all__ = ["DISK_GBS", "JobEstimate", "estimate_job"]

DISK_GBS = 1.0
JOB_GPU_EFF = 0.05
JOB_CPU_EFF = 0.3


@dataclass(frozen=True)
class JobEstimate:
    """Needs of the quantization job. ``feasible`` is ``None`` when not checked (not ``local``)."""

    method: str
    needs_calibration: bool
    ram_gib: float
    accelerator_gib: float | None
    disk_gib: float
    time_s: float | None
    feasible: bool | None
    reason: str
    details: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "needs_calibration": self.needs_calibration,
                "ram_gib": round(self.ram_gib, 2),
                "accelerator_gib": None if self.accelerator_gib is None else round(self.accelerator_gib, 2),
                "disk_gib": round(self.disk_gib, 2),
                "time_s": None if self.time_s is None else round(self.time_s, 1),
                "feasible": self.feasible, "reason": self.reason, "details": list(self.details)}


def _host_ram_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 / GIB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _free_disk_gib(where: Path) -> float | None:
    try:
        return shutil.disk_usage(where).free / GIB
    except OSError:
        return None


def _hessian_bytes(info: ModelInfo) -> float:
    h, q = info.hidden_size, info.num_heads * info.head_dim
    if info.is_moe:
        per = 2 * h * h + q * q + info.num_experts * (h * h + info.moe_intermediate_size ** 2)
    else:
        per = 2 * h * h + q * q + info.intermediate_size ** 2
    return per * 4.0


def estimate_job(method: str | None, needs_calibration: bool, info: ModelInfo, params: ParamBreakdown,
                 layout: WeightLayout, spec: DeviceSpec, local: bool, out_dir: Path | None = None,
                 priors: JobPriors | None = None) -> JobEstimate:
    """The job that turns the 16-bit checkpoint into this candidate's artifact (``method`` ``None``:
    nothing to run). ``priors``: the method's declaration (looked up in the default registry when not
    given)."""
    if not method:
        return JobEstimate("none", False, 0.0, None, 0.0, 0.0, True,
                           "no quantization job: the 16-bit checkpoint runs as is")
    jp = priors if priors is not None else method_priors(method).job
    src_bytes = params.total * 2.0
    art = layout.total_bytes
    details: list[str] = []
    per_layer = (params.linear / max(info.num_layers, 1)) * 2.0
    on_gpu = not spec.is_cpu
    ram = src_bytes + per_layer * 2
    acc: float | None = (per_layer * 3) if on_gpu else None
    disk = src_bytes + art
    calib_flops = 0.0
    if jp.calibrated:
        n, seq = jp.calibration_samples, jp.calibration_tokens
        tokens = n * seq
        acts = tokens * info.hidden_size * 2.0 * 2
        if jp.mlp_activations:
            acts += tokens * (info.intermediate_size or info.hidden_size) * 2.0
        details.append(f"calibration: {n} samples x {seq} tokens, {acts / GIB:.2f} GiB of activations per layer")
        extra = acts
        if jp.hessians:
            hb = _hessian_bytes(info)
            extra += hb
            details.append(f"{method.upper()} Hessians: {hb / GIB:.2f} GiB per layer (fp32, in_features^2)")
        if on_gpu and acc is not None:
            acc += extra
        else:
            ram += extra
        calib_flops = jp.calibration_flops * tokens * params.active
    else:
        calib_flops = jp.flops_per_weight * params.linear
    if jp.memory == "per-tensor":  # the largest tensor in fp32 at a time
        ram = max(params.output_params, per_layer) * 4.0 + 1.0 * GIB
    elif jp.memory == "fp32-export":  # the fp32 model and its exported graph
        ram = params.total * 4.0 * 2
    scratch = params.total * jp.scratch_bytes
    disk += scratch
    if jp.steps:
        details.append(jp.steps)
    io_s = (src_bytes + art + (scratch if jp.scratch_timed else 0.0)) / (DISK_GBS * 1e9)
    peak = spec.peak("fp32" if spec.is_cpu else "fp16") or spec.peak("bf16")
    eff = JOB_CPU_EFF if spec.is_cpu else JOB_GPU_EFF
    time_s = None if peak is None else io_s + calib_flops / (peak.tflops * 1e12 * eff)
    if jp.quantizes_at_load:
        details.append(f"{method} quantizes while the runtime loads the 16-bit checkpoint")
    feasible: bool | None = None
    reason = "requirements of the job (checked against this machine only when planning for local)"
    if local:
        problems = []
        host = spec.memory_gib if spec.is_cpu else _host_ram_gib()
        if host is not None and ram / GIB > host:
            problems.append(f"needs {ram / GIB:.1f} GiB RAM, this machine has {host:.1f} GiB")
        if acc is not None and spec.memory_gib is not None and acc / GIB > spec.memory_gib:
            problems.append(f"needs {acc / GIB:.1f} GiB accelerator memory, {spec.name} has {spec.memory_gib:.1f} GiB")
        free = _free_disk_gib(out_dir or Path.cwd())
        if free is not None and disk / GIB > free:
            problems.append(f"needs {disk / GIB:.1f} GiB disk (16-bit checkpoint + artifact), {free:.1f} GiB free")
        feasible = not problems
        reason = "; ".join(problems) if problems else "fits this machine's RAM, accelerator memory and free disk"
    return JobEstimate(method, needs_calibration or jp.calibrated, ram / GIB,
                       None if acc is None else acc / GIB, disk / GIB, time_s, feasible, reason, tuple(details))
