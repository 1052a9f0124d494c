"""The ``quantmatch`` command line: the parser, one function per command, and the one place errors end.

Start-up stays cheap: this module imports only the standard library and the error classes at the top;
each command imports what it needs. ``--help``, ``plugins``, ``devices``, ``registry``, ``explain`` and
``conformance`` never import torch, transformers, textual or ray.

Errors are caught once, in :func:`main`: an :class:`~quantmatch.sdk.errors.InputError` (bad input: an
unknown name, a missing file, an option that does not exist ...) prints ``quantmatch: error: ...`` and
exits 2, as JSON too under ``--json``; a :class:`~quantmatch.sdk.errors.RunError` exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from quantmatch.sdk.errors import InputError

__all__ = ["UsageError", "build_parser", "main"]

JSON_SCHEMA_VERSION = 1


class UsageError(InputError):
    """Bad input found by the command line itself (a missing flag, a value that does not parse): an
    :class:`~quantmatch.sdk.errors.InputError` like every other, printed as ``quantmatch: error: ...`` with
    exit code 2."""


def _emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def _registry(args: argparse.Namespace | None = None) -> Any:
    from quantmatch.registry import Registry

    asked = getattr(args, "runtime_version", None)
    if not asked:
        return Registry()
    from quantmatch.registry.versions import parse_runtime_versions

    return Registry(runtime_versions=parse_runtime_versions(asked))


# ---- commands ---------------------------------------------------------------------------------
def cmd_plugins(args: argparse.Namespace) -> int:
    from quantmatch.sdk.pluginhost import get_host

    host = get_host()
    infos = list(host.plugins.values())
    if args.json:
        methods = [{"name": name, "plugin": e.provenance.plugin, "options": e.obj.options.schema(),
                    "exports": [{**x.to_dict(), "options": x.options.schema()} for x in e.obj.exports]}
                   for name, e in host.quantizers.items()]
        backends = [{"name": name, "plugin": e.provenance.plugin, "runner": e.obj.runner or None,
                     "reference": e.obj.reference, "priors": sorted(e.obj.priors)}
                    for name, e in host.backends.items()]
        executors = [{"name": name, "plugin": e.provenance.plugin, "description": e.obj.description,
                      "requires": list(e.obj.requires), "install": e.obj.install, "missing": e.obj.missing()}
                     for name, e in host.executors.items()]
        _emit_json({"schema": JSON_SCHEMA_VERSION, "plugins": [p.to_dict() for p in infos], "methods": methods,
                    "backends": backends, "executors": executors})
        return 0
    from quantmatch.cli import tables as render

    render.plugins_table(infos, {b: host.precedence(b) for b in sorted(host.refinements)})
    render.method_options({name: e.obj.options for name, e in host.quantizers.items()})
    for name, e in host.executors.items():
        missing = e.obj.missing()
        print(f"executor {name}: {e.obj.description}" + (f" (needs {', '.join(missing)}: {e.obj.install})"
                                                         if missing else ""))
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from quantmatch.registry import detect_all

    dets = detect_all(measure_bandwidth=not args.no_measure)
    rates = _probe_rates() if getattr(args, "probe", False) else None
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "detections": [d.to_dict() for d in dets],
                    **({"kernel_rates": rates.to_dict()} if rates is not None else {})})
        return 0
    from quantmatch.cli import tables as render

    render.detections(dets)
    if rates is not None:
        print(f"kernel rates ({rates.threads} threads, {rates.clock} clock; cached for plan --device local):")
        for r in rates.rates:
            print(f"  {r.backend:10s} {r.kernel:14s} GEMV {r.gemv_elems_s / 1e9:7.2f} G weights/s   "
                  f"GEMM {r.gemm_flops_s / 1e9:8.1f} GFLOP/s")
    return 0


def _probe_rates() -> Any:
    """Every backend's kernel-rate probe (``Backend.rate_probe``) on all cores, cached for the planner."""
    import os

    from quantmatch.sdk.kernel_rates import run_rate_probes

    probes = [(e.name, e.obj.runtime, e.obj.rate_probe) for e in _registry().backends() if e.obj.rate_probe]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        print(f"warning: load average {load:.1f}: other processes are running, so the all-core wall-clock rates "
              "will come out low; run detect --probe again on an idle machine", file=sys.stderr)
    return run_rate_probes(probes, os.cpu_count() or 1, "wall",
                           on_error=lambda b, e: print(f"probe {b} failed: {e}", file=sys.stderr))


def cmd_devices(args: argparse.Namespace) -> int:
    reg = _registry()
    if args.device:
        dev = reg.device(args.device)
        if args.json:
            _emit_json({"schema": JSON_SCHEMA_VERSION, "device": dev.to_dict()})
            return 0
        from quantmatch.cli import tables as render

        render.device_detail(dev)
        return 0
    devs = reg.devices(args.family)
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "devices": [d.to_dict() for d in devs]})
        return 0
    from quantmatch.cli import tables as render

    render.devices_table(devs)
    return 0


def _model(spec: str | None) -> Any:
    """The shapes of ``--model``: anything the one model resolver reads (a directory, ``config.json``, a
    ``.gguf`` file's header, a built-in shape), without weights."""
    if not spec:
        return None
    from quantmatch.sdk.models import resolve_model

    return resolve_model(spec, shapes_only=True).info


def cmd_registry(args: argparse.Namespace) -> int:
    reg = _registry(args)
    dev = reg.device(args.device)
    if args.level:
        from quantmatch.sdk.verdict import Level

        try:
            Level.parse(args.level)
        except ValueError:
            from quantmatch.sdk.errors import UnknownChoiceError

            raise UnknownChoiceError("level", args.level, [lv.value for lv in Level]) from None
    combos = reg.combinations(dev, method=args.method, backend=args.backend, level=args.level,
                              layer=args.layer, model=_model(args.model),
                              include_unsupported=not args.runnable)
    empty_because = [] if combos else _why_empty(reg, dev, args)
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "device": dev.to_dict(),
                    "combinations": [v.to_dict() for v in combos], "empty_because": empty_because})
        return 0
    from quantmatch.cli import tables as render

    render.registry_table(dev, combos, empty_because)
    return 0


