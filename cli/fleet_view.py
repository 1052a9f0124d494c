"""``quantmatch sweep``, ``fleet start|stop|nodes`` and the ``--executor`` paths of ``bench`` and ``verify``:
the commands, the live view and the summary tables."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from quantmatch.sdk.errors import InputError

__all__ = ["cmd_fleet_labels", "cmd_fleet_nodes", "cmd_fleet_start", "cmd_fleet_stop", "cmd_sweep", "make_executor",
           "verify_on_fleet"]


def _state_dir() -> Path:
    from quantmatch.sdk.models import cache_root

    return cache_root() / "fleet"


def _local_labels(overrides: dict[str, str] | None = None) -> dict[str, str]:
    from quantmatch.measure.fleet import NODE_LABEL
    from quantmatch.registry import Registry
    from quantmatch.sdk.executor import DEVICE_LABEL, node_labels

    reg = Registry()
    labels = node_labels(reg.local(), {DEVICE_LABEL: reg.device_label(reg.local()), **(overrides or {})})
    labels.setdefault(NODE_LABEL, socket.gethostname().split(".")[0][:63] or "node")
    return labels


def make_executor(name: str, address: str | None) -> Any:
    """The executor ``--executor NAME`` names, ready to connect (its module imported, its engine not yet)."""
    from quantmatch.sdk.pluginhost import get_host

    cls = get_host().executor_class(name)
    if not cls.remote and address:
        raise InputError(f"--address is for an executor that joins a fleet; --executor {cls.name} runs here")
    ex = cls(address=address, labels=_local_labels() if not cls.remote else None)  # type: ignore[call-arg]
    ex.check()
    return ex


# ---- the live view -----------------------------------------------------------------------------------------
def _progress_table(p: Any) -> Table:
    t = Table(title=f"{p.finished}/{p.total} units finished", title_justify="left", box=None)
    for col in ("node", "done", "running", "failed"):
        t.add_column(col, justify="left" if col == "node" else "right")
    for name, counts in sorted(p.nodes.items()):
        t.add_row(name, str(counts["done"]), str(counts["running"]), str(counts["failed"]))
    t.add_row("(waiting for a node)", "", str(p.queued), "", style="dim")
    if p.unverified or p.stored:
        t.add_row(f"unverified {p.unverified}, already stored {p.stored}", "", "", "", style="dim")
    return t


class _LiveView:
    """A live table on stderr while a sweep runs (nothing when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.console = Console(stderr=True, markup=False)
        self.live: Live | None = None

    def __enter__(self) -> Callable[[Any], None]:
        if self.console.is_terminal:
            self.live = Live(console=self.console, transient=True, refresh_per_second=4)
            self.live.__enter__()
        return self.update

    def update(self, p: Any) -> None:
        if self.live is not None:
            self.live.update(_progress_table(p))

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)


# ---- sweep ---------------------------------------------------------------------------------------------------
def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from quantmatch.sdk.runner import MeasureConfig

    config = MeasureConfig(tokens=args.tokens, window=args.window, prompt=args.prompt, new_tokens=args.new_tokens,
                           batch=args.batch, context=args.context)
    return {"config": config.to_dict(), "threads": args.threads, "timeout": args.timeout,
            "budget": args.budget or None, "text": args.text, "requantize": bool(args.requantize)}


