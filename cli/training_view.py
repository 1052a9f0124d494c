"""Fine-tuning memory plans as tables for people (rich). Tools should use ``plan --workload ... --json``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from quantmatch.planner.training import TrainingPlan

__all__ = ["print_training_plan", "run_training_plan"]


def _fits(value: bool | None, paged: bool | None) -> str:
    if value is None:
        return "[dim]?[/dim]"
    if value:
        return "[green]fits[/green]"
    return "[yellow]fits if paged states spill[/yellow]" if paged else "[red]does not fit[/red]"


def print_training_plan(p: TrainingPlan, console: Console | None = None) -> None:
    """The breakdown of ``p`` (component, GiB), the workload comparison and the recommendation."""
    con = console or Console()
    what = p.workload + (f" ({p.base_format} base, LoRA rank {p.lora_rank} on {p.lora_targets})"
                         if p.base_format else "")
    con.print(f"[bold]{p.model}[/bold] on [bold]{p.device_name}[/bold] ({p.device}): {what}")
    con.print(f"batch {p.batch} x {p.seq} tokens, gradient checkpointing "
              f"{'on' if p.gradient_checkpointing else 'off'}, optimizer {p.optimizer}, precision {p.precision}; "
              f"trainable {p.trainable_params:,} of {p.total_params:,} parameters")
    t = Table(title="peak memory of one training step")
    t.add_column("component")
    t.add_column("GiB", justify="right")
    t.add_column("what")
    for part in p.parts:
        t.add_row(part.name + (" (paged)" if part.paged else ""), f"{part.gib:.2f}", part.note)
    t.add_row("[bold]live tensors[/bold]", f"[bold]{p.tensors_gib:.2f}[/bold]",
              "what torch.cuda.max_memory_allocated reports (paged states apart)")
    cap = "?" if p.capacity_gib is None else f"{p.capacity_gib:.1f}"
    t.add_row("[bold]total[/bold]", f"[bold]{p.total_gib:.2f}[/bold]", f"of {cap} GiB ({p.capacity_source})")
    con.print(t)
    o = Table(title="workloads on this device")
    o.add_column("workload")
    o.add_column("base")
    o.add_column("total GiB", justify="right")
    o.add_column("fit")
    for opt in p.options:
        mark = " [bold](recommended)[/bold]" if opt.workload == p.recommended else ""
        o.add_row(opt.workload + mark, opt.base_format or "-", f"{opt.total_gib:.2f}",
                  _fits(opt.fits, opt.fits_with_paging))
    con.print(o)
    con.print(p.summary + ".")
    for n in p.notes:
        con.print(f"[dim]note: {n}[/dim]")


_INFERENCE_ONLY = (("mixed", "--mixed"), ("run", "--run"), ("kv", "--kv"), ("recipe_out", "--recipe-out"),
                   ("backend", "--backend"))


def run_training_plan(args: argparse.Namespace, emit_json: Callable[[Any], None], schema: int) -> int:
    """``quantmatch plan MODEL --workload qlora|lora|full``: one training plan per ``--device``, printed as
    tables or, with ``--json``, as ``{"schema": N, "training": [TrainingPlan.to_dict(), ...]}``."""
    from quantmatch.planner.training import TRAINING_WORKLOADS, plan_training
    from quantmatch.planner.types import PlanInputError

    if str(args.workload).strip().lower() not in TRAINING_WORKLOADS:
        raise PlanInputError(f"unknown --workload {args.workload!r}: choose one of inference, "
                             + ", ".join(TRAINING_WORKLOADS))
    for attr, flag in _INFERENCE_ONLY:
        if getattr(args, attr, None):
            raise PlanInputError(f"{flag} plans inference; it does not go with --workload {args.workload}")
    if args.batch is not None and "," in str(args.batch):
        raise PlanInputError("a --batch sweep plans inference; give one --batch with --workload")
    plans = [plan_training(args.model, d, args.workload, batch=args.batch, seq=args.seq_len,
                           gradient_checkpointing=not args.no_checkpointing, optimizer=args.optimizer,
                           precision=args.precision, base_format=args.base_format, lora_rank=args.lora_rank,
                           lora_targets=args.lora_targets, chunked_loss=args.chunked_loss,
                           memory_budget=args.memory_budget)
             for d in dict.fromkeys(args.device or ["local"])]
    if args.json:
        emit_json({"schema": schema, "training": [p.to_dict() for p in plans]})
        return 0
    con = Console()
    for i, p in enumerate(plans):
        if i:
            con.print()
        print_training_plan(p, con)
    return 0
