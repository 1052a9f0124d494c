"""Tables for ``quantmatch bench`` and ``quantmatch verify`` (rich). Tools should use ``--json``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.text import Text

from quantmatch.measure.bench import BenchReport, ComboResult
from quantmatch.measure.verify import VerifyReport

__all__ = ["bench_table", "verify_table"]



def _mib(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.0f}" if n >= 10 * 2**20 else f"{n / 2**20:.2f}"


def _rate(v: float) -> str:
    return f"{v / 1e9:,.0f}" if v >= 1e10 else f"{v / 1e9:.2f}"


def _speed(v: float | None, ratio: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" + (f" ({ratio:.2f}x)" if ratio else "")


def _level(level: str) -> Any:
    from quantmatch.cli.tables import level_text

    return level_text(level)


def _row(r: ComboResult) -> list[Any]:
    run = r.run or {}
    roof = r.roofline or {}
    limit, ach = roof.get("limit_tps"), roof.get("achieved")
    delta = f"{r.ppl_delta_pct:+.2f}%" if r.ppl_delta_pct is not None else "-"
    fid = r.fidelity or {}
    return [r.combo.method or "-", r.combo.scheme, r.combo.backend, _level(r.level), _mib(r.size_bytes),
            f"{run['perplexity']:.3f}" if run else "-", delta,
            f"{fid['kld_mean']:.4f}" if fid else "-", f"{fid['top1_pct']:.1f}" if fid else "-",
            _speed(run.get("prefill_tps"), r.ratios.get("prefill_tps")),
            _speed(run.get("decode_tps"), r.ratios.get("decode_tps")),
            _speed(run.get("decode_batch_tps"), r.ratios.get("decode_batch_tps")),
            _mib(run.get("peak_rss_bytes")),
            "-" if not limit else f"{limit:,.0f} ({roof.get('bound', '?')[:3]})" + ("*" if roof.get("note") else ""),
            "-" if ach is None else f"{100 * ach:.0f}%"]


def bench_table(report: BenchReport, console: Any) -> None:
    """The results table, then failures with their errors and skipped combinations grouped by reason."""
    from rich.table import Table

    m = report.machine
    gemm = m.get("gemm") or {}
    head = (f"{report.model} on {report.device_name} ({report.device}), {report.threads} threads; "
            f"bandwidth {m.get('bandwidth_gbps') or '?'} GB/s (copy {m.get('copy_gbps')}, read {m.get('read_gbps')}); "
            "GEMM G(FL)OP/s " + ", ".join(f"{k} {_rate(v)}" for k, v in gemm.items()))
    cfg = report.config
    table = Table(title=head, title_justify="left", caption=(
        f"perplexity: {cfg['tokens']} tokens in {cfg['window']}-token windows; prefill: {cfg['prompt']} tokens; "
        f"decode: {cfg['new_tokens']} steps after a {cfg['prompt']}-token prompt, batch 1 and batch {cfg['batch']}; "
        "(Nx) = ratio to the fp32 torch baseline of this run; KLD = mean KL divergence from the reference "
        "model's next-token distributions (nats), top-1 % = positions whose top token is the reference's; "
        "roofline = decode limit at batch 1 (mem = bandwidth-bound, com = compute-bound)"), caption_justify="left")
    for col, just in (("method", "left"), ("scheme", "left"), ("backend", "left"), ("level", "left"),
                      ("size MiB", "right"), ("ppl", "right"), ("Δ ppl", "right"), ("KLD", "right"),
                      ("top-1 %", "right"), ("prefill tok/s", "right"),
                      ("decode tok/s", "right"), (f"decode@{cfg['batch']} tok/s", "right"), ("peak RSS MiB", "right"),
                      ("roofline tok/s", "right"), ("achieved", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in report.results:
        if r.status == "ok":
            table.add_row(*_row(r))
    console.print(table)
    for r in report.results:
        if r.status == "ok" and (r.roofline or {}).get("note"):
            console.print(f"* {r.combo.key}: {(r.roofline or {})['note']}", style="dim")
    for r in report.failed:
        console.print(Text.assemble(("failed", "bold red"), f" {r.combo.key}: {r.reason}"))
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in report.results:
        if r.status == "skipped":
            groups[(r.reason, r.install)].append(r.combo.key)
    for (reason, install), keys in groups.items():
        fix = f" -> {install}" if install else ""
        console.print(Text.assemble(("skipped", "yellow"), f" {len(keys)}: {reason}{fix}"),
                      style="dim" if not install else "")
        console.print(f"  {', '.join(keys)}", style="dim")
    ok = [r for r in report.results if r.status == "ok"]
    console.print(f"{len(ok)} measured, {len(report.failed)} failed, "
                  f"{sum(1 for r in report.results if r.status == 'skipped')} skipped in {report.seconds:.0f} s; "
                  f"results stored in {report.store or '(not stored)'}")


def verify_table(report: VerifyReport, console: Any) -> None:
    """Agreement or drift per combination, with the figure behind it."""
    from rich.table import Table

    caption = ("compute: reference time / quantized time at M=256 (a win from 1.2x; the reference is fp32, or the "
               "dense layer of the scheme's own float type where the kernel names it); weights: quantized bytes / "
               "reference bytes (a win below 0.67x); GEMV: the same at M=1")
    table = Table(title=f"registry claims vs {report.device_name} ({report.device}), {report.threads} threads",
                  title_justify="left", caption=caption, caption_justify="left")
    for col, just in (("method", "left"), ("scheme", "left"), ("backend", "left"), ("claimed", "left"),
                      ("result", "left"), ("compute", "right"), ("weights", "right"), ("GEMV", "right"),
                      ("kernel", "left")):
        table.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    style = {"agrees": "green", "drift": "bold red", "failed": "red", "unchecked": "dim"}
    for c in report.checks:
        if c.status == "unchecked":
            continue
        result = c.status if c.status != "drift" else f"drift: {c.observed}"
        p = c.probe or {}
        nums = [f"{p['compute_speedup']:.2f}x", f"{1 / p['weight_ratio']:.2f}x", f"{p['gemv_speedup']:.2f}x"] if p \
            else ["-", "-", "-"]
        table.add_row(c.method, c.scheme, c.backend, _level(c.claimed), Text(result, style=style[c.status]), *nums,
                      c.kernel or c.note)
    console.print(table)
    unchecked: dict[str, list[str]] = defaultdict(list)
    for c in report.checks:
        if c.status == "unchecked":
            unchecked[c.note].append(f"{c.method}:{c.scheme}:{c.backend}")
    for note, keys in unchecked.items():
        console.print(f"unchecked {len(keys)}: {note}", style="dim")
    console.print(f"{report.count('agrees')} agree, {report.count('drift')} drift, {report.count('failed')} failed, "
                  f"{report.count('unchecked')} unchecked in {report.seconds:.0f} s; evidence stored in "
                  f"{report.store or '(not stored)'} (shown by quantmatch explain ... local)")
