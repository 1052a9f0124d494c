"""optimum-quanto: int2/int4/int8/fp8 weights, optional int8/fp8 activations (calibrated, static).

How schemes map onto quanto:

- ``int8`` and ``fp8-e4m3`` weights are symmetric, one scale per output channel (quanto's
  ``WeightQBytesTensor``): no group size, no zero point.
- ``int4``/``int2`` weights are stored with scale and shift per group (``WeightQBitsTensor``) of the
  scheme's size (none: per output channel). ``-asym`` uses quanto's min/max optimizer; symmetric
  schemes use :class:`SymmetricShiftOptimizer` (zero point fixed at the middle of the range).
- Activations (``a8``) are quantized per tensor with static scales found by a calibration pass
  (``optimum.quanto.Calibration``) over the calibration text; quanto has no dynamic per-token mode, so
  it produces the ``-static`` form of an activation scheme.
- The LM head stays unquantized unless a layer rule says otherwise.

The artifact is the layout of :mod:`._torch_artifact`: ``model.safetensors`` (quanto's flattened
state dict), ``quantization.json`` (quanto's quantization map plus the group size of each module),
config and tokenizer. :func:`load_quanto` rebuilds the model from it with ``optimum.quanto.quantize``
and loads the tensors, giving the same logits as the model that was saved.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from quantmatch.plugins.methods import _torch_artifact as ta
from quantmatch.plugins.methods._common import HF_CAUSAL_LM, TorchOptions
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.quantizer import Problem, Quantizer, SchemeSupport
from quantmatch.sdk.scheme import Scheme, SchemeError, parse_scheme

__all__ = ["QuantoOptions", "QuantoQuantizer", "load_quanto", "module_specs", "quantize_model"]

QTYPES = {"int8": "qint8", "int4": "qint4", "int2": "qint2", "fp8": "qfloat8_e4m3fn",
          "fp8-e4m3": "qfloat8_e4m3fn"}
"""quantmatch weight/activation type -> quanto qtype name."""


@dataclass(frozen=True)
class QuantoOptions(TorchOptions):
    """quanto's options (``--option KEY=VALUE``): ``exclude`` and ``dtype``."""


