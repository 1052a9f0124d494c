"""Refinements of built-in backends for Gaudi, registered through ``register_capabilities``.

Every row names the ``hpu`` target, which only Gaudi devices have, so no built-in device's verdict
changes. Naming ``hpu`` also adds that target to the refined backend (the way the vllm-gaudi hardware
plugin teaches vLLM the HPU), and each backend's rows end with a catch-all for ``hpu`` so that none of
the backend's own rows, written for other hardware, decides for Gaudi.
"""

from __future__ import annotations

from quantmatch.sdk.capability import Capability, Requires
from quantmatch.sdk.verdict import Level

from . import sources as s
from .gaudi import FAMILY, TARGET

HPU = (TARGET,)
ALL_LAYERS = ("linear", "moe", "kv-cache")
FP8 = ("fp8-e4m3",)
GAUDI = frozenset({FAMILY})
NATIVE = Requires(families=GAUDI, compute_native=True)

VLLM = (
    Capability(Level.NATIVE, "vLLM on Gaudi (vllm-gaudi plugin) keeps the KV cache in {weights} in its paged HPU "
               "cache", s.VLLM_GAUDI_FEATURES, weights=("bf16", "fp16"), layers=("kv-cache",), targets=HPU,
               when=NATIVE),
    Capability(Level.NATIVE, "FP8 KV cache on Gaudi: --kv-cache-dtype fp8_inc quantizes the cache with INC scales",
               s.join(s.VLLM_INC, s.VLLM_GAUDI_FP8), weights=FP8, layers=("kv-cache",), targets=HPU, when=NATIVE),
    Capability(Level.NATIVE, "vLLM on Gaudi serves unquantized {weights} on {device}'s matrix engine",
               s.join(s.VLLM_GAUDI_FEATURES, s.HF_TRANSFORMERS_GAUDI), weights=("bf16", "fp16", "fp32"),
               targets=HPU, when=NATIVE),
    Capability(Level.NATIVE, "FP8 W8A8 on Gaudi: compressed-tensors checkpoints through "
               "HPUCompressedTensorsLinearMethod, or INC with --quantization inc; the MME computes FP8",
               s.join(s.VLLM_GAUDI_CT, s.VLLM_INC, s.VLLM_HW_TABLE), weights=FP8, activations=FP8, targets=HPU,
               when=NATIVE),
    Capability(Level.UNSUPPORTED, "vllm-gaudi's 4-bit kernels (awq_hpu, gptq_hpu) take BF16 activations only "
               "(get_supported_act_dtypes() == [bfloat16]): ask for the -bf16 scheme", s.VLLM_GAUDI_AWQ,
               weights=("int4",), activations=("fp16",), targets=HPU, when=Requires(families=GAUDI)),
    Capability(Level.WEIGHT_ONLY, "4-bit AWQ/GPTQ checkpoints run through vllm-gaudi's awq_hpu / gptq_hpu: the "
               "weights are dequantized to BF16 on the HPU for BF16 matrix-engine math",
               s.join(s.VLLM_GAUDI_AWQ, s.VLLM_GAUDI_OPS, s.VLLM_GAUDI_FP8), weights=("int4",),
               activations=("bf16",), methods=("awq", "gptq"), targets=HPU, when=Requires(families=GAUDI),
               runs_as="INT4 weights dequantized to BF16, BF16 matrix-engine math"),
    Capability(Level.UNSUPPORTED, "vLLM on Gaudi (vllm-gaudi) has no HPU kernel for {weights} weights with "
               "{activations} math on this layer type (it offers BF16/FP16, FP8 W8A8 through INC or "
               "compressed-tensors, AWQ/GPTQ INT4 with BF16 activations, an FP8 KV cache)",
               s.join(s.VLLM_GAUDI_FEATURES, s.VLLM_HW_TABLE), layers=ALL_LAYERS, targets=HPU),
)
"""vLLM on the HPU: what the vllm-gaudi hardware plugin runs."""

HARDWARE = (
    Capability(Level.NATIVE, "{device}'s matrix engine (MME) computes {activations} natively",
               s.join(s.HABANA_ARCHITECTURE, s.GAUDI2_PRESS_BANDWIDTH), layers=ALL_LAYERS, targets=HPU,
               when=Requires(families=GAUDI, compute_native=True, weights_native=True)),
    Capability(Level.WEIGHT_ONLY, "{weights} weights are expanded to {activations} for the MME; {device} has no "
               "{weights} matrix mode", s.join(s.HABANA_ARCHITECTURE, s.GAUDI2_PRESS_BANDWIDTH),
               activations=("fp32", "tf32", "fp16", "bf16"), layers=ALL_LAYERS, targets=HPU, when=NATIVE,
               runs_as="{activations} matrix-engine math on dequantized weights"),
    Capability(Level.UNSUPPORTED, "{device}'s MME has no {activations} mode in this plugin's catalog (sources "
               "list FP32, TF32, BF16, FP16 and FP8)", s.join(s.GAUDI2_PRESS_BANDWIDTH, s.ML_ENGINEERING_ACCELERATORS),
               layers=ALL_LAYERS, targets=HPU),
)
"""The ``hardware`` pseudo-backend on the HPU: which operand types Gaudi's matrix engine computes."""
