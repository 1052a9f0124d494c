"""The example plugin tested the way any plugin author tests theirs: quantmatch.testing's contract suite
and its ``quantmatch_plugin`` fixture (available through quantmatch's pytest11 entry point)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from quantmatch_example_plugin import plugin
from quantmatch_example_plugin.backend import OptimumHabanaBackend
from quantmatch_example_plugin.gaudi import IntelGaudiFamily
from quantmatch_example_plugin.method import IncFp8Quantizer

from quantmatch.pluginhost import PluginHost
from quantmatch.registry import Registry
from quantmatch.testing import BackendContract, DeviceFamilyContract, QuantizerContract
from quantmatch.verdict import Level


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
