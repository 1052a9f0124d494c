"""This machine's CPU feature flags, read once from ``/proc/cpuinfo`` (empty where there is none).

For decisions that depend on the CPU the process runs on (which llama.cpp buffers are safe, whether
ONNX Runtime's u8 x s8 kernels can saturate), not for describing a device: that is the x86 and Arm
device plugins' detection.
"""

from __future__ import annotations

import functools

__all__ = ["cpu_flags", "has_fast_int8_dot"]


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The ``flags`` (x86) or ``Features`` (Arm) of the first CPU in ``/proc/cpuinfo``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def has_fast_int8_dot() -> bool:
    """Whether int8 dot products accumulate without intermediate saturation: VNNI or AMX on x86, the
    dot-product instructions on Arm (``asimddp``)."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
