"""Weight-only int4/int8 checkpoints on PyTorch's packed CPU kernels, straight from compressed-tensors codes.

:class:`Int4PackedLinear` runs ``torch.ops.aten._weight_int4pack_mm_for_cpu`` on nibbles packed by
``_convert_weight_to_int4pack_for_cpu``; :class:`Int8PackedLinear` runs ``_weight_int8pack_mm`` on the
int8 codes. :func:`pack_weight_only` swaps a loaded compressed-tensors checkpoint's weight-only linear
layers for them, reading the checkpoint's own codes, scales and zero points (from the layer's
compressed-tensors state, or from the safetensors when transformers dequantized the layer at load), so
the weights are the checkpoint's, not re-rounded ones.

The kernels' contracts on CPU (torch 2.13, checked against its source and empirically):

- int4: codes as unsigned nibbles ``u`` in an int32 ``[N, K]`` tensor, packed to uint8 ``[N, K/2]`` in
  a layout tied to this CPU's vector width (AVX-512, AVX2 or scalar; ``innerKTiles`` is ignored on
  CPU), so packed buffers are built at load and never saved. ``qScaleAndZeros`` is ``[K/g, N, 2]`` in
  the activation dtype and a weight is ``(u - 8) * scale + zero``. Group sizes ``g`` are 32, 64, 128
  or 256 and must divide ``K``; ``N`` must be a multiple of 16.
- int8: int8 ``[N, K]`` codes and one scale per output row (in the activation dtype); ``y = x @ (q * s)^T``.
  No zero point and no groups.
- Both take float32, bfloat16 or float16 activations, but only bfloat16 has vectorized x86 kernels:
  float32 and float16 run a scalar loop, 7-30x slower than a float32 ``nn.Linear`` for one token and
  40-120x for a 128-token prefill (SmolLM2 shapes, 2 threads, AVX-512), while bfloat16 matches
  ``nn.Linear`` for one token on small matrices. So activations are cast to bfloat16 (the default
  ``dtype``) around the kernel, which accumulates in float32; the output is cast back to the input
  dtype, so logits stay float32. The cost is bfloat16 rounding of the activations, of the scales (a
  checkpoint's float16 scales lose 3 mantissa bits) and of each layer's output: ~3e-3 relative per
  layer, against an int4 grid's ~1e-1 step (SmolLM2-135M GPTQ w4a16-g64, WikiText-2 perplexity 33.10
  packed vs 33.07 decompressed in float32). ``dtype=torch.float32`` is exact (and slow). A SmolLM2
  decode step is ~1.7x faster with int4 and ~1.35x with int8 than decompressed float32; a 128-token
  prefill is ~1.5x slower (the kernels work in blocks of 4 rows, without the AMX/oneDNN float GEMM).
  ``_weight_int8pack_mm`` with bfloat16 activations also needs ``K % 16 == 0`` (other ``K`` read out
  of bounds: wrong results or a crash).

Our grid (compressed-tensors'): signed codes ``q in [-2^(b-1), 2^(b-1) - 1]``, ``w = (q - z) * s``, scale
and zero point ``[out, groups]`` (one group per-channel, one scale per-tensor). The mapping:

- 1-4 bit grids -> int4: ``u = q + 8``, ``scale = s``, ``zero = -z * s`` (0 when symmetric). Codes of
  fewer than 4 bits fit the nibble range unchanged, so int2/int3 grids run exactly on the int4 kernel. A
  group size that is not 32-256 but a multiple of one (and per-channel/per-tensor grids: one group of
  ``K``) is expressed at the largest supported size dividing both it and ``K``, repeating the scales.
  Left decompressed: groups that are not a multiple of 32 (g8, g16), ``K`` not a multiple of 32, ``N``
  not a multiple of 16, activation-order groups (``weight_g_idx`` other than contiguous blocks).
- 5-8 bit symmetric per-channel (or per-tensor) grids -> int8: the codes and ``s`` as they are.
  Left decompressed: grouped int8 (one scale per row only), asymmetric int8 (no zero point), and
  ``K % 16 != 0`` under bfloat16.

Layers with quantized activations (W8A8: :mod:`.int8_runtime`), float weight formats (FP8, NVFP4) and
the LM head (runners read its weight; quantmatch checkpoints keep it float) are never packed. Everything
not packed is left to :func:`~.int8_runtime.decompress_weight_only`. ``QUANTMATCH_PACKED_KERNELS=0``
turns packing off (the decompressed path, for comparisons).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["INT4_GROUP_SIZES", "Int4PackedLinear", "Int8PackedLinear", "PackResult", "int4_group_size",
           "pack_weight_only", "packing_enabled"]

INT4_GROUP_SIZES = (256, 128, 64, 32)
"""The int4 kernel's group sizes, largest first."""

