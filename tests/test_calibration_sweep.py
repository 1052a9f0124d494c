"""``quantmatch calibrate-sweep``: the stop-helping rule, the inputs it refuses, and a real sweep on a tiny model
that resumes without quantizing again."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from quantmatch.cli.main import main
from quantmatch.cli.sweep_view import parse_samples, parse_schemes
from quantmatch.measure.calibration_sweep import (
    IN_DOMAIN,
    IN_DOMAIN_FROM,
    RESULTS_NAME,
    SweepRow,
    _in_domain_file,
    calibrating_methods,
    parse_calibrations,
    plateaus,
    sweep,
)
from quantmatch.sdk.errors import InputError


def _row(samples: int, kld: float, ci: float = 0.001, calib: str = "generic", cpu: float = 1.0) -> SweepRow:
    return SweepRow("m", "w4a16-g64", calib, "x", samples, 128, quantize_cpu_s=cpu * samples,
                    fidelity={"kld_mean": kld, "kld_ci95": ci})


def test_stop_rule_takes_the_smallest_count_no_larger_count_beats() -> None:
    rows = [_row(16, 0.120), _row(32, 0.100), _row(64, 0.0815), _row(128, 0.0790), _row(256, 0.0805),
            _row(512, 0.0800)]
    (p,) = plateaus(rows)
    # 64's band = max(ci 0.001, 2% of 0.0815 = 0.00163): 128 (0.0790) beats it by 0.0025; nothing beats 128
    assert p.samples == 128 and p.largest == 512 and p.band == pytest.approx(0.02 * 0.079)
    assert (p.best, p.best_kld, p.largest_kld) == (128, 0.079, 0.080)
    assert p.cpu_s == 128 and p.largest_cpu_s == 512
    # within the band is not beating: 64 stands when 128 is only 0.0013 lower
    assert plateaus([_row(32, 0.100), _row(64, 0.0815), _row(128, 0.0802)])[0].samples == 64
    # more samples that make it worse do not help: the small count stands
    assert plateaus([_row(16, 0.070), _row(64, 0.085), _row(256, 0.080)])[0].samples == 16
    # the interval wins when it is wider than 2%
    assert plateaus([_row(16, 0.090, ci=0.011), _row(32, 0.080, ci=0.011)])[0].samples == 16
    assert plateaus([_row(16, 0.090, ci=0.009), _row(32, 0.080, ci=0.011)])[0].samples == 32
    # one count alone says nothing; failed rows are left out
    assert plateaus([_row(16, 0.1)])[0].samples is None
    failed = SweepRow("m", "s", "generic", "x", 32, 128, status="failed")
    assert plateaus([_row(16, 0.1), failed])[0].largest == 16


def test_inputs_are_parsed_or_refused_with_the_fix(tmp_path: Path) -> None:
    assert parse_samples("16, 32,64") == [16, 32, 64]
    for bad in ("16,0", "x", "-4", ""):
        with pytest.raises(InputError, match="positive integers"):
            parse_samples(bad)
    assert parse_schemes(["gptq", "awq"], None) == {"gptq": ["w4a16-g64"], "awq": ["w4a16-g64-asym"]}
    assert parse_schemes(["gptq", "awq"], "gptq=w3a16-g64") == {"gptq": ["w3a16-g64"], "awq": ["w4a16-g64-asym"]}
    assert parse_schemes(["gptq"], "w4a16-g128") == {"gptq": ["w4a16-g128"]}
    with pytest.raises(InputError, match="not among --method"):
        parse_schemes(["gptq"], "awq=w4a16-g64-asym")
    text = tmp_path / "calib.txt"
    text.write_text("some text", encoding="utf-8")
    assert parse_calibrations(["generic", "in-domain", str(text), f"mine={text}"]) == {
        "generic": None, "in-domain": IN_DOMAIN, "calib": str(text), "mine": str(text)}
    with pytest.raises(InputError, match="no such file"):
        parse_calibrations(["./missing.txt"])
    assert {"gptq", "awq", "smoothquant"} <= set(calibrating_methods()) and "rtn" not in calibrating_methods()


def test_in_domain_text_is_the_evaluation_text_after_the_cut(tmp_path: Path) -> None:
    long = tmp_path / "eval.txt"
    long.write_text("a" * IN_DOMAIN_FROM + "b" * 60_000, encoding="utf-8")
    path, offset = _in_domain_file(long, tmp_path)
    assert offset == IN_DOMAIN_FROM and path.read_text(encoding="utf-8") == "b" * 60_000
    short = tmp_path / "short.txt"
    short.write_text("a" * 1000, encoding="utf-8")
    with pytest.raises(InputError, match="give a longer --text"):
        _in_domain_file(short, tmp_path)
    with pytest.raises(InputError, match="--text"):
        _in_domain_file(None, tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["--method", "gptq,nosuch"], "unknown method 'nosuch'"),
    (["--method", "gptq", "--samples", "16,0"], "positive integers"),
    (["--method", "rtn", "--scheme", "w4a16-g64"], "does not calibrate"),
    (["--method", "gptq", "--scheme", "w4a16-g128"], "group size 128 does not divide"),
    (["--method", "gptq", "--calib", "in-domain"], "in-domain calibration is cut from the evaluation text"),
])
def test_cli_refuses_bad_input_with_exit_2(argv: list[str], message: str, tiny_llama_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["calibrate-sweep", str(tiny_llama_dir), "--out", str(tmp_path / "out"), "--scheme", "w4a16-g32",
                 *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / RESULTS_NAME).exists()


def _failing_worker(tmp_path: Path) -> list[str]:
    """A worker that computes no reference and fails every point (no torch: fast)."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import json, sys\n"
        "job = json.load(open(sys.argv[1]))\n"
        "out = {'ok': True, 'result': {'model': job['model'], 'chars': 10}} if job['kind'] == 'reference' else "
        "{'ok': False, 'error': 'RuntimeError: planted failure'}\n"
        "json.dump(out, open(sys.argv[2], 'w'))\n", encoding="utf-8")
    return [sys.executable, str(script)]


