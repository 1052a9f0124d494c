"""The contract suite every Quantizer, Backend and DeviceFamily plugin runs against itself.

Use it by subclassing in a ``Test*`` class and naming the class under test::

    from quantmatch.testing import BackendContract, QuantizerContract
    from my_package import quantmatch_plugin
    from my_package.backend import MyBackend
    from my_package.method import MyQuantizer

    class TestMyBackend(BackendContract):
        backend = MyBackend
        plugin = quantmatch_plugin   # the whole plugin: needed when the backend uses targets its family adds

    class TestMyQuantizer(QuantizerContract):
        quantizer = MyQuantizer

To run the suite over several classes, override the ``quantizer_class`` / ``backend_class`` /
``family_class`` fixture with a parametrised one (quantmatch's own ``tests/test_contracts.py`` does).
Every check judges through the same validation and registry code as ``quantmatch`` itself; nothing
here loads weights except :meth:`QuantizerContract.test_quantize_round_trips`, which skips (with the
reason) when the method is declared only (``roundtrip_skip``), not implemented, or its requirements are
missing.
"""

from __future__ import annotations

import builtins
import importlib
import string
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest

from quantmatch.registry import Registry
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import TEMPLATE_FIELDS, validate_capability
from quantmatch.sdk.device import Detection, DeviceFamily
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.pluginhost import (
    PluginHost,
    _validate_backend,
    _validate_family,
    _validate_profile,
    _validate_quantizer,
)
from quantmatch.sdk.profile import CONFIDENCES, HardwareProfile
from quantmatch.sdk.quantizer import Problem, Quantizer
from quantmatch.sdk.runner import MeasureConfig, Probe, Runner, RunnerError
from quantmatch.sdk.scheme import KV_FORMATS, parse_scheme
from quantmatch.sdk.verdict import Verdict
from quantmatch.testing.host import plugin_from
from quantmatch.testing.models import MissingDependency, tiny_model_info, write_tiny_model

__all__ = ["HEAVY_MODULES", "BackendContract", "DeviceFamilyContract", "QuantizerContract", "RunnerContract",
           "blocked_imports"]

HEAVY_MODULES = ("torch", "transformers", "safetensors", "accelerate", "gguf", "llama_cpp", "optimum", "hqq",
                 "vllm", "tensorrt_llm", "onnxruntime", "mlx", "textual")
"""Libraries that declarations, ``check()`` and verdicts must never import (weights, kernels, UI)."""

PLACEHOLDERS = frozenset(TEMPLATE_FIELDS)
"""The fields a capability row's ``reason`` and ``runs_as`` may use."""

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
"""Files a round trip must not write: unpickling them runs arbitrary code."""

BASELINE_SCHEMES = ("bf16", "fp16", "fp32")
TINY_ARCHS = ("llama", "gpt2")


# ---- import blocking ----------------------------------------------------------------------------
def _matches(module: str, names: frozenset[str]) -> bool:
    return module.partition(".")[0] in names


@contextmanager
def blocked_imports(*names: str) -> Iterator[list[str]]:
    """Make ``names`` (default :data:`HEAVY_MODULES`) absent inside the block, as on a machine without them.

    Already imported copies are taken out of ``sys.modules`` for the block and put back afterwards;
    each name is poisoned (``sys.modules[name] = None``), so ``import name`` raises
    ``ModuleNotFoundError`` and ``importlib.util.find_spec(name)`` returns ``None``. Yields the list of
    attempted imports (``import`` statements and ``importlib.import_module``; ``[]`` when nothing
    tried): assert on it to prove that code never even tries.
    """
    blocked = frozenset(names or HEAVY_MODULES)
    stashed = {k: m for k, m in sys.modules.items() if _matches(k, blocked)}
    for k in stashed:
        del sys.modules[k]
    for n in blocked:
        sys.modules[n] = None  # type: ignore[assignment]
    attempts: list[str] = []
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def spy_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if level == 0 and _matches(name, blocked):
            attempts.append(name)
        return real_import(name, globals, locals, fromlist, level)

    def spy_import_module(name: str, package: str | None = None) -> ModuleType:
        if not name.startswith(".") and _matches(name, blocked):
            attempts.append(name)
        return real_import_module(name, package)

    builtins.__import__ = spy_import
    importlib.import_module = spy_import_module
    try:
        yield attempts
    finally:
        builtins.__import__ = real_import
        importlib.import_module = real_import_module
        for k in [k for k in sys.modules if _matches(k, blocked)]:
            del sys.modules[k]
        sys.modules.update(stashed)
        importlib.invalidate_caches()


