"""The measured-results store the planner reads (written by ``quantmatch bench``/``eval``).

A SQLite file at ``platformdirs.user_data_dir("quantmatch")/results.sqlite`` (or the path in
``QUANTMATCH_RESULTS_DB``) with one table::

    CREATE TABLE results (
        model TEXT,           -- planner model id (built-in id such as 'smollm2-135m', or the model
                              --   directory / GGUF name); matched case-insensitively
        method TEXT,          -- quantization method ('gptq', 'gguf', ...; 'none' for the 16-bit baseline)
        scheme TEXT,          -- canonical scheme string ('w4a16-g64', 'gguf-q4_k_m', 'bf16', ...)
        backend TEXT,         -- runtime that ran it ('torch', 'llama.cpp', ...)
        device TEXT,          -- device id ('local-cpu', 'nvidia_h100_sxm', ...)
        ppl REAL,             -- perplexity measured
        ppl_delta_pct REAL,   -- perplexity change vs the 16-bit baseline, in percent
        decode_tps REAL,      -- decode tokens/s
        prefill_tps REAL,     -- prefill tokens/s
        peak_rss REAL,        -- peak resident memory in bytes
        date TEXT             -- ISO 8601; the newest row wins
    );

The planner only reads it (it never creates the file); a missing file or table means "no
measurements".
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = ["SCHEMA", "measured_quality", "results_path"]

SCHEMA = """CREATE TABLE IF NOT EXISTS results (
    model TEXT, method TEXT, scheme TEXT, backend TEXT, device TEXT,
    ppl REAL, ppl_delta_pct REAL, decode_tps REAL, prefill_tps REAL, peak_rss REAL, date TEXT
)"""
"""The table definition writers should use (``quantmatch bench`` creates it with this)."""


def results_path() -> Path:
    """Where the store lives: ``$QUANTMATCH_RESULTS_DB`` or the user data dir's ``results.sqlite``."""
    env = os.environ.get("QUANTMATCH_RESULTS_DB")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("quantmatch")) / "results.sqlite"


def measured_quality(model: str, method: str | None, scheme: str, path: Path | None = None,
                     backend: str | None = None) -> float | None:
    """The newest measured perplexity change (percent) for ``model``/``method``/``scheme``, or ``None``.

    ``method`` ``None`` means the unquantized baseline (stored as ``none``). With ``backend`` given,
    a row for that backend is preferred, else any backend's row is used (perplexity of the same
    artifact does not depend on the runtime).
    """
    p = path or results_path()
    if not p.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        rows = con.execute(
            "SELECT backend, ppl_delta_pct FROM results WHERE lower(model) = lower(?) AND "
            "lower(coalesce(method, 'none')) = lower(?) AND lower(scheme) = lower(?) AND "
            "ppl_delta_pct IS NOT NULL ORDER BY date DESC",
            (model, method or "none", scheme),
        ).fetchall()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    if not rows:
        return None
    if backend:
        for b, v in rows:
            if (b or "").lower() == backend.lower():
                return float(v)
    return float(rows[0][1])