_ENV = "QUANTMATCH_PACKED_KERNELS"
_INT4 = "_weight_int4pack_mm_for_cpu"
_INT8 = "_weight_int8pack_mm"
_SUFFIXES = ("weight", "weight_packed", "weight_shape", "weight_scale", "weight_zero_point", "weight_g_idx")
_MISMATCH = 1e-2  # checkpoint codes vs the weight transformers dequantized, relative to the layer's max |w|


def packing_enabled() -> bool:
    """False when ``QUANTMATCH_PACKED_KERNELS`` is ``0``/``off``/``false``/``no``."""
    return os.environ.get(_ENV, "").strip().lower() not in ("0", "off", "false", "no")


def int4_group_size(in_features: int, group_size: int) -> int | None:
    """The int4 kernel's group size for a grid of ``group_size`` columns (``in_features`` per-channel):
    the largest of 256/128/64/32 dividing both, or ``None``."""
    return next((g for g in INT4_GROUP_SIZES if group_size % g == 0 and in_features % g == 0), None)


def _flat(x: Tensor, in_features: int, dtype: torch.dtype) -> Tensor:
    return x.reshape(-1, in_features).to(dtype).contiguous()


def _unflat(y: Tensor, x: Tensor, bias: Tensor | None, out_features: int) -> Tensor:
    """The kernel's ``[rows, out]`` result back in ``x``'s dtype and leading shape, plus the bias."""
    y = y.to(x.dtype)
    if bias is not None:
        y = y + bias.to(x.dtype)
    return y.reshape(*x.shape[:-1], out_features)


