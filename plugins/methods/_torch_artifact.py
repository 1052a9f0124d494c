"""What the PyTorch method plugins (quanto, HQQ) share: per-module precision, and the artifact layout.

An artifact directory written here holds:

- ``model.safetensors``: the quantized state dict (tensors that share storage, such as tied
  embeddings, stored once);
- ``quantization.json``: the layout, ``{"method", "dtype", "modules": {name: {...}}, "aliases"}``,
  one entry per quantized module (its weight type, group size, activations ...);
- ``config.json`` and the tokenizer files of the source model, so the directory is self-contained.

Torch and transformers are imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.artifact import ArtifactError, path_size
from quantmatch.sdk.layerwise import FLOAT_PRECISIONS, LayerRule, assign
from quantmatch.sdk.scheme import Scheme

__all__ = [
    "LAYOUT_FILE",
    "WEIGHTS_FILE",
    "QuantizedModel",
    "TorchArtifact",
    "check_loaded",
    "conv1d_to_linear",
    "empty_model",
    "float_state",
    "linear_precisions",
    "load_float_model",
    "load_layout",
    "load_state",
    "resolve_source",
    "save_artifact",
    "set_module",
    "storage_dtype",
]

WEIGHTS_FILE = "model.safetensors"
LAYOUT_FILE = "quantization.json"
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TorchArtifact:
    """What a PyTorch method plugin wrote: the directory, the scheme produced and per-module facts."""

    path: Path
    method: str
    scheme: str
    dtype: str
    size_bytes: int
    seconds: float
    modules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for spec in self.modules.values():
            key = str(spec.get("precision", "?"))
            counts[key] = counts.get(key, 0) + 1
        return {"path": str(self.path), "method": self.method, "scheme": self.scheme, "dtype": self.dtype,
                "size_bytes": self.size_bytes, "seconds": round(self.seconds, 3),
                "quantized_modules": counts, **dict(self.details)}


def storage_dtype(scheme: Scheme) -> str:
    """The float type an artifact stores and computes in: fp32 for ``a32``, bf16 for ``-bf16``, else fp16."""
    return {"fp32": "float32", "bf16": "bfloat16"}.get(scheme.compute_dtype, "float16")


def resolve_source(model: Any) -> Any:
    """A :class:`~quantmatch.sdk.models.ModelSource` for a source object or anything ``resolve_model`` takes."""
    if hasattr(model, "load") and hasattr(model, "info"):
        return model
    from quantmatch.sdk.models import resolve_model

    return resolve_model(model)


def set_module(root: Any, name: str, module: Any) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def conv1d_to_linear(model: Any) -> int:
    """Replace transformers' ``Conv1D`` (GPT-2's transposed linear) by ``nn.Linear``; return the count.

    quanto and HQQ quantize ``nn.Linear`` only; the math is identical (``x @ W + b``).
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    found = [(n, m) for n, m in model.named_modules() if isinstance(m, Conv1D)]
    for name, conv in found:
        lin = torch.nn.Linear(conv.nx, conv.nf, bias=True, dtype=conv.weight.dtype, device=conv.weight.device)
        with torch.no_grad():
            lin.weight.copy_(conv.weight.t())
            lin.bias.copy_(conv.bias)
        set_module(model, name, lin)
    return len(found)


def linear_precisions(model: Any, scheme_weights: str, rules: Sequence[LayerRule],
                      exclude: Iterable[str]) -> dict[str, str | None]:
    """Each ``nn.Linear``'s precision: the first matching rule's, else ``None`` (kept float) when a
    pattern in ``exclude`` matches, else the scheme's weight type. Float precisions map to ``None``."""
    import fnmatch

    import torch

    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    excluded = tuple(exclude)
    out: dict[str, str | None] = {}
    for name, rule in assign(names, rules).items():
        if rule is not None:
            out[name] = None if rule.precision in FLOAT_PRECISIONS else rule.precision
        elif any(fnmatch.fnmatchcase(name, p) for p in excluded):
            out[name] = None
        else:
            out[name] = scheme_weights
    return out


