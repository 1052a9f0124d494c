"""Exact GGUF export of compressed-tensors checkpoints: the integer codes rewritten into llama.cpp blocks.

GPTQ, AWQ and round-to-nearest write compressed-tensors checkpoints (signed codes ``q``, per-row or
per-group ``scale`` and, asymmetric, ``zero_point``: ``w = (q - zero_point) * scale``). A legacy ggml
block is 32 values along the input dimension with fp16 parameters, so any group of a multiple of 32
(and a per-channel or per-tensor scale, repeated) maps onto blocks without touching a code:

- symmetric, at most 4 bits -> ``Q4_0``: ``d = scale``, nibble ``q + 8`` (``w = d * (nibble - 8)``);
- asymmetric, at most 4 bits -> ``Q4_1``: ``d = scale``, ``m = -(zero_point + 8) * scale``, nibble ``q + 8``
  (``w = d * nibble + m``); ``m`` is rounded to fp16, the one inexact step, recorded in the details;
- symmetric, 5 to 8 bits -> ``Q8_0``: ``d = scale``, the codes themselves.

Scales already in fp16 (the default checkpoint dtype) are stored unchanged; bf16/fp32 scales are
rounded to fp16 and the largest relative change is recorded. 2- and 3-bit grids (and 5-7-bit ones) are
held exactly only *widened* into 4-bit nibbles (8-bit codes): the file is then no smaller than a 4-bit
(8-bit) export, so they are refused like the grids below unless ``allow_requantize``, which then writes
them widened, still exact (``widened`` lists them); nothing is rounded again.
Q/K rows are permuted for llama.cpp's rotary layout as the float converter does (whole rows move;
blocks run along rows, so they are untouched). Layers the checkpoint leaves float (``ignore``: the LM
head) and every non-linear tensor are written as :mod:`.gguf_convert` writes them (2-D F16, norms F32).

Grids a block cannot hold (a group that is not a multiple of 32, rows whose length is not, asymmetric
grids of more than 4 bits, activation-order ``g_idx`` groups) and activation-quantized checkpoints
(GGUF is weight-only) are refused with every reason, before any weight is read, unless
``allow_requantize``: then such layers are dequantized and rounded again by ``gguf.quants`` to the
type of the same width (``Q4_0``/``Q4_1`` up to 4 bits, ``Q8_0`` above; F16 when rows are not a
multiple of 32), and the activation quantization is dropped; ``exact`` is then false.

``head="q8_0"`` writes the token embedding (and a float LM head) as Q8_0, as llama.cpp's own Q4_0
quantizer does for SmolLM2 (measured there: about 13% more decode tokens per CPU-second, perplexity
unchanged); it is not part of ``exact``, which is about the quantized layers. llama.cpp rounds
activations to Q8_0 blocks for its integer dot products, so its logits differ from the checkpoint's in
torch by that rounding (the tolerance measured is in ``tests/test_gguf_export.py``).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.plugins.methods.gguf_convert import (
    ConversionError,
    _float_payload,
    _Model,
    _read_model,
    _safetensors_header,
    _stored_type,
    _weight_files,
    _write_file,
)
from quantmatch.sdk.export import ExportRefused

__all__ = ["BLOCK", "GGUF_FILE", "HEADS", "export_compressed", "export_refusals"]

BLOCK = 32
"""Values per Q4_0/Q4_1/Q8_0 block, along a weight row (the input dimension)."""

GGUF_FILE = "model.gguf"
"""The file written into the output directory."""

HEADS = ("source", "q8_0")
"""``head`` choices: the embedding/LM head as the checkpoint stores them (F16), or Q8_0 (as llama.cpp's own
``Q4_0`` quantizer writes SmolLM2's tied 576-wide embedding; not exact for those tensors)."""

ProgressFn = Callable[[str, int, int], None]

_FORMATS = ("pack-quantized", "int-quantized", "naive-quantized")
_PARAM_SUFFIXES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx",
                   "input_scale", "input_zero_point", "output_scale", "output_zero_point", "weight_global_scale",
                   "input_global_scale")
