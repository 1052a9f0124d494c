"""Capability declarations: typed data that backends hand to the registry.

A backend declares an ordered tuple of :class:`Capability` rows. The registry evaluates them in
order for a (method, scheme, layer, target, device) combination: the first row whose scheme filters
match *and* whose :class:`Requires` predicate holds on the device decides the level. Rows whose
filters match but whose predicate fails are remembered and reported as "why not better".
Nothing here is code the registry must run to find out what a backend supports.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, fields

from quantmatch.sdk.profile import TARGETS, canonical_target
from quantmatch.sdk.verdict import LAYERS, Dispute, Level

__all__ = ["CATALOG_SOURCE", "TEMPLATE_FIELDS", "Capability", "Dispute", "Requires", "any_of", "readable_template",
           "template_problems", "validate_capability"]

TEMPLATE_FIELDS = ("device", "arch", "weights", "activations", "target", "method", "lowering")
"""The ``{placeholders}`` a capability's ``reason`` and ``runs_as`` may use."""

CATALOG_SOURCE = "the device's catalog entry"
"""A ``source`` that stands for the device's own catalog: the verdict then cites the sources the catalog
records for the figures and features it rests on (and notes disputed or derived figures)."""


def any_of(*items: str) -> frozenset[str]:
    return frozenset(items)


@dataclass(frozen=True)
class Requires:
    """A predicate over a :class:`~quantmatch.sdk.profile.HardwareProfile`, as data.

    All given conditions must hold:

    - ``families``: the device family is one of these.
    - ``archs`` / ``not_archs``: the architecture id is (not) one of these (exact ids such as ``sm_90``).
    - ``features_all`` / ``features_any`` / ``features_none``: feature flags of the unit that runs
      the target (the GPU, or the CPU cores for the ``cpu`` target).
    - ``min_cc`` / ``max_cc``: NVIDIA compute capability bounds, for runtimes whose own check is a
      numeric floor (vLLM's ``get_min_capability``). Devices without a compute capability fail them.
    - ``compute_native``: the unit computes the scheme's compute type natively (the activation type,
      or for ``weights_native`` the weight type).
    - ``compute_emulated``: the device accepts that type only through a lowering (``emulated`` map).
    """

    families: frozenset[str] | None = None
    archs: frozenset[str] | None = None
    not_archs: frozenset[str] = frozenset()
    features_all: frozenset[str] = frozenset()
    features_any: frozenset[str] = frozenset()
    features_none: frozenset[str] = frozenset()
    min_cc: float | None = None
    max_cc: float | None = None
    compute_native: bool = False
    weights_native: bool = False
    compute_emulated: bool = False

    @property
    def empty(self) -> bool:
        return self == ALWAYS


ALWAYS = Requires()




@dataclass(frozen=True)
class Capability:
    """One row of a backend's support table.

    Scheme filters (``None`` means any):

    - ``methods``: quantization methods / checkpoint families (``gptq``, ``awq``, ``fp8`` ...).
    - ``weights``: weight types, shell-style patterns allowed (``int4``, ``fp8-e4m3``, ``gguf-q*_k*``).
    - ``activations``: activation/compute types (``fp16``, ``bf16``, ``int8``, ``fp8-e4m3`` ...).
    - ``layers``: ``linear``, ``moe``, ``kv-cache``. Default: linear and MoE layers.
    - ``targets``: execution targets (``cuda``, ``rocm``, ``metal``, ``vulkan``, ``cpu``).
    - ``group_sizes``: allowed group sizes (``0`` stands for per-channel); ``symmetric``: required
      symmetry.

    ``since``/``until`` bound the runtime versions the row holds for (``since`` inclusive, ``until``
    exclusive, PEP 440 version strings of the backend's :attr:`~quantmatch.sdk.backend.Backend.runtime`
    distribution); a row outside the asked version is skipped as if it were not declared. Declare the
    newer behaviour and the older one as two rows, newest first. ``disputed`` records a credible source
    that disagrees (:class:`Dispute`).

    ``when`` is the device predicate; ``level``/``reason``/``source`` the verdict. ``reason`` and
    ``runs_as`` may use the placeholders of :data:`TEMPLATE_FIELDS` (``{device}``, ``{arch}``,
    ``{weights}``, ``{activations}``, ``{target}``, ``{method}``, ``{lowering}``); any other is refused
    at registration. ``source`` is a URL or ``owner/repo path @commit``; several are joined with
    `` ; ``. :data:`CATALOG_SOURCE` cites the device's catalog entry for the types involved.
    """

    level: Level
    reason: str
    source: str
    weights: tuple[str, ...] | None = None
    activations: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    layers: tuple[str, ...] = ("linear", "moe")
    targets: tuple[str, ...] | None = None
    group_sizes: tuple[int, ...] | None = None
    symmetric: bool | None = None
    when: Requires = field(default=ALWAYS)
    runs_as: str | None = None
    since: str | None = None
    until: str | None = None
    disputed: Dispute | None = None


