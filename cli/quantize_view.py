"""Terminal output for ``quantmatch quantize`` and ``quantmatch eval``: progress bars and result tables.

Progress goes to stderr (so ``--json`` output on stdout stays clean); tables go to stdout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

__all__ = ["eval_table", "plan_report", "progress_bar", "quantize_table"]

_STAGES = {"load": "loading the model", "calibrate": "calibrating activations", "quantize": "quantizing layers",
           "convert": "converting to GGUF", "evaluate": "scoring windows", "save": "writing the artifact"}


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(stage, done, total)`` callback drawing one bar with an ETA per stage (stderr)."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    with contextlib.suppress(ImportError):  # transformers' own bars would interleave with ours
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True, markup=False),
                        transient=False)
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(_STAGES.get(stage, stage), total=max(total, 1))
        progress.update(tasks[stage], completed=done, total=max(total, 1))

    with progress:
        yield update


def plan_report(plan: Any, console: Console) -> None:
    """The checks' findings and, with layer rules, which modules each rule hits."""
    from quantmatch.sdk.layerwise import summarize

    for p in plan.problems:
        tag = ("refused", "red") if p.fatal else ("warning", "yellow")
        console.print(Text.assemble(tag, f": {p}"))
    if plan.rule_hits:
        t = Table(title="layer rules (first match wins)", title_justify="left")
        for col in ("rule", "precision", "modules", "patterns"):
            t.add_column(col)
        for h in plan.rule_hits:
            hits = Text(str(len(h.hits))) if h.hits else Text("none", style="yellow")
            t.add_row(h.rule.name, h.rule.precision, hits, ", ".join(h.rule.patterns))
        console.print(t)
        for line in summarize([h for h in plan.rule_hits if h.unused]):
            console.print(Text.assemble(("warning", "yellow"), f": rule {line}"))


def job_report(estimate: Any, console: Console) -> None:
    """One line: the job's peak RAM, disk and time as estimated before anything loads."""
    mins = estimate.time_s / 60 if estimate.time_s is not None else None
    when = "" if mins is None else f", about {mins:.0f} min" if mins >= 1 else ", under a minute"
    console.print(f"job estimate: peak RAM {estimate.ram_gib:.2f} GiB, disk {estimate.disk_gib:.2f} GiB{when} "
                  f"({estimate.reason})")
    for d in estimate.details:
        console.print(f"  {d}")


def interrupted_job(out: str, exported: bool = False) -> str:
    """What an interrupted ``quantize`` kept for the next run ("" when nothing: a method that does not stream)."""
    import json
    from pathlib import Path

    from quantmatch.sdk.artifact import job_dir_for

    target = Path(out)
    if exported:  # quantize --format: the streamed job writes the intermediate beside the output
        target = target.absolute().parent / f".{target.name}.quantmatch-source"
    job = job_dir_for(target)
    try:
        state = json.loads((job / "job.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return (f"{state.get('done', 0)} of {state.get('blocks', '?')} blocks are done and kept in {job}: run the "
            "same command again to continue from there (--restart starts over)")


def quantize_table(result: Any, console: Console) -> None:
    t = Table(title=f"quantized {result.source} with {result.method}", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("artifact", str(result.artifact))
    t.add_row("scheme", result.scheme + ("" if result.scheme == result.requested_scheme
                                         else f" (asked: {result.requested_scheme})"))
    t.add_row("size on disk", _mib(result.size_bytes))
    t.add_row("time", f"{result.seconds:,.1f} s")
    details = result.manifest.details
    # quantize --format: the streamed job wrote the intermediate, whose details the export keeps
    streamed = details.get("streamed") or (details.get("source_details") or {}).get("streamed") or {}
    if streamed:
        resumed = streamed.get("resumed_from")
        t.add_row("read", f"block by block ({streamed.get('blocks')} blocks)"
                  + (f", resumed at block {resumed + 1}" if resumed is not None else ""))
    modules = result.manifest.details.get("quantized_modules")
    if modules:
        t.add_row("quantized modules", ", ".join(f"{n} {k}" for k, n in sorted(modules.items())))
    console.print(t)
    console.print(f"next: quantmatch eval {result.artifact}")


def export_table(result: Any, console: Console) -> None:
    details = result.manifest.details
    t = Table(title=f"exported {result.method} {result.scheme} to {result.artifact_format}", title_justify="left",
              show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("artifact", str(result.artifact))
    t.add_row("from", str(details.get("exported_from", "")))
    t.add_row("runs as", result.runs_as or "-")
    requantized = details.get("requantized") or []
    t.add_row("exact", "yes: the same integer codes and scales" if result.exact
              else f"no: {len(requantized)} tensors rounded again ({', '.join(requantized[:3])}"
                   f"{' ...' if len(requantized) > 3 else ''})")
    kinds = details.get("tensor_types") or details.get("ops")
    if kinds:
        t.add_row("tensors" if "tensor_types" in details else "operators",
                  ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    t.add_row("size on disk", _mib(result.size_bytes))
    t.add_row("time", f"{result.seconds:,.1f} s")
    console.print(t)
    console.print(f"next: quantmatch eval {result.artifact}")


def eval_table(result: Any, console: Console) -> None:
    what = f"{result.method} {result.scheme}" if result.method else f"{result.kind} ({result.compute_dtype})"
    t = Table(title=f"evaluation of {result.target}: {what}", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("perplexity", f"{result.perplexity:.3f}")
    t.add_row("text", f"{result.text}: {result.tokens:,} tokens, {result.windows} windows of {result.window}")
    t.add_row("computed by", f"{result.runtime}: {result.computed_by or result.compute_dtype}")
    t.add_row("size on disk", f"{_mib(result.size_bytes)} (weights {_mib(result.weights_bytes)})")
    t.add_row("peak RSS", _mib(result.peak_rss_bytes))
    t.add_row("time", f"{result.seconds:,.1f} s")
    console.print(t)
    if result.fidelity is None and (result.reference or {}).get("error"):
        console.print(f"no fidelity figures: the reference cannot be loaded: {result.reference['error']}")
    if result.fidelity is not None:
        from quantmatch.cli.fidelity_view import fidelity_table

        fidelity_table(result.fidelity, result.reference or {}, console, result.tokenizer_agrees)
