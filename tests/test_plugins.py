"""Plugin discovery and registration: every hook, isolation of each kind of breakage, switches."""

from __future__ import annotations

import json

import pytest

from quantmatch.registry import Registry
from quantmatch.sdk.pluginhost import BUILTIN_PLUGINS, PluginHost, module_plugin
from quantmatch.sdk.verdict import Level

BACKEND_SRC = """
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability
from quantmatch.sdk.verdict import Level

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


@pytest.mark.hook("register_backends")
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
from quantmatch.sdk.pluginhost import hookimpl
@hookimpl
def register_backends(register):
    raise RuntimeError('boom')
""", "register_backends raised RuntimeError: boom"),
    ("""
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability
from quantmatch.sdk.verdict import Level
class Bad(Backend):
    name = "bad-rt"
    targets = ("cuda",)
    capabilities = (Capability(Level.NATIVE, "", "", weights=("int8",)),)
@hookimpl
def register_backends(register):
    register(Bad)
""", "invalid backend declaration"),
    ("""
from quantmatch.sdk.pluginhost import hookimpl
@hookimpl
def register_quantiser(register):
    pass
""", "did you mean register_quantizers"),
])
@pytest.mark.hook("register_backends")
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


@pytest.mark.hook("register_backends")
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


@pytest.mark.hook("register_devices")
@pytest.mark.hook("register_capabilities")
def test_register_devices_and_capability_refinement() -> None:
    from quantmatch.sdk.capability import Capability, Requires
    from quantmatch.sdk.profile import Figure, HardwareProfile

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


@pytest.mark.hook("register_capabilities")
def test_refining_an_unknown_backend_breaks_only_that_plugin() -> None:
    from quantmatch.sdk.capability import Capability

    def register_capabilities(register):  # type: ignore[no-untyped-def]
        register("vllmm", Capability(Level.NATIVE, "x", "https://example.org", weights=("int8",)))

    host = PluginHost([("typo", module_plugin("typo", register_capabilities=register_capabilities))],
                      autoload=False)
    assert host.plugins["typo"].status == "broken"
    assert "did you mean vllm" in host.plugins["typo"].errors[0]


FLAKY_METHOD_SRC = """
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport

class Flaky(Quantizer):
    name = "flaky"
    support = SchemeSupport(weights=("int4",))
    schemes = ("w4a16-g128",)
    artifact_format = "compressed-tensors"
    source = "https://example.org/flaky"

    def check(self, model, scheme):
        if model is not None or "ALWAYS":
            raise RuntimeError("kaboom")
        return []

@hookimpl
def register_quantizers(register):
    register(Flaky)
"""


def _warnings(err: str, plugin: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("quantmatch: warning:") and plugin in ln]


@pytest.mark.hook("register_quantizers")
def test_check_that_raises_at_registration_marks_the_plugin_broken(fake_dist, capsys) -> None:
    from quantmatch.cli import main

    fake_dist("flaky-dist", "flaky_plugin", FLAKY_METHOD_SRC, ep_name="flaky", version="2.0")
    assert main(["registry", "--device", "h100", "--json"]) == 0
    out, err = capsys.readouterr()
    combos = json.loads(out)["combinations"]
    assert combos and not any(c["method"] == "flaky" for c in combos)
    assert len(_warnings(err, "flaky")) == 1 and "Flaky.check(None, 'w4a16-g128') raised RuntimeError" in err
    assert main(["plugins", "--json"]) == 0
    info = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}["flaky"]
    assert info["status"] == "broken" and "kaboom" in info["errors"][0]


@pytest.mark.hook("register_quantizers")
def test_check_that_raises_at_query_time_is_isolated(fake_dist, capsys, tmp_path) -> None:
    from quantmatch.cli import main
    from tests_support import SMOLLM2_CONFIG

    fake_dist("flaky-dist", "flaky_plugin", FLAKY_METHOD_SRC.replace(' or "ALWAYS"', ""), ep_name="flaky",
              version="2.0")
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    assert main(["registry", "--device", "h100", "--model", str(tmp_path), "--json"]) == 0
    out, err = capsys.readouterr()
    combos = json.loads(out)["combinations"]
    flaky = [c for c in combos if c["method"] == "flaky"]
    assert flaky and all(c["level"] == "unsupported" for c in flaky)
    text = flaky[0]["reasons"][0]["text"]
    assert text == "plugin 'flaky' (flaky-dist 2.0) failed: Flaky.check() raised RuntimeError: kaboom"
    assert flaky[0]["plugin"] == "flaky" and flaky[0]["plugin_version"] == "2.0"
    # everything else is judged as without the plugin
    gptq = {(c["scheme"], c["backend"]): c["level"] for c in combos if c["method"] == "gptq"}
    assert gptq[("w4a16-g64", "vllm")] != "unsupported" and gptq[("w4a16-g128", "vllm")] == "unsupported"
    assert len(_warnings(err, "flaky")) == 1  # once per plugin, however many combinations failed
    assert main(["explain", "flaky", "w4a16-g128", "vllm", "h100", "--model", str(tmp_path)]) == 0
    assert "Flaky.check() raised RuntimeError: kaboom" in " ".join(capsys.readouterr().out.split())


