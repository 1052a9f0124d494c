"""The small Python API for tools that embed the SDK."""

from __future__ import annotations

import quantmatch
from quantmatch.verdict import Level


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