# ---- hosts ----------------------------------------------------------------------------------------
_HOSTS: dict[tuple[object, object, str], PluginHost] = {}


def _builtin_host() -> PluginHost:
    key = (None, None, "builtins")
    if key not in _HOSTS:
        _HOSTS[key] = PluginHost(autoload=False)
    return _HOSTS[key]


def _host_for(subject: type[Any], plugin: object | None, table: str) -> PluginHost:
    """A host (built-ins, no entry points) in which ``subject`` is registered, through ``plugin`` if given.

    Hosts are cached per (subject, plugin): the checks only read them.
    """
    key: tuple[object, object, str] = (subject, plugin, table)
    if key in _HOSTS:
        return _HOSTS[key]
    base = _builtin_host()
    entry = getattr(base, table).get(getattr(subject, "name", ""))
    if plugin is None and entry is not None and isinstance(entry.obj, type) and issubclass(entry.obj, subject):
        _HOSTS[key] = base  # a built-in
        return base
    name = getattr(plugin, "__name__", None) or f"contract:{subject.__name__}"
    host = PluginHost([(name, plugin_from(plugin if plugin is not None else subject, name))], autoload=False)
    info = host.plugins[name]
    assert info.status == "ok", f"the plugin under test is {info.status}: {'; '.join(info.errors)}"
    _HOSTS[key] = host
    return host


def _registered(host: PluginHost, table: str, subject: type[Any]) -> Any:
    entry = getattr(host, table).get(subject.name)
    assert entry is not None, f"{subject.__name__} ({subject.name!r}) was not registered; registered: " \
                              f"{', '.join(sorted(getattr(host, table)))}"
    assert isinstance(entry.obj, type) and issubclass(entry.obj, subject), \
        f"{subject.name!r} is registered, but by {entry.obj!r} ({entry.provenance})"
    return entry.obj


def _explained(v: Verdict, context: str) -> None:
    assert v.reasons, f"{context}: verdict {v.level.value} without any reason"
    empty = [r for r in v.reasons if not r.text.strip()]
    assert not empty, f"{context}: empty reason text"
    assert v.reasons[0].source.strip(), \
        f"{context}: the deciding reason has no source: {v.reasons[0].text!r} (declare a catch-all row with a " \
        "source, e.g. an `unsupported` row naming what the backend offers, so no combination is left undeclared)"


