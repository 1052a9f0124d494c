"""Round-to-nearest: the calibration-free baseline every other method is measured against."""

from __future__ import annotations

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport

from ._common import HF_CAUSAL_LM


class RTNQuantizer(Quantizer):
    name = "rtn"
    description = "round-to-nearest baseline: int/NVFP4/MXFP4 weights, optional activations"
    support = SchemeSupport(
        weights=("int4", "int8", "nvfp4", "mxfp4"),
        activations=("int8", "int4", "nvfp4", "mxfp4"),
        group_sizes=(0, 32, 64, 128),
    )
    schemes = ("w8a16", "w4a16-g128", "w4a16-g64", "w8a8-int8", "w4a8-int8-g128", "w4a4-int4",
               "w4a16-nvfp4", "w4a4-nvfp4", "w4a4-mxfp4")
    artifact_format = "compressed-tensors"
    requires = ("torch>=2.4", "compressed-tensors>=0.9")
    install_hint = "pip install 'quantmatch[torch]' compressed-tensors"
    architectures = HF_CAUSAL_LM
    source = "https://github.com/vllm-project/compressed-tensors"


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(RTNQuantizer)
