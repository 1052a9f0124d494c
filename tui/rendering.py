"""Rich renderables shared by the screens: levels (symbol + word, never colour alone), verdicts,
devices, plugins. No Textual import, so these are cheap to test."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from quantmatch.verdict import Level, Verdict

if TYPE_CHECKING:
    from quantmatch.pluginhost import PluginInfo
    from quantmatch.profile import Figure, HardwareProfile

__all__ = [
    "LEVEL_MEANING",
    "LEVEL_STYLE",
    "cell_text",
    "contribution_summary",
    "device_detail",
    "figure_text",
    "legend",
    "level_text",
    "plugin_detail",
    "status_text",
    "verdict_block",
]

LEVEL_STYLE = {Level.NATIVE: "bold green", Level.WEIGHT_ONLY: "cyan", Level.EMULATED: "yellow",
               Level.UNSUPPORTED: "red"}
"""The same colours as the command line (``quantmatch.render``); every use also shows symbol and word."""

LEVEL_MEANING = {
    Level.NATIVE: "the device computes in the low precision: a real compute and memory win",
    Level.WEIGHT_ONLY: "weights stored low-bit, expanded to 16/32-bit for the math: memory and bandwidth win only",
    Level.EMULATED: "accepted, but through wider math or slow lowering: expect slower than 16-bit",
    Level.UNSUPPORTED: "pruned: the runtime refuses it, has no kernel, or the hardware lacks the type",
}

NO_COMBINATION = "·"
DIFFERS = "≠"
DIFF_STYLE = "bold on #5f1f5f"
STATUS_MARK = {"ok": ("●", "green"), "broken": ("✕", "bold red"), "blocked": ("○", "yellow")}


def level_text(level: Level, *, word: bool = True, dim: bool = False) -> Text:
    """``● native`` in the level's colour (``dim`` for cells outside a level filter)."""
    style = LEVEL_STYLE[level] + (" dim" if dim else "")
    return Text(f"{level.symbol} {level.value}" if word else level.symbol, style=style)


def legend(compare: bool = False) -> Text:
    """The matrix legend: symbols and words, so it never relies on colour alone."""
    parts: list[Text | str] = []
    for lv in Level:
        parts += [level_text(lv), "  "]
    parts.append(Text(f"{NO_COMBINATION} no combination", style="dim"))
    if compare:
        parts += ["  ", Text(f"A B {DIFFERS} differs", style=DIFF_STYLE)]
    return Text.assemble(*parts)



def cell_text(a: Verdict | None, b: Verdict | None = None, *, compare: bool = False, dim: bool = False) -> Text:
    """One matrix cell: ``◐ weight-only`` for one device; ``◐ ● ≠`` (A, B, differs) for two."""
    if not compare:
        return level_text(a.level, dim=dim) if a is not None else Text(NO_COMBINATION, style="dim")
    out = Text()
    for v in (a, b):
        out.append_text(level_text(v.level, word=False, dim=dim) if v is not None
                        else Text(NO_COMBINATION, style="dim"))
        out.append(" ")
    differs = (a is None) != (b is None) or (a is not None and b is not None and a.level is not b.level)
    if differs:
        out.append(DIFFERS)
        out.stylize(DIFF_STYLE)
    else:
        out.append(" ")
    return out


# ---- verdicts ---------------------------------------------------------------------------------
def verdict_block(v: Verdict, device_name: str, hardware: Verdict | None = None) -> RenderableType:
    """Everything about one verdict: level, what runs, every reason with its source, evidence."""
    lines: list[RenderableType] = []
    head = Text.assemble((f"{device_name}", "bold"), f" · {v.layer} layers · ", level_text(v.level))
    if v.level is Level.UNSUPPORTED:
        head.append("  (pruned)", style="red")
    lines.append(head)
    lines.append(Text(f"  {LEVEL_MEANING[v.level]}", style="dim italic"))
    if v.runs_as:
        lines.append(Text.assemble(("  runs as: ", "bold"), v.runs_as))
    elif v.level is Level.UNSUPPORTED:
        lines.append(Text.assemble(("  runs as: ", "bold"), ("nothing: this combination is pruned", "red")))
    t = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    t.add_column("", no_wrap=True, style="bold")
    t.add_column("", overflow="fold", ratio=1)
    for i, r in enumerate(v.reasons):
        body = Text(r.text)
        if r.source:
            body.append(f"\nsource: {r.source}", style="dim")
        if r.plugin:
            body.append(f"  [{r.plugin}]", style="dim")
        t.add_row(" because" if i == 0 else " also", body)
    lines.append(t)
    if hardware is not None:
        lines.append(Text.assemble(("  the silicon alone (hardware backend): ", "bold"), level_text(hardware.level),
                                   f" — {hardware.reasons[0].text}"))
    if v.provenance:
        lines.append(Text(f"  declared by plugin {v.provenance}", style="dim"))
    if v.evidence:
        lines.append(Text("  measured evidence:", style="bold"))
        for e in v.evidence:
            agrees = "" if e.agrees is None else (" (agrees)" if e.agrees else " (DISAGREES with the verdict)")
            lines.append(Text(f"   {e.date} {e.kind}: {e.figure}{agrees}" + (f" [{e.versions}]" if e.versions else "")))
    else:
        lines.append(Text("  measured evidence: none yet (quantmatch verify / bench attach measurements)",
                          style="dim"))
    return Group(*lines)


