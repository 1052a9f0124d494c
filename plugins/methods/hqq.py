"""HQQ (Half-Quadratic Quantization): calibration-free 1-8 bit weights with zero points.

Every linear layer to quantize becomes an ``hqq.core.quantize.HQQLinear`` with HQQ's own config
(``BaseQuantizeConfig(nbits, group_size, axis)``; zero points and scales found by HQQ's
half-quadratic solver). The group size is the scheme's; ``axis`` (1: groups along the input
dimension, the default; 0: along the output dimension) is an option. Layer rules choose the bit
width per module (``int1``-``int4``, ``int8``); the LM head stays 16-bit unless a rule says otherwise.

HQQ's own ``save_quantized`` writes a pickle (``qmodel.pt``); quantmatch stores HQQ's
safetensors-compatible state dict (``HQQLinear.state_dict`` with encoded metadata) in
``model.safetensors`` instead, with the layout of :mod:`._torch_artifact`, and :func:`load_hqq`
rebuilds the model from it. Weights, scales and zero points are kept in the scheme's 16-bit type;
loading may compute in another float type (``dtype``), e.g. fp32 on CPUs without fast fp16 math.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from quantmatch.plugins.methods import _torch_artifact as ta
from quantmatch.plugins.methods._citations import TORCHAO_AWQ
from quantmatch.plugins.methods._common import HF_CAUSAL_LM, TorchOptions
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.options import option
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import JobPriors, MethodPriors, QualityPriors
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport
from quantmatch.sdk.scheme import Scheme, parse_scheme

__all__ = ["HQQOptions", "HQQQuantizer", "load_hqq", "module_specs", "quantize_model"]

BITS = {"int8": 8, "int4": 4, "int3": 3, "int2": 2, "int1": 1}


@dataclass(frozen=True)
class HQQOptions(TorchOptions):
    """HQQ's options (``--option KEY=VALUE``), beside ``exclude`` and ``dtype`` (which is also the
    compute type while quantizing)."""

    axis: Literal[0, 1] = option(1, "1: groups along the input dimension; 0: along the output dimension")


PRIORS = MethodPriors(
    job=JobPriors(flops_per_weight=200.0, source="quantmatch prior: data-free, an iterative solve per weight group"),
    quality=QualityPriors(rtn_loss_fraction=0.7, source=TORCHAO_AWQ),  # 0.68 (torchao int4wo-hqq)
)
"""Planning priors (quantmatch.sdk.priors)."""


class HQQQuantizer(Quantizer):
    name = "hqq"
    description = "HQQ: calibration-free 1/2/3/4/8-bit weights, group-wise with zero points"
    support = SchemeSupport(
        weights=("int1", "int2", "int3", "int4", "int8"),
        group_sizes=(16, 32, 64, 128, 256),
        symmetric=(False,),
    )
    schemes = ("w8a16-g64-asym", "w4a16-g64-asym", "w4a16-g64-asym-bf16", "w3a16-g64-asym",
               "w2a16-g16-asym", "w1a16-g16-asym")
    layer_precisions = tuple(BITS)
    artifact_format = "hqq"
    requires = ("hqq>=0.2.5", "torch>=2.4")
    install_hint = "pip install 'quantmatch[torch,quant]'"
    architectures = HF_CAUSAL_LM
    source = "mobiusml/hqq @e0b1d00e Readme"
    priors = PRIORS
    options = HQQOptions

    @staticmethod
    def load_artifact(directory: str | Path, dtype: str | None = None) -> tuple[Any, Any]:
        """``(model, tokenizer)`` from an artifact this plugin wrote (see :func:`load_hqq`)."""
        return load_hqq(directory, dtype)

    def load(self, out: str | Path) -> Any:
        """The model alone (as stored), for the plugin contract kit's round trip."""
        return load_hqq(out)[0]

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

        ``options``: the pipeline's ``rules`` (layer rules) and ``progress(stage, done, total)``, and
        those of :class:`HQQOptions`: ``exclude`` (glob patterns kept 16-bit; default: the LM head),
        ``axis`` (1 or 0; default 1), ``dtype`` (compute and storage float type; default from the scheme).
        """
        opts = dict(options or {})
        cfg = HQQOptions.of(opts, self.name)
        s = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
        source = ta.resolve_source(model)
        fatal = [str(p) for p in self.check(source.info, s) if p.fatal]
        if fatal:
            raise ValueError(f"hqq cannot produce {s} for {source.spec}: " + "; ".join(fatal))
        axis = cfg.axis
        dtype = str(cfg.dtype or ta.storage_dtype(s))
        progress = opts.get("progress")
        hf_model, tokenizer = ta.load_float_model(source, dtype, progress)
        precisions = ta.linear_precisions(hf_model, s.weight_type, tuple(opts.get("rules") or ()),
                                          cfg.exclude or self.default_exclude)
        specs = module_specs(precisions, s, axis)
        quantize_model(hf_model, specs, progress)
        return ta.QuantizedModel(hf_model, tokenizer, self.name, s, dtype, specs, {"axis": axis})


def module_specs(precisions: Mapping[str, str | None], scheme: Scheme, axis: int = 1) -> dict[str, dict[str, Any]]:
    """HQQ's settings (``nbits``, ``group_size``, ``axis``) for each module that has a precision."""
    if not scheme.group_size:
        raise ValueError("HQQ quantizes in groups: give the scheme a group size (e.g. w4a16-g64-asym)")
    specs: dict[str, dict[str, Any]] = {}
    for name, precision in precisions.items():
        if precision is None:
            continue
        if precision not in BITS:
            raise ValueError(f"HQQ cannot quantize {name} to {precision} (it produces {', '.join(BITS)})")
        specs[name] = {"precision": precision, "nbits": BITS[precision], "group_size": scheme.group_size,
                       "axis": axis}
    return specs


