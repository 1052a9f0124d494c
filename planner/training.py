"""Fine-tuning memory plans: QLoRA, LoRA and full fine-tuning of a model on a device.

:func:`plan_training` predicts the peak GPU memory of one training step from the model's shapes, and
says which workloads fit and which one to use (the seeds' decision tree: fine-tuning on limited
memory -> QLoRA with NF4; enough memory -> LoRA in 16-bit; a full fine-tune when it fits).

The peak, in bytes, is ``static + saved activations + max(loss working set, one layer's backward)``
plus the runtime's own memory:

- static: frozen base weights (NF4 with double-quantized constants, 4 + 8/64 + 32/(64*256) = 4.127
  bits per weight, QLoRA paper (Dettmers et al. 2023, arXiv 2305.14314) section 3 "Double
  Quantization"; NF4 without it 4 + 32/64 = 4.5 bits; LLM.int8() 8 bits plus an fp32 scale per row;
  16-bit) for every decoder linear layer, embeddings, norms and LM head in 16-bit; the trainable
  parameters (LoRA A and B of rank r on the target modules, or every parameter), their gradients,
  the optimizer states (AdamW: two states per parameter in the parameters' dtype, fp32 under mixed
  precision; 8-bit AdamW: one byte each plus an fp32 absmax per 2048-value block, Dettmers et al.
  2022 "8-bit Optimizers via Block-wise Quantization") and, under mixed precision, the fp32 master
  copy (ZeRO, Rajbhandari et al. 2020, section 3.1: 2 + 2 + 12 bytes per parameter with AdamW).
  Paged optimizers keep their states in CUDA unified memory, which can spill to host RAM: they are
  reported apart and a plan that fits only by paging says so.
- saved activations, per token: with gradient checkpointing each decoder layer's input (``h``
  values); without it every tensor a LLaMA-style layer saves for its backward, counted tensor by
  tensor in the manner of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models", section 4.1, who count ``sbh(34 + 5as/h)`` bytes per GPT layer with dropout):
  two norm inputs and outputs (4h), q, k and v for the attention kernel and its output (2q + 2kv),
  the gated MLP's gate, up, activation and product (4i), plus each LoRA module's rank-r output and,
  with LoRA dropout, its dropped input (2 bytes) and mask (1 byte). Attention is a memory-efficient
  kernel (no ``s x s`` scores, the ``5as/h`` term drops out) unless ``flash_attention=False``.
- the larger of: the loss working set (fp32 logits, the log-softmax output and the two fp32
  gradients of the loss backward: 16 bytes per token per vocabulary entry; with a chunked loss the
  16-bit logits, their gradient and one chunk of the fp32 work), and one checkpointed layer
  recomputed for its backward.
- runtime: the CUDA context PyTorch creates on the GPU (:data:`CUDA_CONTEXT_GIB`), which the tensor
  allocator does not see.

The figures this was checked against are listed, with their sources, configurations and errors, in
``docs/planner.md`` ("Fine-tuning"). Nothing here imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.planner.hardware import GIB, DeviceSpec
from quantmatch.planner.shapes import ModelSource, ParamBreakdown, param_breakdown, resolve_model
from quantmatch.planner.types import PlanInputError, parse_budget
from quantmatch.sdk.model_info import LinearShape, ModelInfo
from quantmatch.sdk.profile import HardwareProfile

__all__ = [
    "BASE_FORMATS",
    "CUDA_CONTEXT_GIB",
    "LORA_TARGETS",
    "OPTIMIZERS",
    "PRECISIONS",
    "TRAINING_WORKLOADS",
    "BaseFormat",
    "MemoryPart",
    "OptimizerSpec",
    "TrainingOption",
    "TrainingPlan",
    "lora_params",
    "plan_training",
    "training_memory",
]

TRAINING_WORKLOADS = ("qlora", "lora", "full")
"""Fine-tuning workloads, from the least memory to the most."""

PRECISIONS = ("bf16", "mixed")
"""``bf16``: parameters, gradients and optimizer states in 16-bit (pure bf16 training, as torchtune runs
with ``dtype=bf16``); ``mixed``: 16-bit compute with an fp32 master copy and fp32 optimizer states."""


@dataclass(frozen=True)
class BaseFormat:
    """How the frozen base model's linear layers are stored while adapters train."""

    name: str
    bits: float
    """Bits per weight including the quantization constants (per-row constants are added per shape)."""
    row_scale_bits: int
    """Bits of one constant per output row (LLM.int8's fp32 row scale), 0 when none."""
    source: str


