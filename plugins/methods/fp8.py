"""FP8: per-channel e4m3 weights with dynamic per-token e4m3 activations (compressed-tensors)."""

from __future__ import annotations

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport

from ._common import HF_CAUSAL_LM


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


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(FP8Quantizer)
