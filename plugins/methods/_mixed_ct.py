"""Mixed-precision compressed-tensors checkpoints: one scheme per linear layer, from a recipe.

A recipe maps units (transformers module names, ``model.layers.3.mlp.down_proj``) to schemes
(``w4a16-g128``, ``w8a16``, ``w8a8-int8`` ...; ``fp16``/``bf16`` keep the layer unquantized). The
assignments are per-module layer rules (:class:`~quantmatch.sdk.layerwise.LayerRule`, first match
wins, matched with :func:`~quantmatch.sdk.layerwise.assign`), except that each carries a whole scheme
(bits, group size, symmetry, activations), not a precision that borrows the rest from one scheme.

:func:`quantize_mixed` writes ONE checkpoint in the library's own layout, as llm-compressor writes
mixed-precision models: one ``config_groups`` entry per distinct (weight grid, activation mode), its
``targets`` listing the module names, float layers under ``ignore``, and ``format`` ``mixed-precision``
with a format per group when the groups pack differently (``pack-quantized`` for weight-only,
``int-quantized`` for W8A8). :func:`unit_variants` yields, per unit and scheme, the weight exactly as
that checkpoint decompresses it (same round-to-nearest, same scale rounding to the stored float type)
and the bytes the library stores for the module (its own compressor run on the module's tensors).

vLLM fuses ``q/k/v_proj`` into ``qkv_proj`` and ``gate/up_proj`` into ``gate_up_proj`` and requires all
shards of a fused layer to share one scheme (vllm-project/vllm
vllm/model_executor/layers/quantization/compressed_tensors/utils.py ``should_ignore_layer``,
``_match_fused_layer`` @008014e8); :func:`quantize_mixed` refuses recipes that split them unless
``fused_check=False``.

Torch, transformers and compressed-tensors are imported inside the functions.
"""

from __future__ import annotations

import difflib
import fnmatch
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantmatch.plugins.methods import _torch_artifact as ta
from quantmatch.plugins.methods._common import CompressedOptions
from quantmatch.sdk.artifact import path_size
from quantmatch.sdk.errors import InputError
from quantmatch.sdk.layerwise import FLOAT_PRECISIONS, LayerRule, assign, check_rules
from quantmatch.sdk.quantizer import Quantizer, UnitVariant
from quantmatch.sdk.scheme import parse_scheme

if TYPE_CHECKING:
    from quantmatch.plugins.methods._compressed import CompressedArtifact
    from quantmatch.plugins.methods.algorithms.rtn import IntGrid, QuantizedWeight

__all__ = [
    "FUSED_SHARDS",
    "MIXED_KEYS",
    "MixedRecipeError",
    "UnitKind",
    "decompressed_state",
    "fused_conflicts",
    "quantize_mixed",
    "unit_kind",
    "unit_variants",
]

FUSED_SHARDS: tuple[tuple[str, ...], ...] = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
"""Projections vLLM loads as one fused layer (``qkv_proj``, ``gate_up_proj``): one scheme for all."""

MIXED_KEYS = frozenset({"base_scheme", "fused_check"})
"""Options of :func:`quantize_mixed` beside the method's own: ``base_scheme`` (the scheme of units the
recipe does not list; default: kept float) and ``fused_check`` (default true)."""

_FLOAT_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


class MixedRecipeError(InputError):
    """A recipe names an unknown module, a scheme this method cannot write per layer, or splits a fused layer."""


@dataclass(frozen=True)
class UnitKind:
    """What one scheme means for one layer: its integer ``grid`` (``None``: kept float) and activation
    mode (``None``: weight-only, ``dynamic``: int8 per token)."""

    scheme: str
    grid: IntGrid | None
    activations: str | None = None

    @property
    def quantized(self) -> bool:
        return self.grid is not None


