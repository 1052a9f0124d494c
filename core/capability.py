"""Capability declarations: typed data that backends hand to the registry.

A backend declares an ordered tuple of :class:`Capability` rows. The registry evaluates them in
order for a (method, scheme, layer, target, device) combination: the first row whose scheme filters
match *and* whose :class:`Requires` predicate holds on the device decides the level. Rows whose
filters match but whose predicate fails are remembered and reported as "why not better".
Nothing here is code the registry must run to find out what a backend supports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .profile import TARGETS, canonical_target
from .verdict import LAYERS, Level

__all__ = ["Capability", "Requires", "any_of", "validate_capability"]


def any_of(*items: str) -> frozenset[str]:
    return frozenset(items)


@dataclass(frozen=True)
class Requires:
    """A predicate over a :class:`~quantmatch.profile.HardwareProfile`, as data.

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

    ``when`` is the device predicate; ``level``/``reason``/``source`` the verdict. ``reason`` and
    ``runs_as`` may use ``{device}``, ``{arch}``, ``{weights}``, ``{activations}``, ``{target}``.
    ``source`` is a URL or ``owner/repo path @commit``; several are joined with `` ; ``.
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


def validate_capability(cap: object, backend_targets: tuple[str, ...] = ()) -> list[str]:
    """Return the problems of one declaration (empty when it is valid)."""
    if not isinstance(cap, Capability):
        return [f"expected a Capability, got {type(cap).__name__}"]
    problems = []
    if not isinstance(cap.level, Level):
        problems.append(f"level {cap.level!r} is not a Level")
    if not cap.reason or not cap.reason.strip():
        problems.append("empty reason")
    if not cap.source or not cap.source.strip():
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
    for name in ("weights", "activations", "methods", "targets"):
        v = getattr(cap, name)
        if v is not None and (isinstance(v, str) or not all(isinstance(x, str) for x in v)):
            problems.append(f"{name} must be a tuple of strings")
    return problems
