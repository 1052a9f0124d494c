"""Check the registry against a file of expected verdicts (``quantmatch conformance cases v1``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.registry.registry import Registry, UnknownChoiceError
from quantmatch.sdk.errors import InputError
from quantmatch.sdk.scheme import BASELINES, Scheme, SchemeError, parse_scheme
from quantmatch.sdk.verdict import LAYERS, Level, Verdict

__all__ = ["REQUIRED_FIELDS", "CaseResult", "ConformanceFormatError", "ConformanceReport", "run_conformance",
           "scheme_from_types"]

REQUIRED_FIELDS = ("weights", "device", "backend", "expected")
"""Fields every case needs; ``activations``, ``layer``, ``target``, ``method``, ``id``, ``why`` and
``source`` are optional."""

EXPECTED_FORMAT = ('{"cases": [{"id", "weights", "activations", "layer", "device", "backend", "target", '
                   '"expected", "why", "source"}, ...]} where each case needs ' + ", ".join(REQUIRED_FIELDS))


class ConformanceFormatError(InputError):
    """A conformance file whose shape is not ``quantmatch conformance cases v1``."""

_FLOAT = {"fp16", "bf16", "fp32"}
_FMT_TOKEN = {"fp8-e4m3": "fp8", "fp8": "fp8", "nvfp4": "nvfp4", "mxfp4": "mxfp4", "mxfp8": "mxfp8",
              "nf4": "nf4", "fp4": "fp4"}
_KV = {"fp8-e4m3": "fp8", "fp8": "fp8", "int8": "int8", "int4": "int4", "nvfp4": "nvfp4", "fp16": "fp16",
       "bf16": "bf16", "q8_0": "q8_0", "q4_0": "q4_0"}


def _bits(t: str) -> int:
    if t.startswith("int") and t[3:].isdigit():
        return int(t[3:])
    if t in ("fp8-e4m3", "fp8", "mxfp8"):
        return 8
    if t in ("nvfp4", "mxfp4", "nf4", "fp4"):
        return 4
    raise SchemeError(f"unknown number format {t!r}")


def scheme_from_types(weights: str, activations: str | None, layer: str = "linear") -> Scheme:
    """Map a (weights, activations) pair as conformance files spell them to a :class:`Scheme`."""
    w = weights.strip().lower()
    a = (activations or "").strip().lower() or None
    if layer == "kv-cache":
        kv = _KV.get(w)
        if kv is None:
            raise SchemeError(f"unknown KV-cache format {weights!r}")
        base = a if a in ("fp16", "bf16") else "fp16"
        return parse_scheme(f"{base}-kv{kv}")
    if w.startswith("gguf-"):
        return parse_scheme(w)
    if w in BASELINES or w == "tf32":
        return parse_scheme(w)
    wb = _bits(w)
    if a is None or a in _FLOAT:
        fmt = "" if w.startswith("int") else f"-{_FMT_TOKEN[w]}"
        if a == "fp32":
            return parse_scheme(f"w{wb}a32{fmt}")
        return parse_scheme(f"w{wb}a16{fmt}{'-bf16' if a == 'bf16' else ''}")
    ab = _bits(a)
    fmt = "int" if a.startswith("int") else _FMT_TOKEN[a]
    s = parse_scheme(f"w{wb}a{ab}-{fmt}")
    if s.weight_type != w:
        raise SchemeError(f"weights {weights} with activations {activations} have no scheme form")
    return s


@dataclass
class CaseResult:
    case: dict[str, Any]
    status: str  # agree | disagree | unmapped
    got: Verdict | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.case.get("id"), "status": self.status, "expected": self.case.get("expected"),
                "got": self.got.level.value if self.got else None, "case": self.case,
                "expected_why": self.case.get("why", ""), "expected_source": self.case.get("source", ""),
                "verdict": self.got.to_dict() if self.got else None, "error": self.error}


@dataclass
class ConformanceReport:
    results: list[CaseResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def agreement(self) -> float:
        mapped = self.count("agree") + self.count("disagree")
        return self.count("agree") / mapped if mapped else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"total": len(self.results), "agree": self.count("agree"),
                "disagree": self.count("disagree"), "unmapped": self.count("unmapped"),
                "agreement": round(self.agreement, 4), "results": [r.to_dict() for r in self.results]}


def run_case(reg: Registry, case: dict[str, Any]) -> CaseResult:
    missing = [f for f in REQUIRED_FIELDS if case.get(f) in (None, "")]
    if missing:
        what = f"field{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
        return CaseResult(case, "unmapped", error=f"missing {what} (every case needs {', '.join(REQUIRED_FIELDS)})")
    layer = case.get("layer") or "linear"
    try:
        if layer not in LAYERS:
            raise UnknownChoiceError("layer", layer, LAYERS)
        expected = Level.parse(str(case["expected"]))
        scheme = scheme_from_types(str(case["weights"]), case.get("activations"), layer)
        method = case.get("method")
        if method:
            scheme, method = _as_produced_by(reg, method.lower(), scheme, str(case["backend"]))
        v = reg.verdict(method, scheme, str(case["backend"]), str(case["device"]), case.get("target"), layer)
    except (UnknownChoiceError, SchemeError, KeyError, ValueError) as e:
        return CaseResult(case, "unmapped", error=str(e).splitlines()[0])
    return CaseResult(case, "agree" if v.level is expected else "disagree", v)


def _as_produced_by(reg: Registry, method: str, scheme: Scheme, backend: str) -> tuple[Scheme, str | None]:
    """Conformance cases name checkpoint families and bare number formats; map them onto the method.

    When the method does not declare the exact group size or symmetry, take the scheme from its own
    menu with the same weight and activation types. When it does not produce the types at all (a
    GGUF i-quant, say), judge the formats alone on a backend that loads the method's format.
    """
    q = reg.method(method)
    if not q.support.problems(scheme, q.name):
        return scheme, method
    for text in q.schemes:
        s = parse_scheme(text)
        if (s.weight_type, s.activation_type, s.kv_cache) == (scheme.weight_type, scheme.activation_type,
                                                              scheme.kv_cache):
            return s, method
    be = reg.backend(backend)
    if "*" in be.formats or q.artifact_format in be.formats:
        return scheme, None
    return scheme, method


def run_conformance(path: str | Path, reg: Registry | None = None) -> ConformanceReport:
    """Run every case of a conformance file; cases naming unknown things are reported unmapped."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    cases = data.get("cases") if isinstance(data, dict) else data
    if not isinstance(cases, list):
        raise ConformanceFormatError(f"no list of cases (found {type(data).__name__}); expected {EXPECTED_FORMAT}")
    odd = [i for i, c in enumerate(cases) if not isinstance(c, dict)]
    if odd:
        raise ConformanceFormatError(f"case #{odd[0]} is {type(cases[odd[0]]).__name__}, not an object; "
                                     f"expected {EXPECTED_FORMAT}")
    reg = reg or Registry()
    return ConformanceReport([run_case(reg, c) for c in cases])