def unit_kind(quantizer: Quantizer, scheme: str) -> UnitKind:
    """The :class:`UnitKind` of ``scheme`` for ``quantizer`` (whose ``not_produced`` and ``check`` judge
    it); :class:`MixedRecipeError` for schemes a per-layer recipe cannot use."""
    from quantmatch.plugins.methods.algorithms.rtn import IntGrid

    text = scheme.strip().lower()
    if text in FLOAT_PRECISIONS:
        return UnitKind(text, None)
    s = parse_scheme(text)
    why = quantizer.not_produced(s) + [str(p) for p in quantizer.check(None, s) if p.fatal]
    if s.weight_format != "int" or s.is_gguf:
        why.append(f"{s} does not have integer weights")
    if s.static_activations:
        why.append(f"{s} calibrates static activation scales for the whole model")
    if why:
        raise MixedRecipeError(
            f"a {quantizer.name} recipe cannot give a layer {s}: {'; '.join(why)}; use per-layer schemes "
            f"among {', '.join(_recipe_schemes(quantizer))} or fp16/bf16 (kept float)",
            choices=[*_recipe_schemes(quantizer), "fp16", "bf16"])
    grid = IntGrid(s.weight_bits, s.group_size or 0, s.symmetric)
    return UnitKind(str(s), grid, "dynamic" if s.activation_type == "int8" else None)


def _recipe_schemes(quantizer: Quantizer) -> list[str]:
    out = []
    for text in quantizer.schemes:
        s = parse_scheme(text)
        if not quantizer.not_produced(s) and not s.static_activations and s.weight_format == "int":
            out.append(text)
    return out


def _storage_dtype(kinds: Sequence[UnitKind], chosen: str | None) -> str:
    """The checkpoint's one float type: ``chosen``, else the one every scheme implies (fp16 by default)."""
    if chosen:
        return chosen
    implied = {(_FLOAT_DTYPES[k.scheme] if not k.quantized else ta.storage_dtype(parse_scheme(k.scheme)))
               for k in kinds}
    if len(implied) > 1:
        raise MixedRecipeError(f"the recipe's schemes store different float types ({', '.join(sorted(implied))}); "
                               "a checkpoint has one: pass the option dtype=float16 or dtype=bfloat16")
    return implied.pop() if implied else "float16"


def _units(model: Any, exclude: Sequence[str]) -> list[str]:
    """The linear layers a recipe can address: every ``nn.Linear`` not matched by ``exclude``."""
    import torch

    return [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not any(fnmatch.fnmatchcase(n, p) for p in exclude)]


def _quantize_unit(weight: Any, grid: IntGrid, dtype: Any) -> QuantizedWeight:
    """Round-to-nearest of one weight with its scales rounded to the checkpoint's ``dtype`` (the path
    :func:`quantize_mixed` and the RTN method take)."""
    from quantmatch.plugins.methods.algorithms.export import round_scales
    from quantmatch.plugins.methods.algorithms.rtn import rtn

    qw = rtn(weight.detach().float(), grid)
    round_scales({"unit": qw}, dtype)
    return qw


def _ct_scheme(kind: UnitKind) -> Any:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    from quantmatch.plugins.methods.algorithms.export import quantization_args

    assert kind.grid is not None
    act = (QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True)
           if kind.activations == "dynamic" else None)
    return QuantizationScheme(targets=["Linear"], weights=quantization_args(kind.grid), input_activations=act)


def _stored_bytes(layer: Any, kind: UnitKind, qw: QuantizedWeight | None, dtype: Any) -> int:
    """Bytes the checkpoint stores for ``layer``: the library's compressor (the format it infers for
    the scheme) run on the layer's tensors, floats in ``dtype``; a float layer stores weight and bias."""
    import torch

    bias = 0 if layer.bias is None else layer.bias.numel() * torch.empty((), dtype=dtype).element_size()
    if qw is None:
        return int(layer.weight.numel() * torch.empty((), dtype=dtype).element_size() + bias)
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.compressors.format import infer_module_format

    scheme = _ct_scheme(kind)
    fmt = infer_module_format(torch.nn.Linear, scheme)
    state: dict[str, Any] = {"weight": qw.weight.float(), "weight_scale": qw.scale.float()}
    if qw.zero_point is not None:
        state["weight_zero_point"] = qw.zero_point.to(torch.int8)
    compressed = BaseCompressor.get_value_from_registry(fmt.value).compress(state, scheme)
    total = 0
    for t in compressed.values():
        total += t.numel() * (torch.empty((), dtype=dtype).element_size() if t.is_floating_point()
                              else t.element_size())
    return int(total + bias)


