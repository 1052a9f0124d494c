"""Tables for people (rich). Tools should use ``--json`` instead of parsing these."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from quantmatch.sdk.device import Detection
from quantmatch.sdk.pluginhost import PluginInfo, contribution_summary
from quantmatch.sdk.profile import Figure, HardwareProfile
from quantmatch.sdk.store import disagreeing_nodes
from quantmatch.sdk.verdict import Level, Verdict

if TYPE_CHECKING:
    from quantmatch.sdk.options import MethodOptions

__all__ = ["conformance", "contribution_summary", "detections", "device_detail", "devices_table", "explain",
           "method_options", "plugins_table", "registry_table"]

LEVEL_STYLE = {lv: lv.style for lv in Level}

_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        _console = Console(highlight=False, soft_wrap=False, markup=False)
    return _console


def level_text(level: Level | str) -> Text:
    """Symbol and word, so the level never relies on colour alone (an unknown word shows as ``? word``)."""
    try:
        lv = level if isinstance(level, Level) else Level(level)
    except ValueError:
        return Text(f"? {level}")
    return Text(lv.label, style=lv.style)


def _fig(f: Figure) -> str:
    return str(f)


def plugins_table(infos: Sequence[PluginInfo], precedence: Mapping[str, Sequence[str]] | None = None) -> None:
    """The plugins table; ``precedence`` maps each refined backend to its row order (see
    :meth:`quantmatch.sdk.pluginhost.PluginHost.precedence`)."""
    t = Table(title="quantmatch plugins", title_justify="left")
    for col in ("plugin", "distribution", "status", "contributed"):
        t.add_column(col, overflow="fold")
    for p in infos:
        contributed = contribution_summary(p.contributed)
        status = Text(p.status, style={"ok": "green", "broken": "bold red", "blocked": "yellow"}[p.status])
        refines = [c for c in p.contributed if c.startswith("refines ")]
        if refines:
            contributed += "\n" + "\n".join(refines)
        if p.errors:
            contributed += "\n" + "\n".join(f"error: {e}" for e in p.errors)
        t.add_row(p.name, f"{p.distribution} {p.version}", status, Text(contributed))
    console().print(t)
    if precedence:
        console().print("Capability refinements (register_capabilities) are evaluated before the backend's own "
                        "rows, in plugin load order; the first matching row decides:")
        for backend, lines in precedence.items():
            console().print(f"  {backend}:")
            for line in lines:
                console().print(f"    {line}", markup=False, highlight=False)
    broken = sum(p.status == "broken" for p in infos)
    console().print(f"{len(infos)} plugins, {broken} broken. Environment switches: "
                    "QUANTMATCH_DISABLE_PLUGIN_AUTOLOAD=1, QUANTMATCH_PLUGINS=a,b, QUANTMATCH_BLOCK_PLUGINS=a,b")


def method_options(options: Mapping[str, type[MethodOptions]]) -> None:
    """Each method's options, one compact row per method (``quantmatch plugins --json`` has their help)."""
    t = Table(title="method options (quantmatch quantize --option KEY=VALUE; --json adds each one's help)",
              title_justify="left")
    t.add_column("method", no_wrap=True)
    t.add_column("options: key: type = default", overflow="fold")
    none = [name for name, cls in options.items() if not cls.specs()]
    for name, cls in options.items():
        if cls.specs():
            t.add_row(name, Text(", ".join(spec.short() for spec in cls.specs())))
    if none:
        t.add_row(Text("others", style="dim"), Text(f"none ({', '.join(none)})", style="dim"))
    console().print(t)


def devices_table(devs: Sequence[HardwareProfile]) -> None:
    t = Table(title=f"{len(devs)} catalog devices", title_justify="left")
    for col in ("id", "name", "family", "arch", "memory", "bandwidth", "native operand types"):
        t.add_column(col, overflow="fold")
    from quantmatch.sdk.features import OPERAND_TYPES

    for d in devs:
        types = [f for f in sorted(d.features) if f in OPERAND_TYPES]
        t.add_row(d.id, d.name, d.family, d.arch, _fig(d.memory), _fig(d.bandwidth), " ".join(types))
    console().print(t)


def device_detail(d: HardwareProfile) -> None:
    c = console()
    c.print(Text.assemble((d.name, "bold"), f"  ({d.id}; aliases: {', '.join(d.aliases) or '-'})"))
    c.print(f"vendor {d.vendor}, family {d.family}, architecture {d.arch} {d.arch_name}"
            + (f", compute capability {d.compute_capability:.1f}" if d.compute_capability else ""))
    c.print(f"targets: {', '.join(d.targets)}")
    c.print(f"features: {' '.join(sorted(d.features))}")
    if d.cpu_features and d.cpu_features != d.features:
        c.print(f"CPU features: {' '.join(sorted(d.cpu_features))}")
    for k, v in sorted(d.emulated.items()):
        c.print(f"emulated {k}: {v}")
    t = Table(title_justify="left")
    for col in ("figure", "value", "confidence", "source"):
        t.add_column(col, overflow="fold")
    rows: list[tuple[str, Figure]] = [("memory", d.memory), ("bandwidth", d.bandwidth)]
    rows += [(f"peak {k}", v) for k, v in sorted(d.peaks.items())]
    for name, f in rows:
        val = "unknown" if f.value is None else f"{f.value:g} {f.unit}"
        t.add_row(name, val, f.confidence + (f" ({f.note})" if f.note else ""), f.source or "-")
    c.print(t)
    if d.notes:
        c.print(f"notes: {d.notes}")
    for s in d.sources:
        c.print(f"source: {s}")
    c.print(f"from plugin {d.provenance}")


