"""SmoothQuant: migrate activation outliers into the weights, then W8A8 int8.

The algorithm is :mod:`quantmatch.plugins.methods.algorithms.smoothquant` (own torch code, CPU): per block,
``s = max|X|^alpha / max|W|^(1-alpha)`` folded into the RMSNorms and ``up_proj`` (``alpha`` searched
per group by default), int8 per-channel weights, and int8 activations per token (``w8a8-int8``) or
with calibrated static per-tensor scales (``w8a8-int8-static``). The artifact is a compressed-tensors
``int-quantized`` checkpoint; :mod:`quantmatch.plugins.backends.int8_runtime` runs it with integer matrix
products on a CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmatch.plugins.methods._common import CompressedOptions
from quantmatch.plugins.methods._compressed import (
    DENSE_LLAMA,
    CompressedArtifact,
    Quantized,
    load_compressed,
    quantize_with,
)
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.options import option
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import JobPriors, MethodPriors, QualityPriors
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport
from quantmatch.sdk.scheme import Scheme, parse_scheme

__all__ = ["SmoothQuantOptions", "SmoothQuantQuantizer", "smoothquant_algorithm"]

DYNAMIC_LAYERS_HELP = ("with -static: layer-name patterns, relative to a decoder block, that keep per-token "
                       "dynamic activations ([]: every layer static)")


@dataclass(frozen=True)
class SmoothQuantOptions(CompressedOptions):
    """SmoothQuant's options (``--option KEY=VALUE``), beside ``exclude``, ``dtype`` and ``threads``."""

    alpha: float | None = option(None, "migration strength, 0 to 1 (null: searched per scale group among "
                                       "0.3-0.95)")
    smooth: bool = option(True, "fold smoothing scales at all (false: naive W8A8)")
    clip: bool = option(False, "static scales from a clipped range where that lowers the output error")
    dynamic_layers: tuple[str, ...] = option(("mlp.down_proj",), DYNAMIC_LAYERS_HELP)
    batch_size: int = option(8, "calibration samples per forward pass")


def smoothquant_algorithm(static: bool, alpha: float | None = None, smooth: bool = True, clip: bool = False,
                          batch_size: int = 8, dynamic_layers: tuple[str, ...] | None = None) -> Any:
    """The W8A8 algorithm for :func:`~._compressed.quantize_with`; ``smooth=False`` is naive W8A8.
    ``dynamic_layers`` (default: ``down_proj``) keep per-token activations under a static scheme."""
    from quantmatch.plugins.methods.algorithms.smoothquant import SmoothQuantConfig, smoothquant_model

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


PRIORS = MethodPriors(
    job=JobPriors(calibration_samples=512, calibration_tokens=512, calibration_flops=2.0,
                  source="SmoothQuant keeps one decoder layer's calibration activations (512 samples x 512 "
                         "tokens) to collect per-channel activation maxima"),
    quality=QualityPriors(int8_activation_loss=0.75, int8_static_activation_loss=0.5,
                          source="quantmatch estimate: smoothing moves activation outliers into the weights, so "
                                 "int8 activations lose less, static ones most"),
)
"""Planning priors (quantmatch.sdk.priors)."""


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
    priors = PRIORS
    options = SmoothQuantOptions

    @staticmethod
    def load_artifact(directory: str | Path, dtype: str | None = None) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of a checkpoint this plugin wrote (transformers' own loader)."""
        return load_compressed(directory, dtype)

    def load(self, out: str | Path) -> Any:
        return load_compressed(out)[0]

    def quantize(self, model: Any, scheme: Scheme | str, out: Any,  # type: ignore[override]
                 options: Mapping[str, Any] | None = None, **more: Any) -> CompressedArtifact:
        """Quantize ``model`` (a ``ModelSource`` or anything ``resolve_model`` takes) into ``out``.

        ``options`` (or keyword arguments): the pipeline's (``calibration``, ``seed``, ``rules``,
        ``progress``; see :func:`~quantmatch.plugins.methods._compressed.quantize_with`) and those of
        :class:`SmoothQuantOptions` (an unknown key raises :class:`~quantmatch.sdk.options.OptionsError`).
        """
        opts = {**(options or {}), **more}
        cfg = SmoothQuantOptions.of(opts, self.name)
        s = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
        run = smoothquant_algorithm(s.static_activations, cfg.alpha, cfg.smooth, cfg.clip, cfg.batch_size,
                                    cfg.dynamic_layers)
        return quantize_with(self.name, model, s, out, opts, run, precisions=self.layer_precisions,
                             check=self.check, settings=cfg)


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(SmoothQuantQuantizer)
