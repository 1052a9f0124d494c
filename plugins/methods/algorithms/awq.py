"""AWQ (Lin et al., 2023, https://arxiv.org/abs/2306.00978) in plain torch, on the CPU.

Per decoder block, following the reference implementation (llm-awq / AutoAWQ):

1. Statistics: the mean magnitude of every input channel of each :class:`~.scaling.ScaleGroup`,
   over all calibration tokens (from the unquantized block).
2. Scale search: for ``ratio`` in ``0, 1/n, ..., (n-1)/n`` the per-channel scale
   ``s = mean|x|^ratio / mean|w~|^(1-ratio)`` (``w~``: weights normalised per quantization group),
   normalised to geometric mean 1; the group's linears are quantized as ``Q(W * s) / s`` and the
   ``inspect`` module's output error on the search samples picks the best ``s``.
3. The best scales are folded into the preceding op (RMSNorm, or ``up_proj`` for ``down_proj``), so the
   float model computes the same function before any rounding.
4. Clipping search: per output row and group, the range shrink ``1 - k/n`` (``k < max_shrink * n``)
   that minimises the layer's output error on a sample of input tokens (not for q/k, whose error the
   attention softmax reshapes).
5. Round-to-nearest onto the (asymmetric) grid with the chosen ranges.

The next block's inputs are the outputs of the unmodified block, as in the reference implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from quantmatch.plugins.methods.algorithms.blockwise import (
    BlockBatch,
    ProgressFn,
    block_output,
    blocks_prefix,
    linear_modules,
    run_blockwise,
)
from quantmatch.plugins.methods.algorithms.rtn import IntGrid, QuantizedWeight, rtn, store
from quantmatch.plugins.methods.algorithms.scaling import ScaleGroup, fold_scales, llama_scale_groups

__all__ = ["AWQConfig", "awq_block", "awq_model", "search_clip"]

GridFn = Callable[[str], IntGrid | None]
Call = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class AWQConfig:
    """AWQ settings.

    ``n_grid`` scale ratios are tried; ``search_samples`` calibration samples (the first ones; all when
    ``None``) measure each candidate; ``duo_scaling`` divides by the weight magnitude too (AutoAWQ's
    default); ``clip`` enables the clipping search over ``clip_grid`` steps down to ``1 - max_shrink``
    on ``clip_tokens`` evenly spaced input tokens.
    """

    n_grid: int = 20
    search_samples: int | None = 4
    duo_scaling: bool = True
    clip: bool = True
    clip_grid: int = 20
    max_shrink: float = 0.5
    clip_tokens: int = 512


def _out(y: Any) -> Tensor:
    hidden: Tensor = y[0] if isinstance(y, (tuple, list)) else y
    return hidden


def _weight_mean(weights: list[Tensor], group_size: int) -> Tensor:
    """Mean over output rows of ``|w|`` normalised by its quantization group's max (per input channel)."""
    w = torch.cat([x.float() for x in weights], dim=0)
    g = group_size or w.shape[1]
    wg = w.abs().reshape(-1, g)
    wg = wg / (wg.amax(dim=1, keepdim=True) + 1e-6)
    return wg.reshape(w.shape).mean(dim=0)


@torch.no_grad()
def _search_scale(mods: dict[str, nn.Module], group: ScaleGroup, grids: dict[str, IntGrid], x_mean: Tensor,
                  calls: list[Call], config: AWQConfig) -> tuple[Tensor, float]:
    """The scale (and its ratio) minimising the inspect module's output error with quantized linears."""
    inspect = mods[group.inspect]
    linears: list[Any] = [mods[n] for n in group.linears]
    originals = [lin.weight.detach().clone() for lin in linears]
    reference = [_out(inspect(*a, **k)) for a, k in calls]
    w_mean = _weight_mean(originals, grids[group.linears[0]].group_size)
    best, best_s, best_ratio = float("inf"), torch.ones_like(x_mean), 0.0
    for i in range(config.n_grid):
        ratio = i / config.n_grid
        if config.duo_scaling:
            s = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
        else:
            s = x_mean.pow(ratio).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        for lin, w0, name in zip(linears, originals, group.linears):
            lin.weight.copy_(rtn(w0.float() * s, grids[name]).weight / s)
        loss = sum(float((_out(inspect(*a, **k)) - ref).float().pow(2).mean()) for (a, k), ref in
                   zip(calls, reference)) / len(calls)
        if loss < best:
            best, best_s, best_ratio = loss, s.clone(), ratio
    for lin, w0 in zip(linears, originals):
        lin.weight.copy_(w0)
    return best_s, best_ratio


@torch.no_grad()
def search_clip(weight: Tensor, x: Tensor, grid: IntGrid, config: AWQConfig = AWQConfig()) -> Tensor:
    """Per (row, group) range ratios ``[out, groups]`` minimising ``|x (W - Q(W))^T|`` on tokens ``x``."""
    w = weight.float()
    rows, cols = w.shape
    g = grid.group_of(cols)
    ng = cols // g
    xg = x.reshape(-1, cols).float().reshape(-1, ng, g).transpose(0, 1)  # [groups, tokens, g]
    wg = w.reshape(rows, ng, g).permute(1, 2, 0)  # [groups, g, rows]
    reference = torch.bmm(xg, wg)  # [groups, tokens, rows]
    best_err = torch.full((ng, rows), float("inf"))
    best_ratio = torch.ones(ng, rows)
    for k in range(int(config.max_shrink * config.clip_grid)):
        ratio = 1 - k / config.clip_grid
        q = rtn(w, grid, clip=ratio).weight.reshape(rows, ng, g).permute(1, 2, 0)
        err = (torch.bmm(xg, q) - reference).pow(2).mean(dim=1)  # [groups, rows]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, torch.full_like(best_ratio, ratio), best_ratio)
    return best_ratio.t().contiguous()


