"""The "KV cache" section of ``quantmatch plan``: the top plan's KV cache and every KV format its runtime
could use on the device (verdict, GiB at the workload's context, risk with its source)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from quantmatch.planner.plan import Plan

__all__ = ["print_kv"]


def print_kv(c: Console, p: Plan, show_all: bool = False) -> None:
    """One line per KV format for the top plan's runtime/device; the sources with ``--all``."""
    top = p.top
    if top is None or not p.kv_options:
        return
    kv = top.kv
    head = "" if kv is None else (f": #{top.rank} runs a {kv.format} KV cache, {kv.gib:.2f} GiB at context "
                                  f"{p.workload.ctx} x batch {p.workload.batch} ({kv.how})")
    t = Table(title=f"KV cache ({top.backend}/{top.target}, --kv {p.kv_mode}){head}", title_justify="left")
    for col in ("format", "bits", "verdict", "GiB", "risk"):
        t.add_column(col, overflow="fold")
    for o in p.kv_options:
        mark = " *" if kv is not None and o.format == kv.format else ""
        t.add_row(o.format + mark, f"{o.bits:g}", o.level, f"{o.gib:.2f}",
                  f"{o.risk_level}: {o.risk}")
    c.print(t)
    if show_all:
        for o in p.kv_options:
            if o.source != "unquantized":
                c.print(f"  {o.format}: {o.source}", style="dim")
    else:
        c.print("  * the top plan's KV cache; --all names the source of each risk, --json gives kv_options",
                style="dim")
