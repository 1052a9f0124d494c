"""The small Python API for tools that embed the SDK."""

from __future__ import annotations

import quantmatch
from quantmatch.sdk.verdict import Level


def test_registry_call_is_repeatable() -> None:
    first = quantmatch.registry()
    second = quantmatch.registry()  # the subpackage import must not shadow the call
    assert type(first) is type(second)
    assert second.verdict("fp8", "w8a8-fp8", "vllm", "a100").level is Level.WEIGHT_ONLY


def test_explain_detect_plugins() -> None:
    verdicts = quantmatch.explain("gptq", "w4a16-g64", "vllm", "h100")
    assert verdicts[0].level is Level.WEIGHT_ONLY and verdicts[0].reasons
    dets = quantmatch.detect()
    assert any(d.present for d in dets) and all(d.present or d.reason for d in dets)
    assert any(p.name.endswith("backends.vllm") and p.status == "ok" for p in quantmatch.list_plugins())


def test_lazy_exports() -> None:
    assert quantmatch.parse_scheme("w8a8-fp8") == quantmatch.Scheme.parse("w8a8-fp8")
    assert quantmatch.Level.NATIVE.rank == 0
    assert callable(quantmatch.hookimpl)


def test_get_registry_and_the_deprecated_call() -> None:
    import warnings

    import quantmatch.registry as package  # the package is imported: the call must still work

    assert quantmatch.get_registry().verdict("fp8", "w8a8-fp8", "vllm", "a100").level is Level.WEIGHT_ONLY
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = quantmatch.registry()
    assert type(reg) is package.Registry
    assert any(w.category is DeprecationWarning and "get_registry" in str(w.message) for w in caught)


def test_every_public_name_resolves() -> None:
    for name in quantmatch.__all__:
        assert getattr(quantmatch, name) is not None, name
    import quantmatch.sdk as sdk

    for name in sdk.__all__:
        assert getattr(sdk, name) is not None, name
    assert sdk.Runner is quantmatch.Runner


def test_old_module_paths_still_import_with_a_warning() -> None:
    """The flat layout's modules are aliases of their new homes: the same objects, a DeprecationWarning."""
    import importlib
    import sys
    import warnings

    from quantmatch._moved import MOVED

    for old, new in MOVED.items():
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert module is importlib.import_module(new), old
        assert any(w.category is DeprecationWarning and new in str(w.message) for w in caught), old
    from quantmatch.backend import Backend  # type: ignore[import-not-found]
    from quantmatch.sdk.backend import Backend as Current

    assert Backend is Current
