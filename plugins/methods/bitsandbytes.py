"""bitsandbytes: quantize-on-load LLM.int8() and 4-bit NF4/FP4."""

from __future__ import annotations

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport

from ._common import HF_CAUSAL_LM


class BitsAndBytesQuantizer(Quantizer):
    name = "bitsandbytes"
    description = "bitsandbytes: LLM.int8() (int8 with fp16 outliers) and NF4/FP4 weights, at load time"
    support = SchemeSupport(weights=("int8", "nf4", "fp4"), activations=("int8",), group_sizes=(0,),
                            symmetric=(True,))
    schemes = ("w8a8-int8", "w4a16-nf4", "w4a16-fp4", "w4a16-nf4-bf16")
    artifact_format = "bitsandbytes"
    requires = ("bitsandbytes>=0.46", "torch>=2.4")
    install_hint = "pip install bitsandbytes"
    architectures = HF_CAUSAL_LM
    source = "https://huggingface.co/docs/bitsandbytes/main/en/installation"


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(BitsAndBytesQuantizer)
