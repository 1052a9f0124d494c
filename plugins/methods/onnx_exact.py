"""Exact ONNX Runtime export of compressed-tensors checkpoints (GPTQ, AWQ, round-to-nearest, SmoothQuant).

:func:`export_compressed` rewrites a checkpoint written by quantmatch's compressed-tensors methods into
an ``onnx`` artifact directory (``model.onnx``, tokenizer and config files) that the ONNX Runtime runner
loads as it loads the ``onnx`` method's own. The integer codes and the stored scales and zero points are
carried over unchanged; nothing is requantized unless the caller allows it:

- **weight-only int2/int4/int8** (``pack-quantized``) becomes ``com.microsoft::MatMulNBits`` with fp32
  activations (``accuracy_level`` 1): codes ``q`` are stored unsigned as ``q + 2^(b-1)`` (low bits
  first) and an asymmetric zero point ``z`` as ``z + 2^(b-1)``; symmetric layers leave the zero point
  out (ONNX Runtime's default is ``2^(b-1)``, the same value). The block is the source group when that
  is a power of two from 16 to 256, else the largest such power dividing the group, its scale repeated;
  per-channel scales are repeated over blocks of the largest power of two up to 256 dividing ``K``
  (a partial last block when none does). Scales are the stored fp16/bf16 values in float32 (exact).
- **W8A8** (``int-quantized``: int8 per-channel weights, int8 symmetric activations) becomes an integer
  graph: the activation is quantized exactly as compressed-tensors does it (static:
  ``QuantizeLinear`` with the stored ``input_scale``; dynamic per token: ``scale = absmax / 127.5``,
  ``round(x / scale)`` clipped to ``[-128, 127]``), shifted to ``uint8`` with zero point 128, multiplied
  by ``MatMulInteger`` with the int8 codes into int32 (exact) and rescaled by the activation and weight
  scales. Weights are ``int8`` (ONNX Runtime's fast u8 x s8 kernels) when the exporting CPU has VNNI,
  AMX or Arm dot-product instructions, else ``uint8`` with zero point 128 (the exact u8 x u8 kernel:
  without VNNI the u8 x s8 kernels add pairs of products in saturating 16 bits);
  ``QUANTMATCH_ONNX_INT8_WEIGHTS=int8|uint8`` overrides. The graph records which, and an ``int8`` graph
  run on a CPU without VNNI can differ where those sums saturate. Each layer's result equals the
  checkpoint's integer arithmetic on the same input; see :data:`TOLERANCE` for whole-model agreement.
- int4/int2 (or grouped int8) weights with int8 activations keep MatMulNBits, fed the activation
  fake-quantized in float (the same values compressed-tensors computes).

SmoothQuant's smoothing factors are already folded into the checkpoint's norm weights, so the float
parts of the graph are the checkpoint's own. The graph itself is :mod:`.onnx_export`'s, written from the
*dequantized* model (every quantized layer a float ``nn.Linear`` holding ``(q - z) * s``); each
``MatMul`` whose constant weight equals a quantized layer's transposed dequantized weight, byte for byte,
is that layer (the exporter's node names drop the layer index, so layers are matched by value; equal
weights are taken in forward order). Layers the checkpoint left float (the LM head) stay ``MatMul``.

Refused (:class:`~quantmatch.sdk.export.ExportRefused`, every reason listed) unless
``allow_requantize``: codes of 1, 3, 5, 6 or 7 bits (MatMulNBits has 2-, 4- and 8-bit blocks; allowed,
they are stored in the next wider blocks with the same values, so the graph stays exact but larger),
groups no power of two from 16 to 256 divides, and activation-ordered groups (``weight_g_idx``); the
last two are requantized, when allowed, by quantmatch's round-to-nearest
(:func:`~quantmatch.plugins.methods.algorithms.rtn.rtn`: min/max per group of 32 columns, or 16, or per
channel, whichever divides ``K`` first; the source's symmetry and width) from the dequantized weights,
and the result says ``exact: False``. Never exported:
non-integer weights (FP8, NVFP4), activations other than int8 symmetric per token or per tensor,
quantized outputs or KV cache, architectures :mod:`.onnx_export` does not write.

Two options trade exactness of the arithmetic, never of the quantized weights, for speed:

- 8-bit ``MatMulNBits`` nodes (int8 weight-only sources) always run at level 4: ONNX Runtime 1.32 has no
  fast 8-bit kernel at levels 0-2 (measured 3x slower than fp32 on SmolLM2; the head note below).
- ``accuracy_level=4`` (default 1) gives every ``MatMulNBits`` node ONNX Runtime's level 4: the
  activation is rounded to int8 per block (its own scale per block of the weight's ``block_size``) and
  the products run in integer kernels (VNNI/AMX on x86, dot-product on Arm; ORT's own
  ``w4a8-int8-g32`` recipe, like llama.cpp's Q8_0 activations). The weights are unchanged; logits move by
  that rounding (``tests/test_onnx_exact.py`` states how much). ``MatMulInteger`` layers are not affected.
- ``head="int8"`` (default ``"source"``) writes the LM head the checkpoint left float (SmolLM2's tied
  embedding: two thirds of the bytes read per decoded token at 4 bits) as ``MatMulNBits`` 8-bit
  blocks of :data:`HEAD_BLOCK`, rounded from the float weights as llama.cpp's Q8_0 rounds them
  (``scale = absmax / 127`` per block, codes ``round(w / scale)``; scales kept in float32), as GGUF's
  ``head=q8_0`` does. The head node always runs at accuracy level 4 (:data:`HEAD_ACCURACY_LEVEL`; its
  activation rounded to int8 per block, as llama.cpp's Q8_0 x Q8_0 head product does): ONNX Runtime
  1.32 has integer kernels only for 8-bit blocks, and at levels 0-2 it dequantizes the whole weight on
  every call (measured on SmolLM2's 576 x 49152 head, 2 threads: ~100 ms a call against 4 ms for the
  fp32 ``MatMul`` and 1.8 ms at level 4). Only the head: the embedding lookup stays float. It is not
  part of ``exact``, which is about the quantized layers; ``head`` in the details says it (and
  ``head_rounding_max_abs`` the largest change of a head weight).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmatch.sdk.artifact import ArtifactError
from quantmatch.sdk.export import ExportRefused

__all__ = ["ACCURACY_LEVELS", "HEADS", "HEAD_ACCURACY_LEVEL", "HEAD_BLOCK", "NBITS", "TOLERANCE", "check_exportable",
           "export_compressed", "unpack_int32"]

ProgressFn = Callable[[str, int, int], None]

NBITS = (2, 4, 8)
"""Code widths ONNX Runtime's ``MatMulNBits`` holds (CPU execution provider, 1.32)."""
ACCURACY_LEVEL = 1
"""``MatMulNBits`` computes in fp32 by default (level 4 quantizes the activations per block: not the source's math)."""
ACCURACY_LEVELS = (1, 4)
"""``accuracy_level`` choices: 1 (fp32 math, the source's) or 4 (int8 activations per block, integer kernels)."""
HEADS = ("source", "int8")
"""``head`` choices: a float LM head as the checkpoint stores it (float32 ``MatMul``), or 8-bit ``MatMulNBits``."""
HEAD_BLOCK = 32
"""Weights per scale of the ``head="int8"`` LM head (Q8_0's block)."""
HEAD_ACCURACY_LEVEL = 4
"""The ``head="int8"`` node's level whatever ``accuracy_level`` says (8-bit blocks are slow at 0-2; module doc)."""
TOLERANCE = ("weight-only: the same weights bit for bit, fp32 rounding in the products (logits within ~5e-6 of "
             "the largest, perplexity within 1e-5 on SmolLM2); W8A8: every layer's integer product is exact given "
             "its input, but float rounding elsewhere (norms, attention) can move an activation across a rounding "
             "tie, which per-token int8 quantization carries through the layers: perplexity within ~1% on "
             "SmolLM2, the spread of the same checkpoint in torch float32 against float64")
