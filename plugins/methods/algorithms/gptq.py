"""GPTQ (Frantar et al., 2022, https://arxiv.org/abs/2210.17323) in plain torch, on the CPU.

Each linear layer's weight is rounded one input column at a time; the rounding error of a column is
spread over the columns not yet rounded, weighted by the inverse Hessian ``H = 2 X^T X / n`` of the
layer's calibration inputs, which minimises the layer's output error ``||X W^T - X Q^T||^2``.

- Hessians are accumulated per block (:mod:`.blockwise`), so only one block's inputs and Hessians
  are in memory. Layers that read the same input (q/k/v, gate/up) share one Hessian.
- True-sequential: within a block the layers are quantized in the order they run, and each group's
  Hessian is collected with the earlier groups already quantized.
- Dampening ``damp * mean(diag H)``, a Cholesky-based upper factor of ``H^-1``, and lazy batch
  updates (errors within ``block_size`` columns are applied immediately, the rest once per batch).
- Shrinkage (our addition; ``shrink=0`` is textbook GPTQ): the off-diagonal of ``H`` is scaled by
  ``1 - shrink`` before the solve, as covariance estimators shrink a sample covariance towards its
  diagonal (Ledoit and Wolf, 2004, https://doi.org/10.1016/S0047-259X(03)00096-4). The per-channel
  energies stay; only trust in the calibration text's cross-channel correlations drops. Textbook GPTQ
  dumps rounding error into directions the calibration text hardly uses; when the evaluated text
  uses them (tiny-shakespeare calibration, WikiText evaluation) it loses to round-to-nearest on
  SmolLM2-135M, llm-compressor's GPTQ too. ``shrink=0.5`` beats round-to-nearest there, in-domain as
  well (docs/benchmarks.md, "Methods II").
- Groups: scales are taken when the loop reaches each group's first column, from the already
  error-compensated weights. With ``act_order`` columns are processed in order of decreasing
  ``diag(H)`` and groups stay static: every group's scale is taken up front in the original column
  order, so the checkpoint keeps contiguous groups (no column index is stored).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from quantmatch.plugins.methods.algorithms.blockwise import (
    BlockBatch,
    ProgressFn,
    blocks_prefix,
    forward_until,
    input_hooks,
    linear_modules,
    run_blockwise,
)
from quantmatch.plugins.methods.algorithms.rtn import (
    IntGrid,
    QuantizedWeight,
    fake_quantize,
    group_qparams,
    qparams,
    store,
)

__all__ = [
    "GPTQConfig",
    "Hessian",
    "gptq_block",
    "gptq_model",
    "gptq_quantize",
    "output_error",
    "sequential_stages",
]

GridFn = Callable[[str], IntGrid | None]
"""Module name (as in ``model.named_modules()``) -> its grid, or ``None`` to leave it in float."""


@dataclass(frozen=True)
class GPTQConfig:
    """GPTQ settings: relative dampening, lazy-update width, activation order, true-sequential, and the
    Hessian's shrinkage towards its diagonal (0: textbook GPTQ; see the module docstring)."""

    damp: float = 0.01
    block_size: int = 128
    act_order: bool = False
    true_sequential: bool = True
    shrink: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.shrink <= 1.0:
            raise ValueError(f"shrink is a fraction between 0 and 1, not {self.shrink}")


