"""Sweeps on the ``local`` executor against a Ray fleet on this machine: wall time, node time, overhead per unit.

Run: ``.venv/bin/python benchmarks/bench_fleet.py [--rounds 2] [--combos ...] [--trivial 8,32] [--keep]``
(prints a table, writes ``benchmarks/results/fleet.json``).

Everything happens in one run, side by side, so that the ratios hold on a shared, noisy machine:

1. a tiny random Llama (``quantmatch.testing.models.write_tiny_model``) in a temporary directory, with a
   temporary ``QUANTMATCH_CACHE_DIR``, ``QUANTMATCH_RESULTS_DB`` and ``RAY_AUTH_TOKEN_PATH`` set before anything
   starts (the Ray nodes inherit them: every node shares this machine's artifact cache, and the head writes the
   fleet's token there, not in ``~/.ray``);
2. a warm-up sweep on the ``local`` executor (not in the table: it quantizes every artifact and computes the
   fp32 reference once), so that every timed sweep measures warm caches;
3. a Ray head with ``--num-cpus 0`` (it runs no unit) and two workers with ``--num-cpus 1`` (``--label node=w1``,
   ``w2``; the device label from detection), started with ``quantmatch fleet start`` on a free loopback port;
4. ``--rounds`` rounds of the same sweep (8 units: ``none:fp32:torch`` and ``--combos``; ``rerun=True``, nothing
   stored) on ``local`` and on ``ray``, alternating ABBA (local, ray, ray, local, ...) so that a drift in the
   machine's load falls on both; the summary takes the median per executor;
5. the scheduling overhead alone: trivial units (a module-level function that returns at once) through
   ``RayExecutor`` and ``LocalExecutor``: a cold batch (the first after connecting: on Ray it starts the worker
   processes), one at a time (the round trip of one unit), then batches of ``--trivial`` units;
6. ``quantmatch fleet stop`` (same environment: only the nodes this run started, by process id) in a ``finally``.

Columns: wall s (the sweep's own figure: connect, detection on each node, planning and the units); sum of the
units' seconds on their nodes; wall ratio local / ray; overhead per unit = (wall x slots - sum of unit seconds) /
units, slots being 1 for ``local`` and the workers' CPUs for Ray (for trivial units: wall / units, or the mean
round trip when one at a time); mean submit-to-outcome latency; the machine's CPU busy fraction during the sweep
(all processes, from /proc/stat); the nodes that ran the units.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("results") / "fleet.json"
COMBOS = ("rtn:w8a16:torch,rtn:w4a16-g64:torch,rtn:w4a16-g32:torch,rtn:w8a8-int8:torch,none:bf16:torch,"
          "rtn:w8a16:onnxruntime,rtn:w8a8-int8:onnxruntime")
AVOID = {6379, *range(26400, 26501)}  # Ray's default port, and the ports the test suite uses
DETECTION = "-:-:-"  # the combination of a row that reports a node's failed detection, not a unit


def trivial_unit(payload: dict[str, Any]) -> dict[str, Any]:
    """A unit that does nothing: what is left of its round trip is the executor's scheduling overhead."""
    return {"i": payload.get("i"), "pid": os.getpid()}


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (0, 0 where there is none)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def busy_since(start: tuple[int, int]) -> float | None:
    """The fraction of the machine's CPU time (all cores) that was busy since ``start`` (any process)."""
    busy, total = cpu_ticks()
    return (busy - start[0]) / (total - start[1]) if total > start[1] else None


def free_port() -> int:
    """A free loopback TCP port (bound to port 0), away from Ray's default and the tests' range."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in AVOID:
            return port


def quantmatch_cli() -> list[str]:
    exe = Path(sys.executable).with_name("quantmatch")
    return [str(exe)] if exe.is_file() else [shutil.which("quantmatch") or "quantmatch"]


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``quantmatch ARGS`` with this process's environment (the temporary cache and results store)."""
    return subprocess.run([*quantmatch_cli(), *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ), check=False)