# ---- quantizers ---------------------------------------------------------------------------------
class QuantizerContract:
    """Contract checks for a quantization method (a :class:`~quantmatch.sdk.quantizer.Quantizer`)."""

    quantizer: ClassVar[type[Quantizer] | None] = None
    """The class under test."""
    plugin: ClassVar[object | None] = None
    """The plugin that registers it (default: the class alone, or the built-in that already does)."""
    roundtrip_scheme: ClassVar[str | None] = None
    """Scheme for the round trip (default: the first declared scheme the tiny model accepts)."""
    roundtrip_options: ClassVar[Mapping[str, Any]] = {}
    """Keyword options passed to ``quantize()`` in the round trip."""
    roundtrip_skip: ClassVar[str] = ""
    """Why the round trip cannot run wherever this suite runs (a method declared only so the registry can
    judge it, such as one that quantizes on hardware CI does not have): set, the round trip is skipped
    with this reason; every other check still runs."""

    @pytest.fixture
    def quantizer_class(self) -> type[Quantizer]:
        if self.quantizer is None:
            pytest.fail(f"{type(self).__name__}: set `quantizer = YourQuantizer` (or override quantizer_class)")
        return self.quantizer

    @pytest.fixture
    def contract_host(self, quantizer_class: type[Quantizer]) -> PluginHost:
        return _host_for(quantizer_class, self.plugin, "quantizers")

    def test_declaration_validates(self, quantizer_class: type[Quantizer], contract_host: PluginHost) -> None:
        assert _validate_quantizer(quantizer_class) == []
        _registered(contract_host, "quantizers", quantizer_class)
        assert quantizer_class.schemes, f"{quantizer_class.name} declares no schemes"
        assert quantizer_class.description.strip() and quantizer_class.source.strip()

    def test_schemes_parse_canonically(self, quantizer_class: type[Quantizer]) -> None:
        for s in quantizer_class.schemes:
            assert str(parse_scheme(s)) == s, f"{s!r} is not canonical"
            assert quantizer_class().check(None, s) == [], f"{s!r} contradicts {quantizer_class.name}'s support"

    def test_check_never_loads_weights(self, quantizer_class: type[Quantizer]) -> None:
        infos = [tiny_model_info(a) for a in TINY_ARCHS]
        q = quantizer_class()
        with blocked_imports() as attempts:
            for info in infos:
                for s in quantizer_class.schemes:
                    problems = q.check(info, s)
                    assert all(isinstance(p, Problem) and p.text.strip() for p in problems), problems
        assert attempts == [], f"{quantizer_class.name}.check() tried to import {attempts}: it must judge " \
                               "from shapes alone"

    def test_verdict_reasons_are_sourced_on_every_catalog_device(self, quantizer_class: type[Quantizer],
                                                                  contract_host: PluginHost) -> None:
        reg = Registry(contract_host)
        fmt = quantizer_class.artifact_format
        loaders = [e.name for e in reg.backends() if "*" not in e.obj.formats and fmt in e.obj.formats]
        assert loaders, f"no backend loads {fmt!r} artifacts, so {quantizer_class.name} can never be recommended"
        judged = 0
        for dev in reg.devices():
            for v in reg.combinations(dev, method=quantizer_class.name):
                _explained(v, f"{v.method} {v.scheme} {v.backend}/{v.target} on {dev.id}")
                judged += 1
        assert judged, f"{quantizer_class.name} was judged on no device"

    def load_artifact(self, quantizer: Quantizer, result: Any, out: Path) -> Any:
        """Load what ``quantize()`` wrote (override for your format). The default calls the quantizer's
        ``load(out)`` when it has one, and otherwise skips."""
        loader = getattr(quantizer, "load", None)
        if not callable(loader):
            pytest.skip(f"{quantizer.name} has no load(); override load_artifact() in {type(self).__name__} to "
                        "load what quantize() wrote")
        return loader(out)

    def check_loaded(self, quantizer: Quantizer, result: Any, loaded: Any, model_dir: Path) -> None:
        """Check what :meth:`load_artifact` returned (override to compare against your own reference).

        The default runs a PyTorch model (a ``torch.nn.Module``) on a few tokens of the tiny model at
        ``model_dir`` and requires finite logits as wide as its vocabulary; other loaded objects (a
        llama.cpp model ...) pass as loaded.
        """
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(loaded, torch.nn.Module):
            return
        vocab = ModelInfo.from_path(model_dir).vocab_size
        ids = torch.arange(1, 9).unsqueeze(0) % vocab
        with torch.no_grad():
            out = loaded(input_ids=ids)
        logits = getattr(out, "logits", out)
        assert tuple(logits.shape) == (1, 8, vocab), \
            f"{quantizer.name}: the loaded model's logits have shape {tuple(logits.shape)}"
        assert bool(torch.isfinite(logits).all()), f"{quantizer.name}: the loaded model's logits are not finite"

    def test_quantize_round_trips(self, quantizer_class: type[Quantizer], tmp_path: Path) -> None:
        q = quantizer_class()
        if self.roundtrip_skip:
            pytest.skip(f"{q.name}: {self.roundtrip_skip}")
        missing = q.missing()
        if missing:
            pytest.skip(f"{q.name}: requirements missing: {', '.join(missing)} ({q.install_hint or 'pip install'})")
        archs = [a for a in TINY_ARCHS if q.architectures is None or a in q.architectures]
        if not archs:
            pytest.skip(f"{q.name} accepts neither tiny architecture ({', '.join(TINY_ARCHS)})")
        info = tiny_model_info(archs[0])
        scheme = self.roundtrip_scheme or next(
            (s for s in quantizer_class.schemes if not any(p.fatal for p in q.check(info, s))), None)
        if scheme is None:
            pytest.skip(f"no declared scheme of {q.name} accepts the tiny {archs[0]} model")
        try:
            model_dir = write_tiny_model(tmp_path / "model", archs[0])
        except MissingDependency as e:
            pytest.skip(str(e))
        out = tmp_path / "out"
        try:
            result = q.quantize(model_dir, parse_scheme(scheme), out, **dict(self.roundtrip_options))
        except NotImplementedError as e:
            pytest.skip(f"{q.name}.quantize() is not implemented: {e}")
        written = [p for p in out.rglob("*") if p.is_file() and p.stat().st_size > 0] if out.exists() else []
        assert written, f"{q.name}.quantize() returned but wrote nothing into {out}"
        pickled = [p.name for p in written if p.suffix in PICKLE_SUFFIXES]
        assert not pickled, f"{q.name}.quantize() wrote pickled files {pickled}: loading them would run " \
                            "arbitrary code; write safetensors (or another data-only format)"
        loaded = self.load_artifact(q, result, out)
        assert loaded is not None, f"loading what {q.name} wrote returned None"
        self.check_loaded(q, result, loaded, model_dir)


