"""Quantize a checkpoint one decoder block at a time from its safetensors shards, and resume.

The model is built on the ``meta`` device (shapes, no storage; rotary buffers real). Each block's
weights are read from the checkpoint (each shard memory-mapped only while that block is read), the
method's block step quantizes it exactly as the in-memory path does, the block's compressed tensors
are written as one shard, and the block goes back to ``meta``. Calibration activations are carried
from block to block in memory or, with an offload directory, on disk one micro-batch at a time.

After every block the job directory (:mod:`quantmatch.plugins.methods._stream_job`) holds the
finished shards, the activations entering the next block and ``job.json``; a killed job continues from
the first unfinished block and writes the same tensors as an uninterrupted one. Peak memory is one
block in fp32, the carried activations and the method's per-block state (GPTQ's Hessians), plus the
embeddings while the first block's inputs are computed: it does not grow with depth.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from quantmatch.plugins.methods._stream_job import JobState
from quantmatch.plugins.methods.algorithms.blockwise import (
    BlockBatch,
    ProgressFn,
    block_output,
    blocks_prefix,
    capture_block_inputs,
    decoder_blocks,
    linear_modules,
)
from quantmatch.plugins.methods.algorithms.rtn import IntGrid, QuantizedWeight

__all__ = [
    "BlockResult",
    "BlockStep",
    "Carry",
    "Checkpoint",
    "StreamSpec",
    "StreamedCheckpoint",
    "meta_model",
    "stream_quantize",
    "unstreamable",
]

INDEX_FILE = "model.safetensors.index.json"


@dataclass
class BlockResult:
    """What a method's block step produced; names relative to the block."""

    weights: dict[str, QuantizedWeight]
    outputs: list[BlockBatch] | None = None  # the next block's inputs, when the step computed them anyway
    input_scales: dict[str, Tensor] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # JSON-able facts recorded per block


BlockStep = Callable[[nn.Module, "list[BlockBatch] | None", dict[str, IntGrid]], BlockResult]
"""``step(block, inputs, grids)``: quantize the block's layers named in ``grids`` in place (``inputs`` is
``None`` for a data-free method)."""


@dataclass(frozen=True)
class StreamSpec:
    """How a method runs block by block: its step, its activation handling, whether it calibrates."""

    step: BlockStep
    activations: str | None = None  # None (weight-only), "dynamic" or "static"
    calibrate: bool = True
    batch_size: int = 8
    outside_blocks: bool = False  # the step also quantizes linear layers outside the blocks (data-free only)
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None


@dataclass(frozen=True)
class StreamedCheckpoint:
    """What :func:`stream_quantize` wrote."""

    quantized_layers: int
    shards: int
    resumed_from: int | None
    details: dict[str, Any]


# ---- reading the source checkpoint -------------------------------------------------------------------
class Checkpoint:
    """A safetensors checkpoint directory: which shard holds each tensor; tensors read on demand."""

    def __init__(self, directory: str | Path) -> None:
        from safetensors import safe_open

        self.directory = Path(directory)
        self.where: dict[str, Path] = {}
        for f in sorted(self.directory.glob("*.safetensors")):
            with safe_open(str(f), framework="pt", device="cpu") as st:
                self.where.update(dict.fromkeys(st.keys(), f))
        if not self.where:
            raise FileNotFoundError(f"{self.directory}: no safetensors files")

    def read(self, names: Sequence[str], dtype: torch.dtype | None = torch.float32) -> dict[str, Tensor]:
        """The named tensors, each as a private copy in ``dtype`` (``None``: as stored); every shard is
        unmapped afterwards."""
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = {}
        for n in names:
            if n not in self.where:
                raise KeyError(f"{self.directory}: the checkpoint has no tensor {n}")
            by_file.setdefault(self.where[n], []).append(n)
        out: dict[str, Tensor] = {}
        for f, keys in by_file.items():
            with safe_open(str(f), framework="pt", device="cpu") as st:
                for k in keys:
                    t = st.get_tensor(k)
                    # get_tensor returns a tensor of its own (a copy out of the mapping): no second copy
                    out[k] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
                    del t
        return out


