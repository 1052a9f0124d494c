"""What the compressed-tensors method plugins (GPTQ, AWQ, SmoothQuant, round-to-nearest) share.

:func:`quantize_with` is the whole pipeline around an algorithm of :mod:`quantmatch.plugins.methods.algorithms`:
resolve and load the model in fp32, draw the seeded calibration samples, give every linear layer its
integer grid (scheme, layer rules, exclusions), run the algorithm, attach the result as a
compressed-tensors model and write the checkpoint (config, safetensors, tokenizer) into the output
directory the caller owns. :func:`load_compressed` reads such a directory back with transformers.

Torch, transformers and compressed-tensors are imported inside the functions: importing this
module stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantmatch.plugins.methods import _torch_artifact as ta
from quantmatch.plugins.methods._common import CompressedOptions
from quantmatch.sdk.artifact import ArtifactError, path_size
from quantmatch.sdk.scheme import Scheme, parse_scheme

if TYPE_CHECKING:
    from quantmatch.plugins.methods.algorithms.rtn import IntGrid, QuantizedWeight
    from quantmatch.plugins.methods.algorithms.streaming import StreamSpec

__all__ = [
    "DENSE_LLAMA",
    "Algorithm",
    "CompressedArtifact",
    "Quantized",
    "grid_function",
    "load_compressed",
    "quantize_with",
]

DENSE_LLAMA = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm3"})
"""Architectures the algorithms handle: Llama-style decoder blocks (``model.layers``) with separate
q/k/v and gate/up ``nn.Linear`` projections and plain RMSNorm weights (no experts)."""

ProgressFn = Callable[[str, int, int], None]
GridFn = Callable[[str], "IntGrid | None"]


@dataclass
class Quantized:
    """What an algorithm produced: quantized weights by module name and the activation handling."""

    weights: dict[str, QuantizedWeight]
    activations: str | None = None  # None (weight-only), "dynamic" or "static"
    input_scales: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


Algorithm = Callable[[Any, Any, GridFn, "ProgressFn | None"], Quantized]
"""``algorithm(model, samples, grid_for, progress)``: quantize ``model`` in place."""


@dataclass(frozen=True)
class CompressedArtifact:
    """A compressed-tensors checkpoint directory written by :func:`quantize_with`."""

    path: Path
    method: str
    scheme: str
    dtype: str
    size_bytes: int
    seconds: float
    quantized_layers: int
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "method": self.method, "scheme": self.scheme, "dtype": self.dtype,
                "format": "compressed-tensors", "size_bytes": self.size_bytes, "seconds": round(self.seconds, 3),
                "quantized_layers": self.quantized_layers, **dict(self.details)}


def grid_function(model: Any, scheme: Scheme, options: Mapping[str, Any], precisions: tuple[str, ...],
                  default_exclude: tuple[str, ...]) -> GridFn:
    """Each linear layer's grid: the first matching layer rule's precision (float: left alone), else
    the scheme's weights; layers matching ``exclude`` (default: the LM head) stay float. Group size and
    symmetry always follow the scheme."""
    from quantmatch.plugins.methods.algorithms.rtn import IntGrid

    table = ta.linear_precisions(model, scheme.weight_type, tuple(options.get("rules") or ()),
                                 options.get("exclude") or default_exclude)
    bad = sorted({p for p in table.values() if p is not None and p not in precisions})
    if bad:
        raise ValueError(f"this method cannot produce {', '.join(bad)} layers (it produces {', '.join(precisions)})")
    grids = {name: IntGrid(int(p[3:]), scheme.group_size or 0, scheme.symmetric)
             for name, p in table.items() if p is not None}
    return grids.get


def _own_memory(model: Any) -> None:
    """Copy every weight out of the memory-mapped checkpoint into the process's own memory.

    Quantizing writes every linear weight; writes into a copy-on-write file mapping keep both the
    file pages and the private copies resident, so memory would grow block by block up to twice the
    model. With the copies made up front it stays flat at one model plus one block's activations.
    """
    for t in [*model.parameters(), *model.buffers()]:
        t.data = t.data.clone()


def _samples(tokenizer: Any, options: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    from quantmatch.sdk.calibration import CalibrationSpec, calibration_samples

    spec = options.get("calibration") or CalibrationSpec(seed=int(options.get("seed", 0)))
    return calibration_samples(tokenizer, spec), spec.to_dict()


def quantize_with(method: str, source: Any, scheme: Scheme | str, out: Any, options: Mapping[str, Any],
                  algorithm: Algorithm, *, precisions: tuple[str, ...], calibrate: bool = True,
                  default_exclude: tuple[str, ...] = ("lm_head",),
                  check: Callable[[Any, Scheme], list[Any]] | None = None,
                  settings: CompressedOptions | None = None,
                  stream: Callable[[], StreamSpec] | None = None) -> CompressedArtifact:
    """Load ``source``, run ``algorithm`` and write a compressed-tensors checkpoint into ``out``.

    ``options``: the pipeline's ``calibration`` (a :class:`~quantmatch.sdk.calibration.CalibrationSpec`;
    default: the shipped text, seeded by ``seed``), ``rules`` and ``progress``. ``settings``: the
    method's typed options (a :class:`~quantmatch.plugins.methods._common.CompressedOptions`: ``exclude``,
    ``dtype``, the checkpoint's float type, default from the scheme: fp16, bf16 for ``-bf16``, fp32 for
    ``a32``; ``threads``, torch threads while quantizing); ``None`` parses them from ``options``.
    ``out`` is a fresh directory owned by the caller. ``check`` (the quantizer's) runs on the model's
    shapes first; a fatal problem raises ``ValueError``.

    ``stream`` (the method's block step, built on demand) quantizes the checkpoint block by block from
    its safetensors shards instead of loading the model (:mod:`.algorithms.streaming`), when
    ``options["stream"]`` is true, or is not false and ``options["job_dir"]`` names where the job keeps
    its progress (the pipeline always does). ``options["resume"]`` (``auto``, ``resume``, ``restart``)
    and ``options["offload_dir"]`` (carry calibration activations on disk) apply to it.
    """
    import torch

    from quantmatch.plugins.methods.algorithms.export import attach, round_scales, save_compressed
    from quantmatch.sdk.models import torch_dtype

    started = time.perf_counter()
    s = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
    src = ta.resolve_source(source)
    fatal = [str(p) for p in (check(src.info, s) if check else []) if p.fatal]
    if fatal:
        raise ValueError(f"{method} cannot produce {s} for {src.spec}: " + "; ".join(fatal))
    cfg = settings if settings is not None else CompressedOptions.of(options, method)
    progress: ProgressFn | None = options.get("progress")
    wanted = options.get("stream")
    if stream is not None and (wanted or (wanted is None and options.get("job_dir"))):
        streamed = _stream_with(method, src, s, out, options, stream(), cfg, calibrate, precisions,
                                default_exclude, started)
        if streamed is not None:
            return streamed
    threads = cfg.threads
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        torch.manual_seed(int(options.get("seed", 0)))
        model, tokenizer = ta.load_float_model(src, "float32", progress)
        _own_memory(model)
        grid_for = grid_function(model, s, {"rules": options.get("rules"), "exclude": cfg.exclude}, precisions,
                                 default_exclude)
        details: dict[str, Any] = {}
        samples = None
        if calibrate:
            samples, details["calibration"] = _samples(tokenizer, options)
        with torch.no_grad():
            result = algorithm(model, samples, grid_for, progress)
        dtype = str(cfg.dtype or ta.storage_dtype(s))
        weights = round_scales(result.weights, torch_dtype(dtype))
        attach(model, weights, result.activations, result.input_scales)
        if progress:
            progress("save", 0, 1)
        save_compressed(model, out, tokenizer, dtype=torch_dtype(dtype))
        if progress:
            progress("save", 1, 1)
    finally:
        torch.set_num_threads(before)
    details.update(result.details)
    return CompressedArtifact(Path(out), method, str(s), dtype, path_size(out),
                              time.perf_counter() - started, len(weights), details)


def _fingerprint(method: str, src: Any, s: Scheme, options: Mapping[str, Any], cfg: CompressedOptions,
                 calibrate: bool, dtype: str) -> dict[str, Any]:
    import json

    from quantmatch.plugins.methods._stream_job import checkpoint_fingerprint
    from quantmatch.sdk.artifact import library_versions
    from quantmatch.sdk.calibration import CalibrationSpec

    cal = options.get("calibration") or CalibrationSpec(seed=int(options.get("seed", 0)))
    fp = {"model": checkpoint_fingerprint(src.hf_dir), "method": method, "scheme": str(s),
          "options": cfg.to_dict(), "rules": [r.to_dict() if hasattr(r, "to_dict") else str(r)
                                              for r in options.get("rules") or ()],
          "calibration": cal.to_dict() if calibrate else None, "seed": int(options.get("seed", 0)),
          "quantmatch": library_versions(("quantmatch", "torch", "transformers", "compressed-tensors")),
          "dtype": dtype}
    return dict(json.loads(json.dumps(fp, default=str)))


def _stream_with(method: str, src: Any, s: Scheme, out: Any, options: Mapping[str, Any], spec: StreamSpec,
                 cfg: CompressedOptions, calibrate: bool, precisions: tuple[str, ...],
                 default_exclude: tuple[str, ...], started: float) -> CompressedArtifact | None:
    """The streamed job; ``None`` when this request cannot stream and ``stream`` was not demanded (the
    caller then loads the model)."""
    import torch

    from quantmatch.plugins.methods._stream_job import job_dir_for, open_job
    from quantmatch.plugins.methods.algorithms.streaming import meta_model, stream_quantize, unstreamable
    from quantmatch.sdk.models import torch_dtype

    def grids(model: Any) -> GridFn:
        return grid_function(model, s, {"rules": options.get("rules"), "exclude": cfg.exclude}, precisions,
                             default_exclude)

    why = unstreamable(meta := meta_model(src.hf_dir), grids(meta), spec)
    if why:
        if options.get("stream"):
            raise ValueError(f"{method} cannot stream this request: {why}; quantize without stream=True")
        return None

    progress: ProgressFn | None = options.get("progress")
    dtype = str(cfg.dtype or ta.storage_dtype(s))
    calibrates = calibrate and spec.calibrate
    job_dir = Path(options.get("job_dir") or job_dir_for(out))
    state = open_job(job_dir, _fingerprint(method, src, s, options, cfg, calibrates, dtype), src.info.num_layers,
                     str(options.get("resume") or "auto"))
    offload = options.get("offload_dir")
    offload_dir = Path(offload) / job_dir.name if offload else None
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        torch.manual_seed(int(options.get("seed", 0)))
        tokenizer = src.load_tokenizer()
        details: dict[str, Any] = {}

        def samples() -> Any:
            drawn, details["calibration"] = _samples(tokenizer, options)
            return drawn

        if calibrates and state.done and options.get("calibration") is not None:
            details["calibration"] = options["calibration"].to_dict()

        with torch.no_grad():
            done = stream_quantize(src.hf_dir, out, spec, grid_for_model=grids, samples=samples if calibrates else None,
                                   dtype=torch_dtype(dtype), state=state, offload_dir=offload_dir, progress=progress,
                                   model=meta)
        if offload_dir is not None:
            import shutil

            shutil.rmtree(offload_dir, ignore_errors=True)
        if progress:
            progress("save", 0, 1)
        tokenizer.save_pretrained(str(out))
        if progress:
            progress("save", 1, 1)
    finally:
        torch.set_num_threads(before)
    details.update(done.details)
    details["streamed"] = {"blocks": src.info.num_layers, "shards": done.shards, "resumed_from": done.resumed_from,
                           "offload_dir": str(offload) if offload else None}
    return CompressedArtifact(Path(out), method, str(s), dtype, path_size(out), time.perf_counter() - started,
                              done.quantized_layers, details)


def load_compressed(directory: str | Path, dtype: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a compressed-tensors checkpoint, in ``dtype`` (default: as stored)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantmatch.sdk.models import torch_dtype

    d = Path(directory)
    if not (d / "config.json").is_file():
        raise ArtifactError(f"{d}: no config.json; re-create the artifact with `quantmatch quantize ... --force`")
    if _mixed_dequantize(d):
        return _load_decompressed(d, dtype)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch_dtype(dtype) if dtype else "auto",
                                                     use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(d))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise _unloadable(d, "transformers cannot load this compressed-tensors checkpoint", e) from e
    model.eval()
    return model, tokenizer


def _unloadable(directory: Path, what: str, e: BaseException) -> ArtifactError:
    first = str(e).splitlines()[0] if str(e) else ""
    return ArtifactError(f"{directory}: {what} ({type(e).__name__}: {first}); re-create it with "
                         "`quantmatch quantize ... --force`")


def _mixed_dequantize(directory: Path) -> bool:
    """Whether transformers would dequantize a checkpoint with several config groups at load time: it
    decompresses every dense layer with one group's scheme (transformers 5.25
    integrations/compressed_tensors.py ``get_dense_scheme``), so such checkpoints load through
    :func:`_load_decompressed` instead."""
    import json

    qc = json.loads((directory / "config.json").read_text(encoding="utf-8")).get("quantization_config") or {}
    return bool(qc.get("dequantize")) and len(qc.get("config_groups") or {}) > 1


def _load_decompressed(directory: Path, dtype: str | None) -> tuple[Any, Any]:
    """``(model, tokenizer)``: the float model of the config, holding the library's decompression of
    every quantized module (:func:`~quantmatch.plugins.methods._mixed_ct.decompressed_state`)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from quantmatch.plugins.methods._mixed_ct import decompressed_state
    from quantmatch.sdk.models import torch_dtype

    try:
        state = decompressed_state(directory)
        config = AutoConfig.from_pretrained(str(directory))
        del config.quantization_config
        stored = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float16)
        want = torch_dtype(dtype) if dtype else stored
        model: Any = AutoModelForCausalLM.from_config(config, dtype=want)  # type: ignore[no-untyped-call]
        result = model.load_state_dict({k: v.to(want) if v.is_floating_point() else v for k, v in state.items()},
                                       strict=False)
        missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or result.unexpected_keys:
            raise ValueError(f"missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
        if getattr(config, "tie_word_embeddings", False):
            model.tie_weights()
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise _unloadable(directory, "cannot decompress this mixed compressed-tensors checkpoint", e) from e
    model.eval()
    return model, tokenizer
