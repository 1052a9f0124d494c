"""``plan --mixed`` and ``quantize --recipe``: the mixed-precision recipe, its prediction, and what was measured."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["print_mixed_plan", "print_recipe_result", "run_mixed_plan", "run_recipe"]


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f} MB"


def _kld(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def print_mixed_plan(mp: Any, recipe_path: str | None) -> None:
    """The recipe summary: units per format, predicted size and KL, the budget's parts, and the uniform schemes."""
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False, markup=False, soft_wrap=True)
    r = mp.recipe
    out.print(f"Mixed precision for {r.model} on {r.device} ({r.method}, run by {r.backend}), context {r.context}")
    out.print(f"  budget {_mb(mp.capacity_bytes)}: KV cache {_mb(mp.kv_bytes)}, workspace {_mb(mp.activation_bytes)}, "
              f"runtime {_mb(mp.runtime_bytes)}, header and norms {_mb(mp.other_bytes)}; "
              f"{_mb(mp.solution.budget_bytes)} left for the {len(mp.solution.choice)} weight tensors")
    counts = ", ".join(f"{n} x {s}" for s, n in mp.solution.counts().items())
    out.print(f"  recipe: {counts}")
    if mp.basis == "prior":
        out.print(f"  predicted: {_mb(mp.file_bytes)} of weights; KL divergence not predicted (prior, not measured)")
    else:
        out.print(f"  predicted: {_mb(mp.file_bytes)} file, mean KL divergence {_kld(mp.solution.kld)} nats/token "
                  "(measured per tensor alone, summed)")
    best = mp.best_uniform()
    if best is not None and best.predicted_kld is not None:
        ratio = mp.solution.kld / best.predicted_kld if best.predicted_kld else 0.0
        out.print(f"  best uniform scheme that fits: {best.scheme}, {_mb(best.file_bytes)}, predicted KL "
                  f"{_kld(best.predicted_kld)} (the mix: {ratio:.2f}x its loss)")
    measured = [u for u in mp.uniform if u.predicted_kld is not None]
    if measured:
        t = Table(title="uniform schemes, priced by the same per-tensor table", title_justify="left")
        for col in ("scheme", "file", "predicted KL", "fits"):
            t.add_column(col, justify="left" if col == "scheme" else "right")
        for u in sorted(measured, key=lambda u: u.file_bytes or 0):
            t.add_row(u.scheme, _mb(u.file_bytes), _kld(u.predicted_kld), "yes" if u.fits else "no")
        out.print(t)
    for note in mp.notes:
        out.print(f"  note: {note}")
    if recipe_path:
        out.print(f"recipe written to {recipe_path}; make it with: quantmatch quantize {r.model} --recipe "
                  f"{recipe_path} --out DIR")


def run_mixed_plan(plan: Any, args: Any) -> dict[str, Any]:
    """Search the mix for ``plan`` (imports torch to measure a real model), write the recipe when asked, print it
    unless ``--json``; returns the JSON form."""
    from quantmatch.planner.mixed import plan_mixed
    from quantmatch.sdk.recipe import save_recipe

    progress = None
    if not args.json and sys.stderr.isatty():
        def progress(stage: str, done: int, total: int) -> None:
            sys.stderr.write(f"\r{stage}: {done} variants measured")
            sys.stderr.flush()
    mp = plan_mixed(plan, backend=args.backend, progress=progress)
    if progress is not None:
        sys.stderr.write("\n")
    path = None
    if args.recipe_out:
        path = str(save_recipe(mp.recipe, args.recipe_out, force=args.force))
    if not args.json:
        print_mixed_plan(mp, path)
    return {**mp.to_dict(), "recipe_path": path}


def print_recipe_result(res: Any) -> None:
    from rich.console import Console

    out = Console(highlight=False, markup=False, soft_wrap=True)
    r = res.recipe
    out.print(f"wrote {res.result.artifact} ({r.method}, {len(r.assignments)} tensors per the recipe, "
              f"other tensors {r.base_scheme})")
    out.print(f"  size: measured {res.measured_bytes:,} bytes, predicted {res.predicted_bytes:,} "
              f"({res.size_error * 100:+.3f}%)")
    out.print(f"  predicted mean KL divergence {r.predicted_kld:.4f} nats/token ({r.basis}); measure it with: "
              f"quantmatch eval {res.result.artifact}")


def run_recipe(args: Any) -> dict[str, Any]:
    """``quantize MODEL --recipe FILE --out DIR``."""
    from quantmatch.sdk.mixed import quantize_recipe

    res = quantize_recipe(args.recipe, args.out, args.model, force=args.force)
    if not args.json:
        print_recipe_result(res)
    done: dict[str, Any] = res.to_dict()
    return done