def _split_options(quantizer: Quantizer, options: Mapping[str, Any]) -> tuple[CompressedOptions, dict[str, Any]]:
    mine = {k: options[k] for k in MIXED_KEYS if k in options}
    rest = {k: v for k, v in options.items() if k not in MIXED_KEYS}
    cls = quantizer.options if issubclass(quantizer.options, CompressedOptions) else CompressedOptions
    return cls.of(rest, quantizer.name), mine


def unit_variants(quantizer: Quantizer, source: Any, schemes: Sequence[str],
                  **options: Any) -> Iterator[UnitVariant]:
    """For each linear layer (``exclude`` patterns aside: the LM head by default) and each scheme, a
    ``UnitVariant(unit, hf_name, scheme, nbytes, weight)``: ``unit`` the module name, ``hf_name`` its
    weight's parameter name, ``weight`` a float32 ``numpy`` array ``[out, in]`` holding exactly the values
    :func:`quantize_mixed`'s checkpoint decompresses to (round-to-nearest, scales rounded to the stored
    float type, the product rounded to it), ``nbytes`` what the checkpoint stores for the module (packed
    codes, ``weight_shape``, scales, zero points; weight and bias for ``fp16``/``bf16``). A scheme whose
    group size does not divide a layer's input width yields no variant for that layer.

    ``options``: the method's (``exclude``, ``dtype``: the stored float type, default from the schemes,
    ``threads``); pass the same ``dtype`` and ``exclude`` to :func:`quantize_mixed`.
    """
    import torch

    from quantmatch.sdk.models import torch_dtype

    cfg, _ = _split_options(quantizer, options)
    kinds = [unit_kind(quantizer, s) for s in dict.fromkeys(schemes)]
    dtype = torch_dtype(_storage_dtype(kinds, cfg.dtype))
    src = ta.resolve_source(source)
    model, _tok = ta.load_float_model(src, "float32", options.get("progress"))
    sizes: dict[tuple[Any, ...], int] = {}
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        with torch.no_grad():
            for unit in _units(model, cfg.exclude):
                layer = model.get_submodule(unit)
                for kind in kinds:
                    if kind.grid is not None and layer.weight.shape[1] % (kind.grid.group_size or 1):
                        continue
                    qw = None if kind.grid is None else _quantize_unit(layer.weight, kind.grid, dtype)
                    w = layer.weight if qw is None else qw.weight
                    deq = w.detach().to(dtype).float().numpy()
                    key = (tuple(layer.weight.shape), layer.bias is not None, kind.scheme)
                    if key not in sizes:  # the stored bytes depend on the shape and the scheme alone
                        sizes[key] = _stored_bytes(layer, kind, qw, dtype)
                    yield UnitVariant(unit, f"{unit}.weight", kind.scheme, sizes[key], deq)
    finally:
        torch.set_num_threads(before)


def fused_conflicts(schemes: Mapping[str, str]) -> list[str]:
    """One line per fused layer whose shards (``FUSED_SHARDS``) got different schemes."""
    out = []
    for name in sorted(schemes):
        parent, _, proj = name.rpartition(".")
        for shards in FUSED_SHARDS:
            if proj != shards[0]:
                continue
            got = {s: schemes.get(f"{parent}.{s}") for s in shards if f"{parent}.{s}" in schemes}
            if len(set(got.values())) > 1:
                out.append(f"{parent}: " + ", ".join(f"{s}={v}" for s, v in got.items()))
    return out


