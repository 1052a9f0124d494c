"""The results store: one SQLite file that ``bench``/``verify`` write and the planner and registry read.

The file is :func:`results_path` (``platformdirs.user_data_dir("quantmatch")/results.sqlite``, or
``$QUANTMATCH_RESULTS_DB``). Three tables:

- ``results``: one row per measured combination (:data:`SCHEMA`, the statement it is created with,
  documented in ``docs/planner.md``), keyed by model, method (``none`` for float baselines), scheme,
  backend and device; the newest row wins. A table of an older version gets the columns added since
  (:data:`SETTINGS_COLUMNS`, :data:`FIDELITY_COLUMNS`, :data:`KV_COLUMNS`), filled in from ``runs`` where
  it holds them;
- ``runs``: the full measurement of each row as JSON (roofline, load time, threads, versions ...);
- ``evidence``: what ``quantmatch verify`` and ``quantmatch bench`` measured for a verdict (kind, figure,
  date, library versions, whether it agrees with the claimed level), read by the registry, which
  attaches it to the verdicts of this machine (``Verdict.evidence``, shown by ``quantmatch explain``).

Writers use :class:`ResultsStore`; readers (:func:`read_evidence`, :func:`measured_runs`,
:func:`measured_quality`) open the file read-only and never create it: a missing file or table means
"nothing measured".
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from quantmatch.sdk.verdict import Evidence

__all__ = [
    "EVIDENCE_SCHEMA",
    "FIDELITY_COLUMNS",
    "KV_COLUMNS",
    "RUNS_SCHEMA",
    "SCHEMA",
    "SETTINGS_COLUMNS",
    "UNITS_SCHEMA",
    "EvidenceRow",
    "MeasuredFidelity",
    "MeasuredRun",
    "ResultRow",
    "ResultsStore",
    "disagreeing_nodes",
    "evidence_devices",
    "measured_fidelity",
    "measured_quality",
    "measured_runs",
    "read_evidence",
    "results_path",
    "run_settings",
]

RUNS_SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    model TEXT, method TEXT, scheme TEXT, backend TEXT, device TEXT, date TEXT, status TEXT, detail TEXT
)"""
EVIDENCE_SCHEMA = """CREATE TABLE IF NOT EXISTS evidence (
    method TEXT, scheme TEXT, backend TEXT, device TEXT, kind TEXT, figure TEXT, date TEXT, versions TEXT,
    agrees INTEGER, claimed TEXT, observed TEXT, node TEXT
)"""
UNITS_SCHEMA = """CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY, model TEXT, method TEXT, scheme TEXT, backend TEXT, device TEXT, node TEXT,
    status TEXT, date TEXT, detail TEXT
)"""
"""Fleet units (``quantmatch sweep``): one row per finished unit, keyed by what makes it the same unit (model
fingerprint, combination, device, versions, settings), so that running the same sweep again skips it."""


SCHEMA = """CREATE TABLE IF NOT EXISTS results (
    model TEXT, method TEXT, scheme TEXT, backend TEXT, device TEXT,
    ppl REAL, ppl_delta_pct REAL, decode_tps REAL, prefill_tps REAL, peak_rss REAL, date TEXT,
    prompt INTEGER, decode_context REAL, batch INTEGER, decode_batch_tps REAL,
    kld_mean REAL, kld_p99 REAL, top1_pct REAL, ppl_ratio REAL,
    kv_cache TEXT, context INTEGER, kv_bytes INTEGER
)"""
"""The table definition writers should use (``quantmatch bench`` creates it with this)."""

SETTINGS_COLUMNS = {"prompt": "INTEGER", "decode_context": "REAL", "batch": "INTEGER", "decode_batch_tps": "REAL"}
"""Columns added to the first schema: the settings the speeds were measured at (and the batched decode).
The writer adds them to an older table (:class:`quantmatch.sdk.store.ResultsStore`)."""

FIDELITY_COLUMNS = {"kld_mean": "REAL", "kld_p99": "REAL", "top1_pct": "REAL", "ppl_ratio": "REAL"}
"""Fidelity to the reference (:class:`quantmatch.sdk.fidelity.Fidelity`): mean and p99 KL divergence in nats,
same-top-token percentage, perplexity ratio on the same token ids. Added to an older table as well."""