# ---- devices ----------------------------------------------------------------------------------
def figure_text(f: Figure) -> Text:
    """``80 GB  sourced`` and, below, the source (a figure is never shown without where it came from)."""
    val = "unknown" if f.value is None else f"{f.value:g} {f.unit}"
    trusted = f.confidence in ("sourced", "measured", "detected")
    out = Text.assemble((val, "bold"), "  ", (f.confidence, "green" if trusted else "yellow"))
    if f.note:
        out.append(f" ({f.note})", style="italic")
    out.append(f"\nsource: {f.source or '-'}", style="dim")
    return out


def device_detail(d: HardwareProfile) -> RenderableType:
    """Architecture, features, memory, bandwidth and peaks, each figure with its source and confidence."""
    head = Text(d.name, style="bold")
    if d.detected:
        head.append("  (detected on this machine)", style="green")
    info = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    info.add_column("", style="bold", no_wrap=True)
    info.add_column("", overflow="fold", ratio=1)
    info.add_row("id", d.id + (f" (aliases: {', '.join(d.aliases)})" if d.aliases else ""))
    arch = f"{d.arch} {d.arch_name}".strip()
    if d.compute_capability:
        arch += f", compute capability {d.compute_capability:.1f}"
    info.add_row("vendor", f"{d.vendor}, family {d.family}")
    info.add_row("arch", arch)
    info.add_row("targets", ", ".join(d.targets) or "-")
    info.add_row("features", " ".join(sorted(d.features)) or "-")
    if d.cpu_features and d.cpu_features != d.features:
        info.add_row("CPU features", " ".join(sorted(d.cpu_features)))
    for k, v in sorted(d.emulated.items()):
        info.add_row(f"emulated {k}", v)
    if d.cores:
        info.add_row("cores", str(d.cores))
    figs = Table(title="figures (dense peaks in TFLOPS/TOPS), with confidence and source", title_justify="left",
                 box=None, show_header=False, padding=(0, 1), expand=True, title_style="bold")
    figs.add_column("", no_wrap=True, style="bold")
    figs.add_column("", overflow="fold", ratio=1)
    rows = [("memory", d.memory), ("bandwidth", d.bandwidth)]
    rows += [(f"peak {k}", v) for k, v in sorted(d.peaks.items())]
    for name, f in rows:
        figs.add_row(name, figure_text(f))
    parts: list[RenderableType] = [head, info, figs]
    if d.notes:
        parts.append(Text(f"notes: {d.notes}"))
    parts.extend(Text(f"source: {s}", style="dim") for s in d.sources)
    parts.append(Text(f"from plugin {d.provenance}", style="dim"))
    return Group(*parts)


# ---- plugins ----------------------------------------------------------------------------------
def _kind(contribution: str) -> str:
    if contribution.startswith("device family"):
        return "family"
    if contribution.startswith("refines"):
        return "refinement"
    return contribution.split(" ")[0]


def contribution_summary(contributed: Iterable[str]) -> str:
    """``15 devices, 1 family``."""
    kinds = Counter(_kind(c) for c in contributed)
    return ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in sorted(kinds.items())) or "-"


def status_text(status: str) -> Text:
    sym, style = STATUS_MARK.get(status, ("?", ""))
    return Text(f"{sym} {status}", style=style)


def plugin_detail(p: PluginInfo) -> RenderableType:
    """A plugin's distribution, status, every contribution, and its errors with the way to block it."""
    parts: list[RenderableType] = [
        Text.assemble((p.name, "bold"), f"  {p.distribution} {p.version}  ", status_text(p.status),
                      ("  built-in" if p.builtin else "  third-party", "dim")),
    ]
    for e in p.errors:
        parts.append(Text(f"error: {e}", style="bold red"))
    if p.status == "broken":
        parts.append(Text(f"It was skipped; everything else works. Block it with QUANTMATCH_BLOCK_PLUGINS={p.name}",
                          style="dim"))
    if p.status == "blocked":
        parts.append(Text("Blocked by QUANTMATCH_BLOCK_PLUGINS or left out by QUANTMATCH_PLUGINS.", style="dim"))
    if p.contributed:
        parts.append(Text(f"contributed ({contribution_summary(p.contributed)}):", style="bold"))
        parts.extend(Text(f"  {c}") for c in p.contributed)
    return Group(*parts)
