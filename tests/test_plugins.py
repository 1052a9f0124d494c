"""Plugin discovery and registration: every hook, isolation of each kind of breakage, switches."""

from __future__ import annotations

import pytest

from quantmatch.pluginhost import BUILTIN_PLUGINS, PluginHost, module_plugin
from quantmatch.registry import Registry
from quantmatch.verdict import Level

BACKEND_SRC = """
from quantmatch.pluginhost import hookimpl
from quantmatch.backend import Backend
from quantmatch.capability import Capability
from quantmatch.verdict import Level

class Turbo(Backend):
    name = "turbo-rt"
    targets = ("cuda", "cpu")
    formats = ("compressed-tensors",)
    source = "https://example.org/turbo"
    capabilities = (Capability(Level.NATIVE, "turbo runs int8 on everything", "https://example.org/turbo",
                               weights=("int8",), activations=("int8",)),)

@hookimpl
def register_backends(register):
    register(Turbo)
"""


def test_builtins_register_through_every_hook() -> None:
    host = PluginHost(autoload=False)
    assert all(host.plugins[m].status == "ok" for m in BUILTIN_PLUGINS)
    assert {"nvidia", "amd-rocm", "apple-metal", "x86-cpu", "arm-cpu"} <= set(host.families)
    assert {"quanto", "hqq", "gguf", "gptq", "awq", "smoothquant"} <= set(host.quantizers)
    assert {"torch", "onnxruntime", "llama.cpp", "vllm", "tensorrt-llm", "bitsandbytes", "mlx",
            "hardware"} <= set(host.backends)
    assert len(host.devices) >= 46
    for table in (host.families, host.devices, host.quantizers, host.backends):
        for entry in table.values():
            assert entry.provenance.distribution == "quantmatch"
            assert entry.provenance.version
            assert entry.provenance.plugin.startswith("quantmatch.plugins.")


def test_third_party_entry_point_contributes_with_provenance(fake_dist) -> None:
    fake_dist("turbo-dist", "turbo_plugin", BACKEND_SRC, ep_name="turbo", version="2.5")
    host = PluginHost()
    info = host.plugins["turbo"]
    assert info.status == "ok" and info.distribution == "turbo-dist" and info.version == "2.5"
    assert host.backends["turbo-rt"].provenance.version == "2.5"
    v = Registry(host).verdict("smoothquant", "w8a8-int8", "turbo-rt", "h100")
    assert v.level is Level.NATIVE
    assert v.provenance is not None and v.provenance.plugin == "turbo"


@pytest.mark.parametrize(("source", "expected_error"), [
    ("raise ImportError('no module named turbo_kernels')", "import failed: ImportError"),
    ("""
from quantmatch.pluginhost import hookimpl
@hookimpl
def register_backends(register):
    raise RuntimeError('boom')
""", "register_backends raised RuntimeError: boom"),
    ("""
from quantmatch.pluginhost import hookimpl
from quantmatch.backend import Backend
from quantmatch.capability import Capability
from quantmatch.verdict import Level
class Bad(Backend):
    name = "bad-rt"
    targets = ("cuda",)
    capabilities = (Capability(Level.NATIVE, "", "", weights=("int8",)),)
@hookimpl
def register_backends(register):
    register(Bad)
""", "invalid backend declaration"),
    ("""
from quantmatch.pluginhost import hookimpl
@hookimpl
def register_quantiser(register):
    pass
""", "did you mean register_quantizers"),
])
def test_broken_plugin_is_isolated(fake_dist, capsys: pytest.CaptureFixture[str], source: str,
                                   expected_error: str) -> None:
    fake_dist("broken-dist", "broken_plugin", source, ep_name="broken")
    host = PluginHost()
    info = host.plugins["broken"]
    assert info.status == "broken"
    assert any(expected_error in e for e in info.errors), info.errors
    err = capsys.readouterr().err
    warning_lines = [ln for ln in err.splitlines() if "broken" in ln]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("quantmatch: warning:")
    # everything else still works
    assert "vllm" in host.backends and "bad-rt" not in host.backends
    assert Registry(host).verdict("fp8", "w8a8-fp8", "vllm", "h100").level is Level.NATIVE