def _why_empty(reg: Any, dev: Any, args: argparse.Namespace) -> list[str]:
    """Why the filters of ``quantmatch registry`` left no combination (an empty answer is a valid one)."""
    reasons: list[str] = reg.why_empty(dev, method=args.method, backend=args.backend)
    if reasons:
        return reasons
    wanted = "runnable" if args.runnable and not args.level else args.level
    return [f"nothing on {dev.name} is {wanted or 'listed'} for these filters "
            "(drop --level/--runnable to see every verdict)"]


def cmd_explain(args: argparse.Namespace) -> int:
    reg = _registry(args)
    method = None if args.method.lower() in ("-", "none", "any") else args.method
    layers = [args.layer] if args.layer else None
    verdicts = reg.explain(method, args.scheme, args.backend, args.device, args.target,
                           _model(args.model), layers)
    from quantmatch.planner.crossover import explain_crossovers

    used, xs, why = explain_crossovers(method, args.scheme, args.backend, args.device, args.target, args.model, reg)
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "verdicts": [v.to_dict() for v in verdicts],
                    "crossover": {"model": used, "crossovers": [x.to_dict() for x in xs], "note": why or None}})
        return 0
    from quantmatch.cli import tables as render
    from quantmatch.cli.crossover_view import print_explain_crossover

    render.explain(reg.device(args.device), verdicts)
    print_explain_crossover(used, xs, why, args.model is None)
    return 0


def cmd_conformance(args: argparse.Namespace) -> int:
    from pathlib import Path

    from quantmatch.registry import run_conformance
    from quantmatch.registry.conformance import EXPECTED_FORMAT, ConformanceFormatError

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file (give a conformance JSON such as "
                         "shared/reference/conformance_public.json)")
    try:
        report = run_conformance(path)
    except ConformanceFormatError as e:
        raise UsageError(f"{path}: not a conformance file: {e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not a conformance file ({type(e).__name__}: {e}); expected "
                         f"{EXPECTED_FORMAT}") from e
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, **report.to_dict()})
    else:
        from quantmatch.cli import tables as render

        render.conformance(report, show_agree=args.verbose)
    return 1 if report.count("disagree") else 0


def cmd_plan(args: argparse.Namespace) -> int:
    if str(getattr(args, "workload", None) or "inference").strip().lower() != "inference":  # fine-tuning
        from quantmatch.cli.training_view import run_training_plan

        return run_training_plan(args, _emit_json, JSON_SCHEMA_VERSION)
    return _plan(args)


def _positive_int(name: str, text: str | None) -> int | None:
    """``--batch`` and friends, parsed here (not by argparse) so --json can report bad values as JSON."""
    from quantmatch.planner import PlanInputError

    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise PlanInputError(f"--{name} must be a positive integer, got {text!r}") from None


def _plan(args: argparse.Namespace) -> int:
    from quantmatch.planner import plan_devices
    from quantmatch.planner.plan import comparison

    if args.batch is not None and "," in args.batch:  # a batch sweep: the winner per batch
        from quantmatch.cli.crossover_view import batch_sweep

        return batch_sweep(args, dict(
            prompt=_positive_int("prompt", args.prompt), gen=_positive_int("gen", args.gen),
            context=_positive_int("context", args.context), tolerance=args.tolerance, max_kld=args.max_kld,
            min_top1=args.min_top1, memory_budget=args.memory_budget, prefer=args.prefer, kv=args.kv),
            _emit_json, JSON_SCHEMA_VERSION)
    plans = plan_devices(args.model, args.device or ["local"], batch=_positive_int("batch", args.batch),
                         prompt=_positive_int("prompt", args.prompt), gen=_positive_int("gen", args.gen),
                         context=_positive_int("context", args.context), tolerance=args.tolerance,
                         max_kld=args.max_kld, min_top1=args.min_top1,
                         memory_budget=args.memory_budget, prefer=args.prefer, kv=args.kv)
    if args.mixed:
        from quantmatch.cli.mixed_view import run_mixed_plan

        mixed = [run_mixed_plan(p, args) for p in plans]
        if args.json:
            _emit_json({"schema": JSON_SCHEMA_VERSION, "plans": [p.to_dict() for p in plans], "mixed": mixed})
        return 0
    if args.backend or args.recipe_out:
        from quantmatch.planner import PlanInputError

        raise PlanInputError("--backend and --recipe-out go with --mixed")
    if not args.json:
        from quantmatch.cli.plan_view import print_comparison, print_plan

        for i, p in enumerate(plans):
            if i:
                print()
            print_plan(p, top=args.top, show_all=args.all)
        if len(plans) > 1:
            print()
            print_comparison(plans)
    ran = None
    if args.run:
        from quantmatch.planner.run import pick_plan, run_plan

        chosen, which = pick_plan(plans)
        if not args.json:
            print(which)
        ran = {"note": which, **run_plan(chosen, args.model, args.out, args.force)}
        if not args.json:
            from quantmatch.cli.plan_view import print_run

            print_run(ran)
    if args.json:
        payload: dict[str, Any] = {"schema": JSON_SCHEMA_VERSION, "plans": [p.to_dict() for p in plans]}
        if len(plans) > 1:
            payload["comparison"] = comparison(plans)
        if ran is not None:
            payload["run"] = ran
        _emit_json(payload)
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("textual") is None:
        raise UsageError("the TUI needs Textual: pip install 'quantmatch[tui]' (or -e \".[tui]\")")
    from quantmatch.tui import run  # imports textual only now, never for the other commands

    return run(device=args.device, compare=args.compare, mode=args.screen)


_OWN_FLAGS = {"preset": "--preset", "rules": "--rule", "calibration": "--calib/--samples/--seq-len",
              "seed": "--seed", "force": "--force", "progress": "(always on)", "model": "MODEL",
              "method": "--method", "scheme": "--scheme", "out": "--out"}


