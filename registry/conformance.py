"""Check the registry against a file of expected verdicts (``quantmatch conformance cases v1``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.registry.registry import Registry, UnknownChoiceError
from quantmatch.registry.versions import bounded
from quantmatch.sdk.errors import InputError
from quantmatch.sdk.scheme import BASELINES, Scheme, SchemeError, parse_scheme
from quantmatch.sdk.verdict import LAYERS, Level, Verdict

__all__ = ["FORMATS", "REQUIRED_FIELDS", "CaseResult", "ConformanceFormatError", "ConformanceReport", "run_conformance",
           "scheme_from_types"]

REQUIRED_FIELDS = ("weights", "device", "backend", "expected")
"""Fields every case needs; ``activations``, ``layer``, ``target``, ``method``, ``id``, ``why``,
``source``, ``runtime_version`` and ``disputed`` are optional.

``runtime_version`` (format v2) is the version of the backend's runtime the expectation holds for
(``"0.9.2"``); without it the case is judged for the newest version the registry knows. ``disputed``
(v2) marks a case where credible sources disagree: the registry agrees when its verdict is marked
disputed too and either side is the expected level. Version 1 files (neither field) load unchanged."""

FORMATS = ("quantmatch conformance cases v1", "quantmatch conformance cases v2")

EXPECTED_FORMAT = ('{"cases": [{"id", "weights", "activations", "layer", "device", "backend", "target", '
                   '"runtime_version", "expected", "disputed", "why", "source"}, ...]} where each case needs '
                   + ", ".join(REQUIRED_FIELDS))


class ConformanceFormatError(InputError):
    """A conformance file whose shape is not ``quantmatch conformance cases v1``."""

_FLOAT = {"fp16", "bf16", "fp32"}
# A number format as conformance files spell it -> (bits, the scheme grammar's token).
_TYPES = {"fp8-e4m3": (8, "fp8"), "fp8": (8, "fp8"), "fp8-e5m2": (8, "fp8e5m2"), "nvfp4": (4, "nvfp4"),
          "mxfp4": (4, "mxfp4"), "mxfp8": (8, "mxfp8"), "mxfp6": (6, "mxfp6e2m3"), "mxfp6-e2m3": (6, "mxfp6e2m3"),
          "mxfp6-e3m2": (6, "mxfp6e3m2"), "mxint8": (8, "mxint8"), "nf4": (4, "nf4"), "fp4": (4, "fp4")}
_KV = {"fp8-e4m3": "fp8", "fp8": "fp8", "fp8-e5m2": "fp8e5m2", "int8": "int8", "int4": "int4", "nvfp4": "nvfp4",
       "fp16": "fp16", "bf16": "bf16", "q8_0": "q8_0", "q4_0": "q4_0"}


def _type(t: str) -> tuple[int, str]:
    t = t.replace("_", "-") if not t.startswith("int") else t
    if t.startswith("int") and t[3:].isdigit():
        return int(t[3:]), "int"
    if t in _TYPES:
        return _TYPES[t]
    raise SchemeError(f"unknown number format {t!r} (known: int1-int8, {', '.join(_TYPES)})")


def scheme_from_types(weights: str, activations: str | None, layer: str = "linear") -> Scheme:
    """Map a (weights, activations) pair as conformance files spell them to a :class:`Scheme`."""
    w = weights.strip().lower()
    a = (activations or "").strip().lower() or None
    if layer == "kv-cache":
        kv = _KV.get(w.replace("_", "-")) or _KV.get(w)
        if kv is None:
            raise SchemeError(f"unknown KV-cache format {weights!r}")
        base = a if a in ("fp16", "bf16") else "fp16"
        return parse_scheme(f"{base}-kv{kv}")
    if w.startswith("gguf-"):
        return parse_scheme(w)
    if w in BASELINES or w == "tf32":
        return parse_scheme(w)
    wb, wtok = _type(w)
    if a is None or a in _FLOAT:
        fmt = "" if wtok == "int" else f"-{wtok}"
        if a == "fp32":
            return parse_scheme(f"w{wb}a32{fmt}")
        return parse_scheme(f"w{wb}a16{fmt}{'-bf16' if a == 'bf16' else ''}")
    ab, atok = _type(a)
    s = parse_scheme(f"w{wb}a{ab}-{wtok}-{atok if atok != 'int' else f'int{ab}'}")
    if s.weight_type != w.replace("_", "-") and not (w == "fp8" and s.weight_type == "fp8-e4m3") and \
            not (w == "mxfp6" and s.weight_type == "mxfp6-e2m3"):
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
        version = case.get("runtime_version") or _version_cited(reg, case)
        at = reg.at_versions({str(case["backend"]): str(version)}) if version else reg
        v = at.verdict(method, scheme, str(case["backend"]), str(case["device"]), case.get("target"), layer)
    except (UnknownChoiceError, SchemeError, KeyError, ValueError, InputError) as e:
        return CaseResult(case, "unmapped", error=str(e).splitlines()[0])
    if case.get("disputed"):
        sides = {v.level} | ({v.disputed.level} if v.disputed is not None else set())
        ok = v.disputed is not None and expected in sides
    else:
        ok = v.level is expected
    return CaseResult(case, "agree" if ok else "disagree", v)


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


# a versioned documentation or release address, or a tag in the commit position: /en/v0.9.2/, /releases/tag/v0.46.0,
# /tree/v1.2, @v0.2.7 (a version merely mentioned in passing does not count)
_VERSIONED = re.compile(r"(?:/en/|/releases/tag/|/tree/|@)v?(\d+\.\d+(?:\.\d+)?(?:\.post\d+)?)(?=[/\s;)]|$)")


def _version_cited(reg: Registry, case: dict[str, Any]) -> str | None:
    """The runtime version a v1 case's own source names, for a backend whose rows depend on the version.

    A case without ``runtime_version`` that cites the runtime's versioned documentation or release
    (``https://docs.vllm.ai/en/v0.9.2/...``, ``.../releases/tag/v0.46.0``) describes that version, not the
    newest; any other case is judged for the newest version the registry knows.
    """
    try:
        be = reg.backend(str(case["backend"]))
    except UnknownChoiceError:
        return None
    if not be.runtime or not bounded(be):
        return None
    names = {n.replace("-", "").replace("_", "").lower() for n in (be.name, be.runtime) if n}
    for part in str(case.get("source") or "").split(" ; "):
        flat = part.replace("-", "").replace("_", "").lower()
        if any(n in flat for n in names):
            m = _VERSIONED.search(part)
            if m:
                return m.group(1)
    return None


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
    reg = reg or Registry(installed=False)  # cases without a runtime_version are about the newest versions
    return ConformanceReport([run_case(reg, c) for c in cases])
