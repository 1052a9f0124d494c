"""One job in a fresh subprocess, JSON in and JSON out: what ``bench`` and ``calibrate-sweep`` run each
measurement in, so that memory figures do not mix and a crash takes down only that job.

The parent calls :func:`run_job`; the child is ``python -m <module> --worker JOB RESULT``, whose
``__main__`` calls :func:`worker_main` with the job kinds it knows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["crash_text", "run_job", "worker_main"]

STDERR_TAIL = 1500
JobFn = Callable[[Mapping[str, Any]], dict[str, Any]]


def run_job(worker: Sequence[str], job: Mapping[str, Any], threads: int, timeout: float,
            who: str = "the worker process") -> tuple[bool, Any, str]:
    """Run ``job`` with the command prefix ``worker`` in a fresh subprocess: ``(ok, result, error text)``."""
    with tempfile.TemporaryDirectory(prefix="quantmatch-job-") as tmp:
        jf, rf = Path(tmp) / "job.json", Path(tmp) / "result.json"
        jf.write_text(json.dumps(job), encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": str(threads)}
        try:
            proc = subprocess.run([*worker, str(jf), str(rf)], capture_output=True, text=True,
                                  timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False, None, f"timed out after {timeout:.0f} s"
        data: dict[str, Any] | None = None
        if rf.is_file():
            try:
                data = json.loads(rf.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                data = None
        if data is not None and data.get("ok"):
            return True, data.get("result"), ""
        if data is not None:
            return False, None, str(data.get("error"))
        return False, None, crash_text(proc.returncode, proc.stderr, who)


def crash_text(code: int, stderr: str, who: str = "the worker process") -> str:
    """What a child that left no result did: the signal that killed it or its exit code, and its stderr's tail."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = f"{who} crashed ({name})"
    else:
        what = f"{who} exited with code {code} without a result"
    tail = "\n".join(line for line in (stderr or "").strip().splitlines()[-6:] if line.strip())
    return what + (f": {tail[-STDERR_TAIL:]}" if tail else "")


def worker_main(job_file: str, result_file: str, kinds: Mapping[str, JobFn]) -> int:
    """Run the job in ``job_file`` (its ``kind`` picks the function) and write ``{"ok", "result"|"error"}``."""
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    try:
        payload = {"ok": True, "result": kinds[job["kind"]](job)}
    except Exception as e:  # reported to the parent, which records the job as failed
        msg = str(e).strip().splitlines()
        payload = {"ok": False, "error": f"{type(e).__name__}: {' '.join(msg[:3])[:800]}" if msg else type(e).__name__}
    Path(result_file).write_text(json.dumps(payload, default=str), encoding="utf-8")
    return 0 if payload["ok"] else 1