KV_COLUMNS = {"kv_cache": "TEXT", "context": "INTEGER", "kv_bytes": "INTEGER"}
"""The KV cache of the decodes: its format (a scheme's ``-kv<fmt>``; ``NULL``: the runtime's default), the prompt
length decoding started from when ``bench --context`` set one, and the bytes the cache held after the batch-1
decode, measured from the runtime (:meth:`quantmatch.sdk.runner.Runner.kv_cache_bytes`). Added to an older
table as well."""


@dataclass(frozen=True)
class MeasuredFidelity:
    """The newest measured fidelity of one combination: what :data:`FIDELITY_COLUMNS` hold, and when."""

    kld_mean: float
    kld_p99: float | None
    top1_pct: float | None
    ppl_ratio: float | None
    backend: str
    date: str


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
    """The store's path: ``$QUANTMATCH_RESULTS_DB`` or ``user_data_dir("quantmatch")/results.sqlite``."""
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
    kld_mean: float | None = None
    kld_p99: float | None = None
    top1_pct: float | None = None
    ppl_ratio: float | None = None
    kv_cache: str | None = None
    context: int | None = None
    kv_bytes: int | None = None


def run_settings(run: Mapping[str, Any]) -> dict[str, Any]:
    """The settings columns of a :class:`~quantmatch.sdk.runner.RunResult` dict: its prompt, the mean
    KV-cache length of its timed decode steps (from its ``context`` when it set one), and its batched decode
    (empty when it has no config)."""
    cfg = run.get("config") or {}
    if "prompt" not in cfg:
        return {}
    context = (cfg.get("context") or cfg["prompt"]) + cfg.get("warmup", 0) + cfg.get("new_tokens", 0) / 2
    return {"prompt": int(cfg["prompt"]), "decode_context": float(context), "batch": int(run.get("batch") or 1),
            "decode_batch_tps": run.get("decode_batch_tps")}


_COLUMNS = tuple(f.name for f in fields(ResultRow))


@dataclass(frozen=True)
class EvidenceRow:
    """One measurement for a verdict: the combination, the :class:`~quantmatch.sdk.verdict.Evidence`, and the
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(str(self.path), timeout=30)
        try:
            for ddl in (SCHEMA, RUNS_SCHEMA, EVIDENCE_SCHEMA, UNITS_SCHEMA):
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
                con.execute("INSERT INTO evidence (method, scheme, backend, device, kind, figure, date, versions, "
                            "agrees, claimed, observed, node) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (r.method, r.scheme, r.backend, r.device, e.kind, e.figure, e.date, e.versions,
                             None if e.agrees is None else int(e.agrees), r.claimed, r.observed or e.observed,
                             e.node))

    def add_unit(self, key: str, model: str, method: str, scheme: str, backend: str, device: str, node: str,
                 status: str, date: str, detail: Mapping[str, Any]) -> None:
        """Record a finished fleet unit (replacing an earlier row of the same key)."""
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO units VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (key, model, method, scheme, backend, device, node, status, date,
                         json.dumps(dict(detail), default=str)))

    def units(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``{key: {"status", "node", "date", "detail"}}`` for the stored units among ``keys``."""
        wanted = list(keys)
        if not wanted or not self.path.is_file():
            return {}
        out: dict[str, dict[str, Any]] = {}
        with self._connect() as con:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                marks = ", ".join("?" * len(chunk))
                for key, node, status, date, detail in con.execute(
                        f"SELECT key, node, status, date, detail FROM units WHERE key IN ({marks})", chunk).fetchall():
                    out[key] = {"status": status, "node": node, "date": date, "detail": json.loads(detail or "{}")}
        return out

    def evidence(self, device: str) -> dict[tuple[str, str, str], tuple[Evidence, ...]]:
        """See :func:`read_evidence`."""
        return read_evidence(device, self.path)


def _upgrade(con: sqlite3.Connection) -> None:
    """Add the settings columns to a ``results`` table written before them, filled in from ``runs``."""
    if "node" not in {r[1] for r in con.execute("PRAGMA table_info(evidence)")}:
        con.execute("ALTER TABLE evidence ADD COLUMN node TEXT")
    have = {r[1] for r in con.execute("PRAGMA table_info(results)")}
    for c, kind in {**FIDELITY_COLUMNS, **KV_COLUMNS}.items():
        if c not in have:
            con.execute(f"ALTER TABLE results ADD COLUMN {c} {kind}")
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