def test_name_collision_is_refused_naming_both_plugins(fake_dist, capsys: pytest.CaptureFixture[str]) -> None:
    src = BACKEND_SRC.replace('name = "turbo-rt"', 'name = "vllm"')
    fake_dist("impostor-dist", "impostor_plugin", src, ep_name="impostor", version="0.3")
    host = PluginHost()
    assert host.backends["vllm"].provenance.distribution == "quantmatch"
    err = " ".join(host.plugins["impostor"].errors)
    assert "impostor" in err and "quantmatch.plugins.backends.vllm" in err and "refused" in err
    assert "collides" in capsys.readouterr().err


def test_environment_switches(fake_dist, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist("turbo-dist", "turbo_plugin", BACKEND_SRC, ep_name="turbo")
    monkeypatch.setenv("QUANTMATCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "turbo" not in PluginHost().plugins
    monkeypatch.delenv("QUANTMATCH_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("QUANTMATCH_PLUGINS", "someone-else")
    host = PluginHost()
    assert host.plugins["turbo"].status == "blocked" and "turbo-rt" not in host.backends
    monkeypatch.setenv("QUANTMATCH_PLUGINS", "turbo")
    assert "turbo-rt" in PluginHost().backends
    monkeypatch.delenv("QUANTMATCH_PLUGINS")
    monkeypatch.setenv("QUANTMATCH_BLOCK_PLUGINS", "turbo-dist,backends.mlx")
    host = PluginHost()
    assert host.plugins["turbo"].status == "blocked"
    assert host.plugins["quantmatch.plugins.backends.mlx"].status == "blocked" and "mlx" not in host.backends


def test_register_devices_and_capability_refinement() -> None:
    from quantmatch.capability import Capability, Requires
    from quantmatch.profile import Figure, HardwareProfile

    chip = HardwareProfile(
        id="acme_x1", name="ACME X1", vendor="acme", family="nvidia", arch="sm_90", compute_capability=9.0,
        targets=("cuda",), features=frozenset({"fp16", "bf16", "int8", "fp8-e4m3fn", "fp32"}),
        memory=Figure(96, "GB", "https://example.org/x1"), bandwidth=Figure(4000, "GB/s", "https://example.org/x1"),
    )

    def register_devices(register):  # type: ignore[no-untyped-def]
        register(chip)

    def register_capabilities(register):  # type: ignore[no-untyped-def]
        register("vllm", Capability(Level.UNSUPPORTED, "ACME firmware 1.0 disables FP8 in vLLM",
                                    "https://example.org/x1-errata", weights=("fp8-e4m3",),
                                    when=Requires(archs=frozenset({"sm_90"}),
                                                  features_all=frozenset({"fp8-e4m3fn"}))))

    plugin = module_plugin("acme", register_devices=register_devices,
                           register_capabilities=register_capabilities)
    host = PluginHost([("acme", plugin)], autoload=False)
    reg = Registry(host)
    assert reg.device("acme_x1").provenance.plugin == "acme"
    v = reg.verdict("fp8", "w8a8-fp8", "vllm", "acme_x1")
    assert v.level is Level.UNSUPPORTED and v.provenance.plugin == "acme"
    assert "ACME firmware" in v.reasons[0].text
    assert any("refines vllm" in c for c in host.plugins["acme"].contributed)
    # the refinement applies to every sm_90 device with FP8: that is the documented precedence
    assert reg.verdict("fp8", "w8a8-fp8", "vllm", "h100").level is Level.UNSUPPORTED
    assert reg.verdict("fp8", "w8a8-fp8", "vllm", "l40s").level is Level.NATIVE


def test_refining_an_unknown_backend_breaks_only_that_plugin() -> None:
    from quantmatch.capability import Capability

    def register_capabilities(register):  # type: ignore[no-untyped-def]
        register("vllmm", Capability(Level.NATIVE, "x", "https://example.org", weights=("int8",)))

    host = PluginHost([("typo", module_plugin("typo", register_capabilities=register_capabilities))],
                      autoload=False)
    assert host.plugins["typo"].status == "broken"
    assert "did you mean vllm" in host.plugins["typo"].errors[0]