class QuantoQuantizer(Quantizer):
    name = "quanto"
    description = "optimum-quanto: int2/int4/int8/fp8 weights, int8/fp8 activations (calibrated)"
    support = SchemeSupport(
        weights=("int2", "int4", "int8", "fp8-e4m3"),
        activations=("int8", "fp8-e4m3"),
        group_sizes=(0, 32, 64, 128),
    )
    schemes = ("w8a16", "w8a16-fp8", "w4a16-g64-asym", "w4a16-g128-asym", "w2a16-g64-asym",
               "w8a8-int8-static", "w8a8-fp8-static")
    layer_precisions = ("int8", "int4", "int2", "fp8")
    artifact_format = "quanto"
    needs_calibration = False  # only activation schemes calibrate
    requires = ("optimum-quanto>=0.2.6", "torch>=2.4")
    install_hint = "pip install 'quantmatch[torch,quant]'"
    architectures = HF_CAUSAL_LM
    source = "huggingface/optimum-quanto @e33f8202 README"
    options = QuantoOptions

    @staticmethod
    def load_artifact(directory: str | Path, dtype: str | None = None) -> tuple[Any, Any]:
        """``(model, tokenizer)`` from an artifact this plugin wrote (see :func:`load_quanto`)."""
        return load_quanto(directory, dtype)

    def load(self, out: str | Path) -> Any:
        """The model alone (as stored), for the plugin contract kit's round trip."""
        return load_quanto(out)[0]

    def check(self, model: ModelInfo | None, scheme: Scheme | str) -> list[Problem]:
        """The declared support plus quanto's storage rules for 8-bit weights and activation scales."""
        problems = super().check(model, scheme)
        try:
            s = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
        except SchemeError:
            return problems
        if s.weight_bits == 8 and s.weight_format in ("int", "fp8-e4m3"):
            if s.group_size:
                problems.append(Problem(f"quanto stores 8-bit weights with one scale per output channel, not "
                                        f"in groups of {s.group_size}", source=self.source,
                                        fix=f"drop -g{s.group_size}"))
            if not s.symmetric:
                problems.append(Problem("quanto's 8-bit weights are symmetric (no zero point)",
                                        source=self.source, fix="drop -asym"))
        if not s.weight_only and not s.static_activations:
            problems.append(Problem(
                "quanto quantizes activations per tensor with static scales from a calibration pass; the "
                f"artifact will be {replace(s, static_activations=True)}", fatal=False, source=self.source))
        return problems

    def quantize(self, model: Any, scheme: Scheme | str, out: Any,  # type: ignore[override]
                 options: Mapping[str, Any] | None = None, **more: Any) -> ta.TorchArtifact:
        """Quantize ``model`` (a ``ModelSource`` or a model spec) and write the artifact into ``out``.

        ``options`` (or keyword arguments) are those of :meth:`quantize_in_memory`.
        """
        started = time.perf_counter()
        opts = {**(options or {}), **more}
        quantized = self.quantize_in_memory(model, scheme, opts)
        return ta.save_artifact(quantized, Path(out), started=started, progress=opts.get("progress"))

    def quantize_in_memory(self, model: Any, scheme: Scheme | str,
                           options: Mapping[str, Any] | None = None) -> ta.QuantizedModel:
        """Load ``model`` and quantize it in memory (nothing written).

        ``options``: the pipeline's ``rules`` (layer rules, first match wins), ``calibration`` (a
        :class:`~quantmatch.sdk.calibration.CalibrationSpec`, for activation schemes), ``seed`` and
        ``progress(stage, done, total)``, and those of :class:`QuantoOptions`: ``exclude`` (glob
        patterns kept unquantized; default: the LM head) and ``dtype`` (``float16``/``bfloat16``/
        ``float32``; default from the scheme).
        """
        opts = dict(options or {})
        cfg = QuantoOptions.of(opts, self.name)
        s = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
        source = ta.resolve_source(model)
        fatal = [str(p) for p in self.check(source.info, s) if p.fatal]
        if fatal:
            raise ValueError(f"quanto cannot produce {s} for {source.spec}: " + "; ".join(fatal))
        dtype = str(cfg.dtype or ta.storage_dtype(s))
        progress = opts.get("progress")
        hf_model, tokenizer = ta.load_float_model(source, dtype, progress)
        precisions = ta.linear_precisions(hf_model, _precision_of(s), tuple(opts.get("rules") or ()),
                                          cfg.exclude or self.default_exclude)
        specs = module_specs(precisions, s)
        samples = None
        details: dict[str, Any] = {}
        if not s.weight_only:
            from quantmatch.sdk.calibration import CalibrationSpec, calibration_samples

            cal = opts.get("calibration") or CalibrationSpec(seed=int(opts.get("seed", 0)))
            samples = calibration_samples(tokenizer, cal)
            details["calibration"] = cal.to_dict()
        quantize_model(hf_model, specs, samples, progress)
        produced = s if s.weight_only else replace(s, static_activations=True)
        return ta.QuantizedModel(hf_model, tokenizer, self.name, produced, dtype, specs, details)


def _precision_of(s: Scheme) -> str:
    return "fp8" if s.weight_format == "fp8-e4m3" else s.weight_type


def module_specs(precisions: Mapping[str, str | None], scheme: Scheme) -> dict[str, dict[str, Any]]:
    """quanto's settings for each module to quantize (those with a precision), from the scheme.

    Each entry holds quanto's quantization-map fields (``weights``, ``activations`` as qtype names)
    plus ``group_size`` (``None``: per channel), ``symmetric`` and the quantmatch ``precision``.
    """
    activations = QTYPES[scheme.activation_type] if not scheme.weight_only and scheme.activation_type else "none"
    specs: dict[str, dict[str, Any]] = {}
    for name, precision in precisions.items():
        if precision is None:
            continue
        if precision not in QuantoQuantizer.layer_precisions:
            raise ValueError(f"quanto cannot quantize {name} to {precision} "
                             f"(it produces {', '.join(QuantoQuantizer.layer_precisions)})")
        low_bit = precision in ("int4", "int2")
        specs[name] = {"precision": precision, "weights": QTYPES[precision], "activations": activations,
                       "group_size": scheme.group_size if low_bit else None,
                       "symmetric": scheme.symmetric if low_bit else True}
    return specs


