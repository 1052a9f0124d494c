"""The ``inc-fp8`` method: Intel Neural Compressor FP8 for Gaudi (measure, then quantize)."""

from __future__ import annotations

from typing import Any

from quantmatch.sdk.quantizer import Quantizer, SchemeSupport
from quantmatch.sdk.scheme import Scheme

from . import sources as s


class IncFp8Quantizer(Quantizer):
    """INC FP8 on Gaudi: E4M3 weights and activations with static per-tensor scales.

    INC first runs the BF16 model on calibration text with a ``maxabs`` observer (measurement), then
    quantizes with the measured scales; the artifact is the BF16 checkpoint plus INC's measurement and
    quantization-config files, which Optimum Habana (and vLLM's ``--quantization inc``) apply at load.
    """

    name = "inc-fp8"
    description = "Intel Neural Compressor FP8 for Gaudi: E4M3 W8A8 with measured static scales"
    support = SchemeSupport(weights=("fp8-e4m3",), activations=("fp8-e4m3",), weight_only=False,
                            group_sizes=(0,), symmetric=(True,), kv_cache=("fp8",))
    schemes = ("w8a8-fp8-static", "w8a8-fp8-static-kvfp8")
    artifact_format = "inc-fp8"
    needs_calibration = True
    requires = ("neural-compressor-pt>=3.0", "optimum-habana>=1.14")
    install_hint = "pip install neural-compressor-pt optimum-habana  (on a machine with the Intel Gaudi stack)"
    architectures = frozenset({"llama", "mixtral", "falcon", "phi"})
    source = s.join(s.HABANA_FP8_INFERENCE, s.INC_FP8)

    def quantize(self, model: Any, scheme: Scheme | str, out: Any, **options: Any) -> Any:  # type: ignore[override]
        """Not available here: INC's FP8 mode measures and quantizes on an HPU only."""
        raise NotImplementedError(
            "inc-fp8 measures and quantizes on an Intel Gaudi HPU (INC's FP8 mode is HPU-only; on a CPU it "
            "only simulates FP8 with quant/dequant pairs). Run INC's measure and quantize steps with "
            "QUANT_CONFIG on a Gaudi machine; quantmatch can still tell where the result runs.")
