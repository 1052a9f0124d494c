"""Kernel rates measured on this machine: what a runtime's own GEMV and GEMM kernels reach here.

The planner's CPU priors (:class:`~quantmatch.sdk.priors.RuntimePriors` ``gemv_eff``,
``format_compute_eff`` ...) are fractions of a vector rate fitted on one machine; ggml's vec_dot, its
repacked kernels and PyTorch's bf16 path run at very different fractions on other CPUs. A backend
plugin that can time its kernels names a probe (``Backend.rate_probe``, ``"package.module:function"``);
:func:`run_rate_probes` runs it and stores the result here, and the planner uses a probed rate instead
of the prior whenever the cache holds one for (backend, target, kernel) on this machine, with this
runtime version and thread count.

The probe contract: ``function(threads: int, clock: str, workdir: Path) -> RateProbeResult``, where
``clock`` is ``wall`` (``time.perf_counter``) or ``cpu`` (``time.process_time``: the process's CPU time,
which other processes on a shared machine do not inflate) and ``workdir`` a cache folder for the
probe's files. A kernel is named the way the planner names what runs: a float dtype (``fp32``,
``bf16``) or a weight format (``gguf-q4_0``, ``gguf-q4_k_m``).

Rates are plain SI figures: ``gemv_elems_s`` weights multiplied per second by a one-row product
(decode: one sequence), ``gemm_flops_s`` FLOP/s of a many-row product (prefill), both at ``threads``
threads. The cache lives in ``$QUANTMATCH_CACHE_DIR/kernel-rates`` (default: the user cache
directory), one JSON file per (machine, backend, runtime version, threads, clock), written atomically.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import importlib.metadata
import json
import math
import platform
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from quantmatch.sdk.artifact import atomic_write_json

__all__ = [
    "CLOCKS",
    "KernelRate",
    "KernelRates",
    "MachineKey",
    "RateProbeResult",
    "load_kernel_rates",
    "machine_key",
    "rates_cache_dir",
    "run_rate_probes",
    "save_kernel_rates",
    "time_best_on",
]

CLOCKS = ("wall", "cpu")
"""How a probe reads durations: ``wall`` (``time.perf_counter``) or ``cpu`` (``time.process_time``)."""

_SCHEMA = 1


def clock_fn(clock: str) -> Callable[[], float]:
    """The timer of a :data:`CLOCKS` name."""
    import time

    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r} (valid: {', '.join(CLOCKS)})")
    return time.process_time if clock == "cpu" else time.perf_counter


def time_best_on(clock: str, fn: Callable[[], Any], seconds: float = 0.2, min_runs: int = 3) -> float:
    """Best duration of ``fn`` on ``clock`` over at least ``min_runs`` runs and about ``seconds`` of them,
    after one untimed warm-up call."""
    now = clock_fn(clock)
    fn()
    best, spent, runs = math.inf, 0.0, 0
    while runs < min_runs or spent < seconds:
        t0 = now()
        fn()
        dt = now() - t0
        best, spent, runs = min(best, dt), spent + dt, runs + 1
        if runs >= 50:
            break
    return best


@dataclass(frozen=True)
class MachineKey:
    """The CPU a rate was measured on: its model string and a hash of its ISA flags."""

    cpu_model: str
    flags_hash: str

    @property
    def slug(self) -> str:
        """A file-name-safe key: a hash of model string and flags."""
        return hashlib.sha256(f"{self.cpu_model}|{self.flags_hash}".encode()).hexdigest()[:16]


def machine_key() -> MachineKey:
    """This machine's :class:`MachineKey` (``/proc/cpuinfo``'s model name, else ``platform.processor()``)."""
    from quantmatch.sdk.hostcpu import cpu_flags

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    model = value.strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16]
    return MachineKey(model, flags)


@dataclass(frozen=True)
class KernelRate:
    """One kernel's measured rate: ``gemv_elems_s`` weights per second through a one-row product,
    ``gemm_flops_s`` FLOP/s of an ``m``-row product (0: not measured), at ``threads`` threads;
    ``shape`` the probe's ``(m, k, n)`` (or, for a whole-model probe, ``(m, params, 0)``); ``how``:
    what was timed."""

    backend: str
    target: str
    kernel: str
    gemv_elems_s: float
    gemm_flops_s: float
    threads: int
    shape: tuple[int, int, int] = (0, 0, 0)
    how: str = ""

    @property
    def gemv_flops_s(self) -> float:
        """The GEMV rate in FLOP/s (two per multiply-accumulate)."""
        return 2.0 * self.gemv_elems_s

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "target": self.target, "kernel": self.kernel,
                "gemv_elems_s": self.gemv_elems_s, "gemm_flops_s": self.gemm_flops_s, "threads": self.threads,
                "shape": list(self.shape), "how": self.how}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KernelRate:
        shape = tuple(int(x) for x in d.get("shape", (0, 0, 0)))
        return cls(str(d["backend"]), str(d["target"]), str(d["kernel"]), float(d["gemv_elems_s"]),
                   float(d.get("gemm_flops_s", 0.0)), int(d["threads"]),
                   (*shape, 0, 0, 0)[:3],  # type: ignore[arg-type]
                   str(d.get("how", "")))


@dataclass(frozen=True)
class RateProbeResult:
    """What a backend's probe returns: its rates, and ``aliases``: kernels it did not time -> the probed
    kernel of the nearest family that stands for them (``gguf-q5_k_s`` -> ``gguf-q5_k_m``)."""

    rates: tuple[KernelRate, ...]
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class KernelRates:
    """The probed rates of one or more backends on one machine, at one thread count and clock.

    ``runtimes`` maps each backend to ``(distribution, version)`` of the runtime that was timed;
    ``aliases`` maps ``(backend, kernel)`` to the probed kernel that stands for it."""

    machine: MachineKey
    threads: int
    clock: str
    rates: tuple[KernelRate, ...] = ()
    runtimes: Mapping[str, tuple[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    aliases: Mapping[tuple[str, str], str] = field(default_factory=lambda: MappingProxyType({}))
    date: str = ""

    def get(self, backend: str, target: str, kernel: str) -> tuple[KernelRate, str] | None:
        """``(rate, kernel it was probed as)`` for ``kernel`` on ``backend``/``target`` (through an alias
        when the probe names one), or ``None``."""
        for name in (kernel, self.aliases.get((backend, kernel))):
            if name is None:
                continue
            for r in self.rates:
                if r.backend == backend and r.target == target and r.kernel == name:
                    return r, name
        return None

    def merged(self, other: KernelRates) -> KernelRates:
        """These rates with ``other``'s added (``other`` wins for the same backend)."""
        keep = tuple(r for r in self.rates if r.backend not in other.runtimes)
        aliases = {k: v for k, v in self.aliases.items() if k[0] not in other.runtimes}
        return KernelRates(self.machine, self.threads, self.clock, keep + other.rates,
                           MappingProxyType({**self.runtimes, **other.runtimes}),
                           MappingProxyType({**aliases, **other.aliases}), max(self.date, other.date))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": _SCHEMA, "machine": {"cpu_model": self.machine.cpu_model,
                                               "flags_hash": self.machine.flags_hash},
                "threads": self.threads, "clock": self.clock, "date": self.date,
                "runtimes": {b: list(v) for b, v in self.runtimes.items()},
                "aliases": [[b, k, v] for (b, k), v in sorted(self.aliases.items())],
                "rates": [r.to_dict() for r in self.rates]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KernelRates:
        m = d["machine"]
        return cls(MachineKey(str(m["cpu_model"]), str(m["flags_hash"])), int(d["threads"]), str(d["clock"]),
                   tuple(KernelRate.from_dict(r) for r in d.get("rates", ())),
                   MappingProxyType({str(b): (str(v[0]), str(v[1])) for b, v in d.get("runtimes", {}).items()}),
                   MappingProxyType({(str(b), str(k)): str(v) for b, k, v in d.get("aliases", ())}),
                   str(d.get("date", "")))


