"""The plugin contract suite (quantmatch.testing) run against every built-in plugin.

The same classes third-party authors subclass; here each contract fixture is parametrised over the
built-in quantizers, backends and device families.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from quantmatch.sdk.backend import Backend
from quantmatch.sdk.device import DeviceFamily
from quantmatch.sdk.pluginhost import PluginHost
from quantmatch.sdk.quantizer import Quantizer
from quantmatch.testing import BackendContract, DeviceFamilyContract, QuantizerContract, RunnerContract

BUILTIN = PluginHost(autoload=False)
QUANTIZERS = [BUILTIN.quantizers[k].obj for k in sorted(BUILTIN.quantizers)]
BACKENDS = [BUILTIN.backends[k].obj for k in sorted(BUILTIN.backends)]
FAMILIES = [BUILTIN.families[k].obj for k in sorted(BUILTIN.families)]
RUNNABLE = [b for b in BACKENDS if b.runner]

VENDOR_MODULES = {
    "nvidia": ("pynvml",),
    "amd-rocm": ("amdsmi",),
    "apple-metal": (),
    "intel-gpu": (),
    "x86-cpu": ("cpuinfo",),
    "arm-cpu": ("cpuinfo",),
}
"""The vendor libraries each built-in family's detect() uses (blocked to prove it degrades)."""


def test_the_suite_covers_every_builtin() -> None:
    assert {q.name for q in QUANTIZERS} == set(BUILTIN.quantizers) and len(QUANTIZERS) >= 12
    assert {b.name for b in BACKENDS} == set(BUILTIN.backends) and len(BACKENDS) >= 11
    assert set(VENDOR_MODULES) == set(BUILTIN.families)


class TestBuiltinQuantizers(QuantizerContract):
    @pytest.fixture(params=QUANTIZERS, ids=lambda q: q.name)
    def quantizer_class(self, request: pytest.FixtureRequest) -> type[Quantizer]:
        return request.param  # type: ignore[no-any-return]

    def load_artifact(self, quantizer: Quantizer, result: Any, out: Path) -> Any:
        if quantizer.name == "gguf":
            from quantmatch.plugins.methods.gguf import load_for_eval

            model = load_for_eval(result.path)
            return model if model is not None else None
        return super().load_artifact(quantizer, result, out)


class TestBuiltinBackends(BackendContract):
    @pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
    def backend_class(self, request: pytest.FixtureRequest) -> type[Backend]:
        return request.param  # type: ignore[no-any-return]


class TestBuiltinRunners(RunnerContract):
    @pytest.fixture(params=RUNNABLE, ids=lambda b: b.name)
    def backend_class(self, request: pytest.FixtureRequest) -> type[Backend]:
        return request.param  # type: ignore[no-any-return]

    @pytest.fixture(autouse=True)
    def _quick_method(self, backend_class: type[Backend], monkeypatch: pytest.MonkeyPatch) -> None:
        # compressed-tensors checkpoints: round-to-nearest writes them quickest (no calibration)
        if "compressed-tensors" in backend_class.formats:
            monkeypatch.setattr(self, "method", "rtn")


def test_every_executable_builtin_names_its_runner() -> None:
    assert {b.name for b in RUNNABLE} == {"torch", "optimum-quanto", "hqq", "onnxruntime", "llama.cpp"}


