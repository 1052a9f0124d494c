"""The ``quantmatch`` command line.

Start-up stays cheap: this module imports only the standard library at the top; each command
imports what it needs. ``--help``, ``plugins``, ``devices``, ``registry``, ``explain`` and
``conformance`` never import torch, transformers or textual.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["UsageError", "build_parser", "main"]

JSON_SCHEMA_VERSION = 1


class UsageError(Exception):
    """Bad input: printed as ``quantmatch: error: ...`` and exit code 2."""


def _emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def _registry() -> Any:
    from quantmatch.registry import Registry

    return Registry()


# ---- commands ---------------------------------------------------------------------------------
def cmd_plugins(args: argparse.Namespace) -> int:
    from quantmatch.pluginhost import get_host

    host = get_host()
    infos = list(host.plugins.values())
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "plugins": [p.to_dict() for p in infos]})
        return 0
    from . import render

    render.plugins_table(infos)
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from quantmatch.registry import detect_all

    dets = detect_all(measure_bandwidth=not args.no_measure)
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "detections": [d.to_dict() for d in dets]})
        return 0
    from . import render

    render.detections(dets)
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    reg = _registry()
    if args.device:
        dev = reg.device(args.device)
        if args.json:
            _emit_json({"schema": JSON_SCHEMA_VERSION, "device": dev.to_dict()})
            return 0
        from . import render

        render.device_detail(dev)
        return 0
    devs = reg.devices(args.family)
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "devices": [d.to_dict() for d in devs]})
        return 0
    from . import render

    render.devices_table(devs)
    return 0


def _model(path: str | None) -> Any:
    if not path:
        return None
    from quantmatch.model_info import ModelInfo

    return ModelInfo.from_path(path)


def cmd_registry(args: argparse.Namespace) -> int:
    reg = _registry()
    dev = reg.device(args.device)
    if args.level:
        from quantmatch.verdict import Level

        try:
            Level.parse(args.level)
        except ValueError:
            from quantmatch.registry import UnknownChoiceError

            raise UnknownChoiceError("level", args.level, [lv.value for lv in Level]) from None
    combos = reg.combinations(dev, method=args.method, backend=args.backend, level=args.level,
                              layer=args.layer, model=_model(args.model),
                              include_unsupported=not args.runnable)
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "device": dev.to_dict(),
                    "combinations": [v.to_dict() for v in combos]})
        return 0
    from . import render

    render.registry_table(dev, combos)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    reg = _registry()
    method = None if args.method.lower() in ("-", "none", "any") else args.method
    layers = [args.layer] if args.layer else None
    verdicts = reg.explain(method, args.scheme, args.backend, args.device, args.target,
                           _model(args.model), layers)
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "verdicts": [v.to_dict() for v in verdicts]})
        return 0
    from . import render

    render.explain(reg.device(args.device), verdicts)
    return 0


def cmd_conformance(args: argparse.Namespace) -> int:
    from pathlib import Path

    from quantmatch.registry import run_conformance

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file (give a conformance JSON such as "
                         "shared/reference/conformance_public.json)")
    try:
        report = run_conformance(path)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: not a conformance file ({type(e).__name__}: {e}); expected "
                         '{"cases": [{"weights", "activations", "layer", "device", "backend", '
                         '"target", "expected"}, ...]}') from e
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, **report.to_dict()})
    else:
        from . import render

        render.conformance(report, show_agree=args.verbose)
    return 1 if report.count("disagree") else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from quantmatch.planner import PlanInputError, plan_devices

    try:
        plans = plan_devices(args.model, args.device or ["local"], batch=args.batch, prompt=args.prompt,
                             gen=args.gen, context=args.context, tolerance=args.tolerance,
                             memory_budget=args.memory_budget, prefer=args.prefer)
    except PlanInputError as e:
        raise UsageError(str(e)) from e
    if args.json:
        _emit_json({"schema": JSON_SCHEMA_VERSION, "plans": [p.to_dict() for p in plans]})
        return 0
    from quantmatch.planner.render import print_comparison, print_plan

    for i, p in enumerate(plans):
        if i:
            print()
        print_plan(p, top=args.top, show_all=args.all)
    if len(plans) > 1:
        print()
        print_comparison(plans)
    return 0


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

    sp = add("devices", cmd_devices, "list catalog devices, or show one device with its sources")
    sp.add_argument("device", nargs="?", help="a device id or alias (e.g. h100) to show in detail")
    sp.add_argument("--family", help="nvidia, amd-rocm, apple-metal, x86-cpu, arm-cpu")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("registry", cmd_registry, "what runs on a device, at which level, and what is pruned")
    sp.add_argument("--device", default="local", help="device id, alias or 'local' (default: local)")
    sp.add_argument("--method", help="only this quantization method")
    sp.add_argument("--backend", help="only this backend")
    sp.add_argument("--level", help="only this level: native, weight-only, emulated, unsupported")
    sp.add_argument("--layer", default="linear", help="linear (default), moe or kv-cache")
    sp.add_argument("--model", help="a model directory or config.json for shape-aware pruning")
    sp.add_argument("--runnable", action="store_true", help="hide unsupported (pruned) combinations")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("explain", cmd_explain, "why one combination gets its verdict, with reasons and sources")
    sp.add_argument("method", help="quantization method, or '-' for the number formats alone")
    sp.add_argument("scheme", help="scheme, e.g. w4a16-g128-asym, w8a8-fp8, gguf-q4_k_m")
    sp.add_argument("backend", help="backend, e.g. vllm, llama.cpp, hardware")
    sp.add_argument("device", help="device id, alias or 'local'")
    sp.add_argument("--target", help="execution target: cuda, rocm, metal (mps), vulkan, cpu")
    sp.add_argument("--layer", help="only this layer type: linear, moe, kv-cache")
    sp.add_argument("--model", help="a model directory or config.json for shape-aware checks")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("conformance", cmd_conformance, "check the registry against a file of expected verdicts")
    sp.add_argument("file", help="conformance JSON (format 'quantmatch conformance cases v1')")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("-v", "--verbose", action="store_true", help="also list the agreeing cases")

    sp = add("plan", cmd_plan, "recommend precision, method and runtime for a model, device and workload")
    sp.add_argument("model", help="built-in shape (llama-3.1-8b, smollm2-135m ...), model directory, "
                                  "config.json or .gguf file")
    sp.add_argument("--device", action="append", help="device id, alias or 'local' (repeat to compare; "
                                                      "default: local)")
    sp.add_argument("--batch", type=int, default=1, help="concurrent sequences (default 1)")
    sp.add_argument("--prompt", type=int, default=512, help="prompt tokens per sequence (default 512)")
    sp.add_argument("--gen", type=int, default=256, help="generated tokens per sequence (default 256)")
    sp.add_argument("--context", type=int, help="KV-cache length per sequence (default prompt + gen)")
    sp.add_argument("--tolerance", default="chat",
                    help="quality tolerance: chat (3%%), code (1%%), reasoning (0.5%%) or a percentage")
    sp.add_argument("--memory-budget", help="memory budget in GiB (default: the device's memory)")
    sp.add_argument("--prefer", default="fastest", help="fastest (default), smallest or most-accurate")
    sp.add_argument("--top", type=int, default=10, help="plans to show (default 10)")
    sp.add_argument("--all", action="store_true", help="show every plan and every rejection")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _version() -> str:
    from quantmatch import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 findings such as conformance disagreements, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    from quantmatch.model_info import ModelInfoError
    from quantmatch.registry import UnknownChoiceError
    from quantmatch.scheme import SchemeError

    try:
        return int(args.func(args))
    except (UsageError, UnknownChoiceError, SchemeError, ModelInfoError) as e:
        print(f"quantmatch: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("quantmatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
