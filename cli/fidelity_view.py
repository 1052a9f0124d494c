"""Terminal views of fidelity: one artifact's figures (``eval``) and artifacts side by side (``compare``)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["compare_table", "fidelity_table", "histogram_lines"]

_BAR = 28


def _edges_labels(edges: Sequence[float]) -> list[str]:
    labels = [f"< {edges[0]:g}"]
    labels += [f"{a:g} - {b:g}" for a, b in pairwise(edges)]
    labels.append(f">= {edges[-1]:g}")
    return labels


def histogram_lines(counts: Sequence[int], edges: Sequence[float], width: int = _BAR) -> list[str]:
    """A text histogram of per-token KL divergence, one line per decade (share of positions and a bar)."""
    total = sum(counts) or 1
    labels = _edges_labels(edges)
    pad = max(len(x) for x in labels)
    top = max(counts) or 1
    return [f"{label:>{pad}}  {100 * c / total:5.1f}%  {'#' * round(width * c / top)}"
            for label, c in zip(labels, counts)]


def fidelity_table(f: Any, reference: dict[str, Any], console: Console, tokenizer_agrees: bool | None = None) -> None:
    """The fidelity block of ``quantmatch eval``."""
    ref = f"{reference.get('model', '?')} on {reference.get('runtime', '?')} ({reference.get('compute', '?')})"
    t = Table(title=f"fidelity against {ref}", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("KL divergence", f"mean {f.kld_mean:.5f} ± {f.kld_ci95:.5f} (95%), median {f.kld_median:.5f}, "
                               f"p90 {f.kld_p90:.4f}, p99 {f.kld_p99:.4f}, max {f.kld_max:.3f}")
    t.add_row("same top token", f"{f.top1_pct:.2f}% (95%: {f.top1_low:.2f} - {f.top1_high:.2f}) of {f.tokens:,} "
                                f"positions")
    t.add_row("flips", f"{f.flips_lost} lost (reference right, artifact wrong), {f.flips_gained} gained")
    t.add_row("perplexity", f"{f.ppl:.3f} against {f.ref_ppl:.3f}: ratio {f.ppl_ratio:.4f} "
                            f"(ln ratio ± {f.ln_ppl_ratio_ci95:.4f})")
    cached = "read from the cache" if reference.get("cached") else "computed now and cached"
    form = ("full distributions (last hidden states and the LM head)" if reference.get("form") == "exact" else
            f"top {f.top_k} log-probabilities per position and the rest's mass (KL divergence a lower bound)")
    t.add_row("reference", f"{form}, {cached}: {reference.get('cache', '')}")
    if tokenizer_agrees is False:
        t.add_row("note", "the artifact's own tokenizer cuts the text differently; both scored the reference's "
                          "token ids")
    console.print(t)
    from quantmatch.sdk.fidelity import HISTOGRAM_EDGES

    console.print("per-token KL divergence (nats):")
    for line in histogram_lines(f.histogram, HISTOGRAM_EDGES):
        console.print("  " + line)


def compare_table(rows: Sequence[dict[str, Any]], console: Console, reference: dict[str, Any]) -> None:
    """``quantmatch compare``: ranked by mean KL divergence, then a histogram per artifact."""
    from quantmatch.sdk.fidelity import HISTOGRAM_EDGES

    ref = f"{reference.get('model', '?')} on {reference.get('runtime', '?')} ({reference.get('compute', '?')})"
    t = Table(title=f"artifacts against {ref}, ranked by mean KL divergence", title_justify="left")
    for col in ("#", "artifact", "method / scheme", "runtime", "size MiB", "KLD mean ± 95%", "p99", "same top %",
                "flips", "PPL ratio", "decode tok/s"):
        t.add_column(col, justify="right" if col not in ("artifact", "method / scheme", "runtime") else "left")
    for i, r in enumerate(rows, start=1):
        f = r["fidelity"]
        speed = r.get("decode_tps")
        t.add_row(str(i), r["name"], f"{r.get('method') or '-'} / {r.get('scheme') or '-'}", r.get("runtime", ""),
                  f"{r['size_bytes'] / 2**20:,.1f}", f"{f['kld_mean']:.5f} ± {f['kld_ci95']:.5f}",
                  f"{f['kld_p99']:.4f}", f"{f['top1_pct']:.2f}", str(f["flips"]), f"{f['ppl_ratio']:.4f}",
                  f"{speed:.1f}" if speed else "-")
    console.print(t)
    for r in rows:
        console.print(f"{r['name']}: per-token KL divergence (nats)")
        for line in histogram_lines(r["fidelity"]["histogram"]["counts"], HISTOGRAM_EDGES, width=20):
            console.print("  " + line)
