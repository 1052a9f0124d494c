"""Anchored vs exact per-tensor sensitivity on a sample of (tensor, type) pairs of SmolLM2-135M.

Run: ``.venv/bin/python benchmarks/check_sensitivity.py [THREADS] [SAMPLE]`` after ``bench_mixed.py`` (it reads
the cached anchored table for all 14 GGUF schemes and the per-scheme files in its work directory, or makes
them). Every ``len(pairs) // SAMPLE``-th non-anchor pair (the embedding excluded) is measured exactly (one
forward pass with that tensor replaced and its input rounded as llama.cpp rounds it); prints Spearman's rank
correlation and the ratio quantiles, writes ``benchmarks/results/mixed_sensitivity_check.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("results") / "mixed_sensitivity_check.json"
WORK = "/tmp/quantmatch-bench-mixed/variants"


def main() -> int:
    import torch

    from quantmatch.plugins.methods.gguf import GGUF_OUTPUTS, GGUFQuantizer
    from quantmatch.sdk.calibration import load_text
    from quantmatch.sdk.models import resolve_model
    from quantmatch.sdk.sensitivity import _OneUnitKL, calibration_ids, measure_sensitivity

    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    want = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    src = resolve_model("smollm2-135m")
    schemes = [f"gguf-{t}" for t in GGUF_OUTPUTS]
    table = measure_sensitivity(src, GGUFQuantizer(), schemes, work_dir=WORK)
    anchor: dict[str, object] = {}
    for e in table.entries:
        a = anchor.get(e.unit)
        if a is None or (e.nbytes, e.scheme) < (a.nbytes, a.scheme):  # type: ignore[attr-defined]
            anchor[e.unit] = e
    pool = sorted((e for e in table.entries if e.unit != "token_embd.weight"
                   and anchor[e.unit].scheme != e.scheme), key=lambda e: (e.unit, e.scheme))  # type: ignore[attr-defined]
    sample = {(e.unit, e.scheme): e for e in pool[::max(1, len(pool) // want)]}
    model, tok = src.load("float32")
    body, _ = load_text("tiny-shakespeare")
    scorer = _OneUnitKL(model, calibration_ids(tok, body, table.tokens))
    rows = []
    for v in GGUFQuantizer().unit_variants(src, schemes, work_dir=WORK):
        e = sample.get((v.unit, v.scheme))
        if e is None:
            continue
        rows.append({"unit": v.unit, "scheme": v.scheme, "anchored": e.kld,
                     "exact": scorer.kld(v.hf_name, v.weight, v.activation)})
        print(v.unit, v.scheme, f"{e.kld:.3e} {rows[-1]['exact']:.3e}", flush=True)

    def rank(xs: list[float]) -> list[int]:
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        r = [0] * len(xs)
        for k, i in enumerate(order):
            r[i] = k
        return r

    a, b, n = rank([r["anchored"] for r in rows]), rank([r["exact"] for r in rows]), len(rows)
    rho = 1 - 6 * sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / (n * (n * n - 1))
    ratios = sorted(r["anchored"] / r["exact"] for r in rows if r["exact"] > 0)
    out = {"n": n, "spearman": rho, "ratio_median": ratios[len(ratios) // 2], "ratio_p10": ratios[len(ratios) // 10],
           "ratio_p90": ratios[(9 * len(ratios)) // 10], "sum_anchored": sum(r["anchored"] for r in rows),
           "sum_exact": sum(r["exact"] for r in rows), "rows": rows}
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