def evidence_devices(path: str | Path | None = None) -> frozenset[str]:
    """The device ids the store holds any evidence for (empty when there is no store), in one query: a registry
    reads :func:`read_evidence` only for those."""
    p = Path(path) if path else results_path()
    if not p.is_file():
        return frozenset()
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    except sqlite3.Error:
        return frozenset()
    try:
        return frozenset(r[0] for r in con.execute("SELECT DISTINCT device FROM evidence"))
    except sqlite3.Error:
        return frozenset()
    finally:
        con.close()


def read_evidence(device: str | Iterable[str], path: str | Path | None = None
                  ) -> dict[tuple[str, str, str], tuple[Evidence, ...]]:
    """``{(method, scheme, backend): evidence}`` for ``device`` (an id, or several ids that name the same device):
    the newest row of each kind per combination and per node, so that two machines of one device that
    measured differently both show.

    ``method`` is ``none`` for baselines. A missing file or table means no evidence (the store is
    opened read-only and never created here).
    """
    ids = [device] if isinstance(device, str) else list(dict.fromkeys(device))
    p = Path(path) if path else results_path()
    if not p.is_file() or not ids:
        return {}
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        cols = {r[1] for r in con.execute("PRAGMA table_info(evidence)")}
        node = "node" if "node" in cols else "NULL"
        observed = "observed" if "observed" in cols else "NULL"
        rows = con.execute(f"SELECT method, scheme, backend, kind, figure, date, versions, agrees, {node}, {observed} "
                           f"FROM evidence WHERE device IN ({', '.join('?' * len(ids))}) "
                           "ORDER BY date DESC, rowid DESC", ids).fetchall()
    except sqlite3.Error:
        return {}
    finally:
        con.close()
    out: dict[tuple[str, str, str], list[Evidence]] = {}
    for method, scheme, backend, kind, figure, date, versions, agrees, who, seen in rows:
        items = out.setdefault((method or "none", scheme, backend), [])
        if all((e.kind, e.node) != (kind, who or "") for e in items):
            items.append(Evidence(kind, figure, date, versions or "", None if agrees is None else bool(agrees),
                                  who or "", seen or ""))
    return {k: tuple(v) for k, v in out.items()}


def disagreeing_nodes(evidence: Iterable[Evidence]) -> list[tuple[str, str]]:
    """``[(node, observed level)]`` when machines of one device observed different levels for one combination
    (the newest ``verify`` row of each node); empty when they agree or fewer than two nodes measured it."""
    seen = {(e.node or "this machine"): e.observed for e in evidence if e.kind == "verify" and e.observed}
    return sorted(seen.items()) if len(set(seen.values())) > 1 else []


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


def measured_fidelity(model: str, method: str | None, scheme: str, backend: str | None = None,
                      path: Path | None = None) -> MeasuredFidelity | None:
    """The newest measured fidelity (:data:`FIDELITY_COLUMNS`) of ``model``/``method``/``scheme``, or ``None``.

    ``method`` ``None`` means the unquantized baseline. With ``backend`` given, that backend's row is
    preferred (the same artifact diverges differently on runtimes that round differently: llama.cpp
    quantizes activations to 8 bits in its quantized dot products), else the newest of any backend.
    A store without the columns means nothing measured.
    """
    with _read_only(path) as con:
        if con is None:
            return None
        try:
            rows = con.execute(
                "SELECT kld_mean, kld_p99, top1_pct, ppl_ratio, backend, date FROM results WHERE "
                "lower(model) = lower(?) AND lower(coalesce(method, 'none')) = lower(?) AND lower(scheme) = lower(?) "
                "AND kld_mean IS NOT NULL ORDER BY date DESC, rowid DESC",
                (model, method or "none", scheme)).fetchall()
        except sqlite3.Error:
            return None
    if not rows:
        return None
    pick = rows[0]
    if backend:
        pick = next((r for r in rows if (r[4] or "").lower() == backend.lower()), pick)
    return MeasuredFidelity(float(pick[0]), pick[1], pick[2], pick[3], pick[4] or "", pick[5] or "")
