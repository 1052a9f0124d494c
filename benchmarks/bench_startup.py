"""Start-up and enumeration speed of the registry.

Run: ``.venv/bin/python benchmarks/bench_startup.py`` (prints a table, writes
``benchmarks/results/startup.json``). Wall times of fresh processes, medians of several runs, so
that the figures are what a user waits for; the in-process figure judges every combination on
every catalog device with a fresh registry (plugins already loaded).
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 9
OUT = Path(__file__).with_name("results") / "startup.json"


def wall(cmd: list[str], runs: int = RUNS) -> list[float]:
    subprocess.run(cmd, capture_output=True, check=True)  # warm the OS file cache once
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
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
    exe = shutil.which("quantmatch") or str(Path(sys.executable).with_name("quantmatch"))
    rows = []
    for label, cmd, goal in [
        ("quantmatch --help", [exe, "--help"], 0.3),
        ("quantmatch registry --device nvidia_h100_sxm --json", [exe, "registry", "--device",
                                                                   "nvidia_h100_sxm", "--json"], 0.5),
        ("quantmatch registry --device h100 --json", [exe, "registry", "--device", "h100", "--json"], 0.5),
        ("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"], None),
    ]:
        t = wall(cmd)
        rows.append({"what": label, "median_s": statistics.median(t), "min_s": min(t), "goal_s": goal})
    t, count = enumerate_all()
    rows.append({"what": f"enumerate whole registry in-process ({count} verdicts)",
                 "median_s": statistics.median(t), "min_s": min(t), "goal_s": 0.1})
    print(f"{'what':62} {'median':>8} {'min':>8} {'goal':>6}")
    for r in rows:
        goal = f"{r['goal_s']:.2f}" if r["goal_s"] else "-"
        print(f"{r['what']:62} {r['median_s']:8.3f} {r['min_s']:8.3f} {goal:>6}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                               "runs": RUNS, "rows": rows}, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
