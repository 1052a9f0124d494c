"""AWQ: activation-aware scaling folded into the previous op, then clipping search; compressed-tensors."""

from __future__ import annotations

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport

from ._common import HF_CAUSAL_LM


class AWQQuantizer(Quantizer):
    name = "awq"
    description = "AWQ (own torch implementation): W4A16/W3A16, groups 32/64/128, zero points"
    support = SchemeSupport(weights=("int3", "int4"), activations=(), group_sizes=(32, 64, 128),
                            symmetric=(False,))
    schemes = ("w4a16-g128-asym", "w4a16-g64-asym", "w4a16-g32-asym", "w3a16-g64-asym")
    artifact_format = "compressed-tensors"
    needs_calibration = True
    requires = ("torch>=2.4", "transformers>=4.46", "compressed-tensors>=0.9")
    install_hint = "pip install 'quantmatch[torch]' compressed-tensors"
    architectures = HF_CAUSAL_LM
    source = "https://arxiv.org/abs/2306.00978"


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(AWQQuantizer)
