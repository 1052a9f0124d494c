"""Methods II benchmark: GPTQ, AWQ and SmoothQuant against round-to-nearest on smollm2-135m.

Every run quantizes in its own process (so its peak memory is its own), writes a compressed-tensors
checkpoint, and a second process reloads it with transformers and measures perplexity with the
``quantmatch eval`` protocol. W8A8 checkpoints are also run with real int8 matrix products
(:mod:`quantmatch.plugins.backends.int8_runtime`) and timed against fp32.

Defaults follow the issue: 128 calibration samples of 512 tokens from ``../shared/data/tiny-shakespeare.txt``
(seed 0), perplexity on the first 20,000 tokens of ``../shared/data/wikitext-2-raw-test.txt`` in
1024-token windows; checkpoints are stored in fp32 so only the algorithms differ from the fp32 baseline.

    .venv/bin/python benchmarks/bench_methods2.py                       # everything (hours on 2 busy cores)
    .venv/bin/python benchmarks/bench_methods2.py --runs gptq-w4g64,rtn-w4g64 --samples 16
    .venv/bin/python benchmarks/bench_methods2.py --int8-speed-only DIR  # timing of one W8A8 checkpoint

Results go to ``benchmarks/results/methods2.json`` (merged run by run) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CALIB = DATA / "tiny-shakespeare.txt"
EVAL = DATA / "wikitext-2-raw-test.txt"
RESULTS = REPO / "benchmarks" / "results" / "methods2.json"

RUNS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "rtn-w4g64": ("rtn", "w4a16-g64", {}),
    "gptq-w4g64": ("gptq", "w4a16-g64", {}),
    "rtn-w3g64": ("rtn", "w3a16-g64", {}),
    "gptq-w3g64": ("gptq", "w3a16-g64", {}),
    "rtn-w4g64-asym": ("rtn", "w4a16-g64-asym", {}),
    "awq-w4g64": ("awq", "w4a16-g64-asym", {}),
    "naive-w8a8-static": ("rtn", "w8a8-int8-static", {}),
    "sq-w8a8-static": ("smoothquant", "w8a8-int8-static", {}),
    "naive-w8a8-dynamic": ("rtn", "w8a8-int8", {}),
    "sq-w8a8-dynamic": ("smoothquant", "w8a8-int8", {}),
    "gptq-w4g64-textbook": ("gptq", "w4a16-g64", {"shrink": 0.0}),
    "sq-w8a8-static-all": ("smoothquant", "w8a8-int8-static", {"dynamic_layers": []}),
    "gptq-w4g64-wikicalib": ("gptq", "w4a16-g64", {"heldout_calibration": True}),
    "gptq-w4g64-textbook-wikicalib": ("gptq", "w4a16-g64", {"shrink": 0.0, "heldout_calibration": True}),
}
"""label -> (method, scheme, extra options). RTN runs are the same grids as the calibrated runs.
``textbook`` is GPTQ without the Hessian shrinkage (what llm-compressor runs); ``-all`` makes every
SmoothQuant layer static (down_proj included); ``heldout_calibration`` calibrates on WikiText itself
instead of tiny-shakespeare (a diagnostic: in-domain calibration)."""

HELDOUT_FROM = 200_000
"""The WikiText test text from this character on (the evaluated first 20,000 tokens end near character
83,000): in-domain calibration text disjoint from the evaluation tokens."""


def _heldout_text(work: Path) -> Path:
    path = work / "wikitext-test-heldout.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(EVAL.read_text(encoding="utf-8")[HELDOUT_FROM:], encoding="utf-8")
    return path

ANCHORS = {"gptq-w4g64-textbook": "gptq-w4g64", "gptq-w4g64": "gptq-w4g64", "gptq-w3g64": "gptq-w3g64",
           "sq-w8a8-static-all": "sq-w8a8-static", "sq-w8a8-static": "sq-w8a8-static",
           "sq-w8a8-dynamic": "sq-w8a8-dynamic", "awq-w4g64": "awq-w4g64"}
"""Our run label -> llm-compressor recipe of benchmarks/llmcompressor_anchor.py (same scheme; its GPTQ is
textbook GPTQ and its static SmoothQuant makes every layer static, so ``-textbook`` and ``-all`` are the
like-for-like rows). ``--anchors`` takes recipe names; their results are stored as ``llmc:RECIPE``."""


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- workers (one process each) ---------------------------------------------------------------------
def worker_quantize(label: str, out: Path, samples: int, seq_len: int, threads: int) -> dict[str, Any]:
    import torch

    from quantmatch.sdk.calibration import CalibrationSpec
    from quantmatch.sdk.pipeline import quantize

    torch.set_num_threads(threads)
    method, scheme, extra = RUNS[label]
    extra = dict(extra)
    text = _heldout_text(out.parent) if extra.pop("heldout_calibration", False) else CALIB
    blocks: list[int] = []
    loaded: list[int] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "load" and done == total:
            loaded.append(_rss_now())
        if stage == "quantize":
            blocks.append(_rss_now())

    cal = CalibrationSpec(str(text), samples, seq_len, seed=0)
    wall, cpu = time.perf_counter(), time.process_time()
    res = quantize("smollm2-135m", method, scheme, out, calibration=cal, force=True, progress=progress,
                   dtype="float32", **extra)
    return {"label": label, "method": method, "scheme": res.scheme, "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(time.process_time() - cpu, 1), "peak_rss": _peak_rss(),
            "rss_after_load": loaded[0] if loaded else None,
            "rss_blocks": [min(blocks), max(blocks)] if blocks else None,
            "rss_mib_per_block": [round(b / 2**20) for b in blocks], "size_bytes": res.size_bytes,
            "calibration": f"{samples}x{seq_len}", "calibration_text": text.name, "threads": threads}


def worker_eval(target: str, tokens: int, threads: int, int8: bool) -> dict[str, Any]:
    import torch

    from quantmatch.sdk.evaluate import evaluate, perplexity, token_ids

    torch.set_num_threads(threads)
    ev = evaluate(target, text=EVAL, tokens=tokens, window=1024, dtype="float32")
    out: dict[str, Any] = {"ppl": round(ev.perplexity, 4), "eval_s": round(ev.seconds, 1), "tokens": ev.tokens}
    if int8:
        from quantmatch.plugins.backends.int8_runtime import convert_to_int8
        from quantmatch.plugins.methods._compressed import load_compressed

        model, tok = load_compressed(target, "float32")
        out["int8_layers"] = convert_to_int8(model, threads)
        ids = token_ids(lambda t: tok(t, add_special_tokens=False)["input_ids"], EVAL.read_text(encoding="utf-8"),
                        tokens)
        t = time.perf_counter()
        out["ppl_int8_runtime"] = round(perplexity(model, ids, 1024)[0], 4)
        out["eval_int8_s"] = round(time.perf_counter() - t, 1)
    return out


def _once(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _best(fn: Any, repeats: int) -> float:
    fn()
    return min(_once(fn) for _ in range(repeats))


def _time_layer(m: int, k: int, n: int, threads: int, repeats: int) -> dict[str, Any]:
    """One linear layer ``[m, k] x [k, n]``: fp32 torch, fp32 ONNX Runtime MatMul, and Int8Linear with
    each integer kernel (activation quantization and rescaling included)."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from quantmatch.plugins.backends.int8_runtime import KERNELS, Int8Linear

    x, w = torch.randn(m, k), torch.randn(n, k) * 0.02
    codes = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    lins = {kernel: Int8Linear(codes, torch.full((n,), 0.01), None, None, threads, kernel) for kernel in KERNELS}
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "fp32",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
                              initializer=[numpy_helper.from_array(w.t().contiguous().numpy(), "w")])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                                  ir_version=8).SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    xn = x.numpy()
    with torch.inference_mode():
        return {"shape": f"{m}x{k} @ {k}x{n}", "fp32_torch_ms": _best(lambda: x @ w.t(), repeats) * 1e3,
                "fp32_ort_ms": _best(lambda: sess.run(None, {"x": xn}), repeats) * 1e3,
                **{f"int8_{kernel}_ms": _best(lambda lin=lin: lin(x), repeats) * 1e3 for kernel, lin in lins.items()}}