def _method_options(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value is read as JSON when it parses (``0.05``, ``false``, ``[]``), else as text."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"--option {item!r}: expected KEY=VALUE, for example --option damp=0.05")
        if key.strip() in _OWN_FLAGS:
            raise UsageError(f"--option {key.strip()}: set it with its own flag ({_OWN_FLAGS[key.strip()]})")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def cmd_quantize(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    from quantmatch.cli import quantize_view as qr
    from quantmatch.sdk.artifact import OutputExistsError, check_output
    from quantmatch.sdk.calibration import CalibrationSpec
    from quantmatch.sdk.pipeline import plan_quantization, quantize, stream_problems
    from quantmatch.sdk.quantizer import Problem

    if args.recipe:
        if args.method or args.scheme:
            raise UsageError("--recipe sets the method and every tensor's format: leave out --method and --scheme")
        from quantmatch.cli.mixed_view import run_recipe

        done = run_recipe(args)
        if args.json:
            _emit_json({"schema": JSON_SCHEMA_VERSION, "result": done})
        return 0
    if not args.method or not args.scheme:
        raise UsageError("quantize needs --method and --scheme (or --recipe FILE from quantmatch plan --mixed)")
    err = Console(stderr=True, highlight=False, markup=False)
    calibration = CalibrationSpec(args.calib, args.samples, args.seq_len, args.seed)
    options = _method_options(args.option or ())
    if not args.dry_run:
        check_output(args.out, args.force)
    plan = plan_quantization(args.model, args.method, args.scheme, args.preset, args.rule or (), options=options)
    if args.dry_run:
        try:
            check_output(args.out, args.force)
        except OutputExistsError as e:  # the real run would refuse it: the dry run says so
            plan.problems.append(Problem(str(e), fix="choose another --out, or pass --force to replace it"))
    if args.format and args.format.strip().lower() != plan.quantizer.artifact_format:
        from quantmatch.sdk.export import export_route

        try:  # a grid the format cannot hold is refused before anything loads (and by --dry-run)
            export_route(plan.quantizer.artifact_format, plan.scheme, args.format, args.allow_requantize)
        except InputError as e:
            plan.problems.append(Problem(str(e)))
    resume = "resume" if args.resume else "restart" if args.restart else "auto"
    stream = False if args.no_stream else None
    plan.problems.extend(stream_problems(plan.quantizer, stream, resume, args.offload_dir))
    estimate = None
    if not plan.fatal:
        estimate = _job_estimate(plan, args, calibration, stream)
    if not args.json or plan.fatal:
        qr.plan_report(plan, err)
        if estimate is not None:
            qr.job_report(estimate, err)
    plan.raise_if_fatal()
    if args.dry_run:
        if args.json:
            payload = {"schema": JSON_SCHEMA_VERSION, "plan": plan.to_dict()}
            if estimate is not None:
                payload["job"] = estimate.to_dict()
            _emit_json(payload)
        else:
            err.print("checks passed; nothing loaded or written (--dry-run)")
        return 0
    try:
        with qr.progress_bar(not args.json) as progress:
            result = quantize(plan.source, args.method, plan.scheme, args.out, preset=args.preset,
                              rules=args.rule or (), calibration=calibration, force=args.force, seed=args.seed,
                              progress=progress, artifact_format=args.format,
                              allow_requantize=args.allow_requantize, stream=stream, resume=resume,
                              offload_dir=args.offload_dir, **options)
    except KeyboardInterrupt:
        kept = qr.interrupted_job(args.out, args.format is not None)
        if kept:
            err.print(kept)
        raise
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "result": result.to_dict()})
    else:
        shown = {str(p) for p in plan.problems}
        for warning in (w for w in result.warnings if w not in shown):
            err.print(Text.assemble(("warning", "yellow"), f": {warning}"))
        qr.quantize_table(result, Console(highlight=False, markup=False))
    return 0


def _job_estimate(plan: Any, args: argparse.Namespace, calibration: Any, stream: bool | None) -> Any:
    """The job's peak RAM, disk and time on this machine (a problem, with the flags that help, when it does
    not fit); ``None`` when there is nothing to estimate (a model without weights here)."""
    from pathlib import Path

    from quantmatch.planner.job import estimate_quantize_job
    from quantmatch.sdk.pipeline import calibrates
    from quantmatch.sdk.quantizer import Problem

    q = plan.quantizer
    streamed = bool(q.streams) and stream is not False
    cal = calibrates(q, plan.scheme)
    samples = (calibration.samples or 16) if cal else 0
    seq = (calibration.seq_len or 256) if cal else 0
    offload = Path(args.offload_dir) if args.offload_dir else None
    try:
        est = estimate_quantize_job(plan.source, q.name, plan.scheme, streamed=streamed, samples=samples,
                                    seq_len=seq, offload_dir=offload, out_dir=Path(args.out).absolute().parent)
    except (ValueError, KeyError, TypeError):  # shapes the planner does not model: nothing to check
        return None
    if est.feasible is False:
        fixes = []
        if "RAM" in est.reason:
            if not streamed and q.streams:
                fixes.append("drop --no-stream (read the model block by block)")
            if cal and offload is None:
                fixes.append("--offload-dir DIR (carry calibration activations on disk)")
            if cal:
                fixes.append(f"fewer calibration samples (--samples {max(samples // 2, 1)})")
        if "disk" in est.reason:
            fixes.append("an --out on a disk with more room" + (", --offload-dir on another disk" if cal else ""))
        plan.problems.append(Problem(f"this job does not fit this machine: {est.reason}",
                                     fix="; ".join(fixes) or "a machine with more memory"))
    return est