def cmd_sweep(args: argparse.Namespace, models: Sequence[str] | None = None) -> int:
    """``quantmatch sweep MODEL... --combos ...|--all-runnable [--executor E]`` (and ``bench --executor E``)."""
    from quantmatch.measure.bench import parse_combos
    from quantmatch.measure.fleet import run_sweep

    if not args.combos and not args.all_runnable:
        raise InputError("say what to run: --combos method:scheme:backend,... or --all-runnable")
    combos = [c.key for c in parse_combos(args.combos or "")]
    ex = make_executor(args.executor, args.address)
    with _LiveView() as tick:
        report = run_sweep(list(models or args.models), combos, ex, all_runnable=args.all_runnable,
                           devices=args.device or None, settings=_settings(args),
                           artifact_store=args.artifact_store, rerun=args.rerun, save=not args.no_store,
                           progress=tick)
    if args.json:
        from quantmatch.cli.main import JSON_SCHEMA_VERSION, _emit_json

        _emit_json({"schema": JSON_SCHEMA_VERSION, "sweep": report.to_dict()})
    else:
        sweep_table(report, Console(highlight=False, markup=False))
    return report.exit_code


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def sweep_table(report: Any, c: Console) -> None:
    """The summary: one row per unit with the node that ran it, its figures and ratios to the baseline; the
    reasons of units that did not run below it."""
    from quantmatch.measure.bench import model_key

    several = len(report.models) > 1
    t = Table(title=f"sweep of {', '.join(model_key(m) for m in report.models)} on {report.executor}"
                    + (f" at {report.address}" if report.address and report.executor != "local" else "")
                    + f": {len(report.nodes)} node(s)", title_justify="left")
    cols = (["model"] if several else []) + ["combination", "device", "node", "status", "decode tok/s", "x base",
                                             "ppl", "KLD", "s", "note"]
    for col in cols:
        t.add_column(col, overflow="fold")
    order = {"ok": 0, "stored": 1, "skipped": 2, "failed": 3, "lost": 4, "unverified": 5, "cancelled": 6}
    notes: list[str] = []
    for r in sorted(report.rows, key=lambda r: (r.model, order.get(r.status, 9), r.combo, r.device)):
        run = (r.result or {}).get("run") or {}
        fid = run.get("fidelity") or {}
        note = ""
        if r.status in ("ok", "stored"):
            note = "stored before" if r.status == "stored" else (
                f"artifact from {r.artifact_from}" if r.artifact_from else "quantized here" if r.made_here else "")
            if "retried" in r.reason:
                note = (note + "; " if note else "") + r.reason
        elif r.reason:
            notes.append(f"{r.combo}" + (f" on {r.device}" if r.device and r.device != "-" else "")
                         + f": {r.status}: {r.reason}" + (f" ({r.install})" if r.install else ""))
            note = f"see note {len(notes)}"
        row = [model_key(r.model)] if several else []
        row += [r.combo, r.device, r.node or "-", r.status, _f(run.get("decode_tps"), ".1f"),
                _f(r.ratios.get("decode_tps"), ".2f"), _f(run.get("perplexity"), ".3f"), _f(fid.get("kld_mean"), ".4f"),
                _f(r.seconds or None, ".0f"), note]
        t.add_row(*row)
    c.print(t)
    for i, n in enumerate(notes, start=1):
        c.print(f"{i}. {n}")
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("ok", "stored", "skipped", "failed", "lost", "unverified",
                                                           "cancelled") if report.count(s))
    c.print(f"{counts or 'nothing to run'} in {report.seconds:.0f} s; results in {report.store}")
    if report.interrupted:
        c.print("interrupted: run the same command again to continue (finished units are kept and skipped)")


# ---- verify --------------------------------------------------------------------------------------------------
def verify_on_fleet(args: argparse.Namespace) -> int:
    from quantmatch.measure.fleet import verify_fleet

    ex = make_executor(args.executor, args.address)
    with Console(stderr=True, markup=False).status("every node is running its microbenchmarks"):
        report = verify_fleet(ex, threads=args.threads, only=(args.method, args.scheme, args.backend),
                              save=not args.no_store)
    if args.json:
        from quantmatch.cli.main import JSON_SCHEMA_VERSION, _emit_json

        _emit_json({"schema": JSON_SCHEMA_VERSION, "verify": report.to_dict()})
        return report.exit_code
    c = Console(highlight=False, markup=False)
    t = Table(title=f"verify on {report.executor}: {len(report.nodes)} node(s)", title_justify="left")
    for col in ("node", "device", "agrees", "drift", "unchecked", "failed", "note"):
        t.add_column(col)
    for n in report.nodes:
        s = (n.get("report") or {}).get("summary", {})
        t.add_row(n["node"], n.get("device", ""), *(str(s.get(k, "-")) for k in ("agrees", "drift", "unchecked",
                                                                                  "failed")), n.get("error", ""))
    c.print(t)
    for d in report.disagreements:
        c.print(f"nodes of {d['device']} disagree on {d['combo']}: "
                + "; ".join(f"{k} observed {v}" for k, v in d["observed"].items()))
    c.print(f"evidence stored in {report.store or '(not stored)'}; `quantmatch explain` shows it per device "
            "with the node and date")
    return report.exit_code