def start_fleet(port: int) -> tuple[list[dict[str, Any]], float]:
    """A head that runs nothing and two one-CPU workers; the started nodes and the seconds it took."""
    t0 = time.perf_counter()
    addr = f"127.0.0.1:{port}"
    started = []
    for args in (["--head", "--port", str(port), "--num-cpus", "0", "--label", "node=head"],
                 ["--address", addr, "--num-cpus", "1", "--label", "node=w1"],
                 ["--address", addr, "--num-cpus", "1", "--label", "node=w2"]):
        proc = cli("fleet", "start", *args, "--json")
        if proc.returncode != 0:
            raise RuntimeError(f"quantmatch fleet start {' '.join(args)} failed (exit {proc.returncode}):\n"
                               f"{proc.stdout}\n{proc.stderr}")
        started.append(json.loads(proc.stdout)["node"])
    return started, time.perf_counter() - t0


def stop_fleet() -> str:
    proc = cli("fleet", "stop", timeout=120)
    return (proc.stdout + proc.stderr).strip()


# ---- sweeps --------------------------------------------------------------------------------------------------
def sweep(model: str, combos: list[str], executor: str, address: str | None, settings: dict[str, Any]
          ) -> dict[str, Any]:
    """One sweep (``rerun=True``, nothing stored) and its figures; every row that is not ``ok`` with its reason."""
    from quantmatch.cli.fleet_view import make_executor
    from quantmatch.measure.fleet import run_sweep

    ex = make_executor(executor, address)
    slots = 1
    load = os.getloadavg()[0]
    ticks = cpu_ticks()
    t0 = time.perf_counter()
    report = run_sweep([model], combos, ex, settings=settings, rerun=True, save=False)
    wall = time.perf_counter() - t0
    busy = busy_since(ticks)
    if executor != "local":
        slots = int(sum(n["cpus"] for n in report.nodes if n.get("alive")))
    units = [r for r in report.rows if r.combo != DETECTION]
    ok = [r for r in units if r.status == "ok"]
    unit_s = sum(r.seconds for r in ok)
    problems = [{"combo": r.combo, "node": r.node, "status": r.status, "reason": r.reason} for r in report.rows
                if r.status != "ok"]
    return {
        "executor": executor, "address": address or "", "units": len(units), "ok": len(ok), "slots": slots,
        "wall_s": report.seconds, "wall_outside_s": wall, "unit_seconds_sum": unit_s,
        "overhead_per_unit_s": (report.seconds * slots - unit_s) / len(ok) if ok else None,
        "machine_cpu_busy": busy, "loadavg_1min_before": load,
        "latency_mean_s": statistics.fmean(r.latency for r in ok) if ok else None,
        "nodes": dict(Counter(r.node for r in ok)),
        "nodes_in_fleet": [{"shown": n.get("shown"), "cpus": n["cpus"], "head": n["head"], "device": n["device"]}
                           for n in report.nodes],
        "per_unit": [{"combo": r.combo, "status": r.status, "node": r.node, "seconds": r.seconds,
                      "latency": r.latency, "artifact_from": r.artifact_from, "made_here": r.made_here,
                      "reason": r.reason} for r in units],
        "problems": problems,
    }


# ---- scheduling overhead -------------------------------------------------------------------------------------
def _drain(ex: Any, sent: dict[Any, float]) -> tuple[list[float], list[str], list[str]]:
    """Wait for every handle: latencies (submit to outcome), the nodes that ran them, the errors."""
    lat, nodes, errors = [], [], []
    todo = list(sent)
    end = time.monotonic() + 300
    while todo and time.monotonic() < end:
        for h in ex.wait(todo, 1.0):
            oc = ex.outcome(h)
            lat.append(time.perf_counter() - sent[h])
            nodes.append(oc.node)
            if not oc.ok:
                errors.append(oc.error or "lost")
            todo.remove(h)
    if todo:
        ex.cancel(todo)
        errors += ["no answer in 300 s"] * len(todo)
    return lat, nodes, errors


