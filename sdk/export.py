"""Exact exports: one method's integer weights rewritten into another runtime's format, as declared data.

GPTQ, AWQ and round-to-nearest write compressed-tensors checkpoints; llama.cpp and ONNX Runtime run
their own formats. A GGUF ``Q4_0`` block (32 values, one fp16 scale, codes ``0..15`` minus 8) holds a
symmetric int4 group of any multiple of 32 exactly; ``Q4_1`` (scale and minimum) an asymmetric one;
``Q8_0`` a symmetric int8 one. ONNX Runtime's ``MatMulNBits`` takes 4-bit blocks of 16 to 256 with zero
points. So a method plugin that owns a format declares, as :class:`ExactExport` data on its
``Quantizer.exports``, which artifacts of other formats it rewrites and which grids it holds exactly:

- the registry then judges (say) *GPTQ w4a16-g32 on llama.cpp* as the scheme it runs as there
  (``gguf-q4_0``) instead of pruning it for the artifact format, and says why;
- ``quantmatch export ARTIFACT --to gguf`` finds the plugin and its ``exporter`` function;
- a grid the target cannot hold (3 bits, group 16 into 32-value blocks) is refused with the reason,
  before anything loads, unless the user allows requantizing.

The exporter (``"package.module:function"``, imported only when something is exported) is called as
``export(source_dir, out_dir, *, allow_requantize=False, progress=None, **options) -> dict`` (``options``:
the values of the declaration's typed ``options``) and writes into
``out_dir``, a fresh directory the caller renames into place; the returned dict goes into the new
artifact's manifest ``details``. It raises :class:`ExportRefused` for a grid it cannot hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quantmatch.sdk.errors import InputError
from quantmatch.sdk.options import MethodOptions
from quantmatch.sdk.scheme import Scheme

__all__ = ["ExactExport", "ExportRefused", "ExportResult", "ExportRule", "export_artifact", "export_route",
           "export_targets"]


class ExportRefused(InputError):
    """The artifact's grid cannot be held exactly by the target format (and requantizing was not allowed)."""

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


@dataclass(frozen=True)
class ExportRule:
    """One kind of weight grid the target holds exactly, and the scheme it then runs as.

    ``weight_type`` (``int4``, ``int8``), ``symmetric`` and ``activations`` (``None``: weight-only;
    ``"int8"``: int8 activations, static or dynamic as ``static`` says, ``None`` there meaning either)
    select the source schemes. Group sizes: any multiple of ``group_multiple`` (a block size), or one of
    ``group_sizes``; ``per_channel`` says whether per-channel scales are held (repeated per block).
    ``runs_as`` is the scheme the target runtime executes, a template with ``{group}`` (the source
    group, or the block used for per-channel) and ``{asym}`` (``-asym`` or empty).
    """

    weight_type: str
    symmetric: bool
    runs_as: str
    activations: str | None = None
    static: bool | None = None
    group_multiple: int = 0
    group_sizes: tuple[int, ...] = ()
    per_channel: bool = True

    def why_not(self, scheme: Scheme) -> str | None:
        """Why this rule does not hold ``scheme`` (``None``: it does)."""
        if scheme.weight_type != self.weight_type:
            return f"{scheme.weight_type} weights are not {self.weight_type}"
        if scheme.symmetric != self.symmetric:
            return f"the grid is {'symmetric' if scheme.symmetric else 'asymmetric'}"
        act = None if scheme.weight_only else scheme.activation_type
        if act != self.activations:
            return "weight-only" if act is None else f"{act} activations"
        if self.static is not None and scheme.static_activations != self.static:
            return "static activation scales" if scheme.static_activations else "dynamic activation scales"
        g = scheme.group_size or 0
        if g == 0:
            return None if self.per_channel else "per-channel scales"
        if g in self.group_sizes or (self.group_multiple and g % self.group_multiple == 0):
            return None
        if self.group_multiple and not self.group_sizes:
            return f"group {g} is not a multiple of the {self.group_multiple}-value blocks"
        return f"group {g} is not one of {'/'.join(map(str, self.group_sizes))}"

    def scheme_for(self, scheme: Scheme, block: int | None = None) -> str:
        g = scheme.group_size or block or self.group_multiple or (self.group_sizes[0] if self.group_sizes else 0)
        return self.runs_as.format(group=g, asym="" if scheme.symmetric else "-asym")

    def describe(self) -> str:
        groups = []
        if self.group_multiple:
            groups.append(f"groups of any multiple of {self.group_multiple}")
        if self.group_sizes:
            groups.append("groups of " + "/".join(map(str, self.group_sizes)))
        if self.per_channel:
            groups.append("per-channel")
        sym = "symmetric" if self.symmetric else "asymmetric"
        acts = "weight-only" if self.activations is None else f"{self.activations} activations"
        return f"{sym} {self.weight_type} {acts} ({', '.join(groups)}) as {self.runs_as.format(group='G', asym='')}"


