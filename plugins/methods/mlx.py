"""MLX (mlx-lm convert): affine 2-8 bit and MXFP4/NVFP4/MXFP8 weights for Apple silicon."""

from __future__ import annotations

from quantmatch.plugins.methods._common import HF_CAUSAL_LM
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import MethodPriors
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport

PRIORS = MethodPriors(
    quantizes_output=True, quantizes_embeddings=True,  # mlx-lm quantizes the embedding and the output head too
    # from mlx-lm convert.py
    produce_with="mlx-lm on Apple silicon (pip install mlx-lm): `mlx_lm.convert --hf-path {model} -q --q-bits 4 "
                 "--q-group-size 64`",
)
"""Planning priors (quantmatch.sdk.priors)."""


class MLXQuantizer(Quantizer):
    name = "mlx"
    description = "mlx-lm convert: affine 2/3/4/5/6/8-bit groups, mxfp4/nvfp4/mxfp8 (Apple silicon)"
    support = SchemeSupport(weights=("int2", "int3", "int4", "int5", "int6", "int8", "mxfp4", "nvfp4",
                                     "mxfp8"), group_sizes=(32, 64, 128), symmetric=(False,))
    schemes = ("w4a16-g64-asym", "w8a16-g64-asym", "w3a16-g64-asym", "w4a16-mxfp4")
    artifact_format = "mlx"
    requires = ("mlx-lm>=0.20",)
    install_hint = "pip install mlx-lm  (macOS on Apple silicon)"
    architectures = HF_CAUSAL_LM
    source = "ml-explore/mlx-lm mlx_lm/convert.py"
    priors = PRIORS


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(MLXQuantizer)
