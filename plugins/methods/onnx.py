"""ONNX Runtime quantization tools: dynamic/static int8 and 4-bit MatMulNBits."""

from __future__ import annotations

from quantmatch.pluginhost import hookimpl
from quantmatch.quantizer import Quantizer, SchemeSupport

from ._common import HF_CAUSAL_LM


class OnnxQuantizer(Quantizer):
    name = "onnx"
    description = "onnxruntime.quantization: int8 dynamic (MatMulInteger), static QDQ, MatMulNBits int4"
    support = SchemeSupport(weights=("int4", "int8"), activations=("int8",),
                            group_sizes=(0, 16, 32, 64, 128, 256))
    schemes = ("w8a8-int8", "w8a8-int8-static", "w4a32-g32", "w4a16-g32", "w4a8-int8-g32")
    artifact_format = "onnx"
    requires = ("onnxruntime>=1.18", "onnx>=1.16", "torch>=2.4")
    install_hint = "pip install onnxruntime onnx"
    architectures = HF_CAUSAL_LM
    source = "https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html"


@hookimpl
def register_quantizers(register):  # type: ignore[no-untyped-def]
    register(OnnxQuantizer)