class Hessian:
    """Running ``2 X^T X / n`` over every row of the inputs seen so far (``X`` is ``[n, columns]``)."""

    def __init__(self, columns: int) -> None:
        self.matrix = torch.zeros(columns, columns, dtype=torch.float32)
        self.rows = 0

    def add(self, x: Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        n = x.shape[0]
        self.matrix *= self.rows / (self.rows + n)
        self.rows += n
        x = x * (2.0 / self.rows) ** 0.5
        self.matrix.addmm_(x.t(), x)


def _inverse_upper_factor(h: Tensor, damp: float) -> Tensor:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1``, dampening more if needed."""
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    mean_diag = torch.mean(torch.diag(h)).item()
    for attempt in range(6):
        try:
            lower = torch.linalg.cholesky(h + eye * (damp * 10**attempt * mean_diag))
            upper: Tensor = torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)
            return upper
        except RuntimeError:  # torch.linalg.LinAlgError: not positive definite
            continue
    raise RuntimeError("GPTQ: the Hessian stays singular even with 1e5 x dampening")


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # The solve is a Cholesky of at most intermediate_size^2 and thousands of small vector ops: thread
    # barriers cost more than the work (3-10x slower with 2 threads on a busy 2-core machine).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def gptq_quantize(weight: Tensor, hessian: Tensor, grid: IntGrid, config: GPTQConfig = GPTQConfig()) -> QuantizedWeight:
    """Quantize one ``[out, in]`` weight with its ``[in, in]`` Hessian; neither argument is modified."""
    with _one_thread():
        return _gptq(weight, hessian, grid, config)


def _gptq(weight: Tensor, hessian: Tensor, grid: IntGrid, config: GPTQConfig) -> QuantizedWeight:
    w = weight.detach().float().clone()
    h = hessian.clone()
    if config.shrink:
        h = (1.0 - config.shrink) * h + config.shrink * torch.diag(torch.diag(h))
    rows, cols = w.shape
    g = grid.group_of(cols)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0

    scale = torch.zeros(rows, cols // g)
    zero = None if grid.symmetric else torch.zeros(rows, cols // g)
    if grid.group_size == 0 or config.act_order:
        s_all, z_all = group_qparams(w, grid)  # per-channel, or static groups in the original order
        scale.copy_(s_all)
        if zero is not None and z_all is not None:
            zero.copy_(z_all)
    perm = torch.argsort(torch.diag(h), descending=True) if config.act_order else torch.arange(cols)
    w, h = w[:, perm], h[perm][:, perm]
    hinv = _inverse_upper_factor(h, config.damp)

    bs = config.block_size if grid.group_size == 0 else max(config.block_size // g, 1) * g
    q = torch.zeros_like(w)
    _column_loop(w, q, hinv, perm.tolist(), scale, zero, grid, bs,
                 lazy_groups=bool(grid.group_size) and not config.act_order)
    q = q[:, torch.argsort(perm)]
    return QuantizedWeight(q.to(weight.dtype), scale, zero, grid)


def _column_loop(w: Tensor, q: Tensor, hinv: Tensor, perm: list[int], scale: Tensor, zero: Tensor | None,
                 grid: IntGrid, bs: int, lazy_groups: bool) -> None:
    """Round ``w`` column by column into ``q`` (both in ``perm`` order), spreading each error over the
    later columns. With ``lazy_groups`` (no act-order) a group's scale is set when its first column comes.
    """
    cols = w.shape[1]
    g = grid.group_of(cols)
    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        w1, hinv1 = w[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            col = i1 + i
            grp = perm[col] // g
            if lazy_groups and col % g == 0:
                s_new, z_new = qparams(w1[:, i:i + g].amin(dim=1), w1[:, i:i + g].amax(dim=1), grid)
                scale[:, grp] = s_new
                if zero is not None and z_new is not None:
                    zero[:, grp] = z_new
            z_col = None if zero is None else zero[:, grp]
            qc = fake_quantize(w1[:, i], scale[:, grp], z_col, grid)
            q[:, col] = qc
            e = (w1[:, i] - qc) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]


def output_error(original: Tensor, quantized: Tensor, hessian: Tensor) -> float:
    """The layer's mean squared output error ``tr((W - Q) H (W - Q)^T) / 2`` (``H = 2 X^T X / n``)."""
    d = (original.float() - quantized.float())
    return float(torch.einsum("oi,ij,oj->", d, hessian, d)) / 2


@torch.no_grad()
def sequential_stages(block: nn.Module, batch: BlockBatch, names: list[str]) -> list[list[str]]:
    """The named linear layers grouped by shared input, in execution order (``[[q, k, v], [o], ...]``)."""
    mods = linear_modules(block)
    seen: list[tuple[str, Tensor]] = []  # the inputs stay referenced, so no two can share an address
    with input_hooks({n: mods[n] for n in names}, lambda n, x: seen.append((n, x))):
        forward_until(block, BlockBatch(batch.hidden[:1], _first_sample(batch.kwargs)))
    stages: list[list[str]] = []
    last: Tensor | None = None
    for name, x in seen:
        if any(name in s for s in stages):
            continue
        if stages and last is not None and x.data_ptr() == last.data_ptr() and x.shape == last.shape:
            stages[-1].append(name)
        else:
            stages.append([name])
        last = x
    return stages


def _first_sample(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments with batched tensors cut to the first sample (for a cheap probe forward)."""
    def cut(v: Any) -> Any:
        if isinstance(v, Tensor) and v.dim() >= 2 and v.shape[0] > 1:
            return v[:1]
        if isinstance(v, tuple):
            return tuple(cut(x) for x in v)
        return v

    return {k: cut(v) for k, v in kwargs.items()}


@torch.no_grad()
def gptq_block(block: nn.Module, batches: list[BlockBatch], grids: dict[str, IntGrid],
               config: GPTQConfig = GPTQConfig()) -> dict[str, QuantizedWeight]:
    """Quantize the block's linear layers named in ``grids`` (names relative to the block) in place.

    Layers sharing an input share one Hessian. True-sequential runs one calibration pass per input
    group, cut short after that group's input; otherwise one pass collects every Hessian.
    """
    mods = linear_modules(block)
    names = [n for n in mods if n in grids]
    if not names:
        return {}
    stages = sequential_stages(block, batches[0], names)
    passes = [[s] for s in stages] if config.true_sequential else [stages]
    out: dict[str, QuantizedWeight] = {}
    for group in passes:
        heads = {s[0]: Hessian(mods[s[0]].in_features) for s in group}
        stop = group[-1][0] if config.true_sequential else None
        def record(n: str, x: Tensor, hs: dict[str, Hessian] = heads) -> None:
            hs[n].add(x)

        with input_hooks({n: mods[n] for n in heads}, record, stop_after=stop):
            for b in batches:
                forward_until(block, b)
        for stage in group:
            h = heads[stage[0]].matrix
            for name in stage:
                out[name] = store(mods[name], gptq_quantize(mods[name].weight, h, grids[name], config))
    return out


@torch.no_grad()
def gptq_model(model: nn.Module, samples: Tensor, grid_for: GridFn, config: GPTQConfig = GPTQConfig(), *,
               batch_size: int = 8, progress: ProgressFn | None = None) -> dict[str, QuantizedWeight]:
    """GPTQ over every decoder block of ``model`` (in place); returns the quantized layers by full name.

    ``samples`` is ``LongTensor[n, seq_len]``; ``grid_for(full_name)`` picks each layer's grid (``None``
    keeps it in float). Layers outside the decoder blocks (the LM head) are left alone.
    """
    result: dict[str, QuantizedWeight] = {}
    prefix = blocks_prefix(model)

    def process(index: int, block: nn.Module, batches: list[BlockBatch]) -> None:
        base = f"{prefix}.{index}."
        grids = {n: g for n in linear_modules(block) if (g := grid_for(base + n)) is not None}
        for name, qw in gptq_block(block, batches, grids, config).items():
            result[base + name] = qw

    run_blockwise(model, samples, process, batch_size=batch_size, progress=progress)
    return result