def meta_model(directory: str | Path) -> Any:
    """The causal LM of ``directory``'s config with every parameter on ``meta`` (buffers real), in fp32."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(directory))
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.eval()
    return model


def _set_tensor(root: nn.Module, name: str, value: Tensor) -> None:
    parent, _, leaf = name.rpartition(".")
    mod = root.get_submodule(parent) if parent else root
    if leaf in mod._parameters:
        mod._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    else:
        mod._buffers[leaf] = value


def load_module(module: nn.Module, prefix: str, ckpt: Checkpoint) -> None:
    """Give ``module``'s meta parameters (and persistent buffers) their values from the checkpoint."""
    names = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    values = ckpt.read([prefix + n for n in names])
    for n in names:
        _set_tensor(module, n, values.pop(prefix + n))


def release(module: nn.Module) -> None:
    """Send ``module``'s tensors back to ``meta`` (frees their memory)."""
    for n, t in [*module.named_parameters(), *module.named_buffers()]:
        if not t.is_meta:
            _set_tensor(module, n, torch.empty_like(t, device="meta"))


# ---- carried activations -----------------------------------------------------------------------------
class _SpilledBatch(BlockBatch):
    """A micro-batch whose hidden states stay on disk and are read at each use."""

    def __init__(self, path: Path, kwargs: dict[str, Any]) -> None:  # no dataclass __init__: hidden is lazy
        self.path = path
        self.kwargs = kwargs

    @property  # type: ignore[override]
    def hidden(self) -> Tensor:  # type: ignore[override]
        hidden: Tensor = torch.load(self.path, weights_only=True)["hidden"]
        return hidden


class Carry:
    """The activations entering block ``k``, one file per micro-batch in ``directory``; with ``spill``
    they are read from disk at each use instead of being kept in memory."""

    def __init__(self, directory: Path, spill: bool) -> None:
        self.directory = directory
        self.spill = spill
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, k: int, j: int) -> Path:
        return self.directory / f"in-{k:05d}-{j:04d}.pt"

    def write(self, k: int, j: int, hidden: Tensor, kwargs: dict[str, Any]) -> BlockBatch:
        path = self._path(k, j)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"hidden": hidden, "kwargs": kwargs}, tmp)
        os.replace(tmp, path)
        return _SpilledBatch(path, kwargs) if self.spill else BlockBatch(hidden, kwargs)

    def save(self, k: int, batches: Sequence[BlockBatch]) -> list[BlockBatch]:
        return [self.write(k, j, b.hidden, b.kwargs) for j, b in enumerate(batches)]

    def load(self, k: int) -> list[BlockBatch]:
        out: list[BlockBatch] = []
        j = 0
        while (p := self._path(k, j)).is_file():
            data = torch.load(p, weights_only=True)
            out.append(_SpilledBatch(p, data["kwargs"]) if self.spill else BlockBatch(data["hidden"], data["kwargs"]))
            j += 1
        if not out:
            raise FileNotFoundError(f"{self.directory}: the activations entering block {k} are missing; "
                                    "run again with --restart")
        return out

    def drop(self, k: int) -> None:
        for p in self.directory.glob(f"in-{k:05d}-*.pt"):
            p.unlink(missing_ok=True)


@torch.no_grad()
def _next_inputs(block: nn.Module, batches: Sequence[BlockBatch], carry: Carry, k: int) -> list[BlockBatch]:
    """Run ``block`` on each micro-batch and carry the outputs as block ``k``'s inputs, one at a time."""
    return [carry.write(k, j, block_output(block(b.hidden, **b.kwargs)), b.kwargs) for j, b in enumerate(batches)]


# ---- writing compressed shards -----------------------------------------------------------------------
def _kind(grid: IntGrid, mode: str | None) -> list[Any]:
    return [grid.bits, grid.group_size, grid.symmetric, mode]