_KV_PARAMS = ("k_scale", "v_scale", "k_zero_point", "v_zero_point")
_ACTIVATIONS_WHY = "llama.cpp quantizes activations itself; export the weight-only scheme or use --to onnx"
_FIX = ("or pass --allow-requantize (allow_requantize=True) to export anyway: layers blocks cannot hold are "
        "rounded again by gguf's quantizer and activation quantization is dropped (the export is then not exact)")


@dataclass
class _Layer:
    """One quantized module of the checkpoint and how it is written."""

    module: str
    gguf_name: str
    rows: int
    cols: int
    bits: int
    symmetric: bool
    group: int  # input columns per scale (all of them per-channel or per-tensor)
    fmt: str
    qtype: str = ""  # q4_0 | q4_1 | q8_0 | f16
    problems: list[str] = field(default_factory=list)  # why blocks cannot hold the grid: requantize
    widen: list[str] = field(default_factory=list)  # held exactly only in wider codes: asks for the flag too
    refused: list[str] = field(default_factory=list)  # what even requantizing cannot handle
    activations: str | None = None  # the activation quantization llama.cpp would not do

    @property
    def widened(self) -> bool:
        """Held exactly in wider codes than the grid's (2/3 bits in nibbles, 5-7 bits in Q8_0)."""
        return not self.problems and self.bits != (8 if self.qtype == "q8_0" else 4)


def _group_for(module: str, groups: Mapping[str, Any], modules: set[str]) -> Mapping[str, Any] | None:
    """The ``config_groups`` entry that quantized ``module``: exact name, then ``re:`` pattern, then class."""
    by_class = []
    for g in groups.values():
        for t in g.get("targets") or ():
            if t == module:
                return dict(g)
    for g in groups.values():
        for t in g.get("targets") or ():
            if t.startswith("re:") and re.match(t[3:], module):
                return dict(g)
    for g in groups.values():
        if any(not t.startswith("re:") and t not in modules for t in g.get("targets") or ()):
            by_class.append(dict(g))
    if not by_class:
        return None
    return next((g for g in by_class if "Linear" in (g.get("targets") or ())), by_class[0])


def _activation_text(acts: Mapping[str, Any] | None) -> str | None:
    if not acts:
        return None
    kind = "dynamic per-token" if acts.get("dynamic") else f"static per-{acts.get('strategy') or 'tensor'}"
    return f"{acts.get('type', 'int')}{acts.get('num_bits', 8)} {kind}"


@dataclass
class _Plan:
    model: _Model
    files: list[Path]
    where: dict[str, Path]  # tensor name -> file
    order: list[str]  # tensor names in file order
    layers: dict[str, _Layer]
    kv_cache: str | None
    problems: list[str]


def _read_small(path: Path, name: str) -> Any:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as st:
        return st.get_tensor(name)


