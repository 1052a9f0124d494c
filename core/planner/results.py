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
        decode_tps REAL,      -- decode tokens/s at batch 1
        prefill_tps REAL,     -- prefill tokens/s of one prompt-token sequence
        peak_rss REAL,        -- peak resident memory in bytes
        date TEXT,            -- ISO 8601; the newest row wins
        prompt INTEGER,       -- prompt tokens of the prefill (decode starts from it)
        decode_context REAL,  -- mean KV-cache length (tokens) over the timed decode steps
        batch INTEGER,        -- sequences of the batched decode (1: none)
        decode_batch_tps REAL -- decode tokens/s of all of them together
    );

The last four columns (:data:`SETTINGS_COLUMNS`) came later: a table without them is read as if
they were empty, and rows without them give no measured speed or memory to the planner (only
quality). The planner only reads it (it never creates the file); a missing file or table means "no
measurements".
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SCHEMA", "SETTINGS_COLUMNS", "MeasuredRun", "measured_quality", "measured_runs", "results_path"]

SCHEMA = """CREATE TABLE IF NOT EXISTS results (
    model TEXT, method TEXT, scheme TEXT, backend TEXT, device TEXT,
    ppl REAL, ppl_delta_pct REAL, decode_tps REAL, prefill_tps REAL, peak_rss REAL, date TEXT,
    prompt INTEGER, decode_context REAL, batch INTEGER, decode_batch_tps REAL
)"""
"""The table definition writers should use (``quantmatch bench`` creates it with this)."""

SETTINGS_COLUMNS = {"prompt": "INTEGER", "decode_context": "REAL", "batch": "INTEGER", "decode_batch_tps": "REAL"}
"""Columns added to the first schema: the settings the speeds were measured at (and the batched decode).
The writer adds them to an older table (:class:`quantmatch.runners.store.ResultsStore`)."""


@dataclass(frozen=True)
class MeasuredRun:
    """The newest measurement of one combination on one device: speeds, peak memory and their settings.

    ``decode_tps``: one sequence decoding after a ``prompt``-token prefill, at a mean KV-cache length
    of ``decode_context`` tokens; ``decode_batch_tps``: ``batch`` sequences decoding together, the same
    way; ``prefill_tps``: one ``prompt``-token sequence; ``peak_rss``: the measuring process's peak in
    bytes (runtime, weights, the perplexity pass and both decodes). Settings are ``None`` in rows
    written before they were stored.
    """

    date: str
    decode_tps: float | None
    prefill_tps: float | None
    peak_rss: float | None
    prompt: int | None = None
    decode_context: float | None = None
    batch: int | None = None
    decode_batch_tps: float | None = None


def results_path() -> Path:
    """Where the store lives: ``$QUANTMATCH_RESULTS_DB`` or the user data dir's ``results.sqlite``."""
    env = os.environ.get("QUANTMATCH_RESULTS_DB")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("quantmatch")) / "results.sqlite"


@contextmanager
def _read_only(path: Path | None) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection to the store, or ``None`` when there is no file to read."""
    p = path or results_path()
    con = None
    if p.is_file():
        try:
            con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        except sqlite3.Error:
            con = None
    try:
        yield con
    finally:
        if con is not None:
            con.close()


def measured_runs(models: Iterable[str], device: str, path: Path | None = None
                  ) -> dict[tuple[str, str, str], MeasuredRun]:
    """``{(method, scheme, backend): newest run}`` measured on ``device`` for any of ``models``.

    Keys are lower case, ``method`` ``none`` for baselines. Only rows with a decode or prefill speed or
    a peak RSS count; a table without the settings columns gives runs whose settings are ``None``.
    """
    names = [m.lower() for m in models if m]
    if not names:
        return {}
    out: dict[tuple[str, str, str], MeasuredRun] = {}
    with _read_only(path) as con:
        if con is None:
            return out
        try:
            have = {r[1] for r in con.execute("PRAGMA table_info(results)")}
            settings = ", ".join(c if c in have else f"NULL AS {c}" for c in SETTINGS_COLUMNS)
            rows = con.execute(
                f"SELECT method, scheme, backend, date, decode_tps, prefill_tps, peak_rss, {settings} FROM results "
                f"WHERE lower(model) IN ({', '.join('?' * len(names))}) AND lower(device) = lower(?) AND "
                "coalesce(decode_tps, prefill_tps, peak_rss) IS NOT NULL ORDER BY date DESC, rowid DESC",
                (*names, device)).fetchall()
        except sqlite3.Error:
            return out
    for method, scheme, backend, *figures in rows:
        key = ((method or "none").lower(), (scheme or "").lower(), (backend or "").lower())
        out.setdefault(key, MeasuredRun(*figures))
    return out


def measured_quality(model: str, method: str | None, scheme: str, path: Path | None = None,
                     backend: str | None = None) -> float | None:
    """The newest measured perplexity change (percent) for ``model``/``method``/``scheme``, or ``None``.

    ``method`` ``None`` means the unquantized baseline (stored as ``none``). With ``backend`` given,
    a row for that backend is preferred, else any backend's row is used (perplexity of the same
    artifact does not depend on the runtime).
    """
    with _read_only(path) as con:
        if con is None:
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
    if not rows:
        return None
    if backend:
        for b, v in rows:
            if (b or "").lower() == backend.lower():
                return float(v)
    return float(rows[0][1])
