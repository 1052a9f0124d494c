"""torchao quantize_(): int8/int4 weight-only, int8 dynamic, float8, W4A8 and NVFP4 configs."""

from __future__ import annotations

from quantmatch.plugins.methods._common import HF_CAUSAL_LM
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import MethodPriors
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport

PRIORS = MethodPriors(
    # from torchao's quantize_ docs
    produce_with="torchao (pip install torchao): quantize_(model, Int4WeightOnlyConfig() / "
                 "Int8DynamicActivationInt8WeightConfig() / Float8DynamicActivationFloat8WeightConfig()), or "
                 "transformers TorchAoConfig when loading '{model}'",
)
"""Planning priors (quantmatch.sdk.priors)."""


class TorchAOQuantizer(Quantizer):
    name = "torchao"
    description = "torchao quantize_(): int8/int4 weight-only, int8 dynamic, float8, W4A8, NVFP4"
    support = SchemeSupport(weights=("int4", "int8", "fp8-e4m3", "nvfp4", "mxfp4"),
                            activations=("int8", "fp8-e4m3", "nvfp4", "mxfp4"),
                            group_sizes=(0, 32, 64, 128, 256))
    schemes = ("w8a16-bf16", "w4a16-g128-asym-bf16", "w8a8-int8", "w4a8-int8-g128", "w8a8-fp8",
               "w4a4-nvfp4")
    artifact_format = "torchao"
    requires = ("torchao>=0.10", "torch>=2.4")
    install_hint = "pip install torchao"
    architectures = HF_CAUSAL_LM
    source = "pytorch/ao docs/source/inference.md"
    priors = PRIORS


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(TorchAOQuantizer)
