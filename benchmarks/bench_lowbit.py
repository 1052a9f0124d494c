"""quantmatch's own GPTQ, AWQ and SmoothQuant at low-bit speed on this CPU (issue 17), side by side in one run.

Run: ``.venv/bin/python benchmarks/bench_lowbit.py [--text FILE] [--tokens N] [--threads N]``. It is
``quantmatch bench smollm2-135m --combos ...`` over the combinations below (each in its own subprocess,
artifacts cached under the user cache; the exported ones are made by ``quantmatch export``), then
prints the comparison table and the goals and writes ``benchmarks/results/lowbit.json``.
``--from FILE`` takes the output of ``quantmatch bench ... --json`` instead of running.

Combinations: the fp32 torch baseline; GPTQ W4 g32 (symmetric) and AWQ W4 g64 (asymmetric) as
compressed-tensors checkpoints in torch, exported to GGUF (llama.cpp) and to ONNX (MatMulNBits);
llama.cpp's own Q4_0 and Q4_1 and ONNX Runtime's own MatMulNBits of the same model (roofline and
perplexity rivals); SmoothQuant W8A8 (static) in torch and exported to an integer ONNX graph, and
ONNX Runtime's own W8A8.

Goals: GGUF exports decode at batch 1 >= 2.5x fp32 torch with perplexity within 0.5% of the same
artifact in torch, the GPTQ file's perplexity strictly below llama.cpp's own Q4_0; the ONNX exports
>= 2x with the same perplexity rule; SmoothQuant's integer graph >= 1.8x with its own perplexity (within
0.5% of the checkpoint in torch; ONNX Runtime's own static W8A8 is shown beside it). Each exported
artifact's roofline fraction is shown next to the one llama.cpp's (or ONNX Runtime's) own quantizer
reaches for the same type.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("results") / "lowbit.json"
MODEL = "smollm2-135m"
COMBOS = [
    "gptq:w4a16-g32:torch", "gptq:w4a16-g32:llama.cpp", "gptq:w4a16-g32:onnxruntime",
    "awq:w4a16-g64-asym:torch", "awq:w4a16-g64-asym:llama.cpp", "awq:w4a16-g64-asym:onnxruntime",
    "gguf:gguf-q4_0:llama.cpp", "gguf:gguf-q4_1:llama.cpp", "onnx:w4a32-g32:onnxruntime",
    "smoothquant:w8a8-int8-static:torch", "smoothquant:w8a8-int8-static:onnxruntime", "onnx:w8a8-int8:onnxruntime",
    "onnx:w8a8-int8-static:onnxruntime",
]
EXPORTS = {
    # exported combo -> (the same artifact in its own format, the runtime's own quantizer of that type, goal)
    "gptq:w4a16-g32:llama.cpp": ("gptq:w4a16-g32:torch", "gguf:gguf-q4_0:llama.cpp", 2.5),
    "awq:w4a16-g64-asym:llama.cpp": ("awq:w4a16-g64-asym:torch", "gguf:gguf-q4_1:llama.cpp", 2.5),
    "gptq:w4a16-g32:onnxruntime": ("gptq:w4a16-g32:torch", "onnx:w4a32-g32:onnxruntime", 2.0),
    "awq:w4a16-g64-asym:onnxruntime": ("awq:w4a16-g64-asym:torch", "onnx:w4a32-g32:onnxruntime", 2.0),
    "smoothquant:w8a8-int8-static:onnxruntime": ("smoothquant:w8a8-int8-static:torch",
                                                 "onnx:w8a8-int8-static:onnxruntime", 1.8),
}
PPL_MATCH_PCT = 0.5
KV_COMBOS = ["gguf:gguf-q4_0:llama.cpp", "gguf:gguf-q4_0-kvq8_0:llama.cpp", "gguf:gguf-q4_0-kvq4_0:llama.cpp",
             "rtn:w8a16:torch", "rtn:w8a16-kvint8:torch", "rtn:w8a16-kvint4:torch"]
"""At ``--context`` tokens (default 4096): the KV cache each keeps, its perplexity over one window of that
length and decode speed after a prompt of that length. Goal: Q8_0 K/V within 1% of F16's perplexity with a
cache at least 1.8x smaller."""
KV_GOAL = (1.0, 1.8)
OPTION_VARIANTS = [  # (label, runtime, export format, exporter options): the same GPTQ checkpoint each time
    ("torch fp32 (baseline)", "torch", None, None),
    ("GGUF, head as stored (F16)", "llama.cpp", "gguf", {}),
    ("GGUF, head=q8_0", "llama.cpp", "gguf", {"head": "q8_0"}),
    ("ONNX, accuracy_level 1, head as stored", "onnxruntime", "onnx", {}),
    ("ONNX, accuracy_level 4", "onnxruntime", "onnx", {"accuracy_level": 4}),
    ("ONNX, accuracy_level 4, head=int8", "onnxruntime", "onnx", {"accuracy_level": 4, "head": "int8"}),
]
"""``--only options``: the exporters' speed options on GPTQ W4 g32, each measured in its own process in one run."""


