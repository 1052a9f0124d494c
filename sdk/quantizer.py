"""The Quantizer interface: a quantization method, declared as class-level data.

A method plugin subclasses :class:`Quantizer`, fills the class variables, and hands the class to
``register_quantizers``. The registry indexes the class variables; it never instantiates a quantizer
to learn what it supports. ``check()`` judges a request from shapes alone and never loads weights;
``quantize()`` is implemented by the method issues.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from quantmatch.sdk.export import ExactExport
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.options import MethodOptions
from quantmatch.sdk.priors import MethodPriors
from quantmatch.sdk.scheme import Scheme, SchemeError, parse_scheme

__all__ = ["Problem", "Quantizer", "SchemeSupport", "UnitVariant", "missing_requirements"]


@dataclass(frozen=True)
class Problem:
    """Why a request cannot (or should not) run. ``fatal`` problems prune the combination."""

    text: str
    fatal: bool = True
    source: str = ""
    fix: str = ""

    def __str__(self) -> str:
        return self.text + (f" (fix: {self.fix})" if self.fix else "")


@dataclass(frozen=True)
class SchemeSupport:
    """What schemes a method can produce, as data.

    ``weights`` lists weight types (``int4``, ``fp8-e4m3``, ``gguf-q4_k_m`` ...); ``activations``
    lists activation types for schemes with quantized activations (empty: weight-only only);
    ``weight_only`` says whether weight-only (a16) schemes are produced; ``group_sizes`` lists the
    allowed groups (``0`` = per-channel); ``symmetric`` lists allowed symmetries; ``kv_cache`` the
    KV-cache formats it can set.
    """

    weights: tuple[str, ...]
    activations: tuple[str, ...] = ()
    weight_only: bool = True
    group_sizes: tuple[int, ...] = (0, 32, 64, 128)
    symmetric: tuple[bool, ...] = (True, False)
    kv_cache: tuple[str, ...] = ()

    def problems(self, scheme: Scheme, method: str) -> list[str]:
        out = []
        if scheme.weight_type not in self.weights:
            out.append(f"{method} does not produce {scheme.weight_type} weights "
                       f"(it produces {', '.join(self.weights)})")
        if scheme.weight_only and not scheme.is_gguf and not self.weight_only:
            out.append(f"{method} quantizes activations too; weight-only schemes are not among its outputs")
        if not scheme.weight_only:
            at = scheme.activation_type or ""
            if at not in self.activations:
                valid = ", ".join(self.activations) or "none (weight-only)"
                out.append(f"{method} does not quantize activations to {at} (it supports: {valid})")
        if scheme.weight_format == "int" and not scheme.is_gguf:
            g = scheme.group_size or 0
            if g not in self.group_sizes:
                out.append(f"{method} does not support group size {g or 'per-channel'} "
                           f"(valid: {', '.join(str(x) if x else 'per-channel' for x in self.group_sizes)})")
            if scheme.symmetric not in self.symmetric:
                out.append(f"{method} does not produce {'symmetric' if scheme.symmetric else 'asymmetric'} "
                           "weights")
        if scheme.kv_cache and scheme.kv_cache not in self.kv_cache:
            out.append(f"{method} does not set a {scheme.kv_cache} KV cache "
                       f"(valid: {', '.join(self.kv_cache) or 'none'})")
        return out


@dataclass(frozen=True)
class UnitVariant:
    """One unit (a weight tensor) of a model as one format stores it, for mixed-precision search.

    ``unit`` is the method's own name of the tensor (a GGUF tensor name such as ``blk.3.ffn_down.weight``
    for GGUF; the Hugging Face parameter name for methods without their own names); ``hf_name`` the
    Hugging Face parameter it replaces (``model.layers.3.mlp.down_proj.weight``); ``scheme`` the format
    (a scheme string; a method may name a per-tensor storage type, e.g. ``gguf-q6_k``); ``nbytes`` the
    exact bytes that format stores for this tensor; ``weight`` the dequantized values, a float32 array in
    the Hugging Face layout (rows = output features), exactly what the runtime computes with.
    ``activation`` is how the runtime rounds the layer's input for this format before the product: ``""``
    (not at all), ``f16``/``bf16``, or ``q8_0`` (int8 in blocks of 32 with an fp16 scale, also for
    ``q8_1``) / ``q8_k`` (blocks of 256 with a float scale), as llama.cpp's CPU kernels do.
    """

    unit: str
    hf_name: str
    scheme: str
    nbytes: int
    weight: Any
    activation: str = ""


_DIST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def missing_requirements(requirements: Sequence[str]) -> list[str]:
    """The requirement strings whose distribution is not installed (checked without importing)."""
    missing = []
    for req in requirements:
        m = _DIST_NAME.match(req)
        if not m:
            continue
        try:
            importlib.metadata.distribution(m.group(0))
        except importlib.metadata.PackageNotFoundError:
            missing.append(req)
    return missing


class Quantizer:
    """A quantization method.

    Class-level contract (all data, no behaviour to probe):

    - ``name``: unique id (``quanto``, ``hqq``, ``gptq``, ``awq``, ``gguf``, ``smoothquant`` ...).
    - ``description``: one line for tables.
    - ``support``: a :class:`SchemeSupport` describing every scheme the method can produce.
    - ``produces``: the part of ``support`` this implementation writes, when it is less (``None``:
      all of it). The registry judges every scheme in ``support``; ``quantize``, ``bench`` and the
      planner's commands only offer the ones in ``produces``.
    - ``schemes``: the canonical scheme strings the registry enumerates for this method (its menu).
    - ``artifact_format``: the format of what it writes (``quanto``, ``hqq``, ``gguf``,
      ``compressed-tensors``, ``onnx`` ...); backends declare which formats they load.
    - ``needs_calibration``: whether it needs calibration text.
    - ``streams``: whether ``quantize`` reads the checkpoint one decoder block at a time from its
      safetensors shards (peak memory about one block, not the model) and resumes an interrupted job
      from its last finished block; it then honours the pipeline's ``stream``, ``resume`` and
      ``offload_dir`` options. ``False``: the method loads the whole model.
    - ``requires``: pip requirement strings needed to run it here (checked without importing).
    - ``versioned``: more distributions whose versions its artifacts' manifests record (beyond torch,
      transformers, safetensors and the quantization libraries quantmatch records for every artifact).
    - ``architectures``: ``model_type`` values it accepts (``None``: any).
    - ``source``: where the method's facts come from.
    - ``options``: the method's options, a frozen dataclass deriving from
      :class:`~quantmatch.sdk.options.MethodOptions` (typed, with defaults and help; default: no
      options). ``quantize(..., **options)`` and ``--option KEY=VALUE`` refuse keys it does not
      declare and values of the wrong type before anything loads; ``quantmatch plugins --json`` lists it.
    - ``priors``: what the planner assumes about the method, a
      :class:`~quantmatch.sdk.priors.MethodPriors` (job cost, quality kept, layout, the method's own
      tool); the default is the planner's generic method.
    - ``exports``: other methods' artifact formats this plugin rewrites into its own format without
      requantizing, :class:`~quantmatch.sdk.export.ExactExport` data (the grids held exactly, the scheme
      each then runs as, the exporter function). The registry judges, say, GPTQ on llama.cpp through
      them, and ``quantmatch export`` runs them.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    support: ClassVar[SchemeSupport] = SchemeSupport(weights=())
    produces: ClassVar[SchemeSupport | None] = None
    schemes: ClassVar[tuple[str, ...]] = ()
    artifact_format: ClassVar[str] = ""
    needs_calibration: ClassVar[bool] = False
    streams: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()
    versioned: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""
    architectures: ClassVar[frozenset[str] | None] = None
    default_exclude: ClassVar[tuple[str, ...]] = ("lm_head",)
    source: ClassVar[str] = ""
    options: ClassVar[type[MethodOptions]] = MethodOptions
    priors: ClassVar[MethodPriors] = MethodPriors()
    exports: ClassVar[tuple[ExactExport, ...]] = ()
    mixes: ClassVar[bool] = False
    """Whether the method implements :meth:`unit_variants` and :meth:`quantize_mixed` (mixed precision)."""

    def check(self, model: ModelInfo | None, scheme: Scheme | str) -> list[Problem]:
        """Problems with quantizing ``model`` to ``scheme`` with this method; never loads weights."""
        try:
            s = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
        except SchemeError as e:
            return [Problem(str(e))]
        problems = [Problem(t, source=self.source) for t in self.support.problems(s, self.name)]
        if model is not None:
            problems.extend(self.check_model(model, s))
        return problems

    def check_model(self, model: ModelInfo, scheme: Scheme) -> list[Problem]:
        """Shape-aware checks: architecture, group-size divisibility, packing constraints."""
        problems: list[Problem] = []
        if self.architectures is not None and model.model_type not in self.architectures:
            problems.append(Problem(
                f"{self.name} does not support architecture {model.model_type!r} "
                f"(supported: {', '.join(sorted(self.architectures))})", source=self.source))
        group = scheme.group_size
        if group and scheme.weight_format == "int":
            bad = [lin for lin in model.linear_layers()
                   if lin.name not in self.default_exclude and lin.in_features % group]
            if bad:
                first = bad[0]
                more = f" (and {len(bad) - 1} more layers)" if len(bad) > 1 else ""
                valid = [g for g in (32, 64, 128, 256) if all(
                    lin.in_features % g == 0 for lin in model.linear_layers()
                    if lin.name not in self.default_exclude)]
                problems.append(Problem(
                    f"group size {group} does not divide in_features {first.in_features} of "
                    f"{first.name}{more}",
                    fix=f"use group size {' or '.join(map(str, valid))}" if valid else "use per-channel",
                ))
        return problems

    @classmethod
    def not_produced(cls, scheme: Scheme | str) -> list[str]:
        """Why this implementation does not write ``scheme`` although ``support`` admits it (empty: it does)."""
        if cls.produces is None:
            return []
        s = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
        why = cls.produces.problems(s, cls.name)
        return [f"{w}; the registry judges {s} but this version of quantmatch does not write it" for w in why]

    def missing(self) -> list[str]:
        """Requirements that are not installed, with the line that installs them."""
        return missing_requirements(self.requires)

    def quantize(self, source: Any, scheme: Scheme, out_dir: Any, options: Any = None, **kw: Any) -> Any:
        """Quantize ``source`` (a :class:`quantmatch.sdk.models.ModelSource`) to ``scheme`` and write the
        artifact into ``out_dir``, a fresh temporary directory the caller renames on success.

        ``options`` carries the preset rules, calibration, seed and a progress callback (see
        :mod:`quantmatch.sdk.pipeline`) and the values of :attr:`options`, already validated (a method
        reads them typed with ``MyOptions.of(options, self.name)``). Implemented by each method plugin."""
        raise NotImplementedError(
            f"quantization with {self.name!r} is not implemented in this version of quantmatch; "
            "the registry can still tell where its artifacts run")

    def unit_variants(self, source: Any, schemes: Sequence[str], **options: Any) -> Iterator[UnitVariant]:
        """Every unit of ``source`` (a :class:`quantmatch.sdk.models.ModelSource`) as each of ``schemes``
        stores it: :class:`UnitVariant` items with exact bytes and dequantized weights, for measuring each
        unit's sensitivity (:mod:`quantmatch.sdk.sensitivity`). A method that stores a tensor in another
        type than the scheme names (a fallback) yields the stored type's scheme, once per unit and type.
        Methods with :attr:`mixes` implement it."""
        raise NotImplementedError(
            f"{self.name!r} does not write per-unit mixed precision in this version of quantmatch "
            "(no unit_variants); choose a method whose plugin sets mixes = True")

    def quantize_mixed(self, source: Any, assignments: Mapping[str, str], out: Any, **options: Any) -> Any:
        """Quantize ``source`` with a per-unit format (``assignments``: unit -> scheme, as
        :meth:`unit_variants` names them) into ``out``, a fresh temporary directory the caller renames;
        returns what :meth:`quantize` returns. ``options`` may carry ``base_scheme`` (the format of units
        not listed), ``threads`` and ``progress``. Methods with :attr:`mixes` implement it."""
        raise NotImplementedError(
            f"{self.name!r} does not write per-unit mixed precision in this version of quantmatch "
            "(no quantize_mixed); choose a method whose plugin sets mixes = True")
