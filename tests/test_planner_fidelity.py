"""Tolerances in fidelity terms: the KL-divergence and same-top-token priors, the bounds of a
:class:`~quantmatch.planner.Tolerance` (task classes, ``--max-kld``, ``--min-top1``), measured KLD from the
results store, the command line and the planner benchmark's comparison. No torch."""

from __future__ import annotations

import importlib.util
import json
import math
from io import StringIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from quantmatch.cli import main
from quantmatch.planner import (
    TOLERANCE_KLD,
    Plan,
    PlanInputError,
    QualityEstimate,
    Tolerance,
    kld_from_ppl,
    plan,
    plan_devices,
    prior_quality,
    top1_from_kld,
)
from quantmatch.planner.quality import size_factor
from quantmatch.registry import Registry
from quantmatch.sdk.pluginhost import PluginHost
from quantmatch.sdk.scheme import parse_scheme
from quantmatch.sdk.store import ResultRow, ResultsStore

REPO = Path(__file__).resolve().parents[1]
SMOL = 134_515_008
"""SmolLM2-135M's parameter count."""


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry(PluginHost())


@pytest.fixture
def no_store(tmp_path: Path) -> Path:
    """A results store that does not exist: every figure is a prior."""
    return tmp_path / "none.sqlite"


def P(model: str, device: str, reg: Registry, db: Path, **kw: Any) -> Plan:
    return plan(model, device, registry=reg, results_db=db, **kw)


def _bits(scheme: str) -> int:
    return int(parse_scheme(scheme).weight_bits or 16)


# ---- the priors: hand-checked on their anchors ----------------------------------------------------------
def test_kld_prior_of_a_gguf_type_is_the_published_figure_scaled_by_size() -> None:
    # llama.cpp tools/perplexity/README.md, LLaMA 3 8b Scoreboard (revision f364eb6f): Q4_K_M KLD 0.031273
    q = prior_quality(parse_scheme("gguf-q4_k_m"), "gguf", int(8e9), 4096)
    assert q.kld == pytest.approx(0.031273) and q.kld_basis == "prior" and "Scoreboard" in q.kld_source
    # by hand: 100 - 39 * 0.031273 ** 0.44 = 100 - 39 * 0.21773 = 91.51 (published Same top p: 91.901%)
    assert q.top1_pct == pytest.approx(91.51, abs=0.01) and abs(q.top1_pct - 91.901) < 1.0
    small = prior_quality(parse_scheme("gguf-q4_k_m"), "gguf", SMOL, 576)
    assert size_factor(SMOL) == pytest.approx(2.538, abs=1e-3)
    assert small.kld == pytest.approx(0.031273 * size_factor(SMOL))  # 0.0794
    q8 = prior_quality(parse_scheme("gguf-q8_0"), "gguf", int(8e9), 4096)
    assert q8.kld == pytest.approx(0.001355)
    base = prior_quality(parse_scheme("bf16"), None, int(8e9), 4096)
    assert (base.kld, base.top1_pct, base.kld_basis, base.top1_basis) == (0.0, 100.0, "baseline", "baseline")


def test_kld_from_ppl_is_the_stated_power_law_and_fits_its_anchors() -> None:
    # by hand for Q4_K_M: ln(6.407115 / 6.231636) = 0.02777; 0.68 * 0.02777 ** 0.85 = 0.03233
    pct = (6.407115 / 6.231636 - 1) * 100
    assert math.log1p(pct / 100) == pytest.approx(0.02777, abs=1e-5)
    assert kld_from_ppl(pct) == pytest.approx(0.03233, abs=2e-5)
    assert kld_from_ppl(0.0) == 0.0 and kld_from_ppl(-1.0) == 0.0
    # the in-sample fit (scoreboard PPL, KLD; reference PPL 6.231636) stays within the docstring's x0.69-x1.27
    anchors = {"q8_0": (6.234284, 0.001355), "q6_k": (6.253382, 0.005452), "q5_k_s": (6.336598, 0.016595),
               "q4_0": (6.700147, 0.071940), "q2_k": (9.751568, 0.445132)}
    for ppl, kld in anchors.values():
        assert 0.68 <= kld_from_ppl((ppl / 6.231636 - 1) * 100) / kld <= 1.28