def _grid(kind: Sequence[Any]) -> tuple[IntGrid, str | None]:
    return IntGrid(int(kind[0]), int(kind[1]), bool(kind[2])), kind[3]


def _config(kinds: Mapping[str, Sequence[Any]], linears: Sequence[str], single_target: bool) -> Any:
    """:func:`..export.quantization_config` for kinds recorded in ``job.json`` (lists)."""
    from quantmatch.plugins.methods.algorithms.export import quantization_config

    return quantization_config({n: _grid(k) for n, k in kinds.items()}, [n for n in linears if n not in kinds],
                               single_target)


@torch.no_grad()
def _compressed_state(module: nn.Module, prefix: str, weights: Mapping[str, QuantizedWeight],
                      activations: str | None, input_scales: Mapping[str, Tensor],
                      dtype: torch.dtype) -> tuple[dict[str, Tensor], dict[str, list[Any]]]:
    """``module``'s tensors as the in-memory path saves them (full names), and each quantized layer's kind."""
    from compressed_tensors.compressors import compress_module
    from compressed_tensors.quantization import apply_quantization_config

    from quantmatch.plugins.methods.algorithms.export import activation_modes, load_quantized

    modes = activation_modes(weights, activations, input_scales)

    def full(n: str) -> str:
        return prefix + n if n else prefix.rstrip(".")

    kinds = {full(n): _kind(qw.grid, modes[n]) for n, qw in weights.items()}
    count = len(weights)
    holder = nn.Module()
    parts = prefix.rstrip(".").split(".") if prefix else []
    node = holder
    for p in parts[:-1]:
        child = nn.Module()
        node.add_module(p, child)
        node = child
    if parts:
        node.add_module(parts[-1], module)
    else:
        holder = module
    if count:
        apply_quantization_config(holder, _config(kinds, [], single_target=False), show_progress=False)
        for n, qw in weights.items():
            load_quantized(module.get_submodule(n), qw, input_scales[n] if modes[n] == "static" else None)
        for n in list(weights):
            compress_module(module.get_submodule(n))
            if isinstance(weights, dict):  # the record holds the fp32 weight the compressed one replaces
                del weights[n]
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in holder.state_dict().items()}
    return state, kinds


