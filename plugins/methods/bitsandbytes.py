"""bitsandbytes: quantize-on-load LLM.int8() and 4-bit NF4/FP4."""

from __future__ import annotations

from quantmatch.plugins.methods._common import HF_CAUSAL_LM
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import JobPriors, MethodPriors
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport

PRIORS = MethodPriors(
    job=JobPriors(quantizes_at_load=True, source="bitsandbytes quantizes while the runtime loads the model: no "
                                                 "separate artifact job"),
    # from the bitsandbytes/transformers and vLLM docs
    produce_with="no artifact needed: bitsandbytes quantizes while loading (pip install bitsandbytes): "
                 "transformers from_pretrained('{model}', quantization_config=BitsAndBytesConfig("
                 "load_in_4bit=True) or load_in_8bit=True), or `vllm serve {model} --quantization "
                 "bitsandbytes`",
)
"""Planning priors (quantmatch.sdk.priors)."""


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
    priors = PRIORS


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(BitsAndBytesQuantizer)