_EXPORT_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                 "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")
_QUANT_PARAMS = ("weight", "weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx",
                 "weight_global_scale", "input_scale", "input_zero_point", "input_global_scale", "output_scale",
                 "output_zero_point")
_REQUANT_BLOCK = 32
_FIX = "--allow-requantize (allow_requantize=True)"


# ---- reading the checkpoint --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """How one quantized layer is written: ``kernel`` ``nbits`` (MatMulNBits) or ``int8`` (MatMulInteger)."""

    name: str
    kernel: str
    bits: int  # the source's code width
    target_bits: int  # the width stored (wider when widened)
    source_group: int  # the source's group size; 0 per channel (or per tensor)
    group: int  # the group size written (the source's, or the requantized grid's)
    block: int  # MatMulNBits block (0 for int8)
    symmetric: bool
    activations: str | None  # None, "static", "token" (dynamic per token) or "tensor" (dynamic per tensor)
    requantize: bool = False


@dataclass(frozen=True)
class _Source:
    directory: Path
    config: dict[str, Any]
    schemes: dict[str, dict[str, Any]]  # module name -> its config group (weights, input_activations, format)
    shapes: dict[str, tuple[int, ...]]  # tensor name -> shape
    files: dict[str, Path]  # tensor name -> safetensors file


def _matches(name: str, targets: Iterable[str]) -> bool:
    """compressed-tensors' target matching for linear layers: exact name, ``re:`` pattern or ``Linear``."""
    return any(t in (name, "Linear") or (t.startswith("re:") and re.match(t[3:], name) is not None)
               for t in targets)


def _read_source(directory: Path) -> _Source:
    from safetensors import safe_open

    from quantmatch.plugins.methods.onnx_export import EXPORTABLE, OnnxExportError

    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise ArtifactError(f"{directory}: no config.json; give a compressed-tensors checkpoint directory "
                            "(`quantmatch quantize MODEL --method gptq|awq|rtn|smoothquant ...`)")
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    qc = config.get("quantization_config") or {}
    if qc.get("quant_method") != "compressed-tensors":
        raise ArtifactError(f"{directory}: not a compressed-tensors checkpoint (config.json has no "
                            "compressed-tensors quantization_config); export one written by gptq, awq, rtn or "
                            "smoothquant")
    if config.get("model_type") not in EXPORTABLE:
        raise OnnxExportError(f"the ONNX exporter writes {', '.join(EXPORTABLE)} models, not "
                              f"{config.get('model_type')!r}")
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ArtifactError(f"{directory}: no safetensors files; re-create the artifact")
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shapes[key] = tuple(st.get_slice(key).get_shape())
                where[key] = f
    names = sorted(k.removesuffix(".weight_scale") for k in shapes if k.endswith(".weight_scale"))
    schemes: dict[str, dict[str, Any]] = {}
    for name in names:
        for group in (qc.get("config_groups") or {}).values():
            if _matches(name, group.get("targets") or ()):
                schemes[name] = {**group, "format": group.get("format") or qc.get("format")}
                break
        else:
            schemes[name] = {}
    return _Source(directory, config, schemes, shapes, where)


def _block_for(n: int) -> int:
    """The largest power of two from 16 to 256 dividing ``n`` (0: none does)."""
    for b in (256, 128, 64, 32, 16):
        if n % b == 0:
            return b
    return 0