def test_non_gguf_schemes_map_their_perplexity_prior_to_kld() -> None:
    for scheme, method in (("w8a16", "rtn"), ("w4a16-g128", "gptq"), ("w8a8-fp8", "fp8")):
        at8b = prior_quality(parse_scheme(scheme), method, int(8e9), 4096)
        assert at8b.kld == pytest.approx(kld_from_ppl(at8b.delta_pct)) and "mapped" in at8b.kld_source
        assert at8b.top1_pct == pytest.approx(top1_from_kld(at8b.kld))
        small = prior_quality(parse_scheme(scheme), method, SMOL, 576)  # computed at 8B, then x size_factor
        assert small.kld == pytest.approx(at8b.kld * size_factor(SMOL))
    assert prior_quality(parse_scheme("w4a16-g128"), "rtn", int(8e9), 4096).kld > \
        prior_quality(parse_scheme("w8a16"), "rtn", int(8e9), 4096).kld


def test_top1_mapping_checks_out_of_sample() -> None:
    # not used in the fit: SmolLM2-135M measured by an independent party (transformers fp32 vs llama.cpp)
    assert abs(top1_from_kld(0.0038) - 96.5) < 1.0 and abs(top1_from_kld(0.050) - 89.0) < 1.0
    # llama.cpp's BF16 vs FP16 comparison: KLD 0.00002515, Same top p 99.739%
    assert abs(top1_from_kld(0.00002515) - 99.739) < 0.2
    assert top1_from_kld(0.0) == 100.0 and top1_from_kld(100.0) == 0.0
    assert top1_from_kld(0.001) > top1_from_kld(0.01) > top1_from_kld(0.1)


# ---- the tolerance's bounds -------------------------------------------------------------------------
def test_task_classes_carry_a_kld_bound_and_keep_their_percentages() -> None:
    for name, pct in (("chat", 3.0), ("code", 1.0), ("reasoning", 0.5)):
        t = Tolerance.parse(name)
        assert (t.pct, t.max_kld, t.max_kld_from, t.min_top1) == (pct, TOLERANCE_KLD[name], name, None)
    assert TOLERANCE_KLD["reasoning"] < TOLERANCE_KLD["code"] < TOLERANCE_KLD["chat"]
    assert Tolerance.parse(None).max_kld == 0.04
    bare = Tolerance.parse("2.5%")
    assert bare.pct == 2.5 and bare.max_kld is None and bare.min_top1 is None
    assert Tolerance(3.0, "chat").max_kld is None  # the old two-field constructor still works


def test_explicit_bounds_replace_the_class_default() -> None:
    t = Tolerance.parse("reasoning", max_kld="0.02", min_top1="97")
    assert (t.pct, t.max_kld, t.max_kld_from, t.min_top1) == (0.5, 0.02, "--max-kld", 97.0)
    assert Tolerance.parse("chat", min_top1="97.5%").min_top1 == 97.5
    assert Tolerance.parse(Tolerance.parse("code"), max_kld=0.1).max_kld == 0.1
    assert Tolerance.parse(2, max_kld=0.02).max_kld == 0.02
    assert Tolerance.parse("chat", min_top1=100).min_top1 == 100.0
    d = t.to_dict()
    assert d == {"pct": 0.5, "label": "reasoning (<0.5%)", "max_kld": 0.02, "max_kld_from": "--max-kld",
                 "min_top1": 97.0}
    assert "--max-kld 0.02" in t.text and "--min-top1 97" in t.text
    assert "mean KLD <= 0.04 (chat)" in Tolerance.parse("chat").describe()


