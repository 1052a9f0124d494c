"""``quantmatch calibrate-sweep``: the command's input handling and its tables (one per method and scheme).

The default methods and their schemes live here, in the command line, because the measurement code
names no method: GPTQ W4 g64, AWQ W4 g64 asymmetric and SmoothQuant W8A8 with static activations, the
schemes of the Methods II benchmark (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from quantmatch.sdk.errors import InputError

__all__ = ["DEFAULT_METHODS", "DEFAULT_SAMPLES", "DEFAULT_SCHEMES", "parse_samples", "parse_schemes", "run",
           "sweep_tables"]

DEFAULT_SCHEMES: dict[str, str] = {"gptq": "w4a16-g64", "awq": "w4a16-g64-asym", "smoothquant": "w8a8-int8-static"}
"""The scheme each calibrated method is swept at unless ``--scheme`` says otherwise."""
DEFAULT_METHODS = ",".join(DEFAULT_SCHEMES)
DEFAULT_SAMPLES = "16,32,64,128,256,512"


def parse_samples(text: str) -> list[int]:
    """``16,32,64``: positive integers, comma-separated (:class:`InputError` otherwise)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            n = 0
        if n < 1:
            raise InputError(f"--samples takes positive integers, comma-separated (e.g. 16,64,256); got {part!r}")
        out.append(n)
    if not out:
        raise InputError("--samples takes positive integers, comma-separated (e.g. 16,64,256)")
    return out


def parse_schemes(methods: Sequence[str], text: str | None) -> dict[str, list[str]]:
    """``--scheme``: one scheme for every method, or ``METHOD=SCHEME`` items (repeat a method for more);
    a method left out gets :data:`DEFAULT_SCHEMES`'s."""
    given: dict[str, list[str]] = {}
    single: str | None = None
    for item in (p.strip() for p in (text or "").split(",")):
        if not item:
            continue
        method, sep, scheme = item.partition("=")
        if sep:
            if method.strip().lower() not in methods:
                raise InputError(f"--scheme {item!r}: {method.strip()} is not among --method ({', '.join(methods)})")
            given.setdefault(method.strip().lower(), []).append(scheme.strip().lower())
        elif single is None:
            single = item.lower()
        else:
            raise InputError(f"--scheme: give one scheme for every method or METHOD=SCHEME items, got {text!r}")
    out = {}
    for m in methods:
        schemes = given.get(m) or ([single] if single else []) or ([DEFAULT_SCHEMES[m]] if m in DEFAULT_SCHEMES else [])
        if not schemes:
            raise InputError(f"no default scheme for {m}: give --scheme {m}=SCHEME", fix=f"--scheme {m}=SCHEME")
        out[m] = schemes
    return out


def run(args: argparse.Namespace, progress: Any = None) -> Any:
    """The sweep ``args`` ask for (:func:`quantmatch.measure.calibration_sweep.sweep`)."""
    from quantmatch.measure.calibration_sweep import GENERIC, IN_DOMAIN, sweep
    from quantmatch.sdk.runner import default_threads

    methods = [m.strip().lower() for m in args.method.split(",") if m.strip()]
    if not methods:
        raise InputError("--method: name at least one method (e.g. gptq,awq,smoothquant)")
    from quantmatch.sdk.errors import UnknownChoiceError
    from quantmatch.sdk.pluginhost import get_host

    known = get_host().quantizers
    for m in methods:
        if m not in known:
            raise UnknownChoiceError("method", m, known)
    calib = args.calib or (f"{GENERIC},{IN_DOMAIN}" if args.text else GENERIC)
    return sweep(args.model, methods, parse_schemes(methods, args.scheme), parse_samples(args.samples),
                 [c for c in calib.split(",") if c.strip()], args.text, args.tokens, args.seq_len, args.seed,
                 args.threads or default_threads(), args.out, progress, resume=not args.no_resume,
                 window=args.window, timeout=args.timeout)


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def sweep_tables(report: Any, console: Console) -> None:
    """One table per method and scheme: a row per calibration text and sample count, the count where more
    samples stop helping marked, then the rule and the failures."""
    from quantmatch.measure.calibration_sweep import STOP_RULE

    stops = {(p.method, p.scheme, p.calibration): p for p in report.plateaus()}
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in report.rows:
        groups.setdefault((r.method, r.scheme), []).append(r)
    text = report.text or "the bundled held-out text"
    for (method, scheme), rows in groups.items():
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False,
                  title=f"{method} {scheme}: KL divergence to {report.model} on {report.tokens:,} tokens of {text}; "
                        f"{report.seq_len}-token calibration samples", title_justify="left")
        for col in ("calib", "n", "KLD ± 95%", "p99", "top-1 %", "PPL ratio", "CPU s", "wall"):
            t.add_column(col, justify="left" if col == "calib" else "right", no_wrap=True)
        for r in sorted(rows, key=lambda r: (list(report.calibrations).index(r.calibration)
                                              if r.calibration in report.calibrations else 0, r.samples)):
            stop = stops.get((method, scheme, r.calibration))
            mark = " *" if stop is not None and stop.samples == r.samples else ""
            if r.status != "ok" or r.fidelity is None:
                t.add_row(r.calibration, str(r.samples), "failed", "", "", "", "", "")
                continue
            f: Mapping[str, Any] = r.fidelity
            t.add_row(r.calibration, f"{r.samples}{mark}", f"{f['kld_mean']:.4f}±{f['kld_ci95']:.4f}",
                      f"{f['kld_p99']:.3f}", f"{f['top1_pct']:.1f}", f"{f['ppl_ratio']:.3f}",
                      _f(r.quantize_cpu_s, ".0f"), _f(r.quantize_wall_s, ".0f"))
        console.print(t)
    console.print("n: calibration samples; CPU s, wall: the quantization's process CPU and wall seconds; *: where "
                  "more samples stop helping.")
    console.print(f"Rule: {STOP_RULE}.")
    for p in report.plateaus():
        if p.samples is None:
            continue
        cost = ""
        if p.cpu_s and p.largest_cpu_s:
            cost = f"; {p.cpu_s:.0f} CPU s against {p.largest_cpu_s:.0f} at {p.largest}"
        best = "" if p.best == p.samples else f"; lowest {p.best_kld:.5f} at {p.best}"
        console.print(f"  {p.method} {p.scheme}, {p.calibration}: {p.samples} samples (KLD {p.kld:.5f}, band "
                      f"{p.band:.5f}; {p.largest_kld:.5f} at {p.largest}{best}{cost})")
    if report.failed:
        console.print(f"{len(report.failed)} points failed:")
        for r in report.failed:
            console.print(f"  {r.point.key}: {r.error}")
    resumed = len(report.rows) - report.quantized
    console.print(f"{report.quantized} quantized now, {resumed} resumed; results: {report.results} "
                  f"({report.seconds:.0f} s)")