def _plan(src: _Source) -> tuple[list[_Plan], list[str], list[str]]:
    """Each layer's plan (requantizing or widening where needed), the reasons that needs
    ``allow_requantize``, and the reasons nothing exports."""
    fixable: dict[str, list[str]] = defaultdict(list)
    fatal: dict[str, list[str]] = defaultdict(list)
    qc = src.config["quantization_config"]
    if qc.get("kv_cache_scheme"):
        fatal["a quantized KV cache (kv_cache_scheme; the graph's cache is float)"].append("model")
    plans = []
    for name, scheme in src.schemes.items():
        w = scheme.get("weights") or {}
        act = scheme.get("input_activations")
        before = sum(len(v) for v in fatal.values())
        if not w:
            fatal["no quantization scheme in config.json matches the layer"].append(name)
        elif w.get("type") != "int" or scheme.get("format") not in ("pack-quantized", "int-quantized"):
            fatal[f"{w.get('type')} weights in format {scheme.get('format')} (only integer grids are held)"].append(
                name)
        elif w.get("strategy") not in ("group", "channel", "tensor"):
            fatal[f"weight strategy {w.get('strategy')!r}"].append(name)
        elif not 1 <= int(w.get("num_bits") or 0) <= max(NBITS):
            fatal[f"{w.get('num_bits')}-bit integer weights"].append(name)
        if scheme.get("output_activations"):
            fatal["quantized outputs"].append(name)
        mode = None
        if act:
            if not (act.get("type") == "int" and act.get("num_bits") == 8 and act.get("symmetric", True)):
                fatal[f"{act.get('type')}{act.get('num_bits')} {'symmetric' if act.get('symmetric') else 'asymmetric'}"
                      " activations (held: int8 symmetric)"].append(name)
            elif act.get("dynamic"):
                if act.get("strategy") in ("token", "tensor"):
                    mode = act["strategy"]
                else:
                    fatal[f"dynamic activations per {act.get('strategy')}"].append(name)
            elif act.get("strategy") == "tensor" and f"{name}.input_scale" in src.shapes:
                mode = "static"
            else:
                fatal[f"static activations per {act.get('strategy')} (held: one input_scale per tensor)"].append(name)
        if sum(len(v) for v in fatal.values()) > before:
            continue
        bits = int(w["num_bits"])
        group = int(w.get("group_size") or 0) if w.get("strategy") == "group" else 0
        k = _shape_of(src, name)[1]
        target = next(b for b in NBITS if b >= bits)
        requant = False
        if target != bits:
            fixable[f"{bits}-bit codes (MatMulNBits holds 2-, 4- and 8-bit blocks; allowed, they are stored in "
                    f"{target}-bit blocks with the same values)"].append(name)
        if group and not _block_for(group):
            fixable[f"group size {group} (MatMulNBits blocks are powers of two from 16 to 256 and none divides "
                    f"{group}; allowed, these layers are rounded again to blocks of {_REQUANT_BLOCK})"].append(name)
            requant = True
        if f"{name}.weight_g_idx" in src.shapes and not _natural_groups(src, name, group, k):
            fixable["activation-ordered groups (weight_g_idx; allowed, these layers are rounded again to blocks "
                    f"of {_REQUANT_BLOCK})"].append(name)
            requant = True
        group_out = group
        if requant:  # round-to-nearest needs groups dividing K: 32, else 16, else per channel
            group_out = next((g for g in (_REQUANT_BLOCK, 16) if k % g == 0), 0)
        block = _block_for(group_out) if group_out else (_block_for(k) or _REQUANT_BLOCK)
        int8 = mode is not None and target == 8 and group_out == 0 and not requant
        plans.append(_Plan(name, "int8" if int8 else "nbits", bits, target, group, group_out, 0 if int8 else block,
                           bool(w.get("symmetric", True)), mode, requant))
    return plans, _reasons(fixable), _reasons(fatal)


def _reasons(found: Mapping[str, list[str]]) -> list[str]:
    out = []
    for why, names in found.items():
        some = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
        out.append(f"{why}: {some}")
    return out


def _shape_of(src: _Source, name: str) -> tuple[int, int]:
    if f"{name}.weight_shape" in src.shapes:
        shape = _tensor(src, f"{name}.weight_shape").tolist()
        return int(shape[0]), int(shape[1])
    n, k = src.shapes[f"{name}.weight"]
    return int(n), int(k)


def _tensor(src: _Source, key: str) -> Any:
    from safetensors import safe_open

    with safe_open(str(src.files[key]), framework="pt") as st:
        return st.get_tensor(key)


@dataclass
class _Layer:
    """One quantized layer's integers as stored (numpy): signed codes ``int8 [N, K]``, scale ``float32
    [N, G]`` and zero point ``int16 [N, G]`` (``None`` when symmetric)."""

    codes: Any
    scale: Any
    zero: Any
    input_scale: float | None