def _provenance_label(f: Figure) -> str:
    """``23.1 GB/s (measured: single-thread memcpy ...)``: the value and how it was obtained."""
    how = f.confidence if f.source in ("", f.confidence) else f"{f.confidence}, {f.source}"
    if f.value is None:
        return f"unknown ({f.note or how})"
    return f"{f.value:g} {f.unit} ({how}{': ' + f.note if f.note else ''})"


def detections(dets: Sequence[Detection]) -> None:
    c = console()
    for det in dets:
        if not det.present:
            c.print(f"{det.family}: not present, because {det.reason}", style="dim")
            continue
        for d in det.devices:
            c.print(Text.assemble((det.family, "bold"), f": {d.name} (arch {d.arch})"))
            if d.cores:
                c.print(f"  cores: {d.cores}")
            c.print(f"  memory: {_provenance_label(d.memory)}", markup=False)
            c.print(f"  memory bandwidth: {_provenance_label(d.bandwidth)}", markup=False)
            c.print(f"  features: {' '.join(sorted(d.features))}")
            if det.reason:
                c.print(f"  note: {det.reason}")


def registry_table(dev: HardwareProfile, combos: Sequence[Verdict], empty_because: Sequence[str] = ()) -> None:
    counts = Counter(v.level for v in combos)
    title = (f"{dev.name} ({dev.id}): " + ", ".join(f"{counts.get(lv, 0)} {lv.value}" for lv in Level))
    t = Table(title=title, title_justify="left")
    for col in ("level", "method", "scheme", "backend", "target", "why / what runs"):
        t.add_column(col, overflow="fold")
    for v in combos:
        why = v.runs_as or v.reasons[0].text
        if v.disputed is not None:
            why = f"DISPUTED (also said: {v.disputed.level.value}) - {why}"
        t.add_row(level_text(v.level), v.method or "-", v.scheme, v.backend, v.target, why)
    console().print(t)
    versions = sorted({v.runtime_version for v in combos if v.runtime_version})
    if versions:
        console().print("Runtime versions: " + "; ".join(versions) + " (--runtime-version NAME=VERSION for another)",
                        markup=False)
    for why in empty_because:
        console().print(f"No combination: {why}", markup=False)
    console().print("Levels: ● native (low-precision compute)  ◐ weight-only (memory win, 16-bit math)  "
                    "○ emulated (slower)  ✕ unsupported (pruned). "
                    "Details: quantmatch explain METHOD SCHEME BACKEND DEVICE")


def explain(dev: HardwareProfile, verdicts: Sequence[Verdict]) -> None:
    c = console()
    for v in verdicts:
        head = Text.assemble(
            (f"{v.method or '(any method)'} {v.scheme} on {v.backend}/{v.target}, {dev.name}, "
             f"{v.layer} layers: ", "bold"), level_text(v.level))
        c.print(head)
        if v.runs_as:
            c.print(f"  runs as: {v.runs_as}")
        for i, r in enumerate(v.reasons):
            bullet = "because" if i == 0 else "also"
            c.print(f"  {bullet}: {r.text}")
            if r.source:
                c.print(f"    source: {r.source}", style="dim")
        if v.disputed is not None:
            c.print(Text.assemble(("  disputed: ", "bold yellow"),
                                  f"another source says {v.disputed.level.value}: {v.disputed.reason}"))
            c.print(f"    source: {v.disputed.source}", style="dim")
        if v.runtime_version:
            c.print(f"  for: {v.runtime_version}")
        if v.other_versions:
            c.print("  by runtime version:")
            for a in v.other_versions:
                c.print(Text.assemble(f"    {a.versions}: ", level_text(a.level), f" - {a.reason}"))
        if v.provenance:
            c.print(f"  declared by plugin {v.provenance}", style="dim")
        for e in v.evidence:
            where = f", {e.node}" if e.node else ""
            c.print(f"  evidence ({e.date}{where}): {e.kind}: {e.figure}")
        split = disagreeing_nodes(v.evidence)
        if split:
            c.print("  machines of this device disagree: " + "; ".join(f"{n} observed {lvl}" for n, lvl in split),
                    style="bold")
        c.print()


def _case_label(case: Mapping[str, Any], index: int) -> str:
    """``id: method weights/activations layer on device via backend/target``, leaving out what is missing."""
    types = "/".join(str(case[k]) for k in ("weights", "activations") if case.get(k))
    parts = [case.get("method") or "-", types, case.get("layer") or "linear"]
    if case.get("device"):
        parts.append(f"on {case['device']}")
    if case.get("backend"):
        parts.append(f"via {case['backend']}" + (f"/{case['target']}" if case.get("target") else ""))
    return f"{case.get('id') or f'case #{index}'}: {' '.join(p for p in parts if p)}"


def conformance(report: Any, show_agree: bool = False) -> None:
    c = console()
    for i, r in enumerate(report.results):
        case = r.case
        if r.status == "agree" and not show_agree:
            continue
        if r.status == "unmapped":
            c.print(Text.assemble(("unmapped", "yellow"), f" {_case_label(case, i)}: {r.error}"))
            continue
        label = _case_label(case, i)
        style = "green" if r.status == "agree" else "bold red"
        c.print(Text.assemble((r.status, style), f" {label}: expected {case.get('expected')}, "
                              f"registry says {r.got.level.value}"))
        if r.status == "disagree":
            c.print(f"  expected because: {case.get('why', '')}  [{case.get('source', '')}]", style="dim", markup=False)
            for reason in r.got.reasons:
                c.print(f"  registry because: {reason.text}  [{reason.source}]", style="dim", markup=False)
    c.print(f"agreement: {report.count('agree')}/{report.count('agree') + report.count('disagree')} "
            f"({report.agreement:.0%}); {report.count('disagree')} disagree, "
            f"{report.count('unmapped')} unmapped, {len(report.results)} cases")
