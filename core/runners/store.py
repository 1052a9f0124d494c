"""The local results store: a SQLite file the planner and the registry read.

The file is :func:`quantmatch.planner.results_path` (``platformdirs.user_data_dir("quantmatch")/results.sqlite``,
or ``$QUANTMATCH_RESULTS_DB``). Three tables:

- ``results``: exactly the schema of ``docs/planner.md`` (:data:`quantmatch.planner.RESULTS_SCHEMA`, the
  statement this module creates it with),
  one row per measured combination, keyed by model, method (``none`` for float baselines), scheme,
  backend and device; the newest row wins. A table of an older version gets the columns added since
  (:data:`~quantmatch.planner.results.SETTINGS_COLUMNS`), filled in from ``runs`` where it holds them;
- ``runs``: the full measurement of each row as JSON (roofline, load time, threads, versions ...);
- ``evidence``: what ``quantmatch verify`` and ``quantmatch bench`` measured for a verdict (kind, figure,
  date, library versions, whether it agrees with the claimed level), read by the registry, which
  attaches it to the verdicts of this machine (``Verdict.evidence``, shown by ``quantmatch explain``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from quantmatch.verdict import Evidence

__all__ = ["EVIDENCE_SCHEMA", "RUNS_SCHEMA", "EvidenceRow", "ResultRow", "ResultsStore", "read_evidence",
           "results_path", "run_settings"]

RUNS_SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    model TEXT, method TEXT, scheme TEXT, backend TEXT, device TEXT, date TEXT, status TEXT, detail TEXT
)"""
EVIDENCE_SCHEMA = """CREATE TABLE IF NOT EXISTS evidence (
    method TEXT, scheme TEXT, backend TEXT, device TEXT, kind TEXT, figure TEXT, date TEXT, versions TEXT,
    agrees INTEGER, claimed TEXT, observed TEXT
)"""


def results_path() -> Path:
    """The store's path: ``$QUANTMATCH_RESULTS_DB`` or ``user_data_dir("quantmatch")/results.sqlite``.

    The same rule as :func:`quantmatch.planner.results_path`, repeated here so that the registry can read
    evidence without importing the planner.
    """
    env = os.environ.get("QUANTMATCH_RESULTS_DB")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("quantmatch")) / "results.sqlite"


@dataclass(frozen=True)
class ResultRow:
    """One row of the ``results`` table (``method`` ``none`` for an unquantized baseline).

    The settings (``prompt`` ... ``decode_batch_tps``) are filled in by :meth:`ResultsStore.add_result`
    from the run in its ``detail`` when left ``None``.
    """

    model: str
    method: str
    scheme: str
    backend: str
    device: str
    ppl: float | None
    ppl_delta_pct: float | None
    decode_tps: float | None
    prefill_tps: float | None
    peak_rss: float | None
    date: str
    prompt: int | None = None
    decode_context: float | None = None
    batch: int | None = None
    decode_batch_tps: float | None = None


def run_settings(run: Mapping[str, Any]) -> dict[str, Any]:
    """The settings columns of a :class:`~quantmatch.runners.base.RunResult` dict: its prompt, the mean
    KV-cache length of its timed decode steps, and its batched decode (empty when it has no config)."""
    cfg = run.get("config") or {}
    if "prompt" not in cfg:
        return {}
    context = cfg["prompt"] + cfg.get("warmup", 0) + cfg.get("new_tokens", 0) / 2
    return {"prompt": int(cfg["prompt"]), "decode_context": float(context), "batch": int(run.get("batch") or 1),
            "decode_batch_tps": run.get("decode_batch_tps")}


_COLUMNS = tuple(f.name for f in fields(ResultRow))


@dataclass(frozen=True)
class EvidenceRow:
    """One measurement for a verdict: the combination, the :class:`~quantmatch.verdict.Evidence`, and the
    claimed and observed levels."""

    method: str
    scheme: str
    backend: str
    device: str
    evidence: Evidence
    claimed: str = ""
    observed: str = ""


