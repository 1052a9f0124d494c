"""GPTQ: Hessian-based, column-by-column weight rounding; exported as compressed-tensors.

The algorithm is :mod:`quantmatch.plugins.methods.algorithms.gptq` (own torch code, CPU): decoder blocks one at a
time, true-sequential within a block, act-order with static groups by default (llm-compressor's
default too). The artifact is a compressed-tensors checkpoint (``pack-quantized``) that transformers
and vLLM load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmatch.plugins.methods._citations import AWQ_TABLE4
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

__all__ = ["GPTQOptions", "GPTQQuantizer"]


@dataclass(frozen=True)
class GPTQOptions(CompressedOptions):
    """GPTQ's options (``--option KEY=VALUE``), beside ``exclude``, ``dtype`` and ``threads``."""

    damp: float = option(0.01, "dampening added to the Hessian's diagonal, relative to its mean")
    block_size: int = option(128, "columns rounded per lazy-update block")
    act_order: bool = option(True, "quantize columns in order of decreasing Hessian diagonal (static groups)")
    true_sequential: bool = option(True, "quantize the layers of a block one after another, each on the "
                                         "outputs of the already quantized ones")
    shrink: float = option(0.5, "shrinkage of the Hessian towards its diagonal, 0 to 1 (0: textbook GPTQ)")
    batch_size: int = option(8, "calibration samples per forward pass")

    def __post_init__(self) -> None:
        if not 0.0 <= self.shrink <= 1.0:
            raise ValueError(f"shrink expects a fraction between 0 and 1, got {self.shrink}")


PRIORS = MethodPriors(
    job=JobPriors(calibration_samples=128, calibration_tokens=2048, calibration_flops=6.0, hessians=True,
                  memory="streamed", seconds_per_gparam=400.0,
                  source="GPTQ keeps one decoder layer's calibration activations (128 samples x 2048 tokens) and "
                         "one fp32 Hessian per distinct linear input of a layer (in_features^2 x 4 bytes: the MLP "
                         "down projection's is the largest), streamed block by block: 17.9 s per block of a 1.5B "
                         "Llama (45M linear weights) on 2 cores (docs/benchmarks.md, Streaming quantization)"),
    # GPTQ with act-order (quantmatch's default; GPTQ-R in the table): 0.54 and 0.62 of RTN's loss
    quality=QualityPriors(rtn_loss_fraction=0.6, source=AWQ_TABLE4),
)
"""Planning priors (quantmatch.sdk.priors)."""


class GPTQQuantizer(Quantizer):
    name = "gptq"
    description = "GPTQ (own torch implementation): 2/3/4/8-bit weights, groups, act-order"
    support = SchemeSupport(weights=("int2", "int3", "int4", "int8"), group_sizes=(0, 32, 64, 128))
    schemes = ("w4a16-g128", "w4a16-g64", "w4a16-g32", "w4a16-g64-asym", "w3a16-g64", "w8a16", "w2a16-g64")
    layer_precisions = ("int8", "int4", "int3", "int2")
    artifact_format = "compressed-tensors"
    streams = True
    needs_calibration = True
    requires = ("torch>=2.4", "transformers>=4.46", "compressed-tensors>=0.15")
    install_hint = "pip install 'quantmatch[torch,quant]'"
    architectures = DENSE_LLAMA
    source = "https://arxiv.org/abs/2210.17323"
    priors = PRIORS
    options = GPTQOptions

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
        :class:`GPTQOptions` (an unknown key raises :class:`~quantmatch.sdk.options.OptionsError`).
        """
        opts = {**(options or {}), **more}
        cfg = GPTQOptions.of(opts, self.name)  # refuses unknown keys before torch is imported
        from quantmatch.plugins.methods.algorithms.gptq import GPTQConfig, gptq_model

        config = GPTQConfig(damp=cfg.damp, block_size=cfg.block_size, act_order=cfg.act_order,
                            true_sequential=cfg.true_sequential, shrink=cfg.shrink)
        batch = cfg.batch_size

        def run(hf_model: Any, samples: Any, grid_for: Any, progress: Any) -> Quantized:
            weights = gptq_model(hf_model, samples, grid_for, config, batch_size=batch, progress=progress)
            return Quantized(weights, details={"gptq": {**config.__dict__}})

        def stream() -> Any:
            from quantmatch.plugins.methods.algorithms.gptq import gptq_block
            from quantmatch.plugins.methods.algorithms.streaming import BlockResult, StreamSpec

            def step(block: Any, batches: Any, grids: Any) -> BlockResult:
                return BlockResult(gptq_block(block, batches, grids, config))

            return StreamSpec(step, None, True, batch, summarize=lambda _: {"gptq": {**config.__dict__}})

        return quantize_with(self.name, model, scheme, out, opts, run, precisions=self.layer_precisions,
                             check=self.check, settings=cfg, stream=stream)


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(GPTQQuantizer)