def overhead(executor: str, address: str | None, batches: list[int]) -> list[dict[str, Any]]:
    """Trivial units through an executor: one at a time, then in batches (the first batch after connecting is
    the cold one: on Ray it pays for starting the worker processes)."""
    from quantmatch.cli.fleet_view import make_executor
    from quantmatch.measure.fleet import node_name

    ex = make_executor(executor, address)
    ex.connect()
    try:
        names = {n.id: node_name(n) for n in ex.nodes()}
        out = []
        plan = [("cold batch", batches[0]), ("one at a time", batches[0])] + [("batch", n) for n in batches]
        for kind, n in plan:
            lat: list[float] = []
            nodes: list[str] = []
            errors: list[str] = []
            t0 = time.perf_counter()
            if kind == "one at a time":
                for i in range(n):
                    got = _drain(ex, {ex.submit(trivial_unit, {"i": i}, None, f"trivial-{i}"): time.perf_counter()})
                    lat += got[0]
                    nodes += got[1]
                    errors += got[2]
            else:
                sent = {ex.submit(trivial_unit, {"i": i}, None, f"trivial-{i}"): time.perf_counter()
                        for i in range(n)}
                lat, nodes, errors = _drain(ex, sent)
            wall = time.perf_counter() - t0
            out.append({"executor": executor, "kind": kind, "units": n, "wall_s": wall,
                        "per_unit_s": wall / n, "latency_mean_s": statistics.fmean(lat) if lat else None,
                        "latency_max_s": max(lat) if lat else None,
                        "nodes": dict(Counter(names.get(x, x[:12]) for x in nodes)), "errors": errors})
        return out
    finally:
        ex.close()