class ResultsStore:
    """Read and write the store (created with all three tables on first write)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else results_path()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        from quantmatch.planner.results import SCHEMA as RESULTS_SCHEMA

        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(str(self.path), timeout=30)
        try:
            for ddl in (RESULTS_SCHEMA, RUNS_SCHEMA, EVIDENCE_SCHEMA):
                con.execute(ddl)
            _upgrade(con)
            yield con
            con.commit()
        finally:
            con.close()

    def add_result(self, row: ResultRow, detail: dict[str, Any] | None = None, status: str = "ok") -> None:
        """Append a ``results`` row (and its full measurement to ``runs``); settings the row leaves ``None``
        come from ``detail["run"]`` (see :func:`run_settings`)."""
        run = (detail or {}).get("run")
        if row.prompt is None and isinstance(run, Mapping):
            row = replace(row, **run_settings(run))
        with self._connect() as con:
            d = asdict(row)
            con.execute(f"INSERT INTO results ({', '.join(d)}) VALUES ({', '.join('?' * len(d))})", tuple(d.values()))
            con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (row.model, row.method, row.scheme, row.backend, row.device, row.date, status,
                         json.dumps(detail or {}, default=str)))

    def results(self, model: str | None = None) -> list[ResultRow]:
        """Every ``results`` row (of ``model``, case-insensitively), newest first."""
        if not self.path.is_file():
            return []
        with self._connect() as con:
            sql = f"SELECT {', '.join(_COLUMNS)} FROM results"
            args: tuple[Any, ...] = ()
            if model:
                sql += " WHERE lower(model) = lower(?)"
                args = (model,)
            rows = con.execute(sql + " ORDER BY date DESC, rowid DESC", args).fetchall()
        return [ResultRow(*r) for r in rows]

    def add_evidence(self, rows: Sequence[EvidenceRow]) -> None:
        with self._connect() as con:
            for r in rows:
                e = r.evidence
                con.execute("INSERT INTO evidence VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (r.method, r.scheme, r.backend, r.device, e.kind, e.figure, e.date, e.versions,
                             None if e.agrees is None else int(e.agrees), r.claimed, r.observed))

    def evidence(self, device: str) -> dict[tuple[str, str, str], tuple[Evidence, ...]]:
        """See :func:`read_evidence`."""
        return read_evidence(device, self.path)


def _upgrade(con: sqlite3.Connection) -> None:
    """Add the settings columns to a ``results`` table written before them, filled in from ``runs``."""
    from quantmatch.planner.results import SETTINGS_COLUMNS

    have = {r[1] for r in con.execute("PRAGMA table_info(results)")}
    missing = [c for c in SETTINGS_COLUMNS if c not in have]
    if not missing:
        return
    for c in missing:
        con.execute(f"ALTER TABLE results ADD COLUMN {c} {SETTINGS_COLUMNS[c]}")
    key = "model, method, scheme, backend, device, date"
    for rowid, detail in con.execute(
            f"SELECT results.rowid, runs.detail FROM results JOIN runs USING ({key}) WHERE results.prompt IS NULL"
    ).fetchall():
        try:
            run = json.loads(detail or "{}").get("run")
        except (json.JSONDecodeError, AttributeError):
            continue
        values = run_settings(run) if isinstance(run, dict) else {}
        if values:
            con.execute(f"UPDATE results SET {', '.join(f'{c} = ?' for c in values)} WHERE rowid = ?",
                        (*values.values(), rowid))


def read_evidence(device: str, path: str | Path | None = None) -> dict[tuple[str, str, str], tuple[Evidence, ...]]:
    """``{(method, scheme, backend): evidence}`` for ``device``: the newest row of each kind per combination.

    ``method`` is ``none`` for baselines. A missing file or table means no evidence (the store is
    opened read-only and never created here).
    """
    p = Path(path) if path else results_path()
    if not p.is_file():
        return {}
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        rows = con.execute("SELECT method, scheme, backend, kind, figure, date, versions, agrees FROM evidence "
                           "WHERE device = ? ORDER BY date DESC, rowid DESC", (device,)).fetchall()
    except sqlite3.Error:
        return {}
    finally:
        con.close()
    out: dict[tuple[str, str, str], list[Evidence]] = {}
    for method, scheme, backend, kind, figure, date, versions, agrees in rows:
        items = out.setdefault((method or "none", scheme, backend), [])
        if all(e.kind != kind for e in items):
            items.append(Evidence(kind, figure, date, versions or "", None if agrees is None else bool(agrees)))
    return {k: tuple(v) for k, v in out.items()}