def rates_cache_dir() -> Path:
    """``$QUANTMATCH_CACHE_DIR/kernel-rates`` (default: the user cache directory's)."""
    from quantmatch.sdk.models import cache_root

    return cache_root() / "kernel-rates"


def _file_name(machine: MachineKey, backend: str, version: str, threads: int, clock: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in f"{backend}-{version}")
    return f"{machine.slug}-{safe}-t{threads}-{clock}.json"


def save_kernel_rates(rates: KernelRates, cache_dir: Path | None = None) -> list[Path]:
    """Write ``rates`` to the cache, one file per backend (temp file + ``os.replace``: a reader never sees
    half a file); returns the paths. A later probe of the same machine, backend, runtime version, thread
    count and clock replaces the earlier one (a cache, not a result)."""
    root = cache_dir or rates_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for backend, (dist, version) in rates.runtimes.items():
        part = KernelRates(rates.machine, rates.threads, rates.clock,
                           tuple(r for r in rates.rates if r.backend == backend),
                           MappingProxyType({backend: (dist, version)}),
                           MappingProxyType({k: v for k, v in rates.aliases.items() if k[0] == backend}), rates.date)
        path = root / _file_name(rates.machine, backend, version, rates.threads, rates.clock)
        out.append(atomic_write_json(path, part.to_dict()))
    return out


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_kernel_rates(threads: int, clock: str | None = None, cache_dir: Path | None = None,
                      machine: MachineKey | None = None) -> KernelRates | None:
    """The cached rates of this machine (``machine``: default :func:`machine_key`) at ``threads`` threads
    (and ``clock``, when given), for runtimes whose installed version is the one probed; ``None`` when
    there are none. Unreadable or stale files are ignored (a cache)."""
    root = cache_dir or rates_cache_dir()
    if not root.is_dir():
        return None
    machine = machine or machine_key()
    found: KernelRates | None = None
    for path in sorted(root.glob(f"{machine.slug}-*-t{threads}-*.json")):
        try:
            rates = KernelRates.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue
        if rates.machine != machine or rates.threads != threads or (clock is not None and rates.clock != clock):
            continue
        if any(_installed(dist) != version for dist, version in rates.runtimes.values()):
            continue  # probed with another version of the runtime
        found = rates if found is None else found.merged(rates)
    return found