# ---- backends -----------------------------------------------------------------------------------
class _BackendUnderTest:
    """The backend a contract checks: ``backend`` (the class) and ``plugin`` (what registers it)."""

    backend: ClassVar[type[Backend] | None] = None
    plugin: ClassVar[object | None] = None

    @pytest.fixture
    def backend_class(self) -> type[Backend]:
        if self.backend is None:
            pytest.fail(f"{type(self).__name__}: set `backend = YourBackend` (or override backend_class)")
        return self.backend

    @pytest.fixture
    def contract_host(self, backend_class: type[Backend]) -> PluginHost:
        return _host_for(backend_class, self.plugin, "backends")


class BackendContract(_BackendUnderTest):
    """Contract checks for a runtime (a :class:`~quantmatch.sdk.backend.Backend`)."""

    def test_declaration_validates(self, backend_class: type[Backend], contract_host: PluginHost) -> None:
        assert _validate_backend(backend_class, contract_host.targets) == []
        _registered(contract_host, "backends", backend_class)
        assert backend_class.description.strip() and backend_class.source.strip()
        assert backend_class.formats, f"{backend_class.name} loads no artifact format"

    def test_rows_are_reasoned_sourced_and_use_known_placeholders(self, backend_class: type[Backend],
                                                                  contract_host: PluginHost) -> None:
        registered = _registered(contract_host, "backends", backend_class)
        assert backend_class.capabilities, f"{backend_class.name} declares no capability rows"
        for i, cap in enumerate(backend_class.capabilities):
            assert validate_capability(cap, tuple(registered.targets)) == [], f"row {i}"
            for text in (cap.reason, cap.runs_as or ""):
                fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
                assert fields <= PLACEHOLDERS, f"row {i} uses unknown placeholders {fields - PLACEHOLDERS}"

    def test_verdict_reasons_are_sourced_on_every_catalog_device(self, backend_class: type[Backend],
                                                                  contract_host: PluginHost) -> None:
        reg = Registry(contract_host)
        be = _registered(contract_host, "backends", backend_class)
        methods = [e.obj for e in reg.methods() if "*" in be.formats or e.obj.artifact_format in be.formats]
        for dev in reg.devices():
            targets = [t for t in dev.targets if t in be.targets]
            if not targets:
                _explained(reg.verdict(None, BASELINE_SCHEMES[0], be.name, dev), f"{be.name} on {dev.id}")
            for t in targets:
                for s in BASELINE_SCHEMES:
                    _explained(reg.verdict(None, s, be.name, dev, t), f"{s} {be.name}/{t} on {dev.id}")
                for m in methods:
                    for s in m.schemes:
                        _explained(reg.verdict(m.name, s, be.name, dev, t), f"{m.name} {s} {be.name}/{t} on {dev.id}")

    def test_judging_never_imports_heavy_modules(self, backend_class: type[Backend],
                                                 contract_host: PluginHost) -> None:
        reg = Registry(contract_host)
        devices = reg.devices()
        with blocked_imports() as attempts:
            for dev in devices:
                reg.combinations(dev, backend=backend_class.name)
        assert attempts == [], f"judging {backend_class.name} tried to import {attempts}"