@pytest.mark.parametrize(("kw", "flag"), [
    ({"max_kld": "-1"}, "--max-kld"), ({"max_kld": 0}, "--max-kld"), ({"max_kld": "abc"}, "--max-kld"),
    ({"max_kld": "nan"}, "--max-kld"), ({"max_kld": "inf"}, "--max-kld"), ({"max_kld": "2%"}, "nats"),
    ({"min_top1": "0"}, "--min-top1"), ({"min_top1": 100.5}, "--min-top1"), ({"min_top1": "-3"}, "--min-top1"),
    ({"min_top1": "most"}, "--min-top1"),
])
def test_bad_bounds_are_refused_with_the_flag_and_what_it_takes(kw: dict[str, Any], flag: str) -> None:
    with pytest.raises(PlanInputError, match=flag):
        Tolerance.parse("chat", **kw)


def test_failures_name_the_bound_and_the_figures() -> None:
    q = QualityEstimate(2.0, "prior", "x", kld=0.045, kld_basis="prior", top1_pct=90.0, top1_basis="prior")
    assert Tolerance.parse("chat", max_kld=0.02).failures(q) == ["predicted KLD 0.045 > --max-kld 0.02"]
    assert Tolerance.parse("chat").failures(q) == ["predicted KLD 0.045 > the chat (2-3%) tolerance's KLD bound 0.04"]
    both = Tolerance.parse("code", min_top1=97).failures(q)
    assert len(both) == 3 and "+2.00% perplexity" in both[0] and "KLD 0.045 > " in both[1]
    assert both[2] == "predicted same top token 90.0% < --min-top1 97"
    measured = QualityEstimate(0.1, "prior", "x", kld=0.03, kld_basis="measured", top1_pct=99.0)
    assert Tolerance.parse("chat", max_kld=0.02).failures(measured) == ["measured KLD 0.03 > --max-kld 0.02"]
    assert Tolerance.parse(1000).failures(q) == []  # a bare percentage bounds the perplexity change only


# ---- plans ----------------------------------------------------------------------------------------
def test_a_tight_max_kld_rejects_4bit_plans_and_keeps_8bit_ones(reg: Registry, no_store: Path) -> None:
    loose = P("llama-3.1-8b", "h100", reg, no_store, tolerance=1000)
    tight = P("llama-3.1-8b", "h100", reg, no_store, tolerance=1000, max_kld=0.005)
    assert any(_bits(c.scheme) == 4 for c in loose.candidates)
    assert tight.status == "ok" and tight.tolerance.max_kld == 0.005
    assert all(c.quality.kld <= 0.005 for c in tight.candidates)
    assert not any(_bits(c.scheme) <= 4 for c in tight.candidates)
    eight = {c.scheme for c in tight.candidates if _bits(c.scheme) == 8}
    assert {"gguf-q8_0", "w8a16"} <= eight
    four = [r for r in tight.rejected("quality") if _bits(r.scheme) == 4]
    assert four and all("> --max-kld 0.005" in r.reason and "predicted KLD" in r.reason for r in four)
    # the same through plan_devices (the command line's path)
    [viaapi] = plan_devices("llama-3.1-8b", ["h100"], registry=reg, results_db=no_store, tolerance=1000,
                            max_kld="0.005")
    assert [c.key for c in viaapi.candidates] == [c.key for c in tight.candidates]


def test_min_top1_keeps_q8_0_and_rejects_q6_k(reg: Registry, no_store: Path) -> None:
    p = P("llama-3.1-8b", "h100", reg, no_store, tolerance=1000, min_top1=97)
    assert all(c.quality.top1_pct >= 97 for c in p.candidates)
    assert any(c.scheme == "gguf-q8_0" for c in p.candidates)  # predicted 97.9%
    q6 = [r for r in p.rejected("quality") if r.scheme == "gguf-q6_k"]  # predicted 96.1%
    assert q6 and all("same top token 96.1% < --min-top1 97" in r.reason for r in q6)


