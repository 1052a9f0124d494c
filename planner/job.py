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

__all__ = ["DISK_GBS", "STREAM_BASE_GIB", "STREAM_BLOCK_COPIES", "STREAM_HESSIAN_COPIES", "JobEstimate", "estimate_job",
           "estimate_quantize_job", "estimate_streamed_job", "streamed_ram_bytes"]

DISK_GBS = 1.0
JOB_GPU_EFF = 0.05
JOB_CPU_EFF = 0.3
STREAM_BASE_GIB = 0.40
"""A streamed job's process before any weight: Python, torch, transformers and compressed-tensors
imported, the tokenizer and the meta model (0.38-0.40 GiB of VmRSS measured; docs/benchmarks.md,
Streaming quantization)."""
STREAM_BLOCK_COPIES = 2.5
"""fp32 copies of one decoder block a streamed job holds at its peak: the block, the method's working
copies of its layers and the compressed shard being written (0.44 GiB above the base for a 0.17 GiB
block, measured on the 1.5B RTN run; -3.7% on the 2.9B one: docs/benchmarks.md)."""
STREAM_HESSIAN_COPIES = 5.5
"""fp32 Hessian-sized buffers GPTQ holds for its widest layer input while it quantizes that layer: the
Hessian, its Cholesky factor and inverse, act-order's permuted copies and the lazy-batch update's
temporaries (fitted on the 1.5B and 2.9B streamed GPTQ runs, +8.9% and -5.8%: in sample;
docs/benchmarks.md, Streaming quantization)."""


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


def streamed_ram_bytes(info: ModelInfo, params: ParamBreakdown, *, samples: int, tokens: int, hessians: bool,
                       mlp_activations: bool, offload: bool = False,
                       batch_size: int = 8) -> tuple[float, list[str]]:
    """Peak RAM of a job that streams the checkpoint block by block (``JobPriors.memory == "streamed"``).

    The largest of three phases, above :data:`STREAM_BASE_GIB`: computing the first block's inputs (the
    fp32 embeddings and the calibration activations), quantizing a block (:data:`STREAM_BLOCK_COPIES`
    fp32 copies of one block, the activations entering and leaving it, or one micro-batch of each with
    ``offload``, GPTQ's Hessian and its factorisation, :data:`STREAM_HESSIAN_COPIES`) and writing the
    tensors outside the blocks one at a time (the larger of embeddings and head, as stored and in 16 bits).
    """
    layers = max(info.num_layers, 1)
    block = (params.attention + params.mlp + params.moe_experts + params.moe_router) / layers * 4.0
    embed, head = params.embeddings * 4.0, params.lm_head * 4.0
    details = [f"streamed: one decoder block at a time ({block / GIB:.2f} GiB in fp32), never the whole model"]
    acts = 0.0
    if samples and tokens:
        rows = min(samples, batch_size) if offload else samples
        acts = rows * tokens * info.hidden_size * 4.0
        if mlp_activations:
            acts += rows * tokens * (info.intermediate_size or info.hidden_size) * 4.0 / 2
        where = "on disk, one micro-batch in memory" if offload else "in memory"
        details.append(f"calibration activations carried {where}: {2 * acts / GIB:.2f} GiB (in and out of a block, "
                       "fp32)")
    hess = 0.0
    if hessians:
        widest = max(info.intermediate_size or 0, info.hidden_size, info.num_heads * info.head_dim)
        hess = STREAM_HESSIAN_COPIES * widest * widest * 4.0
        details.append(f"Hessians: {hess / GIB:.2f} GiB for the widest layer input (fp32, x{STREAM_HESSIAN_COPIES:g} "
                       "with its factors and act-order's permuted copies)")
    capture = embed + acts
    quantize = STREAM_BLOCK_COPIES * block + 2 * acts + hess
    rest = max(embed, head) * 1.5  # one tensor at a time: as stored (fp32 at most) and in 16 bits
    return STREAM_BASE_GIB * GIB + max(capture, quantize, rest), details


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
    if jp.memory == "streamed" and not on_gpu:
        ram, more = streamed_ram_bytes(info, params, samples=jp.calibration_samples, tokens=jp.calibration_tokens,
                                       hessians=jp.hessians, mlp_activations=jp.mlp_activations)
        details.extend(more)
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


IN_MEMORY_COPIES = 1.3
"""fp32 copies of the model a job that loads it whole holds at its peak (the model, the compressed
checkpoint being built and transformers' loading buffers: 1.48x the fp32 model measured for RTN on a
1.1B Llama before streaming existed, 1.3x plus the process here)."""


def _artifact_bytes(params: ParamBreakdown, scheme: Any) -> float:
    linear = params.linear
    other = params.total - linear
    return float(linear * scheme.bits_per_weight / 8.0 + other * 2.0)


