"""Workarounds for llama.cpp bugs that depend on the machine, shared by every place that loads a GGUF.

On CPUs with AMX (Intel Sapphire Rapids and newer), a llama.cpp built natively repacks Q4_0/Q4_1/Q8_0
and k-quant weights into its AMX buffer type, and the first matrix product there can crash the process
in ``ggml_backend_amx_mul_mat`` (https://github.com/ggml-org/llama.cpp/issues/20824, closed as stale
without a fix; dspy's CI hit the same: https://github.com/stanfordnlp/dspy/pull/10079). On such CPUs
quantmatch loads models without llama.cpp's extra (repacking) buffer types. The AVX-512/AVX2 kernels
still run; ``QUANTMATCH_LLAMA_EXTRA_BUFTS=1`` turns the repacking back on (for a llama.cpp build
where the bug is fixed), ``=0`` turns it off on any CPU.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from typing import Any

from quantmatch.sdk.hostcpu import cpu_flags

__all__ = ["AMX_FLAGS", "EXTRA_BUFTS_ENV", "extra_buffer_types_enabled", "extra_buffer_types_enabled_for",
           "model_params", "safe_model_defaults"]

AMX_FLAGS = frozenset({"amx_int8", "amx_tile"})
"""CPU features on which quantmatch loads llama.cpp without its extra buffer types (the crash above)."""
EXTRA_BUFTS_ENV = "QUANTMATCH_LLAMA_EXTRA_BUFTS"
"""``1`` turns the extra buffer types on on every CPU, ``0`` off on every CPU; unset or other: by :data:`AMX_FLAGS`."""


def extra_buffer_types_enabled_for(flags: set[str] | frozenset[str]) -> bool:
    """Whether quantmatch loads llama.cpp with its extra buffer types on a CPU with these ISA ``flags``
    (the same rule as :func:`extra_buffer_types_enabled`, for a CPU that is not this one)."""
    env = os.environ.get(EXTRA_BUFTS_ENV, "").strip()
    if env in ("0", "1"):
        return env == "1"
    return not set(flags) & AMX_FLAGS


def extra_buffer_types_enabled() -> bool:
    """Whether llama.cpp may use its extra (weight-repacking) buffer types on this machine."""
    return extra_buffer_types_enabled_for(cpu_flags())


def model_params(llama_cpp: Any) -> Any:
    """``llama_model_default_params()`` with the workaround applied (and no GPU layers)."""
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    if not extra_buffer_types_enabled():
        params.use_extra_bufts = False
    return params


@contextlib.contextmanager
def safe_model_defaults() -> Iterator[None]:
    """Within the block, ``llama_cpp.Llama(...)`` loads with the workaround applied (the high-level
    class builds its model parameters itself and has no argument for extra buffer types)."""
    if extra_buffer_types_enabled():
        yield
        return
    # llama_cpp.Llama calls llama_model_default_params() through this module at construction time
    low: Any = importlib.import_module("llama_cpp.llama_cpp")
    original = low.llama_model_default_params

    def patched() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = patched
    try:
        yield
    finally:
        low.llama_model_default_params = original
