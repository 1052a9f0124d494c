"""The crossover in words under a plan, and ``plan --batch 1,8,32,128``: the winner per batch."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from quantmatch.planner.crossover import crossover_sentence
from quantmatch.planner.plan import Plan, comparison

__all__ = ["batch_sweep", "parse_batches", "print_crossover", "print_explain_crossover", "print_sweep", "sweep_rows"]


def parse_batches(text: str) -> list[int]:
    """``1,8,32,128`` -> ``[1, 8, 32, 128]`` (repeats dropped, order kept); anything else is refused."""
    from quantmatch.planner import PlanInputError

    out: list[int] = []
    for part in text.split(","):
        try:
            b = int(part.strip())
        except ValueError:
            b = 0
        if b < 1:
            raise PlanInputError(f"--batch must be a positive integer or a comma-separated list of them such as "
                                 f"1,8,32,128; got {part.strip()!r} in {text!r}")
        if b not in out:
            out.append(b)
    return out


def print_crossover(c: Console, p: Plan) -> None:
    """One sentence: where the top plan stops beating the 16-bit and the best 8-bit plan."""
    top = p.top
    if top is not None and top.crossover:
        c.print(f"  Crossover: {crossover_sentence(top.crossover)}")


def sweep_rows(batches: Sequence[int], per_batch: Sequence[Sequence[Plan]]) -> list[dict[str, Any]]:
    """One row per (batch, device): the batch, the device and its top plan (as ``comparison`` gives it)."""
    rows = []
    for b, plans in zip(batches, per_batch):
        for row in comparison(plans):
            rows.append({"batch": b, "device": row["device"], "name": row["name"], "status": row["status"],
                         "top": row["best"]})
    return rows


def print_sweep(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    """The winner per batch: batch -> top plan, request throughput and decode speed."""
    c = console or Console(highlight=False, soft_wrap=False, markup=False)
    t = Table(title="Batch sweep: the top plan at each batch", title_justify="left")
    for col in ("batch", "device", "top plan", "runtime", "throughput tok/s", "decode tok/s", "GiB"):
        t.add_column(col, overflow="fold")
    for r in rows:
        top = r["top"]
        if top is None:
            t.add_row(str(r["batch"]), r["name"], "-", "-", "-", "-", "-")
            continue
        thr, dec = top["throughput_tps"], top["decode_tps"]
        t.add_row(str(r["batch"]), r["name"], f"{top['scheme']} ({top['method'] or '16-bit'})",
                  f"{top['backend']}/{top['target']}", "?" if thr is None else f"{thr:,.0f}",
                  "?" if dec is None else f"{dec:,.0f}", f"{top['memory_gib']:.2f}")
    c.print(t)
    c.print("  throughput: generated tokens per second over the whole request (prefill included), for the whole "
            "batch; decode: tokens per second of one sequence's decode step", style="dim")


def batch_sweep(args: argparse.Namespace, plan_kwargs: dict[str, Any], emit: Callable[[Any], None],
                schema: int) -> int:
    """``plan`` once per batch of ``--batch 1,8,32,128``; prints (or emits under ``--json``) the winner per batch
    and the first batch's plans with their crossovers."""
    from quantmatch.cli.main import UsageError
    from quantmatch.planner import plan_devices

    batches = parse_batches(args.batch)
    if args.run:
        raise UsageError("--run takes one --batch value, not a list; drop --run or give one batch")
    per_batch = [plan_devices(args.model, args.device or ["local"], batch=b, **plan_kwargs) for b in batches]
    rows = sweep_rows(batches, per_batch)
    if args.json:
        emit({"schema": schema, "batches": batches, "sweep": rows, "plans": [p.to_dict() for p in per_batch[0]]})
        return 0
    c = Console(highlight=False, soft_wrap=False, markup=False)
    print_sweep(rows, c)
    for p in per_batch[0]:
        if p.top is not None and p.top.crossover:
            c.print(f"  {p.device.name}, batch {p.workload.batch}: {crossover_sentence(p.top.crossover)}")
    return 0


def print_explain_crossover(model: str, xs: Sequence[Any], why: str, assumed: bool) -> None:
    """``explain``'s crossover line: the sentence for the combination, and the model it assumed."""
    c = Console(highlight=False, soft_wrap=False, markup=False)
    which = f"assuming {model}, --model sets another" if assumed else f"for {model}"
    if xs:
        c.print(f"  crossover ({which}, batch 1, prompt 512, gen 256): {crossover_sentence(xs)}")
    elif why:
        c.print(f"  {why} ({which})", style="dim")
