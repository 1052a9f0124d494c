"""Rich renderables shared by the screens: levels (symbol + word, never colour alone), verdicts,
devices, plugins. No Textual import, so these are cheap to test."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from quantmatch.sdk.pluginhost import contribution_summary
from quantmatch.sdk.store import disagreeing_nodes
from quantmatch.sdk.verdict import Level, Verdict

if TYPE_CHECKING:
    from quantmatch.sdk.capability import Capability
    from quantmatch.sdk.options import OptionSpec
    from quantmatch.sdk.pluginhost import PluginInfo
    from quantmatch.sdk.profile import Figure, HardwareProfile

__all__ = [
    "LEVEL_MEANING",
    "LEVEL_STYLE",
    "abbreviation_legend",
    "cell_text",
    "contribution_summary",
    "device_detail",
    "figure_text",
    "legend",
    "level_text",
    "method_options_text",
    "plugin_detail",
    "readable_reason",
    "refinement_text",
    "short_device_name",
    "status_text",
    "verdict_block",
]

LEVEL_STYLE = {lv: lv.style for lv in Level}
"""The colours of :attr:`quantmatch.sdk.verdict.Level.style`, shared with the command line; every use also
shows symbol and word."""

LEVEL_MEANING = {lv: lv.meaning for lv in Level}

NO_COMBINATION = "·"
DIFFERS = "≠"
DIFF_STYLE = "bold on #5f1f5f"
STATUS_MARK = {"ok": ("●", "green"), "broken": ("✕", "bold red"), "blocked": ("○", "yellow")}


def level_text(level: Level, *, word: bool = True, dim: bool = False) -> Text:
    """``● native`` in the level's colour (``dim`` for cells outside a level filter)."""
    style = LEVEL_STYLE[level] + (" dim" if dim else "")
    return Text(f"{level.symbol} {level.value}" if word else level.symbol, style=style)


def legend(compare: bool = False, compact: bool = False) -> Text:
    """The matrix legend: symbols and words, so it never relies on colour alone (``compact``: one
    space between the entries, so that the compare legend fits 80 columns)."""
    gap = " " if compact else "  "
    parts: list[Text | str] = []
    for lv in Level:
        parts += [level_text(lv), gap]
    parts.append(Text(f"{NO_COMBINATION} no combination", style="dim"))
    if compare:
        parts += [gap, Text(f"A B {DIFFERS} differs", style=DIFF_STYLE)]
    return Text.assemble(*parts)


def abbreviation_legend(pairs: Iterable[tuple[str, str]]) -> Text:
    """``bnb=bitsandbytes  ort=onnxruntime``: what the short column names of a narrow table stand for."""
    out = Text()
    for short, full in pairs:
        if out:
            out.append("  ")
        out.append(short, style="bold")
        out.append(f"={full}", style="dim")
    return out


def cell_text(a: Verdict | None, b: Verdict | None = None, *, compare: bool = False, dim: bool = False,
              words: bool = True) -> Text:
    """One matrix cell: ``◐ weight-only`` (or ``◐`` without ``words``) for one device; ``◐ ● ≠``
    (A, B, differs) for two."""
    if not compare:
        return level_text(a.level, word=words, dim=dim) if a is not None else Text(NO_COMBINATION, style="dim")
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
def _indent(text: Text, cells: int = 2) -> Padding:
    """``text`` indented, its wrapped lines too (so that they do not run under the headings)."""
    return Padding(text, (0, 0, 0, cells))


def verdict_block(v: Verdict, device_name: str, hardware: Verdict | None = None) -> RenderableType:
    """Everything about one verdict: level, what runs, every reason with its source, evidence."""
    lines: list[RenderableType] = []
    head = Text.assemble((f"{device_name}", "bold"), f" · {v.layer} layers · ", level_text(v.level))
    if v.level is Level.UNSUPPORTED:
        head.append("  (pruned)", style="red")
    lines.append(head)
    lines.append(_indent(Text(LEVEL_MEANING[v.level], style="dim italic")))
    if v.runs_as:
        lines.append(_indent(Text.assemble(("runs as: ", "bold"), v.runs_as)))
    elif v.level is Level.UNSUPPORTED:
        lines.append(_indent(Text.assemble(("runs as: ", "bold"), ("nothing: this combination is pruned", "red"))))
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
        lines.append(_indent(Text.assemble(("the silicon alone (hardware backend): ", "bold"),
                                           level_text(hardware.level), f" — {hardware.reasons[0].text}")))
    if v.disputed is not None:
        lines.append(_indent(Text.assemble(("disputed: ", "bold yellow"), "another source says ",
                                           level_text(v.disputed.level), f" — {v.disputed.reason}",
                                           (f"\nsource: {v.disputed.source}", "dim"))))
    if v.runtime_version:
        lines.append(_indent(Text.assemble(("for: ", "bold"), v.runtime_version)))
    for a in v.other_versions:
        lines.append(_indent(Text.assemble((f"{a.versions}: ", "bold"), level_text(a.level), f" — {a.reason}"), 3))
    if v.provenance:
        lines.append(_indent(Text(f"declared by plugin {v.provenance}", style="dim")))
    if v.evidence:
        lines.append(_indent(Text("measured evidence:", style="bold")))
        for e in v.evidence:
            agrees = "" if e.agrees is None else (" (agrees)" if e.agrees else " (DISAGREES with the verdict)")
            lines.append(_indent(Text(f"{e.date}{' on ' + e.node if e.node else ''} {e.kind}: {e.figure}{agrees}"
                                      + (f" [{e.versions}]" if e.versions else "")), 3))
        split = disagreeing_nodes(v.evidence)
        if split:
            lines.append(_indent(Text("machines of this device disagree: "
                                      + "; ".join(f"{n} observed {lvl}" for n, lvl in split), style="bold red")))
    else:
        lines.append(_indent(Text("measured evidence: none yet (quantmatch verify / bench attach measurements)",
                                  style="dim")))
    return Group(*lines)