def _dedupe(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Drop tensors that share storage with an earlier one (tied weights); return the aliases."""
    kept: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...], Any], str] = {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), tuple(t.shape), t.dtype) if t.numel() else (id(t), (), t.dtype)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        kept[name] = t.detach().contiguous()
    return kept, aliases


@dataclass
class QuantizedModel:
    """A model quantized in memory, with what :func:`save_artifact` records about it."""

    model: Any
    tokenizer: Any
    method: str
    scheme: Scheme
    dtype: str
    modules: Mapping[str, Mapping[str, Any]]
    details: Mapping[str, Any] = field(default_factory=dict)


def load_float_model(source: Any, dtype: str, progress: ProgressFn | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a source in ``dtype``, GPT-2's ``Conv1D`` layers made ``nn.Linear``."""
    if progress:
        progress("load", 0, 1)
    model, tokenizer = source.load(dtype)
    if model.config.model_type == "gpt2":
        conv1d_to_linear(model)
    if progress:
        progress("load", 1, 1)
    return model, tokenizer


def save_artifact(quantized: QuantizedModel, out: Path, *, started: float,
                  progress: ProgressFn | None = None) -> TorchArtifact:
    """Write weights, layout, config and tokenizer into ``out``; return the :class:`TorchArtifact`.

    ``started`` is the ``time.perf_counter()`` value when quantization began (for the wall time).
    """
    from safetensors.torch import save_file

    model, tokenizer, method = quantized.model, quantized.tokenizer, quantized.method

    if progress:
        progress("save", 0, 1)
    out.mkdir(parents=True, exist_ok=True)
    state, aliases = _dedupe(model.state_dict())
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt", "quantmatch_method": method})
    layout = {"method": method, "scheme": str(quantized.scheme), "dtype": quantized.dtype,
              "modules": dict(quantized.modules), "aliases": aliases}
    (out / LAYOUT_FILE).write_text(json.dumps(layout, indent=1) + "\n", encoding="utf-8")
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    if progress:
        progress("save", 1, 1)
    return TorchArtifact(out, method, str(quantized.scheme), quantized.dtype, path_size(out),
                         time.perf_counter() - started, quantized.modules, quantized.details)


def load_layout(directory: Path, method: str) -> dict[str, Any]:
    path = directory / LAYOUT_FILE
    try:
        layout = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: missing or unreadable ({e}); re-create the artifact with "
                            "`quantmatch quantize ... --force`") from e
    if layout.get("method") != method or not isinstance(layout.get("modules"), dict):
        raise ArtifactError(f"{path}: not a {method} layout; re-create the artifact")
    return dict(layout)


def load_state(directory: Path) -> dict[str, Any]:
    """The artifact's tensors (safetensors only: nothing is unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / WEIGHTS_FILE
    try:
        return dict(load_file(str(path)))
    except (OSError, SafetensorError) as e:
        raise ArtifactError(f"{path}: missing or corrupt weights ({e}); re-create the artifact with "
                            "`quantmatch quantize ... --force`") from e


def empty_model(directory: Path, dtype: Any) -> Any:
    """The artifact's architecture with uninitialised float weights (to be overwritten by loading)."""
    from transformers import AutoConfig
    from transformers import AutoModelForCausalLM as auto_lm
    from transformers.initialization import no_init_weights

    try:
        config = AutoConfig.from_pretrained(str(directory))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{directory}: unreadable config.json ({e}); re-create the artifact") from e
    with no_init_weights():
        model: Any = auto_lm.from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
    model.tie_weights()  # skipped with the initialisation; tied heads would stay uninitialised
    if config.model_type == "gpt2":
        conv1d_to_linear(model)
    return model.eval()


def check_loaded(result: Any, aliases: Mapping[str, str], directory: Path) -> None:
    """Fail when loading left parameters unset or found tensors with no place in the model."""
    missing = [k for k in result.missing_keys if k not in aliases]
    if missing or result.unexpected_keys:
        raise ArtifactError(
            f"{directory}: the weights do not fit the model (missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]}); re-create the artifact with the same quantmatch version")


def float_state(state: Mapping[str, Any], dtype: Any) -> dict[str, Any]:
    """``state`` with its fp32/fp16/bf16 tensors cast to ``dtype`` (integer and fp8 data untouched)."""
    import torch

    floats = (torch.float32, torch.float16, torch.bfloat16)
    return {k: (v.to(dtype) if v.dtype in floats else v) for k, v in state.items()}
