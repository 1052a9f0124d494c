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

__all__ = ["SmoothQuantOptions", "SmoothQuantQuantizer", "smoothquant_algorithm", "smoothquant_stream"]

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


def _config(static: bool, alpha: float | None, smooth: bool, clip: bool,
            dynamic_layers: tuple[str, ...] | None) -> Any:
    from quantmatch.plugins.methods.algorithms.smoothquant import SmoothQuantConfig

    if dynamic_layers is not None:
        return SmoothQuantConfig(alpha=alpha, smooth=smooth, static=static, clip=clip,
                                 dynamic_layers=tuple(dynamic_layers))
    return SmoothQuantConfig(alpha=alpha, smooth=smooth, static=static, clip=clip)


def _summary(config: Any, alphas: list[float], static_layers: int) -> dict[str, Any]:
    chosen = sorted(alphas)
    summary: dict[str, Any] = {"alpha": config.alpha if config.alpha is not None else "searched",
                               "smooth": config.smooth, "static": config.static, "clip": config.clip,
                               "dynamic_layers": list(config.dynamic_layers) if config.static else [],
                               "static_layers": static_layers}
    if chosen:
        summary["alpha_chosen"] = {"min": chosen[0], "median": chosen[len(chosen) // 2], "max": chosen[-1]}
    return {"smoothquant": summary}


def smoothquant_algorithm(static: bool, alpha: float | None = None, smooth: bool = True, clip: bool = False,
                          batch_size: int = 8, dynamic_layers: tuple[str, ...] | None = None) -> Any:
    """The W8A8 algorithm for :func:`~._compressed.quantize_with`; ``smooth=False`` is naive W8A8.
    ``dynamic_layers`` (default: ``down_proj``) keep per-token activations under a static scheme."""
    from quantmatch.plugins.methods.algorithms.smoothquant import smoothquant_model

    config = _config(static, alpha, smooth, clip, dynamic_layers)

    def run(hf_model: Any, samples: Any, grid_for: Any, progress: Any) -> Quantized:
        res = smoothquant_model(hf_model, samples, lambda n: grid_for(n) is not None, config,
                                batch_size=batch_size, progress=progress)
        return Quantized(res.weights, "static" if static else "dynamic", res.input_scales,
                         details=_summary(config, list(res.alphas.values()), len(res.input_scales)))

    return run


def smoothquant_stream(static: bool, alpha: float | None = None, smooth: bool = True, clip: bool = False,
                       batch_size: int = 8, dynamic_layers: tuple[str, ...] | None = None) -> Any:
    """The same algorithm block by block (:class:`~.algorithms.streaming.StreamSpec`), built on demand."""

    def build() -> Any:
        from quantmatch.plugins.methods.algorithms.smoothquant import smoothquant_block
        from quantmatch.plugins.methods.algorithms.streaming import BlockResult, StreamSpec

        config = _config(static, alpha, smooth, clip, dynamic_layers)

        def step(block: Any, batches: Any, grids: Any) -> BlockResult:
            outputs: list[Any] = []
            res = smoothquant_block(block, batches, list(grids), config, outputs)
            return BlockResult(res.weights, outputs or None, res.input_scales,
                               {"alphas": [float(a) for a in res.alphas.values()]})

        def summarize(blocks: list[dict[str, Any]]) -> dict[str, Any]:
            alphas = [a for b in blocks for a in b.get("alphas", ())]
            static_layers = sum(1 for b in blocks for kind in b.get("layers", {}).values() if kind[3] == "static")
            return _summary(config, alphas, static_layers)

        return StreamSpec(step, "static" if static else "dynamic", True, batch_size, summarize=summarize)

    return build


PRIORS = MethodPriors(
    job=JobPriors(calibration_samples=512, calibration_tokens=512, calibration_flops=2.0, memory="streamed",
                  seconds_per_gparam=780.0,
                  source="SmoothQuant keeps one decoder layer's calibration activations (512 samples x 512 "
                         "tokens) to collect per-channel activation maxima; 83 CPU s for SmolLM2-135M's 106M linear "
                         "weights at 16 samples (docs/benchmarks.md, Calibration size)"),
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
    streams = True
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
        args = (s.static_activations, cfg.alpha, cfg.smooth, cfg.clip, cfg.batch_size, cfg.dynamic_layers)
        return quantize_with(self.name, model, s, out, opts, smoothquant_algorithm(*args),
                             precisions=self.layer_precisions, check=self.check, settings=cfg,
                             stream=smoothquant_stream(*args))


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(SmoothQuantQuantizer)
