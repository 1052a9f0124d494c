"""The planner's answer as tables for people (rich). Tools should use ``--json``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from quantmatch.cli.tables import level_text
from quantmatch.planner.plan import Candidate, Plan

__all__ = ["print_comparison", "print_plan", "print_run"]

_STATUS = {"ok": "green", "over-tolerance": "yellow", "nothing-fits": "bold red"}


def _level(level: str) -> Text:
    return level_text(level)


def _n(x: float) -> str:
    for div, suf in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if x >= div:
            return f"{x / div:.3g}{suf}"
    return str(int(x))


def _tps(x: float | None, upper: bool = False) -> str:
    if x is None:
        return "?"
    s = f"{x:,.0f}" if x >= 100 else f"{x:.3g}"
    return s + ("*" if upper else "")


def _speed(c: Candidate, phase: str) -> str:
    p = c.prefill if phase == "prefill" else c.decode
    sp = c.speedup_prefill if phase == "prefill" else c.speedup_decode
    s = _tps(p.tokens_per_s, upper="bandwidth-only" in p.note) + ("m" if p.basis == "measured" else "")
    if sp is not None and not c.is_baseline and p.tokens_per_s is not None:
        s += f" {sp:.2g}x"
    return s + f" {p.bound[:3]}"


def _fits(c: Candidate) -> Text:
    m = c.memory
    total = f"{m.total_gib:.2f}" + ("m" if m.basis == "measured" else "")
    if m.fits is None:
        return Text(f"{total} ?")
    if m.fits:
        return Text(f"{total} ✓", style="green")
    return Text(f"{total} ✕", style="red")


def _header(c: Console, p: Plan) -> None:
    pb = p.params
    parts = [f"embeddings {_n(pb.embeddings)}", f"attention {_n(pb.attention)}"]
    if pb.mlp:
        parts.append(f"MLP {_n(pb.mlp)}")
    if pb.moe_experts:
        parts.append(f"MoE experts {_n(pb.moe_experts)} ({pb.experts} x, {pb.experts_per_token} active)")
        parts.append(f"router {_n(pb.moe_router)}")
    parts.append(f"norms {_n(pb.norms)}")
    parts.append("LM head tied to the embeddings" if pb.tied else f"LM head {_n(pb.lm_head)}")
    d = p.device
    c.print(Text.assemble((f"Plan for {p.model.name} on {d.name}", "bold"), f" ({d.id})"))
    c.print(f"model: {pb.total:,} parameters ({_n(pb.active)} per token): {', '.join(parts)}")
    src = f"shape: {p.model.kind}, {p.model.source}"
    if p.model.verified:
        src += f" (verified: {p.model.verified})"
    c.print(src, style="dim")
    mem = "unknown memory" if d.memory_gib is None else f"{d.memory_gib:g} GiB"
    bw = "unknown bandwidth" if d.bandwidth_gbs is None else f"{d.bandwidth_gbs:g} GB/s ({d.bandwidth_confidence})"
    peaks = ", ".join(f"{k} {v.tflops:.4g}" + ("~" if v.confidence == "estimate" else "")
                      for k, v in sorted(d.peaks.items())) or "none known"
    c.print(f"device: {mem}, {bw}; dense peaks (TFLOPS/TOPS): {peaks}")
    w = p.workload
    budget = (f"; memory budget {p.memory_budget_gib:.3g} GiB ({p.memory_budget_gib * 2**30 / 1e9:.3g} GB)"
              if p.memory_budget_gib else "")
    c.print(f"workload: batch {w.batch}, prompt {w.prompt}, generate {w.gen}, context {w.ctx}; tolerance "
            f"{p.tolerance.label}: {p.tolerance.describe()}; prefer {p.preference}{budget}")
    c.print(Text(f"status: {p.status}", style=_STATUS.get(p.status, "")))


def print_plan(p: Plan, top: int = 10, show_all: bool = False, console: Console | None = None) -> None:
    """The header, the summary in words, the ranked plans, the top command and the rejections."""
    c = console or Console(highlight=False, soft_wrap=False, markup=False)
    _header(c, p)
    for s in p.summary:
        c.print(f"  {s}")
    for n in p.notes:
        c.print(f"  note: {n}", style="yellow")
    cands = p.candidates if show_all else p.candidates[:top]
    title = "Recommended plans" if p.status == "ok" else (
        "Closest plans (none meets the tolerance)" if p.status == "over-tolerance" else "Smallest option")
    t = Table(title=f"{title}: {len(cands)} of {len(p.candidates)}" + ("" if show_all or len(cands) == len(
        p.candidates) else " (--all shows every one)"), title_justify="left")
    for col in ("#", "scheme", "method", "runtime", "level", "GiB fit", "prefill tok/s", "decode tok/s", "ΔPPL%",
                "KLD"):
        t.add_column(col, overflow="fold")
    for cand in cands:
        q = cand.quality
        method = (cand.method or "16-bit") + ("" if cand.producible_here else " †")
        t.add_row(str(cand.rank), cand.scheme, method, f"{cand.backend}/{cand.target}",
                  _level(cand.level), _fits(cand), _speed(cand, "prefill"), _speed(cand, "decode"),
                  f"{q.delta_pct:.2f} {q.basis[0]}", f"{q.kld:.2g} {q.kld_basis[0]}")
    c.print(t)
    from quantmatch.cli.crossover_view import print_crossover

    print_crossover(c, p)
    c.print("  speeds: tok/s, x vs the 16-bit baseline, mem/com/ove(rhead)-bound; ΔPPL%: expected perplexity "
            "change; KLD: expected mean KL divergence to the unquantized model (nats/token); "
            "p(rior) / m(easured) / b(aseline)", style="dim")
    if any(x.memory.basis == "measured" or "measured" in (x.prefill.basis, x.decode.basis) for x in cands):
        c.print("  m after a figure: measured by quantmatch bench on this machine, not predicted (GiB: peak RSS); "
                "--json keeps the prediction beside it", style="dim")
    for cand in cands[: (len(cands) if show_all else 3)]:
        c.print(f"  #{cand.rank} {cand.scheme} ({cand.method or '16-bit'}, {cand.backend}): " + "; ".join(cand.why))
    if any("bandwidth-only" in x.prefill.note for x in cands):
        c.print("  * upper bound: no compute peak is known for this device", style="dim")
    if any(not x.producible_here for x in cands):
        c.print("  † quantmatch cannot produce this artifact here (see 'Produce it')", style="dim")
    from quantmatch.cli.kv_view import print_kv

    print_kv(c, p, show_all)
    _how_to_run(c, p)
    _rejections(c, p, show_all)


def _how_to_run(c: Console, p: Plan) -> None:
    """The top plan's command, or how to produce it elsewhere plus the best plan quantmatch can make."""
    best = p.top
    if best is None:
        return
    if best.is_baseline:
        c.print(Text.assemble(("Run it:", "bold"),
                              f" no quantization: serve the {best.scheme} checkpoint with {best.backend}"))
        return
    if best.producible_here:
        c.print(Text("Run it:", style="bold"))
        c.print(f"  {best.command}")
        _job(c, best)
        return
    c.print(Text.assemble(("Produce it:", "bold"), f" #{best.rank} {best.scheme} ({best.method}): {best.production}"))
    if best.command:  # implemented, requirements missing
        c.print(f"  {best.produce_with}")
        c.print(f"  {best.command}")
    else:
        c.print(f"  with {best.produce_with}")
    alt = p.best_producible
    if alt is None:
        c.print("  no ranked plan uses a method quantmatch can produce here", style="yellow")
    elif alt.is_baseline:
        c.print(Text.assemble(("Best plan quantmatch can run here:", "bold"), f" #{alt.rank}: serve the {alt.scheme} "
                              f"checkpoint with {alt.backend} (no quantization)"))
    else:
        c.print(Text.assemble(("Best plan quantmatch can produce here:", "bold"),
                              f" #{alt.rank} {alt.scheme} ({alt.method}, {alt.backend})"))
        c.print(f"  {alt.command}")
        _job(c, alt)