def _by_key(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["combo"]: r for r in data["results"]}


def goals(data: dict[str, Any]) -> dict[str, Any]:
    """Each exported combination against its speed goal, its source artifact's perplexity and the rival's."""
    rows = _by_key(data)
    out: dict[str, Any] = {}
    for key, (source, rival, speed_goal) in EXPORTS.items():
        r, s, v = rows.get(key), rows.get(source), rows.get(rival)
        if r is None or r["status"] != "ok":
            out[key] = {"met": False, "why": (r or {}).get("reason", "not run")}
            continue
        ratio = (r.get("ratios") or {}).get("decode_tps")
        ppl = r["run"]["perplexity"]
        src_ppl = s["run"]["perplexity"] if s and s["status"] == "ok" else None
        rival_ppl = v["run"]["perplexity"] if v and v["status"] == "ok" else None
        match = None if src_ppl is None else 100.0 * abs(ppl / src_ppl - 1.0)
        g: dict[str, Any] = {"decode_ratio": ratio, "speed_goal": speed_goal, "ppl": ppl, "source_ppl": src_ppl,
                             "ppl_vs_source_pct": match, "rival": rival, "rival_ppl": rival_ppl,
                             "roofline": (r.get("roofline") or {}).get("achieved"),
                             "rival_roofline": ((v or {}).get("roofline") or {}).get("achieved")}
        met = ratio is not None and ratio >= speed_goal and match is not None and match <= PPL_MATCH_PCT
        if key.startswith("gptq:") and key.endswith(":llama.cpp"):
            met = met and rival_ppl is not None and ppl < rival_ppl
        g["met"] = bool(met)
        out[key] = g
    return out


def kv_goals(kv: dict[str, Any]) -> dict[str, Any]:
    rows = _by_key(kv)
    base, q8 = rows.get("gguf:gguf-q4_0:llama.cpp"), rows.get("gguf:gguf-q4_0-kvq8_0:llama.cpp")
    if not (base and q8 and base["status"] == q8["status"] == "ok"):
        return {"met": False, "why": "the llama.cpp F16 or Q8_0 KV run failed"}
    ppl = 100.0 * (q8["run"]["perplexity"] / base["run"]["perplexity"] - 1.0)
    smaller = base["run"]["kv_bytes"] / q8["run"]["kv_bytes"] if q8["run"].get("kv_bytes") else None
    return {"ppl_vs_f16_pct": ppl, "kv_smaller": smaller,
            "met": abs(ppl) <= KV_GOAL[0] and smaller is not None and smaller >= KV_GOAL[1]}


