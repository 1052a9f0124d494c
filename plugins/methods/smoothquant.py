"""SmoothQuant: migrate activation outliers into the weights, then W8A8 int8.

The algorithm is :mod:`quantmatch.algorithms.smoothquant` (own torch code, CPU): per block,
``s = max|X|^alpha / max|W|^(1-alpha)`` folded into the RMSNorms and ``up_proj`` (``alpha`` searched
per group by default), int8 per-channel weights, and int8 activations per token (``w8a8-int8``) or
with calibrated static per-tensor scales (``w8a8-int8-static``). The artifact is a compressed-tensors
``int-quantized`` checkpoint; :mod:`quantmatch.algorithms.int8_runtime` runs it with integer matrix
products on a CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport
from quantmatch.scheme import Scheme, parse_scheme

from ._compressed import DENSE_LLAMA, CompressedArtifact, Quantized, load_compressed, quantize_with

__all__ = ["SmoothQuantQuantizer", "smoothquant_algorithm"]


def smoothquant_algorithm(static: bool, alpha: float | None = None, smooth: bool = True, clip: bool = False,
                          batch_size: int = 8, dynamic_layers: tuple[str, ...] | None = None) -> Any:
    """The W8A8 algorithm for :func:`~._compressed.quantize_with`; ``smooth=False`` is naive W8A8.
    ``dynamic_layers`` (default: ``down_proj``) keep per-token activations under a static scheme."""
    from quantmatch.algorithms.smoothquant import SmoothQuantConfig, smoothquant_model

    config = SmoothQuantConfig(alpha=alpha, smooth=smooth, static=static, clip=clip)
    if dynamic_layers is not None:
        config = SmoothQuantConfig(alpha=alpha, smooth=smooth, static=static, clip=clip,
                                   dynamic_layers=tuple(dynamic_layers))

    def run(hf_model: Any, samples: Any, grid_for: Any, progress: Any) -> Quantized:
        res = smoothquant_model(hf_model, samples, lambda n: grid_for(n) is not None, config,
                                batch_size=batch_size, progress=progress)
        chosen = sorted(res.alphas.values())
        summary: dict[str, Any] = {"alpha": config.alpha if config.alpha is not None else "searched", "smooth": smooth,
                   "static": static, "clip": clip,
                   "dynamic_layers": list(config.dynamic_layers) if static else [],
                   "static_layers": len(res.input_scales)}
        if chosen:
            summary["alpha_chosen"] = {"min": chosen[0], "median": chosen[len(chosen) // 2], "max": chosen[-1]}
        return Quantized(res.weights, "static" if static else "dynamic", res.input_scales,
                         details={"smoothquant": summary})

    return run


def dynamic_layer_patterns(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(p for p in value.split(",") if p)
    return tuple(str(p) for p in value)


class SmoothQuantQuantizer(Quantizer):
    name = "smoothquant"
    description = "SmoothQuant (own torch implementation): W8A8 int8, per-token dynamic or static"
    support = SchemeSupport(weights=("int8",), activations=("int8",), weight_only=False,
                            group_sizes=(0,), symmetric=(True,))
    schemes = ("w8a8-int8", "w8a8-int8-static")
    layer_precisions = ("int8",)
    artifact_format = "compressed-tensors"
    needs_calibration = True
    requires = ("torch>=2.4", "transformers>=4.46", "compressed-tensors>=0.15")
    install_hint = "pip install 'quantmatch[torch,quant]'"
    architectures = DENSE_LLAMA
    source = "https://arxiv.org/abs/2211.10438"

    @staticmethod
    def load_artifact(directory: str | Path, dtype: str | None = None) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of a checkpoint this plugin wrote (transformers' own loader)."""
        return load_compressed(directory, dtype)

    def load(self, out: str | Path) -> Any:
        return load_compressed(out)[0]

    def quantize(self, model: Any, scheme: Scheme | str, out: Any,  # type: ignore[override]
                 options: Mapping[str, Any] | None = None, **more: Any) -> CompressedArtifact:
        """Quantize ``model`` (a ``ModelSource`` or anything ``resolve_model`` takes) into ``out``.

        ``options`` (or keyword arguments): those of
        :func:`~quantmatch.plugins.methods._compressed.quantize_with`, plus ``alpha`` (migration
        strength; default: searched per scale group among 0.3-0.95), ``smooth`` (False gives naive
        W8A8), ``clip`` (static scales from a clipped range where that lowers the error; default off),
        ``dynamic_layers`` (with ``-static``: layer-name patterns relative to a decoder block that keep
        per-token dynamic activations; default ``["mlp.down_proj"]``, ``[]`` makes every layer static)
        and ``batch_size`` (8).
        """
        opts = {**(options or {}), **more}
        s = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
        alpha = opts.get("alpha")
        run = smoothquant_algorithm(s.static_activations, None if alpha is None else float(alpha),
                                    bool(opts.get("smooth", True)), bool(opts.get("clip", False)),
                                    int(opts.get("batch_size", 8)), dynamic_layer_patterns(opts.get("dynamic_layers")))
        return quantize_with(self.name, model, s, out, opts, run, precisions=self.layer_precisions,
                             check=self.check)


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(SmoothQuantQuantizer)