def _optimizer(symmetric: bool) -> Any:
    if not symmetric:
        return None  # quanto's default for sub-8-bit weights: MaxOptimizer (min/max affine)
    import torch
    from optimum.quanto.tensor.optimizers import AffineOptimizer

    class SymmetricShiftOptimizer(AffineOptimizer):  # type: ignore[misc]
        """Symmetric scales (absmax / qmax) with the shift fixed at the middle of the unsigned range."""

        def optimize(self, base: torch.Tensor, qtype: Any, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
            dim = list(range(1, base.ndim)) if axis == 0 else list(range(0, base.ndim - 1))
            qmax = 2 ** (qtype.bits - 1) - 1
            scale = torch.amax(base.abs(), dim=dim, keepdim=True).clamp_min(torch.finfo(base.dtype).tiny) / qmax
            return scale, scale * (qmax + 1)

    return SymmetricShiftOptimizer()


def _apply_specs(model: Any, specs: Mapping[str, Mapping[str, Any]], with_optimizer: bool) -> None:
    """Swap the named ``nn.Linear`` modules for quanto ``QLinear`` modules with the given settings."""
    from optimum.quanto import quantize

    groups: dict[tuple[str, str, bool], list[str]] = defaultdict(list)
    for name, spec in specs.items():
        groups[(spec["weights"], spec["activations"], bool(spec.get("symmetric", True)))].append(name)
    for (weights, activations, symmetric), names in groups.items():
        opt = _optimizer(symmetric) if with_optimizer and weights in ("qint4", "qint2") else None
        quantize(model, weights=weights, activations=None if activations == "none" else activations,
                 optimizer=opt, include=names)
    for name, spec in specs.items():
        module = model.get_submodule(name)
        # quanto picks its own group (128, else 96/64/32) for int2/int4; the scheme's is used instead.
        module.weight_group_size = spec["group_size"]
        if spec.get("quantize_output") is False:
            module.disable_output_quantization()


def quantize_model(model: Any, specs: Mapping[str, dict[str, Any]], samples: Any = None,
                   progress: ta.ProgressFn | None = None) -> Any:
    """Quantize ``model`` in place per ``specs``; calibrate activation scales on ``samples``; freeze.

    After calibration each activation-quantized spec gains ``quantize_output`` (whether its output
    stays quantized), which the artifact records so reloading restores the same behaviour.
    ``progress`` gets ``calibrate`` (per sample) and ``quantize`` (per module frozen) calls.
    """
    import torch
    from optimum.quanto import Calibration

    _apply_specs(model, specs, with_optimizer=True)
    if any(s["activations"] != "none" for s in specs.values()):
        if samples is None:
            raise ValueError("activation quantization needs calibration samples")
        with torch.no_grad(), Calibration(momentum=0.9):
            for i, row in enumerate(samples):
                if progress:
                    progress("calibrate", i, len(samples))
                model(input_ids=row[None])
        if progress:
            progress("calibrate", len(samples), len(samples))
        for name, spec in specs.items():
            if spec["activations"] != "none":
                spec["quantize_output"] = _quantizes_output(model.get_submodule(name))
    _freeze(model, progress)
    return model


def _freeze(model: Any, progress: ta.ProgressFn | None = None) -> None:
    """``optimum.quanto.freeze`` one module at a time, reporting each: freezing is where quanto
    quantizes the weights, so it is the step that takes time."""
    from optimum.quanto.nn import QModuleMixin

    modules = [m for m in model.modules() if isinstance(m, QModuleMixin)]
    for i, module in enumerate(modules):
        if progress:
            progress("quantize", i, len(modules))
        module.freeze()
    if progress:
        progress("quantize", len(modules), len(modules))


def _quantizes_output(module: Any) -> bool:
    """Whether calibration left the module's output quantization on (quanto's streamline mode turns it
    off for outputs that only feed functions without a quantized kernel)."""
    handle = module._quantize_hooks.get("output")
    return handle is not None and handle.id in module._forward_hooks


def load_quanto(directory: str | Path, dtype: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a quanto artifact, computing in ``dtype`` (default: as stored).

    Stored float tensors (scales, unquantized weights) are cast to ``dtype``; integer and fp8 data are
    loaded as they are.
    """
    from transformers import AutoTokenizer

    from quantmatch.sdk.models import torch_dtype

    d = Path(directory)
    layout = ta.load_layout(d, "quanto")
    td = torch_dtype(dtype or layout["dtype"])
    model = ta.empty_model(d, td)
    _apply_specs(model, layout["modules"], with_optimizer=False)
    result = model.load_state_dict(ta.float_state(ta.load_state(d), td), strict=False)
    ta.check_loaded(result, layout.get("aliases", {}), d)
    return model.eval(), AutoTokenizer.from_pretrained(str(d))


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(QuantoQuantizer)
