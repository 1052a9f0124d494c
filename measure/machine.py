"""Measure this machine once: memory bandwidth and int8/fp32/bf16 GEMM throughput.

- ``copy_gbps``: the device plugins' copy test (:func:`quantmatch.sdk.bandwidth.measure_copy_bandwidth`,
  a single-thread ``memcpy``, bytes read + written);
- ``read_gbps``: a threaded read of a buffer far larger than the caches (``torch.sum`` over 256 MiB
  with ``threads`` threads), closer to what a decode step does with the weights;
- ``gemm``: operations per second on one compute-bound shape, best of a few short timed runs, as each
  installed runner measures its own kernels (:meth:`~quantmatch.sdk.runner.Runner.gemm_rates`: PyTorch's
  ``torch.matmul`` in fp32 and bf16 and ``torch._int_mm``, ONNX Runtime's dynamic int8 ``MatMulInteger``
  path with its activation quantization ...): ``<dtype>_<backend>`` per runner, and ``fp32``, ``bf16``,
  ``int8`` the fastest of each (the best this machine offers in that type).

The roofline uses the larger of the two bandwidths (the best this machine was seen to sustain).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["GEMM_SHAPE", "MachineFigures", "measure_machine", "read_bandwidth"]

GEMM_SHAPE = (256, 1536, 1536)
"""``(M, K, N)`` of the GEMM microbenchmark: 256 tokens through an MLP-sized layer (compute-bound)."""


@dataclass(frozen=True)
class MachineFigures:
    """Measured figures of this machine; ``gemm`` maps ``fp32``/``bf16``/``int8`` to ops/s."""

    device: str
    name: str
    threads: int
    copy_gbps: float | None
    read_gbps: float | None
    gemm: dict[str, float] = field(default_factory=dict)
    gemm_shape: tuple[int, int, int] = GEMM_SHAPE
    date: str = ""
    notes: str = ""

    @property
    def bandwidth_gbps(self) -> float | None:
        """The bandwidth the roofline divides by: the best of the copy and read tests."""
        vals = [v for v in (self.copy_gbps, self.read_gbps) if v]
        return max(vals) if vals else None

    def peak(self, dtype: str) -> float | None:
        """Measured ops/s for ``fp32``, ``bf16`` or ``int8`` (``None`` when not measured)."""
        return self.gemm.get(dtype)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bandwidth_gbps"] = self.bandwidth_gbps
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MachineFigures:
        known = set(cls.__dataclass_fields__)
        data = {k: v for k, v in d.items() if k in known}
        data["gemm_shape"] = tuple(data.get("gemm_shape") or GEMM_SHAPE)
        return cls(**data)


def read_bandwidth(threads: int, size_mib: int = 256, repeats: int = 3) -> float:
    """GB/s of a threaded read (``torch.sum`` of an fp32 buffer of ``size_mib`` MiB), best of ``repeats``."""
    import torch

    torch.set_num_threads(threads)
    buf = torch.ones(size_mib * 2**20 // 4, dtype=torch.float32)
    from quantmatch.sdk.timing import time_best

    best = time_best(lambda: buf.sum(), seconds=0.0, min_runs=repeats)
    return buf.numel() * 4 / best / 1e9


def measure_machine(threads: int, quick: bool = False) -> MachineFigures:
    """Measure bandwidth and GEMM rates once (about 3 s; ``quick`` trims buffers and timings for tests)."""
    from quantmatch.registry import Registry
    from quantmatch.sdk.bandwidth import measure_copy_bandwidth

    reg = Registry()
    dev = reg.local()
    copy = measure_copy_bandwidth(64 if quick else 256, 2 if quick else 3).value
    notes = []
    read: float | None = None
    shape = (64, 512, 512) if quick else GEMM_SHAPE
    try:
        read = round(read_bandwidth(threads, 64 if quick else 256), 2)
    except ImportError:
        notes.append("torch is not installed: the threaded read test not measured")
    gemm: dict[str, float] = {}
    seen: set[type] = set()
    for backend in reg.host.runnable_backends():
        try:
            cls = reg.host.runner_class(backend)
        except Exception as e:  # a plugin's runner that does not import: reported, not fatal
            notes.append(f"{backend}: runner not loaded ({type(e).__name__})")
            continue
        if cls is None or cls in seen or cls.missing():
            continue
        seen.add(cls)
        for dtype, rate in cls.gemm_rates(threads, shape, 0.05 if quick else 0.3).items():
            gemm[f"{dtype}_{backend}"] = rate
            gemm[dtype] = max(rate, gemm.get(dtype, 0.0))
    if not gemm:
        notes.append("no runner measured a GEMM rate (install quantmatch[torch])")
    return MachineFigures(dev.id, dev.name, threads, copy, read, gemm, shape,
                          time.strftime("%Y-%m-%dT%H:%M:%S%z"), "; ".join(notes))
