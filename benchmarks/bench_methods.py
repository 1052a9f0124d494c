"""Quality, size and quantization time of every quanto, HQQ and GGUF scheme on the bundled SmolLM2-135M.

Run: ``.venv/bin/python benchmarks/bench_methods.py`` (prints a table, writes
``benchmarks/results/methods.json``; hours on 2 CPU cores). Protocol: WikiText-2 raw test
(``../shared/data/wikitext-2-raw-test.txt``), first 20,000 tokens, non-overlapping 1024-token
windows, the same for the fp32 baseline and every artifact. Torch artifacts are scored in fp32
arithmetic on their stored (quantized) weights; GGUF files by llama.cpp (CPU).

Each quantization and each evaluation runs as its own ``quantmatch ... --json`` process, so peak
RSS is per step and a crash costs one row. Results are saved after every row; ``--resume`` keeps
the rows already in the results file. Schemes the checks prune for SmolLM2 are listed with the
reason instead of a figure. The GGUF rows need the ``gguf`` extra (llama-cpp-python).

Note: SmolLM2-135M ships here as a Q4_1 GGUF, so the fp32 "baseline" is its dequantization: the
weights were already on a 4-bit grid (blocks of 32) before any method below touched them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).with_name("results") / "methods.json"
TEXT = REPO.parent / "shared" / "data" / "wikitext-2-raw-test.txt"
MODEL = "smollm2-135m"
HEADLINE = ("quanto w8a16", "hqq w8a16-g64-asym", "gguf gguf-q8_0", "quanto w4a16-g64-asym", "hqq w4a16-g64-asym",
            "gguf gguf-q4_k_m")
"""Measured first: the 8-bit and 4-bit figure of each method."""
EXTRA = (("gguf", "gguf-q8_0", ("lm_head=fp16",)),)
"""Variants with layer rules, measured after the menus: Q8_0 with the (tied) LM head kept in F16."""


def run_json(args: list[str], timeout: float) -> tuple[dict[str, Any] | None, str]:
    """Run ``python -m quantmatch.cli ARGS --json``; the parsed JSON, or ``None`` and the error text."""
    cmd = [sys.executable, "-m", "quantmatch.cli", *args, "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return None, (lines[-1] if lines else f"exit code {proc.returncode}")
    return json.loads(proc.stdout), ""


def method_schemes(methods: list[str]) -> list[tuple[str, str]]:
    """Every (method, scheme) of the methods' menus: 8-bit first, then 4-bit, then the rest, so that an
    interrupted run has the headline figures."""
    from quantmatch.registry import Registry
    from quantmatch.sdk.scheme import parse_scheme

    reg = Registry()
    pairs = [(m, s) for m in methods for s in reg.method(m).schemes]

    def rank(pair: tuple[str, str]) -> tuple[int, int, int]:
        key = f"{pair[0]} {pair[1]}"
        if key in HEADLINE:
            return 0, HEADLINE.index(key), 0
        bits = parse_scheme(pair[1]).bits_per_weight
        return 1, 0 if 8 <= bits < 9 else 1 if 4 <= bits < 5 else 2, methods.index(pair[0])

    return sorted(pairs, key=rank)


def pruned_reason(method: str, scheme: str) -> str | None:
    from quantmatch.sdk.pipeline import plan_quantization

    plan = plan_quantization(MODEL, method, scheme)
    return "; ".join(p.text for p in plan.fatal) or None


def evaluate(target: str, text: Path, tokens: int, window: int, threads: int | None = None
             ) -> tuple[dict[str, Any] | None, str]:
    more = ["--threads", str(threads)] if threads else []
    got, err = run_json(["eval", target, "--text", str(text), "--tokens", str(tokens), "--window", str(window),
                         *more], timeout=6 * 3600)
    return (got["evaluation"] if got else None), err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="quanto,hqq,gguf", help="comma-separated (default quanto,hqq,gguf)")
    ap.add_argument("--schemes", help="comma-separated subset of the methods' schemes")
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--text", type=Path, default=TEXT)
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench-methods", help="artifact directory")
    ap.add_argument("--resume", action="store_true", help="keep rows already in the results file")
    ap.add_argument("--keep", action="store_true", help="keep the artifacts (default: delete after scoring)")
    ap.add_argument("--table", action="store_true", help="only print the table of the results file")
    ap.add_argument("--threads", type=int, help="threads for every quantization and evaluation (default: all cores)")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the quantize processes' torch
    if args.table:
        print(table(json.loads(OUT.read_text())))
        return

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "gguf" in methods and importlib.util.find_spec("llama_cpp") is None:
        print("gguf: llama-cpp-python is not installed (pip install 'quantmatch[gguf]'); GGUF rows skipped")
        methods.remove("gguf")
    wanted = {s.strip() for s in args.schemes.split(",")} if args.schemes else None
    previous = json.loads(OUT.read_text()) if args.resume and OUT.is_file() else {}
    rows: dict[str, dict[str, Any]] = {f"{r['method']} {r['scheme']}": r for r in previous.get("rows", [])}
    report: dict[str, Any] = {
        "model": MODEL, "text": str(args.text.name), "tokens": args.tokens, "window": args.window,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "python": platform.python_version(),
        "threads": args.threads or os.cpu_count(),
        "note": "SmolLM2-135M is bundled as a Q4_1 GGUF: the fp32 baseline is its dequantization, so the "
                "weights were already on a 4-bit grid (blocks of 32) before quantization.",
        "baseline": previous.get("baseline"), "rows": [],
    }

    def save() -> None:
        report["rows"] = list(rows.values())
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(report, indent=2) + "\n")

    if not report["baseline"]:
        base, err = evaluate(MODEL, args.text, args.tokens, args.window, args.threads)
        if base is None:
            sys.exit(f"baseline evaluation failed: {err}")
        report["baseline"] = base
        save()
    base_ppl = float(report["baseline"]["perplexity"])
    print(f"fp32 baseline: perplexity {base_ppl:.3f}")

    todo = [(m, s, ()) for m, s in method_schemes(methods)] + [e for e in EXTRA if e[0] in methods]
    for method, scheme, rules in todo:
        key = " ".join((method, scheme, *rules))
        if (wanted and scheme not in wanted) or (key in rows and rows[key].get("status") == "ok"):
            continue
        row: dict[str, Any] = {"method": method, "scheme": scheme, **({"rules": list(rules)} if rules else {})}
        reason = pruned_reason(method, scheme)
        if reason:
            rows[key] = {**row, "status": "pruned", "reason": reason}
            save()
            print(f"{key}: pruned ({reason})")
            continue
        out = args.work / f"{method}-{scheme}" if not rules else args.work / f"{method}-{scheme}-rules"
        t0 = time.perf_counter()
        rule_args = [a for r in rules for a in ("--rule", r)]
        got, err = run_json(["quantize", MODEL, "--method", method, "--scheme", scheme, "--out", str(out),
                             "--force", *rule_args], timeout=3 * 3600)
        if got is None:
            rows[key] = {**row, "status": "failed", "reason": f"quantize: {err}"}
            save()
            print(f"{key}: quantize failed ({err})")
            continue
        result = got["result"]
        ev, err = evaluate(str(out), args.text, args.tokens, args.window, args.threads)
        if ev is None:
            rows[key] = {**row, "status": "failed", "reason": f"eval: {err}"}
        else:
            ppl = float(ev["perplexity"])
            rows[key] = {**row, "status": "ok", "produced": result["scheme"], "perplexity": round(ppl, 3),
                         "delta_pct": round(100 * (ppl / base_ppl - 1), 2), "size_bytes": result["size_bytes"],
                         "weights_bytes": ev["weights_bytes"], "quantize_s": round(result["seconds"], 1),
                         "quantize_wall_s": round(time.perf_counter() - t0, 1), "eval_s": ev["seconds"],
                         "peak_rss_bytes": ev["peak_rss_bytes"], "computed_in": ev["compute_dtype"]}
        save()
        print(f"{key}: {rows[key].get('perplexity', rows[key].get('reason'))}")
        if not args.keep:
            subprocess.run(["rm", "-rf", str(out)], check=False)

    print()
    print(table(report))


def table(report: dict[str, Any]) -> str:
    base = report["baseline"]
    lines = ["| method | scheme | perplexity | vs fp32 | size on disk | quantize time |",
             "|---|---|---:|---:|---:|---:|",
             f"| - | fp32 (baseline) | {base['perplexity']:.2f} | - | {base['weights_bytes'] / 2**20:,.0f} MiB | - |"]
    for r in report["rows"]:
        if r["status"] == "ok":
            shown = r["scheme"] + (f" (→ {r['produced']})" if r.get("produced") not in (None, r["scheme"]) else "")
            shown += "".join(f" `--rule {x}`" for x in r.get("rules", []))
            lines.append(f"| {r['method']} | {shown} | {r['perplexity']:.2f} | {r['delta_pct']:+.2f}% | "
                         f"{r['size_bytes'] / 2**20:,.0f} MiB | {r['quantize_s']:,.0f} s |")
        else:
            lines.append(f"| {r['method']} | {r['scheme']} | {r['status']}: {r['reason']} | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