class TestBuiltinDeviceFamilies(DeviceFamilyContract):
    @pytest.fixture(params=FAMILIES, ids=lambda f: f.name)
    def family_class(self, request: pytest.FixtureRequest) -> type[DeviceFamily]:
        return request.param  # type: ignore[no-any-return]

    @pytest.fixture(autouse=True)
    def _vendor(self, family_class: type[DeviceFamily], monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(self, "vendor_modules", VENDOR_MODULES[family_class.name])


# ---- the kit itself -------------------------------------------------------------------------------
def test_the_suite_catches_a_check_that_reaches_for_torch() -> None:
    from quantmatch.plugins.methods.quanto import QuantoQuantizer

    class Greedy(QuantoQuantizer):
        name = "greedy"

        def check(self, model: Any, scheme: Any) -> list[Any]:
            with contextlib.suppress(ImportError):
                import torch  # noqa: F401  (what the contract forbids)
            return []

    with pytest.raises(AssertionError, match="tried to import"):
        QuantizerContract().test_check_never_loads_weights(Greedy)


def test_the_suite_catches_an_undeclared_combination() -> None:
    from quantmatch.sdk.capability import Capability
    from quantmatch.sdk.verdict import Level
    from quantmatch.testing.contracts import _host_for

    class Partial(Backend):
        name = "partial-rt"
        description = "declares int8 only, with no catch-all row"
        targets = ("cuda",)
        formats = ("compressed-tensors",)
        source = "https://example.org/partial"
        capabilities = (Capability(Level.NATIVE, "int8 everywhere", "https://example.org/partial",
                                   weights=("int8",), activations=("int8",)),)

    with pytest.raises(AssertionError, match="deciding reason has no source"):
        BackendContract().test_verdict_reasons_are_sourced_on_every_catalog_device(
            Partial, _host_for(Partial, None, "backends"))


def test_blocked_imports_hides_and_restores() -> None:
    import importlib.util
    import json as real_json
    import sys

    from quantmatch.testing import blocked_imports
    with blocked_imports("json") as attempts:
        assert importlib.util.find_spec("json") is None
        with pytest.raises(ModuleNotFoundError):
            import json  # noqa: F401
        assert attempts == ["json"]
    assert sys.modules["json"] is real_json


@pytest.mark.hook("register_backends")
def test_registered_plugin_installs_and_restores_the_host(quantmatch_plugin: Any) -> None:
    from quantmatch.registry import Registry
    from quantmatch.sdk import pluginhost
    from quantmatch.sdk.capability import Capability
    from quantmatch.sdk.verdict import Level
    from quantmatch.testing import PluginRegistrationError, registered_plugin

    class Turbo(Backend):
        name = "turbo-rt"
        description = "a test runtime"
        targets = ("cuda",)
        formats = ("compressed-tensors",)
        source = "https://example.org/turbo"
        capabilities = (Capability(Level.NATIVE, "turbo runs int8", "https://example.org/turbo"),)

    before = pluginhost.get_host()
    with registered_plugin(Turbo, "turbo") as host:
        assert pluginhost.get_host() is host and "turbo-rt" in Registry().host.backends
    assert pluginhost.get_host() is before
    host = quantmatch_plugin(Turbo)  # the fixture form: undone when the test ends
    assert pluginhost.get_host() is host and host.plugins["Turbo"].status == "ok"

    class Nameless(Backend):
        targets = ("cuda",)

    with pytest.raises(PluginRegistrationError, match="has no name"), registered_plugin(Nameless):
        pass


def test_tiny_models(tiny_llama_dir: Path, tiny_gpt2_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from quantmatch.sdk.model_info import ModelInfo
    from quantmatch.testing import TINY_LLAMA_CONFIG, tiny_model_info

    saved = ModelInfo.from_path(tiny_llama_dir)
    assert list(saved.linear_layers()) == list(tiny_model_info("llama").linear_layers())
    assert ModelInfo.from_path(tiny_gpt2_dir).model_type == "gpt2"
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_llama_dir)
    ids = tok("the model weights", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == TINY_LLAMA_CONFIG["vocab_size"] == len(tok)


# ---- hooks the example plugin relies on: a family that adds a target, refinements that extend a backend --
@pytest.mark.hook("register_device_families")
@pytest.mark.hook("register_quantizers")
@pytest.mark.hook("register_capabilities")
def test_a_family_adds_a_target_and_a_refinement_teaches_a_builtin_backend_to_use_it() -> None:
    from quantmatch.registry import Registry
    from quantmatch.sdk.capability import Capability, Requires
    from quantmatch.sdk.pluginhost import module_plugin
    from quantmatch.sdk.profile import Figure, HardwareProfile
    from quantmatch.sdk.quantizer import SchemeSupport
    from quantmatch.sdk.verdict import Level

    chip = HardwareProfile(id="acme_npu1", name="ACME NPU 1", vendor="acme", family="acme-npu", arch="npu1",
                           targets=("npu",), features=frozenset({"bf16", "int8"}),
                           memory=Figure(32, "GB", "https://example.org/npu1"))

    class AcmeFamily(DeviceFamily):
        name = "acme-npu"
        vendor = "acme"
        description = "ACME NPUs"
        targets = ("npu",)

        @classmethod
        def catalog(cls) -> tuple[HardwareProfile, ...]:
            return (chip,)

    class AcmeInt8(Quantizer):
        name = "acme-int8"
        description = "ACME int8"
        support = SchemeSupport(weights=("int8",), activations=("int8",), group_sizes=(0,))
        schemes = ("w8a8-int8",)
        artifact_format = "compressed-tensors"
        source = "https://example.org/acme-int8"

    def register_device_families(register: Any) -> None:
        register(AcmeFamily)

    def register_quantizers(register: Any) -> None:
        register(AcmeInt8)

    def register_capabilities(register: Any) -> None:
        npu = Requires(families=frozenset({"acme-npu"}))
        register("vllm", Capability(Level.NATIVE, "ACME's vLLM fork runs int8 on the NPU", "https://example.org/v",
                                    weights=("int8",), activations=("int8",), targets=("npu",), when=npu))
        register("vllm", Capability(Level.UNSUPPORTED, "nothing else on the NPU", "https://example.org/v",
                                    layers=("linear", "moe", "kv-cache"), targets=("npu",)))

    plugin = module_plugin("acme", register_device_families=register_device_families,
                           register_quantizers=register_quantizers, register_capabilities=register_capabilities)
    host = PluginHost([("acme", plugin)], autoload=False)
    assert host.plugins["acme"].status == "ok", host.plugins["acme"].errors
    assert host.targets[-1] == "npu" and "refines vllm: adds target npu" in host.plugins["acme"].contributed
    assert "npu" in host.backends["vllm"].obj.targets and "npu" not in BUILTIN.backends["vllm"].obj.targets
    reg = Registry(host)
    v = reg.verdict("acme-int8", "w8a8-int8", "vllm", "acme_npu1")
    assert (v.level, v.target, v.provenance.plugin) == (Level.NATIVE, "npu", "acme")
    assert reg.verdict("fp8", "w8a8-fp8", "vllm", "acme_npu1").level is Level.UNSUPPORTED
    assert reg.verdict("fp8", "w8a8-fp8", "vllm", "h100").provenance.plugin == "quantmatch.plugins.backends.vllm"
    assert host.precedence("vllm")[0].startswith("1. acme (acme 0): native - ACME's vLLM fork")
    assert host.precedence("vllm")[-1].startswith("3. then the ")

    # without the family, the target is unknown and the refinement is refused
    lone = PluginHost([("lone", module_plugin("lone", register_capabilities=register_capabilities))],
                      autoload=False)
    assert lone.plugins["lone"].status == "broken" and "unknown target 'npu'" in lone.plugins["lone"].errors[0]