def template_problems(text: str, label: str = "reason") -> list[str]:
    """Why ``text`` is not a valid template (empty when every placeholder is known)."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        return [f"{label} {text!r} is not a valid template ({e}; write a literal brace as {{{{ or }}}})"]
    unknown = [name for _lit, name, _spec, _conv in parsed if name is not None and name not in TEMPLATE_FIELDS]
    if not unknown:
        return []
    shown = ", ".join("{" + n + "}" if n else "{}" for n in dict.fromkeys(unknown))
    return [f"{label} {text!r} uses unknown placeholder {shown} "
            f"(valid: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)})"]


def readable_template(text: str, limit: int | None = None) -> str:
    """``text`` for people who read declarations: ``{weights}`` becomes ``<weights>``; with ``limit``,
    cut at a word boundary with an ellipsis."""
    out = "".join(lit + (f"<{name}>" if name is not None else "")
                  for lit, name, _spec, _conv in _parse_or_raw(text))
    if limit is None or len(out) <= limit:
        return out
    cut = out[:limit].rsplit(" ", 1)[0].rstrip(" ,;:-(")
    return f"{cut or out[:limit]}…"


def _parse_or_raw(text: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(text))
    except ValueError:
        return [(text, None, None, None)]


def _requires_problems(req: Requires) -> list[str]:
    problems = []
    for f in fields(Requires):
        value = getattr(req, f.name)
        if f.name in ("min_cc", "max_cc"):
            ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        elif f.name in ("compute_native", "weights_native", "compute_emulated"):
            ok = isinstance(value, bool)
        else:
            ok = (value is None and f.name in ("families", "archs")) or (
                isinstance(value, frozenset) and all(isinstance(x, str) for x in value))
        if not ok:
            problems.append(f"`when`: Requires.{f.name} has the wrong type ({type(value).__name__}; "
                            f"expected {f.type})")
    return problems


def _version_problems(cap: Capability) -> list[str]:
    problems = []
    d = cap.disputed
    if d is not None and not (isinstance(d, Dispute) and isinstance(d.level, Level) and str(d.reason).strip()
                              and str(d.source).strip()):
        problems.append("disputed must be a Dispute(level, reason, source) with a reason and a source")
    if cap.since is None and cap.until is None:
        return problems
    from packaging.version import InvalidVersion, Version  # only for bounded rows: its regex costs start-up time

    parsed = {}
    for name in ("since", "until"):
        v = getattr(cap, name)
        if v is None:
            continue
        try:
            parsed[name] = Version(v)
        except (InvalidVersion, TypeError):
            problems.append(f"{name}={v!r} is not a PEP 440 version (write since=\"0.10.2\")")
    if len(parsed) == 2 and parsed["since"] >= parsed["until"]:
        problems.append(f"since={cap.since} is not before until={cap.until} (until is exclusive)")
    return problems


def validate_capability(cap: object, backend_targets: tuple[str, ...] = ()) -> list[str]:
    """Return the problems of one declaration (empty when it is valid)."""
    if not isinstance(cap, Capability):
        return [f"expected a Capability, got {type(cap).__name__}"]
    problems = []
    if not isinstance(cap.level, Level):
        problems.append(f"level {cap.level!r} is not a Level")
    if not isinstance(cap.reason, str) or not cap.reason.strip():
        problems.append("empty reason")
    if not isinstance(cap.source, str) or not cap.source.strip():
        problems.append(f"no source for {cap.reason!r}")
    for layer in cap.layers:
        if layer not in LAYERS:
            problems.append(f"unknown layer {layer!r} (valid: {', '.join(LAYERS)})")
    for t in cap.targets or ():
        ct = canonical_target(t)
        if ct not in TARGETS and ct not in backend_targets:  # a device family may add targets (hpu ...)
            problems.append(f"unknown target {t!r} (valid: {', '.join(dict.fromkeys(TARGETS + backend_targets))})")
        elif backend_targets and ct not in backend_targets:
            problems.append(f"target {t!r} is not among the backend's targets {backend_targets}")
    if not isinstance(cap.when, Requires):
        problems.append("`when` must be a Requires")
    else:
        problems.extend(_requires_problems(cap.when))
    for name in ("weights", "activations", "methods", "targets"):
        v = getattr(cap, name)
        if v is not None and (isinstance(v, str) or not all(isinstance(x, str) for x in v)):
            problems.append(f"{name} must be a tuple of strings")
    if cap.group_sizes is not None and not (isinstance(cap.group_sizes, tuple) and all(
            isinstance(g, int) and not isinstance(g, bool) for g in cap.group_sizes)):
        problems.append("group_sizes must be a tuple of ints (0 for per-channel)")
    if cap.symmetric is not None and not isinstance(cap.symmetric, bool):
        problems.append("symmetric must be True, False or None")
    problems.extend(_version_problems(cap))
    for label, template in (("reason", cap.reason), ("runs_as", cap.runs_as)):
        if isinstance(template, str):
            problems.extend(template_problems(template, label))
        elif template is not None:
            problems.append(f"{label} must be a string, got {type(template).__name__}")
    return problems