def worker_int8_speed(target: str, threads: int, repeats: int = 3) -> dict[str, Any]:
    """Prefill time of the whole model (fp32 weights vs int8 runtime) and per-layer GEMM times.

    Timings alternate between the two models within each repeat so load from other processes hits both.
    """
    import torch

    from quantmatch.plugins.backends.int8_runtime import convert_to_int8, fastest_int8_kernel
    from quantmatch.plugins.methods._compressed import load_compressed
    from quantmatch.sdk.models import resolve_model

    torch.set_num_threads(threads)
    fp32, _ = resolve_model("smollm2-135m").load("float32")
    q, _ = load_compressed(target, "float32")
    kernel = fastest_int8_kernel(threads)
    convert_to_int8(q, threads, kernel)
    ids = torch.randint(0, 49152, (1, 512), generator=torch.Generator().manual_seed(0))
    fp_t, q_t = [], []
    with torch.inference_mode():
        fp32.model(input_ids=ids)
        q.model(input_ids=ids)
        for _ in range(repeats):
            fp_t.append(_once(lambda: fp32.model(input_ids=ids)))
            q_t.append(_once(lambda: q.model(input_ids=ids)))
    layers = [_time_layer(512, k, n, threads, repeats) for k, n in ((576, 576), (576, 1536), (1536, 576))]
    return {"prefill_512": {"fp32_torch_s": min(fp_t), "int8_s": min(q_t), "int8_kernel": kernel}, "layers": layers,
            "threads": threads}


