"""Planning priors are plugin data: the planner's predictions follow what a backend or a method
declares (``Backend.priors``, ``Quantizer.priors``), a third-party one included, and the planner
itself names no built-in backend or method."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import quantmatch
from quantmatch.planner import Candidate, Plan, device_spec, with_measurements
from quantmatch.planner.priors import DEFAULT_CPU
from quantmatch.registry import Registry
from quantmatch.sdk.pluginhost import PluginHost, module_plugin
from quantmatch.sdk.priors import ACCELERATOR, JobPriors, MethodPriors, QualityPriors, RuntimePriors, priors_for_target

example = pytest.importorskip("quantmatch_example_plugin.int8", reason="the example plugin is not installed")
METHOD: Any = example.ExampleInt8Quantizer
BACKEND: Any = example.ExampleTorchBackend

PLANNER = Path(__file__).resolve().parents[1] / "planner"
NUMBER_FORMAT_WORDS = frozenset({"fp8"})
"""Built-in names that are also number-format words (``w8a8-fp8``, ``cast_eff={"fp8": ...}``)."""


def _plugin(backend: type[Any] = BACKEND, method: type[Any] = METHOD) -> object:
    return module_plugin("priors-under-test", register_quantizers=lambda register: register(method),
                         register_backends=lambda register: register(backend))


@pytest.fixture(scope="module")
def here() -> Any:
    """This machine with a fixed bandwidth (the copy test would differ from one plan to the next)."""
    local = Registry(PluginHost(autoload=False)).local()
    return with_measurements(device_spec(local, measure=True), bandwidth_gbs=20.0)


def _example(p: Plan, scheme: str = "w8a32") -> Candidate:
    return next(c for c in p.candidates if c.method == METHOD.name and c.scheme == scheme)


def _plan(device: Any, tmp_path: Path) -> Plan:
    return quantmatch.plan("smollm2-135m", device, tolerance=1000, results_db=tmp_path / "none.sqlite")


def test_local_plan_ranks_the_example_from_its_declared_priors(quantmatch_plugin: Any, tmp_path: Path) -> None:
    quantmatch_plugin(_plugin())
    p = _plan("local", tmp_path)
    declared = BACKEND.priors["cpu"]
    for scheme in METHOD.schemes:
        c = _example(p, scheme)
        assert c.backend == BACKEND.name and c.rank >= 1 and c.target == "cpu"
        assert c.memory.runtime_gib == declared.memory_gib and c.memory.load_peak_gib is not None
        assert c.decode.bandwidth_gbs == pytest.approx(p.device.bandwidth_gbs * declared.bandwidth_eff)
        assert c.job.feasible is True


def test_changed_declarations_move_the_predictions(quantmatch_plugin: Any, here: Any, tmp_path: Path) -> None:
    cpu = BACKEND.priors["cpu"]

    class Slower(BACKEND):  # type: ignore[misc,valid-type]
        priors = {"cpu": replace(cpu, bandwidth_eff=cpu.bandwidth_eff / 2, layer_overhead_s=1e-3, memory_gib=0.9)}

    class Costlier(METHOD):  # type: ignore[misc,valid-type]
        priors = MethodPriors(job=JobPriors(flops_per_weight=400.0, source="test"),
                              quality=QualityPriors(rtn_loss_fraction=0.5, source="test"))

    quantmatch_plugin(_plugin())
    base = _example(_plan(here, tmp_path))
    quantmatch_plugin(_plugin(Slower, Costlier))
    moved = _example(_plan(here, tmp_path))
    assert moved.memory.runtime_gib == 0.9 and base.memory.runtime_gib == cpu.memory_gib
    assert moved.decode.bandwidth_gbs == pytest.approx(base.decode.bandwidth_gbs / 2)
    assert moved.decode.tokens_per_s < base.decode.tokens_per_s  # type: ignore[operator]
    assert moved.prefill.tokens_per_s < base.prefill.tokens_per_s  # type: ignore[operator]
    assert moved.job.time_s > base.job.time_s  # type: ignore[operator]
    assert moved.quality.delta_pct == pytest.approx(base.quality.delta_pct / 2)


def test_a_backend_or_method_without_priors_gets_the_generic_default(quantmatch_plugin: Any, here: Any,
                                                                      tmp_path: Path) -> None:
    class Undeclared(BACKEND):  # type: ignore[misc,valid-type]
        priors: dict[str, RuntimePriors] = {}

    class DeclaresTheDefault(BACKEND):  # type: ignore[misc,valid-type]
        priors = {"cpu": replace(DEFAULT_CPU, name="")}

    class PlainMethod(METHOD):  # type: ignore[misc,valid-type]
        priors = MethodPriors()

    quantmatch_plugin(_plugin(Undeclared, PlainMethod))
    undeclared = _example(_plan(here, tmp_path))
    quantmatch_plugin(_plugin(DeclaresTheDefault))
    default = _example(_plan(here, tmp_path))
    assert undeclared.memory.runtime_gib == DEFAULT_CPU.memory_gib
    assert undeclared.memory.total_gib == default.memory.total_gib
    assert undeclared.decode.tokens_per_s == default.decode.tokens_per_s
    assert undeclared.prefill.tokens_per_s == default.prefill.tokens_per_s
    # the generic 10 FLOPs per weight, not the example's 4
    assert undeclared.job.time_s > default.job.time_s  # type: ignore[operator]


def test_target_lookup_order() -> None:
    cpu, acc, metal = (RuntimePriors(x, 0.5, 0.0, 0.0, 0.1, source="test") for x in (0.1, 0.2, 0.3))
    table = {"cpu": cpu, ACCELERATOR: acc, "metal": metal}
    assert priors_for_target(table, "cpu") is cpu and priors_for_target(table, "metal") is metal
    assert priors_for_target(table, "cuda") is acc and priors_for_target(table, "vulkan") is acc
    assert priors_for_target({ACCELERATOR: acc}, "cpu") is None


@pytest.mark.parametrize(("attr", "value", "needle"), [
    ("priors", {"cpu": {"bandwidth_eff": 0.5}}, "expected a RuntimePriors"),
    ("priors", {"cpu": RuntimePriors(0.5, 0.5, 0.0, 0.0, 0.1, dequant="lazy", source="x")}, "dequant"),
    ("priors", {"cpu": RuntimePriors(0.5, 0.5, 0.0, 0.0, 0.1)}, "no source"),
    ("priors", {"cdua": RuntimePriors(0.5, 0.5, 0.0, 0.0, 0.1, source="x")}, "'cdua' is neither a target"),
    ("serves_unquantized", "yes", "serves_unquantized"),
])
def test_a_third_party_backend_with_bad_priors_is_broken(quantmatch_plugin: Any, attr: str, value: Any,
                                                          needle: str) -> None:
    bad = type("BadPriors", (BACKEND,), {"name": "example-torch-bad", attr: value})
    host = quantmatch_plugin(bad, "bad-priors", allow_broken=True)
    info = host.plugins["bad-priors"]
    assert info.status == "broken" and needle in " ".join(info.errors)


@pytest.mark.parametrize(("priors", "needle"), [
    ({"job": {}}, "expected a MethodPriors"),
    (MethodPriors(job=JobPriors(memory="mmapped")), "job.memory"),
    (MethodPriors(quality=QualityPriors(rtn_loss_fraction=0.5)), "no source"),
    (MethodPriors(produce_with="tool {model} {scheme}"), "{scheme}"),
])
def test_a_third_party_method_with_bad_priors_is_broken(quantmatch_plugin: Any, priors: Any, needle: str) -> None:
    bad = type("BadPriors", (METHOD,), {"name": "example-int8-bad", "priors": priors})
    host = quantmatch_plugin(bad, "bad-priors", allow_broken=True)
    info = host.plugins["bad-priors"]
    assert info.status == "broken" and needle in " ".join(info.errors)


def _builtin_names() -> set[str]:
    host = PluginHost(autoload=False)
    names = {name for table in (host.backends, host.quantizers) for name, entry in table.items()
             if entry.provenance.distribution == "quantmatch"}
    return names - NUMBER_FORMAT_WORDS


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that document something (module, class, function, attribute)."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)}


def test_planner_modules_name_no_builtin_backend_or_method() -> None:
    names = _builtin_names()
    assert {"torch", "llama.cpp", "vllm", "gguf", "gptq", "awq", "smoothquant"} <= names
    found = []
    for path in sorted(PLANNER.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs \
                    and node.value in names:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("quantmatch.plugins"):
                found.append(f"{path.name}:{node.lineno}: imports {node.module}")
            if isinstance(node, ast.Import):
                found.extend(f"{path.name}:{node.lineno}: imports {a.name}" for a in node.names
                             if a.name.startswith("quantmatch.plugins"))
    assert not found, "planner modules must read declarations, not name built-ins:\n" + "\n".join(found)
