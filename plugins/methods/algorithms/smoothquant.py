"""SmoothQuant (Xiao et al., 2022, https://arxiv.org/abs/2211.10438) with W8A8 int8, in plain torch.

Activation outliers sit in a few input channels; weights are smooth. Per decoder block and per
:class:`~.scaling.ScaleGroup` (norm -> q/k/v, norm -> gate/up, up -> down), the per-channel factor
``s = max|X|^alpha / max|W|^(1 - alpha)`` moves difficulty from activations to weights:
``X / s`` is folded into the preceding op and ``W * s`` into the linears, an exact
re-parametrisation of the float model. The strength ``alpha`` is fixed, or searched per group (the
value whose int8 outputs are closest to the float outputs on a sample of calibration tokens). Then
every linear gets int8 weights (symmetric, per output channel) and int8 activations: per-token
dynamic scales, or one static per-tensor scale from the calibration tokens seen by the smoothed,
weight-quantized block (``max|X| / 127.5``, optionally clipped where that lowers the output error).
Smoothing off gives the naive W8A8 baseline.

Static scales have one exception by default: layers matching ``dynamic_layers`` (``down_proj``) keep
per-token dynamic activations. Their input is the SwiGLU product, whose rare huge values (the
"massive activations" of Sun et al., 2024, https://arxiv.org/abs/2402.17762) a single calibrated
scale either clips or covers with a step too coarse for every other token: on SmolLM2-135M, static
``down_proj`` scales cost +15% perplexity, per-token ones +0.4% (docs/benchmarks.md, "Methods II").
``dynamic_layers=()`` makes every layer static.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
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
from quantmatch.plugins.methods.algorithms.rtn import (
    IntGrid,
    QuantizedWeight,
    fake_quantize_per_token,
    fake_quantize_static,
    rtn,
    static_activation_scale,
    store,
)
from quantmatch.plugins.methods.algorithms.scaling import fold_scales, llama_scale_groups

__all__ = ["W8", "SmoothQuantConfig", "SmoothQuantResult", "smooth_block", "smooth_model", "smoothquant_block",
           "smoothquant_model"]

W8 = IntGrid(8, 0, True)
"""The weight grid of W8A8: int8, symmetric, one scale per output channel."""


@dataclass(frozen=True)
class SmoothQuantConfig:
    """SmoothQuant settings.

    ``alpha``: migration strength (0: none, 1: all onto the weights); ``None`` searches ``alphas``
    per scale group, keeping the one whose int8 linear outputs are closest to the float ones on
    ``sample_tokens`` calibration tokens. ``smooth``: fold scales at all (off: naive W8A8).
    ``static``: calibrate static per-tensor activation scales (else per-token dynamic at run time);
    with ``clip`` each static scale is the clipped range (from ``clip_ratios``) with the smallest
    output error instead of the full ``max|X|``. With ``static``, layers matching a pattern of
    ``dynamic_layers`` (names relative to the block, fnmatch) keep per-token dynamic activations.
    """

    alpha: float | None = None
    alphas: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    smooth: bool = True
    static: bool = False
    clip: bool = False
    clip_ratios: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
    sample_tokens: int = 2048
    dynamic_layers: tuple[str, ...] = ("mlp.down_proj",)

    def is_static(self, name: str) -> bool:
        """Whether the block's layer ``name`` gets a static input scale."""
        return self.static and not any(fnmatch.fnmatchcase(name, p) for p in self.dynamic_layers)


@dataclass
class SmoothQuantResult:
    """Quantized weights and, for static activations, each layer's input scale (layers without one run
    per-token dynamic activations); by module name.

    ``smoothing`` holds the folded factors by ``prev`` op, ``alphas`` the strength chosen for each.
    """

    weights: dict[str, QuantizedWeight] = field(default_factory=dict)
    input_scales: dict[str, Tensor] = field(default_factory=dict)
    smoothing: dict[str, Tensor] = field(default_factory=dict)
    alphas: dict[str, float] = field(default_factory=dict)