def cmd_export(args: argparse.Namespace) -> int:
    from rich.console import Console

    from quantmatch.cli import quantize_view as qr
    from quantmatch.sdk.export import export_artifact

    with qr.progress_bar(not args.json) as progress:
        result = export_artifact(args.artifact, args.to, args.out, force=args.force,
                                 allow_requantize=args.allow_requantize, progress=progress,
                                 options=_method_options(args.option or ()))
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "export": result.to_dict()})
    else:
        qr.export_table(result, Console(highlight=False, markup=False))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from quantmatch.cli import quantize_view as qr
    from quantmatch.sdk.evaluate import evaluate

    try:
        with qr.progress_bar(not args.json) as progress:
            result = evaluate(args.target, text=args.text, tokens=args.tokens, window=args.window,
                              dtype=args.dtype, progress=progress, threads=args.threads, reference=args.reference,
                              runtime=args.runtime, top_k=args.top_k)
    except ValueError as e:  # tokens/window out of range (InputErrors pass through to main)
        if isinstance(e, InputError):
            raise
        raise UsageError(str(e)) from e
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "evaluation": result.to_dict()})
    else:
        qr.eval_table(result, Console(highlight=False, markup=False))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from quantmatch.cli import quantize_view as qr
    from quantmatch.measure.compare import compare

    try:
        with qr.progress_bar(not args.json) as progress:
            result = compare(args.artifacts, reference=args.reference, text=args.text, tokens=args.tokens,
                             window=args.window, threads=args.threads, top_k=args.top_k, progress=progress)
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise UsageError(str(e)) from e
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "comparison": result.to_dict()})
    else:
        from quantmatch.cli.fidelity_view import compare_table

        compare_table(result.rows, Console(highlight=False, markup=False), result.reference)
    return 0