def _save_shard(state: Mapping[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(dict(state), str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def _shard_name(i: int, total: int) -> str:
    return f"model-{i + 1:05d}-of-{total:05d}.safetensors"


# ---- the driver --------------------------------------------------------------------------------------
@contextmanager
def _loaded(module: nn.Module, prefix: str, ckpt: Checkpoint) -> Iterator[nn.Module]:
    load_module(module, prefix, ckpt)
    try:
        yield module
    finally:
        release(module)


def stream_quantize(source_dir: str | Path, out: str | Path, spec: StreamSpec, *,
                    grid_for_model: Callable[[Any], Callable[[str], IntGrid | None]],
                    samples: Callable[[], Tensor] | None, dtype: torch.dtype, state: JobState,
                    offload_dir: Path | None = None, progress: ProgressFn | None = None,
                    model: Any = None) -> StreamedCheckpoint:
    """Quantize the checkpoint in ``source_dir`` block by block into ``out`` (a fresh directory).

    ``grid_for_model(model)`` gives each linear layer's grid from the meta model's module names;
    ``samples()`` draws the calibration token ids (called only when the first block's inputs are
    computed). ``state`` is the opened job (:func:`~quantmatch.plugins.methods._stream_job.open_job`):
    finished blocks are skipped; its directory is removed once ``out`` is complete. Weights and config
    only: the caller writes the tokenizer. ``model``: the :func:`meta_model` of ``source_dir`` when the
    caller has built it already.
    """
    _large_allocations_unmapped()
    ckpt = Checkpoint(source_dir)
    model = model if model is not None else meta_model(source_dir)
    grid_for = grid_for_model(model)
    blocks = decoder_blocks(model)
    prefix = blocks_prefix(model) + "."
    n = len(blocks)
    groups = _outside_groups(model, ckpt, prefix, grid_for if spec.outside_blocks else None)
    total = n + len(groups)
    job = state.directory
    carry = Carry(offload_dir if offload_dir is not None else job / "carry", spill=offload_dir is not None)
    start = state.done
    batches: list[BlockBatch] | None = None
    if spec.calibrate and start < n:
        if start == 0:
            embed = model.get_input_embeddings()
            embed_name = next(k for k, m in model.named_modules() if m is embed)
            with _loaded(embed, embed_name + ".", ckpt):
                if samples is None:
                    raise ValueError("a calibrated step needs calibration samples")
                batches = carry.save(0, capture_block_inputs(model, samples(), spec.batch_size))
        else:
            batches = carry.load(start)
    for i in range(start, n):
        block = blocks[i]
        base = f"{prefix}{i}."
        load_module(block, base, ckpt)
        grids = {rel: g for rel in linear_modules(block) if (g := grid_for(base + rel)) is not None}
        res = spec.step(block, batches, grids)
        nxt: list[BlockBatch] | None = None
        if batches is not None:  # the next inputs come from the block as quantized, before scales are rounded
            nxt = carry.save(i + 1, res.outputs) if res.outputs is not None else _next_inputs(block, batches, carry,
                                                                                            i + 1)
        _round_scales(res.weights, dtype)
        shard, kinds = _compressed_state(block, base, res.weights, spec.activations, res.input_scales, dtype)
        _save_shard(shard, job / _shard_name(i, total))
        facts = {**res.details, "layers": kinds}
        del shard, res
        release(block)  # compressed-tensors may keep a reference to the module: free its tensors regardless
        blocks[i] = nn.Module()
        state.finish_block(i, facts)
        if batches is not None:
            carry.drop(i)
        batches = nxt
        _return_freed_memory()
        if progress is not None:
            progress("quantize", i + 1, n)
    del batches
    kinds_all: dict[str, list[Any]] = {}
    for d in state.block_details:
        kinds_all.update(d.get("layers", {}))
    # the tensors outside the blocks (embeddings, final norm, LM head), a shard each: at most one of them
    # is in memory, as stored and in the artifact's dtype
    for j, (owner, names) in enumerate(groups.items()):
        g = grid_for(owner) if names != [owner] else None  # keyed by the layer: the step quantizes it
        if g is not None:
            lin = model.get_submodule(owner)
            with _loaded(lin, owner + ".", ckpt):
                r = spec.step(lin, None, {"": g})
                _round_scales(r.weights, dtype)
                part, kinds = _compressed_state(lin, owner + ".", r.weights, spec.activations, {}, dtype)
            kinds_all.update(kinds)
        else:
            t = ckpt.read(names, dtype=None)
            part = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in t.items()}
            del t
        _save_shard(part, job / _shard_name(n + j, total))
        del part
    return _assemble(model, ckpt, out, job, n, total, kinds_all, spec, dtype, state)


def _large_allocations_unmapped() -> None:
    """Serve every allocation of 1 MiB or more with its own mapping, returned to the system when freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after which the
    per-layer temporaries of a block come from the heap, which fragments: resident memory within a block
    rose to about five block sizes on a 1.5B model. A fixed threshold keeps it near two and a half.
    """
    if os.environ.get("QUANTMATCH_MALLOC_TRIM", "1") == "0":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: fixed, no dynamic raise
    except (OSError, AttributeError):  # not glibc
        pass


def _return_freed_memory() -> None:
    """Hand the heap pages freed with the last block back to the system (glibc keeps them otherwise, and
    the resident size would grow block by block with fragments of blocks long gone)."""
    if os.environ.get("QUANTMATCH_MALLOC_TRIM", "1") == "0":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def unstreamable(model: nn.Module, grid_for: Callable[[str], IntGrid | None], spec: StreamSpec) -> str | None:
    """Why this request cannot be streamed (``None``: it can). A head tied to the embeddings that the
    request quantizes shares its tensor with them, which block-by-block reading cannot reproduce."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    if head is not None and tied and spec.outside_blocks:
        name = next((n for n, m in model.named_modules() if m is head), "")
        if name and grid_for(name) is not None:
            return f"the output head {name} is tied to the embeddings and this request quantizes it"
    return None


def _outside_groups(model: nn.Module, ckpt: Checkpoint, prefix: str,
                    grid_for: Callable[[str], IntGrid | None] | None) -> dict[str, list[str]]:
    """The checkpoint's tensors outside the decoder blocks, one group per shard: a linear layer the step
    quantizes (``grid_for`` given and not ``None`` for it) is one group, keyed by its name; any other
    tensor is a group of its own, keyed by its own name. A tied LM head is not stored twice."""
    names = sorted(k for k in ckpt.where if not k.startswith(prefix))
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        names = [k for k in names if k != "lm_head.weight"]
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.startswith(prefix)}
    groups: dict[str, list[str]] = {}
    for name in names:
        owner = name.rpartition(".")[0]
        quantized = grid_for is not None and owner in linears and grid_for(owner) is not None
        groups.setdefault(owner if quantized else name, []).append(name)
    return groups


def _round_scales(weights: Mapping[str, QuantizedWeight], dtype: torch.dtype) -> None:
    from quantmatch.plugins.methods.algorithms.export import round_scales

    round_scales(weights, dtype)


def _assemble(model: Any, ckpt: Checkpoint, out: str | Path, job: Path, n: int, total: int,
              kinds: Mapping[str, list[Any]], spec: StreamSpec, dtype: torch.dtype,
              state: JobState) -> StreamedCheckpoint:
    """Move the shards into ``out`` and write the index, the config with its ``quantization_config``."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationStatus, apply_quantization_config
    from safetensors import safe_open

    from quantmatch.plugins.methods.algorithms.export import mark_packed_zero_points

    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    size = 0
    for i in range(total):
        name = _shard_name(i, total)
        try:  # linked, not moved: a job killed while assembling still has every shard
            os.link(job / name, directory / name)
        except OSError:
            shutil.copy2(job / name, directory / name)
        with safe_open(str(directory / name), framework="pt", device="cpu") as st:
            for k in st.keys():  # noqa: SIM118 - not a mapping
                weight_map[k] = name
                sl = st.get_slice(k)
                numel = 1
                for d in sl.get_shape():
                    numel *= int(d)
                size += numel * torch.empty((), dtype=_dtype_of(sl.get_dtype())).element_size()
    (directory / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": size},
                                                    "weight_map": dict(sorted(weight_map.items()))}, indent=2)
                                        + "\n", encoding="utf-8")
    skeleton = meta_model(ckpt.directory)  # a fresh one: the first had its blocks replaced
    linears = [k for k, m in skeleton.named_modules() if isinstance(m, nn.Linear)]
    config = _config(kinds, linears, single_target=True)
    apply_quantization_config(skeleton, config, show_progress=False)
    compressor = ModelCompressor.from_pretrained_model(skeleton)
    if compressor.quantization_config is not None:
        compressor.quantization_config.quantization_status = QuantizationStatus.COMPRESSED
    hf_config = skeleton.config
    hf_config.dtype = dtype
    hf_config.save_pretrained(str(directory))
    compressor.update_config(str(directory))
    mark_packed_zero_points(directory)
    gen = ckpt.directory / "generation_config.json"
    if gen.is_file():
        shutil.copy2(gen, directory / gen.name)
    resumed = state.resumed_from
    summary = spec.summarize(state.block_details) if spec.summarize else {}
    state.discard()
    return StreamedCheckpoint(len(kinds), total, resumed, summary)


def _dtype_of(name: str) -> torch.dtype:
    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool}.get(name, torch.uint8)
