"""Timing helpers for micro-benchmarks: best-of timings that survive a noisy, shared machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["time_best", "time_pair"]


def time_best(fn: Callable[[], Any], seconds: float = 0.3, min_runs: int = 3) -> float:
    """Best wall time of ``fn`` over at least ``min_runs`` runs and about ``seconds`` in all (after one
    untimed warm-up call; a warm-up slower than ``seconds`` counts as the only run)."""
    t0 = time.perf_counter()
    fn()  # warm-up
    first = time.perf_counter() - t0
    if first > max(seconds, 0.25) and min_runs <= 1:
        return first
    best, spent, runs = float("inf"), 0.0, 0
    while runs < min_runs or spent < seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, runs = min(best, dt), spent + dt, runs + 1
        if runs >= 200:
            break
    return best


def time_pair(ref: Callable[[Any], Any], fn: Callable[[Any], Any], x: Any,
              x1: Any) -> tuple[float, float, float, float]:
    """Best times of ``ref`` and ``fn`` at ``x`` and at ``x1``, interleaved so that load changes hit both
    (three rounds; one when a call takes over a quarter of a second)."""
    r, q, r1, q1 = (float("inf"),) * 4
    for i in range(3):
        r = min(r, time_best(lambda: ref(x), 0.1))
        q = min(q, time_best(lambda: fn(x), 0.1, min_runs=1 if q > 0.25 else 3))
        r1 = min(r1, time_best(lambda: ref(x1), 0.05))
        q1 = min(q1, time_best(lambda: fn(x1), 0.05, min_runs=1 if q1 > 0.25 else 3))
        if i == 0 and max(q, q1) > 0.25:
            break
    return r, q, r1, q1
