"""The ``example-int8`` method and the ``example-torch`` backend that runs its artifacts.

A method that really quantizes, on any CPU, with plain PyTorch: every ``nn.Linear`` except the
``lm_head`` gets int8 weights with one absmax scale per output channel (weight-only: the matmul runs
in the scheme's float type on weights dequantized on the fly). The artifact directory holds

- ``model.safetensors``: the whole state dict, int8 weights and fp32 scales included (never pickle);
- ``example-int8.json``: the manifest (format, scheme, compute dtype, the quantized modules);
- ``config.json`` and the tokenizer files of the source model, so the directory stands alone.

This module holds declarations only: the torch side lives in :mod:`.int8_torch`, imported by
``quantize()`` and ``load()``, so registering the plugin and ``check()`` stay free of torch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability, Requires
from quantmatch.sdk.options import MethodOptions, option
from quantmatch.sdk.priors import JobPriors, MethodPriors, RuntimePriors
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport
from quantmatch.sdk.scheme import Scheme, parse_scheme
from quantmatch.sdk.verdict import Level

from . import sources as s

FORMAT = "example-int8"
"""The artifact format: the method writes it, the ``example-torch`` backend declares that it loads it."""

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
"""The scheme's compute type -> the torch dtype the artifact is stored and run in."""


@dataclass(frozen=True)
class Int8Artifact:
    """What ``quantize()`` wrote: the directory, the scheme, and the modules it quantized."""

    path: Path
    scheme: str
    dtype: str
    modules: tuple[str, ...]
    size_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "method": ExampleInt8Quantizer.name, "scheme": self.scheme,
                "dtype": self.dtype, "quantized_modules": {"int8": len(self.modules)},
                "size_bytes": self.size_bytes, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class ExampleInt8Options(MethodOptions):
    """``example-int8``'s options (``--option KEY=VALUE``): typed, with defaults and help, and strict:
    ``quantmatch quantize`` refuses a key not declared here before it loads anything."""

    exclude: tuple[str, ...] = option(("lm_head",), "glob patterns of linear layers kept in float "
                                                    "(empty: the LM head)")


ESTIMATES = ("the example's estimates, modelled on eager PyTorch on the CPU dequantizing every layer on each "
             "call (not measured)")
CALIBRATED = ("benchmarks/bench_planner.py --only 'example-int8:w8a32:example-torch,example-int8:w8a16-bf16:"
              "example-torch' on one Sapphire Rapids core, 2026-12-07 (decode 8.6-8.9 tok/s, peak 0.99 GiB; "
              "docs/benchmarks.md, 'Execution as a plugin')")

METHOD_PRIORS = MethodPriors(
    # data-free: an absmax, a divide and a round per weight; its quality is plain RTN's (the default)
    job=JobPriors(flops_per_weight=4.0, source=ESTIMATES),
)
"""What the planner assumes about ``example-int8`` (``quantmatch.sdk.priors``)."""


