"""Whether quantmatch can produce a plan's artifact on this machine, and how to get it otherwise.

The planner ranks every method the registry knows, but only some have a quantization
implementation in this version, and those need their requirements installed. Both are read from
what each method declares, never by calling it: a :class:`~quantmatch.quantizer.Quantizer` whose
``quantize`` is the base class's has no implementation (the base raises "quantize() is not
implemented", the same signal the plugin contract tests skip on), and ``requires`` lists the
distributions it needs (checked with ``importlib.metadata``, nothing imported). For a method
quantmatch cannot run, the plan says how its own tool produces the artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Production", "external_route", "production"]


@dataclass(frozen=True)
class Production:
    """``producible``: ``quantmatch quantize`` can make the artifact here now. ``implemented``: the
    method has a quantization implementation in quantmatch (then only requirements may be missing).
    ``reason`` says why not; ``how`` is the way to get the artifact (the method's own tool, or the
    install line to run before ``quantmatch quantize``)."""

    producible: bool
    implemented: bool
    reason: str
    how: str = ""


_ROUTES: dict[str, str] = {
    "fp8": ("llm-compressor (pip install llmcompressor): oneshot(model='{model}', recipe=QuantizationModifier("
            "targets='Linear', scheme='FP8_DYNAMIC', ignore=['lm_head'])) writes a compressed-tensors checkpoint "
            "vLLM and TensorRT-LLM load; or skip the artifact: `vllm serve {model} --quantization fp8` quantizes "
            "the 16-bit weights to FP8 at load time (docs.vllm.ai features/quantization/fp8)"),
    "onnx": ("Optimum + ONNX Runtime (pip install 'optimum[onnxruntime]'): `optimum-cli export onnx --model "
             "{model} out/`, then onnxruntime.quantization (quantize_dynamic for int8, MatMulNBitsQuantizer for "
             "int4 blocks)"),
    "bitsandbytes": ("no artifact needed: bitsandbytes quantizes while loading (pip install bitsandbytes): "
                     "transformers from_pretrained('{model}', quantization_config=BitsAndBytesConfig("
                     "load_in_4bit=True) or load_in_8bit=True), or `vllm serve {model} --quantization "
                     "bitsandbytes`"),
    "torchao": ("torchao (pip install torchao): quantize_(model, Int4WeightOnlyConfig() / "
                "Int8DynamicActivationInt8WeightConfig() / Float8DynamicActivationFloat8WeightConfig()), or "
                "transformers TorchAoConfig when loading '{model}'"),
    "mlx": ("mlx-lm on Apple silicon (pip install mlx-lm): `mlx_lm.convert --hf-path {model} -q --q-bits 4 "
            "--q-group-size 64`"),
}
"""How each method's own tool makes the artifact (from the methods' documentation: vLLM FP8 docs,
llm-compressor examples, Optimum/ORT quantization docs, bitsandbytes/transformers docs, torchao
``quantize_`` docs, mlx-lm ``convert.py``)."""


def external_route(method: str, model: str, source: str = "") -> str:
    """How to make ``method``'s artifact for ``model`` without quantmatch."""
    route = _ROUTES.get(method)
    if route is not None:
        return route.format(model=model)
    return f"use {method}'s own tooling" + (f" ({source})" if source else "")


def production(method: str | None, registry: Any, model: str = "MODEL", scheme: str | None = None) -> Production:
    """Whether ``quantmatch quantize`` can produce ``method``'s artifact (in ``scheme``, when given) here
    (``None``: nothing to do)."""
    if method is None:
        return Production(True, True, "no quantization: the 16-bit checkpoint is served as is")
    from quantmatch.quantizer import Quantizer, missing_requirements

    try:
        cls = registry.method(method)
    except Exception:  # an unknown name: nothing declares how to make it
        return Production(False, False, f"quantmatch has no method {method!r}")
    if cls.quantize is Quantizer.quantize:
        return Production(False, False,
                          f"quantmatch has no {method} quantization implementation in this version",
                          external_route(method, model, getattr(cls, "source", "")))
    unmade = cls.not_produced(scheme) if scheme is not None else []
    if unmade:
        return Production(False, False, unmade[0], external_route(method, model, getattr(cls, "source", "")))
    missing = missing_requirements(getattr(cls, "requires", ()))
    if missing:
        hint = getattr(cls, "install_hint", "") or "pip install " + " ".join(repr(m) for m in missing)
        return Production(False, True, f"{method} needs {', '.join(missing)}, not installed here", hint)
    return Production(True, True, f"quantmatch quantize implements {method}")
