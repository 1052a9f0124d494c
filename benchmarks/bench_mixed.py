"""Mixed precision under a budget vs every uniform GGUF scheme, measured by llama.cpp against the fp32 reference.

Run: ``.venv/bin/python benchmarks/bench_mixed.py`` (options: ``--tokens`` evaluation tokens, default 4096;
``--sens-tokens`` sensitivity tokens, default 256; ``--threads``; ``--work``). On the bundled SmolLM2-135M:

1. every GGUF scheme quantmatch writes with llama.cpp's quantizer (``GGUF_OUTPUTS`` below 16 bits; no
   importance matrix) is made with ``quantize`` and scored with ``evaluate`` (the ``quantmatch eval`` /
   fidelity protocol: llama.cpp runs the file, the fp32 torch model is the reference, the same token ids of
   the held-out evaluation text);
2. the per-tensor sensitivity is measured on the *calibration* text (each tensor alone at each stored type,
   :mod:`quantmatch.sdk.sensitivity`; cached);
3. for the budget of each 4-bit uniform file (its size in bytes), the knapsack (:mod:`quantmatch.planner.mixed`)
   picks one type per tensor; the recipe is made with ``quantize_recipe`` and scored the same way.

Prints the table (scheme, file bytes, bits/weight, predicted and measured mean KL divergence, same top token)
and writes ``benchmarks/results/mixed.json``. The check: the mix at the size of the best uniform 4-bit file
has a lower measured mean KL than every uniform scheme of equal or smaller file size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("results") / "mixed.json"
MODEL = "smollm2-135m"
PARAMS = 134_515_008  # SmolLM2-135M-Instruct (/work/shared/reference/models.md; equal to the GGUF's element count)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--sens-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--work", default="/tmp/quantmatch-bench-mixed")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    from quantmatch.planner.mixed import MixedOption, solve
    from quantmatch.plugins.methods.gguf import GGUF_OUTPUTS, GGUFQuantizer
    from quantmatch.sdk.evaluate import evaluate
    from quantmatch.sdk.mixed import quantize_recipe
    from quantmatch.sdk.models import resolve_model
    from quantmatch.sdk.pipeline import quantize
    from quantmatch.sdk.recipe import Recipe
    from quantmatch.sdk.sensitivity import measure_sensitivity

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    schemes = [f"gguf-{t}" for t in GGUF_OUTPUTS if t not in ("f32", "f16", "bf16")]
    src = resolve_model(MODEL)

    scores_file = work / "scores.json"
    scores: dict[str, Any] = json.loads(scores_file.read_text()) if scores_file.is_file() else {}

    def score(path: Path, tag: str = "") -> dict[str, Any]:
        """Fidelity of one artifact, scored once per file and token count (kept in the work dir)."""
        key = f"{path.name}:{args.tokens}:{(path / 'model.gguf').stat().st_size}:{tag}"
        if key in scores:
            return dict(scores[key])
        ev = evaluate(path, tokens=args.tokens, reference=MODEL, threads=args.threads)
        f = ev.fidelity
        assert f is not None
        r = {"kld_mean": f.kld_mean, "kld_ci95": f.kld_ci95, "top1_pct": f.top1_pct, "ppl": ev.perplexity,
             "file_bytes": (path / "model.gguf").stat().st_size}
        scores[key] = r
        scores_file.write_text(json.dumps(scores, indent=1))
        return dict(r)

    rows: list[dict[str, Any]] = []
    for s in schemes:
        d = work / s
        if not (d / "quantmatch.json").is_file():
            quantize(MODEL, "gguf", s, d, force=True)
        r = score(d)
        r.update(scheme=s, kind="uniform")
        rows.append(r)
        print(f"{s:14s} {r['file_bytes']:>11,d}  KL {r['kld_mean']:.4f}  top1 {r['top1_pct']:.2f}%", flush=True)

    t0 = time.perf_counter()
    table = measure_sensitivity(src, GGUFQuantizer(), [f"gguf-{t}" for t in GGUF_OUTPUTS], tokens=args.sens_tokens,
                                threads=args.threads,
                                work_dir=str(work / "variants"))
    sens_s = time.perf_counter() - t0
    options: dict[str, list[MixedOption]] = {}
    for e in table.entries:
        options.setdefault(e.unit, []).append(MixedOption(e.scheme, e.nbytes, e.kld))

    def predicted(layout: dict[str, str]) -> float:
        return sum(next(o.kld for o in options[u] if o.scheme == s) for u, s in layout.items())

    for r in rows:
        r["predicted_kld"] = predicted(table.layouts[r["scheme"]])

    four = [r for r in rows if r["scheme"].startswith("gguf-q4")]
    best4 = min(four, key=lambda r: r["kld_mean"])
    mixes = []
    for target in sorted(four, key=lambda r: r["file_bytes"]):
        budget = target["file_bytes"] - table.other_bytes
        sol = solve(options, budget)
        assert sol is not None
        rec = Recipe(model=MODEL, method="gguf", backend="llama.cpp", device="local-cpu",
                     base_scheme=target["scheme"], assignments={u: o.scheme for u, o in sol.choice.items()},
                     predicted_weight_bytes=table.other_bytes + sol.weight_bytes, predicted_kld=sol.kld,
                     budget_bytes=target["file_bytes"], context=0,
                     sensitivity={"tokens": table.tokens, "text": table.text, "cache_key": table.cache_key},
                     created_by="benchmarks/bench_mixed.py")
        d = work / f"mixed-at-{target['scheme']}"
        tag = hashlib.sha256(json.dumps(dict(rec.assignments), sort_keys=True).encode()).hexdigest()[:16]
        if not (d / "quantmatch.json").is_file() or json.loads((d / "quantmatch.json").read_text()).get(
                "details", {}).get("recipe", {}).get("assignments") != dict(rec.assignments):
            quantize_recipe(rec, d, force=True)
        r = score(d, tag)
        rivals = [u for u in rows if u["kind"] == "uniform" and u["file_bytes"] <= target["file_bytes"]]
        r.update(scheme=f"mixed @ {target['scheme']} size", kind="mixed", predicted_kld=sol.kld,
                 predicted_bytes=rec.predicted_weight_bytes, counts=sol.counts(), budget_of=target["scheme"],
                 budget_bytes=target["file_bytes"], rivals=[u["scheme"] for u in rivals],
                 beats_all_rivals=all(r["kld_mean"] < u["kld_mean"] for u in rivals))
        assert r["file_bytes"] == rec.predicted_weight_bytes, (r["file_bytes"], rec.predicted_weight_bytes)
        mixes.append(r)
        rows.append(r)
        print(f"{r['scheme']:14s} {r['file_bytes']:>11,d}  KL {r['kld_mean']:.4f}  top1 {r['top1_pct']:.2f}%",
              flush=True)

    head = next(m for m in mixes if m["budget_of"] == best4["scheme"])
    largest4 = max(four, key=lambda r: r["file_bytes"])
    at_largest = next(m for m in mixes if m["budget_of"] == largest4["scheme"])
    met = bool(at_largest["beats_all_rivals"])

    print()
    print(f"{'scheme':26s} {'file bytes':>12s} {'bits/w':>7s} {'pred. KL':>9s} {'mean KL':>16s} {'top-1':>7s}")
    for r in sorted(rows, key=lambda r: r["file_bytes"]):
        print(f"{r['scheme']:26s} {r['file_bytes']:>12,d} {8 * r['file_bytes'] / PARAMS:7.3f} "
              f"{r['predicted_kld']:9.4f} {r['kld_mean']:9.4f} ±{r['kld_ci95']:.4f} {r['top1_pct']:6.2f}%")
    print()
    for m in mixes:
        print(f"at {m['budget_of']}'s size ({m['budget_bytes']:,} bytes): the mix {m['kld_mean']:.4f} vs the best of "
              f"{len(m['rivals'])} uniform schemes of equal or smaller size "
              f"{min(u['kld_mean'] for u in rows if u['scheme'] in m['rivals']):.4f}: "
              f"{'lower' if m['beats_all_rivals'] else 'NOT lower'}")
    print(f"lowest-KL uniform 4-bit: {best4['scheme']}; largest 4-bit: {largest4['scheme']}")
    payload = {"model": MODEL, "params": PARAMS, "eval_tokens": args.tokens, "eval_text": "tiny-shakespeare-heldout",
               "sensitivity": {"tokens": table.tokens, "text": table.text, "variants": len(table.entries),
                               "units": len(options), "seconds": table.seconds, "seconds_this_run": round(sens_s, 1),
                               "other_bytes": table.other_bytes},
               "rows": rows, "lowest_kl_uniform_4bit": best4["scheme"], "mixed_at_lowest_kl_4bit": head,
               "largest_uniform_4bit": largest4["scheme"], "mixed_at_largest_4bit": at_largest,
               "met_at_largest_4bit": met, "met_at_lowest_kl_4bit": bool(head["beats_all_rivals"]),
               "python": sys.version.split()[0], "machine": platform.machine(),
               "command": "python benchmarks/bench_mixed.py " + " ".join(sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(out)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