@dataclass
class _Inputs:
    """Per input channel ``max|x|`` over every calibration token, and evenly spaced sample rows."""

    absmax: Tensor
    rows: Tensor


def _collect(block: nn.Module, batches: list[BlockBatch], names: list[str], sample_tokens: int,
             outputs: list[BlockBatch] | None = None) -> dict[str, _Inputs]:
    """One pass over the calibration batches: :class:`_Inputs` of the named linear layers' inputs.

    The block's outputs are appended to ``outputs`` when given (the pass doubles as propagation).
    """
    lins = linear_modules(block)
    total = sum(b.hidden.shape[0] * b.hidden.shape[1] for b in batches)
    step = max(1, total // max(sample_tokens, 1))
    absmax: dict[str, Tensor] = {}
    rows: dict[str, list[Tensor]] = {n: [] for n in names}
    offset = [0]

    def make(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            m = x.abs().amax(dim=0)
            absmax[name] = torch.maximum(absmax[name], m) if name in absmax else m
            first = (-offset[0]) % step
            rows[name].append(x[first::step])
        return hook

    handles = [lins[n].register_forward_pre_hook(make(n)) for n in names]
    try:
        for b in batches:
            out = block(b.hidden, **b.kwargs)
            offset[0] += b.hidden.shape[0] * b.hidden.shape[1]
            if outputs is not None:
                outputs.append(BlockBatch(block_output(out), b.kwargs))
    finally:
        for h in handles:
            h.remove()
    return {n: _Inputs(absmax[n], torch.cat(rows[n])) for n in names}


def _fake_act(x: Tensor, absmax: Tensor | None) -> Tensor:
    """Int8 activations: static with the scale of ``absmax`` (per tensor), or per token for ``None``."""
    return fake_quantize_per_token(x) if absmax is None else fake_quantize_static(x, static_activation_scale(absmax))


def _smoothing(x_max: Tensor, w_max: Tensor, alpha: float) -> Tensor:
    s = (x_max.pow(alpha) / w_max.pow(1 - alpha).clamp(min=1e-5)).clamp(min=1e-5)
    return torch.where((x_max > 0) & (w_max > 0), s, torch.ones_like(s))


def _w8a8_error(x: Tensor, x_max: Tensor, weights: list[Tensor], s: Tensor, static: bool) -> float:
    """Mean squared error of the int8 outputs of ``x @ W^T`` for every ``W`` after smoothing by ``s``."""
    xq = _fake_act(x / s, (x_max / s).max() if static else None)
    err = 0.0
    for w in weights:
        wq = rtn(w.float() * s, W8).weight
        err += float((xq @ wq.t() - x @ w.float().t()).pow(2).mean())
    return err


@torch.no_grad()
def smooth_block(block: nn.Module, batches: list[BlockBatch], config: SmoothQuantConfig,
                 only: set[str] | None = None) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Fold SmoothQuant factors into ``block`` (its float function is unchanged).

    Returns the factors and the strength used, by ``prev`` op. ``only`` limits smoothing to groups
    whose linears are all in it (the quantized ones).
    """
    mods = dict(block.named_modules())
    groups = [g for g in llama_scale_groups(block) if only is None or all(n in only for n in g.linears)]
    seen = _collect(block, batches, [g.linears[0] for g in groups], config.sample_tokens)
    factors: dict[str, Tensor] = {}
    strengths: dict[str, float] = {}
    for g in groups:
        weights = [mods[n].weight.detach() for n in g.linears]
        w_max = torch.cat([w.abs().float() for w in weights]).amax(dim=0)
        stats = seen[g.linears[0]]
        candidates = (config.alpha,) if config.alpha is not None else config.alphas
        alpha = min(candidates, key=lambda a: _w8a8_error(stats.rows, stats.absmax, weights,
                                                          _smoothing(stats.absmax, w_max, a),
                                                          config.is_static(g.linears[0])))
        s = _smoothing(stats.absmax, w_max, alpha)
        fold_scales(block, g, s)
        factors[g.prev], strengths[g.prev] = s, alpha
    return factors, strengths


def _static_scale(inputs: _Inputs, weight: Tensor, config: SmoothQuantConfig) -> Tensor:
    """The per-tensor input scale: ``max|x|`` shrunk by the clip ratio with the smallest output error."""
    top = inputs.absmax.max()
    if not config.clip:
        return static_activation_scale(top).reshape(1)
    x, w = inputs.rows, weight.float()
    ref = x @ w.t()
    best = min(config.clip_ratios, key=lambda r: float((_fake_act(x, top * r) @ w.t() - ref).pow(2).mean()))
    return static_activation_scale(top * best).reshape(1)


@torch.no_grad()
def smoothquant_block(block: nn.Module, batches: list[BlockBatch], names: list[str],
                      config: SmoothQuantConfig = SmoothQuantConfig(),
                      outputs: list[BlockBatch] | None = None) -> SmoothQuantResult:
    """Smooth ``block``, quantize the named linears to int8 and, if static, calibrate input scales.

    With static scales, the calibration pass runs the quantized block anyway: its outputs are
    appended to ``outputs`` when given.
    """
    res = SmoothQuantResult()
    if config.smooth:
        res.smoothing, res.alphas = smooth_block(block, batches, config, set(names))
    lins = linear_modules(block)
    for n in names:
        res.weights[n] = store(lins[n], rtn(lins[n].weight, W8))
    static = [n for n in names if config.is_static(n)]
    if static:
        seen = _collect(block, batches, static, config.sample_tokens, outputs)
        res.input_scales = {n: _static_scale(seen[n], lins[n].weight, config) for n in static}
    return res


@torch.no_grad()
def smoothquant_model(model: nn.Module, samples: Tensor, include: Callable[[str], bool],
                      config: SmoothQuantConfig = SmoothQuantConfig(), *, batch_size: int = 8,
                      progress: ProgressFn | None = None) -> SmoothQuantResult:
    """SmoothQuant W8A8 over every decoder block (in place); results keyed by full module name.

    ``include(full_name)`` selects the linear layers to quantize; the LM head is never touched.
    """
    prefix = blocks_prefix(model)
    total = SmoothQuantResult()

    def process(index: int, block: nn.Module, batches: list[BlockBatch]) -> list[BlockBatch] | None:
        base = f"{prefix}.{index}."
        names = [n for n in linear_modules(block) if include(base + n)]
        outputs: list[BlockBatch] = []
        res = smoothquant_block(block, batches, names, config, outputs)
        total.weights.update({base + k: v for k, v in res.weights.items()})
        total.input_scales.update({base + k: v for k, v in res.input_scales.items()})
        total.smoothing.update({base + k: v for k, v in res.smoothing.items()})
        total.alphas.update({base + k: v for k, v in res.alphas.items()})
        return outputs or None

    run_blockwise(model, samples, process, batch_size=batch_size, progress=progress)
    return total


@torch.no_grad()
def smooth_model(model: nn.Module, samples: Tensor, config: SmoothQuantConfig = SmoothQuantConfig(static=True), *,
                 batch_size: int = 8, progress: ProgressFn | None = None) -> dict[str, float]:
    """Fold SmoothQuant factors into every decoder block (in place) and quantize nothing: for runtimes
    that quantize the smoothed float model themselves (ONNX Runtime). Returns the strength chosen per
    ``prev`` op (full names); ``config.static`` picks the error the strength search minimises."""
    prefix = blocks_prefix(model)
    alphas: dict[str, float] = {}

    def process(index: int, block: nn.Module, batches: list[BlockBatch]) -> None:
        _, chosen = smooth_block(block, batches, config)
        alphas.update({f"{prefix}.{index}.{k}": v for k, v in chosen.items()})

    run_blockwise(model, samples, process, batch_size=batch_size, progress=progress)
    return alphas
