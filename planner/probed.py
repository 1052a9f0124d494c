"""Kernel rates probed on this machine, in place of the CPU priors fitted on another one.

``quantmatch detect --probe`` (and ``benchmarks/bench_planner.py``) time each runtime's own GEMV and GEMM
kernels here (:mod:`quantmatch.sdk.kernel_rates`); :func:`~quantmatch.planner.hardware.device_spec` puts the
cached rates on the ``local`` :class:`~quantmatch.planner.hardware.DeviceSpec`. For a CPU candidate the
planner looks its kernel up as data: the backend's name, the target and the kernel the scheme runs
(its float dtype for an unquantized baseline, its weight format otherwise; a GGUF scheme mixed over the
types its layers end up in, weighted by time). Found: the probed rates replace the ``gemv_eff`` prior
and the compute peak times the efficiency priors (``compute_eff``, ``format_compute_eff``,
``unused_int8_features``, the emulation penalty), and the note says ``probed``. Not found: the priors
stay, and the note says ``prior``. Memory bandwidth (the copy test), dispatch overheads and memory
figures stay as they were.
"""

from __future__ import annotations

from dataclasses import replace

from quantmatch.planner.footprint import gguf_type_fractions, harmonic_mix
from quantmatch.planner.roofline import ComputePath
from quantmatch.sdk.kernel_rates import KernelRate, KernelRates
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.scheme import Scheme

__all__ = ["kernel_of", "probed_path"]


def kernel_of(s: Scheme) -> str:
    """The kernel name a probe files ``s`` under: the dtype of an unquantized baseline (``bf16``), else its
    weight format (``gguf-q4_0``), else the scheme itself."""
    if s.is_baseline:
        return str(s)
    return s.weight_format or str(s)


def _mixed(rates: KernelRates, backend: str, target: str, info: ModelInfo,
           s: Scheme) -> tuple[float, float, str] | None:
    """(GEMV FLOP/s per sequence, GEMM FLOP/s, what was used) for ``s``, or ``None`` when a kernel it needs
    was not probed. A GGUF scheme's types are mixed harmonically by their share of the weights (time adds)."""
    if s.is_gguf:
        shares = gguf_type_fractions(info, s.weight_format[5:])
    else:
        shares = {"": 1.0}
    found: list[tuple[float, KernelRate, str]] = []
    for t, share in shares.items():
        hit = rates.get(backend, target, f"gguf-{t}" if t else kernel_of(s))
        if hit is None:
            return None
        found.append((share, *hit))
    by_type = {t: r for t, (_, r, _) in zip(shares, found)}
    gemv = harmonic_mix(shares, lambda t: by_type[t].gemv_flops_s)
    gemm = harmonic_mix(shares, lambda t: by_type[t].gemm_flops_s)
    used = ", ".join(f"{name} ({share:.0%})" if len(found) > 1 else name for share, _, name in found)
    return gemv, gemm, used


def probed_path(path: ComputePath, rates: KernelRates | None, backend: str, target: str, info: ModelInfo,
                s: Scheme) -> ComputePath:
    """``path`` with the probed GEMV and GEMM rates of ``backend``'s kernel for ``s`` on ``target`` when
    ``rates`` has them (``rate_basis`` ``probed ...``), else ``path`` marked ``prior``."""
    got = None if rates is None else _mixed(rates, backend, target, info, s)
    if got is None:
        why = "no probe cached for this machine" if rates is None else f"{kernel_of(s)} not probed"
        return replace(path, rate_basis=f"prior ({why}: the runtime's fitted CPU efficiencies)")
    gemv, gemm, used = got
    assert rates is not None
    # the efficiency priors the probed rates replace no longer apply, nor do their notes
    note = "; ".join(p for p in path.note.split("; ") if not p.endswith("compute efficiency")) if gemm else path.note
    return replace(path, gemv_rate=gemv, gemm_rate=gemm, note=note, compute_scale=1.0 if gemm else path.compute_scale,
                   rate_basis=f"probed on this machine ({backend} {used}, {rates.threads} thread"
                              f"{'s' if rates.threads != 1 else ''}, {rates.date[:10]})")
