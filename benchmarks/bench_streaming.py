"""Quantizing a model larger than memory allows, block by block from disk (issue 15): peak RSS and time per block.

Run: ``.venv/bin/python benchmarks/bench_streaming.py [--sizes 1.5b,3b] [--work DIR] [--keep]``.

It writes a synthetic Llama checkpoint of each size (random fp32 weights, sharded safetensors of about
2 GB, a small byte-level tokenizer; nothing downloaded) under ``--work`` (default: a directory in the
user cache), then quantizes it in a fresh subprocess per job with ``quantmatch.quantize``:

- RTN W4A16 g128, streamed (no calibration);
- GPTQ W4A16 g128, streamed, small calibration (``--samples`` x ``--seq-len`` tokens of the shipped text);
- RTN W4A16 g128 with ``stream=False`` (the whole model loaded, as before issue 15) on the smallest size,
  as the reference.

Each subprocess records its resident memory (``VmRSS``) and the time after every block, and its peak
(``VmHWM`` of /proc/self/status, which includes everything the process ever had resident) at the end. The
table shows, per job: the fp32 checkpoint size, the peak, peak / fp32 size (goal: under 1/3), the RSS after
the second and after the last block (goal: the last within 10% of the second), seconds per block, and
``quantmatch plan``'s estimate of the job's RAM for the same model shape (goal: within 15% of the peak).
Results go to ``benchmarks/results/streaming.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("results") / "streaming.json"
GIB = 1024 ** 3
SIZES: dict[str, dict[str, Any]] = {
    # ~1.5B: 30 blocks of hidden 2048 / MLP 5632 (GQA 16/4 heads), untied 32000-token embeddings and head
    "1.5b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 30, "num_attention_heads": 16,
             "num_key_value_heads": 4},
    # ~2.9B: 40 blocks of hidden 2560 / MLP 6912 (20/4 heads)
    "3b": {"hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 40, "num_attention_heads": 20,
           "num_key_value_heads": 4},
}
BASE = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32", "hidden_act": "silu"}
SHARD_BYTES = 2 * 10 ** 9


def write_checkpoint(directory: Path, shape: dict[str, Any], seed: int = 0) -> int:
    """A random Llama checkpoint in fp32, sharded like ``save_pretrained``; returns its parameter count."""
    import torch
    from safetensors.torch import save_file

    from quantmatch.sdk.synthetic import _write_tokenizer

    cfg = {**BASE, **shape}
    h, inter, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    names: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (cfg["vocab_size"], h))]
    for i in range(n):
        p = f"model.layers.{i}."
        names += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                  (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                  (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, h)),
                  (p + "mlp.gate_proj.weight", (inter, h)), (p + "mlp.up_proj.weight", (inter, h)),
                  (p + "mlp.down_proj.weight", (h, inter))]
    names += [("model.norm.weight", (h,)), ("lm_head.weight", (cfg["vocab_size"], h))]
    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name, shp in names:
        numel = 1
        for d in shp:
            numel *= d
        if size and size + numel * 4 > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = shp
        size += numel * 4
    weight_map: dict[str, str] = {}
    total = 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shp in shard.items():
            t = torch.ones(shp) if len(shp) == 1 else torch.randn(shp, generator=gen) * 0.02
            tensors[name] = t
            weight_map[name] = fname
            total += t.numel()
        save_file(tensors, str(directory / fname), metadata={"format": "pt"})
        del tensors
    (directory / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total * 4}, "weight_map": weight_map}, indent=1), encoding="utf-8")
    (directory / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    _write_tokenizer(directory, 320)
    return total


JOB = r"""
import json, os, sys, time
from pathlib import Path
src, out, method, scheme, stream, samples, seq, log = sys.argv[1:9]
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
t0 = time.perf_counter()
rows = []
anon = [0]
def sample():  # the peak of memory the process owns (file pages it maps, such as a GGUF it reads, excluded)
    while True:
        anon[0] = max(anon[0], rss("RssAnon:"))
        time.sleep(0.02)