class _ExplodingSet(frozenset):  # type: ignore[type-arg]
    def __and__(self, other: object) -> frozenset:  # type: ignore[type-arg]
        raise TypeError("predicate exploded")


@pytest.mark.hook("register_capabilities")
def test_capability_predicate_that_raises_is_isolated(capsys) -> None:
    from quantmatch.sdk.capability import Capability, Requires

    def register_capabilities(register):  # type: ignore[no-untyped-def]
        register("vllm", Capability(Level.NATIVE, "odd", "https://example.org", weights=("int8",),
                                    when=Requires(features_any=_ExplodingSet({"int8"}))))

    host = PluginHost([("odd", module_plugin("odd", register_capabilities=register_capabilities))],
                      autoload=False)
    assert host.plugins["odd"].status == "ok"
    reg = Registry(host)
    v = reg.verdict("smoothquant", "w8a8-int8", "vllm", "h100")
    assert v.level is Level.UNSUPPORTED and v.provenance is not None and v.provenance.plugin == "odd"
    assert "plugin 'odd' (odd 0) failed: the device predicate of its capability 'odd' raised TypeError" \
        in v.reasons[0].text
    reg.verdict("smoothquant", "w8a8-int8", "vllm", "a100")
    assert len(_warnings(capsys.readouterr().err, "odd")) == 1
    assert host.plugins["odd"].status == "broken" and "predicate exploded" in host.plugins["odd"].errors[0]
    # rows the plugin does not reach are untouched
    assert reg.verdict("fp8", "w8a8-fp8", "vllm", "h100").level is Level.NATIVE


@pytest.mark.hook("register_capabilities")
@pytest.mark.parametrize(("reason", "expected"), [
    ("runs {weights} on {chip}", "unknown placeholder {chip}"),
    ("runs {0} fast", "unknown placeholder {0}"),
    ("runs {device.name}", "unknown placeholder {device.name}"),
    ("a lone { brace", "not a valid template"),
])
def test_reason_templates_are_validated_at_registration(capsys, reason: str, expected: str) -> None:
    from quantmatch.sdk.capability import Capability

    def register_capabilities(register):  # type: ignore[no-untyped-def]
        register("vllm", Capability(Level.NATIVE, reason, "https://example.org", weights=("int8",)))

    host = PluginHost([("tmpl", module_plugin("tmpl", register_capabilities=register_capabilities))],
                      autoload=False)
    assert host.plugins["tmpl"].status == "broken" and expected in host.plugins["tmpl"].errors[0]
    assert "{device}" in host.plugins["tmpl"].errors[0] or "literal brace" in host.plugins["tmpl"].errors[0]
    assert len(_warnings(capsys.readouterr().err, "tmpl")) == 1
    assert Registry(host).verdict("smoothquant", "w8a8-int8", "vllm", "h100").provenance.plugin != "tmpl"


@pytest.mark.hook("register_capabilities")
def test_refinements_are_listed_readably() -> None:
    from quantmatch.sdk.capability import Capability, readable_template

    long = ("keeps the KV cache in {weights} in its paged cache, which the vendor's runtime allocates per "
            "sequence on {device}")
    assert readable_template(long, 60) == "keeps the KV cache in <weights> in its paged cache, which…"

    def register_capabilities(register):  # type: ignore[no-untyped-def]
        register("vllm", Capability(Level.NATIVE, long, "https://example.org", weights=("int8",), targets=("cuda",)))

    host = PluginHost([("kv", module_plugin("kv", register_capabilities=register_capabilities))], autoload=False)
    (line,) = [c for c in host.plugins["kv"].contributed if c.startswith("refines vllm")]
    assert line == ("refines vllm: native for int8 on cuda (keeps the KV cache in <weights> in its paged cache, "
                    "which the vendor's runtime…)")
    assert "<device>" in host.precedence("vllm")[0] and "{" not in host.precedence("vllm")[0]