def test_the_code_class_rejects_q5_k_m_on_kld_alone(reg: Registry, no_store: Path) -> None:
    # at 8B, Q5_K_M is +0.89% perplexity (within code's 1%) but KLD 0.0108 > 0.01
    p = P("llama-3.1-8b", "h100", reg, no_store, tolerance="code")
    q5 = [r for r in p.rejected("quality") if r.scheme == "gguf-q5_k_m"]
    assert q5 and all(r.candidate is not None and r.candidate.quality.delta_pct <= 1.0 for r in q5)
    assert all(r.reason == "predicted KLD 0.0108 > the code (<1%) tolerance's KLD bound 0.01" for r in q5)
    assert all(c.quality.kld <= 0.01 and c.quality.delta_pct <= 1.0 for c in p.candidates)
    # a looser explicit bound replaces the class's: Q5_K_M comes back
    looser = P("llama-3.1-8b", "h100", reg, no_store, tolerance="code", max_kld=0.02)
    assert any(c.scheme == "gguf-q5_k_m" for c in looser.candidates)


def _fidelity_row(db: Path, scheme: str, kld: float, top1: float | None, method: str = "gguf",
                  backend: str = "llama.cpp") -> None:
    ResultsStore(db).add_result(ResultRow("smollm2-135m", method, scheme, backend, "local-cpu", None, None, None,
                                          None, None, "2026-01-01T00:00:00", kld_mean=kld, top1_pct=top1))


def test_measured_kld_replaces_the_prior(reg: Registry, tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    _fidelity_row(db, "gguf-q8_0", 0.0032, 95.2)
    _fidelity_row(db, "gguf-q4_k_m", 0.043, None)
    p = P("smollm2-135m", "h100", reg, db, tolerance=1000)
    q8 = [c for c in p.candidates if c.scheme == "gguf-q8_0"]
    assert q8 and all(c.quality.kld == 0.0032 and c.quality.kld_basis == "measured" for c in q8)
    assert all(c.quality.top1_pct == 95.2 and c.quality.top1_basis == "measured" for c in q8)
    assert all("results store" in c.quality.kld_source for c in q8)
    assert all(c.quality.basis == "prior" for c in q8)  # no perplexity change stored: that stays the prior
    q4 = [c for c in p.candidates if c.scheme == "gguf-q4_k_m"]
    assert q4 and all(c.quality.kld_basis == "measured" and c.quality.top1_basis == "prior" for c in q4)
    assert all(c.quality.top1_pct == pytest.approx(top1_from_kld(0.043)) for c in q4)
    q6 = [c for c in p.candidates if c.scheme == "gguf-q6_k"]
    assert q6 and all(c.quality.kld_basis == "prior" for c in q6)
    d = q8[0].to_dict()["quality"]
    assert d["kld"] == 0.0032 and d["kld_basis"] == "measured" and d["top1_pct"] == 95.2
    # the measured figure is what the bound is checked against
    tight = P("smollm2-135m", "h100", reg, db, tolerance=1000, max_kld=0.003)
    assert any(r.scheme == "gguf-q8_0" and r.reason == "measured KLD 0.0032 > --max-kld 0.003"
               for r in tight.rejected("quality"))


# ---- command line -----------------------------------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(("argv", "needle"), [
    (["--max-kld", "-1"], "--max-kld"), (["--max-kld", "0"], "--max-kld"), (["--max-kld", "x"], "--max-kld"),
    (["--min-top1", "0"], "--min-top1"), (["--min-top1", "101"], "--min-top1"),
])
def test_cli_bad_bounds_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code, out, err = run(capsys, "plan", "llama-3.1-8b", "--device", "h100", *argv)
    assert code == 2 and out == "" and needle in err
    code, out, err = run(capsys, "plan", "llama-3.1-8b", "--device", "h100", *argv, "--json")
    data = json.loads(out)
    assert code == 2 and needle in data["error"]["message"] and needle in err