import threading
threading.Thread(target=sample, daemon=True).start()
def progress(stage, done, total):
    if stage == "quantize":
        rows.append({"block": done, "rss": rss("VmRSS:"), "t": time.perf_counter() - t0})
from quantmatch.sdk.calibration import CalibrationSpec
from quantmatch.sdk.pipeline import quantize
calibrated = method in ("gptq", "awq", "smoothquant")
kw = {"calibration": CalibrationSpec(samples=int(samples), seq_len=int(seq))} if calibrated else {}
if stream != "-":
    kw["stream"] = stream == "1"
res = quantize(src, method, scheme, out, force=True, progress=progress, **kw)
Path(log).write_text(json.dumps({"rows": rows, "peak": rss("VmHWM:"), "peak_anon": anon[0],
                                 "seconds": time.perf_counter() - t0,
                                 "size_bytes": res.size_bytes}))
"""


def run_job(src: Path, out: Path, method: str, scheme: str, stream: bool | None, samples: int,
            seq: int) -> dict[str, Any]:
    log = out.with_suffix(".json")
    flag = "-" if stream is None else "1" if stream else "0"
    cmd = [sys.executable, "-c", JOB, str(src), str(out), method, scheme, flag, str(samples),
           str(seq), str(log)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method} {scheme} failed:\n{proc.stderr[-3000:]}")
    data = json.loads(log.read_text())
    data["wall"] = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    log.unlink(missing_ok=True)
    return dict(data)


def planner_estimate(size: str, method: str, stream: bool | None, samples: int, seq: int) -> float:
    """The planner's RAM estimate (GiB) for this job, from the model's config alone."""
    import tempfile

    from quantmatch.planner.job import estimate_streamed_job

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "config.json").write_text(json.dumps({**BASE, **SIZES[size]}), encoding="utf-8")
        return float(estimate_streamed_job(Path(d), method, stream=stream is True, samples=samples,
                                           seq_len=seq, scheme="gguf-q4_0" if method == "gguf" else "w4a16-g128",
                                           ).ram_gib)


def with_estimates(results: list[dict[str, Any]], samples: int, seq: int) -> list[dict[str, Any]]:
    for r in results:
        est = planner_estimate(r["size"], r["method"], r["streamed"], samples, seq)
        r["planner_ram_gib"] = est
        r["planner_error_pct"] = 100 * (est - r["peak_gib"]) / r["peak_gib"]
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1.5b,3b")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "quantmatch" / "bench-streaming")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--gptq-sizes", default="1.5b", help="sizes that also run GPTQ (slow: minutes per block)")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic checkpoints")
    ap.add_argument("--jobs", help="instead of the default jobs: METHOD:SCHEME:MODE,... with MODE streamed, whole "
                                   "or own (a method that does not stream: its own path), e.g. gguf:gguf-q4_0:own")
    ap.add_argument("--append", action="store_true",
                    help="merge into the stored results (rows of the same size, method and mode are replaced)")
    ap.add_argument("--estimates-only", action="store_true",
                    help="recompute the planner's column of the stored results, measure nothing")
    args = ap.parse_args(argv)
    if args.estimates_only:
        stored = json.loads(OUT.read_text(encoding="utf-8"))
        stored["results"] = with_estimates(stored["results"], stored["samples"], stored["seq_len"])
        report(stored["results"])
        OUT.write_text(json.dumps(stored, indent=1) + "\n", encoding="utf-8")
        return 0
    results: list[dict[str, Any]] = []
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for size in sizes:
        src = args.work / f"llama-{size}"
        if not (src / "config.json").is_file():
            print(f"writing a synthetic {size} checkpoint into {src} ...", flush=True)
            write_checkpoint(src, SIZES[size])
        fp32 = sum(f.stat().st_size for f in src.glob("*.safetensors"))
        jobs: list[tuple[str, str, bool | None]] = [("rtn", "w4a16-g128", True)]
        if size in args.gptq_sizes.split(","):
            jobs.append(("gptq", "w4a16-g128", True))
        if size == sizes[0]:
            jobs.append(("rtn", "w4a16-g128", False))
        if args.jobs:
            modes = {"streamed": True, "whole": False, "own": None}
            jobs = [(m, sc, modes[mode]) for m, sc, mode in (j.split(":") for j in args.jobs.split(","))]
        for method, scheme, stream in jobs:
            print(f"{size}: {method} {scheme} {_mode(stream)} ...", flush=True)
            out = args.work / f"out-{size}-{method}-{_mode(stream).replace(' ', '-')}"
            data = run_job(src, out, method, scheme, stream, args.samples, args.seq_len)
            rows = data["rows"]
            per_block = [b["t"] - a["t"] for a, b in itertools.pairwise(rows)]
            est = planner_estimate(size, method, stream, args.samples, args.seq_len)
            results.append({
                "size": size, "method": method, "scheme": scheme, "streamed": stream, "fp32_gib": fp32 / GIB,
                "peak_gib": data["peak"] / GIB, "peak_over_fp32": data["peak"] / fp32,
                "peak_anon_gib": data.get("peak_anon", 0) / GIB,
                "rss_second_gib": rows[1]["rss"] / GIB if len(rows) > 1 else None,
                "rss_last_gib": rows[-1]["rss"] / GIB,
                "last_over_second": rows[-1]["rss"] / rows[1]["rss"] if len(rows) > 1 else None,
                "s_per_block": sum(per_block) / len(per_block) if per_block else None,
                "s_per_block_first_last": [per_block[0], per_block[-1]] if per_block else None,
                "seconds": data["seconds"], "artifact_gib": data["size_bytes"] / GIB,
                "planner_ram_gib": est, "planner_error_pct": 100 * (est * GIB - data["peak"]) / data["peak"],
                "rss_by_block_gib": [round(r["rss"] / GIB, 3) for r in rows],
            })
            r = results[-1]
            print(f"  peak {r['peak_gib']:.2f} GiB ({r['peak_over_fp32']:.3f} of fp32 {r['fp32_gib']:.2f} GiB), "
                  f"last/second block RSS {r['last_over_second']}, {r['s_per_block']} s/block, planner "
                  f"{est:.2f} GiB ({r['planner_error_pct']:+.1f}%)", flush=True)
        if not args.keep and size != sizes[-1]:
            shutil.rmtree(src, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(args.work / f"llama-{sizes[-1]}", ignore_errors=True)
    if args.append and OUT.is_file():
        stored = json.loads(OUT.read_text(encoding="utf-8"))["results"]
        new = {(r["size"], r["method"], r["streamed"]) for r in results}
        results = [r for r in stored if (r["size"], r["method"], r["streamed"]) not in new] + results
    report(results)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                           "python": platform.python_version()},
                               "date": time.strftime("%Y-%m-%d"), "samples": args.samples, "seq_len": args.seq_len,
                               "results": results}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


def _mode(stream: bool | None) -> str:
    return "own path" if stream is None else "streamed" if stream else "in memory"


def report(results: list[dict[str, Any]]) -> None:
    head = (f"{'size':>5} {'job':>22} {'fp32 GiB':>9} {'peak GiB':>9} {'peak/fp32':>9} {'last/2nd':>9} "
            f"{'s/block':>8} {'plan GiB':>9} {'plan err':>9}")
    print(head)
    for r in results:
        job = f"{r['method']} {_mode(r['streamed'])}"
        lo = f"{r['last_over_second']:.3f}" if r["last_over_second"] else "-"
        print(f"{r['size']:>5} {job:>22} {r['fp32_gib']:>9.2f} {r['peak_gib']:>9.2f} {r['peak_over_fp32']:>9.3f} "
              f"{lo:>9} {r['s_per_block'] or 0:>8.2f} {r['planner_ram_gib']:>9.2f} {r['planner_error_pct']:>+8.1f}%")


if __name__ == "__main__":
    raise SystemExit(main())
