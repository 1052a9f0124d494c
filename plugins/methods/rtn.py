"""Round-to-nearest: the calibration-free baseline every other method is measured against.

Integer weights (2-8 bits, per channel or in groups, symmetric or with zero points) are rounded by
:func:`quantmatch.plugins.methods.algorithms.rtn.rtn` on the same grid GPTQ and AWQ use; ``a8`` schemes add int8
activations (per token, or static per tensor calibrated without smoothing: naive W8A8). The artifact
is a compressed-tensors checkpoint. The registry also judges RTN's NVFP4/MXFP4 and 4-bit-activation
schemes; quantizing to those is not implemented here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
from quantmatch.plugins.methods.smoothquant import DYNAMIC_LAYERS_HELP, smoothquant_algorithm, smoothquant_stream
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.options import option
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import JobPriors, MethodPriors
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport, UnitVariant
from quantmatch.sdk.scheme import Scheme, parse_scheme

__all__ = ["RTNOptions", "RTNQuantizer"]


@dataclass(frozen=True)
class RTNOptions(CompressedOptions):
    """Round-to-nearest's options (``--option KEY=VALUE``), beside ``exclude``, ``dtype`` and ``threads``;
    both only matter for static int8 activations (``w8a8-int8-static``), which calibrate."""

    batch_size: int = option(8, "calibration samples per forward pass (static activation schemes)")
    dynamic_layers: tuple[str, ...] = option(("mlp.down_proj",), DYNAMIC_LAYERS_HELP)


class RTNQuantizer(Quantizer):
    name = "rtn"
    description = "round-to-nearest baseline: int/NVFP4/MXFP4 weights, optional activations"
    support = SchemeSupport(
        weights=("int2", "int3", "int4", "int8", "nvfp4", "mxfp4"),
        activations=("int8", "int4", "nvfp4", "mxfp4"),
        group_sizes=(0, 32, 64, 128),
    )
    produces = SchemeSupport(weights=("int2", "int3", "int4", "int8"), activations=("int8",))
    schemes = ("w8a16", "w4a16-g128", "w4a16-g64", "w8a8-int8", "w4a8-int8-g128", "w4a4-int4",
               "w4a16-nvfp4", "w4a4-nvfp4", "w4a4-mxfp4")
    layer_precisions = ("int8", "int4", "int3", "int2")
    artifact_format = "compressed-tensors"
    mixes = True
    streams = True
    requires = ("torch>=2.4", "compressed-tensors>=0.15")
    install_hint = "pip install 'quantmatch[torch,quant]'"
    architectures = DENSE_LLAMA
    source = "https://github.com/vllm-project/compressed-tensors"
    options = RTNOptions
    priors = MethodPriors(job=JobPriors(
        memory="streamed", seconds_per_gparam=30.0,
        source="round-to-nearest streams the checkpoint one decoder block at a time: 1.4 s per block of a 1.5B "
               "Llama (45M linear weights) on 2 cores (docs/benchmarks.md, Streaming quantization)"))

    @staticmethod
    def load_artifact(directory: str | Path, dtype: str | None = None) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of a checkpoint this plugin wrote (transformers' own loader)."""
        return load_compressed(directory, dtype)

    def load(self, out: str | Path) -> Any:
        return load_compressed(out)[0]

    def unit_variants(self, source: Any, schemes: Sequence[str], **options: Any) -> Iterator[UnitVariant]:
        """Per linear layer and scheme, its round-to-nearest weight as the mixed checkpoint decompresses it
        and the bytes stored for it (:func:`~quantmatch.plugins.methods._mixed_ct.unit_variants`)."""
        from quantmatch.plugins.methods._mixed_ct import unit_variants

        return unit_variants(self, source, schemes, **options)

    def quantize_mixed(self, source: Any, assignments: Mapping[str, str], out: Any,
                       **options: Any) -> CompressedArtifact:
        """One compressed-tensors checkpoint with a scheme per linear layer, one config group per scheme
        (:func:`~quantmatch.plugins.methods._mixed_ct.quantize_mixed`)."""
        from quantmatch.plugins.methods._mixed_ct import quantize_mixed

        return quantize_mixed(self, source, assignments, out, **options)

    def quantize(self, model: Any, scheme: Scheme | str, out: Any,  # type: ignore[override]
                 options: Mapping[str, Any] | None = None, **more: Any) -> CompressedArtifact:
        """Round ``model``'s linear layers to the scheme's integer grid and write ``out``.

        ``options`` (or keyword arguments): the pipeline's (see
        :func:`~quantmatch.plugins.methods._compressed.quantize_with`) and those of :class:`RTNOptions`;
        static activation schemes calibrate (``calibration``, ``seed``, ``batch_size``).
        """
        opts = {**(options or {}), **more}
        cfg = RTNOptions.of(opts, self.name)
        s = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
        why = self.not_produced(s)
        if why:
            raise NotImplementedError(why[0])
        if s.activation_type == "int8" and s.static_activations:
            args = (True, None, False, False, cfg.batch_size, cfg.dynamic_layers)  # static, naive: not smoothed
            return quantize_with(self.name, model, s, out, opts, smoothquant_algorithm(*args),
                                 precisions=self.layer_precisions, check=self.check, settings=cfg,
                                 stream=smoothquant_stream(*args))
        activations = "dynamic" if s.activation_type == "int8" else None

        def run_rtn(hf_model: Any, samples: Any, grid_for: Any, progress: Any) -> Quantized:
            from quantmatch.plugins.methods.algorithms.rtn import rtn, store

            names = [n for n, _ in hf_model.named_modules() if grid_for(n) is not None]
            weights = {}
            for i, name in enumerate(names):
                lin = hf_model.get_submodule(name)
                weights[name] = store(lin, rtn(lin.weight, grid_for(name)))
                if progress:
                    progress("quantize", i + 1, len(names))
            return Quantized(weights, activations)

        def stream() -> Any:
            from quantmatch.plugins.methods.algorithms.blockwise import linear_modules
            from quantmatch.plugins.methods.algorithms.rtn import rtn, store
            from quantmatch.plugins.methods.algorithms.streaming import BlockResult, StreamSpec

            def step(block: Any, _batches: Any, grids: Any) -> BlockResult:
                lins = linear_modules(block)
                return BlockResult({n: store(lins[n], rtn(lins[n].weight, g)) for n, g in grids.items()})

            return StreamSpec(step, activations, calibrate=False, outside_blocks=True)

        return quantize_with(self.name, model, s, out, opts, run_rtn, precisions=self.layer_precisions,
                             calibrate=False, check=self.check, settings=cfg, stream=stream)


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(RTNQuantizer)
