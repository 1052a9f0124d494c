"""Measure this machine once: memory bandwidth and int8/fp32/bf16 GEMM throughput.

- ``copy_gbps``: the device plugins' copy test (:func:`quantmatch.plugins.devices._common.measure_copy_bandwidth`,
  a single-thread ``memcpy``, bytes read + written);
- ``read_gbps``: a threaded read of a buffer far larger than the caches (``torch.sum`` over 256 MiB
  with ``threads`` threads), closer to what a decode step does with the weights;
- ``gemm``: operations per second on one compute-bound shape, best of a few short timed runs:
  ``fp32`` and ``bf16`` (``torch.matmul``), ``int8_torch`` (``torch._int_mm``, int32 accumulation) and
  ``int8_ort`` (ONNX Runtime's dynamic int8 ``MatMulInteger`` path, activation quantization included);
  ``int8`` is the faster of the two int8 figures (the best integer GEMM this machine offers).

The roofline uses the larger of the two bandwidths (the best this machine was seen to sustain).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["GEMM_SHAPE", "MachineFigures", "gemm_rate", "measure_machine", "read_bandwidth", "time_best"]

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


def gemm_rate(dtype: str, shape: tuple[int, int, int] = GEMM_SHAPE, seconds: float = 0.3) -> float:
    """Ops/s (2 per multiply-add) of one ``(M, K, N)`` GEMM in ``fp32``, ``bf16`` or ``int8`` (``torch._int_mm``)."""
    import torch

    m, k, n = shape
    g = torch.Generator().manual_seed(0)
    if dtype == "int8":
        a = torch.randint(-127, 127, (m, k), dtype=torch.int8, generator=g)
        b = torch.randint(-127, 127, (k, n), dtype=torch.int8, generator=g)

        def run() -> Any:
            return torch._int_mm(a, b)
    else:
        td = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        a = torch.randn((m, k), generator=g).to(td)
        b = torch.randn((k, n), generator=g).to(td)

        def run() -> Any:
            return torch.matmul(a, b)
    with torch.inference_mode():
        best = time_best(run, seconds)
    return 2.0 * m * k * n / best


def ort_int8_rate(shape: tuple[int, int, int] = GEMM_SHAPE, threads: int = 1, seconds: float = 0.3) -> float:
    """Ops/s of one ``(M, K, N)`` MatMul quantized by ``quantize_dynamic`` in ONNX Runtime (CPU EP)."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import onnxruntime as ort

    from .onnx_runner import RECIPES
    from .verify import _matmul_graph, _ort_quantize

    m, k, n = shape
    with tempfile.TemporaryDirectory(prefix="quantmatch-gemm-") as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        _matmul_graph(src, k, n)
        _ort_quantize(RECIPES["w8a8-int8"], src, dst, k)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(dst), opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((m, k)).astype(np.float32)
        best = time_best(lambda: sess.run(None, {"X": x}), seconds)
    return 2.0 * m * k * n / best


def read_bandwidth(threads: int, size_mib: int = 256, repeats: int = 3) -> float:
    """GB/s of a threaded read (``torch.sum`` of an fp32 buffer of ``size_mib`` MiB), best of ``repeats``."""
    import torch

    torch.set_num_threads(threads)
    buf = torch.ones(size_mib * 2**20 // 4, dtype=torch.float32)
    best = time_best(lambda: buf.sum(), seconds=0.0, min_runs=repeats)
    return buf.numel() * 4 / best / 1e9


def measure_machine(threads: int, quick: bool = False) -> MachineFigures:
    """Measure bandwidth and GEMM rates once (about 3 s; ``quick`` trims buffers and timings for tests)."""
    from quantmatch.plugins.devices._common import measure_copy_bandwidth
    from quantmatch.registry import Registry

    dev = Registry().local()
    copy = measure_copy_bandwidth(64 if quick else 256, 2 if quick else 3).value
    notes = []
    read: float | None = None
    gemm: dict[str, float] = {}
    try:
        import torch

        torch.set_num_threads(threads)
        read = round(read_bandwidth(threads, 64 if quick else 256), 2)
        shape = (64, 512, 512) if quick else GEMM_SHAPE
        for dt in ("fp32", "bf16", "int8"):
            try:
                gemm["int8_torch" if dt == "int8" else dt] = gemm_rate(dt, shape, 0.05 if quick else 0.3)
            except RuntimeError as e:  # e.g. no _int_mm kernel for this CPU build
                notes.append(f"{dt} GEMM not measured: {e}")
        try:
            gemm["int8_ort"] = ort_int8_rate(shape, threads, 0.05 if quick else 0.3)
        except ImportError:
            notes.append("onnxruntime is not installed: its int8 GEMM not measured")
        ints = [v for k, v in gemm.items() if k.startswith("int8_")]
        if ints:
            gemm["int8"] = max(ints)
    except ImportError:
        notes.append("torch is not installed: GEMM rates and the threaded read test not measured")
        shape = GEMM_SHAPE
    return MachineFigures(dev.id, dev.name, threads, copy, read, gemm, shape,
                          time.strftime("%Y-%m-%dT%H:%M:%S%z"), "; ".join(notes))