def _resolve(quantizer: Quantizer, units: Sequence[str], assignments: Mapping[str, str],
             base_scheme: str | None) -> dict[str, UnitKind]:
    """Each unit's kind: the first assignment that names (or, as a layer-rule glob, matches) it, else
    ``base_scheme``, else float. A key may name the module's weight (``....down_proj.weight``)."""
    assignments = {k.removesuffix(".weight"): v for k, v in assignments.items()}
    kinds = {s: unit_kind(quantizer, s) for s in dict.fromkeys([*assignments.values(), base_scheme or ""]) if s}
    rules = [LayerRule(key, (key,), "fp16" if not kinds[s].quantized else f"int{kinds[s].grid.bits}")  # type: ignore[union-attr]
             for key, s in assignments.items()]
    hits = check_rules(units, rules)
    shadowed = [h.rule.name for h in hits if h.unused and h.shadowed]
    if shadowed:
        raise MixedRecipeError(f"recipe entries {', '.join(shadowed[:5])} decide no module: earlier entries match "
                               "all of theirs (the first match wins); put the specific entries first")
    unused = [h.rule.name for h in hits if h.unused]
    if unused:
        close = difflib.get_close_matches(unused[0], units, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise MixedRecipeError(
            f"the recipe names {len(unused)} module(s) that are not quantizable linear layers of this model: "
            f"{', '.join(unused[:5])}{hint}; name linear modules by their transformers names (the LM head "
            "and layers matched by the option exclude stay float)", choices=units)
    base = kinds[base_scheme] if base_scheme else UnitKind("fp16", None)
    return {u: (kinds[assignments[r.name]] if r is not None else base) for u, r in assign(units, rules).items()}


def quantize_mixed(quantizer: Quantizer, source: Any, assignments: Mapping[str, str], out: Any,
                   **options: Any) -> CompressedArtifact:
    """Write ONE compressed-tensors checkpoint into ``out`` (a fresh directory the caller owns and
    renames), each linear layer on its assigned scheme by round-to-nearest.

    ``assignments``: unit (module name, or a layer-rule glob; the first match wins) -> scheme. Units it
    leaves out take ``base_scheme`` (option; default: kept float, as the LM head and ``exclude``
    matches always are). ``fused_check`` (default true) refuses recipes that give ``q/k/v_proj`` or
    ``gate/up_proj`` of one block different schemes (vLLM cannot load them). Other ``options``: the
    method's (``exclude``, ``dtype``, ``threads``) and the pipeline's ``progress``. Weights equal
    :func:`unit_variants`' for the same schemes, ``dtype`` and ``exclude``.
    """
    import torch
    from compressed_tensors.quantization import apply_quantization_config

    from quantmatch.plugins.methods._compressed import CompressedArtifact, _own_memory
    from quantmatch.plugins.methods.algorithms.export import load_quantized, quantization_config, save_compressed
    from quantmatch.plugins.methods.algorithms.rtn import store
    from quantmatch.sdk.models import torch_dtype

    started = time.perf_counter()
    cfg, mine = _split_options(quantizer, options)
    if not assignments:
        raise MixedRecipeError("the recipe assigns no module; give each linear module a scheme")
    src = ta.resolve_source(source)
    progress = options.get("progress")
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        model, tokenizer = ta.load_float_model(src, "float32", progress)
        _own_memory(model)
        units = _units(model, cfg.exclude)
        table = _resolve(quantizer, units, assignments, mine.get("base_scheme"))
        if str(mine.get("fused_check", True)).strip().lower() not in ("false", "0", "no", "off"):
            bad = fused_conflicts({u: k.scheme for u, k in table.items()})
            if bad:
                raise MixedRecipeError(
                    f"vLLM fuses q/k/v_proj and gate/up_proj and needs one scheme per fused layer; this recipe "
                    f"splits {len(bad)}: {'; '.join(bad[:3])}; give the shards one scheme (or fused_check=false "
                    "for runtimes that do not fuse, such as transformers)")
        named = dict.fromkeys([*assignments.values(), mine.get("base_scheme") or ""])
        explicit = [unit_kind(quantizer, s) for s in named if s]
        dtype = torch_dtype(_storage_dtype(explicit, cfg.dtype))
        undivided = [f"{u} ({k.scheme}: in_features {model.get_submodule(u).weight.shape[1]})"
                     for u, k in table.items() if k.grid is not None and k.grid.group_size
                     and model.get_submodule(u).weight.shape[1] % k.grid.group_size]
        if undivided:
            raise MixedRecipeError(f"group size does not divide the input width of {', '.join(undivided[:3])}; "
                                   "assign these layers a smaller group or per-channel scheme")
        embeddings = model.get_input_embeddings().weight
        tied = [u for u, k in table.items() if k.quantized and model.get_submodule(u).weight is embeddings]
        if tied:
            raise MixedRecipeError(f"{tied[0]} shares its weight with the embeddings; keep it float (fp16)")
        quantized = [u for u, k in table.items() if k.grid is not None]
        weights: dict[str, QuantizedWeight] = {}
        with torch.no_grad():
            for i, unit in enumerate(quantized):
                grid = table[unit].grid
                assert grid is not None
                lin = model.get_submodule(unit)
                weights[unit] = store(lin, _quantize_unit(lin.weight, grid, dtype))
                if progress:
                    progress("quantize", i + 1, len(quantized))
            ignore = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in weights]
            config = quantization_config({u: (w.grid, table[u].activations) for u, w in weights.items()}, ignore,
                                         single_target=False)
            apply_quantization_config(model, config, show_progress=False)
            for unit, qw in weights.items():
                load_quantized(model.get_submodule(unit), qw)
        if progress:
            progress("save", 0, 1)
        save_compressed(model, out, tokenizer, dtype=dtype)
        if progress:
            progress("save", 1, 1)
    finally:
        torch.set_num_threads(before)
    counts = Counter(k.scheme for k in table.values())
    details = {"recipe": dict(sorted(counts.items())), "assignments": {u: k.scheme for u, k in table.items()},
               "config_groups": len(config.config_groups)}
    scheme = "mixed(" + ", ".join(f"{s}x{n}" for s, n in sorted(counts.items())) + ")"
    return CompressedArtifact(Path(out), quantizer.name, scheme, str(dtype).removeprefix("torch."), path_size(out),
                              time.perf_counter() - started, len(weights), details)


