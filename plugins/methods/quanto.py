"""optimum-quanto: int2/int4/int8/float8 weights, optional int8/float8 activations."""

from __future__ import annotations

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport

from ._common import HF_CAUSAL_LM


class QuantoQuantizer(Quantizer):
    name = "quanto"
    description = "optimum-quanto: int2/int4/int8/fp8 weights, int8/fp8 activations (calibrated)"
    support = SchemeSupport(
        weights=("int2", "int4", "int8", "fp8-e4m3"),
        activations=("int8", "fp8-e4m3"),
        group_sizes=(0, 32, 64, 128),
    )
    schemes = ("w8a16", "w4a16-g64-asym", "w2a16-g64-asym", "w8a16-fp8", "w8a8-int8", "w8a8-fp8")
    artifact_format = "quanto"
    needs_calibration = False  # only activation schemes calibrate
    requires = ("optimum-quanto>=0.2.4", "torch>=2.4")
    install_hint = "pip install 'quantmatch[torch]' optimum-quanto"
    architectures = HF_CAUSAL_LM
    source = "huggingface/optimum-quanto @e33f8202 README"


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(QuantoQuantizer)
