"""PyTorch's CPU kernel rates on this machine, for the planner (``TorchBackend.rate_probe``).

:data:`LAYERS` distinct linear layers of ``K = 1024`` inputs and ``N = 2816`` outputs (the MLP projection
of the llama.cpp probe model; 92M weights, 184 MB in bf16: beyond the last-level cache of most CPUs, so
the weights stream from memory as a model's do; one such layer alone, in cache, ran the bf16 GEMV twice
as fast on a Sapphire Rapids core), one after the other through ``torch.nn.functional.linear`` as a
transformers model calls them: one row (the decode GEMV) and :data:`GEMM_ROWS` rows (prefill), in each
float dtype the CPU runners use (fp32 and bf16; fp16 when the CPU has AVX512-FP16 or Arm FP16
arithmetic). Imported only when the probe runs (it imports torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantmatch.sdk.hostcpu import cpu_flags
from quantmatch.sdk.kernel_rates import KernelRate, RateProbeResult, time_best_on

__all__ = ["GEMM_ROWS", "SHAPE", "probe_rates"]

SHAPE = (1024, 2816)
"""``(K, N)`` of the probe layer."""
GEMM_ROWS = 256
LAYERS = 32
"""Rows of the prefill-sized product."""


def _run(x: Any, ws: list[Any]) -> None:
    import torch

    for w in ws:
        torch.nn.functional.linear(x, w)


def probe_rates(threads: int, clock: str, workdir: Path) -> RateProbeResult:
    """fp32/bf16 (and fp16 where the CPU computes in it) GEMV and GEMM rates of ``F.linear`` at
    ``threads`` threads; ``workdir`` is unused (nothing is written)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    k, n = SHAPE
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if cpu_flags() & {"avx512_fp16", "fphp"}:
        dtypes["fp16"] = torch.float16
    out = []
    try:
        gen = torch.Generator().manual_seed(0)
        for name, dt in dtypes.items():
            ws = [torch.randn(n, k, generator=gen).to(dt) for _ in range(LAYERS)]
            x1 = torch.randn(1, k, generator=gen).to(dt)
            xm = torch.randn(GEMM_ROWS, k, generator=gen).to(dt)
            with torch.inference_mode():
                t1 = time_best_on(clock, lambda: _run(x1, ws), 0.2, 3)  # noqa: B023 (called right here)
                tm = time_best_on(clock, lambda: _run(xm, ws), 0.2, 2)  # noqa: B023
            ws = []  # free them before the next dtype is built
            total = LAYERS * k * n
            out.append(KernelRate("torch", "cpu", name, total / t1, 2.0 * GEMM_ROWS * total / tm, threads,
                                  (GEMM_ROWS, k, n),
                                  f"torch {torch.__version__} F.linear {name}, {LAYERS} layers, {clock} clock"))
    finally:
        torch.set_num_threads(before)
    return RateProbeResult(tuple(out))