def unpack_int32(packed: Any, bits: int, cols: int) -> Any:
    """Signed codes ``int8 [rows, cols]`` from compressed-tensors' ``pack-quantized`` rows (``int32``; each
    row one little-endian bit stream of ``bits``-bit values plus ``2^(bits-1)``, first value lowest)."""
    import numpy as np

    rows = packed.shape[0]
    raw = np.ascontiguousarray(packed, dtype="<i4").view(np.uint8).reshape(rows, -1)
    if 8 % bits == 0:
        per = 8 // bits
        mask = (1 << bits) - 1
        values = np.stack([(raw >> (bits * i)) & mask for i in range(per)], axis=-1).reshape(rows, -1)
    else:
        stream = np.unpackbits(raw, axis=1, bitorder="little")[:, : cols * bits].reshape(rows, cols, bits)
        values = (stream << np.arange(bits, dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)
    return (values[:, :cols].astype(np.int16) - (1 << (bits - 1))).astype(np.int8)


def _numpy(t: Any, dtype: Any) -> Any:
    """A stored tensor as numpy ``dtype`` (through float32 or int32: numpy has no bfloat16)."""
    import numpy as np
    import torch

    wide = torch.float32 if np.dtype(dtype).kind == "f" else torch.int32
    return t.to(wide).numpy().astype(dtype)


def _decode(src: _Source, plan: _Plan) -> _Layer:
    """The codes, scales and zero points of ``plan``'s layer."""
    import numpy as np

    n, k = _shape_of(src, plan.name)
    key = plan.name + ".weight_{}"
    if key.format("packed") in src.shapes:
        codes = unpack_int32(_numpy(_tensor(src, key.format("packed")), np.int32), plan.bits, k)
    else:
        codes = _numpy(_tensor(src, plan.name + ".weight"), np.int8)
    scale = _rows(_numpy(_tensor(src, key.format("scale")), np.float32), n)
    zero = None
    if not plan.symmetric:
        z = _numpy(_tensor(src, key.format("zero_point")), np.int32)
        z = z.reshape(z.shape[0], -1) if z.ndim else z.reshape(1, 1)
        if z.shape[0] not in (n, 1):  # packed along the rows, as pack-quantized stores it
            z = unpack_int32(np.ascontiguousarray(z.T), plan.bits, n).T
        zero = _rows(z.astype(np.int16), n)
    in_scale = None
    if plan.activations == "static":
        in_scale = float(_numpy(_tensor(src, plan.name + ".input_scale"), np.float32).reshape(-1)[0])
    return _Layer(codes, scale, zero, in_scale)


def _rows(t: Any, n: int) -> Any:
    """``t`` as ``[n, G]``: a per-tensor value repeated over the rows."""
    import numpy as np

    t = t.reshape(t.shape[0], -1) if t.ndim else t.reshape(1, 1)
    return np.ascontiguousarray(np.broadcast_to(t, (n, t.shape[1]))) if t.shape[0] == 1 and n > 1 else t


def _natural_groups(src: _Source, name: str, group: int, k: int) -> bool:
    """Whether a stored group index is the plain ``column // group`` (activation order left no trace)."""
    import numpy as np

    g_idx = _numpy(_tensor(src, f"{name}.weight_g_idx"), np.int32)
    return bool(group) and bool(np.array_equal(g_idx.reshape(-1), np.arange(k) // group))


def _dequantize(layer: _Layer, group: int) -> Any:
    """``(q - z) * s`` in float32 ``[N, K]``, as compressed-tensors decompresses it (in float32)."""
    import numpy as np

    n, k = layer.codes.shape
    g = group or k
    groups = -(-k // g)
    if layer.scale.shape[1] != groups:
        raise ArtifactError(f"scales of shape {tuple(layer.scale.shape)} do not fit {k} columns in groups of {g}; "
                            "re-create the artifact")
    if k % g:
        pad = np.zeros((n, groups * g - k), np.int8)
        return _dequantize(_Layer(np.concatenate([layer.codes, pad], 1), layer.scale, layer.zero, None), g)[:, :k]
    q = layer.codes.reshape(n, groups, g).astype(np.float32)
    if layer.zero is not None:
        q -= layer.zero[:, :, None].astype(np.float32)
    q *= layer.scale[:, :, None]
    return q.reshape(n, k)


def _requantize(w: Any, plan: _Plan) -> _Layer:
    """Round-to-nearest of the dequantized ``w`` onto ``plan``'s grid (``plan.group`` columns, min/max)."""
    import numpy as np
    import torch

    from quantmatch.plugins.methods.algorithms.rtn import IntGrid, rtn

    qw = rtn(torch.from_numpy(w), IntGrid(plan.target_bits, plan.group, plan.symmetric))
    zero = None if qw.zero_point is None else qw.zero_point.numpy().astype(np.int16)
    return _Layer(qw.codes().numpy(), qw.scale.float().numpy(), zero, None)


def _pack(values: Any, bits: int) -> Any:
    """Unsigned ``bits``-bit values (``uint8``, last axis a multiple of ``8 // bits``) packed low bits first."""
    import numpy as np

    per = 8 // bits
    v = values.reshape(*values.shape[:-1], values.shape[-1] // per, per)
    out = np.zeros(v.shape[:-1], np.uint8)
    for i in range(per):
        out |= (v[..., i] << (bits * i)).astype(np.uint8)
    return out


def _nbits_arrays(layer: _Layer, plan: _Plan) -> tuple[Any, Any, Any]:
    """``MatMulNBits``' ``B`` (``uint8 [N, blocks, block * bits / 8]``), scales (``float32 [N * blocks]``) and
    packed zero points (``uint8 [N * ceil(blocks * bits / 8)]``, ``None`` when symmetric)."""
    import numpy as np

    bits, block = plan.target_bits, plan.block
    codes = layer.codes.astype(np.int16)
    n, k = codes.shape
    blocks = -(-k // block)
    off = 1 << (bits - 1)
    of_block = (np.arange(blocks) * block) // (plan.group or k)  # blocks never straddle groups
    scales = np.ascontiguousarray(layer.scale[:, of_block], dtype=np.float32)
    zp = None if layer.zero is None else layer.zero[:, of_block].astype(np.int16) + off
    u = codes + off
    if blocks * block > k:  # a partial last block: padded with its zero point (never multiplied)
        fill = np.full((n, 1), off, np.int16) if zp is None else zp[:, -1:]
        u = np.concatenate([u, np.repeat(fill, blocks * block - k, axis=1)], axis=1)
    if u.min() < 0 or u.max() >= 1 << bits or (zp is not None and (zp.min() < 0 or zp.max() >= 1 << bits)):
        raise ArtifactError(f"{plan.name}: codes outside the {plan.bits}-bit range; re-create the artifact")
    b = _pack(u.astype(np.uint8).reshape(n, blocks, block), bits)
    packed_zp = None
    if zp is not None:
        pad = (-blocks) % (8 // bits)
        packed_zp = _pack(np.pad(zp, ((0, 0), (0, pad)), constant_values=off).astype(np.uint8), bits).reshape(-1)
    return b, scales.reshape(-1), packed_zp


def _int8_weights() -> str:
    """``int8`` (the u8 x s8 kernels) where this CPU's int8 dot products do not saturate, else ``uint8``."""
    forced = os.environ.get("QUANTMATCH_ONNX_INT8_WEIGHTS", "").strip().lower()
    if forced in ("int8", "uint8"):
        return forced
    from quantmatch.sdk.hostcpu import has_fast_int8_dot

    return "int8" if has_fast_int8_dot() else "uint8"


# ---- the graph -------------------------------------------------------------------------------------
class _Rewriter:
    """Builds the nodes and initializers that replace one quantized layer's ``MatMul``."""

    def __init__(self, int8_weights: str, accuracy_level: int = ACCURACY_LEVEL) -> None:
        self.int8_weights = int8_weights
        self.accuracy_level = accuracy_level
        self.initializers: list[Any] = []
        self._consts: dict[tuple[str, bytes], str] = {}
        self._shared: dict[tuple[Any, ...], Any] = {}
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, value: Any, stem: str = "qm_const") -> str:
        """An initializer holding ``value`` (a numpy array); equal small constants are shared."""
        from onnx import numpy_helper

        key = (f"{value.dtype}{value.shape}", value.tobytes()) if value.size <= 1 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self._name(stem)
        self.initializers.append(numpy_helper.from_array(value, name))
        if key is not None:
            self._consts[key] = name
        return name

    def _op(self, out: list[Any], op: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        from onnx import helper

        y = self._name(f"{stem}/{op}")
        out.append(helper.make_node(op, inputs, [y], name=y, **attrs))
        return y

    def _scalar(self, v: float) -> str:
        import numpy as np

        return self.const(np.array(v, np.float32))

    def _dynamic(self, x: str, mode: str, out: list[Any]) -> tuple[str, str]:
        """compressed-tensors' dynamic int8 quantization of ``x``: ``(round(x / scale), scale)``, one scale
        per token (``mode`` ``token``) or for the whole tensor, ``absmax / 127.5`` (0 becomes float32 eps)."""
        import numpy as np

        key = ("dynamic", x, mode)
        if key not in self._shared:
            stem = f"{x}/qm_{mode}"
            amax = self._op(out, "Abs", [x], stem)
            axes = {"axes": [-1]} if mode == "token" else {}
            amax = self._op(out, "ReduceMax", [amax], stem, keepdims=1, **axes)
            s = self._op(out, "Div", [amax, self._scalar(127.5)], stem)
            zero = self._op(out, "Equal", [s, self._scalar(0.0)], stem)
            s = self._op(out, "Where", [zero, self._scalar(float(np.finfo(np.float32).eps)), s], stem)
            r = self._op(out, "Round", [self._op(out, "Div", [x, s], stem)], stem)
            self._shared[key] = (r, s)
        return self._shared[key]  # type: ignore[no-any-return]

    def _uint8(self, x: str, plan: _Plan, layer: _Layer, out: list[Any]) -> tuple[str, str | None]:
        """``x`` quantized to int8 codes plus 128 (``uint8``), and the per-token scale tensor (dynamic)."""
        import numpy as np
        from onnx import TensorProto

        key = ("uint8", x, plan.activations, layer.input_scale)
        if key not in self._shared:
            stem = f"{x}/qm_u8"
            if plan.activations == "static":
                s = np.array(layer.input_scale, np.float32)
                u8 = self._op(out, "QuantizeLinear", [x, self.const(s), self.const(np.array(128, np.uint8))], stem)
                self._shared[key] = (u8, None)
            else:
                r, s_dyn = self._dynamic(x, str(plan.activations), out)
                shifted = self._op(out, "Add", [r, self._scalar(128.0)], stem)
                clipped = self._op(out, "Clip", [shifted, self._scalar(0.0), self._scalar(255.0)], stem)
                self._shared[key] = (self._op(out, "Cast", [clipped], stem, to=TensorProto.UINT8), s_dyn)
        return self._shared[key]  # type: ignore[no-any-return]

    def _fake(self, x: str, plan: _Plan, layer: _Layer, out: list[Any]) -> str:
        """``x`` quantized to int8 and back to float (compressed-tensors' fake quantization)."""
        key = ("fake", x, plan.activations, layer.input_scale)
        if key not in self._shared:
            stem = f"{x}/qm_fq"
            if plan.activations == "static":
                s = self._scalar(float(layer.input_scale or 0.0))
                r = self._op(out, "Round", [self._op(out, "Div", [x, s], stem)], stem)
            else:
                r, s = self._dynamic(x, str(plan.activations), out)
            codes = self._op(out, "Clip", [r, self._scalar(-128.0), self._scalar(127.0)], stem)
            self._shared[key] = self._op(out, "Mul", [codes, s], stem)
        return self._shared[key]  # type: ignore[no-any-return]

    def replace(self, node: Any, plan: _Plan, layer: _Layer) -> list[Any]:
        """The nodes computing ``node``'s output (a ``MatMul`` by the layer's float weight) from the codes."""
        import numpy as np
        from onnx import TensorProto, helper

        out: list[Any] = []
        x, y = node.input[0], node.output[0]
        n, k = layer.codes.shape
        stem = "/" + plan.name.replace(".", "/")
        if plan.kernel == "nbits":
            if plan.activations:
                x = self._fake(x, plan, layer, out)
            b, scales, zp = _nbits_arrays(layer, plan)
            inputs = [x, self.const(b, plan.name + ".qweight"), self.const(scales, plan.name + ".scales")]
            if zp is not None:
                inputs.append(self.const(zp, plan.name + ".qzeros"))
            out.append(helper.make_node("MatMulNBits", inputs, [y], name=f"{stem}/MatMulNBits", domain="com.microsoft",
                                        K=k, N=n, bits=plan.target_bits, block_size=plan.block,
                                        accuracy_level=(HEAD_ACCURACY_LEVEL if plan.target_bits == 8
                                                        else self.accuracy_level)))
            return out
        u8, s_dyn = self._uint8(x, plan, layer, out)
        codes = layer.codes.T
        zero = np.zeros(1, np.int16) if layer.zero is None else layer.zero[:, 0].astype(np.int16)
        if self.int8_weights == "uint8":
            w, wz = (codes.astype(np.int16) + 128).astype(np.uint8), (zero + 128).astype(np.uint8)
        else:
            w, wz = codes.astype(np.int8), zero.astype(np.int8)
        wz = wz.reshape(()) if layer.zero is None else wz
        inputs = [u8, self.const(np.ascontiguousarray(w), plan.name + ".qweight"),
                  self.const(np.array(128, np.uint8)), self.const(wz, plan.name + ".qzero")]
        acc = self._op(out, "Cast", [self._op(out, "MatMulInteger", inputs, stem)], stem, to=TensorProto.FLOAT)
        w_scale = layer.scale[:, 0].astype(np.float32)
        if plan.activations == "static":
            w_scale = (np.float32(layer.input_scale) * w_scale).astype(np.float32)
        else:
            assert s_dyn is not None
            acc = self._op(out, "Mul", [acc, s_dyn], stem)
        out.append(helper.make_node("Mul", [acc, self.const(w_scale, plan.name + ".scale")], [y], name=f"{stem}/Mul"))
        return out

    def head(self, node: Any, weight_t: Any) -> tuple[Any, float]:
        """``node`` (the LM head's ``MatMul`` by ``weight_t``, float32 ``[K, N]``) as 8-bit ``MatMulNBits``
        rounded as Q8_0 rounds, at :data:`HEAD_ACCURACY_LEVEL` (see the module doc), and the largest
        absolute change of a weight."""
        import numpy as np
        from onnx import helper

        w = np.ascontiguousarray(weight_t.T, dtype=np.float32)  # [N, K]
        n, k = w.shape
        blocks = -(-k // HEAD_BLOCK)
        padded = np.zeros((n, blocks * HEAD_BLOCK), np.float32)
        padded[:, :k] = w
        wb = padded.reshape(n, blocks, HEAD_BLOCK)
        scale = np.abs(wb).max(axis=2) / np.float32(127)
        safe = np.where(scale == 0, np.float32(1), scale)[:, :, None]
        codes = np.clip(np.rint(wb / safe), -127, 127)
        rounding = float(np.abs(codes * scale[:, :, None] - wb).max()) if w.size else 0.0
        b = (codes + 128).astype(np.uint8)  # MatMulNBits' 8-bit default zero point is 128
        name = "lm_head"
        inputs = [node.input[0], self.const(b, name + ".qweight"),
                  self.const(np.ascontiguousarray(scale.reshape(-1), dtype=np.float32), name + ".scales")]
        new = helper.make_node("MatMulNBits", inputs, [node.output[0]], name="/lm_head/MatMulNBits",
                               domain="com.microsoft", K=k, N=n, bits=8, block_size=HEAD_BLOCK,
                               accuracy_level=HEAD_ACCURACY_LEVEL)
        return new, rounding


def _digest(array: Any) -> tuple[tuple[int, ...], str]:
    return tuple(array.shape), hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest()


def _rewrite(fp32: Path, out: Path, plans: Mapping[str, _Plan], layers: Mapping[str, _Layer],
             digests: Mapping[str, tuple[tuple[int, ...], str]], int8_weights: str,
             accuracy_level: int = ACCURACY_LEVEL, head: str = "source") -> float | None:
    """Replace every quantized layer's ``MatMul`` in the graph at ``fp32`` (and, ``head="int8"``, the float
    LM head's: the constant ``MatMul`` writing the ``logits`` output) and write the result to ``out``.
    Returns the head's largest weight change when it was rewritten, else ``None``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(fp32))
    graph = model.graph
    logits = graph.output[0].name
    head_rounding: float | None = None
    inits = {t.name: t for t in graph.initializer}
    waiting: dict[tuple[tuple[int, ...], str], deque[str]] = defaultdict(deque)
    for name in plans:  # module order is forward order: equal weights are taken in turn
        waiting[digests[name]].append(name)
    shapes = {shape for shape, _ in waiting}
    rw = _Rewriter(int8_weights, accuracy_level)
    nodes: list[Any] = []
    for node in graph.node:
        t = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if t is not None and t.data_type == TensorProto.FLOAT and tuple(t.dims) in shapes:
            queue = waiting.get(_digest(numpy_helper.to_array(t)))
            if queue:
                name = queue.popleft()
                nodes.extend(rw.replace(node, plans[name], layers[name]))
                continue
        if (head == "int8" and t is not None and t.data_type == TensorProto.FLOAT and len(t.dims) == 2
                and node.output[0] == logits):
            new, head_rounding = rw.head(node, numpy_helper.to_array(t))
            nodes.append(new)
            continue
        nodes.append(node)
    missing = [n for q in waiting.values() for n in q]
    if missing:
        raise RuntimeError(f"the exported graph has no MatMul with the weight of {', '.join(missing[:3])}"
                           f"{' ...' if len(missing) > 3 else ''} (exporter changed?)")
    used = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.ClearField("initializer")
    graph.initializer.extend(kept + rw.initializers)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    size = sum(len(t.raw_data) for t in graph.initializer)
    onnx.save_model(model, str(out), save_as_external_data=size > 1_800_000_000, all_tensors_to_one_file=True,
                    location=out.name + ".data")
    return head_rounding


# ---- the float model -----------------------------------------------------------------------------------
def _float_model(src: _Source, dequantized: Mapping[str, Any]) -> Any:
    """The checkpoint as a plain float32 transformers model: every quantized layer an ``nn.Linear`` holding
    its dequantized weight, every other tensor the stored one in float32."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(str(src.directory))
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    auto: Any = AutoModelForCausalLM
    skip_init: Any = contextlib.nullcontext
    with contextlib.suppress(ImportError):  # every weight is loaded below: skip the (slow) random initialization
        from transformers.initialization import no_init_weights as skip_init
    with skip_init():
        model = auto.from_config(cfg, dtype=torch.float32)
    state: dict[str, Any] = {f"{name}.weight": w for name, w in dequantized.items()}
    by_file: dict[Path, list[str]] = defaultdict(list)
    for key, f in src.files.items():
        module, _, param = key.rpartition(".")
        if not (module in dequantized and param in _QUANT_PARAMS):
            by_file[f].append(key)
    for f, keys in by_file.items():
        with safe_open(str(f), framework="pt") as st:
            for key in keys:
                state[key] = st.get_tensor(key).to(torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied: set[str] = set()
    if getattr(cfg, "tie_word_embeddings", False):  # skipping the initialization skipped the tying too
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
        tied = {"lm_head.weight"}
    bad = sorted(set(missing) - tied) + sorted(unexpected)
    if bad:
        raise ArtifactError(f"{src.directory}: the checkpoint's tensors do not fit its config ({', '.join(bad[:4])}"
                            f"{' ...' if len(bad) > 4 else ''}); re-create the artifact")
    return model.eval()


# ---- the entry points ----------------------------------------------------------------------------------
def check_exportable(source_dir: str | Path, *, allow_requantize: bool = False) -> list[str]:
    """The layers' plans without exporting: raises :class:`ExportRefused` (or an ``InputError`` for a
    directory that is no exportable compressed-tensors checkpoint) exactly as :func:`export_compressed`
    would, before anything heavy loads; returns the fixable reasons that ``allow_requantize`` accepted."""
    src = _read_source(Path(source_dir))
    _, fixable, fatal = _plan(src)
    _refuse(src.directory, fixable, fatal, allow_requantize)
    return fixable


def _refuse(directory: Path, fixable: list[str], fatal: list[str], allow_requantize: bool) -> None:
    """Raise :class:`ExportRefused` naming every reason, and what (if anything) the caller can do."""
    flaggable = [] if allow_requantize else fixable
    if not (fatal or flaggable):
        return
    parts = []
    if flaggable:
        parts.append("; ".join(flaggable) + f". Pass {_FIX} to export these anyway")
    if fatal:
        parts.append("; ".join(fatal) + ". ONNX Runtime graphs cannot hold these (quantize the float model for ONNX "
                     "Runtime instead: `quantmatch quantize MODEL --method onnx`)")
    raise ExportRefused(f"{directory} cannot be exported to ONNX Runtime exactly: " + ". ".join(parts),
                        tuple(flaggable + fatal))


def export_compressed(source_dir: str | Path, out_dir: str | Path, *, allow_requantize: bool = False,
                      progress: ProgressFn | None = None, accuracy_level: int = ACCURACY_LEVEL,
                      head: str = "source") -> dict[str, Any]:
    """Write the compressed-tensors checkpoint at ``source_dir`` as an ONNX Runtime graph into ``out_dir``
    (an existing, empty directory the caller owns; it adds ``quantmatch.json``). See the module doc for
    what each grid becomes, and for ``accuracy_level`` (:data:`ACCURACY_LEVELS`: 1 fp32 math, 4 int8
    activations per block, for the quantized layers' ``MatMulNBits``) and ``head`` (:data:`HEADS`:
    ``"source"``, or ``"int8"`` for a float LM head rounded to 8-bit blocks and run at level 4; not exact
    for the head, and not counted in ``exact``).

    Returns the manifest ``details``: ``exported_from``, ``source_format``, ``source_method`` and
    ``source_scheme`` (from the source's manifest), ``exact`` (``False`` when layers were requantized),
    ``ops`` (node counts of the graph), ``kernels`` (quantized layers by kernel), ``requantized`` and
    ``widened`` (layer names), ``bits``, ``block_size`` (one value, or the list when layers differ),
    ``accuracy_level``, ``int8_weights`` (W8A8 graphs), ``layout`` and ``weight_bytes_per_token`` (what the
    ONNX Runtime runner reads), ``compute``, ``head`` (``"int8"`` when a float LM head was rounded, else
    ``"source"``; ``head_rounding_max_abs`` and ``head_accuracy_level`` then) and ``tolerance``.
    Raises :class:`~quantmatch.sdk.export.ExportRefused` for grids the graph cannot hold exactly (listing
    every reason) unless ``allow_requantize``, an ``InputError`` for a directory that is not a
    compressed-tensors checkpoint of an architecture :mod:`.onnx_export` writes, and ``ValueError`` for
    an ``accuracy_level`` or ``head`` not among the choices.
    """
    import numpy as np
    import torch

    from quantmatch.plugins.methods.onnx import GRAPH_FILE
    from quantmatch.plugins.methods.onnx_export import export_llama

    def say(stage: str, done: int, total: int = 1) -> None:
        if progress:
            progress(stage, done, total)

    if accuracy_level not in ACCURACY_LEVELS:
        raise ValueError(f"accuracy_level must be one of {', '.join(map(str, ACCURACY_LEVELS))}, not "
                         f"{accuracy_level!r}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    source, out = Path(source_dir), Path(out_dir)
    say("read", 0)
    src = _read_source(source)
    plan_list, fixable, fatal = _plan(src)
    _refuse(source, fixable, fatal, allow_requantize)
    plans = {p.name: p for p in plan_list}
    layers: dict[str, _Layer] = {}
    dequantized: dict[str, Any] = {}
    digests: dict[str, tuple[tuple[int, ...], str]] = {}
    with torch.no_grad():
        for i, (name, plan) in enumerate(plans.items()):
            layer = _decode(src, plan)
            w = _dequantize(layer, plan.source_group)
            layers[name] = _requantize(w, plan) if plan.requantize else layer
            dequantized[name] = torch.from_numpy(w)
            digests[name] = _digest(np.ascontiguousarray(w.T))
            say("read", i + 1, len(plans))
        say("export", 0)
        model = _float_model(src, dequantized)
        del dequantized
        fp32 = out / ".fp32.onnx"
        try:
            lay = export_llama(model, fp32)
            del model
            say("rewrite", 0)
            int8_weights = _int8_weights()
            head_rounding = _rewrite(fp32, out / GRAPH_FILE, plans, layers, digests, int8_weights,
                                     accuracy_level, head)
        finally:
            for leftover in out.glob(".fp32.onnx*"):
                leftover.unlink()
    for name in _EXPORT_FILES:
        f = source / name
        if f.is_file():
            shutil.copy(f, out / name)
    config = {k: v for k, v in src.config.items() if k != "quantization_config"}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    say("rewrite", 1)
    return _details(source, out / GRAPH_FILE, plans, lay.to_dict(), int8_weights, accuracy_level, head_rounding)


def _details(source: Path, graph: Path, plans: Mapping[str, _Plan], layout: dict[str, int],
             int8_weights: str, accuracy_level: int = ACCURACY_LEVEL,
             head_rounding: float | None = None) -> dict[str, Any]:
    from quantmatch.plugins.methods.onnx import graph_weight_bytes, op_counts

    manifest: dict[str, Any] = {}
    if (source / "quantmatch.json").is_file():
        try:
            manifest = json.loads((source / "quantmatch.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            manifest = {}
    kernels = {"MatMulNBits": sum(p.kernel == "nbits" for p in plans.values()),
               "MatMulInteger": sum(p.kernel == "int8" for p in plans.values())}
    blocks = sorted({p.block for p in plans.values() if p.kernel == "nbits"})
    requantized = [n for n, p in plans.items() if p.requantize]
    compute = []
    if kernels["MatMulNBits"]:
        narrow = any(p.kernel == "nbits" and p.target_bits < 8 for p in plans.values())
        if narrow:
            compute.append("MatMulNBits fp32" if accuracy_level == ACCURACY_LEVEL else
                           f"MatMulNBits int8 activations per block (accuracy_level {accuracy_level})")
        if any(p.kernel == "nbits" and p.target_bits == 8 for p in plans.values()):
            compute.append(f"MatMulNBits 8-bit, int8 activations per block (accuracy_level {HEAD_ACCURACY_LEVEL}: "
                           "ONNX Runtime has no fast 8-bit kernel at the fp32 levels)")
    if kernels["MatMulInteger"]:
        compute.append(f"int8 MatMulInteger (u8 x {'s8' if int8_weights == 'int8' else 'u8'})")
    if head_rounding is not None:
        compute.append(f"int8 head (MatMulNBits 8-bit, accuracy_level {HEAD_ACCURACY_LEVEL})")
    return {
        "exported_from": str(source),
        "source_format": "compressed-tensors",
        "source_method": manifest.get("method"),
        "source_scheme": manifest.get("scheme"),
        "tool": "exact",
        "exact": not requantized,
        "ops": op_counts(graph),
        "kernels": {k: v for k, v in kernels.items() if v},
        "requantized": requantized,
        "widened": [n for n, p in plans.items() if p.target_bits != p.bits and not p.requantize],
        "bits": sorted({p.target_bits for p in plans.values()}),
        "block_size": blocks[0] if len(blocks) == 1 else (blocks or None),
        "accuracy_level": accuracy_level if kernels["MatMulNBits"] else None,
        "int8_weights": int8_weights if kernels["MatMulInteger"] else None,
        "compute": " + ".join(compute) or "float32",
        "head": "source" if head_rounding is None else "int8",
        **({} if head_rounding is None else {"head_rounding_max_abs": head_rounding,
                                             "head_accuracy_level": HEAD_ACCURACY_LEVEL}),
        "layout": layout,
        "weight_bytes_per_token": graph_weight_bytes(graph),
        "tolerance": TOLERANCE,
    }