# ---- fleet start | stop | nodes --------------------------------------------------------------------------------
def cmd_fleet_start(args: argparse.Namespace) -> int:
    from quantmatch.sdk.executor import parse_labels
    from quantmatch.sdk.pluginhost import get_host

    cls = get_host().executor_class(args.executor)
    labels = _local_labels(parse_labels(args.label or []))
    node = cls.start_node(head=args.head, address=args.address, port=args.port, labels=labels,
                          num_cpus=args.num_cpus, state_dir=str(_state_dir() / "logs"),
                          **({"node_ip": args.node_ip_address} if args.node_ip_address else {}))
    nodes = _state_dir() / "nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    tmp = nodes / f".{node.pid}.json.tmp"
    tmp.write_text(json.dumps(node.to_dict(), indent=2), encoding="utf-8")
    tmp.rename(nodes / f"{node.pid}.json")
    if args.json:
        from quantmatch.cli.main import JSON_SCHEMA_VERSION, _emit_json

        _emit_json({"schema": JSON_SCHEMA_VERSION, "node": node.to_dict()})
        return 0
    kind = "head" if node.head else "worker"
    print(f"started a {cls.name} {kind} node (process {node.pid}) at {node.address}, labelled "
          + ", ".join(f"{k}={v}" for k, v in labels.items() if v != "1"))
    if node.head:
        print(f"join it from another node: quantmatch fleet start --address {node.address}\n"
              f"run a sweep on it:        quantmatch sweep MODEL --combos ... --executor {cls.name} "
              f"--address {node.address}\nstop it:                  quantmatch fleet stop")
    print(f"log: {node.log}")
    if node.note:
        print(node.note)
    return 0


def cmd_fleet_labels(args: argparse.Namespace) -> int:
    """The labels ``fleet start`` would give this machine, for a cluster started otherwise (KubeRay, ``ray start``)."""
    from quantmatch.sdk.executor import parse_labels

    labels = _local_labels(parse_labels(args.label or []))
    if args.format == "yaml":
        print("labels:")
        for k, v in labels.items():
            print(f'  {k}: "{v}"')
    elif args.format == "json":
        print(json.dumps(labels, indent=2))
    else:
        print(",".join(f"{k}={v}" for k, v in labels.items()))
    return 0


def _started_here() -> list[tuple[Path, Any]]:
    from quantmatch.sdk.executor import NodeProcess

    out = []
    for f in sorted((_state_dir() / "nodes").glob("*.json")):
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
            out.append((f, NodeProcess(d["executor"], int(d["pid"]), d["address"], bool(d["head"]),
                                       d.get("labels", {}), d.get("log", ""))))
        except (OSError, ValueError, KeyError):
            continue
    return out


def cmd_fleet_stop(args: argparse.Namespace) -> int:
    from quantmatch.sdk.artifact import pid_alive
    from quantmatch.sdk.pluginhost import get_host

    found = _started_here()
    if args.pid:
        found = [(f, n) for f, n in found if n.pid in args.pid]
    if not found:
        print("no node started by `quantmatch fleet start` is running on this machine")
        return 0
    # workers first, so that the head is not gone while they leave
    for f, node in sorted(found, key=lambda fn: fn[1].head):
        if pid_alive(node.pid):
            print(get_host().executor_class(node.executor).stop_node(node))
        else:
            print(f"node process {node.pid} had already exited")
        f.unlink(missing_ok=True)
    return 0


def cmd_fleet_nodes(args: argparse.Namespace) -> int:
    from quantmatch.measure.fleet import node_name

    ex = make_executor(args.executor, args.address)
    ex.connect()
    try:
        nodes = ex.nodes()
    finally:
        ex.close()
    if args.json:
        from quantmatch.cli.main import JSON_SCHEMA_VERSION, _emit_json

        _emit_json({"schema": JSON_SCHEMA_VERSION, "nodes": [n.to_dict() | {"shown": node_name(n)} for n in nodes]})
        return 0
    from quantmatch.sdk.executor import ARCH_LABEL, FAMILY_LABEL

    t = Table(title=f"{len(nodes)} node(s) on {ex.name}" + (f" at {ex.address}" if ex.remote else ""),
              title_justify="left")
    for col in ("node", "id", "address", "state", "device", "family", "arch", "CPUs", "features"):
        t.add_column(col, overflow="fold")
    for n in sorted(nodes, key=lambda n: (not n.head, node_name(n))):
        flags = sorted(k.split("/", 1)[1] for k, v in n.labels.items() if k.startswith("quantmatch/") and v == "1")
        t.add_row(node_name(n) + (" (head)" if n.head else ""), n.id[:12], n.address,
                  "alive" if n.alive else "dead", n.device or "-", n.labels.get(FAMILY_LABEL, "-"),
                  n.labels.get(ARCH_LABEL, "-"), f"{n.cpus:g}", ", ".join(flags[:6])
                  + (f" +{len(flags) - 6} (--json lists them)" if len(flags) > 6 else ""))
    Console(highlight=False, markup=False).print(t)
    return 0
