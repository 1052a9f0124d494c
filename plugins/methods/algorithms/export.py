"""compressed-tensors checkpoints, written by the ``compressed-tensors`` library itself.

:func:`attach` turns a model whose linear layers already hold dequantized weights (from GPTQ, AWQ,
SmoothQuant or round-to-nearest) into a compressed-tensors quantized model: the library's
``apply_quantization_config`` adds ``weight_scale``/``weight_zero_point`` (and ``input_scale`` for
static activations) to each layer, and the scales computed here are copied in. The model then runs
compressed-tensors' own fake quantization (weights, and activations for W8A8), so evaluating it in
memory shows exactly what the checkpoint will compute. :func:`save_compressed` lets the library's
``ModelCompressor`` pack the integer codes (``pack-quantized`` for weight-only, ``int-quantized``
for W8A8) and writes the checkpoint with ``save_pretrained``; the codes it derives from
``weight / scale`` are exactly the ones the algorithm chose, because the weights are on the grid.

The result loads with ``transformers.AutoModelForCausalLM.from_pretrained`` and is the layout vLLM
runs. One workaround: transformers 5 with compressed-tensors 0.20 cannot load a *packed* zero point
(it sizes the parameter unpacked), so asymmetric ``pack-quantized`` checkpoints also set
``"dequantize": true`` in ``quantization_config``, which makes transformers unpack the weights at load
time (vLLM ignores the key).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from quantmatch.plugins.methods.algorithms.rtn import IntGrid, QuantizedWeight, dequantize

__all__ = ["ACTIVATION_MODES", "activation_modes", "attach", "load_quantized", "mark_packed_zero_points",
           "quantization_args", "quantization_config", "round_scales", "save_compressed"]

ACTIVATION_MODES = (None, "dynamic", "static")
"""Weight-only, int8 per-token dynamic, int8 per-tensor static activations."""


def quantization_args(grid: IntGrid) -> Any:
    """The compressed-tensors ``QuantizationArgs`` of a weight grid."""
    from compressed_tensors.quantization import QuantizationArgs

    if grid.group_size:
        return QuantizationArgs(num_bits=grid.bits, type="int", symmetric=grid.symmetric, strategy="group",
                                group_size=grid.group_size)
    return QuantizationArgs(num_bits=grid.bits, type="int", symmetric=grid.symmetric, strategy="channel")


def _activation_args(mode: str) -> Any:
    from compressed_tensors.quantization import QuantizationArgs

    if mode == "dynamic":
        return QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True)
    return QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="tensor", dynamic=False)


@torch.no_grad()
def round_scales(weights: Mapping[str, QuantizedWeight], dtype: torch.dtype) -> Mapping[str, QuantizedWeight]:
    """Round every scale to ``dtype`` (the checkpoint's float type) and recompute the weights from the
    same codes, in place; returns ``weights``.

    Rounding the scales first keeps the stored codes exactly those chosen: a weight rounded to a
    16-bit type after dequantization could land on a neighbouring 8-bit code.
    """
    if dtype == torch.float32:
        return weights
    for qw in weights.values():
        codes = qw.codes().float()
        g = qw.grid.group_of(codes.shape[1])
        qw.scale = qw.scale.to(dtype).float()
        zero = None if qw.zero_point is None else qw.zero_point.float().repeat_interleave(g, dim=1)
        qw.weight.copy_(dequantize(codes, qw.scale.repeat_interleave(g, dim=1), zero))
    return weights


def quantization_config(kinds: Mapping[str, tuple[IntGrid, str | None]], ignore: Iterable[str],
                        single_target: bool = True) -> Any:
    """The compressed-tensors ``QuantizationConfig`` (status ``frozen``) for layers of the given
    ``(grid, activation mode)`` kinds, by full module name: one config group per kind, the largest first;
    a model with one kind targets ``Linear`` (with ``single_target``), else the layer names. ``ignore``:
    the linear layers left in float."""
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, QuantizationStatus

    by_kind: dict[tuple[IntGrid, str | None], list[str]] = defaultdict(list)
    for name, kind in kinds.items():
        by_kind[kind].append(name)
    single = single_target and len(by_kind) == 1
    groups = {}
    for i, ((grid, act), names) in enumerate(sorted(by_kind.items(), key=lambda kv: -len(kv[1]))):
        groups[f"group_{i}"] = QuantizationScheme(
            targets=["Linear"] if single else sorted(names), weights=quantization_args(grid),
            input_activations=_activation_args(act) if act else None)
    return QuantizationConfig(config_groups=groups, ignore=sorted(ignore),
                              quantization_status=QuantizationStatus.FROZEN)


@torch.no_grad()
def load_quantized(module: Any, qw: QuantizedWeight, input_scale: Tensor | None = None) -> None:
    """Copy ``qw`` (and a static ``input_scale``) into a layer that ``apply_quantization_config`` prepared."""
    module.weight.copy_(qw.weight.to(module.weight.dtype))
    module.weight_scale.copy_(qw.scale.reshape(module.weight_scale.shape))
    if qw.zero_point is not None:
        module.weight_zero_point.copy_(qw.zero_point.reshape(module.weight_zero_point.shape))
    if input_scale is not None:
        module.input_scale.copy_(input_scale.reshape(module.input_scale.shape))


def activation_modes(names: Iterable[str], activations: str | None,
                     input_scales: Mapping[str, Tensor]) -> dict[str, str | None]:
    """Each layer's activation mode: with ``static``, a layer without an input scale runs per-token dynamic."""
    return {n: "dynamic" if activations == "static" and n not in input_scales else activations for n in names}


@torch.no_grad()
def attach(model: nn.Module, weights: Mapping[str, QuantizedWeight], activations: str | None = None,
           input_scales: Mapping[str, Tensor] | None = None) -> Any:
    """Make ``model`` a compressed-tensors quantized model (status ``frozen``); returns the config.

    ``weights`` maps full module names to their quantized weights, which are copied into the layers.
    ``activations`` is ``None`` (weight-only), ``dynamic`` (int8 per token) or ``static`` (int8 per
    tensor, scales from ``input_scales``; a quantized layer without one falls back to per-token
    dynamic activations). Linear layers not in ``weights`` are listed as ignored.
    """
    from compressed_tensors.quantization import apply_quantization_config

    if activations not in ACTIVATION_MODES:
        raise ValueError(f"activations must be one of {ACTIVATION_MODES}, not {activations!r}")
    if activations == "static" and not input_scales:
        raise ValueError("static activations need input_scales (a layer without one runs per-token dynamic)")
    scales = input_scales or {}
    modes = activation_modes(weights, activations, scales)
    ignore = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in weights]
    config = quantization_config({n: (qw.grid, modes[n]) for n, qw in weights.items()}, ignore)
    apply_quantization_config(model, config, show_progress=False)
    for name, qw in weights.items():
        load_quantized(model.get_submodule(name), qw, scales[name] if modes[name] == "static" else None)
    return config


def save_compressed(model: nn.Module, out: str | Path, tokenizer: Any = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Compress ``model`` (after :func:`attach`) with the library and write the checkpoint into ``out``.

    ``dtype`` is the float type of everything stored as floats (scales, norms, embeddings); the codes
    are taken before the cast. The in-memory model is compressed (and cast) in place.
    """
    from compressed_tensors.compressors import ModelCompressor

    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    hf: Any = model
    if dtype is not None:
        hf.to(dtype)
    hf.save_pretrained(str(directory))
    compressor.update_config(str(directory))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    mark_packed_zero_points(directory)
    return directory


def mark_packed_zero_points(directory: str | Path) -> bool:
    """Set ``dequantize`` in an asymmetric ``pack-quantized`` checkpoint's config (see the module doc)."""
    path = Path(directory) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    qc = config.get("quantization_config", {})
    packed_asym = any(g.get("format", qc.get("format")) == "pack-quantized" and g.get("weights")
                      and not g["weights"].get("symmetric", True) for g in qc.get("config_groups", {}).values())
    if packed_asym:
        qc["dequantize"] = True
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return bool(packed_asym)