def quantize_model(model: Any, specs: Mapping[str, Mapping[str, Any]],
                   progress: ta.ProgressFn | None = None) -> Any:
    """Replace each named ``nn.Linear`` by an ``HQQLinear`` quantized per its spec (in place)."""
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    dtype = next(model.parameters()).dtype
    for i, (name, spec) in enumerate(specs.items()):
        if progress:
            progress("quantize", i, len(specs))
        config = BaseQuantizeConfig(nbits=spec["nbits"], group_size=spec["group_size"], axis=spec["axis"])
        ta.set_module(model, name, HQQLinear(model.get_submodule(name), config, compute_dtype=dtype, device="cpu"))
    if progress:
        progress("quantize", len(specs), len(specs))
    return model


def _compute_in(layer: Any, dtype: Any) -> None:
    """Make a loaded ``HQQLinear`` dequantize and multiply in ``dtype`` (scales and zeros cast)."""
    import torch

    layer.compute_dtype = dtype
    layer.meta["compute_dtype"] = dtype
    for key, value in layer.meta.items():
        if isinstance(value, torch.Tensor) and torch.is_floating_point(value):
            layer.meta[key] = value.to(dtype)
    if layer.bias is not None:
        layer.bias = layer.bias.to(dtype)


def load_hqq(directory: str | Path, dtype: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from an HQQ artifact, computing in ``dtype`` (default: as stored)."""
    from hqq.core.quantize import HQQLinear
    from transformers import AutoTokenizer

    from quantmatch.sdk.models import torch_dtype

    d = Path(directory)
    layout = ta.load_layout(d, "hqq")
    td = torch_dtype(dtype or layout["dtype"])
    model = ta.empty_model(d, td)
    for name in layout["modules"]:
        ta.set_module(model, name, HQQLinear(None, None, compute_dtype=td, device="cpu", initialize=False))
    result = model.load_state_dict(ta.float_state(ta.load_state(d), td), strict=False)
    ta.check_loaded(result, layout.get("aliases", {}), d)
    for name in layout["modules"]:
        _compute_in(model.get_submodule(name), td)
    return model.eval(), AutoTokenizer.from_pretrained(str(d))


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(HQQQuantizer)
