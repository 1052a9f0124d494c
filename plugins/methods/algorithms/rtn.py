"""Integer grids, round-to-nearest and fake quantization: the arithmetic every method shares.

The grid is compressed-tensors' own, so a checkpoint written from these numbers decodes to exactly
the weights computed here: codes are signed, ``q in [-2^(b-1), 2^(b-1) - 1]``, and a weight is
``(q - zero_point) * scale``. Symmetric grids have no zero point and ``scale = absmax / ((2^b - 1) / 2)``
(the negative end reaches the extra code); asymmetric grids span ``[min(w, 0), max(w, 0)]`` with an
integer zero point. Scales and zero points are per output row and per group of ``group_size`` input
columns (one group spanning all columns when ``group_size`` is 0: per-channel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "IntGrid",
    "QuantizedWeight",
    "dequantize",
    "fake_quantize",
    "fake_quantize_per_token",
    "fake_quantize_static",
    "group_qparams",
    "qparams",
    "quantize_codes",
    "rtn",
    "static_activation_scale",
    "store",
]

_EPS = 1e-10


@dataclass(frozen=True)
class IntGrid:
    """An integer weight grid: ``bits`` (2-8), ``group_size`` (0: per output channel), symmetry."""

    bits: int
    group_size: int = 0
    symmetric: bool = True

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"integer grids have 2 to 8 bits, not {self.bits}")
        if self.group_size < 0:
            raise ValueError(f"group size must be 0 (per-channel) or positive, not {self.group_size}")

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def group_of(self, columns: int) -> int:
        """Columns per group for a matrix with ``columns`` input columns (all of them per-channel)."""
        g = self.group_size or columns
        if columns % g:
            raise ValueError(f"group size {g} does not divide {columns} input columns")
        return g

    def __str__(self) -> str:
        g = f"g{self.group_size}" if self.group_size else "per-channel"
        return f"int{self.bits} {g} {'sym' if self.symmetric else 'asym'}"


@dataclass
class QuantizedWeight:
    """A weight on an integer grid: the dequantized ``weight`` and the parameters that encode it.

    ``scale`` and ``zero_point`` are ``[out, groups]`` (``groups`` is 1 per-channel); ``zero_point``
    is ``None`` for symmetric grids. ``weight`` equals ``dequantize(codes(), scale, zero_point)``.
    """

    weight: Tensor
    scale: Tensor
    zero_point: Tensor | None
    grid: IntGrid

    def codes(self) -> Tensor:
        """The integer codes (``int8``), recomputed from the dequantized weight."""
        w = self.weight.float()
        g = self.grid.group_of(w.shape[1])
        s = self.scale.float().repeat_interleave(g, dim=1)
        z = None if self.zero_point is None else self.zero_point.float().repeat_interleave(g, dim=1)
        return quantize_codes(w, s, z, self.grid).to(torch.int8)


def qparams(w_min: Tensor, w_max: Tensor, grid: IntGrid) -> tuple[Tensor, Tensor | None]:
    """Scale and zero point for ranges ``[w_min, w_max]`` (any matching shapes), as compressed-tensors
    computes them; the zero point is ``None`` for symmetric grids."""
    lo = torch.clamp(w_min, max=0.0)
    hi = torch.clamp(w_max, min=0.0)
    span = float(grid.qmax - grid.qmin)
    if grid.symmetric:
        scale = torch.maximum(hi, -lo) / (span / 2)
        return scale.clamp(min=_EPS), None
    scale = ((hi - lo) / span).clamp(min=_EPS)
    zero = torch.round(grid.qmin - lo / scale).clamp(grid.qmin, grid.qmax)
    return scale, zero


def quantize_codes(w: Tensor, scale: Tensor, zero: Tensor | None, grid: IntGrid) -> Tensor:
    """Integer codes (as floats) of ``w`` for broadcastable ``scale``/``zero``."""
    x = w / scale
    if zero is not None:
        x = x + zero
    return torch.round(x).clamp(grid.qmin, grid.qmax)


def dequantize(codes: Tensor, scale: Tensor, zero: Tensor | None) -> Tensor:
    """``(codes - zero) * scale``."""
    return (codes - zero) * scale if zero is not None else codes * scale


def fake_quantize(w: Tensor, scale: Tensor, zero: Tensor | None, grid: IntGrid) -> Tensor:
    """Round ``w`` onto the grid and back to floats."""
    return dequantize(quantize_codes(w, scale, zero, grid), scale, zero)


def group_qparams(w: Tensor, grid: IntGrid, clip: float | Tensor = 1.0) -> tuple[Tensor, Tensor | None]:
    """Min/max scale and zero point of every (row, group) of ``w [out, in]``: ``[out, groups]`` each.

    ``clip`` shrinks each range (a float, or ``[out, groups]`` ratios) before the parameters are taken.
    """
    rows, cols = w.shape
    g = grid.group_of(cols)
    wg = w.float().reshape(rows, cols // g, g)
    return qparams(wg.amin(dim=2) * clip, wg.amax(dim=2) * clip, grid)


def _fake_quantize_groups(w: Tensor, scale: Tensor, zero: Tensor | None, grid: IntGrid) -> Tensor:
    rows, cols = w.shape
    g = grid.group_of(cols)
    wg = w.float().reshape(rows, cols // g, g)
    z = None if zero is None else zero.unsqueeze(2)
    return fake_quantize(wg, scale.unsqueeze(2), z, grid).reshape(rows, cols)


def rtn(w: Tensor, grid: IntGrid, clip: float | Tensor = 1.0) -> QuantizedWeight:
    """Round-to-nearest: min/max parameters per (row, group), optionally clipped, then rounding."""
    scale, zero = group_qparams(w, grid, clip)
    deq = _fake_quantize_groups(w, scale, zero, grid)
    return QuantizedWeight(deq.to(w.dtype), scale, zero, grid)


@torch.no_grad()
def store(layer: torch.nn.Linear, qw: QuantizedWeight) -> QuantizedWeight:
    """Write ``qw`` into ``layer``; the returned record's ``weight`` is the layer's own tensor, so keeping
    the records of every layer costs scales and zero points, not a second copy of the model."""
    layer.weight.copy_(qw.weight)
    return QuantizedWeight(layer.weight.data, qw.scale, qw.zero_point, qw.grid)


# ---- activations (8-bit, symmetric, compressed-tensors' convention) ----------------------------------
def static_activation_scale(absmax: Tensor | float, bits: int = 8) -> Tensor:
    """The per-tensor scale that maps ``absmax`` to the grid's edge: ``absmax / ((2^b - 1) / 2)``."""
    a = torch.as_tensor(absmax, dtype=torch.float32)
    scale: Tensor = (a / ((2**bits - 1) / 2)).clamp(min=_EPS)
    return scale


def fake_quantize_per_token(x: Tensor, bits: int = 8) -> Tensor:
    """Dynamic symmetric quantization with one scale per token (the last dimension is features)."""
    scale = static_activation_scale(x.detach().abs().amax(dim=-1, keepdim=True).float(), bits).to(x.dtype)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return torch.round(x / scale).clamp(lo, hi) * scale


def fake_quantize_static(x: Tensor, scale: Tensor | float, bits: int = 8) -> Tensor:
    """Static symmetric quantization with one calibrated scale for the whole tensor."""
    s = torch.as_tensor(scale, dtype=x.dtype)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return torch.round(x / s).clamp(lo, hi) * s
