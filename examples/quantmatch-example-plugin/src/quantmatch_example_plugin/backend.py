"""The ``optimum-habana`` backend: Hugging Face Optimum for Intel Gaudi, with INC FP8."""

from __future__ import annotations

from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability, Requires
from quantmatch.sdk.verdict import Level

from . import sources as s
from .gaudi import FAMILY, TARGET

ALL_LAYERS = ("linear", "moe", "kv-cache")
FP8 = ("fp8-e4m3",)
ON_GAUDI_NATIVE = Requires(families=frozenset({FAMILY}), compute_native=True)
"""A Gaudi device whose matrix engine computes the scheme's compute type."""


class OptimumHabanaBackend(Backend):
    """Transformers on HPU through Optimum Habana; FP8 through Intel Neural Compressor (INC)."""

    name = "optimum-habana"
    description = "Optimum for Intel Gaudi: Transformers on HPU, FP8 through Intel Neural Compressor"
    targets = (TARGET,)
    formats = ("inc-fp8",)
    requires = ("optimum-habana>=1.14",)
    install_hint = "pip install optimum-habana  (on a machine with the Intel Gaudi software stack)"
    source = s.OPTIMUM_HABANA
    capabilities = (
        Capability(Level.NATIVE, "Optimum Habana runs unquantized {weights} on {device}'s matrix engine (MME)",
                   s.join(s.OPTIMUM_HABANA, s.HF_TRANSFORMERS_GAUDI), weights=("fp32", "bf16", "fp16"),
                   layers=ALL_LAYERS, when=ON_GAUDI_NATIVE),
        Capability(Level.NATIVE, "INC FP8: E4M3 weights and activations with static scales from a measurement "
                   "pass; the MME computes FP8 at twice the BF16 rate", s.join(s.HABANA_FP8_INFERENCE, s.INC_FP8),
                   weights=FP8, activations=FP8, when=ON_GAUDI_NATIVE),
        Capability(Level.NATIVE, "INC quantizes the KV cache to FP8 with the measured scales",
                   s.join(s.HABANA_FP8_INFERENCE, s.INC_FP8), weights=FP8, layers=("kv-cache",),
                   when=ON_GAUDI_NATIVE),
        Capability(Level.UNSUPPORTED, "Optimum Habana has no HPU path for {weights} weights with {activations} "
                   "math on {device} in this plugin (it offers FP32/BF16/FP16 and INC FP8)", s.OPTIMUM_HABANA,
                   layers=ALL_LAYERS),
    )
