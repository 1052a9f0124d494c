"""Executable backends: run artifacts on this machine, measure them, and check the registry's claims.

- :mod:`.base`: the one :class:`~.base.Runner` interface and :func:`~.base.measure`;
- :mod:`.torch_runner`, :mod:`.onnx_runner` (with :mod:`.onnx_export`), :mod:`.llamacpp_runner`: the runners;
- :mod:`.machine`: memory bandwidth and GEMM throughput of this machine, measured once;
- :mod:`.roofline`: each decode figure against its bandwidth and compute limits;
- :mod:`.store`: the SQLite results store the planner and the registry read;
- :mod:`.bench`: ``quantmatch bench`` (every combination in a fresh subprocess);
- :mod:`.verify`: ``quantmatch verify`` (microbenchmarks against the claimed levels).

Importing this package imports no torch, onnxruntime or llama.cpp: the runners import them in ``load``.
"""

from __future__ import annotations

from .base import MeasureConfig, Runner, RunnerError, RunResult, measure
from .llamacpp_runner import LlamaCppRunner
from .onnx_runner import OnnxRunner
from .torch_runner import HQQRunner, QuantoRunner, TorchRunner

__all__ = ["RUNNERS", "MeasureConfig", "RunResult", "Runner", "RunnerError", "measure", "runner_for"]

RUNNERS: dict[str, type[Runner]] = {r.backend: r for r in (TorchRunner, QuantoRunner, HQQRunner, OnnxRunner,
                                                          LlamaCppRunner)}
"""Registry backend name -> the runner that executes it here."""


def runner_for(backend: str, threads: int | None = None) -> Runner:
    """A runner for ``backend``; ``KeyError`` names the backends quantmatch can run."""
    try:
        return RUNNERS[backend](threads)
    except KeyError:
        raise KeyError(f"quantmatch has no runner for backend {backend!r} (it runs: {', '.join(RUNNERS)})") from None