def _job(c: Console, cand: Candidate) -> None:
    j = cand.job
    tm = "?" if j.time_s is None else (f"{j.time_s / 60:.0f} min" if j.time_s >= 60 else f"{j.time_s:.0f} s")
    acc = "" if j.accelerator_gib is None else f", accelerator {j.accelerator_gib:.1f} GiB"
    c.print(f"  job: RAM {j.ram_gib:.1f} GiB{acc}, disk {j.disk_gib:.1f} GiB, about {tm}; {j.reason}", style="dim")
    for dline in j.details:
        c.print(f"  job: {dline}", style="dim")


def _rejections(c: Console, p: Plan, show_all: bool) -> None:
    if not p.rejections:
        return
    counts = Counter(r.stage for r in p.rejections)
    c.print(Text.assemble(("Rejected:", "bold"), " " + ", ".join(f"{n} {stage}" for stage, n in counts.items())))
    t = Table(show_header=True, title_justify="left", show_lines=False)
    for col in ("stage", "candidate", "reason"):
        t.add_column(col, overflow="fold")
    shown: Counter[str] = Counter()
    for r in p.rejections:
        if not show_all and shown[r.stage] >= 3:
            continue
        shown[r.stage] += 1
        t.add_row(r.stage, f"{r.scheme} ({r.method or '16-bit'}, {r.backend}/{r.target})", r.reason)
    c.print(t)
    if not show_all and sum(shown.values()) < len(p.rejections):
        c.print(f"  ({len(p.rejections) - sum(shown.values())} more; --all lists every rejection)", style="dim")