def _plan(source: Path) -> _Plan:
    """Everything decided from ``config.json`` and the safetensors headers (plus ``weight_shape``/``g_idx``)."""
    cfg = json.loads((source / "config.json").read_text(encoding="utf-8")) if (source / "config.json").is_file() else {}
    qc = cfg.get("quantization_config") or {}
    if qc.get("quant_method") != "compressed-tensors":
        raise ConversionError(f"{source}: not a compressed-tensors checkpoint (config.json has no "
                              "compressed-tensors quantization_config); convert a float model with "
                              "`quantmatch quantize MODEL --method gguf` instead")
    model = _read_model(source)
    files = _weight_files(source)
    where: dict[str, Path] = {}
    metas: dict[str, Mapping[str, Any]] = {}
    order: list[str] = []
    for f in files:
        for name, meta in _safetensors_header(f).items():
            where[name], metas[name] = f, meta
            order.append(name)
    groups = qc.get("config_groups") or {}
    scaled = [n.removesuffix(".weight_scale") for n in order if n.endswith(".weight_scale")]
    modules = set(scaled)
    layers: dict[str, _Layer] = {}
    for module in scaled:
        group = _group_for(module, groups, modules) or {}
        w = group.get("weights") or {}
        fmt = str(group.get("format") or qc.get("format") or "")
        scale_shape = [int(x) for x in metas[f"{module}.weight_scale"].get("shape") or []]
        if f"{module}.weight_packed" in metas:
            rows, cols = (int(x) for x in _read_small(where[f"{module}.weight_shape"], f"{module}.weight_shape"))
        elif f"{module}.weight" in metas:
            rows, cols = (int(x) for x in metas[f"{module}.weight"]["shape"])
        else:
            raise ConversionError(f"{source}: {module} has a weight_scale but no weight or weight_packed")
        new_name = model.gguf_name(f"{module}.weight", source)
        if new_name is None:  # a tied head that is quantized: llama.cpp uses output.weight when present
            new_name = "output.weight"
        ngroups = scale_shape[1] if len(scale_shape) == 2 else 1
        size = int(w.get("group_size") or 0) if w.get("strategy") == "group" else 0
        size = size or -(-cols // ngroups)  # the last group may be short
        layer = _Layer(module, new_name, rows, cols, int(w.get("num_bits") or 0), bool(w.get("symmetric", True)),
                       size, fmt, activations=_activation_text(group.get("input_activations")))
        _judge(layer, w, metas, where)
        layers[module] = layer
    problems = []
    kv = qc.get("kv_cache_scheme")
    kv_text = None
    if kv:
        kv_text = f"{kv.get('type', 'int')}{kv.get('num_bits', 8)} KV cache"
        problems.append(f"a quantized KV cache ({kv_text}): llama.cpp sets its own (--cache-type-k/-v)")
    return _Plan(model, files, where, order, layers, kv_text, problems)


def _judge(layer: _Layer, w: Mapping[str, Any], metas: Mapping[str, Any], where: Mapping[str, Path]) -> None:
    """Choose ``layer``'s GGUF type and list why blocks cannot hold its grid exactly (if they cannot)."""
    strategy = str(w.get("strategy") or ("group" if layer.group < layer.cols else "channel"))
    if w.get("type", "int") != "int" or layer.fmt not in _FORMATS:
        layer.refused.append(f"{w.get('type', '?')} weights in format {layer.fmt!r} are not an integer grid "
                             "(convert the float model with `--method gguf` instead)")
        return
    if strategy not in ("group", "channel", "tensor") or not 1 <= layer.bits <= 8:
        layer.refused.append(f"{strategy} int{layer.bits} scales are not supported by the exporter")
        return
    if layer.symmetric:
        layer.qtype = "q4_0" if layer.bits <= 4 else "q8_0"
    elif layer.bits <= 4:
        layer.qtype = "q4_1"
    else:
        layer.qtype = "q8_0"
        layer.problems.append(f"asymmetric int{layer.bits} (GGUF blocks with a minimum hold at most 4 bits)")
    group = layer.group if layer.group < layer.cols else 0
    if group % BLOCK:
        layer.problems.append(f"group {group} does not fill {BLOCK}-value blocks")
    if layer.cols % BLOCK:
        layer.problems.append(f"in_features {layer.cols} is not a multiple of {BLOCK}")
        layer.qtype = "f16"
    width = 8 if layer.qtype == "q8_0" else 4
    if not layer.problems and layer.bits < width:
        layer.widen.append(f"int{layer.bits} codes: no legacy GGUF block stores {layer.bits}-bit codes, they fit "
                           f"exactly only in {layer.qtype.upper()}'s {width}-bit ones (a file no smaller than a "
                           f"{width}-bit export)")
    if f"{layer.module}.weight_g_idx" in metas:
        import torch

        g_idx = _read_small(where[f"{layer.module}.weight_g_idx"], f"{layer.module}.weight_g_idx").long()
        if not group or not torch.equal(g_idx, torch.arange(layer.cols) // group):
            layer.problems.append("activation-order groups (weight_g_idx) that are not contiguous blocks")


def _reasons(plan: _Plan) -> tuple[list[str], list[str]]:
    """``(requantizable reasons, hard refusals)``, each once with its layer count and an example."""
    soft: dict[str, list[str]] = {}
    hard: dict[str, list[str]] = {}
    for layer in plan.layers.values():
        acts = [f"{layer.activations} activations: {_ACTIVATIONS_WHY}"] if layer.activations else []
        for p in layer.problems + layer.widen + acts:
            soft.setdefault(p, []).append(layer.module)
        for p in layer.refused:
            hard.setdefault(p, []).append(layer.module)

    def text(d: Mapping[str, list[str]]) -> list[str]:
        return [f"{p} ({len(m)} layer{'s' * (len(m) != 1)}, e.g. {m[0]})" for p, m in d.items()]

    return text(soft) + plan.problems, text(hard)


def export_refusals(source_dir: str | Path) -> tuple[str, ...]:
    """Why ``source_dir`` cannot be exported exactly (empty: it can); reads only config and headers.

    Raises :class:`~quantmatch.plugins.methods.gguf_convert.ConversionError` for a directory that is
    not a convertible compressed-tensors checkpoint at all.
    """
    soft, hard = _reasons(_plan(Path(source_dir)))
    return tuple(hard + soft)


# ---- blocks --------------------------------------------------------------------------------------

def _per_column(values: Any, group: int, columns: int, step: int = 1) -> Any:
    """``[rows, groups]`` per-group values at every ``step``-th of ``columns`` columns (``step=BLOCK``: per block)."""
    import numpy as np

    return np.asarray(values)[:, np.arange(0, columns, step) // group]


def _rel_change(exact: Any, rounded: Any) -> float:
    import numpy as np

    exact = np.asarray(exact, dtype=np.float64)
    diff = np.abs(rounded.astype(np.float64) - exact)
    nz = exact != 0
    rel = float((diff[nz] / np.abs(exact[nz])).max()) if nz.any() else 0.0
    return max(rel, float(np.inf if (diff[~nz] > 0).any() else 0.0))


def _pack_blocks(codes: Any, scale: Any, zero: Any | None, group: int, qtype: str) -> tuple[Any, float]:
    """``(bytes [rows, row_bytes], largest relative fp16 rounding of d/m)`` of exact Q4_0/Q4_1/Q8_0 blocks.

    ``codes`` are the signed integer codes ``[rows, cols]``, ``scale``/``zero`` ``[rows, groups]`` with
    ``group`` columns each (a multiple of 32, or all columns).
    """
    import numpy as np

    rows, cols = codes.shape
    nb = cols // BLOCK
    s = _per_column(np.asarray(scale, dtype=np.float64), group, cols, BLOCK)
    d = s.astype(np.float16)
    rounding = _rel_change(s, d)
    parts = [d.reshape(rows, nb, 1).view(np.uint8)]
    q = np.asarray(codes, dtype=np.int16).reshape(rows, nb, BLOCK)
    if qtype == "q8_0":
        parts.append(q.astype(np.int8).view(np.uint8))
    else:
        if qtype == "q4_1":
            z = 0.0 * s if zero is None else _per_column(np.asarray(zero, dtype=np.float64), group, cols, BLOCK)
            m_exact = -(z + 8) * s
            m = m_exact.astype(np.float16)
            rounding = max(rounding, _rel_change(m_exact, m))
            parts.append(m.reshape(rows, nb, 1).view(np.uint8))
        nib = (q + 8).astype(np.uint8)
        parts.append(nib[..., : BLOCK // 2] | (nib[..., BLOCK // 2:] << np.uint8(4)))
    return np.concatenate(parts, axis=-1).reshape(rows, -1), rounding


# ---- reading one quantized layer -------------------------------------------------------------------

def _unpack(packed: Any, bits: int, shape: tuple[int, ...], packed_dim: int = 1) -> Any:
    """compressed-tensors' own unpacking of int32-packed codes (signed int8 result)."""
    try:
        from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    except ImportError:  # compressed-tensors before 0.20
        from compressed_tensors.compressors.quantized_compressors.pack_quantized import (  # type: ignore
            unpack_from_int32,
        )
    import torch

    return unpack_from_int32(packed, bits, torch.Size(shape), packed_dim=packed_dim)


def _layer_arrays(layer: _Layer, get: Callable[[str], Any]) -> tuple[Any, Any, Any | None]:
    """``(codes int16 [rows, cols], scale fp64 [rows, groups], zero fp64 [rows, groups] or None)``, rows as stored."""
    import torch

    m = layer.module
    if layer.fmt == "pack-quantized":
        codes = _unpack(get(f"{m}.weight_packed"), layer.bits, (layer.rows, layer.cols))
    else:
        codes = get(f"{m}.weight")
    scale = get(f"{m}.weight_scale").to(torch.float64)
    scale = scale.reshape(layer.rows, -1) if scale.numel() > 1 else scale.reshape(1, 1).expand(layer.rows, 1)
    zero = None
    if not layer.symmetric:
        zp = get(f"{m}.weight_zero_point")
        if layer.fmt == "pack-quantized" and zp.dtype == torch.int32 and layer.bits < 8:  # packed along rows
            zp = _unpack(zp, layer.bits, (layer.rows, scale.shape[1]), packed_dim=0)
        zero = zp.to(torch.float64).reshape(scale.shape).numpy()
    return codes.to(torch.int16).numpy(), scale.numpy(), zero


def _dequantized(codes: Any, scale: Any, zero: Any | None, group: int) -> Any:
    """``(codes - zero) * scale`` in float32, each scale over its ``group`` columns."""
    import numpy as np

    cols = codes.shape[1]
    z = 0.0 if zero is None else _per_column(zero, group, cols)
    return ((codes - z) * _per_column(scale, group, cols)).astype(np.float32)


# ---- entry point ---------------------------------------------------------------------------------

def _file_type(counts: Mapping[str, int]) -> int:
    import gguf

    t = gguf.LlamaFileType
    quantized = {k: v for k, v in counts.items() if k in ("q4_0", "q4_1", "q8_0")}
    if not quantized:
        return int(t.MOSTLY_F16)
    top = max(quantized, key=lambda k: quantized[k])
    return int({"q4_0": t.MOSTLY_Q4_0, "q4_1": t.MOSTLY_Q4_1, "q8_0": t.MOSTLY_Q8_0}[top])


def _source_facts(source: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((source / "quantmatch.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: manifest[v] for k, v in (("source_method", "method"), ("source_scheme", "scheme"),
                                         ("source_model", "source_model")) if manifest.get(v)}


def export_compressed(source_dir: str | Path, out_dir: str | Path, *, allow_requantize: bool = False,
                      head: str = "source", progress: ProgressFn | None = None) -> dict[str, Any]:
    """Write the compressed-tensors checkpoint ``source_dir`` as ``out_dir/model.gguf``; return its details.

    ``out_dir`` is an existing directory (the caller adds the manifest and renames it into place).
    ``head``: ``"source"`` (embeddings and float LM head F16, as stored) or ``"q8_0"`` (those as Q8_0).
    ``progress("export", done, total)`` is called once per tensor written.

    Raises :class:`~quantmatch.sdk.export.ExportRefused` (listing every reason) before anything is read
    beyond the headers when a layer's grid cannot be held exactly and ``allow_requantize`` is false, or
    when a layer is not an integer grid at all; :class:`~quantmatch.plugins.methods.gguf_convert.ConversionError`
    for a directory that is not a convertible compressed-tensors checkpoint.

    The details: ``exported_from``, ``source_format``, ``gguf_file``, ``exact`` (every grid held without
    change: nothing requantized, no scale or minimum rounded, no activation quantization dropped),
    ``tensor_types`` (count per GGUF type), ``requantized`` and ``widened`` (HF module names),
    ``scale_rounding_max_rel`` (largest relative change of a block scale or minimum from fp16 rounding),
    ``head``, ``activations_dropped`` (when allowed), ``size_bytes`` and ``seconds``, plus the source
    manifest's method/scheme/model when it has one.
    """
    import gguf
    import torch
    from safetensors import safe_open

    started = time.perf_counter()
    source, out = Path(source_dir), Path(out_dir)
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    plan = _plan(source)
    soft, hard = _reasons(plan)
    if hard or (soft and not allow_requantize):
        fix = f"; {_FIX}" if soft and not hard else ""
        raise ExportRefused(f"{source}: cannot export to GGUF exactly: " + "; ".join(hard + soft) + fix,
                            tuple(hard + soft))
    layers = plan.layers
    by_first: dict[str, _Layer] = {}  # a layer is written where its first tensor is
    owned: set[str] = set()
    begun: set[str] = set()
    for n in plan.order:
        mod, _, suffix = n.rpartition(".")
        if mod in layers and suffix in (*_PARAM_SUFFIXES, "weight"):
            if mod not in begun:
                by_first[n] = layers[mod]
                begun.add(mod)
            owned.add(n)
        elif suffix in _KV_PARAMS:  # a quantized KV cache's scales: dropped (see the refusal)
            owned.add(n)
    q = gguf.GGMLQuantizationType
    head_names = ("token_embd.weight", "output.weight")
    types: Counter[str] = Counter()
    for layer in layers.values():
        types[layer.qtype] += 1
    rounding = 0.0
    requantized: list[str] = []
    model = plan.model
    total = len(layers) + sum(1 for n in plan.order if n not in owned)

    with ExitStack() as stack:
        handles = {f: stack.enter_context(safe_open(str(f), framework="pt", device="cpu")) for f in plan.files}

        def get(name: str) -> Any:
            return handles[plan.where[name]].get_tensor(name)

        def tensors() -> Iterator[tuple[str, Any, Any]]:
            done = 0
            for name in plan.order:
                layer = by_first.get(name)
                if layer is None and name in owned:
                    continue
                done += 1
                if progress is not None:
                    progress("export", done, total)
                if layer is not None:
                    yield layer.gguf_name, *_write_layer(layer)
                    continue
                new_name = model.gguf_name(name, source)
                if new_name is None:
                    continue
                data = model.permute_rows(name, get(name).to(torch.float32)).numpy()
                qtype = _stored_type(new_name, data.ndim, "f16")
                if head == "q8_0" and new_name in head_names and data.ndim == 2 and data.shape[1] % BLOCK == 0:
                    qtype = q.Q8_0
                types[qtype.name.lower()] += 1
                yield (new_name, *_float_payload(data, qtype))

        def _write_layer(layer: _Layer) -> tuple[Any, Any]:
            nonlocal rounding
            codes, scale, zero = _layer_arrays(layer, get)
            hf = f"{layer.module}.weight"
            codes, scale = model.permute_rows(hf, codes), model.permute_rows(hf, scale)
            zero = None if zero is None else model.permute_rows(hf, zero)
            if layer.problems:
                requantized.append(layer.module)
                w = _dequantized(codes, scale, zero, layer.group)
                return _float_payload(w, q.F16 if layer.qtype == "f16" else q[layer.qtype.upper()])
            data, r = _pack_blocks(codes, scale, zero, layer.group, layer.qtype)
            rounding = max(rounding, r)
            return data, q[layer.qtype.upper()]

        path = out / GGUF_FILE
        _write_file(path, source, model, _file_type(types), source.name, None, tensors())

    dropped = sorted({la.activations for la in layers.values() if la.activations})
    details: dict[str, Any] = {
        "exported_from": str(source), "source_format": "compressed-tensors", "gguf_file": GGUF_FILE,
        **_source_facts(source),
        "exact": not requantized and not dropped and not plan.kv_cache,
        "tensor_types": dict(sorted(types.items())),
        "requantized": requantized,
        "widened": sorted(la.module for la in layers.values() if la.widened),
        "scale_rounding_max_rel": rounding,
        "head": head,
        "size_bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if dropped:
        details["activations_dropped"] = dropped
    if plan.kv_cache:
        details["kv_cache_dropped"] = plan.kv_cache
    return details
