"""The results store: the planner's documented schema, evidence, and the registry attaching it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from quantmatch.planner import RESULTS_SCHEMA, measured_quality
from quantmatch.planner import results_path as planner_results_path
from quantmatch.registry import Registry
from quantmatch.sdk.store import (
    RUNS_SCHEMA,
    EvidenceRow,
    MeasuredRun,
    ResultRow,
    ResultsStore,
    measured_runs,
    read_evidence,
    results_path,
)
from quantmatch.sdk.verdict import Evidence

DOCUMENTED = ["model", "method", "scheme", "backend", "device", "ppl", "ppl_delta_pct", "decode_tps", "prefill_tps",
              "peak_rss", "date", "prompt", "decode_context", "batch", "decode_batch_tps", "kld_mean", "kld_p99",
              "top1_pct", "ppl_ratio", "kv_cache", "context", "kv_bytes"]
FIRST_SCHEMA = """CREATE TABLE results (model TEXT, method TEXT, scheme TEXT, backend TEXT, device TEXT, ppl REAL,
    ppl_delta_pct REAL, decode_tps REAL, prefill_tps REAL, peak_rss REAL, date TEXT)"""
"""The table as the first version of the store wrote it (before the settings columns)."""
RUN = {"config": {"tokens": 4096, "window": 1024, "prompt": 128, "new_tokens": 32, "batch": 4, "warmup": 4},
       "batch": 4, "decode_tps": 80.0, "decode_batch_tps": 210.0}
"""The part of a bench run (``RunResult.to_dict()``) the settings come from."""


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "results.sqlite"
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(path))
    return path


def _row(date: str, delta: float = 1.5, method: str = "gguf") -> ResultRow:
    return ResultRow("smollm2-135m", method, "gguf-q8_0", "llama.cpp", "local-cpu", 12.3, delta, 80.0, 900.0,
                     3.0e8, date)


def test_results_table_is_the_documented_schema(db: Path) -> None:
    ResultsStore().add_result(_row("2026-01-01T10:00:00+0000"), detail={"roofline": {"achieved": 0.5}})
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(results)")]
    con.close()
    assert cols == DOCUMENTED
    assert "peak_rss REAL" in RESULTS_SCHEMA  # the planner's own statement created it


def test_round_trip_and_the_planner_reads_it(db: Path) -> None:
    store = ResultsStore()
    store.add_result(_row("2026-01-01T10:00:00+0000", 1.5))
    store.add_result(_row("2026-01-02T10:00:00+0000", 0.7))
    store.add_result(_row("2026-01-01T09:00:00+0000", 0.0, method="none"))
    rows = store.results("SmolLM2-135M")
    assert [r.ppl_delta_pct for r in rows] == [0.7, 1.5, 0.0]  # newest first
    assert rows[0] == _row("2026-01-02T10:00:00+0000", 0.7)
    assert measured_quality("smollm2-135m", "gguf", "gguf-q8_0") == 0.7
    assert measured_quality("smollm2-135m", None, "gguf-q8_0") == 0.0
    assert store.results("other-model") == []


def test_settings_come_from_the_run_and_the_planner_reads_them(db: Path) -> None:
    ResultsStore().add_result(_row("2026-01-01T10:00:00+0000"), detail={"run": RUN, "machine": {}})
    (row,) = ResultsStore().results()
    assert (row.prompt, row.decode_context, row.batch, row.decode_batch_tps) == (128, 128 + 4 + 16, 4, 210.0)
    runs = measured_runs(["SmolLM2-135M", "other"], "local-cpu")
    assert runs == {("gguf", "gguf-q8_0", "llama.cpp"): MeasuredRun("2026-01-01T10:00:00+0000", 80.0, 900.0, 3.0e8,
                                                                   128, 148.0, 4, 210.0)}
    assert measured_runs(["smollm2-135m"], "nvidia_h100_sxm") == {}  # measured on this machine, not there


def test_an_old_store_stays_readable_and_is_upgraded(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute(FIRST_SCHEMA)
    con.execute(RUNS_SCHEMA)
    old = ("smollm2-135m", "gguf", "gguf-q8_0", "llama.cpp", "local-cpu", 12.3, 1.5, 80.0, 900.0, 3.0e8,
           "2026-01-01T10:00:00+0000")
    con.execute(f"INSERT INTO results VALUES ({', '.join('?' * 11)})", old)
    con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*old[:5], old[-1], "ok", json.dumps({"run": RUN})))
    con.commit()
    con.close()
    # read as it is (the planner opens it read-only): speeds without settings, quality as before
    (run,) = measured_runs(["smollm2-135m"], "local-cpu").values()
    assert (run.decode_tps, run.prompt, run.batch) == (80.0, None, None)
    assert measured_quality("smollm2-135m", "gguf", "gguf-q8_0") == 1.5
    # the next write adds the columns and fills the old row in from its run
    ResultsStore().add_result(_row("2026-01-02T10:00:00+0000", 0.7, method="none"))
    rows = {r.method: r for r in ResultsStore().results()}
    assert (rows["gguf"].prompt, rows["gguf"].decode_context, rows["gguf"].batch) == (128, 148.0, 4)
    assert rows["none"].prompt is None  # written without a run: no settings
    assert measured_runs(["smollm2-135m"], "local-cpu")[("gguf", "gguf-q8_0", "llama.cpp")].decode_batch_tps == 210.0


def test_store_path_follows_the_planner(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert results_path() == planner_results_path() == db
    monkeypatch.delenv("QUANTMATCH_RESULTS_DB")
    assert results_path() == planner_results_path()
    assert results_path().name == "results.sqlite"


def _evidence(kind: str, figure: str, date: str, agrees: bool | None = True) -> Evidence:
    return Evidence(kind, figure, date, "onnxruntime 1.31", agrees)


def test_evidence_newest_per_kind(db: Path) -> None:
    assert read_evidence("local-cpu") == {}  # no file yet: nothing, and nothing created
    assert not db.exists()
    ResultsStore().add_evidence([
        EvidenceRow("onnx", "w8a8-int8", "onnxruntime", "local-cpu",
                    _evidence("verify", "old", "2026-01-01T00:00:00+0000", False), "native", "emulated"),
        EvidenceRow("onnx", "w8a8-int8", "onnxruntime", "local-cpu",
                    _evidence("verify", "new", "2026-01-02T00:00:00+0000"), "native", "native"),
        EvidenceRow("onnx", "w8a8-int8", "onnxruntime", "local-cpu",
                    _evidence("bench", "decode 80 tok/s", "2026-01-01T00:00:00+0000", None)),
        EvidenceRow("none", "bf16", "torch", "other-device", _evidence("verify", "x", "2026-01-03T00:00:00+0000")),
    ])
    ev = read_evidence("local-cpu")
    assert set(ev) == {("onnx", "w8a8-int8", "onnxruntime")}
    got = ev[("onnx", "w8a8-int8", "onnxruntime")]
    assert [(e.kind, e.figure, e.agrees) for e in got] == [("verify", "new", True), ("bench", "decode 80 tok/s", None)]


def test_registry_attaches_evidence_to_this_machine_only(db: Path) -> None:
    reg = Registry()
    dev = reg.local()
    ResultsStore().add_evidence([EvidenceRow("onnx", "w8a8-int8", "onnxruntime", dev.id,
                                             _evidence("verify", "4.2x fp32", "2026-01-02T00:00:00+0000"))])
    v = Registry().verdict("onnx", "w8a8-int8", "onnxruntime", "local")
    assert [e.figure for e in v.evidence] == ["4.2x fp32"]
    assert v.to_dict()["evidence"][0]["versions"] == "onnxruntime 1.31"
    listed = [c for c in Registry().combinations("local", method="onnx") if c.scheme == "w8a8-int8"]
    assert listed and listed[0].evidence == v.evidence
    # a profile standing in for the machine (tests, tools) and catalog devices get none
    assert reg.with_local(dev).verdict("onnx", "w8a8-int8", "onnxruntime", "local").evidence == ()
    assert Registry().verdict("onnx", "w8a8-int8", "onnxruntime", "spr").evidence == ()


def test_explain_shows_the_evidence(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.cli import main

    dev = Registry().local()
    ResultsStore().add_evidence([EvidenceRow("onnx", "w8a8-int8", "onnxruntime", dev.id,
                                             _evidence("verify", "agrees (native); 4.2x fp32",
                                                       "2026-01-02T00:00:00+0000"))])
    assert main(["explain", "onnx", "w8a8-int8", "onnxruntime", "local"]) == 0
    out = capsys.readouterr().out
    assert "evidence (2026-01-02T00:00:00+0000): verify: agrees (native); 4.2x fp32" in out
