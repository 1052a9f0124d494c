"""Measurement: run artifacts on this machine through the runner contract and check the registry's claims.

- :mod:`.run`: :func:`~.run.measure`, every figure of one artifact on one runner;
- :mod:`.machine`: memory bandwidth and GEMM throughput of this machine, measured once;
- :mod:`.roofline`: each decode figure against its bandwidth and compute limits;
- :mod:`.bench`: ``quantmatch bench`` (every combination in a fresh subprocess);
- :mod:`.verify`: ``quantmatch verify`` (micro-probes against the claimed levels);
- :mod:`.jobs`: one job in a fresh subprocess, JSON in and out (``bench`` and ``calibrate-sweep``).
- :mod:`.calibration_sweep`: ``quantmatch calibrate-sweep`` (fidelity against calibration size and text).

Runners come from the backends that declare them, through the plugin host
(:meth:`quantmatch.sdk.pluginhost.PluginHost.runner`): nothing here knows a backend or a method by
name. Importing this package imports no torch, onnxruntime or llama.cpp.
"""

from __future__ import annotations

from typing import Any

from quantmatch.measure.run import RunResult, TooSlowError, measure
from quantmatch.sdk.runner import MeasureConfig, Runner, RunnerError

__all__ = ["RUNNERS", "MeasureConfig", "RunResult", "Runner", "RunnerError", "TooSlowError", "measure", "runner_for",
           "runners"]


def runners() -> dict[str, type[Runner]]:
    """``{backend: runner class}`` for every backend that names a runner, built-in or from a plugin."""
    from quantmatch.sdk.pluginhost import get_host

    host = get_host()
    out = {}
    for name in host.runnable_backends():
        cls = host.runner_class(name)
        if cls is not None:
            out[name] = cls
    return out


def __getattr__(name: str) -> Any:
    if name == "RUNNERS":  # the table of earlier versions, now built from the plugins
        return runners()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def runner_for(backend: str, threads: int | None = None) -> Runner:
    """A runner for ``backend``, from the backend's plugin
    (:meth:`~quantmatch.sdk.pluginhost.PluginHost.runner`)."""
    from quantmatch.sdk.pluginhost import get_host

    return get_host().runner(backend, threads)