class Int4PackedLinear(nn.Module):
    """``y = x @ W^T + b`` with ``W = (q - zero_point) * scale`` held as packed nibbles.

    ``codes``: integers in [-8, 7], ``[out, in]``; ``scale``: ``[out, groups]`` (``groups`` divides
    ``in``); ``zero_point``: like ``scale`` (integers) or ``None`` (symmetric); ``dtype``: the
    activation dtype the kernel runs in (see the module docstring). Raises ``ValueError`` for shapes
    the kernel cannot take.
    """

    weight_int4: Tensor
    scale_and_zero: Tensor
    bias: Tensor | None

    def __init__(self, codes: Tensor, scale: Tensor, zero_point: Tensor | None = None, bias: Tensor | None = None,
                 dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        n, k = codes.shape
        scale = scale.detach().float().reshape(n, -1)
        if k % scale.shape[1]:
            raise ValueError(f"{scale.shape[1]} scale groups do not divide {k} input columns")
        group = int4_group_size(k, k // scale.shape[1])
        if group is None:
            raise ValueError(f"group size {k // scale.shape[1]} (in_features {k}) is not a multiple of 32")
        if n % 16:
            raise ValueError(f"out_features {n} is not a multiple of 16")
        lo, hi = torch.aminmax(codes)
        if int(lo) < -8 or int(hi) > 7:
            raise ValueError("int4 codes must lie in [-8, 7]")
        self.in_features, self.out_features, self.group_size = k, n, group
        zero = torch.zeros_like(scale) if zero_point is None else -zero_point.detach().float().reshape(n, -1) * scale
        repeat = k // scale.shape[1] // group
        scale, zero = scale.repeat_interleave(repeat, 1), zero.repeat_interleave(repeat, 1)
        nibbles = (codes.to(torch.int32) + 8).contiguous()
        self.register_buffer("weight_int4", torch.ops.aten._convert_weight_to_int4pack_for_cpu(nibbles, 2))
        self.register_buffer("scale_and_zero", torch.stack([scale.t(), zero.t()], -1).to(dtype).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            _flat(x, self.in_features, self.scale_and_zero.dtype), self.weight_int4, self.group_size,
            self.scale_and_zero)
        return _unflat(y, x, self.bias, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"dtype={str(self.scale_and_zero.dtype).removeprefix('torch.')}, kernel={_INT4}")


class Int8PackedLinear(nn.Module):
    """``y = x @ (q * scale)^T + b``: int8 ``codes`` ``[out, in]``, one ``scale`` per output row.

    ``dtype``: the activation dtype the kernel runs in (see the module docstring). Raises
    ``ValueError`` for shapes the kernel cannot take.
    """

    weight_int8: Tensor
    scale: Tensor
    bias: Tensor | None

    def __init__(self, codes: Tensor, scale: Tensor, bias: Tensor | None = None,
                 dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        n, k = codes.shape
        if scale.numel() != n:
            raise ValueError(f"expected one scale per output row ({n}), got {scale.numel()}")
        if dtype == torch.bfloat16 and k % 16:
            raise ValueError(f"in_features {k} is not a multiple of 16 (bfloat16 _weight_int8pack_mm)")
        lo, hi = torch.aminmax(codes.to(torch.int32))
        if int(lo) < -128 or int(hi) > 127:
            raise ValueError("int8 codes must lie in [-128, 127]")
        self.in_features, self.out_features = k, n
        self.register_buffer("weight_int8", codes.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.detach().float().reshape(n).to(dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = torch.ops.aten._weight_int8pack_mm(_flat(x, self.in_features, self.scale.dtype),
                                                       self.weight_int8, self.scale)
        return _unflat(y, x, self.bias, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"dtype={str(self.scale.dtype).removeprefix('torch.')}, kernel={_INT8}")


@dataclass
class PackResult:
    """What :func:`pack_weight_only` did: ``packed`` maps layer names to ``"int4 g<N>"`` or ``"int8"``;
    ``left`` maps the weight-only layers left for decompression to why; ``dtype`` is the activation dtype."""

    packed: dict[str, str] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)
    dtype: torch.dtype = torch.bfloat16

    def note(self) -> str:
        """The runner's ``compute`` suffix, e.g. `` + int4 packed (_weight_int4pack_mm_for_cpu, g64, bf16 activations)``
        (plus how many weight-only layers stayed decompressed); empty when nothing was packed."""
        if not self.packed:
            return ""
        act = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32") + " activations"
        groups = sorted({int(v.removeprefix("int4 g")) for v in self.packed.values() if v.startswith("int4")})
        parts = []
        if groups:
            parts.append(f"int4 packed ({_INT4}, {'/'.join(f'g{g}' for g in groups)}, {act})")
        if any(v == "int8" for v in self.packed.values()):
            parts.append(f"int8 packed ({_INT8}, {act})")
        left = f"; {len(self.left)} weight-only layers decompressed" if self.left else ""
        return " + " + " + ".join(parts) + left


@dataclass
class _Layer:
    """A weight-only integer layer: its grid and where its tensors come from."""

    bits: int
    symmetric: bool
    strategy: str
    group_size: int | None
    tensors: Callable[[], dict[str, Tensor]]
    from_checkpoint: bool = False


def _module_layers(model: nn.Module) -> Iterator[tuple[str, _Layer]]:
    """Layers still carrying their compressed-tensors scheme (compressed or decompressed in place)."""
    for name, m in model.named_modules():
        scheme: Any = getattr(m, "quantization_scheme", None)
        w = getattr(scheme, "weights", None)
        if w is None or scheme.input_activations is not None or w.type != "int" or not isinstance(m, nn.Linear):
            continue

        def tensors(m: nn.Module = m) -> dict[str, Tensor]:
            return {s: getattr(m, s).detach() for s in _SUFFIXES if isinstance(getattr(m, s, None), Tensor)}

        yield name, _Layer(w.num_bits, w.symmetric, str(w.strategy), w.group_size, tensors)


def _checkpoint_layers(model: nn.Module, checkpoint: Path) -> Iterator[tuple[str, _Layer]]:
    """Plain linear layers that the checkpoint stores as weight-only integer codes (transformers
    dequantized them at load: asymmetric ``pack-quantized`` checkpoints carry ``dequantize: true``)."""
    from compressed_tensors.quantization import QuantizationConfig
    from compressed_tensors.utils import match_named_modules
    from safetensors import safe_open

    config = checkpoint / "config.json"
    qc = json.loads(config.read_text(encoding="utf-8")).get("quantization_config") if config.is_file() else None
    if not qc or qc.get("quant_method") != "compressed-tensors" or not qc.get("config_groups"):
        return
    where: dict[str, Path] = {}
    for f in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(f), framework="pt", device="cpu") as st:
            where.update(dict.fromkeys(st.keys(), f))
    cfg = QuantizationConfig.model_validate(qc)
    for scheme in cfg.config_groups.values():
        w = scheme.weights
        if w is None or scheme.input_activations is not None or w.type != "int":
            continue
        for name, m in match_named_modules(model, scheme.targets, cfg.ignore):
            if type(m) is not nn.Linear or hasattr(m, "quantization_scheme") or f"{name}.weight_scale" not in where:
                continue

            def tensors(name: str = name) -> dict[str, Tensor]:
                out = {}
                for s in _SUFFIXES:
                    if f"{name}.{s}" in where:
                        with safe_open(str(where[f"{name}.{s}"]), framework="pt", device="cpu") as st:
                            out[s] = st.get_tensor(f"{name}.{s}")
                return out

            yield name, _Layer(w.num_bits, w.symmetric, str(w.strategy), w.group_size, tensors, from_checkpoint=True)


def _kernel(layer: _Layer, n: int, k: int, dtype: torch.dtype) -> tuple[str | None, str]:
    """``("int4", "g<N>")`` or ``("int8", "")`` for a layer the kernels can run, else ``(None, why)``."""
    if layer.strategy not in ("group", "channel", "tensor"):
        return None, f"{layer.strategy} scales have no packed CPU kernel"
    group = layer.group_size if layer.strategy == "group" and layer.group_size else k
    if layer.bits <= 4:
        g = int4_group_size(k, group)
        if g is None:
            what = f"group size {group}" if layer.strategy == "group" else f"in_features {k}"
            return None, f"{what} is not a multiple of 32 ({_INT4} groups are 32-256)"
        if n % 16:
            return None, f"out_features {n} is not a multiple of 16 ({_INT4})"
        return "int4", f"g{g}"
    if not layer.symmetric:
        return None, f"asymmetric int{layer.bits} ({_INT8} has no zero point)"
    if layer.strategy == "group":
        return None, f"grouped int{layer.bits} ({_INT8} takes one scale per output channel)"
    if dtype == torch.bfloat16 and k % 16:
        return None, f"in_features {k} is not a multiple of 16 (bfloat16 {_INT8})"
    return "int8", ""


def _grid(t: Mapping[str, Tensor], layer: _Layer, n: int, k: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(codes int8 [n, k], scale float32 [n, groups], zero_point int32 [n, groups] | None)``."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    scale = t["weight_scale"].float()
    scale = scale.reshape(1, 1).expand(n, 1) if scale.numel() == 1 else scale.reshape(n, -1)
    zp = t.get("weight_zero_point")
    if layer.symmetric or zp is None:
        zp = None
    elif zp.shape != scale.shape:  # packed along the output dimension
        zp = unpack_from_int32(zp, layer.bits, scale.shape, packed_dim=0)
    if zp is not None:
        zp = zp.to(torch.int32)
        zp = zp.reshape(1, 1).expand(n, 1) if zp.numel() == 1 else zp.reshape(scale.shape)
    w = t.get("weight")
    if "weight_packed" in t:
        shape = torch.Size(int(v) for v in t["weight_shape"].tolist()) if "weight_shape" in t else torch.Size((n, k))
        codes = unpack_from_int32(t["weight_packed"], layer.bits, shape)
    elif w is not None and not w.dtype.is_floating_point:
        codes = w
    elif w is not None:  # decompressed in place: the weight sits on the grid
        group = k // scale.shape[1]
        z = 0.0 if zp is None else zp.float().repeat_interleave(group, 1)
        lo, hi = -(1 << (layer.bits - 1)), (1 << (layer.bits - 1)) - 1
        codes = torch.round(w.float() / scale.repeat_interleave(group, 1) + z).clamp(lo, hi)
    else:
        raise KeyError("no weight or weight_packed")
    return codes.to(torch.int8).reshape(n, k), scale, zp


def _contiguous_groups(t: Mapping[str, Tensor], k: int, groups: int) -> bool:
    g_idx = t.get("weight_g_idx")
    return g_idx is None or torch.equal(g_idx.long().reshape(-1), torch.arange(k) // (k // groups))


def _dequantized(codes: Tensor, scale: Tensor, zp: Tensor | None) -> Tensor:
    group = codes.shape[1] // scale.shape[1]
    q = codes.float() - (0.0 if zp is None else zp.float().repeat_interleave(group, 1))
    return q * scale.repeat_interleave(group, 1)


@torch.no_grad()
def pack_weight_only(model: nn.Module, threads: int | None = None, checkpoint: str | Path | None = None,
                     dtype: torch.dtype = torch.bfloat16) -> PackResult:
    """Swap ``model``'s compressed-tensors weight-only integer linear layers for packed-kernel modules.

    Layers still carrying their compressed-tensors scheme are read from it; plain linear layers that
    the checkpoint stores as codes are read from ``checkpoint``'s safetensors (default: the directory
    ``model`` was loaded from, ``model.name_or_path``), and packed only when those codes reproduce the
    loaded weight. ``threads``: intra-op threads while packing. Layers the kernels cannot run are left
    as they are (see the module docstring) and listed with the reason; nothing is packed when
    :func:`packing_enabled` is false.
    """
    from quantmatch.plugins.backends.int8_runtime import _drop_hook_when_done

    result = PackResult(dtype=dtype)
    if not packing_enabled():
        return result
    source = Path(checkpoint or getattr(model, "name_or_path", "") or "")
    layers = dict(_module_layers(model))
    if source.is_dir():
        layers.update(_checkpoint_layers(model, source))
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for name, layer in layers.items():
            m: Any = model.get_submodule(name)
            if m is head:
                result.left[name] = "the LM head stays a float linear layer (runners read its weight)"
                continue
            n, k = int(m.out_features), int(m.in_features)
            kernel, detail = _kernel(layer, n, k, dtype)
            if kernel is None:
                result.left[name] = detail
                continue
            try:
                t = layer.tensors()
                codes, scale, zp = _grid(t, layer, n, k)
            except (KeyError, ValueError, RuntimeError) as e:
                result.left[name] = f"unreadable codes ({type(e).__name__}: {e})"
                continue
            if not _contiguous_groups(t, k, scale.shape[1]):
                result.left[name] = "activation-order groups (weight_g_idx) that are not contiguous blocks"
                continue
            if layer.from_checkpoint:
                w = m.weight.detach().float()
                if (_dequantized(codes, scale, zp) - w).abs().max() > _MISMATCH * w.abs().max():
                    result.left[name] = f"the codes in {source} do not reproduce the loaded weight"
                    continue
            new: nn.Module
            if kernel == "int4":
                new = Int4PackedLinear(codes, scale, zp, m.bias, dtype)
            else:
                new = Int8PackedLinear(codes, scale, m.bias, dtype)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
            result.packed[name] = f"int4 {detail}" if kernel == "int4" else "int8"
    finally:
        torch.set_num_threads(before)
    _drop_hook_when_done(model)
    return result