def run_rate_probes(probes: Iterable[tuple[str, str, str]], threads: int, clock: str = "wall",
                    cache_dir: Path | None = None, save: bool = True,
                    on_error: Callable[[str, BaseException], None] | None = None,
                    keep_files: bool = False) -> KernelRates:
    """Run each ``(backend, runtime distribution, "package.module:function")`` probe at ``threads``
    threads on ``clock`` and (``save``) cache the result. A probe whose runtime is not installed is
    skipped; one that fails is reported to ``on_error`` (default: re-raised) and skipped.

    The probes' model files (about 2 GB for llama.cpp's types) are removed afterwards unless
    ``keep_files`` (the planner benchmark keeps them for its next run); the rates stay cached."""
    machine = machine_key()
    root = cache_dir or rates_cache_dir()
    all_rates: list[KernelRate] = []
    runtimes: dict[str, tuple[str, str]] = {}
    aliases: dict[tuple[str, str], str] = {}
    for backend, dist, where in probes:
        version = _installed(dist)
        if version is None:
            continue
        module, _, fn = where.partition(":")
        try:
            probe = getattr(importlib.import_module(module), fn)
            workdir = root / "probe-files" / f"{backend}-{version}"
            try:
                result = probe(threads, clock, workdir)
            finally:
                if not keep_files:
                    shutil.rmtree(workdir, ignore_errors=True)
        except Exception as e:
            if on_error is None:
                raise
            on_error(backend, e)
            continue
        good = [r for r in result.rates if math.isfinite(r.gemv_elems_s) and r.gemv_elems_s > 0]
        all_rates.extend(good)
        runtimes[backend] = (dist, version)
        aliases.update({(backend, k): v for k, v in result.aliases.items()})
    rates = KernelRates(machine, threads, clock, tuple(all_rates), MappingProxyType(runtimes),
                        MappingProxyType(aliases),
                        _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if save and runtimes:
        save_kernel_rates(rates, root)
    return rates