class ExampleInt8Quantizer(Quantizer):
    """Per-output-channel absmax int8, weight-only, in plain PyTorch: a method that runs anywhere."""

    name = "example-int8"
    description = "example plugin: int8 weights, one absmax scale per output channel, plain PyTorch"
    support = SchemeSupport(weights=("int8",), weight_only=True, group_sizes=(0,), symmetric=(True,))
    schemes = ("w8a32", "w8a16-bf16")
    artifact_format = FORMAT
    needs_calibration = False
    requires = ("torch>=2.4", "transformers>=4.46", "safetensors>=0.4")
    install_hint = "pip install 'quantmatch[torch]'"
    architectures = frozenset({"llama", "mistral", "qwen2"})  # decoders whose projections are nn.Linear
    source = s.join(s.LLM_INT8_ABSMAX, s.SAFETENSORS)
    priors = METHOD_PRIORS
    options = ExampleInt8Options

    def quantize(self, model: Any, scheme: Scheme | str, out: Any,  # type: ignore[override]
                 options: Mapping[str, Any] | None = None, **more: Any) -> Int8Artifact:
        """Quantize ``model`` (a model directory, or the ``ModelSource`` quantmatch's pipeline passes)
        to ``scheme`` and write the artifact into ``out``.

        Options: those of :class:`ExampleInt8Options` (``exclude``: module-name patterns kept in
        float, default ``lm_head``) and the pipeline's ``progress`` (``progress(stage, done, total)``).
        """
        from quantmatch.sdk.models import ModelSource, resolve_model

        from . import int8_torch

        opts = {**(options or {}), **more}
        cfg = ExampleInt8Options.of(opts, self.name)
        sch = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
        problems = [p.text for p in self.check(None, sch) if p.fatal]
        if problems:
            raise ValueError(f"{self.name} cannot produce {sch}: {'; '.join(problems)}")
        dtype = DTYPES[sch.compute_dtype]
        started = time.perf_counter()
        source = model if isinstance(model, ModelSource) else resolve_model(model)
        hf_model, tokenizer = source.load(dtype)
        exclude = cfg.exclude or self.default_exclude
        modules = int8_torch.quantize_model(hf_model, exclude, opts.get("progress"))
        path = Path(out)
        int8_torch.save(hf_model, tokenizer, path, {"format": FORMAT, "scheme": str(sch), "dtype": dtype,
                                                     "modules": modules})
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return Int8Artifact(path, str(sch), dtype, tuple(modules), size, time.perf_counter() - started)

    @staticmethod
    def load_artifact(directory: str | Path, dtype: str | None = None) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of an artifact this method wrote (how ``quantmatch eval`` loads it)."""
        from . import int8_torch

        return int8_torch.load(Path(directory), dtype)

    def load(self, out: str | Path) -> Any:
        """The model of an artifact this method wrote, in eval mode (what the contract suite loads)."""
        return self.load_artifact(out)[0]


CPU = ("cpu",)
INT8 = ("int8",)
FLOAT_ACTS = ("fp32", "bf16")

RUNTIME_PRIORS = {
    "cpu": RuntimePriors(
        bandwidth_eff=0.55, compute_eff=0.6, layer_overhead_s=5e-4, step_overhead_s=2e-3, memory_gib=0.4,
        # each call writes a full-width copy of the int8 weights and scales it (the cast to the compute type is
        # a no-op in fp32); the copy of one layer stays partly in cache, so about 1.2 passes reach memory
        dequant="materialize", dequant_passes=1.2,
        gemv_eff={"bf16": 0.08, "fp16": 0.08},  # 16-bit GEMV at M=1 is compute-bound in eager PyTorch
        # python + torch + transformers; the loader builds the fp32 model from its config, then reads the int8
        # safetensors file beside it before the int8 layers replace the float ones; quantmatch's CPU runs
        # compute in fp32 (the runner's dtype), whatever the scheme's float type
        import_gib=0.22, load_copy_bytes=6.0, float_dtype="fp32",
        source=CALIBRATED + ": eager PyTorch's bandwidth and dispatch, a little more dispatch per layer for the "
               "dequantization, ~1.2 elementwise passes over a full-width copy per layer and call"),
}
"""What the planner assumes about ``example-torch`` (``quantmatch.sdk.priors``): the CPU, its only target."""


class ExampleTorchBackend(Backend):
    """The example's own runtime: its loader on PyTorch eager, on the CPU."""

    name = "example-torch"
    description = "example plugin: example-int8 checkpoints on PyTorch eager (CPU), weights dequantized per layer"
    targets = CPU
    formats = (FORMAT,)
    requires = ("torch>=2.4", "transformers>=4.46", "safetensors>=0.4")
    install_hint = "pip install 'quantmatch[torch]'"
    runner = "quantmatch_example_plugin.runner:ExampleTorchRunner"  # imported only when something runs
    source = s.TORCH_LINEAR
    priors = RUNTIME_PRIORS
    capabilities = (
        Capability(Level.WEIGHT_ONLY, "int8 weights are dequantized per output channel to {activations} and "
                   "multiplied with torch.nn.functional.linear on {device}'s {activations} units",
                   s.join(s.TORCH_LINEAR, s.LLM_INT8_ABSMAX), weights=INT8, activations=FLOAT_ACTS,
                   methods=(ExampleInt8Quantizer.name,), group_sizes=(0,), symmetric=True,
                   when=Requires(compute_native=True),
                   runs_as="int8 weights dequantized per output channel; {activations} matmul"),
        Capability(Level.WEIGHT_ONLY, "int8 weights are dequantized per output channel; {device} has no native "
                   "{activations} math, so PyTorch lowers it: {lowering}", s.join(s.TORCH_LINEAR, s.LLM_INT8_ABSMAX),
                   weights=INT8, activations=FLOAT_ACTS, methods=(ExampleInt8Quantizer.name,), group_sizes=(0,),
                   symmetric=True, when=Requires(compute_emulated=True),
                   runs_as="int8 weights dequantized; {activations} math lowered ({lowering})"),
        Capability(Level.UNSUPPORTED, "example-torch runs only example-int8 checkpoints (int8 weights per output "
                   "channel with fp32 or bf16 math on the CPU), not {weights} weights with {activations} math",
                   s.TORCH_LINEAR, layers=("linear", "moe", "kv-cache")),
    )
