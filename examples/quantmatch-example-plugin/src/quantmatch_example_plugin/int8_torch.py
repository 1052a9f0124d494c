"""The torch side of ``example-int8``: quantize ``nn.Linear`` layers, save and load the artifact.

Imported only when a model is quantized or loaded (it imports torch at module level).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "example-int8.json"
FORMAT = "example-int8"
QMAX = 127


def absmax_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: int8 codes in [-127, 127] and one fp32 scale per output channel (row), so that
    ``q * scale[:, None]`` approximates ``weight`` within half a scale step."""
    w = weight.detach().to(torch.float32)
    scale = w.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / QMAX
    q = torch.round(w / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale


class Int8Linear(torch.nn.Module):
    """A linear layer with int8 weights and per-output-channel scales, dequantized at each call."""

    qweight: torch.Tensor
    scale: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32))
        self.bias = torch.nn.Parameter(torch.zeros(out_features, dtype=dtype), requires_grad=False) if bias else None

    @classmethod
    def like(cls, linear: torch.nn.Linear) -> Int8Linear:
        """An empty int8 layer shaped like ``linear`` (filled by loading the state dict)."""
        return cls(linear.in_features, linear.out_features, linear.bias is not None, linear.weight.dtype)

    @classmethod
    def quantized(cls, linear: torch.nn.Linear) -> Int8Linear:
        layer = cls.like(linear)
        q, scale = absmax_int8(linear.weight)
        with torch.no_grad():
            layer.qweight.copy_(q)
            layer.scale.copy_(scale)
            if linear.bias is not None and layer.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.qweight.to(torch.float32) * self.scale[:, None]).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def _set_module(root: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def quantize_model(model: torch.nn.Module, exclude: Iterable[str] = ("lm_head",),
                   progress: Callable[[str, int, int], None] | None = None) -> list[str]:
    """Replace every ``nn.Linear`` whose name matches no ``exclude`` pattern by an :class:`Int8Linear`,
    in place; return the names replaced."""
    patterns = tuple(exclude)
    names = [n for n, m in model.named_modules()
             if type(m) is torch.nn.Linear and not any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    for i, name in enumerate(names):
        linear = model.get_submodule(name)
        assert isinstance(linear, torch.nn.Linear)
        _set_module(model, name, Int8Linear.quantized(linear))
        if progress:
            progress("quantize", i + 1, len(names))
    return names


def save(model: Any, tokenizer: Any, out: Path, manifest: dict[str, Any]) -> None:
    """Write the weights (safetensors; tied tensors stored once), the manifest, config and tokenizer."""
    from safetensors.torch import save_model

    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / WEIGHTS_FILE), metadata={"format": "pt", "quantization": FORMAT})
    model.config.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{directory} is not an example-int8 artifact: {MANIFEST_FILE} is missing or "
                         f"unreadable ({e})") from e
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("modules"), list):
        raise ValueError(f"{path}: not an example-int8 manifest (format {manifest.get('format')!r})")
    return dict(manifest)


def load(directory: Path, dtype: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)``: the architecture from ``config.json``, the listed layers made int8, every
    tensor loaded from safetensors (strictly: a missing or extra tensor is an error)."""
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from quantmatch.sdk.models import torch_dtype

    manifest = read_manifest(directory)
    config = AutoConfig.from_pretrained(str(directory))
    model: Any = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        config, dtype=torch_dtype(dtype or manifest["dtype"]))
    for name in manifest["modules"]:
        _set_module(model, name, Int8Linear.like(model.get_submodule(name)))
    load_model(model, str(directory / WEIGHTS_FILE), strict=True)
    tokenizer = AutoTokenizer.from_pretrained(str(directory)) if (directory / "tokenizer_config.json").is_file() \
        else None
    return model.eval(), tokenizer
