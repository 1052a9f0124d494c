"""Start-up time of ``quantmatch tui``: how long until the first screen is on the terminal.

Run: ``.venv/bin/python benchmarks/bench_tui_startup.py`` (prints a table, writes
``benchmarks/results/tui_startup.json``). Each run is a fresh Python process (the OS file cache warmed
by one run first) that imports the app and runs it headless with Textual's ``run_test`` at 80x24,
exactly as ``quantmatch tui`` does but without a terminal. Times are wall-clock from just before the
process is spawned (so the interpreter start is included), medians over the runs:

- *first screen mounted*: the Devices screen is mounted and painted (it says "Loading the registry…"
  while the plugins load in a worker thread); the goal is under 1 s;
- *devices listed*: the registry is built in the worker and the catalog is in the table;
- *matrix shown*: then switching to the Matrix and judging every combination for the A100.

The child also reports whether torch, transformers or textual's absence held where it must.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RUNS = 9
GOAL_S = 1.0
OUT = Path(__file__).with_name("results") / "tui_startup.json"

CHILD = r"""
import asyncio, json, sys, time
t_spawn = float(sys.argv[1])
t_main = time.time()
import quantmatch.tui.app as tui_app
t_import = time.time()
cpu = {"import": time.process_time()}

async def main():
    app = tui_app.QuantmatchApp(device="a100")
    marks = {}
    async with app.run_test(size=(80, 24)) as pilot:
        while app.first_paint is None:  # set by the first screen once it is mounted and painted
            await asyncio.sleep(0.001)
        marks["first_screen"], cpu["first_screen"] = app.first_paint
        from quantmatch.tui.scenarios import settle
        await settle(pilot)
        assert app.screen.query_one("#devices").row_count > 0
        marks["devices_listed"] = time.time()
        cpu["devices_listed"] = time.process_time()
        await pilot.press("2")
        await settle(pilot)
        assert app.screen.matrix is not None and app.screen.matrix.rows
        marks["matrix_shown"] = time.time()
        cpu["matrix_shown"] = time.process_time()
    return marks

marks = asyncio.run(main())
print(json.dumps({
    "interpreter_s": t_main - t_spawn,
    "import_s": t_import - t_spawn,
    "first_screen_s": marks["first_screen"] - t_spawn,
    "devices_listed_s": marks["devices_listed"] - t_spawn,
    "matrix_shown_s": marks["matrix_shown"] - t_spawn,
    "cpu": cpu,
    "torch_imported": "torch" in sys.modules,
    "transformers_imported": "transformers" in sys.modules,
}))
"""

ROWS = (
    ("interpreter_s", "python interpreter up", None),
    ("import_s", "import quantmatch.tui.app (textual included)", None),
    ("first_screen_s", "first screen mounted (goal < 1 s)", GOAL_S),
    ("devices_listed_s", "registry built in a worker, devices listed", None),
    ("matrix_shown_s", "matrix for the A100 shown", None),
)


def one_run() -> dict[str, Any]:
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD, repr(t0)], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["load_1min"] = os.getloadavg()[0]
    return result


def main() -> None:
    one_run()  # warm the OS file cache once
    runs = [one_run() for _ in range(RUNS)]
    rows = []
    for key, label, goal in ROWS:
        values = [float(r[key]) for r in runs]
        cpu_key = key.removesuffix("_s")
        cpu = [float(r["cpu"][cpu_key]) for r in runs if cpu_key in r["cpu"]]
        rows.append({"what": label, "key": key, "median_s": statistics.median(values), "min_s": min(values),
                     "max_s": max(values), "median_cpu_s": statistics.median(cpu) if cpu else None,
                     "goal_s": goal})
    heavy = sorted({k for r in runs for k in ("torch_imported", "transformers_imported") if r[k]})
    load = statistics.median(r["load_1min"] for r in runs)
    print(f"{RUNS} fresh processes, 80x24, {os.cpu_count()} CPUs, median 1-minute load average {load:.2f}")
    print(f"{'what':48} {'median':>8} {'min':>8} {'max':>8} {'cpu':>8} {'goal':>6}")
    for r in rows:
        goal = f"{r['goal_s']:.2f}" if r["goal_s"] else "-"
        cpu_s = f"{r['median_cpu_s']:.3f}" if r["median_cpu_s"] is not None else "-"
        print(f"{r['what']:48} {r['median_s']:8.3f} {r['min_s']:8.3f} {r['max_s']:8.3f} {cpu_s:>8} {goal:>6}")
    print("wall: seconds since the process was spawned; cpu: the process's CPU seconds (all threads)")
    print("heavy imports at start-up: " + (", ".join(heavy) if heavy else "none (no torch, no transformers)"))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                               "cpus": os.cpu_count(), "load_1min_median": load, "runs": RUNS, "size": [80, 24],
                               "rows": rows, "heavy_imports": heavy}, indent=2) + "\n")
    print(f"wrote {OUT}")
    first = next(r for r in rows if r["key"] == "first_screen_s")
    if first["median_s"] > GOAL_S:
        print(f"slower than the goal: first screen {first['median_s']:.3f} s > {GOAL_S} s "
              f"(load average {load:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