BASE_FORMATS: Mapping[str, BaseFormat] = {
    "nf4": BaseFormat("nf4", 4 + 8 / 64 + 32 / (64 * 256), 0,
                      "QLoRA paper (arXiv 2305.14314) section 3, Double Quantization: 4-bit NF4, blocks of 64 "
                      "with 8-bit constants and an fp32 constant per 256 of them (0.127 bits per weight)"),
    "nf4-nodq": BaseFormat("nf4-nodq", 4 + 32 / 64, 0,
                           "QLoRA paper section 3: one fp32 constant per 64-weight block (0.5 bits per weight)"),
    "fp4": BaseFormat("fp4", 4 + 8 / 64 + 32 / (64 * 256), 0,
                      "the 4-bit float type of the same 4-bit layer, with double quantization"),
    "int8": BaseFormat("int8", 8.0, 32,
                       "LLM.int8() (Dettmers et al. 2022, arXiv 2208.07339): int8 weights with an fp32 scale "
                       "per output row"),
    "bf16": BaseFormat("bf16", 16.0, 0, "16-bit weights"),
    "fp16": BaseFormat("fp16", 16.0, 0, "16-bit weights"),
}
"""Frozen-base formats that adapters are trained on (``nf4`` is QLoRA's)."""


@dataclass(frozen=True)
class OptimizerSpec:
    """Optimizer state per trainable parameter: ``states`` values of ``state_bytes`` each (``None``: the
    parameters' dtype, or fp32 under mixed precision), ``paged`` when the states live in unified memory."""

    name: str
    states: int
    state_bytes: float | None
    paged: bool
    source: str


_BNB8 = 1 + 4 / 2048  # one byte per value plus an fp32 absmax per 2048-value block
OPTIMIZERS: Mapping[str, OptimizerSpec] = {
    "adamw": OptimizerSpec("adamw", 2, None, False, "Adam's first and second moments (Kingma & Ba 2015)"),
    "adamw_8bit": OptimizerSpec("adamw_8bit", 2, _BNB8, False,
                                "block-wise 8-bit states (Dettmers et al. 2022, arXiv 2110.02861): 1 byte per "
                                "value, fp32 absmax per 2048-value block"),
    "paged_adamw": OptimizerSpec("paged_adamw", 2, None, True,
                                 "QLoRA paper section 3, Paged Optimizers: states in CUDA unified memory"),
    "paged_adamw_8bit": OptimizerSpec("paged_adamw_8bit", 2, _BNB8, True,
                                      "QLoRA paper section 3 (paging) with block-wise 8-bit states"),
    "sgd": OptimizerSpec("sgd", 0, None, False, "plain SGD keeps no state"),
}
"""Optimizers by the name the CLI's ``--optimizer`` takes."""

LORA_TARGETS: Mapping[str, tuple[str, ...]] = {
    "all": ("attn_qkv", "attn_out", "mlp_in", "mlp_out", "moe_expert_in", "moe_expert_out"),
    "attention": ("attn_qkv", "attn_out"),
    "qv": ("q", "v"),
}
"""LoRA target module sets: every decoder linear layer (QLoRA paper section 4, "LoRA on all linear
layers"), the attention projections, or q and v only (the LoRA paper's choice, Hu et al. 2021 section 7.1)."""

_ACT_BYTES = 2.0  # bf16/fp16 activations
_LOSS_FP32_BYTES = 16.0
"""Per token per vocabulary entry at the loss backward, four fp32 tensors alive together (derived): the
fp32 logits (the model upcasts them, ``self.output(h).float()`` in pytorch/torchtune
torchtune/modules/transformer.py @0217d44c, and the training loop's ``logits`` name holds them through the
backward: recipes/lora_finetune_single_device.py @0217d44c; torchtune PRs #1046 and #1235 later added
``del logits`` for this reason), the log-softmax output that ``nn.CrossEntropyLoss`` saves, the gradient
that the NLL backward hands it and the gradient it returns."""
_LOSS_CHUNKS = 8  # torchtune's CEWithChunkedOutputLoss default num_output_chunks
_DEFAULT_RANK = 64  # QLoRA paper section 4 / appendix B.2: r = 64 on all linear layers
_DEFAULT_SEQ = 2048
CUDA_CONTEXT_GIB = 781 / 1024
"""The CUDA context of a process that has initialised PyTorch on a GPU, outside what its allocator reports:
781 MiB in nvidia-smi after the first CUDA tensor (pytorch/pytorch issue #34323, the report that opens it)."""
_LAYER0 = re.compile(r"(^|\.)(layers|h)\.0\.")