@dataclass(frozen=True)
class ExactExport:
    """A format this method's plugin rewrites into its own without requantizing (see the module doc).

    ``source_format`` is the artifact format read (``compressed-tensors``); ``rules`` the grids held
    exactly; ``exporter`` the ``"module:function"`` that does it; ``tolerance`` states how close the
    exported file's logits come to the source's (the target kernels' own rounding); ``source`` cites
    the format's definition; ``options`` the exporter's own typed options (``--option KEY=VALUE``;
    unknown keys are refused), passed to it as keyword arguments; ``weight_only_hint`` is what a refusal of
    an activation-quantized scheme adds when the format holds weights only.
    """

    source_format: str
    rules: tuple[ExportRule, ...]
    exporter: str
    tolerance: str = ""
    source: str = ""
    options: type[MethodOptions] = MethodOptions
    weight_only_hint: str = ""

    def rule_for(self, scheme: Scheme) -> ExportRule | None:
        return next((r for r in self.rules if r.why_not(scheme) is None), None)

    def why_not(self, scheme: Scheme, target: str) -> str:
        """Why no rule holds ``scheme`` (the reason of the closest rule), naming what the target does hold."""
        close = [r for r in self.rules if r.weight_type == scheme.weight_type and r.symmetric == scheme.symmetric]
        why = (close or [r for r in self.rules if r.weight_type == scheme.weight_type] or list(self.rules))[0]
        held = "; ".join(r.describe() for r in self.rules)
        hint = ""
        if not scheme.weight_only and self.weight_only_hint and all(r.activations is None for r in self.rules):
            hint = f"; {self.weight_only_hint}"
        return f"{target} cannot hold {scheme} exactly: {why.why_not(scheme)}{hint} (it holds {held})"

    def to_dict(self) -> dict[str, Any]:
        return {"source_format": self.source_format, "exporter": self.exporter, "tolerance": self.tolerance,
                "source": self.source, "rules": [r.describe() for r in self.rules]}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_artifact` wrote: the new artifact directory and its manifest."""

    artifact: Any
    method: str
    scheme: str
    artifact_format: str
    runs_as: str
    exact: bool
    size_bytes: int
    seconds: float
    manifest: Any

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.artifact), "method": self.method, "scheme": self.scheme,
                "format": self.artifact_format, "runs_as": self.runs_as, "exact": self.exact,
                "size_bytes": self.size_bytes, "seconds": round(self.seconds, 3), "manifest": self.manifest.to_dict()}


def export_targets(source_format: str) -> dict[str, tuple[Any, ExactExport]]:
    """``{target format: (owning quantizer class, declaration)}`` reachable from ``source_format``."""
    from quantmatch.sdk.pluginhost import get_host

    out: dict[str, tuple[Any, ExactExport]] = {}
    for name in sorted(get_host().quantizers):
        q = get_host().quantizers[name].obj
        for spec in q.exports:
            if spec.source_format == source_format:
                out.setdefault(q.artifact_format, (q, spec))
    return out


def export_route(source_format: str, scheme: Scheme, to: str, allow_requantize: bool = False
                 ) -> tuple[Any, ExactExport, ExportRule | None]:
    """The plugin, declaration and rule that export ``scheme`` artifacts of ``source_format`` to ``to``.

    Raises :class:`~quantmatch.sdk.errors.UnknownChoiceError` for a format nothing exports to (listing
    those that something does) and :class:`ExportRefused` for a grid the target cannot hold exactly
    (``rule`` is ``None`` when ``allow_requantize`` lets it through). Reads declarations only.
    """
    from quantmatch.sdk.errors import UnknownChoiceError

    targets = export_targets(source_format)
    key = to.strip().lower()
    if key not in targets:
        if not targets:
            raise InputError(f"nothing exports {source_format} artifacts (no installed plugin declares an exact "
                             "export from that format)")
        raise UnknownChoiceError("export format", to, targets)
    owner, spec = targets[key]
    rule = spec.rule_for(scheme)
    if rule is None and not allow_requantize:
        why = spec.why_not(scheme, key)
        raise ExportRefused(f"{why}; pass --allow-requantize (allow_requantize=True) to round the weights "
                            f"again on the {key} grid (not exact: quality changes), or quantize to a scheme "
                            "it holds", (why,))
    return owner, spec, rule


def export_artifact(artifact: Any, to: str, out: Any, *, force: bool = False, allow_requantize: bool = False,
                    progress: Any = None, source_label: str | None = None,
                    options: Mapping[str, Any] | None = None) -> ExportResult:
    """Rewrite the artifact directory ``artifact`` into format ``to`` (``gguf``, ``onnx`` ...) at ``out``.

    The artifact's manifest says its format and scheme; the plugin declaring an exact export from that
    format into ``to`` writes the new directory (atomically, with the user's umask; ``out`` is never
    replaced without ``force``). The new manifest keeps the method and scheme, records the format, the
    scheme the target runs it as, whether every tensor was carried exactly and where it came from.
    Refusals (:class:`ExportRefused`, unknown formats, an existing ``out``) happen before anything is read.
    ``source_label`` replaces the source path recorded in the manifest (for an intermediate not kept).
    ``options`` are the exporter's own (``ExactExport.options``, e.g. GGUF's ``head``), validated first.
    """
    import importlib
    import re
    import time
    from pathlib import Path

    from quantmatch.sdk.artifact import (
        Manifest,
        atomic_output,
        check_files,
        check_output,
        library_versions,
        write_manifest,
    )
    from quantmatch.sdk.scheme import parse_scheme

    src = Path(artifact)
    manifest = check_files(src)
    scheme = parse_scheme(manifest.scheme)
    owner, spec, rule = export_route(manifest.artifact_format, scheme, to, allow_requantize)
    values = spec.options.parse(options, method=f"export to {owner.artifact_format}").to_dict()
    check_output(out, force)
    module, _, func = spec.exporter.partition(":")
    missing = owner().missing()
    if missing:
        raise InputError(f"exporting to {owner.artifact_format} needs {', '.join(missing)}, which is not "
                         f"installed ({owner.install_hint or 'pip install ' + ' '.join(missing)})")
    exporter = getattr(importlib.import_module(module), func)
    dists = [m.group(0) for r in owner.requires if (m := re.match(r"[A-Za-z0-9_.-]+", r))]
    started = time.perf_counter()
    runs_as = rule.scheme_for(scheme) if rule is not None else ""
    with atomic_output(out, force) as tmp:
        details = dict(exporter(src, tmp, allow_requantize=allow_requantize, progress=progress, **values) or {})
        details.setdefault("exact", rule is not None and not details.get("requantized"))
        details.update({"exported_by": owner.name, "exported_from": source_label or str(src.resolve()),
                        "source_format": manifest.artifact_format, "runs_as": runs_as,
                        "source_details": manifest.details, "tolerance": spec.tolerance})
        new = Manifest(method=manifest.method, scheme=manifest.scheme, artifact_format=owner.artifact_format,
                       source_model=manifest.source_model, model_type=manifest.model_type,
                       versions={**manifest.versions, **library_versions(("quantmatch", *owner.versioned, *dists))},
                       seconds=round(time.perf_counter() - started, 3), details=details)
        write_manifest(tmp, new)
    return ExportResult(Path(out), manifest.method, manifest.scheme, owner.artifact_format, runs_as,
                        bool(details["exact"]), new.size_bytes, new.seconds, new)