# ---- driver ------------------------------------------------------------------------------------------
def _child(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _write_samples(path: Path, samples: int, seq_len: int) -> Path:
    """The calibration token ids quantmatch uses, for the llm-compressor run to read."""
    from safetensors.torch import save_file

    from quantmatch.sdk.calibration import CalibrationSpec, calibration_samples
    from quantmatch.sdk.models import resolve_model

    tok = resolve_model("smollm2-135m").load_tokenizer()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"input_ids": calibration_samples(tok, CalibrationSpec(str(CALIB), samples, seq_len, seed=0))},
              str(path))
    return path


def run_anchor(recipe: str, args: argparse.Namespace, common: list[str]) -> dict[str, Any]:
    """llm-compressor's run of ``recipe`` in its own venv, then our evaluation of its checkpoint."""
    from quantmatch.plugins.methods.algorithms.export import mark_packed_zero_points
    from quantmatch.sdk.models import resolve_model

    samples = _write_samples(args.work / f"samples-{args.samples}x{args.seq_len}.safetensors", args.samples,
                             args.seq_len)
    out = args.work / f"llmc-{recipe}"
    cmd = [str(args.llmc_python), str(REPO / "benchmarks" / "llmcompressor_anchor.py"), "--model",
           str(resolve_model("smollm2-135m").hf_dir), "--samples", str(samples), "--recipe", recipe,
           "--out", str(out), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    res: dict[str, Any] = json.loads(lines[-1]) if lines else {"error": proc.stderr.strip().splitlines()[-1:]}
    res["command"] = " ".join(cmd)
    if "error" not in res:
        mark_packed_zero_points(out)  # transformers 5 + compressed-tensors 0.20 cannot load packed zero points
        w8a8 = recipe.startswith("sq")
        res.update(_child(["--worker", "eval", str(out), *(["int8"] if w8a8 else []), *common]))
    return res


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    import platform

    import cpuinfo  # py-cpuinfo, a dependency of quantmatch

    return {"cpu": cpuinfo.get_cpu_info().get("brand_raw", platform.processor()), "cores": os.cpu_count(),
            "threads": args.threads, "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
            "calibration": f"{args.samples}x{args.seq_len} tiny-shakespeare", "eval_tokens": args.eval_tokens,
            "command": "python " + " ".join(sys.argv)}


def _save(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    old.update(results)
    path.write_text(json.dumps(old, indent=1) + "\n", encoding="utf-8")


def anchor_table(results: dict[str, Any]) -> str:
    lines = ["| scheme | quantmatch ppl | llm-compressor ppl | ppl ratio | quantmatch wall s | llm-compressor wall s |"
             " quantmatch peak RSS MiB | llm-compressor peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
    for label in ANCHORS:
        ours, theirs = results.get(label, {}), results.get(f"llmc:{ANCHORS[label]}", {})
        if not ours or not theirs:
            continue
        if "error" in theirs:
            lines.append(f"| {label} | {ours.get('ppl', '')} | fails: {theirs['error']} | | {ours.get('wall_s', '')} "
                         f"| | {ours.get('peak_rss', 0) / 2**20:,.0f} | |")
            continue
        ratio = f"{ours['ppl'] / theirs['ppl']:.4f}" if "ppl" in ours and "ppl" in theirs else ""
        lines.append(f"| {label} | {ours.get('ppl', '')} | {theirs.get('ppl', '')} | {ratio} "
                     f"| {ours.get('wall_s', '')} | {theirs.get('wall_s', '')} "
                     f"| {ours.get('peak_rss', 0) / 2**20:,.0f} | {theirs.get('peak_rss', 0) / 2**20:,.0f} |")
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    fp = results.get("fp32", {}).get("ppl")
    lines = ["| run | method | scheme | perplexity | vs fp32 | int8-runtime ppl | quantize wall s | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        if not isinstance(r, dict) or "ppl" not in r or label.startswith("llmc:"):
            continue
        rel = f"{100 * (r['ppl'] / fp - 1):+.2f}%" if fp and label != "fp32" else ""
        rss = f"{r['peak_rss'] / 2**20:,.0f}" if r.get("peak_rss") else ""
        lines.append(f"| {label} | {r.get('method', '-')} | {r.get('scheme', 'fp32')} | {r['ppl']:.3f} | {rel} | "
                     f"{r.get('ppl_int8_runtime', '')} | {r.get('wall_s', '')} | {rss} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated labels (default: all)")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--eval-tokens", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=1, help="torch/ORT threads (default 1: best on a busy 2-core box)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/quantmatch-bench-methods2"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--no-fp32", action="store_true", help="skip the fp32 baseline evaluation")
    ap.add_argument("--int8-speed-only", type=Path, help="only time this W8A8 checkpoint against fp32")
    ap.add_argument("--anchors", default="", help="comma-separated llm-compressor recipes to run "
                                                   f"({', '.join(sorted(set(ANCHORS.values())))})")
    ap.add_argument("--llmc-python", type=Path, default=Path("/tmp/llmc/bin/python"),
                    help="python of llm-compressor's venv (benchmarks/llmcompressor_venv.sh makes it)")
    args = ap.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "quantize":
            out = worker_quantize(rest[0], Path(rest[1]), args.samples, args.seq_len, args.threads)
        elif kind == "eval":
            out = worker_eval(rest[0], args.eval_tokens, args.threads, int8=len(rest) > 1 and rest[1] == "int8")
        else:
            out = worker_int8_speed(rest[0], args.threads)
        print(json.dumps(out))
        return 0
    common = ["--samples", str(args.samples), "--seq-len", str(args.seq_len), "--eval-tokens",
              str(args.eval_tokens), "--threads", str(args.threads)]
    if args.int8_speed_only:
        res = _child(["--worker", "speed", str(args.int8_speed_only), *common])
        print(json.dumps(res, indent=1))
        _save({"int8_speed": res}, args.results)
        return 0
    results: dict[str, Any] = {}
    _save({"machine": _machine(args)}, args.results)
    if not args.no_fp32 and args.runs.strip():
        from quantmatch.sdk.models import resolve_model

        results["fp32"] = _child(["--worker", "eval", str(resolve_model("smollm2-135m").hf_dir), *common])
        print("fp32", results["fp32"], flush=True)
        _save(results, args.results)
    for label in [r for r in args.runs.split(",") if r]:
        out = args.work / label
        q = _child(["--worker", "quantize", label, str(out), *common])
        if "error" not in q:
            w8a8 = RUNS[label][1].startswith("w8a8")
            q.update(_child(["--worker", "eval", str(out), *(["int8"] if w8a8 else []), *common]))
        results[label] = q
        print(label, q, flush=True)
        _save({label: q}, args.results)
    for recipe in [r for r in args.anchors.split(",") if r]:
        results[f"llmc:{recipe}"] = run_anchor(recipe, args, common)
        print(f"llmc:{recipe}", results[f"llmc:{recipe}"], flush=True)
        _save({f"llmc:{recipe}": results[f"llmc:{recipe}"]}, args.results)
    if "sq-w8a8-static" in results and "error" not in results["sq-w8a8-static"]:
        results["int8_speed"] = _child(["--worker", "speed", str(args.work / "sq-w8a8-static"), *common])
        print("int8_speed", results["int8_speed"], flush=True)
        _save({"int8_speed": results["int8_speed"]}, args.results)
    everything = json.loads(args.results.read_text(encoding="utf-8"))
    print(table(everything))
    print()
    print(anchor_table(everything))
    return 0


if __name__ == "__main__":
    sys.exit(main())
