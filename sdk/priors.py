"""Planning priors: what the planner assumes about a runtime or a method, declared as typed data.

The planner turns a roofline into tokens/s, memory and job cost with figures only the plugin that
owns a runtime or a method can state: how well the runtime's kernels use the hardware, what it holds
in memory, what the method's job costs and how much quality it keeps. A backend declares
``Backend.priors`` (one :class:`RuntimePriors` per execution target); a method declares
``Quantizer.priors`` (a :class:`MethodPriors`). The planner reads these declarations and nothing
else: a backend or method without them gets the planner's generic defaults, never a guess by name.
Measured figures (``quantmatch bench``) replace the predictions where they exist.

Every field is plain data (numbers, strings, mappings, a :class:`~quantmatch.sdk.capability.Requires`
predicate); :func:`runtime_priors_problems` and :func:`method_priors_problems` are what the plugin
host checks at registration. Each declaration carries a ``source``: why these numbers.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from quantmatch.sdk.capability import Requires

__all__ = [
    "ACCELERATOR",
    "DEQUANT_MODES",
    "JOB_MEMORY",
    "JobPriors",
    "MethodPriors",
    "QualityPriors",
    "RuntimePriors",
    "backend_priors_problems",
    "method_priors_problems",
    "priors_for_target",
    "runtime_priors_problems",
]

ACCELERATOR = "accelerator"
"""The ``Backend.priors`` key that stands for every target other than ``cpu`` (see :func:`priors_for_target`)."""

DEQUANT_MODES = ("fused", "materialize")
"""How a runtime expands low-bit weights for weight-only schemes (:attr:`RuntimePriors.dequant`)."""

JOB_MEMORY = ("checkpoint", "per-tensor", "fp32-export", "streamed")
"""How a quantization job holds the model (:attr:`JobPriors.memory`)."""


def _frozen(mapping: Any) -> Any:
    return MappingProxyType(dict(mapping)) if isinstance(mapping, Mapping) else mapping


def _empty() -> Mapping[Any, float]:
    return MappingProxyType({})


@dataclass(frozen=True)
class RuntimePriors:
    """Efficiency and overhead priors of one runtime on one kind of target.

    Roofline figures:

    - ``bandwidth_eff``/``compute_eff``: fraction of the device's bandwidth reached by decode GEMV
      (of the catalog figure, or of the copy test for ``local``: a memcpy is not a GEMV kernel) and
      of its compute peak reached by GEMM (a peak measured with a GEMM counts as achieved: factor 1).
    - ``layer_overhead_s``: dispatch time per decoder layer per forward pass; ``step_overhead_s``:
      fixed time per forward pass (sampling, the generate loop).
    - ``memory_gib``: memory the runtime itself holds (context, libraries, graphs, buffers).
    - ``prefill_chunk``: tokens per prefill pass (chunked prefill / ubatch), ``None`` = whole prompt.
    - ``logits_rows``: rows of vocab-sized fp32 buffers the runtime reserves up front (beyond the last
      position's logits every runtime needs).
    - ``float_dtype``: the float dtype the runtime computes in and holds unquantized weights in when
      it does not follow the scheme, else ``None``.

    Low-bit weights:

    - ``dequant``: ``fused`` (weights expanded inside the matmul kernel: only the packed bytes are
      read) or ``materialize`` (a full 16/32-bit copy is written and read again) for weight-only
      schemes. ``dequant_follows_verdict``: the weight-only path depends on the kernel the registry's
      verdict names, so its ``runs_as`` wording decides (``in registers``, ``by marlin`` ... fused;
      ``dequantized to`` ... materialize) and ``dequant`` applies only when it says neither.
    - ``decompresses_at_load``: an emulated weight-only verdict whose ``runs_as`` says the weights
      are ``decompressed to`` a float type means the runtime expands them once at load and runs the
      expanded copy (transformers loading a compressed-tensors checkpoint).
    - ``dequant_passes``: full passes over the expanded weights a ``materialize`` runtime makes per
      forward (unpack, subtract the zero point, scale, cast); ``extra_passes``: more of them for a
      weight bit width whose unpacking takes longer (``{3: 1.0}``).
    - ``kv_cache_bytes``: bytes per KV value the runtime keeps when the scheme sets no KV format
      (2.0: an F16 cache whatever the compute type); ``None``: the activation width.

    CPU kernels (fractions of the cores' fp32 FMA rate at 256-bit vectors):

    - ``gemv_eff``: the decode GEMV's rate per sequence, keyed ``quant`` (integer or packed weights),
      ``bf16``, ``fp16``, or a GGUF weight type (``gguf-q4_0``) that has kernels of its own.
    - ``cast_eff``: for weight formats the CPU has no conversion instructions for (``fp8``),
      elements a ``materialize`` runtime converts per second per FLOP/s of that rate.
    - ``format_compute_eff``: extra compute-efficiency factor for weight types whose kernels are
      slower than the runtime's main path. Keys are a weight type (``gguf-q4_0``) or a shell-style
      pattern of it (``gguf-*``), optionally qualified by the compute dtype after a colon
      (``gguf-*:int8``: only when the math runs in int8). An exact type wins over a qualified
      pattern, which wins over a plain one.
    - ``repacked_gguf_types``: GGUF types (``q4_0``) the runtime rearranges at load into buffers of
      its own, with faster kernels (their ``gemv_eff``/``format_compute_eff`` entries) and a second
      copy in memory. ``no_repack_on``: the devices on which it does not (a predicate over the
      target's features); ``repack_switch``: an environment variable that overrides it when set to
      ``1`` (repack everywhere) or ``0`` (nowhere).
    - ``unused_int8_features``: ISA features whose int8 peak the device's catalog counts but the
      runtime's int8 kernels reach only when it repacks: feature -> the fraction of that peak they
      reach otherwise.

    Load:

    - ``import_gib``: the process with the runtime imported, before a model loads;
      ``load_copy_bytes``: bytes per quantized weight of a dense copy the loader builds before the
      quantized weights replace it; ``decompress_retained``: the share of a decompressed-at-load copy
      that the allocator keeps from the decompression's temporaries. The peak is the larger of the
      load and the run.

    ``source``: why these numbers. ``name``: the label the planner's notes use; leave it empty, the
    planner fills in the backend's name.
    """

    bandwidth_eff: float
    compute_eff: float
    layer_overhead_s: float
    step_overhead_s: float
    memory_gib: float
    dequant: str = "fused"
    prefill_chunk: int | None = None
    source: str = ""
    logits_rows: int = 0
    format_compute_eff: Mapping[str, float] = field(default_factory=_empty)
    dequant_passes: float = 1.0
    extra_passes: Mapping[int, float] = field(default_factory=_empty)
    float_dtype: str | None = None
    gemv_eff: Mapping[str, float] = field(default_factory=_empty)
    cast_eff: Mapping[str, float] = field(default_factory=_empty)
    import_gib: float = 0.0
    load_copy_bytes: float = 0.0
    decompress_retained: float = 0.0
    dequant_follows_verdict: bool = False
    decompresses_at_load: bool = False
    kv_cache_bytes: float | None = None
    repacked_gguf_types: frozenset[str] = frozenset()
    no_repack_on: Requires | None = None
    repack_switch: str = ""
    unused_int8_features: Mapping[str, float] = field(default_factory=_empty)
    name: str = ""

    def __post_init__(self) -> None:
        for f in ("format_compute_eff", "extra_passes", "gemv_eff", "cast_eff", "unused_int8_features"):
            object.__setattr__(self, f, _frozen(getattr(self, f)))
        if isinstance(self.repacked_gguf_types, (set, tuple, list)):
            object.__setattr__(self, "repacked_gguf_types", frozenset(self.repacked_gguf_types))


@dataclass(frozen=True)
class JobPriors:
    """What running the method's quantization job costs.

    - ``calibration_samples`` x ``calibration_tokens``: the calibration set (0: data-free). The job
      keeps one decoder layer's input activations for it, and ``calibration_flops`` FLOPs per
      calibration token per active parameter; ``mlp_activations``: it also keeps the MLP's
      intermediate activations; ``hessians``: one fp32 Hessian per distinct linear input of a layer
      (in_features^2 x 4 bytes).
    - ``flops_per_weight``: FLOPs per linear weight of a data-free job (10: a plain rounding pass).
    - ``quantizes_at_load``: the runtime quantizes while it loads the 16-bit checkpoint (no separate
      artifact job).
    - ``memory``: how the job holds the model, one of :data:`JOB_MEMORY`: ``checkpoint`` (the 16-bit
      checkpoint plus working copies of two layers), ``per-tensor`` (converted tensor by tensor: the
      largest tensor in fp32 plus 1 GiB), ``fp32-export`` (two fp32 copies of the whole model),
      ``streamed`` (read one decoder block at a time from the checkpoint: one block in fp32 plus the
      calibration state, never the model; ``Quantizer.streams``).
    - ``scratch_bytes``: bytes per model parameter of intermediate files written next to the artifact;
      ``scratch_timed``: whether the time estimate counts writing them.
    - ``steps``: the job's steps in words, shown with the estimate.
    - ``seconds_per_gparam``: seconds per billion linear-layer weights the job takes on a 2-core CPU at
      its default calibration (16 x 256 tokens), reading and writing included (0: unknown; the time
      then comes from the FLOP figures).
    - ``source``: why these numbers.
    """

    calibration_samples: int = 0
    calibration_tokens: int = 0
    calibration_flops: float = 0.0
    mlp_activations: bool = False
    hessians: bool = False
    flops_per_weight: float = 10.0
    quantizes_at_load: bool = False
    memory: str = "checkpoint"
    scratch_bytes: float = 0.0
    scratch_timed: bool = True
    steps: str = ""
    seconds_per_gparam: float = 0.0
    source: str = ""

    @property
    def calibrated(self) -> bool:
        return self.calibration_samples > 0


@dataclass(frozen=True)
class QualityPriors:
    """How much quality the method keeps, relative to what the planner composes for its scheme.

    - ``rtn_loss_fraction``: fraction of round-to-nearest's weight loss (in log-perplexity) left at
      the same bits and group size (1: plain RTN).
    - ``int8_activation_loss``/``int8_static_activation_loss``: factor on the loss of int8 dynamic /
      static activations (activation smoothing keeps less of it).
    - ``source``: the published figures behind them; quoted with every estimate they change.
    """

    rtn_loss_fraction: float = 1.0
    int8_activation_loss: float = 1.0
    int8_static_activation_loss: float = 1.0
    source: str = ""


@dataclass(frozen=True)
class MethodPriors:
    """What the planner assumes about a method: its job, its quality, its layout, its tool.

    - ``job``: :class:`JobPriors`; ``quality``: :class:`QualityPriors`.
    - ``quantizes_output`` / ``quantizes_embeddings``: the method quantizes the output head / the
      token embedding too (most keep them in 16-bit).
    - ``produce_with``: how the method's own tool makes the artifact when quantmatch cannot, a
      template whose only placeholder is ``{model}``.
    """

    job: JobPriors = field(default_factory=JobPriors)
    quality: QualityPriors = field(default_factory=QualityPriors)
    quantizes_output: bool = False
    quantizes_embeddings: bool = False
    produce_with: str = ""


def priors_for_target(priors: Mapping[str, RuntimePriors], target: str) -> RuntimePriors | None:
    """The entry of a ``Backend.priors`` table for ``target``: the target's own key (``cpu``,
    ``metal`` ...), else for any target other than ``cpu`` the :data:`ACCELERATOR` key, else ``None``
    (the planner then uses its generic default)."""
    if target in priors:
        return priors[target]
    if target != "cpu":
        return priors.get(ACCELERATOR)
    return None


# ---- validation ------------------------------------------------------------------------------
def _number(value: Any, *, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _table(value: Any, key_type: type) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, key_type) and not isinstance(k, bool) and _number(x) for k, x in value.items())


_KINDS: dict[str, str] = {
    "dequant": "dequant", "prefill_chunk": "count?", "source": "text", "logits_rows": "count",
    "format_compute_eff": "str-table", "extra_passes": "int-table", "float_dtype": "text?", "gemv_eff": "str-table",
    "cast_eff": "str-table", "dequant_follows_verdict": "bool", "decompresses_at_load": "bool",
    "kv_cache_bytes": "number?", "repacked_gguf_types": "str-set", "no_repack_on": "requires?",
    "repack_switch": "text", "unused_int8_features": "str-table", "name": "text",
}


def _kind_ok(kind: str, value: Any) -> bool:
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if optional and value is None:
        return True
    if kind == "number":
        return _number(value)
    if kind == "count":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind == "text":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "dequant":
        return value in DEQUANT_MODES
    if kind == "str-table":
        return _table(value, str)
    if kind == "int-table":
        return _table(value, int)
    if kind == "str-set":
        return isinstance(value, frozenset) and all(isinstance(x, str) for x in value)
    if kind == "requires":
        return isinstance(value, Requires)
    raise AssertionError(kind)


def _wrong(obj: Any, name: str, expected: str) -> str:
    return f"{name} = {getattr(obj, name)!r} is not {expected}"


_EXPECTED = {"number": "a non-negative number", "count": "a non-negative int", "text": "a string",
             "bool": "True or False", "dequant": f"one of {', '.join(DEQUANT_MODES)}",
             "str-table": "a mapping of strings to non-negative numbers",
             "int-table": "a mapping of ints to non-negative numbers", "str-set": "a frozenset of strings",
             "requires": "a quantmatch.sdk.capability.Requires"}


def runtime_priors_problems(priors: Any) -> list[str]:
    """Why ``priors`` is not a valid :class:`RuntimePriors` (empty when it is)."""
    if not isinstance(priors, RuntimePriors):
        return [f"expected a RuntimePriors, got {type(priors).__name__}"]
    out = []
    for f in fields(RuntimePriors):
        kind = _KINDS.get(f.name, "number")
        if not _kind_ok(kind, getattr(priors, f.name)):
            base = kind.rstrip("?")
            out.append(_wrong(priors, f.name, _EXPECTED[base] + (" or None" if kind.endswith("?") else "")))
    if isinstance(priors.source, str) and not priors.source.strip():
        out.append("no source: say why these numbers")
    return out


def backend_priors_problems(table: Any, targets: tuple[str, ...]) -> list[str]:
    """Why a ``Backend.priors`` table is invalid: keys must be known ``targets`` or :data:`ACCELERATOR`,
    values valid :class:`RuntimePriors`."""
    if not isinstance(table, Mapping):
        return [f"must be a mapping of target -> RuntimePriors, got {type(table).__name__}"]
    out = []
    for key, priors in table.items():
        if key != ACCELERATOR and key not in targets:
            out.append(f"key {key!r} is neither a target ({', '.join(targets)}) nor {ACCELERATOR!r}")
        out.extend(f"[{key!r}]: {p}" for p in runtime_priors_problems(priors))
    return out


def _template_problems(text: str) -> list[str]:
    try:
        names = [n for _lit, n, _spec, _conv in string.Formatter().parse(text) if n is not None]
    except ValueError as e:
        return [f"produce_with {text!r} is not a valid template ({e})"]
    bad = [n for n in names if n != "model"]
    return [f"produce_with uses {{{bad[0]}}}; its only placeholder is {{model}}"] if bad else []


def method_priors_problems(priors: Any) -> list[str]:
    """Why ``priors`` is not a valid :class:`MethodPriors` (empty when it is)."""
    if not isinstance(priors, MethodPriors):
        return [f"expected a MethodPriors, got {type(priors).__name__}"]
    out = []
    job, quality = priors.job, priors.quality
    if not isinstance(job, JobPriors):
        out.append(f"job must be a JobPriors, got {type(job).__name__}")
    else:
        for name in ("calibration_samples", "calibration_tokens"):
            if not _kind_ok("count", getattr(job, name)):
                out.append("job." + _wrong(job, name, _EXPECTED["count"]))
        for name in ("calibration_flops", "flops_per_weight", "scratch_bytes"):
            if not _number(getattr(job, name)):
                out.append("job." + _wrong(job, name, _EXPECTED["number"]))
        for name in ("mlp_activations", "hessians", "quantizes_at_load", "scratch_timed"):
            if not isinstance(getattr(job, name), bool):
                out.append("job." + _wrong(job, name, _EXPECTED["bool"]))
        if job.memory not in JOB_MEMORY:
            out.append("job." + _wrong(job, "memory", f"one of {', '.join(JOB_MEMORY)}"))
        for name in ("steps", "source"):
            if not isinstance(getattr(job, name), str):
                out.append("job." + _wrong(job, name, _EXPECTED["text"]))
    if not isinstance(quality, QualityPriors):
        out.append(f"quality must be a QualityPriors, got {type(quality).__name__}")
    else:
        for name in ("rtn_loss_fraction", "int8_activation_loss", "int8_static_activation_loss"):
            if not _number(getattr(quality, name)):
                out.append("quality." + _wrong(quality, name, _EXPECTED["number"]))
        if not isinstance(quality.source, str):
            out.append("quality." + _wrong(quality, "source", _EXPECTED["text"]))
        elif not quality.source.strip() and (quality.rtn_loss_fraction != 1.0 or quality.int8_activation_loss != 1.0
                                             or quality.int8_static_activation_loss != 1.0):
            out.append("quality: no source for its factors")
    for name in ("quantizes_output", "quantizes_embeddings"):
        if not isinstance(getattr(priors, name), bool):
            out.append(_wrong(priors, name, _EXPECTED["bool"]))
    if not isinstance(priors.produce_with, str):
        out.append(_wrong(priors, "produce_with", _EXPECTED["text"]))
    else:
        out.extend(_template_problems(priors.produce_with))
    return out