# ---- report --------------------------------------------------------------------------------------------------
def _nodes(counts: dict[str, int]) -> str:
    return ", ".join(f"{k or '?'}x{v}" for k, v in sorted(counts.items())) or "-"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _sweep_row(what: str, s: dict[str, Any], ratio: float | None) -> None:
    r = "-" if ratio is None else f"{ratio:.2f}"
    ovh = "-" if s["overhead_per_unit_s"] is None else f"{s['overhead_per_unit_s']:.2f}"
    lat = "-" if s["latency_mean_s"] is None else f"{s['latency_mean_s']:.2f}"
    print(f"{what:<30} {s['ok']:>2}/{s['units']:<2} {s['wall_s']:>8.2f} {s['unit_seconds_sum']:>10.2f} {r:>9} "
          f"{ovh:>10} {lat:>10} {_pct(s.get('machine_cpu_busy')):>8}  {_nodes(s['nodes'])}")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per executor over the rounds, and the local / ray wall ratio of each round and of the medians."""
    out: dict[str, Any] = {}
    for name in ("local", "ray"):
        mine = [r for r in runs if r["executor"] == name]
        if not mine:
            continue
        out[name] = {k: statistics.median(r[k] for r in mine) for k in
                     ("wall_s", "unit_seconds_sum", "overhead_per_unit_s", "latency_mean_s", "machine_cpu_busy")
                     if all(r[k] is not None for r in mine)}
        out[name].update(rounds=len(mine), slots=mine[0]["slots"], units=mine[0]["units"],
                         ok=min(r["ok"] for r in mine), nodes=dict(sum((Counter(r["nodes"]) for r in mine),
                                                                     Counter())))
    rounds = sorted({r["round"] for r in runs})
    pairs = []
    for k in rounds:
        got = {r["executor"]: r for r in runs if r["round"] == k}
        if "local" in got and "ray" in got and got["ray"]["wall_s"]:
            pairs.append(got["local"]["wall_s"] / got["ray"]["wall_s"])
    out["ratio_per_round"] = pairs
    if "local" in out and "ray" in out:
        out["ratio_of_medians"] = out["local"]["wall_s"] / out["ray"]["wall_s"]
    return out


def table(runs: list[dict[str, Any]], summary: dict[str, Any], trivial: list[dict[str, Any]]) -> None:
    head = (f"{'what':<30} {'units':>5} {'wall s':>8} {'sum unit s':>10} {'local/ray':>9} {'ovh/unit s':>10} "
            f"{'mean lat s':>10} {'CPU busy':>8}  nodes used")
    print(head)
    print("-" * len(head))
    for s in runs:
        pair = [r for r in runs if r["round"] == s["round"] and r["executor"] == "local"]
        ratio = pair[0]["wall_s"] / s["wall_s"] if s["executor"] == "ray" and pair and s["wall_s"] else None
        _sweep_row(f"sweep {s['executor']}, round {s['round']}", s, ratio)
    for name in ("local", "ray"):
        if name in summary:
            m = summary[name]
            slots = f"{m['slots']} slot" + ("s" if m["slots"] > 1 else "")
            _sweep_row(f"sweep {name} ({slots}), median", {**m, "overhead_per_unit_s": m.get("overhead_per_unit_s"),
                                                           "latency_mean_s": m.get("latency_mean_s")},
                       summary.get("ratio_of_medians") if name == "ray" else None)
    for t in trivial:
        lat = "-" if t["latency_mean_s"] is None else f"{t['latency_mean_s']:.3f}"
        per = t["latency_mean_s"] if t["kind"] == "one at a time" else t["per_unit_s"]
        ovh = "-" if per is None else f"{per:.3f}"
        print(f"{'trivial ' + t['executor'] + ', ' + t['kind']:<30} {t['units']:>5} {t['wall_s']:>8.2f} "
              f"{'-':>10} {'-':>9} {ovh:>10} {lat:>10} {'-':>8}  {_nodes(t['nodes'])}")
    for s in runs:
        for p in s["problems"]:
            print(f"note: {s['executor']} sweep, round {s['round']}: {p['combo']} on {p['node'] or '?'}: "
                  f"{p['status']}: {p['reason']}")
    for t in trivial:
        for e in sorted(set(t["errors"])):
            print(f"note: trivial {t['executor']} {t['kind']}: {t['errors'].count(e)} failed: {e}")


def idle_busy(seconds: float) -> float | None:
    """The machine's CPU busy fraction over ``seconds`` while this process sleeps (the fleet idle, say)."""
    ticks = cpu_ticks()
    time.sleep(seconds)
    return busy_since(ticks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--combos", default=COMBOS, help="combinations besides none:fp32:torch (default: 7 that run "
                                                     "on a CPU with torch and onnxruntime)")
    ap.add_argument("--rounds", type=int, default=2, help="timed sweeps per executor, alternating local and ray "
                                                          "(ABBA: local, ray, ray, local, ...); default 2")
    ap.add_argument("--trivial", default="8,32", help="batch sizes of trivial units (default 8,32)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up sweep (the first timed sweep then "
                                                             "pays for quantizing)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (model, cache, logs)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"where the JSON goes (default {OUT})")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="quantmatch-bench-fleet-"))
    os.environ["QUANTMATCH_CACHE_DIR"] = str(tmp / "cache")
    os.environ["QUANTMATCH_RESULTS_DB"] = str(tmp / "results.sqlite")
    if not os.environ.get("RAY_AUTH_TOKEN"):  # the head writes this fleet's own token there, not in ~/.ray
        os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(tmp / "ray_auth_token"))
    from quantmatch.sdk.runner import MeasureConfig
    from quantmatch.testing.models import write_tiny_model

    model = tmp / "tiny-llama"
    write_tiny_model(model, "llama")
    combos = [c.strip() for c in args.combos.split(",") if c.strip()]
    batches = [int(n) for n in args.trivial.split(",") if n.strip()]
    config = MeasureConfig(tokens=args.tokens, window=args.window, prompt=args.prompt, new_tokens=args.new_tokens,
                           batch=args.batch)
    settings = {"config": config.to_dict(), "threads": args.threads, "timeout": 900.0, "budget": None,
                "text": None, "requantize": False}
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    trivial: list[dict[str, Any]] = []
    fleet: dict[str, Any] = {}
    warm: dict[str, Any] | None = None
    try:
        if not args.no_warmup:
            print("warm-up sweep on local (quantizes every artifact, computes the fp32 reference) ...", flush=True)
            warm = sweep(str(model), combos, "local", None, settings)
            print(f"  {warm['ok']}/{warm['units']} ok in {warm['wall_s']:.1f} s", flush=True)
        fleet["idle_cpu_busy_before"] = idle_busy(5.0)
        port = free_port()
        print(f"starting a Ray head (--num-cpus 0) and two workers (--num-cpus 1) on 127.0.0.1:{port} ...",
              flush=True)
        nodes, start_s = start_fleet(port)
        fleet.update(port=port, start_s=start_s, nodes=nodes)
        address = f"127.0.0.1:{port}"
        fleet["idle_cpu_busy_fleet_up"] = idle_busy(5.0)
        print(f"  started in {start_s:.1f} s; machine CPU busy {_pct(fleet['idle_cpu_busy_before'])} before, "
              f"{_pct(fleet['idle_cpu_busy_fleet_up'])} with the fleet idle", flush=True)
        for k in range(1, args.rounds + 1):
            for name in ("local", "ray") if k % 2 else ("ray", "local"):
                print(f"round {k}: sweep on {name} ...", flush=True)
                run = sweep(str(model), combos, name, address if name == "ray" else None, settings)
                runs.append({"round": k, **run})
                print(f"  {run['ok']}/{run['units']} ok in {run['wall_s']:.1f} s", flush=True)
        print("trivial units on ray ...", flush=True)
        trivial += overhead("ray", address, batches)
        print("trivial units on local ...", flush=True)
        trivial += overhead("local", None, batches)
    finally:
        if fleet.get("nodes") or any(Path(os.environ["QUANTMATCH_CACHE_DIR"], "fleet", "nodes").glob("*.json")):
            t0 = time.perf_counter()
            print("stopping the Ray nodes (quantmatch fleet stop) ...", flush=True)
            print("  " + stop_fleet().replace("\n", "\n  "), flush=True)
            fleet["stop_s"] = time.perf_counter() - t0
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    summary = summarize(runs)
    print()
    table(runs, summary, trivial)
    import ray

    caches = ("warm: a local warm-up sweep made every artifact and the fp32 reference first; every timed sweep "
              "reuses them from the shared QUANTMATCH_CACHE_DIR" if warm else
              "the first timed sweep (local) is cold (it quantizes), the others warm")
    print(f"\ncaches: {caches}")
    print("the fleet stays up during the local sweeps (its idle daemons are part of the noise: "
          f"{_pct(fleet.get('idle_cpu_busy_fleet_up'))} busy idle vs {_pct(fleet.get('idle_cpu_busy_before'))} "
          "without it)")
    ratio = summary.get("ratio_of_medians")
    per_round = ", ".join(f"{x:.2f}" for x in summary["ratio_per_round"])
    print(f"wall ratio local / ray: {ratio:.2f} (median walls; per round {per_round}); 2 one-CPU Ray workers on a "
          f"{os.cpu_count()}-core machine")
    data = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "ray": ray.__version__},
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join([".venv/bin/python", "benchmarks/bench_fleet.py", *(argv or sys.argv[1:])]),
        "settings": settings, "combos": ["none:fp32:torch", *combos], "caches": caches,
        "fleet": fleet, "warmup": warm, "sweeps": runs, "summary": summary, "wall_ratio_local_over_ray": ratio,
        "trivial": trivial, "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
