"""Start-up and enumeration speed of the registry.

Run: ``.venv/bin/python benchmarks/bench_startup.py [--compare OTHER/bin/quantmatch]`` (prints a
table, writes ``benchmarks/results/startup.json``). Wall times of fresh processes, medians of several
runs, so that the figures are what a user waits for; the in-process figure judges every combination on
every catalog device with a fresh registry (plugins already loaded). Python's bytecode cache is on (as
in a user's install: ``PYTHONDONTWRITEBYTECODE`` is dropped for the measured processes, and the warm-up
run writes the cache). ``--compare`` times another install's ``quantmatch`` (an older commit, say)
interleaved with this one, so both see the same load, and reports the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 9
OUT = Path(__file__).with_name("results") / "startup.json"


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(*cmds: list[str], runs: int = RUNS) -> list[list[float]]:
    """Wall times of each command, the commands interleaved run by run."""
    for cmd in cmds:
        subprocess.run(cmd, capture_output=True, check=True, env=ENV)  # warm the file and bytecode caches once
    times: list[list[float]] = [[] for _ in cmds]
    for _ in range(runs):
        for i, cmd in enumerate(cmds):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True, env=ENV)
            times[i].append(time.perf_counter() - t0)
    return times


def enumerate_all(runs: int = RUNS) -> tuple[list[float], int]:
    from quantmatch.registry import Registry
    from quantmatch.sdk.pluginhost import get_host

    host = get_host()
    times, count = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        count = Registry(host).enumerate_all()
        times.append(time.perf_counter() - t0)
    return times, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", help="another install's quantmatch executable, timed beside this one")
    ap.add_argument("--out", type=Path, default=OUT, help=f"where the JSON goes (default {OUT})")
    args = ap.parse_args()
    exe = shutil.which("quantmatch") or str(Path(sys.executable).with_name("quantmatch"))
    rows = []
    for label, argv, goal in [
        ("quantmatch --help", ["--help"], 0.3),
        ("quantmatch registry --device nvidia_h100_sxm --json", ["registry", "--device", "nvidia_h100_sxm", "--json"],
         0.5),
        ("quantmatch registry --device h100 --json", ["registry", "--device", "h100", "--json"], 0.5),
        ("quantmatch plugins --json", ["plugins", "--json"], 0.5),
        ("python -c pass (interpreter floor)", None, None),
    ]:
        cmds = [[sys.executable, "-c", "pass"]] if argv is None else [[exe, *argv]]
        if args.compare and argv is not None:
            cmds.append([args.compare, *argv])
        t = wall(*cmds)
        row = {"what": label, "median_s": statistics.median(t[0]), "min_s": min(t[0]), "goal_s": goal}
        if len(t) > 1:
            row.update(compare_median_s=statistics.median(t[1]),
                       ratio=statistics.median(t[0]) / statistics.median(t[1]))
        rows.append(row)
    t, count = enumerate_all()
    rows.append({"what": f"enumerate whole registry in-process ({count} verdicts)",
                 "median_s": statistics.median(t), "min_s": min(t), "goal_s": 0.1})
    compare = f" {'compare':>8} {'ratio':>6}" if args.compare else ""
    print(f"{'what':62} {'median':>8} {'min':>8} {'goal':>6}{compare}")
    for r in rows:
        goal = f"{r['goal_s']:.2f}" if r["goal_s"] else "-"
        extra = f" {r['compare_median_s']:8.3f} {r['ratio']:6.2f}" if "ratio" in r else ""
        print(f"{r['what']:62} {r['median_s']:8.3f} {r['min_s']:8.3f} {goal:>6}{extra}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                               "runs": RUNS, "bytecode_cache": True, "compare": args.compare,
                               "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
