"""FP8: per-channel e4m3 weights with dynamic per-token e4m3 activations (compressed-tensors)."""

from __future__ import annotations

from quantmatch.plugins.methods._common import HF_CAUSAL_LM
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import MethodPriors
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport

PRIORS = MethodPriors(
    # from the vLLM FP8 docs and the llm-compressor examples
    produce_with="llm-compressor (pip install llmcompressor): oneshot(model='{model}', recipe=QuantizationModifier("
                 "targets='Linear', scheme='FP8_DYNAMIC', ignore=['lm_head'])) writes a compressed-tensors checkpoint "
                 "vLLM and TensorRT-LLM load; or skip the artifact: `vllm serve {model} --quantization fp8` quantizes "
                 "the 16-bit weights to FP8 at load time (docs.vllm.ai features/quantization/fp8)",
)
"""Planning priors (quantmatch.sdk.priors)."""


class FP8Quantizer(Quantizer):
    name = "fp8"
    description = "FP8 e4m3 round-to-nearest: W8A8 dynamic or FP8 weight-only (compressed-tensors)"
    support = SchemeSupport(weights=("fp8-e4m3",), activations=("fp8-e4m3",), group_sizes=(0,))
    schemes = ("w8a8-fp8", "w8a16-fp8")
    artifact_format = "compressed-tensors"
    requires = ("torch>=2.4", "compressed-tensors>=0.9")
    install_hint = "pip install 'quantmatch[torch]' compressed-tensors"
    architectures = HF_CAUSAL_LM
    source = "https://docs.vllm.ai/en/latest/features/quantization/fp8.html"
    priors = PRIORS


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(FP8Quantizer)