@dataclass(frozen=True)
class MemoryPart:
    """One component of the training peak, in GiB. ``paged``: held in unified memory (may spill to host)."""

    name: str
    gib: float
    note: str = ""
    paged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "gib": round(self.gib, 3), "note": self.note, "paged": self.paged}


@dataclass(frozen=True)
class TrainingOption:
    """One workload's predicted peak on the device, for the comparison a plan carries."""

    workload: str
    base_format: str | None
    total_gib: float
    resident_gib: float
    fits: bool | None
    fits_with_paging: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "base_format": self.base_format, "total_gib": round(self.total_gib, 3),
                "resident_gib": round(self.resident_gib, 3), "fits": self.fits,
                "fits_with_paging": self.fits_with_paging}


@dataclass(frozen=True)
class TrainingPlan:
    """A fine-tuning memory plan: the breakdown of one workload's peak and which workload to use.

    ``tensors_gib``: the peak of live tensors (what ``torch.cuda.max_memory_allocated`` reports,
    paged optimizer states excluded); ``total_gib`` adds the runtime and the paged states: the memory
    the device must hold for everything to stay resident. ``fits`` compares ``total_gib`` with the
    capacity; ``fits_with_paging`` allows paged states to spill to host memory.
    """

    model: str
    device: str
    device_name: str
    workload: str
    batch: int
    seq: int
    gradient_checkpointing: bool
    optimizer: str
    precision: str
    base_format: str | None
    lora_rank: int | None
    lora_targets: str | None
    total_params: int
    trainable_params: int
    parts: tuple[MemoryPart, ...]
    tensors_gib: float
    total_gib: float
    capacity_gib: float | None
    capacity_source: str
    fits: bool | None
    fits_with_paging: bool | None
    options: tuple[TrainingOption, ...] = ()
    recommended: str | None = None
    summary: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def headroom_gib(self) -> float | None:
        return None if self.capacity_gib is None else self.capacity_gib - self.total_gib

    def part(self, name: str) -> MemoryPart:
        """The component called ``name`` (KeyError when absent)."""
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        r = 3
        return {
            "model": self.model, "device": self.device, "device_name": self.device_name,
            "workload": self.workload, "batch": self.batch, "seq_len": self.seq,
            "gradient_checkpointing": self.gradient_checkpointing, "optimizer": self.optimizer,
            "precision": self.precision, "base_format": self.base_format, "lora_rank": self.lora_rank,
            "lora_targets": self.lora_targets, "total_params": self.total_params,
            "trainable_params": self.trainable_params, "parts": [p.to_dict() for p in self.parts],
            "tensors_gib": round(self.tensors_gib, r), "total_gib": round(self.total_gib, r),
            "capacity_gib": None if self.capacity_gib is None else round(self.capacity_gib, r),
            "capacity_source": self.capacity_source, "fits": self.fits, "fits_with_paging": self.fits_with_paging,
            "headroom_gib": None if self.headroom_gib is None else round(self.headroom_gib, r),
            "options": [o.to_dict() for o in self.options], "recommended": self.recommended,
            "summary": self.summary, "notes": list(self.notes),
        }


# ---- parsing ------------------------------------------------------------------------------------------
def _choice(kind: str, flag: str, value: str, choices: Iterable[str]) -> str:
    v = str(value).strip().lower().replace("-", "_") if kind != "base format" else str(value).strip().lower()
    opts = list(choices)
    if v not in opts:
        raise PlanInputError(f"unknown {kind} {value!r} for {flag}: choose one of {', '.join(opts)}")
    return v


