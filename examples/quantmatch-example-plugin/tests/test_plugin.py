"""The example plugin tested the way any plugin author tests theirs: quantmatch.testing's contract suite
and its ``quantmatch_plugin`` fixture (available through quantmatch's pytest11 entry point)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from quantmatch_example_plugin import plugin
from quantmatch_example_plugin.backend import OptimumHabanaBackend
from quantmatch_example_plugin.gaudi import IntelGaudiFamily
from quantmatch_example_plugin.int8 import ExampleInt8Quantizer, ExampleTorchBackend
from quantmatch_example_plugin.method import IncFp8Quantizer

from quantmatch.registry import Registry
from quantmatch.sdk.pluginhost import PluginHost
from quantmatch.sdk.quantizer import Quantizer
from quantmatch.sdk.verdict import Level
from quantmatch.testing import BackendContract, DeviceFamilyContract, QuantizerContract, RunnerContract


class TestGaudiFamily(DeviceFamilyContract):
    family = IntelGaudiFamily
    plugin = plugin
    vendor_modules = ("habana_frameworks",)


class TestOptimumHabana(BackendContract):
    backend = OptimumHabanaBackend
    plugin = plugin  # the backend runs on `hpu`, a target the plugin's device family adds


class TestIncFp8(QuantizerContract):
    quantizer = IncFp8Quantizer
    plugin = plugin
    roundtrip_skip = "declared only: INC's FP8 mode measures and quantizes on an Intel Gaudi HPU"


class TestExampleTorch(BackendContract):
    backend = ExampleTorchBackend
    plugin = plugin


class TestExampleTorchRunner(RunnerContract):
    """The runner example-torch names: its declarations, then a real run on an example-int8 artifact of the
    tiny Llama (logits, NLL, greedy decoding through the KV cache, peak memory, verify's micro-probe)."""

    backend = ExampleTorchBackend
    plugin = plugin


def float_and_quantized_logits(model_dir: Path, dtype: str = "float32") -> tuple[Any, Any]:
    """Logits of the float model at ``model_dir`` and of the same model quantized in memory."""
    import torch
    from quantmatch_example_plugin.int8_torch import quantize_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    with torch.no_grad():
        before = model(token_ids()).logits
        quantize_model(model)
        return before, model(token_ids()).logits


def token_ids() -> Any:
    """A fixed batch of 16 token ids of the tiny vocabulary."""
    import torch

    return torch.arange(1, 17).unsqueeze(0)


class TestExampleInt8(QuantizerContract):
    """The round trip runs for real: quantize() writes, load() reads back the same model."""

    quantizer = ExampleInt8Quantizer
    plugin = plugin

    def check_loaded(self, quantizer: Quantizer, result: Any, loaded: Any, model_dir: Path) -> None:
        import torch

        super().check_loaded(quantizer, result, loaded, model_dir)
        _, in_memory = float_and_quantized_logits(model_dir)
        with torch.no_grad():
            assert torch.equal(loaded(token_ids()).logits, in_memory)
        assert sorted(p.name for p in result.path.iterdir()) == [
            "config.json", "example-int8.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


@pytest.mark.hook("register_device_families")
@pytest.mark.hook("register_quantizers")
@pytest.mark.hook("register_backends")
@pytest.mark.hook("register_capabilities")
def test_fp8_on_gaudi2_is_native_and_decided_by_this_plugin(quantmatch_plugin: Callable[..., PluginHost]) -> None:
    quantmatch_plugin(plugin, "example-gaudi")
    reg = Registry()  # built on the process-wide host, which now includes the plugin
    v = reg.verdict("inc-fp8", "w8a8-fp8-static", "optimum-habana", "gaudi2")
    assert v.level is Level.NATIVE and v.target == "hpu"
    assert v.provenance is not None and v.provenance.plugin == "example-gaudi"
    # the refinement of the built-in vLLM backend, for Gaudi only
    assert reg.verdict("fp8", "w8a8-fp8", "vllm", "gaudi2").level is Level.NATIVE
    assert reg.verdict("awq", "w4a16-g128-asym-bf16", "vllm", "gaudi2").level is Level.WEIGHT_ONLY
    assert reg.verdict("awq", "w4a16-g128-asym", "vllm", "gaudi2").level is Level.UNSUPPORTED
    # ... which leaves every other device alone
    a100 = reg.verdict("fp8", "w8a8-fp8", "vllm", "a100")
    assert a100.level is Level.WEIGHT_ONLY and a100.provenance.plugin == "quantmatch.plugins.backends.vllm"


def test_every_gaudi2_figure_is_sourced() -> None:
    (gaudi2,) = IntelGaudiFamily.catalog()
    assert gaudi2.memory.value == 96 and gaudi2.bandwidth.value == 2450
    assert gaudi2.peak("bf16").value == 432 and gaudi2.peak("fp8").confidence == "disputed"
    for fig in (gaudi2.memory, gaudi2.bandwidth, *gaudi2.peaks.values()):
        assert fig.source.startswith(("https://", "stas00/"))


def test_quantize_says_it_needs_a_gaudi() -> None:
    with pytest.raises(NotImplementedError, match="HPU"):
        IncFp8Quantizer().quantize("model", "w8a8-fp8-static", "out")


# ---- example-int8: a method that really quantizes -------------------------------------------------
@pytest.mark.parametrize(("scheme", "dtype"), [("w8a32", "float32"), ("w8a16-bf16", "bfloat16")])
def test_example_int8_quantizes_for_real(tiny_llama_dir: Path, tmp_path: Path, scheme: str, dtype: str) -> None:
    import torch
    from quantmatch_example_plugin.int8_torch import Int8Linear

    result = ExampleInt8Quantizer().quantize(tiny_llama_dir, scheme, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "example-int8.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "example-int8" and (manifest["scheme"], manifest["dtype"]) == (scheme, dtype)
    assert len(manifest["modules"]) == 14 and "lm_head" not in manifest["modules"]  # 2 layers x 7 projections
    model = ExampleInt8Quantizer().load(result.path)
    down = model.get_submodule("model.layers.0.mlp.down_proj")
    assert isinstance(down, Int8Linear) and down.qweight.dtype == torch.int8 and down.qweight.abs().max() == 127
    assert isinstance(model.lm_head, torch.nn.Linear) and model.lm_head.weight.dtype == getattr(torch, dtype)
    # the weights are within half a quantization step of the originals ...
    from transformers import AutoModelForCausalLM

    source = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=getattr(torch, dtype))
    original = source.get_submodule("model.layers.0.mlp.down_proj").weight.float()  # what was quantized
    error = (down.dequantized(torch.float32) - original).abs()
    assert bool((error <= down.scale[:, None] / 2 + 1e-7).all())
    # ... so the logits move, but only a little; loading gives exactly the in-memory quantized model
    before, in_memory = float_and_quantized_logits(tiny_llama_dir, dtype)
    with torch.no_grad():
        loaded = model(token_ids()).logits
    assert torch.equal(loaded, in_memory) and loaded.dtype == getattr(torch, dtype)
    drift = (loaded.float() - before.float()).abs().max().item()
    assert 0 < drift < 0.05 * before.abs().max().item()


def test_example_int8_through_quantmatch_quantize_and_load(quantmatch_plugin: Callable[..., PluginHost],
                                                          tiny_llama_dir: Path, tmp_path: Path) -> None:
    """quantmatch's own pipeline (what `quantmatch quantize` and `quantmatch eval` call) runs the plugin."""
    import torch

    from quantmatch.sdk.pipeline import load_artifact, quantize

    quantmatch_plugin(plugin, "example-gaudi")
    result = quantize(tiny_llama_dir, "example-int8", "w8a32", tmp_path / "q")
    assert (result.method, result.scheme, result.manifest.artifact_format) == ("example-int8", "w8a32", "example-int8")
    assert result.manifest.details["quantized_modules"] == {"int8": 14}
    artifact = load_artifact(tmp_path / "q")
    assert artifact.tokenizer is not None
    ids = artifact.tokenizer("the model weights", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(artifact.model(ids).logits, ExampleInt8Quantizer().load(tmp_path / "q")(ids).logits)


@pytest.mark.hook("register_quantizers")
@pytest.mark.hook("register_backends")
def test_example_int8_runs_on_cpus_through_example_torch(quantmatch_plugin: Callable[..., PluginHost]) -> None:
    quantmatch_plugin(plugin, "example-gaudi")
    reg = Registry()
    spr = reg.verdict("example-int8", "w8a16-bf16", "example-torch", "intel_sapphire_rapids")
    assert spr.level is Level.WEIGHT_ONLY and spr.target == "cpu" and "bf16 units" in spr.reasons[0].text
    clx = reg.verdict("example-int8", "w8a16-bf16", "example-torch", "intel_cascade_lake_sp")
    assert clx.level is Level.WEIGHT_ONLY and "lowers it" in clx.reasons[0].text  # no AVX512_BF16
    assert reg.verdict("example-int8", "w8a32", "example-torch", "gaudi2").level is Level.UNSUPPORTED
    assert reg.verdict("rtn", "w8a16", "example-torch", "intel_sapphire_rapids").level is Level.UNSUPPORTED
    assert {v.backend for v in reg.combinations("intel_sapphire_rapids", method="example-int8")} >= {"example-torch"}


def test_registering_and_checking_never_import_torch() -> None:
    from quantmatch.testing import blocked_imports, tiny_model_info

    with blocked_imports() as attempts:
        host = PluginHost([("example-gaudi", plugin)], autoload=False)
        problems = ExampleInt8Quantizer().check(tiny_model_info("gpt2"), "w8a32")
    assert attempts == [] and host.plugins["example-gaudi"].status == "ok"
    assert [p.text for p in problems] == ["example-int8 does not support architecture 'gpt2' "
                                          "(supported: llama, mistral, qwen2)"]