# ---- runners ------------------------------------------------------------------------------------
class RunnerContract(_BackendUnderTest):
    """Contract checks for the runner a backend names (:attr:`~quantmatch.sdk.backend.Backend.runner`).

    The declaration checks run everywhere; the run checks quantize the tiny Llama with ``method`` (default:
    the first registered method whose artifact format the backend loads and that quantizes; ``scheme``:
    the method's first scheme the backend runs), load the artifact in the runner and check every primitive
    of the runner contract against the others: ``logits`` shape and finiteness, ``nll`` equal to the
    log-softmax of ``logits``, greedy ``prefill``/``step`` tokens that the full-window logits also rank
    first (a broken KV cache fails this), peak memory, and the micro-probe ``verify`` runs. They skip
    (with the reason) when the runner's requirements are missing.
    """

    method: ClassVar[str | None] = None
    scheme: ClassVar[str | None] = None
    probe_shape: ClassVar[tuple[int, int, int]] = (32, 256, 256)
    """The micro-probe's ``(M, K, N)`` in the contract run (small: the contract checks it works, ``verify``
    measures)."""

    @pytest.fixture
    def runner_class(self, backend_class: type[Backend], contract_host: PluginHost) -> type[Runner]:
        assert backend_class.runner, f"{backend_class.name} names no runner (Backend.runner = 'package.module:Class')"
        cls = contract_host.runner_class(backend_class.name)
        assert cls is not None and issubclass(cls, Runner)
        return cls

    def test_declaration_is_data(self, backend_class: type[Backend], runner_class: type[Runner]) -> None:
        for name in ("requires", "versioned", "baselines", "kv_caches"):
            value = getattr(runner_class, name)
            assert isinstance(value, tuple) and all(isinstance(x, str) for x in value), f"{name} = {value!r}"
        assert isinstance(runner_class.install, str) and isinstance(runner_class.batches, bool)
        assert set(runner_class.baselines) <= set(BASELINE_SCHEMES), runner_class.baselines
        # KV formats the runtime sets: scheme names, declared alike by the backend (which the registry reads)
        # and its runner (which runs them); anything else is refused before loading
        assert set(runner_class.kv_caches) <= set(KV_FORMATS), runner_class.kv_caches
        assert set(backend_class.kv_caches) == set(runner_class.kv_caches), (backend_class.kv_caches,
                                                                               runner_class.kv_caches)
        refused = next(f for f in KV_FORMATS if f not in runner_class.kv_caches)
        with pytest.raises(RunnerError, match="KV"):
            runner_class.check_kv_cache(refused)
        module = backend_class.runner.partition(":")[0]
        with blocked_imports() as attempts:
            sys.modules.pop(module, None)
            importlib.import_module(module)
        assert attempts == [], f"importing {module} tried to import {attempts}: import them in load()/probe()"

    def test_probe_keys_are_answered_cheaply(self, backend_class: type[Backend], runner_class: type[Runner],
                                             contract_host: PluginHost) -> None:
        reg = Registry(contract_host)
        methods = [e.obj for e in reg.methods() if backend_class.formats and e.obj.artifact_format in
                   backend_class.formats]
        with blocked_imports() as attempts:
            for m in methods:
                for s in m.schemes:
                    key, why = runner_class.probe_key(m.name, parse_scheme(s))
                    assert (isinstance(key, str) and key) or (key is None and why.strip()), (m.name, s, key, why)
        assert attempts == [], f"{runner_class.__name__}.probe_key() tried to import {attempts}"

    def _artifact(self, backend_class: type[Backend], contract_host: PluginHost, tmp: Path) -> tuple[Path, str,
                                                                                                     str]:
        from quantmatch.sdk.pipeline import quantize

        reg = Registry(contract_host)
        candidates = [e.obj for e in reg.methods() if e.obj.artifact_format in backend_class.formats
                      and e.obj.quantize is not Quantizer.quantize and (self.method is None or
                                                                         e.obj.name == self.method)]
        if not candidates:
            pytest.skip(f"no registered method that quantizes writes {backend_class.formats} artifacts")
        q = candidates[0]
        missing = q().missing()
        if missing:
            pytest.skip(f"{q.name}: requirements missing: {', '.join(missing)}")
        info = tiny_model_info("llama")
        scheme = self.scheme or next(
            (s for s in q.schemes if not any(p.fatal for p in q().check(info, s)) and not q.not_produced(s)), None)
        if scheme is None:
            pytest.skip(f"no scheme of {q.name} accepts the tiny Llama")
        try:
            model_dir = write_tiny_model(tmp / "model", "llama")
        except MissingDependency as e:
            pytest.skip(str(e))
        from quantmatch.sdk.pluginhost import reset_host

        reset_host(contract_host)
        try:
            quantize(model_dir, q.name, scheme, tmp / "artifact")
        finally:
            reset_host()
        return tmp / "artifact", q.name, scheme

    def test_runs_an_artifact(self, backend_class: type[Backend], runner_class: type[Runner],
                              contract_host: PluginHost, tmp_path: Path) -> None:
        import numpy as np

        if runner_class.missing():
            pytest.skip(f"{runner_class.__name__}: requirements missing: {', '.join(runner_class.missing())} "
                        f"({runner_class.install})")
        artifact, method, scheme = self._artifact(backend_class, contract_host, tmp_path)
        runner = contract_host.runner(backend_class.name, threads=1)
        assert runner.backend == backend_class.name
        runner.configure(MeasureConfig(tokens=64, window=32, prompt=8, new_tokens=3, batch=2, repeats=1, warmup=0))
        runner.load(artifact, None)
        try:
            ids = runner.tokenize("the scale of the model weights was not one, and the group had one scale " * 2)
            assert len(ids) >= 12 and all(isinstance(i, int) for i in ids), ids
            ids = ids[:12]
            logits = np.asarray(runner.logits(ids), dtype=np.float64)
            assert logits.ndim == 2 and logits.shape[0] == len(ids) and np.isfinite(logits).all(), logits.shape
            lse = logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))
            expected = float((lse[:-1] - logits[np.arange(len(ids) - 1), ids[1:]]).sum())
            assert runner.nll(ids) == pytest.approx(expected, rel=1e-3), "nll() disagrees with logits()"
            prompt, steps = ids[:6], 3
            tokens = [*prompt]
            nxt = runner.prefill([prompt])
            for _ in range(steps):
                tokens.append(nxt[0])
                nxt = runner.step([nxt[0]])
            full = np.asarray(runner.logits(tokens), dtype=np.float64)
            for pos in range(len(prompt) - 1, len(tokens) - 1):
                row = full[pos]
                gap = row.max() - row[tokens[pos + 1]]
                assert gap <= 1e-2 * (row.max() - row.min()) + 1e-4, \
                    f"greedy token at position {pos + 1} is not what the full window ranks first (KV cache?)"
            assert runner.peak_memory_bytes() > 0 and runner.weight_bytes_per_token() >= 0
            key, _why = runner_class.probe_key(method, parse_scheme(scheme))
        finally:
            runner.close()
        if key is not None:
            probe = contract_host.runner(backend_class.name, threads=1).probe(key, tmp_path, self.probe_shape)
            assert isinstance(probe, Probe) and probe.ref_seconds > 0 and probe.q_seconds > 0 and probe.q_bytes > 0
            assert probe.figure()