def _group_of(module: str, groups: Mapping[str, Any]) -> Any:
    """The first config group whose targets name ``module`` (exactly, by ``re:`` regex, or ``Linear``)."""
    import re

    for group in groups.values():
        for target in group.targets:
            if target == module or target == "Linear" or (target.startswith("re:") and re.match(target[3:], module)):
                return group
    return None


def decompressed_state(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's state dict with every quantized module's weight decompressed by the library's
    own compressor for that module's config group (floats as stored; tied weights as saved)."""
    import json

    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme
    from safetensors.torch import load_file

    d = Path(directory)
    qc = json.loads((d / "config.json").read_text(encoding="utf-8")).get("quantization_config") or {}
    groups = {k: QuantizationScheme.model_validate(v) for k, v in (qc.get("config_groups") or {}).items()}
    state: dict[str, Any] = {}
    for shard in sorted(d.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    modules = sorted({k.rpartition(".")[0] for k in state if k.endswith(".weight_scale")})
    for module in modules:
        group = _group_of(module, groups)
        if group is None:
            raise ValueError(f"{d}: {module} has quantization scales but no config group targets it")
        prefix = module + "."
        local = {k[len(prefix):]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
        bias = local.pop("bias", None)
        compressor = BaseCompressor.get_value_from_registry(group.format or qc.get("format"))
        out = compressor.decompress(local, group)
        state[prefix + "weight"] = out["weight"].to(local["weight_scale"].dtype)
        if bias is not None:
            state[prefix + "bias"] = bias
    return state
