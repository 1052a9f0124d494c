"""SmoothQuant: migrate activation outliers into the weights, then W8A8 int8."""

from __future__ import annotations

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport

from ._common import HF_CAUSAL_LM


class SmoothQuantQuantizer(Quantizer):
    name = "smoothquant"
    description = "SmoothQuant (own torch implementation): W8A8 int8, per-token dynamic or static"
    support = SchemeSupport(weights=("int8",), activations=("int8",), weight_only=False,
                            group_sizes=(0,), symmetric=(True,))
    schemes = ("w8a8-int8", "w8a8-int8-static")
    artifact_format = "compressed-tensors"
    needs_calibration = True
    requires = ("torch>=2.4", "transformers>=4.46", "compressed-tensors>=0.9")
    install_hint = "pip install 'quantmatch[torch]' compressed-tensors"
    architectures = HF_CAUSAL_LM
    source = "https://arxiv.org/abs/2211.10438"


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(SmoothQuantQuantizer)