def kv_markdown(kv: dict[str, Any]) -> str:
    rows = [f"| combination (context {kv['config'].get('context')}) | KV cache | KV MiB | ppl | decode tok/s | "
            "peak RSS MiB |", "|---|---|---:|---:|---:|---:|"]
    for r in kv["results"]:
        if r["status"] != "ok":
            rows.append(f"| {r['combo']} | {r['status']}: {r['reason'][:80]} | | | | |")
            continue
        run = r["run"]
        rows.append(f"| {r['combo']} | {run.get('kv_cache') or 'default'} | "
                    f"{_f((run.get('kv_bytes') or 0) / 2**20, '.1f')} | {run['perplexity']:.3f} | "
                    f"{run['decode_tps']:.1f} | {run['peak_rss_bytes'] / 2**20:.0f} |")
    return "\n".join(rows)


def run_options(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Export the cached GPTQ W4 g32 checkpoint with each of :data:`OPTION_VARIANTS` and measure each (no
    fidelity reference: perplexity, decode, size)."""
    from quantmatch.measure.bench import Bench, Combo
    from quantmatch.sdk.export import export_artifact
    from quantmatch.sdk.runner import MeasureConfig

    bench = Bench(MODEL, config=MeasureConfig(tokens=args.tokens), threads=args.threads, text=args.text,
                  budget=None)
    source = bench.artifact_dir(Combo("gptq", "w4a16-g32", "torch"))
    if not (source / "quantmatch.json").is_file():
        raise SystemExit(f"{source} is missing: run the exports part first")
    rows = []
    for label, backend, fmt, options in OPTION_VARIANTS:
        target = MODEL
        if fmt is not None:
            suffix = "-".join(f"{k}{v}" for k, v in sorted((options or {}).items())) or "default"
            out = source.with_name(f"{source.name}-{fmt}-{suffix}")
            if not (out / "quantmatch.json").is_file():
                export_artifact(source, fmt, out, force=True, options=options)
            target = str(out)
        print(f"[options] {label}", file=sys.stderr)
        ok, run, err = bench._job({"kind": "run", "backend": backend, "target": target, "threads": bench.threads,
                                   "dtype": "float32", "config": bench.config.to_dict(), "text": bench.text,
                                   "model": MODEL, "budget": None, "reference": None})
        rows.append({"label": label, "backend": backend, "format": fmt, "options": options, "target": target,
                     "ok": ok, "error": err, "run": run if ok else None})
    base = rows[0]["run"]
    for r in rows:
        if r["run"] and base:
            r["decode_ratio"] = r["run"]["decode_tps"] / base["decode_tps"]
            r["ppl_delta_pct"] = 100.0 * (r["run"]["perplexity"] / base["perplexity"] - 1.0)
    return rows


def options_markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| GPTQ W4 g32 exported as | decode tok/s | x fp32 torch | prefill tok/s | ppl | Δppl | weight MiB/token |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        run = r["run"]
        if run is None:
            out.append(f"| {r['label']} | failed: {r['error'][:80]} | | | | | |")
            continue
        out.append(f"| {r['label']} | {run['decode_tps']:.1f} | {_f(r.get('decode_ratio'), '.2f')} | "
                   f"{run['prefill_tps']:.0f} | {run['perplexity']:.3f} | {_f(r.get('ppl_delta_pct'), '+.2f')}% | "
                   f"{run['weight_bytes_per_token'] / 2**20:.0f} |")
    return "\n".join(out)


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def markdown(data: dict[str, Any]) -> str:
    rows = ["| combination | format run | decode tok/s | x fp32 | roofline | ppl | Δppl vs fp32 | KLD | same top % |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["results"]:
        if r["status"] != "ok":
            rows.append(f"| {r['combo']} | {r['status']}: {r['reason'][:80]} | | | | | | | |")
            continue
        run, fid = r["run"], r.get("fidelity") or {}
        art = Path(r.get("artifact") or "")
        fmt = "exported" if art.name.endswith(("-gguf", "-onnx")) else ""
        rows.append(f"| {r['combo']} | {run.get('compute', '')} {fmt} | {run['decode_tps']:.1f} | "
                    f"{_f((r.get('ratios') or {}).get('decode_tps'), '.2f')} | "
                    f"{_f(100 * ((r.get('roofline') or {}).get('achieved') or 0), '.0f')}% | "
                    f"{run['perplexity']:.3f} | {_f(r.get('ppl_delta_pct'), '+.2f')}% | "
                    f"{_f(fid.get('kld_mean'), '.4f')} | {_f(fid.get('top1_pct'), '.1f')} |")
    rows += ["", "| exported | decode x fp32 (goal) | ppl vs same artifact in torch | rival | rival ppl | "
                 "roofline vs rival's | met |", "|---|---:|---:|---|---:|---:|---|"]
    for key, g in data["goals"].items():
        if "decode_ratio" not in g:
            rows.append(f"| {key} | {g.get('why', '')[:80]} | | | | | no |")
            continue
        rows.append(f"| {key} | {_f(g['decode_ratio'], '.2f')} (>= {g['speed_goal']}) | "
                    f"{_f(g['ppl_vs_source_pct'], '.2f')}% | {g['rival']} | {_f(g['rival_ppl'], '.3f')} | "
                    f"{_f(100 * (g['roofline'] or 0), '.0f')}% vs {_f(100 * (g['rival_roofline'] or 0), '.0f')}% | "
                    f"{'yes' if g['met'] else 'no'} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096, help="perplexity tokens (default 4096)")
    ap.add_argument("--text", help="text file to score (default: the bundled held-out text)")
    ap.add_argument("--threads", type=int, help="threads (default: physical cores)")
    ap.add_argument("--requantize", action="store_true", help="re-create cached artifacts")
    ap.add_argument("--context", type=int, default=4096, help="context of the KV-cache runs (default 4096; 0 skips)")
    ap.add_argument("--only", choices=("exports", "kv", "options"),
                    help="run one part only (options: the exporters' speed options, not part of the default run)")
    ap.add_argument("--from", dest="source", help="a `quantmatch bench --json` output instead of running")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    started = time.perf_counter()
    if args.source:
        data = json.loads(Path(args.source).read_text(encoding="utf-8"))
        data = data.get("bench", data)
    else:
        from quantmatch.measure.bench import Bench, parse_combos
        from quantmatch.sdk.runner import MeasureConfig

        def show(what: str, done: int, total: int) -> None:
            print(f"[{done}/{total}] {what}", file=sys.stderr)

        data = {"results": []}
        if args.only == "options":
            data["options"] = run_options(args)
        elif args.only != "kv":
            bench = Bench(MODEL, config=MeasureConfig(tokens=args.tokens), threads=args.threads,
                          requantize=args.requantize, text=args.text, budget=None)
            data = bench.run(parse_combos(",".join(COMBOS)), progress=show).to_dict()
        if args.context and args.only not in ("exports", "options"):
            cfg = MeasureConfig(tokens=args.context, window=args.context, context=args.context, new_tokens=16,
                                batch=1)
            kv = Bench(MODEL, config=cfg, threads=args.threads, text=args.text, budget=None)
            data["kv"] = kv.run(parse_combos(",".join(KV_COMBOS)), progress=show).to_dict()
    data["goals"] = goals(data)
    if "kv" in data:
        data["kv_goals"] = kv_goals(data["kv"])
    data["command"] = " ".join(["python", "benchmarks/bench_lowbit.py", *sys.argv[1:]])
    data["python"] = platform.python_version()
    data["wall_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    if data.get("options"):
        print(options_markdown(data["options"]))
        Path(args.out).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        return 0
    print(markdown(data))
    if "kv" in data:
        print()
        print(kv_markdown(data["kv"]))
        print(f"\nKV goal (Q8_0 within {KV_GOAL[0]}% of F16, >= {KV_GOAL[1]}x smaller): {data['kv_goals']}")
    print(f"\nwrote {args.out} in {data['wall_s']:.0f} s")
    met = all(g.get("met") for g in data["goals"].values()) and data.get("kv_goals", {}).get("met", True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