def estimate_quantize_job(model: Any, method: str, scheme: Any, *, streamed: bool, samples: int = 0,
                          seq_len: int = 0, offload_dir: Path | None = None, out_dir: Path | None = None,
                          batch_size: int = 8, check: bool = True) -> JobEstimate:
    """What ``quantmatch quantize`` will need for this request on this machine, before anything loads.

    ``samples`` x ``seq_len``: the calibration set (0: data-free). Peak RAM follows
    :func:`streamed_ram_bytes` (``streamed``) or :data:`IN_MEMORY_COPIES` fp32 models; disk is the
    artifact plus the carried activations (on ``offload_dir``'s disk when given). With ``check`` the
    figures are compared with this machine's RAM and free disk: ``feasible`` and ``reason`` say which
    does not fit and by how much.
    """
    from quantmatch.planner.shapes import param_breakdown, resolve_model
    from quantmatch.sdk.scheme import parse_scheme

    src = resolve_model(model)
    info = src.info
    params = param_breakdown(info)
    s = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    jp = method_priors(method).job
    calibrated = samples > 0 and seq_len > 0
    details: list[str] = []
    if streamed:
        ram, details = streamed_ram_bytes(info, params, samples=samples if calibrated else 0, tokens=seq_len,
                                          hessians=jp.hessians, mlp_activations=jp.mlp_activations,
                                          offload=offload_dir is not None, batch_size=batch_size)
    elif jp.memory == "per-tensor":  # converted tensor by tensor (as estimate_job)
        per_layer = params.linear / max(info.num_layers, 1) * 4.0
        ram = STREAM_BASE_GIB * GIB + max(params.output_params * 4.0, per_layer) + 1.0 * GIB
        details.append("converted tensor by tensor: the largest tensor in fp32 at a time")
    elif jp.memory == "fp32-export":
        ram = STREAM_BASE_GIB * GIB + params.total * 4.0 * 2
        details.append(f"exports the fp32 model as a graph: two fp32 copies ({params.total * 8.0 / GIB:.2f} GiB)")
    else:
        ram = STREAM_BASE_GIB * GIB + params.total * 4.0 * IN_MEMORY_COPIES
        if calibrated:
            ram += 2 * samples * seq_len * info.hidden_size * 4.0
        details.append(f"loads the whole model in fp32 ({params.total * 4.0 / GIB:.2f} GiB)")
    art = _artifact_bytes(params, s)
    carry = 2 * samples * seq_len * info.hidden_size * 4.0 if (calibrated and streamed) else 0.0
    disk = art + (0.0 if offload_dir is not None else carry)
    if carry:
        details.append(f"checkpoints after every block: {carry / GIB:.2f} GiB of activations "
                       f"({'in ' + str(offload_dir) if offload_dir else 'beside the output'})")
    # the method's measured rate at 4,096 calibration tokens; more tokens cost more forward passes only
    tokens = samples * seq_len if calibrated else 0
    time_s: float | None = None
    if jp.seconds_per_gparam:
        time_s = params.linear / 1e9 * jp.seconds_per_gparam * max(1.0, tokens / 4096) ** 0.5
    feasible: bool | None = None
    reason = "not checked against this machine"
    if check:
        problems = []
        host = _host_ram_gib()
        if host is not None and ram / GIB > host:
            problems.append(f"needs about {ram / GIB:.1f} GiB RAM at its peak, this machine has {host:.1f} GiB")
        free = _free_disk_gib(out_dir or Path.cwd())
        if free is not None and disk / GIB > free:
            problems.append(f"needs {disk / GIB:.1f} GiB disk for the artifact"
                            f"{' and its checkpoints' if carry and offload_dir is None else ''}, {free:.1f} GiB free")
        if offload_dir is not None and carry:
            off_free = _free_disk_gib(offload_dir if offload_dir.exists() else offload_dir.parent)
            if off_free is not None and carry / GIB > off_free:
                problems.append(f"needs {carry / GIB:.1f} GiB in --offload-dir, {off_free:.1f} GiB free there")
        feasible = not problems
        reason = "; ".join(problems) if problems else "fits this machine's RAM and free disk"
    return JobEstimate(method, calibrated, ram / GIB, None, disk / GIB, time_s, feasible, reason, tuple(details))


def estimate_streamed_job(model: Any, method: str, *, stream: bool = True, samples: int = 16, seq_len: int = 256,
                          scheme: str = "w4a16-g128", offload_dir: Path | None = None) -> JobEstimate:
    """:func:`estimate_quantize_job` with ``quantmatch quantize``'s defaults (what the benchmark compares)."""
    calibrated = method_priors(method).job.calibrated
    return estimate_quantize_job(model, method, scheme, streamed=stream, samples=samples if calibrated else 0,
                                 seq_len=seq_len if calibrated else 0, offload_dir=offload_dir, check=False)
