"""HQQ (Half-Quadratic Quantization): calibration-free 1-8 bit weights with zero points."""

from __future__ import annotations

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport

from ._common import HF_CAUSAL_LM


class HQQQuantizer(Quantizer):
    name = "hqq"
    description = "HQQ: calibration-free 1/2/3/4/8-bit weights, group-wise with zero points"
    support = SchemeSupport(
        weights=("int1", "int2", "int3", "int4", "int8"),
        group_sizes=(16, 32, 64, 128, 256),
        symmetric=(False,),
    )
    schemes = ("w8a16-g64-asym", "w4a16-g64-asym", "w4a16-g64-asym-bf16", "w3a16-g64-asym",
               "w2a16-g16-asym", "w1a16-g16-asym")
    artifact_format = "hqq"
    requires = ("hqq>=0.2", "torch>=2.4")
    install_hint = "pip install 'quantmatch[torch]' hqq"
    architectures = HF_CAUSAL_LM
    source = "mobiusml/hqq @e0b1d00e Readme"


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(HQQQuantizer)
