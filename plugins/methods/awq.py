"""AWQ: activation-aware scaling folded into the previous op, then clipping search; compressed-tensors.

The algorithm is :mod:`quantmatch.plugins.methods.algorithms.awq` (own torch code, CPU), following AutoAWQ: per
block, a grid search of the scaling exponent on the calibration activations, scales folded into the
RMSNorm (or ``up_proj`` for ``down_proj``), a per-group clipping search, then asymmetric rounding.
The artifact is a compressed-tensors ``pack-quantized`` checkpoint with zero points.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmatch.plugins.methods._citations import AWQ_TABLE4, TORCHAO_AWQ
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
from quantmatch.sdk.scheme import Scheme

__all__ = ["AWQOptions", "AWQQuantizer"]


@dataclass(frozen=True)
class AWQOptions(CompressedOptions):
    """AWQ's options (``--option KEY=VALUE``), beside ``exclude``, ``dtype`` and ``threads``."""

    n_grid: int = option(20, "scale exponents tried per layer group")
    search_samples: int | None = option(4, "calibration samples that score each scale candidate (null: all of "
                                           "them, which costs samples / 4 times more)")
    duo_scaling: bool = option(True, "divide the scales by the weight magnitude too (AutoAWQ's default)")
    clip: bool = option(True, "search a clipping range per weight group")
    batch_size: int = option(4, "calibration samples per forward pass")


PRIORS = MethodPriors(
    job=JobPriors(calibration_samples=128, calibration_tokens=512, calibration_flops=24.0, mlp_activations=True,
                  memory="streamed", seconds_per_gparam=970.0,
                  source="AWQ keeps one decoder layer's calibration activations (128 samples x 512 tokens) and its "
                         "MLP intermediates, and repeats each block's forward pass for its ~20-point scale search; "
                         "103 CPU s for SmolLM2-135M's 106M linear weights at 16 samples (docs/benchmarks.md, "
                         "Calibration size)"),
    # 0.34 of RTN's loss on Llama-3-8B-Instruct (torchao: ln(11.409/10.936) / ln(12.380/10.936)), 0.36 on
    # LLaMA-7B and 0.50 on Llama-2-7B (AWQ Table 4), mean 0.4
    quality=QualityPriors(rtn_loss_fraction=0.4, source=f"{AWQ_TABLE4}; {TORCHAO_AWQ}"),
)
"""Planning priors (quantmatch.sdk.priors)."""


class AWQQuantizer(Quantizer):
    name = "awq"
    description = "AWQ (own torch implementation): W4A16/W3A16, groups 32/64/128, zero points"
    support = SchemeSupport(weights=("int3", "int4"), activations=(), group_sizes=(32, 64, 128),
                            symmetric=(False,))
    schemes = ("w4a16-g128-asym", "w4a16-g64-asym", "w4a16-g32-asym", "w3a16-g64-asym")
    layer_precisions = ("int4", "int3")
    artifact_format = "compressed-tensors"
    streams = True
    needs_calibration = True
    requires = ("torch>=2.4", "transformers>=4.46", "compressed-tensors>=0.15")
    install_hint = "pip install 'quantmatch[torch,quant]'"
    architectures = DENSE_LLAMA
    source = "https://arxiv.org/abs/2306.00978"
    priors = PRIORS
    options = AWQOptions

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
        :class:`AWQOptions` (an unknown key raises :class:`~quantmatch.sdk.options.OptionsError`).
        """
        opts = {**(options or {}), **more}
        cfg = AWQOptions.of(opts, self.name)  # refuses unknown keys before torch is imported
        from quantmatch.plugins.methods.algorithms.awq import AWQConfig, awq_model

        config = AWQConfig(n_grid=cfg.n_grid, search_samples=cfg.search_samples, duo_scaling=cfg.duo_scaling,
                           clip=cfg.clip)
        batch = cfg.batch_size

        def run(hf_model: Any, samples: Any, grid_for: Any, progress: Any) -> Quantized:
            weights = awq_model(hf_model, samples, grid_for, config, batch_size=batch, progress=progress)
            return Quantized(weights, details={"awq": {**config.__dict__}})

        def stream() -> Any:
            from quantmatch.plugins.methods.algorithms.awq import awq_block
            from quantmatch.plugins.methods.algorithms.streaming import BlockResult, StreamSpec

            def step(block: Any, batches: Any, grids: Any) -> BlockResult:
                layers, outputs = awq_block(block, batches, grids, config)
                return BlockResult(layers, outputs)

            return StreamSpec(step, None, True, batch, summarize=lambda _: {"awq": {**config.__dict__}})

        return quantize_with(self.name, model, scheme, out, opts, run, precisions=self.layer_precisions,
                             check=self.check, settings=cfg, stream=stream)


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(AWQQuantizer)