def print_comparison(plans: Sequence[Plan], console: Console | None = None) -> None:
    """One row per device: its top plan."""
    c = console or Console(highlight=False, soft_wrap=False, markup=False)
    t = Table(title="Devices compared (top plan of each)", title_justify="left")
    for col in ("device", "status", "scheme", "method", "runtime", "memory GiB", "prefill tok/s",
                "decode tok/s", "ΔPPL %"):
        t.add_column(col, overflow="fold")
    for p in plans:
        b = p.top
        if b is None:
            t.add_row(p.device.name, p.status, "-", "-", "-", "-", "-", "-", "-")
            continue
        method = (b.method or "(16-bit)") + ("" if b.producible_here else " †")
        t.add_row(p.device.name, p.status, b.scheme, method, f"{b.backend}/{b.target}",
                  f"{b.memory.total_gib:.2f}", _tps(b.prefill.tokens_per_s), _tps(b.decode.tokens_per_s),
                  f"{b.quality.delta_pct:.2f} {b.quality.basis}")
    c.print(t)
    if any(p.top is not None and not p.top.producible_here for p in plans):
        c.print("  † quantmatch cannot produce this artifact here: each plan above says how to get it", style="dim")


def print_run(result: dict[str, object], console: Console | None = None) -> None:
    """What ``--run`` did: the plan it ran, the artifact, and the evaluation."""
    c = console or Console(highlight=False, soft_wrap=False, markup=False)
    cand = result["candidate"]
    assert isinstance(cand, dict)
    c.print(Text.assemble((f"Ran plan #{cand['rank']}:", "bold"), f" {cand['scheme']} ({cand['method'] or '16-bit'}, "
                          f"{cand['backend']})"))
    skipped = result.get("skipped")
    for note in skipped if isinstance(skipped, list) else []:
        c.print(f"  {note}", style="yellow")
    job = result.get("job_here")
    if isinstance(job, dict) and job.get("method") != "none":
        c.print(f"  job on this machine: RAM {float(job['ram_gib']):.1f} GiB, disk {float(job['disk_gib']):.1f} GiB; "
                f"{job['reason']}", style="dim")
    q = result.get("quantize")
    if isinstance(q, dict):
        size = q.get("size_bytes")
        c.print(f"  artifact: {q.get('artifact')} ({'?' if size is None else f'{int(size) / 2**20:.1f} MiB'}, "
                f"{q.get('seconds')} s)")
    ev = result.get("evaluation")
    if isinstance(ev, dict):
        c.print(f"  evaluation: perplexity {float(ev.get('perplexity') or 0):.3f} over {ev.get('tokens')} tokens "
                f"of {ev.get('text')}")
        c.print(f"  peak RSS of this process (quantization and evaluation included): "
                f"{int(ev.get('peak_rss_bytes') or 0) / 2**30:.2f} GiB; the plan predicts "
                f"{cand['memory']['total_gib']:.2f} GiB to serve it with {cand['backend']}")
