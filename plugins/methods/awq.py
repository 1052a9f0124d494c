"""AWQ: activation-aware scaling folded into the previous op, then clipping search; compressed-tensors.

The algorithm is :mod:`quantmatch.algorithms.awq` (own torch code, CPU), following AutoAWQ: per
block, a grid search of the scaling exponent on the calibration activations, scales folded into the
RMSNorm (or ``up_proj`` for ``down_proj``), a per-group clipping search, then asymmetric rounding.
The artifact is a compressed-tensors ``pack-quantized`` checkpoint with zero points.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport
from quantmatch.scheme import Scheme

from ._compressed import DENSE_LLAMA, CompressedArtifact, Quantized, load_compressed, quantize_with

__all__ = ["AWQQuantizer"]


class AWQQuantizer(Quantizer):
    name = "awq"
    description = "AWQ (own torch implementation): W4A16/W3A16, groups 32/64/128, zero points"
    support = SchemeSupport(weights=("int3", "int4"), activations=(), group_sizes=(32, 64, 128),
                            symmetric=(False,))
    schemes = ("w4a16-g128-asym", "w4a16-g64-asym", "w4a16-g32-asym", "w3a16-g64-asym")
    layer_precisions = ("int4", "int3")
    artifact_format = "compressed-tensors"
    needs_calibration = True
    requires = ("torch>=2.4", "transformers>=4.46", "compressed-tensors>=0.15")
    install_hint = "pip install 'quantmatch[torch,quant]'"
    architectures = DENSE_LLAMA
    source = "https://arxiv.org/abs/2306.00978"

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
        :func:`~quantmatch.plugins.methods._compressed.quantize_with`, plus ``n_grid`` (20),
        ``search_samples`` (calibration samples that score each scale candidate, 4; all of them
        cost ``samples / 4`` times more), ``duo_scaling`` (True), ``clip`` (True) and ``batch_size`` (4).
        """
        from quantmatch.algorithms.awq import AWQConfig, awq_model

        opts = {**(options or {}), **more}
        search = opts.get("search_samples", 4)
        config = AWQConfig(n_grid=int(opts.get("n_grid", 20)), search_samples=None if search is None else int(search),
                           duo_scaling=bool(opts.get("duo_scaling", True)), clip=bool(opts.get("clip", True)))
        batch = int(opts.get("batch_size", 4))

        def run(hf_model: Any, samples: Any, grid_for: Any, progress: Any) -> Quantized:
            weights = awq_model(hf_model, samples, grid_for, config, batch_size=batch, progress=progress)
            return Quantized(weights, details={"awq": {**config.__dict__}})

        return quantize_with(self.name, model, scheme, out, opts, run, precisions=self.layer_precisions,
                             check=self.check)


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(AWQQuantizer)