def _positive(name: str, value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise PlanInputError(f"{name} must be a positive integer, got {value!r}") from None
    if n <= 0:
        raise PlanInputError(f"{name} must be a positive integer, got {value!r}")
    return n


# ---- the arithmetic -------------------------------------------------------------------------------------
def _decoder_linears(info: ModelInfo) -> list[LinearShape]:
    return [ls for ls in info.linear_layers() if ls.kind != "lm_head"]


def _targeted(ls: LinearShape, targets: str) -> bool:
    if targets == "qv":
        leaf = ls.name.rsplit(".", 1)[-1]
        return leaf in ("q_proj", "v_proj", "c_attn")
    return ls.kind in LORA_TARGETS[targets]


def lora_params(info: ModelInfo, rank: int, targets: str = "all") -> int:
    """Trainable LoRA parameters: ``rank x (in + out)`` for every targeted decoder linear layer."""
    return sum(rank * (ls.in_features + ls.out_features) for ls in _decoder_linears(info) if _targeted(ls, targets))


def _per_layer(info: ModelInfo) -> list[LinearShape]:
    """The linear layers of decoder layer 0 (every layer has the same shapes)."""
    linears = _decoder_linears(info)
    first = [ls for ls in linears if _LAYER0.search(ls.name)]
    return first or linears[: max(1, len(linears) // max(1, info.num_layers))]


def _token_share(ls: LinearShape, info: ModelInfo) -> float:
    """Share of tokens a linear layer sees (k of E for MoE experts, 1 otherwise)."""
    if ls.kind.startswith("moe_expert") and info.num_experts:
        return float(info.experts_per_token) / float(info.num_experts)
    return 1.0


def _layer_act_bytes(info: ModelInfo, rank: int | None, targets: str | None, lora_dropout: float,
                     flash_attention: bool, seq: int) -> float:
    """Bytes one decoder layer saves for its backward, per token (see the module docstring)."""
    h = info.hidden_size
    q = info.num_heads * info.head_dim
    kv = info.num_kv_heads * info.head_dim
    gated = info.model_type != "gpt2"
    inter = info.moe_intermediate_size * max(1, info.experts_per_token) if info.is_moe else info.intermediate_size
    elems = 4 * h + 2 * q + 2 * kv + (4 if gated else 2) * inter
    if info.is_moe:
        elems += info.num_experts  # router logits
    total = elems * _ACT_BYTES
    if rank and targets:
        for ls in _per_layer(info):
            if _targeted(ls, targets):
                share = _token_share(ls, info)
                total += share * rank * _ACT_BYTES
                if lora_dropout > 0:
                    total += share * ls.in_features * (_ACT_BYTES + 1)  # dropped copy + bool mask
    if not flash_attention:
        total += 4 * info.num_heads * seq  # scores and softmax, 2 bytes each, per query token
    return float(total)


@dataclass(frozen=True)
class _Config:
    workload: str
    batch: int
    seq: int
    checkpointing: bool
    optimizer: OptimizerSpec
    precision: str
    base: BaseFormat | None
    rank: int | None
    targets: str | None
    lora_dropout: float
    chunked_loss: bool
    optimizer_in_backward: bool
    flash_attention: bool


def _parts(info: ModelInfo, params: ParamBreakdown, c: _Config, runtime_gib: float
           ) -> tuple[list[MemoryPart], int]:
    """The breakdown (bytes converted to GiB) and the trainable parameter count."""
    parts: list[MemoryPart] = []
    non_linear = params.total - params.linear
    if c.workload == "full":
        trainable = params.total
        wbytes = 2.0
        parts.append(MemoryPart("weights", params.total * wbytes / GIB, "every parameter in 16-bit, trained"))
    else:
        assert c.base is not None and c.rank is not None and c.targets is not None
        linear_bytes = params.linear * c.base.bits / 8
        if c.base.row_scale_bits:
            linear_bytes += sum(ls.out_features for ls in _decoder_linears(info)) * c.base.row_scale_bits / 8
        base_bytes = linear_bytes + non_linear * 2.0
        parts.append(MemoryPart("base weights (frozen)", base_bytes / GIB,
                                f"decoder linears in {c.base.name} ({c.base.bits:.3f} bits/weight), embeddings, "
                                "norms and LM head in 16-bit"))
        trainable = lora_params(info, c.rank, c.targets)
        wbytes = 2.0
        parts.append(MemoryPart("adapter weights", trainable * wbytes / GIB,
                                f"LoRA rank {c.rank} on {c.targets} linear layers, 16-bit"))
    mixed = c.precision == "mixed"
    if c.optimizer_in_backward:
        largest = max([ls.in_features * ls.out_features for ls in _decoder_linears(info)]
                      + [params.embeddings, params.lm_head]) if c.workload == "full" else trainable
        grad_bytes = 2.0 * min(largest, trainable)
        parts.append(MemoryPart("gradients", grad_bytes / GIB, "optimizer step in the backward: one parameter's "
                                                                "gradient at a time"))
    else:
        parts.append(MemoryPart("gradients", trainable * 2.0 / GIB, "16-bit"))
    if mixed:
        parts.append(MemoryPart("master weights (fp32)", trainable * 4.0 / GIB, "mixed precision"))
    opt = c.optimizer
    state_bytes = opt.state_bytes if opt.state_bytes is not None else (4.0 if mixed else wbytes)
    parts.append(MemoryPart("optimizer states", trainable * opt.states * state_bytes / GIB,
                            f"{opt.name}: {opt.states} x {state_bytes:g} bytes per trainable parameter",
                            paged=opt.paged))
    tokens = c.batch * c.seq
    layer = _layer_act_bytes(info, c.rank, c.targets, c.lora_dropout, c.flash_attention, c.seq) * tokens
    if c.checkpointing:
        saved = info.num_layers * info.hidden_size * _ACT_BYTES * tokens
        parts.append(MemoryPart("activations (checkpoints)", saved / GIB,
                                "each decoder layer's input, 16-bit"))
    else:
        saved = info.num_layers * layer
        parts.append(MemoryPart("activations", saved / GIB, "every tensor each decoder layer saves, 16-bit"))
    vocab = info.vocab_size
    if c.chunked_loss:
        loss = tokens * vocab * (_ACT_BYTES + (_ACT_BYTES + 4.0) / _LOSS_CHUNKS)
        loss_note = f"16-bit logits, and one of {_LOSS_CHUNKS} chunks' 16-bit gradient and fp32 row"
    else:
        loss = tokens * vocab * _LOSS_FP32_BYTES
        loss_note = "fp32 logits, log-softmax and their gradients"
    recompute = layer if c.checkpointing else 0.0
    if loss >= recompute:
        parts.append(MemoryPart("loss working set", loss / GIB, loss_note))
    else:
        parts.append(MemoryPart("layer recompute", recompute / GIB, "one checkpointed layer's activations "
                                                                     "during its backward"))
    parts.append(MemoryPart("runtime", runtime_gib, "CUDA context, outside the tensor allocator"))
    return parts, trainable


def _totals(parts: list[MemoryPart]) -> tuple[float, float, float]:
    """(live tensors, resident total, total with paged states)."""
    tensors = sum(p.gib for p in parts if p.name != "runtime" and not p.paged)
    runtime = sum(p.gib for p in parts if p.name == "runtime")
    paged = sum(p.gib for p in parts if p.paged)
    return tensors, tensors + runtime, tensors + runtime + paged


def training_memory(model: str | Path | ModelInfo | ModelSource, workload: str = "qlora", *, batch: int = 1,
                    seq: int = _DEFAULT_SEQ, gradient_checkpointing: bool = True, optimizer: str = "adamw",
                    precision: str | None = None, base_format: str | None = None, lora_rank: int = _DEFAULT_RANK,
                    lora_targets: str = "all", lora_dropout: float = 0.0, chunked_loss: bool = False,
                    optimizer_in_backward: bool = False, flash_attention: bool = True,
                    runtime_gib: float = 0.0) -> tuple[list[MemoryPart], int, int]:
    """The breakdown of one workload's training peak (no device): ``(parts, trainable, total params)``.

    Arguments as :func:`plan_training`; ``runtime_gib`` is added as the ``runtime`` part.
    """
    c = _config(workload, batch, seq, gradient_checkpointing, optimizer, precision, base_format, lora_rank,
                lora_targets, lora_dropout, chunked_loss, optimizer_in_backward, flash_attention)
    info = resolve_model(model).info
    params = param_breakdown(info)
    parts, trainable = _parts(info, params, c, runtime_gib)
    return parts, trainable, params.total


def _config(workload: str, batch: Any, seq: Any, checkpointing: bool, optimizer: str, precision: str | None,
            base_format: str | None, rank: Any, targets: str, dropout: float, chunked: bool, in_bwd: bool,
            flash: bool) -> _Config:
    wl = _choice("workload", "--workload", workload, TRAINING_WORKLOADS)
    opt = OPTIMIZERS[_choice("optimizer", "--optimizer", optimizer, OPTIMIZERS)]
    prec = _choice("precision", "--precision", precision or ("mixed" if wl == "full" else "bf16"), PRECISIONS)
    try:
        drop = float(dropout)
    except (TypeError, ValueError):
        raise PlanInputError(f"--lora-dropout must be a probability in [0, 1), got {dropout!r}") from None
    if not 0.0 <= drop < 1.0:
        raise PlanInputError(f"--lora-dropout must be a probability in [0, 1), got {dropout!r}")
    base: BaseFormat | None = None
    r: int | None = None
    tg: str | None = None
    if wl != "full":
        default = "nf4" if wl == "qlora" else "bf16"
        bf = _choice("base format", "--base-format", base_format or default, BASE_FORMATS)
        if wl == "qlora" and BASE_FORMATS[bf].bits >= 16:
            raise PlanInputError(f"--base-format {bf} is not quantized: use --workload lora for a 16-bit base, "
                                 f"or one of {', '.join(k for k, v in BASE_FORMATS.items() if v.bits < 16)}")
        base = BASE_FORMATS[bf]
        r = _positive("--lora-rank", rank)
        tg = _choice("LoRA target set", "--lora-targets", targets, LORA_TARGETS)
    elif base_format is not None and str(base_format).strip().lower() not in ("bf16", "fp16"):
        raise PlanInputError("--base-format applies to --workload qlora or lora: a full fine-tune trains 16-bit "
                             "weights")
    return _Config(wl, _positive("--batch", batch), _positive("--seq-len", seq), bool(checkpointing), opt, prec,
                   base, r, tg, drop, bool(chunked), bool(in_bwd), bool(flash))


def _resolve_device(device: str | HardwareProfile | DeviceSpec, registry: Any) -> tuple[DeviceSpec, Any]:
    from quantmatch.planner.engine import _registry, _resolve_device

    reg = _registry(registry)
    spec, _local = _resolve_device(device, reg)
    return spec, reg


def _runtime_gib(spec: DeviceSpec) -> float:
    """Memory outside the tensor allocator: the CUDA context with PyTorch's kernels loaded (0 on a CPU)."""
    return 0.0 if spec.is_cpu else CUDA_CONTEXT_GIB


def plan_training(model: str | Path | ModelInfo | ModelSource, device: str | HardwareProfile | DeviceSpec = "local",
                  workload: str = "qlora", *, batch: int = 1, seq: int = _DEFAULT_SEQ,
                  gradient_checkpointing: bool = True, optimizer: str = "adamw", precision: str | None = None,
                  base_format: str | None = None, lora_rank: int = _DEFAULT_RANK, lora_targets: str = "all",
                  lora_dropout: float = 0.0, chunked_loss: bool = False, optimizer_in_backward: bool = False,
                  flash_attention: bool = True, memory_budget: float | str | None = None,
                  registry: Any = None) -> TrainingPlan:
    """Predict the peak memory of fine-tuning ``model`` on ``device`` and recommend a workload.

    ``workload``: ``qlora`` (adapters on a quantized frozen base, ``base_format`` ``nf4`` by default;
    also ``nf4-nodq``, ``fp4``, ``int8``), ``lora`` (adapters on a 16-bit base) or ``full``.
    ``batch`` sequences of ``seq`` tokens per step; ``gradient_checkpointing`` per decoder layer;
    ``optimizer``: ``adamw``, ``adamw_8bit``, ``paged_adamw``, ``paged_adamw_8bit`` or ``sgd``;
    ``precision``: ``bf16`` (pure 16-bit params, grads and states; default for adapters) or ``mixed``
    (fp32 master and states; default for ``full``); ``lora_rank`` and ``lora_targets`` (``all``,
    ``attention``, ``qv``); ``lora_dropout`` (> 0 saves a dropped copy of each adapter's input);
    ``chunked_loss`` (the loss upcasts logits chunk by chunk); ``optimizer_in_backward`` (each
    gradient is applied and freed as it is produced); ``flash_attention`` (False: eager attention
    saves the ``s x s`` scores); ``memory_budget`` (GiB, or a string with a unit) caps the capacity.

    Bad input raises :class:`~quantmatch.planner.types.PlanInputError` naming the choices.
    """
    c = _config(workload, batch, seq, gradient_checkpointing, optimizer, precision, base_format, lora_rank,
                lora_targets, lora_dropout, chunked_loss, optimizer_in_backward, flash_attention)
    budget = parse_budget(memory_budget)
    src = resolve_model(model)
    info = src.info
    params = param_breakdown(info)
    spec, _reg = _resolve_device(device, registry)
    runtime = _runtime_gib(spec)
    capacity, cap_src = spec.memory_gib, spec.memory_source
    if budget is not None and (capacity is None or budget < capacity):
        capacity, cap_src = budget, "--memory-budget"
    notes: list[str] = []
    if spec.is_cpu:
        notes.append("training on a CPU: memory is predicted as for a GPU; the CUDA-only formats (NF4 and 8-bit "
                     "optimizer kernels) may not run there")

    def fit(total: float, resident: float) -> tuple[bool | None, bool | None]:
        if capacity is None:
            return None, None
        return total <= capacity, resident <= capacity

    options: list[TrainingOption] = []
    chosen: tuple[list[MemoryPart], int] | None = None
    for wl in TRAINING_WORKLOADS:
        cw = c if wl == c.workload else _config(
            wl, c.batch, c.seq, c.checkpointing, c.optimizer.name, None if wl != c.workload else c.precision,
            None, c.rank or _DEFAULT_RANK, c.targets or "all", c.lora_dropout, c.chunked_loss,
            c.optimizer_in_backward, c.flash_attention)
        parts, trainable = _parts(info, params, cw, runtime)
        _t, resident, total = _totals(parts)
        f, fp = fit(total, resident)
        options.append(TrainingOption(wl, cw.base.name if cw.base else None, total, resident, f, fp))
        if wl == c.workload:
            chosen = (parts, trainable)
    assert chosen is not None
    parts, trainable = chosen
    tensors, resident, total = _totals(parts)
    fits, fits_paged = fit(total, resident)
    recommended = _recommend(options)
    summary = _summary(c.workload, options, recommended, capacity, spec.name)
    loss_gib = sum(p.gib for p in parts if p.name == "loss working set")
    if not c.chunked_loss and loss_gib > 0.25 * total:
        notes.append(f"the loss working set ({loss_gib:.1f} GiB of fp32 logits and gradients) dominates: a chunked, "
                     "fused cross-entropy (--chunked-loss) keeps about an eighth of it")
    if fits is False and fits_paged:
        notes.append("fits only if the paged optimizer states spill to host memory (slower steps)")
    if info.max_position_embeddings and c.seq > info.max_position_embeddings:
        notes.append(f"--seq-len {c.seq} exceeds the model's max_position_embeddings {info.max_position_embeddings}")
    return TrainingPlan(
        model=src.name if hasattr(src, "name") else str(model), device=spec.id, device_name=spec.name,
        workload=c.workload, batch=c.batch, seq=c.seq, gradient_checkpointing=c.checkpointing,
        optimizer=c.optimizer.name, precision=c.precision, base_format=c.base.name if c.base else None,
        lora_rank=c.rank, lora_targets=c.targets, total_params=params.total, trainable_params=trainable,
        parts=tuple(parts), tensors_gib=tensors, total_gib=total, capacity_gib=capacity, capacity_source=cap_src,
        fits=fits, fits_with_paging=fits_paged, options=tuple(options), recommended=recommended,
        summary=summary, notes=tuple(notes))


def _recommend(options: list[TrainingOption]) -> str | None:
    """The seeds' decision tree: a full fine-tune when it fits, else LoRA on a 16-bit base when that
    fits, else QLoRA on NF4; ``None`` when the capacity is unknown or nothing fits."""
    by = {o.workload: o for o in options}
    if any(o.fits is None for o in options):
        return None
    for wl in ("full", "lora", "qlora"):
        if by[wl].fits:
            return wl
    return None


def _summary(asked: str, options: list[TrainingOption], rec: str | None, capacity: float | None,
             device: str) -> str:
    by = {o.workload: o for o in options}
    o = by[asked]
    if capacity is None:
        return (f"{asked} needs {o.total_gib:.1f} GiB at peak; the device memory is unknown "
                "(give --memory-budget to check the fit)")
    head = (f"{asked} needs {o.total_gib:.1f} GiB at peak of {capacity:.1f} GiB on {device}: "
            + ("fits" if o.fits else "does not fit"))
    if rec is None:
        return head + "; no workload fits: lower --batch or --seq-len, or use a device with more memory"
    if rec == asked:
        return head + f"; {asked} is the recommended workload here"
    why = {"full": "a full fine-tune fits",
           "lora": "LoRA on a 16-bit base fits, with no quantization error in the base",
           "qlora": "only QLoRA on a quantized base fits"}[rec]
    return head + f"; recommended: {rec} ({by[rec].total_gib:.1f} GiB): {why}"
