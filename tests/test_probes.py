"""Kernel-rate probes: the cache, the planner using a probed rate, and a real torch probe."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from quantmatch.planner import plan
from quantmatch.planner.hardware import DeviceSpec, Peak, with_measurements
from quantmatch.planner.shapes import param_breakdown, resolve_model
from quantmatch.registry import Registry
from quantmatch.sdk.kernel_rates import (
    KernelRate,
    KernelRates,
    MachineKey,
    load_kernel_rates,
    machine_key,
    save_kernel_rates,
)

MODEL = "smollm2-135m"


def _rates(gemv: float, gemm: float = 0.0, kernel: str = "gguf-q8_0", threads: int = 1) -> KernelRates:
    import importlib.metadata

    version = importlib.metadata.version("llama-cpp-python")
    return KernelRates(machine_key(), threads, "cpu",
                       (KernelRate("llama.cpp", "cpu", kernel, gemv, gemm, threads),),
                       MappingProxyType({"llama.cpp": ("llama-cpp-python", version)}),
                       MappingProxyType({("llama.cpp", "gguf-q8_k"): "gguf-q8_0"}), "2026-12-07T00:00:00+00:00")


def test_cache_round_trip_is_atomic_and_keyed_by_machine(tmp_path: Path) -> None:
    rates = _rates(3.0e9, 9.0e10)
    (path,) = save_kernel_rates(rates, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    assert json.loads(path.read_text())["rates"][0]["gemv_elems_s"] == 3.0e9
    back = load_kernel_rates(1, "cpu", tmp_path)
    assert back is not None and back.rates == rates.rates and back.runtimes == rates.runtimes
    hit = back.get("llama.cpp", "cpu", "gguf-q8_k")
    assert hit is not None and hit[1] == "gguf-q8_0" and hit[0].gemv_flops_s == 6.0e9
    assert load_kernel_rates(2, "cpu", tmp_path) is None  # another thread count
    other = MachineKey("Some Other CPU", "0" * 16)
    assert load_kernel_rates(1, "cpu", tmp_path, machine=other) is None  # another machine
    # a probe of another runtime version is stale
    stale = replace(rates, runtimes=MappingProxyType({"llama.cpp": ("llama-cpp-python", "0.0.1")}))
    save_kernel_rates(stale, tmp_path / "stale")
    assert load_kernel_rates(1, "cpu", tmp_path / "stale") is None


def _spec(rates: KernelRates | None) -> DeviceSpec:
    """A one-core CPU with fixed figures (bandwidth 20 GB/s, fp32 0.1 TFLOPS), the probed rates attached."""
    from quantmatch.planner.hardware import device_spec

    reg = Registry()
    base = device_spec(reg.device("local"))
    spec = with_measurements(base, bandwidth_gbs=20.0, peaks_tflops={"fp32": 0.1}, source="test")
    int8 = Peak("int8", 0.4, "test", "measured")
    return replace(spec, peaks=MappingProxyType({**spec.peaks, "int8": int8}), kernel_rates=rates)


def _q8(p: object) -> object:
    cands = {c.key: c for c in p.candidates}  # type: ignore[attr-defined]
    return cands[("gguf", "gguf-q8_0", "llama.cpp", "cpu")]


def test_planner_uses_a_probed_rate(tmp_path: Path) -> None:
    x = 1.0e9  # q8_0 GEMV: 1e9 weights/s, far below what the memory allows: compute-bound
    spec = _spec(_rates(x))
    p = plan(MODEL, spec, batch=1, prompt=128, gen=128, tolerance=1000,
             results_db=tmp_path / "none.sqlite")
    c = _q8(p)
    d = c.decode  # type: ignore[attr-defined]
    assert d.bound == "compute"
    assert "kernel rates: probed" in d.note
    info = resolve_model(MODEL).info
    params = param_breakdown(info)
    from quantmatch.planner.priors import runtime_priors
    from quantmatch.planner.roofline import _attn_flops

    rt = runtime_priors("llama.cpp", "cpu")
    from quantmatch.planner.types import Workload

    ctx = Workload(1, 128, 128, None).mean_decode_context
    flops = 2.0 * (params.active_linear + params.moe_router + params.output_params) + _attn_flops(info, ctx)
    expected = flops / (2.0 * x) + info.num_layers * rt.layer_overhead_s + rt.step_overhead_s
    assert d.time_s == pytest.approx(expected, rel=1e-6)
    assert d.tokens_per_s == pytest.approx(1.0 / expected, rel=1e-6)


def test_prefill_uses_the_probed_gemm_rate(tmp_path: Path) -> None:
    gemm = 1.0e9  # 1 GFLOP/s: the 128-token prefill is compute-bound
    p = plan(MODEL, _spec(_rates(1.0e9, gemm)), batch=1, prompt=128, gen=128, tolerance=1000,
             results_db=tmp_path / "none.sqlite")
    c = _q8(p)
    pre = c.prefill  # type: ignore[attr-defined]
    info = resolve_model(MODEL).info
    params = param_breakdown(info)
    from quantmatch.planner.priors import runtime_priors
    from quantmatch.planner.roofline import _attn_prefill_flops

    rt = runtime_priors("llama.cpp", "cpu")
    flops = 128 * 2.0 * (params.active_linear + params.moe_router + params.output_params) \
        + _attn_prefill_flops(info, 128)
    assert pre.flops == pytest.approx(flops)
    assert pre.bound == "compute" and "compute efficiency" not in pre.note
    assert pre.time_s == pytest.approx(flops / gemm + info.num_layers * rt.layer_overhead_s + rt.step_overhead_s)


def test_absent_rate_falls_back_to_the_prior(tmp_path: Path) -> None:
    spec = _spec(_rates(1.0e9, kernel="gguf-q4_0"))  # only q4_0 probed
    p = plan(MODEL, spec, batch=1, prompt=128, gen=128, tolerance=1000, results_db=tmp_path / "none.sqlite")
    d = _q8(p).decode  # type: ignore[attr-defined]
    assert "kernel rates: prior (gguf-q8_0 not probed" in d.note
    none = plan(MODEL, _spec(None), batch=1, prompt=128, gen=128, tolerance=1000,
                results_db=tmp_path / "none.sqlite")
    d0 = _q8(none).decode  # type: ignore[attr-defined]
    assert "kernel rates: prior (no probe cached" in d0.note
    assert d.time_s == pytest.approx(d0.time_s)  # the prior's figure, whatever else is cached


def test_torch_probe_returns_positive_finite_rates(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from quantmatch.plugins.backends import torch_rates

    old = torch_rates.LAYERS
    torch_rates.LAYERS = 2  # small and quick: this checks the mechanism, not the figure
    try:
        res = torch_rates.probe_rates(1, "wall", tmp_path)
    finally:
        torch_rates.LAYERS = old
    kernels = {r.kernel for r in res.rates}
    assert {"fp32", "bf16"} <= kernels
    for r in res.rates:
        assert r.backend == "torch" and r.target == "cpu" and r.threads == 1
        assert math.isfinite(r.gemv_elems_s) and r.gemv_elems_s > 0
        assert math.isfinite(r.gemm_flops_s) and r.gemm_flops_s > 0