def _first_samples(batches: list[BlockBatch], samples: int | None) -> list[BlockBatch]:
    """The leading micro-batches holding at least ``samples`` samples (all of them for ``None``)."""
    if samples is None:
        return list(batches)
    out, seen = [], 0
    for b in batches:
        if seen >= samples:
            break
        out.append(b)
        seen += b.hidden.shape[0]
    return out


def _even_rows(xs: list[Tensor], count: int) -> Tensor:
    x = torch.cat([t.reshape(-1, t.shape[-1]) for t in xs])
    step = max(x.shape[0] // count, 1)
    return x[::step][:count]


@torch.no_grad()
def awq_block(block: nn.Module, batches: list[BlockBatch], grids: dict[str, IntGrid],
              config: AWQConfig = AWQConfig(), *, quantize: bool = True,
              ) -> tuple[dict[str, QuantizedWeight], list[BlockBatch]]:
    """Search and fold AWQ scales into ``block``, then clip and quantize the layers named in ``grids``.

    Returns the quantized layers and the unmodified block's outputs (the next block's inputs, from
    the statistics pass). With ``quantize=False`` only the scales are searched and folded (the
    block's float function is unchanged) and no layer is returned.
    """
    mods = dict(block.named_modules())
    lins = linear_modules(block)
    groups = [gr for gr in llama_scale_groups(block) if all(n in grids for n in gr.linears)]
    search_ids = {id(b) for b in _first_samples(batches, config.search_samples)}
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    calls: dict[str, list[Call]] = {gr.inspect: [] for gr in groups}
    inputs: dict[str, list[Tensor]] = {n: [] for n in grids if n in lins}
    current: list[bool] = [False]
    firsts = {gr.linears[0] for gr in groups}

    def on_linear(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            if name in firsts:
                flat = x.reshape(-1, x.shape[-1]).float()
                sums[name] = sums.get(name, 0) + flat.abs().sum(dim=0)
                counts[name] = counts.get(name, 0) + flat.shape[0]
            if current[0] and name in inputs:
                inputs[name].append(x)
        return hook

    def on_inspect(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if current[0]:
                calls[name].append((tuple(a.detach() if isinstance(a, Tensor) else a for a in args), dict(kwargs)))
        return hook

    handles = [lins[n].register_forward_pre_hook(on_linear(n)) for n in set(inputs) | firsts]
    handles += [mods[n].register_forward_pre_hook(on_inspect(n), with_kwargs=True) for n in calls]
    outputs = []
    try:
        for b in batches:
            current[0] = id(b) in search_ids
            out = block(b.hidden, **b.kwargs)
            outputs.append(BlockBatch(block_output(out), b.kwargs))
    finally:
        for h in handles:
            h.remove()

    for gr in groups:
        x_mean = sums[gr.linears[0]] / counts[gr.linears[0]]
        s, _ratio = _search_scale(mods, gr, grids, x_mean, calls[gr.inspect], config)
        fold_scales(block, gr, s)
        for n in gr.linears:
            inputs[n] = [x / s.to(x.dtype) for x in inputs[n]]
        calls[gr.inspect].clear()
    if not quantize:
        return {}, outputs
    result: dict[str, QuantizedWeight] = {}
    for name, grid in grids.items():
        lin = lins[name]
        clip: float | Tensor = 1.0
        if config.clip and not name.endswith(("q_proj", "k_proj")) and inputs.get(name):
            clip = search_clip(lin.weight, _even_rows(inputs[name], config.clip_tokens), grid, config)
        result[name] = store(lin, rtn(lin.weight, grid, clip=clip))
    return result, outputs


@torch.no_grad()
def awq_model(model: nn.Module, samples: Tensor, grid_for: GridFn, config: AWQConfig = AWQConfig(), *,
              batch_size: int = 8, quantize: bool = True, progress: ProgressFn | None = None,
              ) -> dict[str, QuantizedWeight]:
    """AWQ over every decoder block of ``model`` (in place); the quantized layers by full name.

    ``samples`` is ``LongTensor[n, seq_len]``; ``grid_for(full_name)`` picks each layer's grid
    (``None`` keeps it in float). ``config.search_samples`` is rounded up to whole micro-batches.
    """
    prefix = blocks_prefix(model)
    result: dict[str, QuantizedWeight] = {}

    def process(index: int, block: nn.Module, batches: list[BlockBatch]) -> list[BlockBatch]:
        base = f"{prefix}.{index}."
        grids = {n: g for n in linear_modules(block) if (g := grid_for(base + n)) is not None}
        layers, outputs = awq_block(block, batches, grids, config, quantize=quantize)
        result.update({base + name: qw for name, qw in layers.items()})
        return outputs

    run_blockwise(model, samples, process, batch_size=batch_size, progress=progress)
    return result
