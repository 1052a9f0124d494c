"""GPTQ: Hessian-based, column-by-column weight rounding; exported as compressed-tensors."""

from __future__ import annotations

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport

from ._common import HF_CAUSAL_LM


class GPTQQuantizer(Quantizer):
    name = "gptq"
    description = "GPTQ (own torch implementation): 2/3/4/8-bit weights, groups, act-order"
    support = SchemeSupport(weights=("int2", "int3", "int4", "int8"), group_sizes=(0, 32, 64, 128))
    schemes = ("w4a16-g128", "w4a16-g64", "w4a16-g64-asym", "w3a16-g64", "w8a16", "w2a16-g64")
    artifact_format = "compressed-tensors"
    needs_calibration = True
    requires = ("torch>=2.4", "transformers>=4.46", "compressed-tensors>=0.9")
    install_hint = "pip install 'quantmatch[torch]' compressed-tensors"
    architectures = HF_CAUSAL_LM
    source = "https://arxiv.org/abs/2210.17323"


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(GPTQQuantizer)
