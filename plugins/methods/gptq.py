"""GPTQ: Hessian-based, column-by-column weight rounding; exported as compressed-tensors.

The algorithm is :mod:`quantmatch.algorithms.gptq` (own torch code, CPU): decoder blocks one at a
time, true-sequential within a block, act-order with static groups by default (llm-compressor's
default too). The artifact is a compressed-tensors checkpoint (``pack-quantized``) that transformers
and vLLM load.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport
from quantmatch.scheme import Scheme

from ._compressed import DENSE_LLAMA, CompressedArtifact, Quantized, load_compressed, quantize_with

__all__ = ["GPTQQuantizer"]


class GPTQQuantizer(Quantizer):
    name = "gptq"
    description = "GPTQ (own torch implementation): 2/3/4/8-bit weights, groups, act-order"
    support = SchemeSupport(weights=("int2", "int3", "int4", "int8"), group_sizes=(0, 32, 64, 128))
    schemes = ("w4a16-g128", "w4a16-g64", "w4a16-g64-asym", "w3a16-g64", "w8a16", "w2a16-g64")
    layer_precisions = ("int8", "int4", "int3", "int2")
    artifact_format = "compressed-tensors"
    needs_calibration = True
    requires = ("torch>=2.4", "transformers>=4.46", "compressed-tensors>=0.15")
    install_hint = "pip install 'quantmatch[torch,quant]'"
    architectures = DENSE_LLAMA
    source = "https://arxiv.org/abs/2210.17323"

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
        :func:`~quantmatch.plugins.methods._compressed.quantize_with`, plus ``damp`` (0.01),
        ``block_size`` (128), ``act_order`` (True), ``true_sequential`` (True), ``shrink`` (0.5: the
        Hessian's shrinkage towards its diagonal; 0 is textbook GPTQ) and ``batch_size`` (calibration
        samples per forward, 8).
        """
        from quantmatch.algorithms.gptq import GPTQConfig, gptq_model

        opts = {**(options or {}), **more}
        config = GPTQConfig(damp=float(opts.get("damp", 0.01)), block_size=int(opts.get("block_size", 128)),
                            act_order=bool(opts.get("act_order", True)),
                            true_sequential=bool(opts.get("true_sequential", True)),
                            shrink=float(opts.get("shrink", 0.5)))
        batch = int(opts.get("batch_size", 8))

        def run(hf_model: Any, samples: Any, grid_for: Any, progress: Any) -> Quantized:
            weights = gptq_model(hf_model, samples, grid_for, config, batch_size=batch, progress=progress)
            return Quantized(weights, details={"gptq": {**config.__dict__}})

        return quantize_with(self.name, model, scheme, out, opts, run, precisions=self.layer_precisions,
                             check=self.check)


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(GPTQQuantizer)