def _bench_progress() -> Any:
    """The bench's progress bar on stderr: done/total, elapsed and an ETA, like the quantize bar."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=Console(stderr=True, markup=False), transient=True)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.executor != "local":
        from quantmatch.cli.fleet_view import cmd_sweep

        return cmd_sweep(args, [args.model])
    if args.address or args.artifact_store or args.device or args.rerun:
        raise UsageError("--address, --artifact-store, --device and --rerun are for a sweep on a fleet: add "
                         "--executor NAME (quantmatch plugins lists the executors), or use quantmatch sweep")
    from rich.console import Console

    from quantmatch.cli.measure_view import bench_table
    from quantmatch.measure.bench import Bench, parse_combos
    from quantmatch.sdk.runner import MeasureConfig

    if not args.combos and not args.all_runnable:
        raise UsageError("say what to run: --combos method:scheme:backend,... or --all-runnable")
    combos = parse_combos(args.combos or "")
    config = MeasureConfig(tokens=args.tokens, window=args.window, prompt=args.prompt,
                           new_tokens=args.new_tokens, batch=args.batch, context=args.context)
    bench = Bench(args.model, config=config, threads=args.threads, requantize=args.requantize, text=args.text,
                  save=not args.no_store, timeout=args.timeout, budget=args.budget or None)
    progress = _bench_progress()
    with progress:
        task = progress.add_task("bench", total=1)

        def tick(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        report = bench.run(combos, args.all_runnable, progress=tick)
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "bench": report.to_dict()})
    else:
        bench_table(report, Console(highlight=False, markup=False))
    return report.exit_code


def cmd_sweep(args: argparse.Namespace) -> int:
    from quantmatch.cli.fleet_view import cmd_sweep as run

    return run(args)


def cmd_fleet(args: argparse.Namespace) -> int:
    from quantmatch.cli import fleet_view

    fn = {"start": fleet_view.cmd_fleet_start, "stop": fleet_view.cmd_fleet_stop,
          "nodes": fleet_view.cmd_fleet_nodes, "labels": fleet_view.cmd_fleet_labels}.get(args.fleet_command or "")
    if fn is None:
        raise UsageError("say what to do: quantmatch fleet start|stop|nodes|labels (quantmatch fleet --help)")
    return fn(args)


def _executor_args(sp: argparse.ArgumentParser, sweep: bool = True) -> None:
    sp.add_argument("--executor", default="local", help="where the units run: local (this machine, the default) "
                    "or ray (a Ray cluster: pip install 'quantmatch[fleet]'); quantmatch plugins lists them")
    sp.add_argument("--address", help="the fleet to join (ray: auto, or HOST:PORT of the head; default auto)")
    if sweep:
        sp.add_argument("--artifact-store", metavar="DIR", help="a directory every node sees: each artifact is "
                        "quantized once, published there, and copied into each node's cache")
        sp.add_argument("--device", action="append", help="only these fleet devices (a quantmatch/device label or "
                        "catalog id; repeatable); a device no node has makes its units unverified")
        sp.add_argument("--rerun", action="store_true", help="run units already in the results store again")


def _measure_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--tokens", type=int, default=2048, help="perplexity tokens (default 2048: two windows)")
    sp.add_argument("--window", type=int, default=1024, help="perplexity window (default 1024)")
    sp.add_argument("--prompt", type=int, default=128, help="prefill tokens (default 128)")
    sp.add_argument("--new-tokens", type=int, default=32, help="timed decode steps (default 32)")
    sp.add_argument("--batch", type=int, default=4, help="the larger decode batch (default 4)")
    sp.add_argument("--context", type=int, help="prompt tokens the timed decodes start from (default: --prompt)")
    sp.add_argument("--threads", type=int, help="threads for every backend (default: physical cores)")
    sp.add_argument("--text", help="UTF-8 text file for perplexity (default: bundled held-out Shakespeare)")
    sp.add_argument("--requantize", action="store_true", help="re-create cached artifacts")
    sp.add_argument("--budget", type=float, default=240, help="seconds the perplexity pass of one unit may take at "
                    "its measured prefill speed (0: no limit)")
    sp.add_argument("--timeout", type=float, default=900, help="seconds before one step of a unit is stopped")
    sp.add_argument("--no-store", action="store_true", help="do not write the results store")
    sp.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_calibrate_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console

    from quantmatch.cli import sweep_view

    progress = _bench_progress()
    with progress:
        task = progress.add_task("calibrate-sweep", total=1)
        report = sweep_view.run(args, lambda what, done, total: progress.update(
            task, description=what, completed=done, total=total))
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "sweep": report.to_dict()})
    else:
        sweep_view.sweep_tables(report, Console(highlight=False, markup=False))
    return int(report.exit_code)


def cmd_verify(args: argparse.Namespace) -> int:
    if args.executor != "local":
        from quantmatch.cli.fleet_view import verify_on_fleet

        return verify_on_fleet(args)
    from rich.console import Console

    from quantmatch.cli.measure_view import verify_table
    from quantmatch.measure.verify import verify

    with Console(stderr=True, markup=False).status("running microbenchmarks") as status:
        def tick(what: str, done: int, total: int) -> None:
            status.update(f"microbenchmark {what} ({done + 1}/{total})")

        def wanted(method: str, scheme: str, backend: str) -> bool:
            return all(want is None or want.lower() == got for want, got in
                       ((args.method, method), (args.scheme, scheme), (args.backend, backend)))

        report = verify(threads=args.threads, save=not args.no_store, only=wanted, progress=tick)
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "verify": report.to_dict()})
    else:
        verify_table(report, Console(highlight=False, markup=False))
    return report.exit_code


# ---- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quantmatch",
        description="Which LLM quantization precision and method fit your model, hardware and workload. "
                    "Verdicts: native (low-precision compute), weight-only (memory win, 16-bit math), "
                    "emulated (runs, slower), unsupported (pruned), each with reasons and sources.",
        epilog="Examples:\n"
               "  quantmatch detect\n"
               "  quantmatch registry --device local\n"
               "  quantmatch registry --device h100 --method gptq\n"
               "  quantmatch explain fp8 w8a8-fp8 vllm a100\n"
               "  quantmatch explain - w4a4-int4 hardware h100\n"
               "Plugins: QUANTMATCH_DISABLE_PLUGIN_AUTOLOAD=1, QUANTMATCH_PLUGINS=a,b (allow-list), "
               "QUANTMATCH_BLOCK_PLUGINS=a,b.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=fn)
        return sp

    sp = add("plugins", cmd_plugins, "list loaded plugins, their versions, contributions and errors")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("detect", cmd_detect, "detect this machine's devices (CPU flags, GPUs, memory, bandwidth)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--no-measure", action="store_true", help="skip the memory-bandwidth copy test")
    sp.add_argument("--probe", action="store_true",
                    help="also time each runtime's GEMV/GEMM kernels here (torch, llama.cpp; the first run "
                         "builds probe models, minutes) and cache the rates, which plan --device local then uses")

    sp = add("devices", cmd_devices, "list catalog devices, or show one device with its sources")
    sp.add_argument("device", nargs="?", help="a device id or alias (e.g. h100) to show in detail")
    sp.add_argument("--family", help="nvidia, amd-rocm, apple-metal, intel-gpu, x86-cpu, arm-cpu (or a plugin's)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("registry", cmd_registry, "what runs on a device, at which level, and what is pruned")
    sp.add_argument("--device", default="local", help="device id, alias or 'local' (default: local)")
    sp.add_argument("--method", help="only this quantization method")
    sp.add_argument("--backend", help="only this backend")
    sp.add_argument("--level", help="only this level: native, weight-only, emulated, unsupported")
    sp.add_argument("--layer", default="linear", help="linear (default), moe or kv-cache")
    sp.add_argument("--model", help="a model directory or config.json for shape-aware pruning")
    sp.add_argument("--runnable", action="store_true", help="hide unsupported (pruned) combinations")
    sp.add_argument("--runtime-version", action="append", metavar="NAME=VERSION",
                    help="answer for this runtime version (repeatable), e.g. vllm=0.9.2; default: the installed "
                         "version, else the newest the registry knows")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("explain", cmd_explain, "why one combination gets its verdict, with reasons and sources")
    sp.add_argument("method", help="quantization method, or '-' for the number formats alone")
    sp.add_argument("scheme", help="scheme, e.g. w4a16-g128-asym, w8a8-fp8, gguf-q4_k_m")
    sp.add_argument("backend", help="backend, e.g. vllm, llama.cpp, hardware")
    sp.add_argument("device", help="device id, alias or 'local'")
    sp.add_argument("--target", help="execution target: cuda, rocm, metal (mps), vulkan, cpu")
    sp.add_argument("--layer", help="only this layer type: linear, moe, kv-cache")
    sp.add_argument("--model", help="a model directory or config.json for shape-aware checks")
    sp.add_argument("--runtime-version", action="append", metavar="NAME=VERSION",
                    help="answer for this runtime version (repeatable), e.g. vllm=0.9.2; default: the installed "
                         "version, else the newest the registry knows")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("conformance", cmd_conformance, "check the registry against a file of expected verdicts")
    sp.add_argument("file", help="conformance JSON (format 'quantmatch conformance cases' v1 or v2)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("-v", "--verbose", action="store_true", help="also list the agreeing cases")

    sp = add("plan", cmd_plan, "recommend precision, method and runtime for a model, device and workload")
    sp.add_argument("model", help="built-in shape (llama-3.1-8b, smollm2-135m ...), model directory, "
                                  "config.json or .gguf file")
    sp.add_argument("--device", action="append", help="device id, alias or 'local' (repeat to compare; "
                                                      "default: local)")
    sp.add_argument("--batch", default="1", help="concurrent sequences (default 1); a comma-separated list "
                                                 "(1,8,32,128) plans once per batch and shows the winner per batch")
    sp.add_argument("--prompt", default="512", help="prompt tokens per sequence (default 512)")
    sp.add_argument("--gen", default="256", help="generated tokens per sequence (default 256)")
    sp.add_argument("--context", help="KV-cache length per sequence (default prompt + gen)")
    sp.add_argument("--tolerance", default="chat",
                    help="quality tolerance: chat (3%%, mean KLD 0.04), code (1%%, 0.01), reasoning (0.5%%, "
                         "0.005) or a percentage (perplexity only)")
    sp.add_argument("--max-kld", metavar="NATS",
                    help="largest expected mean KL divergence to the unquantized model, in nats per token "
                         "(e.g. 0.02; replaces the tolerance class's)")
    sp.add_argument("--min-top1", metavar="PCT",
                    help="smallest expected share of positions with the same top token, in percent (e.g. 97)")
    sp.add_argument("--memory-budget", help="memory limit, in GB (10^9 bytes) unless a unit is given: 8, 8GB, "
                                            "7.5GiB, 512MB (default: the device's memory)")
    sp.add_argument("--prefer", default="fastest", help="fastest (default), smallest or most-accurate")
    sp.add_argument("--kv", metavar="FORMAT",
                    help="KV-cache format: auto (quantize the cache only where the default one does not fit), "
                         "fp16, bf16, fp8, fp8e5m2, int8, int4, nvfp4, q8_0 or q4_0 (every candidate; rejected "
                         "where its runtime cannot run it); default: the scheme's or runtime's own")
    sp.add_argument("--workload", default="inference",
                    help="inference (default), or a fine-tuning memory plan: qlora (adapters on an NF4 base), "
                         "lora (adapters on a 16-bit base) or full; the flags below apply to fine-tuning")
    sp.add_argument("--seq-len", default="2048", help="fine-tuning: tokens per training sequence (default 2048; "
                                                      "--batch sets the sequences per step)")
    sp.add_argument("--lora-rank", default="64", help="fine-tuning: LoRA rank (default 64, as in the QLoRA paper)")
    sp.add_argument("--lora-targets", default="all", help="fine-tuning: all (every decoder linear layer, default), "
                                                          "attention or qv")
    sp.add_argument("--optimizer", default="adamw", help="fine-tuning: adamw (default), adamw_8bit, paged_adamw, "
                                                         "paged_adamw_8bit or sgd")
    sp.add_argument("--precision", help="fine-tuning: bf16 (16-bit params, grads and states; default for "
                                        "qlora/lora) or mixed (fp32 master and states; default for full)")
    sp.add_argument("--base-format", help="fine-tuning: the frozen base's format: nf4 (qlora default), nf4-nodq, "
                                          "fp4, int8, or bf16/fp16 (lora default)")
    sp.add_argument("--no-checkpointing", action="store_true",
                    help="fine-tuning: no gradient checkpointing (every layer's activations stay in memory)")
    sp.add_argument("--chunked-loss", action="store_true",
                    help="fine-tuning: the loss upcasts the logits chunk by chunk (a fused, chunked cross-entropy)")
    sp.add_argument("--top", type=int, default=10, help="plans to show (default 10)")
    sp.add_argument("--all", action="store_true", help="show every plan and every rejection")
    sp.add_argument("--run", action="store_true", help="quantize the best plan quantmatch can produce whose job "
                                                       "fits this machine, then evaluate it (imports torch; with "
                                                       "several --device: the local one's plan, else the first's)")
    sp.add_argument("--out", help="artifact directory for --run (default: MODEL-SCHEME)")
    sp.add_argument("--mixed", action="store_true",
                    help="search one format per weight tensor under --memory-budget (KV cache at --context and the "
                         "runtime's memory taken out first) for the least predicted KL divergence, from a per-tensor "
                         "sensitivity measured on the model (imports torch; cached) or, for a built-in shape, a prior")
    sp.add_argument("--backend", help="with --mixed: the runtime to mix formats for (default: that of the best plan "
                                      "of a method that mixes formats, e.g. llama.cpp)")
    sp.add_argument("--recipe-out", metavar="FILE", help="with --mixed: write the recipe (JSON) for "
                                                         "`quantmatch quantize MODEL --recipe FILE`")
    sp.add_argument("--force", action="store_true", help="with --run: replace an existing --out; with --recipe-out: "
                                                         "replace an existing recipe file")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("quantize", cmd_quantize, "quantize a model with quanto, HQQ, GGUF, GPTQ, AWQ, SmoothQuant or RTN "
                                       "(checks run first; progress per decoder block)")
    sp.add_argument("model", help="model directory, .gguf file, hub id or the bundled smollm2-135m")
    sp.add_argument("--method", help="quanto, hqq, gguf, gptq, awq, smoothquant or rtn (or a plugin's "
                                      "method); required unless --recipe")
    sp.add_argument("--scheme", help="e.g. w8a16, w4a16-g64-asym, gguf-q4_k_m; required unless --recipe")
    sp.add_argument("--recipe", metavar="FILE", help="a mixed-precision recipe written by `quantmatch plan MODEL "
                                                     "--mixed --recipe-out FILE` (one format per tensor; replaces "
                                                     "--method and --scheme); reports measured size vs predicted")
    sp.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    sp.add_argument("--preset", help="layer-wise precision preset: typical, typical-int4-qkv, typical-int8-head, "
                                     "attn8-mlp4")
    sp.add_argument("--rule", action="append", metavar="PATTERNS=PRECISION",
                    help="layer-wise rule, repeatable, ahead of the preset's rules: e.g. lm_head=fp16, "
                         "'*.mlp.*=int4' (precisions: fp32, fp16, bf16, int8, int4, ...)")
    sp.add_argument("--calib", help="calibration text file or dataset name (default: bundled Shakespeare)")
    sp.add_argument("--samples", type=int, default=16, help="calibration samples (default 16: with 256 tokens each, "
                                                            "within 7%% of the lowest KL divergence more reached in "
                                                            "the calibration-size sweep, docs/benchmarks.md "
                                                            "\"Calibration size\"; in-domain --calib text helps "
                                                            "more)")
    sp.add_argument("--seq-len", type=int, default=256, help="tokens per calibration sample (default 256)")
    sp.add_argument("--seed", type=int, default=0, help="seed for calibration sampling (default 0)")
    sp.add_argument("--option", action="append", metavar="KEY=VALUE",
                    help="a method option, repeatable; JSON values: gptq damp=0.05 act_order=false shrink=0, "
                         "smoothquant alpha=0.5 'dynamic_layers=[]', hqq axis=0. Unknown keys and values of "
                         "the wrong type are refused; `quantmatch plugins` lists each method's options")
    sp.add_argument("--format", metavar="FORMAT",
                    help="write this artifact format instead of the method's own: gguf or onnx export GPTQ/AWQ/RTN/"
                         "SmoothQuant integer weights exactly (see `quantmatch export`)")
    sp.add_argument("--allow-requantize", action="store_true",
                    help="with --format: round layers the format cannot hold exactly again on its grid")
    sp.add_argument("--force", action="store_true", help="replace an existing --out")
    sp.add_argument("--offload-dir", metavar="DIR",
                    help="carry calibration activations on disk in DIR instead of in memory (streaming methods: "
                         "gptq, awq, smoothquant, rtn)")
    resume = sp.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue the interrupted job for --out (it must exist; without the flag a matching "
                             "job is continued anyway)")
    resume.add_argument("--restart", action="store_true",
                        help="discard an interrupted job for --out and start from the first block")
    sp.add_argument("--no-stream", action="store_true",
                    help="load the whole model instead of reading it block by block (no resume)")
    sp.add_argument("--dry-run", action="store_true",
                    help="run the checks, show the layer plan and the job's peak RAM, disk and time; write nothing")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("export", cmd_export, "rewrite an artifact into another runtime's format without requantizing: GPTQ/"
                                   "AWQ/RTN int4/int8 into GGUF Q4_0/Q4_1/Q8_0 or ONNX MatMulNBits, SmoothQuant "
                                   "W8A8 into an integer ONNX graph")
    sp.add_argument("artifact", metavar="ARTIFACT", help="artifact directory written by `quantmatch quantize`")
    sp.add_argument("--to", required=True, metavar="FORMAT", help="target format: gguf or onnx")
    sp.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    sp.add_argument("--allow-requantize", action="store_true",
                    help="round layers the target cannot hold exactly (3-bit, group 16 ...) again on its grid; "
                         "the manifest records them and exact: false")
    sp.add_argument("--option", action="append", metavar="KEY=VALUE",
                    help="an exporter option, repeatable: gguf head=q8_0 (the embedding/LM head as Q8_0, as "
                         "llama.cpp's own quantizer writes it; default source: as stored, exact)")
    sp.add_argument("--force", action="store_true", help="replace an existing --out")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("eval", cmd_eval, "perplexity, fidelity to the unquantized model (KL divergence, same top token), "
                               "size and peak memory of a model or artifact")
    sp.add_argument("target", metavar="MODEL_OR_ARTIFACT", help="artifact directory, model directory, .gguf, "
                                                                 "hub id or smollm2-135m")
    sp.add_argument("--text", help="UTF-8 text file (default: bundled held-out Shakespeare)")
    sp.add_argument("--tokens", type=int, default=20000, help="tokens to score (default 20000)")
    sp.add_argument("--window", type=int, default=1024, help="window length, non-overlapping (default 1024)")
    sp.add_argument("--threads", type=int, help="threads for torch or llama.cpp (default: every core)")
    sp.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                    help="float type torch models compute in (default float32; stored weights are unchanged)")
    sp.add_argument("--reference", metavar="MODEL",
                    help="unquantized model to measure KL divergence and same-top-token rate against (default: "
                         "the model an artifact's manifest names; 'none': perplexity only)")
    sp.add_argument("--runtime", metavar="BACKEND",
                    help="backend that runs it (default: the one its format is made for: llama.cpp for .gguf; "
                         "torch gives a GGUF file's dequantized view)")
    sp.add_argument("--top-k", type=int, help="keep only the top K reference log-probabilities per position "
                                              "(default: the full distributions, through the LM head)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("compare", cmd_compare, "artifacts of one model side by side: size, KL divergence, same top token, "
                                     "speed if measured")
    sp.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="artifact directories or .gguf files")
    sp.add_argument("--reference", metavar="MODEL", help="the unquantized model (default: the one the artifacts' "
                                                         "manifests name)")
    sp.add_argument("--text", help="UTF-8 text file (default: bundled held-out Shakespeare)")
    sp.add_argument("--tokens", type=int, default=4096, help="tokens to score (default 4096)")
    sp.add_argument("--window", type=int, default=1024, help="window length, non-overlapping (default 1024)")
    sp.add_argument("--threads", type=int, help="threads for every runtime (default: every core)")
    sp.add_argument("--top-k", type=int, help="keep only the top K reference log-probabilities per position "
                                              "(default: the full distributions, through the LM head)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("bench", cmd_bench, "run combinations on this machine: perplexity, speed, memory, roofline")
    sp.add_argument("model", help="model directory, .gguf file, hub id or the bundled smollm2-135m")
    sp.add_argument("--combos", help="comma-separated method:scheme:backend (none:fp32:torch for a baseline)")
    sp.add_argument("--all-runnable", action="store_true", help="every combination the registry marks runnable here")
    sp.add_argument("--tokens", type=int, default=2048, help="perplexity tokens (default 2048: two windows)")
    sp.add_argument("--window", type=int, default=1024, help="perplexity window (default 1024)")
    sp.add_argument("--prompt", type=int, default=128, help="prefill tokens (default 128)")
    sp.add_argument("--new-tokens", type=int, default=32, help="timed decode steps (default 32)")
    sp.add_argument("--batch", type=int, default=4, help="the larger decode batch (default 4)")
    sp.add_argument("--context", type=int, help="prompt tokens the timed decodes start from (default: --prompt): "
                    "decode speed and KV-cache bytes at a long context; a -kv<fmt> scheme (gguf-q4_0-kvq8_0) runs "
                    "that KV-cache format")
    sp.add_argument("--threads", type=int, help="threads for every backend (default: physical cores)")
    sp.add_argument("--text", help="UTF-8 text file for perplexity (default: bundled held-out Shakespeare)")
    sp.add_argument("--requantize", action="store_true", help="re-create cached artifacts")
    sp.add_argument("--budget", type=float, default=240, help="seconds the perplexity pass of one combination may "
                    "take at its measured prefill speed; slower ones are skipped (default 240, 0: no limit)")
    sp.add_argument("--timeout", type=float, default=900, help="seconds before a combination's process is stopped "
                    "and recorded as failed (default 900)")
    sp.add_argument("--no-store", action="store_true", help="do not write the results store")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    _executor_args(sp)

    sp = add("sweep", cmd_sweep, "run combinations of several models across a fleet: each unit on a node of a "
                                 "device the registry says runs it (--executor ray), or here (local)")
    sp.add_argument("models", nargs="+", metavar="MODEL", help="model directories, .gguf files, hub ids or the "
                    "bundled smollm2-135m (every node must be able to resolve them)")
    sp.add_argument("--combos", help="comma-separated method:scheme:backend (none:fp32:torch for a baseline)")
    sp.add_argument("--all-runnable", action="store_true", help="every combination the registry marks runnable on "
                    "a device of the fleet")
    _measure_args(sp)
    _executor_args(sp)

    sp = add("fleet", cmd_fleet, "start, stop and list the nodes of a fleet (Ray), labelled from quantmatch detect")
    fsub = sp.add_subparsers(dest="fleet_command", metavar="ACTION")
    fp = fsub.add_parser("start", help="start a node on this machine: --head, or --address HOST:PORT to join one",
                         description="Start a node on this machine, labelled with what quantmatch detect finds "
                                     "(quantmatch/device, family, arch and one label per feature flag). A head "
                                     "listens on loopback only unless --node-ip-address says otherwise.")
    fp.add_argument("--head", action="store_true", help="start the head node of a new fleet")
    fp.add_argument("--address", help="HOST:PORT of the head to join (a worker node)")
    fp.add_argument("--port", type=int, help="the head's port (default 6379)")
    fp.add_argument("--node-ip-address", help="the address this node listens on and others reach it at "
                    "(default: 127.0.0.1 for a head, so nothing outside this machine can reach it)")
    fp.add_argument("--label", action="append", metavar="KEY=VALUE", help="add or override a label "
                    "(device=h100 sets quantmatch/device; repeatable)")
    fp.add_argument("--num-cpus", type=int, help="CPUs the node offers to units (as in ray start; one unit per CPU)")
    fp.add_argument("--executor", default="ray", help="the executor whose nodes to start (default ray)")
    fp.add_argument("--json", action="store_true", help="machine-readable output")
    fp = fsub.add_parser("stop", help="stop the nodes `quantmatch fleet start` started on this machine (by process id)")
    fp.add_argument("--pid", type=int, action="append", help="only the node with this process id (repeatable)")
    fp = fsub.add_parser("nodes", help="list the fleet's nodes with what each detected")
    fp.add_argument("--address", help="the fleet to ask (default auto: the one this machine is part of)")
    fp.add_argument("--executor", default="ray", help="the executor whose fleet to list (default ray)")
    fp.add_argument("--json", action="store_true", help="machine-readable output")
    fp = fsub.add_parser("labels", help="print the labels `fleet start` would give this machine, for a cluster "
                                        "started another way (ray start --labels, a KubeRay group's labels:)")
    fp.add_argument("--label", action="append", metavar="KEY=VALUE", help="add or override a label (repeatable)")
    fp.add_argument("--format", choices=("ray", "yaml", "json"), default="ray",
                    help="ray: KEY=VALUE,... for ray start --labels (default); yaml: a KubeRay labels: block; json")

    sp = add("calibrate-sweep", cmd_calibrate_sweep, "quantize with calibrated methods at several calibration sizes "
                                                     "and texts, and measure where more samples stop helping")
    sp.add_argument("model", help="model directory, .gguf file, hub id or the bundled smollm2-135m")
    sp.add_argument("--method", default="gptq,awq,smoothquant", help="comma-separated methods that calibrate "
                                                                     "(default gptq,awq,smoothquant)")
    sp.add_argument("--scheme", help="one scheme for every method, or METHOD=SCHEME items (default gptq=w4a16-g64, "
                                     "awq=w4a16-g64-asym, smoothquant=w8a8-int8-static)")
    sp.add_argument("--samples", default="16,32,64,128,256,512", help="calibration sample counts "
                                                                      "(default 16,32,64,128,256,512)")
    sp.add_argument("--calib", help="calibration texts: generic (the bundled Shakespeare quantize uses), in-domain "
                                    "(--text after character 200,000), a file, or LABEL=FILE (default: "
                                    "generic,in-domain with --text, else generic)")
    sp.add_argument("--text", help="UTF-8 text file to evaluate on (default: bundled held-out Shakespeare)")
    sp.add_argument("--tokens", type=int, default=4096, help="tokens to score (default 4096)")
    sp.add_argument("--window", type=int, default=1024, help="window length, non-overlapping (default 1024)")
    sp.add_argument("--seq-len", type=int, default=256, help="tokens per calibration sample (default 256)")
    sp.add_argument("--seed", type=int, default=0, help="seed for calibration sampling (default 0)")
    sp.add_argument("--out", required=True, help="directory for the artifacts and calibration-sweep.json; a "
                                                 "second run resumes from it")
    sp.add_argument("--threads", type=int, help="threads per quantization and evaluation (default: physical cores)")
    sp.add_argument("--no-resume", action="store_true", help="quantize and evaluate every point again")
    sp.add_argument("--timeout", type=float, default=7200, help="seconds before one point's process is stopped and "
                                                                "recorded as failed (default 7200)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("verify", cmd_verify, "check the registry's claimed levels on this machine with microbenchmarks")
    sp.add_argument("--method", help="only this method ('none' for the float baselines)")
    sp.add_argument("--scheme", help="only this scheme")
    sp.add_argument("--backend", help="only this backend")
    sp.add_argument("--threads", type=int, help="threads (default: physical cores)")
    sp.add_argument("--no-store", action="store_true", help="do not write the evidence to the results store")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    _executor_args(sp, sweep=False)

    sp = add("tui", cmd_tui, "explore devices, the matrix, explanations, plans and plugins in a terminal app")
    sp.add_argument("--device", default="local", help="device to explore first (default: local)")
    sp.add_argument("--compare", help="a second device for the side-by-side matrix")
    sp.add_argument("--screen", default="devices", choices=("devices", "matrix", "explain", "plan", "plugins"),
                    help="first screen (default: devices)")
    return p


def _version() -> str:
    from quantmatch import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 findings such as conformance disagreements or a run that
    failed, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    from quantmatch.sdk.errors import QuantmatchError

    try:
        return int(args.func(args))
    except InputError as e:
        return _fail(args, e, 2)
    except QuantmatchError as e:  # a run or a plugin failed: not the user's input
        return _fail(args, e, 1)
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("quantmatch: interrupted", file=sys.stderr)
        return 130


def _fail(args: argparse.Namespace, e: Exception, code: int) -> int:
    """Print ``quantmatch: error: ...`` (and, under ``--json``, the error as JSON on stdout)."""
    if getattr(args, "json", False):
        error: dict[str, Any] = {"type": type(e).__name__, "message": str(e)}
        close = getattr(e, "close", None) or getattr(e, "choices", None)
        if close:
            error["choices"] = list(close)
        if getattr(e, "fix", ""):
            error["fix"] = e.fix  # type: ignore[attr-defined]
        _emit_json({"schema": JSON_SCHEMA_VERSION, "error": error})
    print(f"quantmatch: error: {e}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
