"""``quantmatch verify``: check the registry's claimed levels against what this machine does.

For each runnable combination on the local device, the runner of its backend runs a short
micro-probe (:meth:`quantmatch.sdk.runner.Runner.probe`): one layer of a fixed shape through the
backend's own kernel and through fp32 (the same shape, the same backend's fp32 path where it has one),
and this module measures

- the *compute* speed-up: fp32 time / quantized time at ``M = 256`` rows (compute-bound);
- the *memory* win: bytes of the fp32 weights / bytes the backend holds for the quantized weights;
- the GEMV speed-up at ``M = 1`` (reported, not judged: bandwidth plus dequantization cost).

The observed level is ``native`` when the compute speed-up is at least :data:`COMPUTE_WIN` (measurably
faster), else ``weight-only`` when the weights are at least :data:`MEMORY_WIN` times smaller, else
``emulated``. A claim of ``native`` or ``weight-only`` agrees when the observed level is the same; a
claim of ``emulated`` agrees when there is no speed win at either shape. Disagreements are *drift*,
reported with both figures. Which probe covers a combination is the runner's answer
(:meth:`~quantmatch.sdk.runner.Runner.probe_key`); combinations sharing a kernel share one measurement.
The evidence (figure, date, library versions) is written to the results store, where the registry picks
it up for this machine's verdicts (``quantmatch explain ... local``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.runner import PROBE_SHAPE, Probe, Runner

__all__ = ["COMPUTE_WIN", "MEMORY_WIN", "SHAPE", "Check", "Probe", "VerifyReport", "judge", "observed_level",
           "probe_key", "verify"]

COMPUTE_WIN = 1.2
"""Speed-up over fp32 at the compute-bound shape that counts as a compute win."""
MEMORY_WIN = 1.5
"""Ratio of fp32 weight bytes to the quantized weight bytes that counts as a memory win."""
SHAPE = PROBE_SHAPE
"""``(M, K, N)``: 256 rows through an MLP-sized layer (SmolLM2's intermediate width)."""


def observed_level(probe: Probe) -> str:
    """``native`` (compute win), ``weight-only`` (memory win only) or ``emulated`` (neither)."""
    if probe.compute_speedup >= COMPUTE_WIN:
        return "native"
    if probe.weight_ratio >= MEMORY_WIN:
        return "weight-only"
    return "emulated"


def judge(claimed: str, probe: Probe) -> tuple[bool, str]:
    """``(agrees, observed level)`` for a claimed level (see the module docstring)."""
    seen = observed_level(probe)
    if claimed == "emulated":
        no_win = probe.compute_speedup < COMPUTE_WIN and probe.gemv_speedup < COMPUTE_WIN
        return no_win, "emulated" if no_win else seen
    return seen == claimed, seen


@dataclass
class Check:
    """One combination: its claimed level and, when a microbenchmark covers it, the evidence."""

    method: str
    scheme: str
    backend: str
    claimed: str
    status: str  # agrees | drift | unchecked | failed
    observed: str = ""
    kernel: str = ""
    figure: str = ""
    note: str = ""
    probe: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VerifyReport:
    device: str
    device_name: str
    threads: int
    date: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    store: str = ""

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def exit_code(self) -> int:
        """1 when any claim drifted or a microbenchmark failed, else 0."""
        return 1 if (self.count("drift") or self.count("failed")) else 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = {s: self.count(s) for s in ("agrees", "drift", "unchecked", "failed")}
        return d


# ---- which kernel a combination runs on ------------------------------------------------------------
def _runner_class(backend: str, host: Any) -> tuple[type[Runner] | None, str]:
    try:
        cls = host.runner_class(backend)
    except Exception as e:  # a third-party runner that does not import: reported, the run goes on
        return None, f"its runner cannot be loaded ({type(e).__name__}: {e})"
    return cls, "" if cls is not None else f"quantmatch has no runner for {backend} on this machine"


def probe_key(method: str | None, scheme: str, backend: str, host: Any = None) -> tuple[str | None, str]:
    """``(probe key, why not)``: the micro-benchmark of ``backend``'s runner that covers a combination,
    or why none does."""
    from quantmatch.sdk.pluginhost import get_host
    from quantmatch.sdk.scheme import SchemeError, parse_scheme

    cls, why = _runner_class(backend, host or get_host())
    if cls is None:
        return None, why
    try:
        s = parse_scheme(scheme)
    except SchemeError as e:
        return None, str(e)
    return cls.probe_key(method, s)


def _kernel_of(reg: Any, v: Any) -> tuple[str | None, Any]:
    """``(method, scheme)`` whose kernel ``v`` runs: an exact export (GPTQ w4a16-g32 on llama.cpp) runs the
    exporting plugin's scheme (``gguf``, ``gguf-q4_0``), so it shares that probe."""
    exported = reg.exported_as(v.method, v.scheme, v.backend)
    if exported is None:
        return v.method, reg.scheme(v.scheme)
    return exported[0].name, exported[1]


# ---- the command ------------------------------------------------------------------------------------------
def verify(registry: Any = None, threads: int | None = None, store: str | Path | None = None, save: bool = True,
           only: Callable[[str, str, str], bool] | None = None,
           progress: Callable[[str, int, int], None] | None = None) -> VerifyReport:
    """Check every runnable combination on the local device (``only(method, scheme, backend)`` filters),
    the float baselines of every runner included.

    Each distinct kernel is measured once; results are persisted as ``verify`` evidence unless ``save``
    is false. Missing libraries make the affected checks ``unchecked`` with the install line.
    """
    from quantmatch.registry import Registry
    from quantmatch.sdk.runner import default_threads

    started = time.perf_counter()
    reg = registry or Registry()
    host = reg.host
    dev = reg.local()
    n = int(threads or default_threads())
    verdicts = []
    for backend in host.runnable_backends():
        cls, _ = _runner_class(backend, host)
        for s in cls.baselines if cls is not None else ():
            verdicts.append(reg.verdict(None, s, backend, dev))
    verdicts += reg.combinations(dev, include_unsupported=False)
    report = VerifyReport(dev.id, dev.name, n, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    probes: dict[tuple[type[Runner], str], Probe | str] = {}
    runners: dict[type[Runner], Runner] = {}
    with tempfile.TemporaryDirectory(prefix="quantmatch-verify-") as tmp:
        todo = [v for v in verdicts if only is None or only(v.method or "none", v.scheme, v.backend)]
        for i, v in enumerate(todo):
            check = Check(v.method or "none", v.scheme, v.backend, v.level.value, "unchecked")
            report.checks.append(check)
            cls, why = _runner_class(v.backend, host)
            method, scheme = _kernel_of(reg, v)
            key, why = (cls.probe_key(method, scheme) if cls is not None else (None, why))
            if key is None or cls is None:
                check.note = why
                continue
            missing = cls.missing()
            if missing:
                check.note = f"{', '.join(missing)} not installed: {cls.install}"
                continue
            if progress:
                progress(key, i, len(todo))
            if (cls, key) not in probes:
                runner = runners.setdefault(cls, host.runner(v.backend, n))
                try:
                    probes[(cls, key)] = runner.probe(key, Path(tmp))
                except Exception as e:  # a library refusing a shape or a scheme: reported, not fatal
                    text = str(e).strip()
                    probes[(cls, key)] = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
            probe = probes[(cls, key)]
            if isinstance(probe, str):
                check.status, check.note = "failed", probe
                continue
            agrees, seen = judge(check.claimed, probe)
            check.status, check.observed, check.kernel = ("agrees" if agrees else "drift"), seen, probe.kernel
            check.figure, check.probe = probe.figure(), probe.to_dict()
    report.seconds = time.perf_counter() - started
    if save:
        report.store = str(_save(report, store))
    return report


def _save(report: VerifyReport, store: str | Path | None) -> Path:
    from quantmatch.sdk.store import EvidenceRow, ResultsStore
    from quantmatch.sdk.verdict import Evidence

    st = ResultsStore(store)
    rows = []
    for c in report.checks:
        if c.status not in ("agrees", "drift"):
            continue
        head = (f"agrees ({c.claimed})" if c.status == "agrees"
                else f"DRIFT: claimed {c.claimed}, measured {c.observed}")
        versions = (c.probe or {}).get("versions", "")
        rows.append(EvidenceRow(c.method, c.scheme, c.backend, report.device,
                                Evidence("verify", f"{head}; {c.figure}; {versions}", report.date, versions,
                                         c.status == "agrees"), c.claimed, c.observed))
    if rows:
        st.add_evidence(rows)
    return st.path