def test_cli_json_has_the_bounds_and_the_fidelity_estimates(capsys: pytest.CaptureFixture[str], no_store: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(no_store))
    code, out, _ = run(capsys, "plan", "llama-3.1-8b", "--device", "h100", "--max-kld", "0.02", "--min-top1", "90",
                       "--json")
    p = json.loads(out)["plans"][0]
    assert code == 0 and p["tolerance"]["max_kld"] == 0.02 and p["tolerance"]["min_top1"] == 90.0
    assert p["tolerance"]["max_kld_from"] == "--max-kld" and p["tolerance"]["pct"] == 3.0
    assert p["plans"] and all(c["quality"]["kld"] <= 0.02 and c["quality"]["top1_pct"] >= 90 for c in p["plans"])
    assert all(c["quality"]["kld_basis"] in ("prior", "baseline") for c in p["plans"])
    assert any("--max-kld 0.02" in r["reason"] for r in p["rejected"] if r["stage"] == "quality")


def test_cli_measured_kld_from_the_store_named_by_the_environment(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "results.sqlite"
    _fidelity_row(db, "gguf-q8_0", 0.0032, 95.2)
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(db))
    code, out, _ = run(capsys, "plan", "smollm2-135m", "--device", "h100", "--tolerance", "1000", "--json")
    q8 = [c for c in json.loads(out)["plans"][0]["plans"] if c["scheme"] == "gguf-q8_0"]
    assert code == 0 and q8 and all(c["quality"]["kld_basis"] == "measured" for c in q8)


def test_plan_table_shows_kld_beside_the_perplexity_change(reg: Registry, no_store: Path) -> None:
    from rich.console import Console

    from quantmatch.cli.plan_view import print_plan

    p = P("llama-3.1-8b", "h100", reg, no_store, max_kld=0.02)
    buf = StringIO()
    print_plan(p, console=Console(file=buf, width=250, highlight=False, markup=False))
    text = buf.getvalue()
    assert "ΔPPL%" in text and "KLD" in text and "mean KLD <= 0.02 (--max-kld)" in text
    top = p.top
    assert top is not None and f"{top.quality.kld:.2g} p" in text


# ---- the planner benchmark's comparison --------------------------------------------------------------
def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_planner", REPO / "benchmarks" / "bench_planner.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_compares_predicted_and_measured_kld(reg: Registry, tmp_path: Path, no_store: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(no_store))
    bench = _bench()
    p = P("smollm2-135m", "h100", reg, no_store, tolerance=1000)
    q8 = next(c for c in p.candidates if c.scheme == "gguf-q8_0" and c.backend == "llama.cpp")
    q4 = next(c for c in p.candidates if c.scheme == "gguf-q4_0" and c.backend == "llama.cpp")
    empty = bench.fidelity(q8, store=no_store)
    assert empty["measured_kld"] is None and empty["kld_status"] == "not measured"
    db = tmp_path / "results.sqlite"
    _fidelity_row(db, "gguf-q8_0", 0.0032, 95.2)
    _fidelity_row(db, "gguf-q4_0", 0.9, 50.0)
    got = bench.fidelity(q8, store=db)
    assert got["measured_kld"] == 0.0032 and got["kld_status"] == "within goal"
    assert got["kld_ratio"] == pytest.approx(q8.quality.kld / 0.0032, abs=1e-3)
    assert bench.fidelity(q4, store=db)["kld_status"] == "outside goal"  # 0.18 predicted: x0.2
    # the report works with measured and unmeasured rows alike
    rows = [bench.skipped_row("llama.cpp q8_0", q8, "not run in this test"),
            {"combination": "x", "skipped": "no prediction either", "key": ["a", "b", "c", "d"]}]
    rows[0].update(got)
    machine = {"cpus": 2, "copy_bandwidth_gbs": 20.0, "fp32_tflops": 0.1, "load_avg": (0.0, 0.0, 0.0)}
    bench.report(machine, rows, out=tmp_path / "planner.json")
    written = json.loads((tmp_path / "planner.json").read_text())
    assert written["within_goal"]["kld"] == "1/1 with a measured KLD"
    assert "pred KLD" in capsys.readouterr().out