def test_a_failing_point_is_a_failed_row_and_the_sweep_goes_on(tiny_llama_dir: Path, tmp_path: Path) -> None:
    report = sweep(str(tiny_llama_dir), ["gptq"], {"gptq": "w4a16-g32"}, [2, 4], ["generic"], None, 64, 32, 0, 1,
                   tmp_path / "out", worker=_failing_worker(tmp_path))
    assert [r.status for r in report.rows] == ["failed", "failed"] and report.exit_code == 1
    assert "planted failure" in report.rows[0].error
    saved = json.loads((tmp_path / "out" / RESULTS_NAME).read_text(encoding="utf-8"))
    assert len(saved["rows"]) == 2 and saved["failed"] == 2


def test_sweep_measures_and_resumes_without_quantizing_again(tiny_llama_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("QUANTMATCH_CACHE_DIR", str(tmp_path / "cache"))  # the reference cache, inherited by workers
    monkeypatch.setenv("COLUMNS", "240")  # the table on one line per row
    out = tmp_path / "sweep"
    argv = ["calibrate-sweep", str(tiny_llama_dir), "--method", "gptq", "--scheme", "w4a16-g32", "--samples", "4,2",
            "--tokens", "256", "--window", "128", "--seq-len", "32", "--threads", "1", "--out", str(out), "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)["sweep"]
    assert first["quantized"] == 2 and first["failed"] == 0
    rows = {r["samples"]: r for r in first["rows"]}
    assert sorted(rows) == [2, 4]
    for r in rows.values():
        f = r["fidelity"]
        assert r["status"] == "ok" and r["quantized"] and not r["reused"]
        assert math.isfinite(f["kld_mean"]) and f["kld_mean"] >= 0 and f["tokens"] == 2 * 127  # two windows of 128
        assert 0 <= f["top1_pct"] <= 100 and f["ppl_ratio"] > 0
        assert r["quantize_cpu_s"] > 0 and r["quantize_wall_s"] > 0 and r["quantize_peak_rss_bytes"] > 0
        assert Path(r["artifact"], "quantmatch.json").is_file()
    manifest = json.loads(Path(rows[2]["artifact"], "quantmatch.json").read_text(encoding="utf-8"))
    assert manifest["details"]["calibration"] == {"source": "tiny-shakespeare", "samples": 2, "seq_len": 32, "seed": 0}
    assert [p["samples"] for p in first["plateaus"]] in ([2], [4]) and "95% half-width" in first["rule"]
    saved = json.loads((out / RESULTS_NAME).read_text(encoding="utf-8"))
    assert len(saved["rows"]) == 2
    mtimes = {n: Path(r["artifact"], "quantmatch.json").stat().st_mtime_ns for n, r in rows.items()}

    # a second run reuses every row: nothing is quantized or evaluated again
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)["sweep"]
    assert second["quantized"] == 0 and all(r["reused"] for r in second["rows"])
    assert [r["fidelity"] for r in second["rows"]] == [r["fidelity"] for r in first["rows"]]

    # without the results file the artifacts are still there: evaluated again, not quantized again
    (out / RESULTS_NAME).unlink()
    assert main(argv[:-1]) == 0
    table = capsys.readouterr().out
    assert "gptq w4a16-g32" in table and "stop helping" in table and "0 quantized now, 2 resumed" in table
    saved = json.loads((out / RESULTS_NAME).read_text(encoding="utf-8"))
    assert [r["quantized"] for r in saved["rows"]] == [False, False]
    assert {n: Path(r["artifact"], "quantmatch.json").stat().st_mtime_ns for n, r in rows.items()} == mtimes
    # the quantization's timing survives the lost results file (kept beside the artifact)
    assert all(r["quantize_cpu_s"] for r in saved["rows"])