# ---- device families ----------------------------------------------------------------------------
class DeviceFamilyContract:
    """Contract checks for a device family (a :class:`~quantmatch.sdk.device.DeviceFamily`)."""

    family: ClassVar[type[DeviceFamily] | None] = None
    plugin: ClassVar[object | None] = None
    vendor_modules: ClassVar[tuple[str, ...]] = ()
    """The vendor libraries ``detect()`` uses (``pynvml``, ``amdsmi`` ...): blocked to prove it degrades."""

    @pytest.fixture
    def family_class(self) -> type[DeviceFamily]:
        if self.family is None:
            pytest.fail(f"{type(self).__name__}: set `family = YourFamily` (or override family_class)")
        return self.family

    @pytest.fixture
    def contract_host(self, family_class: type[DeviceFamily]) -> PluginHost:
        return _host_for(family_class, self.plugin, "families")

    def test_declaration_validates(self, family_class: type[DeviceFamily], contract_host: PluginHost) -> None:
        assert _validate_family(family_class) == []
        _registered(contract_host, "families", family_class)
        assert family_class.description.strip() and family_class.vendor.strip()

    def test_catalog_profiles_are_sourced(self, family_class: type[DeviceFamily],
                                          contract_host: PluginHost) -> None:
        profiles = family_class.catalog()
        assert profiles, f"{family_class.name} has an empty catalog"
        ids = [p.id for p in profiles]
        assert len(ids) == len(set(ids)), "duplicate device ids"
        for p in profiles:
            assert isinstance(p, HardwareProfile)
            assert _validate_profile(p, contract_host.targets) == []
            assert p.family == family_class.name and not p.detected and p.targets and p.features
            assert p.id in contract_host.devices
            for label, fig in [("memory", p.memory), ("bandwidth", p.bandwidth), *p.peaks.items()]:
                assert fig.confidence in CONFIDENCES, f"{p.id} {label}"
                if fig.value is not None:
                    assert fig.source.strip(), f"{p.id}: {label} = {fig} has no source"

    def test_catalog_is_pure_data(self, family_class: type[DeviceFamily]) -> None:
        with blocked_imports(*HEAVY_MODULES, *self.vendor_modules) as attempts:
            family_class.catalog()
        assert attempts == [], f"{family_class.name}.catalog() tried to import {attempts}"

    def _check_detection(self, family_class: type[DeviceFamily], det: Any) -> None:
        assert isinstance(det, Detection), f"detect() returned {det!r}"
        assert det.family == family_class.name
        if not det.present:
            assert det.reason.strip(), "a family that finds nothing must say why"
        for d in det.devices:
            assert isinstance(d, HardwareProfile) and d.detected and d.family == family_class.name

    def test_detect_never_raises_without_its_vendor_library(self, family_class: type[DeviceFamily]) -> None:
        with blocked_imports(*HEAVY_MODULES, *self.vendor_modules):
            det = family_class.detect()
        self._check_detection(family_class, det)

    def test_detect_on_this_machine(self, family_class: type[DeviceFamily]) -> None:
        self._check_detection(family_class, family_class.detect())