# ---- devices ----------------------------------------------------------------------------------
def short_device_name(d: HardwareProfile) -> str:
    """``A100 SXM4 80GB`` for ``NVIDIA A100 SXM4 80GB``: the vendor is implied in a comparison."""
    first, _, rest = d.name.partition(" ")
    return rest if rest and first.lower() == d.vendor.lower() else d.name


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
def status_text(status: str) -> Text:
    sym, style = STATUS_MARK.get(status, ("?", ""))
    return Text(f"{sym} {status}", style=style)


_REFINEMENT = re.compile(r"^refines \S+: (native|weight-only|emulated|unsupported)\b")
"""A contribution line that stands for one capability row (rendered in full from the host instead)."""


def readable_reason(text: str, values: Mapping[str, str] | None = None) -> Text:
    """A capability's ``reason`` (a template the registry fills per combination) for people:
    each ``{placeholder}`` becomes the value the row fixes (``values``), else ``<placeholder>`` in
    italics; never a raw brace."""
    values = values or {}
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:  # an unbalanced brace: show the text as it is
        return Text(text)
    out = Text()
    for literal, name, _spec, _conv in parsed:
        out.append(literal)
        if name is not None:
            out.append(values[name], style="bold") if name in values else out.append(f"<{name}>", style="italic")
    return out


def _either(items: Iterable[str]) -> str:
    """``bf16``, ``bf16 or fp16``, ``bf16, fp16 or fp32``."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def refinement_text(backend: str, cap: Capability) -> Text:
    """One ``register_capabilities`` row: what it matches, its level and its whole reason, with the
    placeholders its filters fix filled in (``{weights}`` of a row for bf16 and fp16 reads
    ``bf16 or fp16``)."""
    values = {k: _either(v) for k, v in (("weights", cap.weights), ("activations", cap.activations),
                                         ("target", cap.targets), ("method", cap.methods)) if v}
    head = Text.assemble(f"refines {backend}: ", level_text(cap.level), f" for {'/'.join(cap.weights or ('*',))}")
    if cap.activations:
        head.append(f" x {'/'.join(cap.activations)}")
    if cap.methods:
        head.append(f" ({', '.join(cap.methods)})")
    if cap.targets:
        head.append(f" on {', '.join(cap.targets)}")
    if tuple(cap.layers) != ("linear", "moe"):
        head.append(f", {', '.join(cap.layers)} layers")
    return Text.assemble(head, "\n", readable_reason(cap.reason, values))


def _bullets(lines: Iterable[Text]) -> Table:
    """A list whose long lines wrap at word boundaries under their own text (a hanging indent)."""
    t = Table(box=None, show_header=False, padding=(0, 1, 0, 0), expand=True)
    t.add_column("", no_wrap=True, width=3, justify="right")
    t.add_column("", ratio=1, overflow="fold")
    for line in lines:
        t.add_row("•", line)
    return t


def method_options_text(method: str, specs: Sequence[OptionSpec]) -> Text:
    """``method gptq``, then each option (``--option KEY=VALUE``) with its type, default and help."""
    out = Text(f"method {method}")
    if specs:
        out.append(" - options (quantize --option KEY=VALUE):", style="dim")
    for spec in specs:
        out.append("\n  ")
        out.append(spec.key, style="bold")
        out.append(f" {spec.type_text()} = {spec.default_text()}", style="cyan")
        if spec.help:
            out.append(f"  {spec.help}")
    return out


def plugin_detail(p: PluginInfo, refinements: Sequence[tuple[str, Capability]] = (),
                  options: Mapping[str, Sequence[OptionSpec]] | None = None) -> RenderableType:
    """A plugin's distribution, status, every contribution, and its errors with the way to block it.

    ``refinements`` are the plugin's capability rows (backend, row) as the host holds them; they
    replace the one-line summaries in ``p.contributed``, so that every reason is shown whole.
    ``options`` maps the plugin's methods to their options (``Quantizer.options.specs()``), shown under
    each method.
    """
    options = options or {}
    parts: list[RenderableType] = [
        Text.assemble((p.name, "bold"), f"  {p.distribution} {p.version}  ", status_text(p.status),
                      ("  built-in" if p.builtin else "  third-party", "dim")),
    ]
    if p.errors:
        parts.append(_bullets(Text(f"error: {e}", style="bold red") for e in p.errors))
    if p.status == "broken":
        parts.append(Text(f"It was skipped; everything else works. Block it with QUANTMATCH_BLOCK_PLUGINS={p.name}",
                          style="dim"))
    if p.status == "blocked":
        parts.append(Text("Blocked by QUANTMATCH_BLOCK_PLUGINS or left out by QUANTMATCH_PLUGINS.", style="dim"))
    if p.contributed:
        lines: list[Text] = []
        for c in p.contributed:
            if refinements and _REFINEMENT.match(c):
                continue
            method = c.removeprefix("method ")
            lines.append(method_options_text(method, options[method]) if method in options else readable_reason(c))
        lines.extend(refinement_text(b, cap) for b, cap in refinements)
        parts.append(Text(f"contributed ({contribution_summary(p.contributed)}):", style="bold"))
        parts.append(_bullets(lines))
    return Group(*parts)
