"""GGUF: convert to a GGUF file and quantize with llama.cpp's own quantizer.

``GGUFQuantizer.quantize(source, scheme, out_dir, options)`` writes exactly one file,
``out_dir/model.gguf`` (:data:`ARTIFACT_NAME`): F32/F16/BF16 schemes are written by the converter in
:mod:`.gguf_convert`; every other type is converted to F16 first (an intermediate file inside
``out_dir``, deleted afterwards) and then quantized by ``llama_model_quantize`` from llama-cpp-python,
optionally with an importance matrix. :func:`load_for_eval` loads a GGUF in llama-cpp-python for
perplexity, logits and greedy generation.

Nothing heavy is imported at module import time: ``gguf``, ``numpy`` and ``llama_cpp`` are imported
inside the functions that need them, so the registry starts cheaply.
"""

from __future__ import annotations

import ctypes
import os
import re
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from quantmatch.plugins.methods.gguf_convert import (
    CONVERTIBLE_MODEL_TYPES,
    OUT_TYPES,
    TOKENIZER_FIX,
    convert_hf_to_gguf,
    tokenizer_refusal,
    weight_layout,
)
from quantmatch.sdk.errors import InputError
from quantmatch.sdk.export import ExactExport, ExportRule
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.model_info import LLAMA_FAMILY, ModelInfo
from quantmatch.sdk.options import MethodOptions, option
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import JobPriors, MethodPriors
from quantmatch.sdk.quantizer import Problem, Quantizer, SchemeSupport, UnitVariant
from quantmatch.sdk.scheme import Scheme, parse_scheme

__all__ = [
    "ARTIFACT_NAME",
    "GGUF_OUTPUTS",
    "GGUFArtifact",
    "GGUFLoadError",
    "GGUFModel",
    "GGUFOptions",
    "GGUFQuantizeError",
    "GGUFQuantizer",
    "load_for_eval",
    "load_imatrix",
    "mixed_type_scheme",
    "quantize_gguf",
    "tensor_types_for_rules",
]

GGUF_OUTPUTS = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_1", "q5_0", "q4_k_m", "q4_k_s",
                "q4_1", "q4_0", "q3_k_m", "q2_k")

ARTIFACT_NAME = "model.gguf"
"""The one file a GGUF quantization writes inside its output directory."""

_FTYPE_NAMES = {t: f"LLAMA_FTYPE_MOSTLY_{t.upper()}" for t in GGUF_OUTPUTS if t != "f32"}
_FTYPE_NAMES["f32"] = "LLAMA_FTYPE_ALL_F32"
"""GGUF type -> llama_cpp ftype constant (``q4_k_m`` -> ``LLAMA_FTYPE_MOSTLY_Q4_K_M``)."""

_PRECISION_TYPES: dict[str, tuple[str, ...]] = {
    "fp32": ("F32",), "fp16": ("F16",), "bf16": ("BF16",), "int8": ("Q8_0",),
    "int4": ("Q4_K", "Q4_0"), "int3": ("Q3_K",), "int2": ("Q2_K",),
}
"""Layer-wise precision -> ggml tensor types, best first (the first whose block divides the row)."""
_BLOCK = {"F32": 1, "F16": 1, "BF16": 1, "Q8_0": 32, "Q4_0": 32, "Q4_K": 256, "Q3_K": 256, "Q2_K": 256}

ProgressFn = Callable[[str, int, int], None]

_KV_TYPES = {"f16": 1, "f32": 0}
"""KV-cache type name -> ggml type id (GGML_TYPE_F16 = 1, GGML_TYPE_F32 = 0)."""


_CONVERTER = "quantmatch.plugins.methods.gguf_convert"
_IMATRIX_FIX = "pass a file written by llama.cpp's llama-imatrix for this model (or leave imatrix out)"


class GGUFQuantizeError(InputError, RuntimeError):
    """llama.cpp refused or failed a quantization, or an importance matrix is unreadable."""


class GGUFLoadError(InputError):
    """llama.cpp cannot load a GGUF file (truncated or corrupt); the message says how to re-create it."""


@dataclass(frozen=True)
class GGUFArtifact:
    """What :meth:`GGUFQuantizer.quantize` wrote: ``path`` is ``out_dir/model.gguf``."""

    path: Path
    scheme: str
    gguf_type: str
    size_bytes: int
    seconds: float
    intermediate: str | None = None
    imatrix: str | None = None
    tokenizer_pre: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "scheme": self.scheme, "gguf_type": self.gguf_type,
                "size_bytes": self.size_bytes, "seconds": round(self.seconds, 3),
                "intermediate": self.intermediate, "imatrix": self.imatrix,
                "tokenizer_pre": self.tokenizer_pre, **self.details}


@dataclass(frozen=True)
class GGUFOptions(MethodOptions):
    """GGUF's options (``--option KEY=VALUE``)."""

    imatrix: str | None = option(None, "importance matrix file written by llama.cpp's llama-imatrix (GGUF or "
                                       "legacy .dat); not for F32/F16/BF16")
    threads: int | None = option(None, "threads for llama.cpp's quantizer (null: every core)")
    intermediate: Literal["f16", "bf16", "f32"] | None = option(
        None, "the file quantized from (null: f16, f32 for gguf-f32)")
    tokenizer_pre: str | None = option(None, "llama.cpp pre-tokenizer name, when detection fails")
    verbose: bool = option(False, "echo llama.cpp's quantization log to stderr")


PRIORS = MethodPriors(
    job=JobPriors(flops_per_weight=50.0, memory="per-tensor", scratch_bytes=2.0,
                  steps="convert to an F16 GGUF (lazy, tensor by tensor), then llama-quantize it",
                  source="GGUF converts to an F16 GGUF first (lazily, tensor by tensor) and quantizes that file "
                         "with llama.cpp"),
)
"""Planning priors (quantmatch.sdk.priors). The layout (F32 norms, a Q6_K head, k-quant fallbacks) is the
GGUF scheme's own, computed by the planner for every GGUF scheme."""


GGML_BLOCKS = ("ggml-org/llama.cpp ggml/src/ggml-common.h (block_q4_0, block_q4_1, block_q8_0: "
               "QK4_0 = QK4_1 = QK8_0 = 32)")

@dataclass(frozen=True)
class GGUFExportOptions(MethodOptions):
    """``quantmatch export --to gguf`` options (``--option KEY=VALUE``)."""

    head: Literal["source", "q8_0"] = option(
        "source", "the token embedding and a float LM head: as the checkpoint stores them (F16, exact) or Q8_0, "
                  "as llama.cpp's own Q4_0 quantizer writes them (smaller and faster; not exact for those tensors)")


EXPORTS = (ExactExport(
    source_format="compressed-tensors",
    rules=(ExportRule("int4", True, "gguf-q4_0", group_multiple=32),
           ExportRule("int4", False, "gguf-q4_1", group_multiple=32),
           ExportRule("int8", True, "gguf-q8_0", group_multiple=32)),
    exporter="quantmatch.plugins.methods.gguf_export:export_compressed",
    options=GGUFExportOptions,
    weight_only_hint="llama.cpp quantizes activations itself; export the weight-only scheme or use --to onnx",
    tolerance="Q4_0/Q8_0 hold the codes and fp16 scales bit for bit; Q4_1 rounds its minimum -(z+8)*s to fp16. "
              "llama.cpp then quantizes activations to Q8_0 for the integer dot products: logits differ from the "
              "compressed-tensors checkpoint's by that rounding only",
    source=GGML_BLOCKS),)
"""GPTQ, AWQ and round-to-nearest checkpoints rewritten into GGUF blocks (a group of any multiple of 32
repeats its scale per 32-value block)."""


class GGUFQuantizer(Quantizer):
    name = "gguf"
    description = "GGUF via the gguf writer and llama.cpp's quantizer (legacy and k-quants)"
    support = SchemeSupport(weights=tuple(f"gguf-{t}" for t in GGUF_OUTPUTS))
    schemes = tuple(f"gguf-{t}" for t in GGUF_OUTPUTS)
    layer_precisions = ("int8", "int4", "int3", "int2")  # as llama.cpp tensor-type overrides
    artifact_format = "gguf"
    requires = ("gguf>=0.10", "llama-cpp-python>=0.3")
    install_hint = "pip install 'quantmatch[gguf]'"
    architectures = LLAMA_FAMILY
    source = "ggml-org/llama.cpp tools/quantize/quantize.cpp (QUANT_OPTIONS)"
    priors = PRIORS
    options = GGUFOptions
    exports = EXPORTS
    mixes = True

    def unit_variants(self, source: Any, schemes: Sequence[str], **options: Any) -> Iterator[UnitVariant]:
        """Each 2-D weight of ``source`` as llama.cpp stores it under each of ``schemes`` (``gguf-q8_0``,
        ``gguf-q4_k_m``, ``gguf-f16`` ...): the model is converted to an F16 GGUF once, quantized once per
        scheme by llama.cpp (no importance matrix; F32/BF16 are converted), and every tensor of each file is
        read back with gguf-py. ``activation`` is the type's :data:`VEC_DOT_TYPE`.

        A variant's ``scheme`` names the ggml type llama.cpp actually stored (``gguf-q5_0`` where
        ``gguf-q4_k_m`` fell back from Q4_K because the row is not a multiple of 256; ``gguf-q6_k`` for
        the tensors the K-mixes keep at 6 bits); each (unit, type) is yielded once. ``nbytes`` is the
        tensor's space in the file, alignment padding included, so a mixed file's size is
        ``other_bytes`` plus the chosen variants' ``nbytes``, exactly. ``weight`` is dequantized by
        ``gguf.quants.dequantize`` and its Q/K rows un-permuted back to the Hugging Face layout.

        Options: ``threads`` (llama.cpp's quantizer), ``work_dir`` (where the per-scheme files go; default
        a temporary directory, removed afterwards), ``progress(stage, done, total)``, and ``stats``: a
        dict that receives ``other_bytes`` (header, norms: the bytes no unit holds) and ``files``
        (scheme -> file size).
        """
        import shutil
        import tempfile

        from gguf import GGUFReader
        from gguf.quants import dequantize

        hf_dir = _hf_dir(source)
        layout = weight_layout(hf_dir)
        hf_names = {gname: module + ".weight" for module, (gname, _) in sorted(layout.items())}
        model = _read_model_facts(hf_dir)
        given = options.get("stats")
        stats: dict[str, Any] = given if isinstance(given, dict) else {}
        progress: ProgressFn | None = options.get("progress")
        work = Path(options["work_dir"]) if options.get("work_dir") else Path(tempfile.mkdtemp(prefix="qm-mixed-"))
        work.mkdir(parents=True, exist_ok=True)
        seen: set[tuple[str, str]] = set()
        stats.setdefault("files", {})
        stats.setdefault("layouts", {})
        try:
            base = work / "intermediate-f16.gguf"
            if not base.is_file():
                convert_hf_to_gguf(hf_dir, base, "f16")
            for i, scheme in enumerate(schemes):
                gtype = str(scheme).lower().removeprefix("gguf-")
                path = base if gtype == "f16" else work / f"{gtype}.gguf"
                if gtype in OUT_TYPES and not path.is_file():
                    convert_hf_to_gguf(hf_dir, path, gtype)
                elif not path.is_file():
                    quantize_gguf(base, path, _gguf_type_of(scheme), threads=options.get("threads"))
                if progress is not None:
                    progress("quantize", i + 1, len(schemes))
                reader = GGUFReader(path)
                size = path.stat().st_size
                stats["files"][str(scheme)] = size
                layout_of: dict[str, str] = stats["layouts"].setdefault(str(scheme), {})
                unit_bytes = 0
                for t in reader.tensors:
                    if t.name not in hf_names:
                        continue
                    nbytes = _file_bytes(t.n_bytes, reader.alignment)
                    unit_bytes += nbytes
                    layout_of[t.name] = mixed_type_scheme(t.tensor_type.name)
                    key = (t.name, t.tensor_type.name)
                    if key in seen:
                        continue
                    seen.add(key)
                    rows = dequantize(t.data, t.tensor_type).astype("float32").reshape(
                        [int(d) for d in reversed(t.shape)])
                    yield UnitVariant(t.name, hf_names[t.name], mixed_type_scheme(t.tensor_type.name), nbytes,
                                      model.unpermute(t.name, rows), VEC_DOT_TYPE.get(t.tensor_type.name, ""))
                stats["other_bytes"] = max(int(stats.get("other_bytes", 0)), size - unit_bytes)
        finally:
            if not options.get("work_dir"):
                shutil.rmtree(work, ignore_errors=True)

    def quantize_mixed(self, source: Any, assignments: Mapping[str, str], out: Any,
                       **options: Any) -> GGUFArtifact:
        """Write ``out/model.gguf`` with one ggml type per tensor: ``assignments`` maps GGUF tensor names to
        schemes as :meth:`unit_variants` names them (``gguf-q6_k``, ``gguf-q5_0``, ``gguf-iq4_nl`` ...);
        ``base_scheme`` (option, default ``gguf-q4_k_m``) is the file type, which sets every tensor not
        listed. Hugging Face module names (``model.layers.0.mlp.down_proj``) are accepted too (a recipe
        made from the prior names them). Runs llama.cpp's quantizer once with per-tensor type overrides
        (``tensor_types``)."""
        hf_dir = _hf_dir(source)
        base_scheme = str(options.get("base_scheme") or "gguf-q4_k_m")
        gtype = _gguf_type_of(base_scheme)
        names = {g: g for g, _ in weight_layout(hf_dir).values()}
        for module, (g, _) in weight_layout(hf_dir).items():  # a prior recipe names Hugging Face modules
            names.setdefault(module, g)
            names.setdefault(module + ".weight", g)
        unknown = sorted(set(assignments) - set(names))
        if unknown:
            raise GGUFQuantizeError(f"the recipe names tensors this model does not have: {', '.join(unknown[:3])} "
                                    "(make the recipe for this model with quantmatch plan MODEL --mixed)")
        overrides = {names[name]: _ggml_type_of(s) for name, s in sorted(assignments.items())}
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / ARTIFACT_NAME
        tmp = out_dir / ".intermediate-f16.gguf"
        start = time.perf_counter()
        try:
            conv = convert_hf_to_gguf(hf_dir, tmp, "f16", progress=options.get("progress"))
            quantize_gguf(tmp, target, gtype, threads=options.get("threads"), tensor_types=overrides,
                          progress=options.get("progress"))
        finally:
            tmp.unlink(missing_ok=True)
        details = {"intermediate_size_bytes": conv.size_bytes, **_type_counts(target),
                   "tensor_overrides": len(overrides), "mixed": True}
        return GGUFArtifact(target, base_scheme, gtype, target.stat().st_size, time.perf_counter() - start,
                            intermediate="f16", tokenizer_pre=conv.tokenizer_pre, details=details)

    def check_model(self, model: ModelInfo, scheme: Scheme) -> list[Problem]:
        """The base checks plus the converter's own limits (architectures, mixture-of-experts and,
        for a local directory, the tokenizer: ``tokenizer.json`` is read, never a weight)."""
        from quantmatch.sdk.models import model_dir

        problems = super().check_model(model, scheme)
        if model.model_type in self.architectures and model.model_type not in CONVERTIBLE_MODEL_TYPES:
            problems.append(Problem(
                f"the GGUF converter does not write {model.model_type!r} models "
                f"(it converts: {', '.join(sorted(CONVERTIBLE_MODEL_TYPES))})",
                source=_CONVERTER,
                fix="convert with llama.cpp's convert_hf_to_gguf.py and quantize the result"))
        elif model.is_moe:
            problems.append(Problem("the GGUF converter does not write mixture-of-experts models",
                                    source=_CONVERTER))
        directory = model_dir(model)
        refusal = tokenizer_refusal(directory) if directory is not None else None
        if refusal:
            problems.append(Problem(f"the GGUF converter cannot write this tokenizer: {refusal}",
                                    source=_CONVERTER, fix=TOKENIZER_FIX))
        return problems

    @staticmethod
    def load_artifact(directory: str | Path, dtype: str | None = None) -> tuple[GGUFModel, None]:
        """``(model, None)`` for an artifact directory: the GGUF tokenizes itself (``dtype`` unused).

        A ``model.gguf`` whose size differs from the manifest's (a truncated copy) raises
        :class:`~quantmatch.sdk.artifact.ArtifactError` naming the command that re-creates it.
        """
        from quantmatch.sdk.artifact import check_files, remake_command

        d = Path(directory)
        manifest = check_files(d)
        return GGUFModel(d / ARTIFACT_NAME, n_ctx=1024, remake=f"re-create it with {remake_command(d, manifest)}"), None

    def quantize(self, model: Any, scheme: Scheme | str, out: Any,  # type: ignore[override]
                 options: Mapping[str, Any] | None = None, **more: Any) -> GGUFArtifact:
        """Convert ``model`` and quantize it into ``out/model.gguf``; return what was written.

        ``model`` is an object with ``hf_dir`` (``quantmatch.sdk.models.ModelSource``), the path of a
        Hugging Face model directory, or a spec ``quantmatch.sdk.models.resolve_model`` accepts. ``out``
        is an existing (fresh, temporary) directory owned by the caller, who renames it on success;
        only ``model.gguf`` is left in it. ``options`` (or keyword arguments; :class:`GGUFOptions`
        and the pipeline's ``rules`` and ``progress``):

        - ``imatrix``: path of an importance matrix (llama.cpp ``imatrix`` GGUF or legacy ``.dat``);
        - ``threads``: threads for llama.cpp's quantizer (default: all cores);
        - ``intermediate``: ``f16`` (default), ``bf16`` or ``f32``, the file quantized from;
        - ``tokenizer_pre``: llama.cpp pre-tokenizer name when detection fails;
        - ``rules``: layer-wise precision rules (``quantmatch.sdk.layerwise.LayerRule``), applied as
          llama.cpp tensor-type overrides (see :func:`tensor_types_for_rules`);
        - ``progress``: ``progress(stage, done, total)`` with stages ``convert`` and ``quantize``
          (one call per tensor);
        - ``verbose``: echo llama.cpp's quantization log to stderr.
        """
        opts = {**(options or {}), **more}
        cfg = GGUFOptions.of(opts, self.name)
        s = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
        gtype = s.weight_format.removeprefix("gguf-")
        if not s.is_gguf or gtype not in GGUF_OUTPUTS:
            raise ValueError(f"gguf cannot produce scheme {s}: valid: {', '.join(self.schemes)}")
        hf_dir = _hf_dir(model)
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / ARTIFACT_NAME
        progress: ProgressFn | None = opts.get("progress")
        imatrix = cfg.imatrix
        overrides = tensor_types_for_rules(hf_dir, opts.get("rules") or ())
        start = time.perf_counter()
        if gtype in OUT_TYPES and imatrix:
            raise ValueError(f"an importance matrix has no effect on {gtype.upper()}; leave it out")
        if gtype in OUT_TYPES and not overrides:
            conv = convert_hf_to_gguf(hf_dir, target, gtype, tokenizer_pre=cfg.tokenizer_pre,
                                      progress=progress)
            return GGUFArtifact(target, str(s), gtype, conv.size_bytes, time.perf_counter() - start,
                                tokenizer_pre=conv.tokenizer_pre, details=_type_counts(target))
        base = cfg.intermediate or ("f32" if gtype == "f32" else "f16")
        if base not in OUT_TYPES:
            raise ValueError(f"intermediate must be one of {', '.join(OUT_TYPES)}, not {base!r}")
        tmp = out_dir / f".intermediate-{base}.gguf"
        try:
            conv = convert_hf_to_gguf(hf_dir, tmp, base, tokenizer_pre=cfg.tokenizer_pre,
                                      progress=progress)
            quantize_gguf(tmp, target, gtype, imatrix=imatrix, threads=cfg.threads,
                          tensor_types=overrides, progress=progress, verbose=cfg.verbose)
        finally:
            tmp.unlink(missing_ok=True)
        details = {"intermediate_size_bytes": conv.size_bytes, **_type_counts(target)}
        if overrides:
            details["tensor_overrides"] = len(overrides)
        return GGUFArtifact(target, str(s), gtype, target.stat().st_size, time.perf_counter() - start,
                            intermediate=base, imatrix=str(imatrix) if imatrix else None,
                            tokenizer_pre=conv.tokenizer_pre, details=details)


def _hf_dir(model: Any) -> Path:
    """The Hugging Face directory of a ``ModelSource``, a directory path, or a model spec."""
    if hasattr(model, "hf_dir"):
        return Path(model.hf_dir)
    path = Path(str(model)).expanduser()
    if path.is_dir():
        return path
    from quantmatch.sdk.models import resolve_model

    return Path(resolve_model(str(model)).hf_dir)


_MIXED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "Q4_K", "Q4_1", "Q4_0", "IQ4_NL",
                "IQ4_XS", "Q3_K", "Q2_K")
"""ggml tensor types a mixed recipe may assign (those llama.cpp's ftypes in :data:`GGUF_OUTPUTS` store)."""


VEC_DOT_TYPE = {"F32": "", "F16": "f16", "BF16": "bf16", "Q8_0": "q8_0", "Q4_0": "q8_0", "Q5_0": "q8_0",
                "IQ4_NL": "q8_0", "Q4_1": "q8_0", "Q5_1": "q8_0", "Q2_K": "q8_k", "Q3_K": "q8_k", "Q4_K": "q8_k",
                "Q5_K": "q8_k", "Q6_K": "q8_k", "IQ4_XS": "q8_k"}
"""How llama.cpp's CPU backend rounds a matrix product's activations for each weight type (its
``vec_dot_type``: ggml-org/llama.cpp ggml/src/ggml-cpu/ggml-cpu.c ``type_traits_cpu``): Q4_0/Q5_0/Q8_0/IQ4_NL
use Q8_0, Q4_1/Q5_1 use Q8_1 (the same int8 values and fp16 scale as Q8_0, plus a block sum: listed as
``q8_0``), the K-quants and IQ4_XS use Q8_K (blocks of 256), F16/BF16 their own type, F32 none."""


def mixed_type_scheme(ggml_type: str) -> str:
    """The recipe's name of a per-tensor ggml type: ``Q6_K`` -> ``gguf-q6_k``."""
    return f"gguf-{ggml_type.lower()}"


def _ggml_type_of(scheme: str) -> str:
    name = str(scheme).lower().removeprefix("gguf-").upper()
    if name not in _MIXED_TYPES:
        raise ValueError(f"{scheme!r} is not a GGUF tensor type a recipe can assign (valid: "
                         f"{', '.join(mixed_type_scheme(t) for t in _MIXED_TYPES)})")
    return name


def _gguf_type_of(scheme: str) -> str:
    gtype = str(scheme).lower().removeprefix("gguf-")
    if gtype not in GGUF_OUTPUTS or gtype in OUT_TYPES:
        raise ValueError(f"{scheme!r} is not a GGUF type llama.cpp's quantizer writes here (valid: "
                         f"{', '.join(f'gguf-{t}' for t in GGUF_OUTPUTS if t not in OUT_TYPES)})")
    return gtype


def _file_bytes(n_bytes: int, alignment: int) -> int:
    """A tensor's space in a GGUF file: its bytes padded to the file's alignment."""
    return -(-int(n_bytes) // int(alignment)) * int(alignment)


@dataclass(frozen=True)
class _QKLayout:
    n_head: int
    n_kv: int
    permute: bool

    def unpermute(self, gguf_name: str, rows: Any) -> Any:
        """Undo :func:`permute_qk` for ``attn_q``/``attn_k`` weights (llama.cpp's rotary row order -> HF's)."""
        if not self.permute:
            return rows
        if gguf_name.endswith("attn_q.weight"):
            heads = self.n_head
        elif gguf_name.endswith("attn_k.weight"):
            heads = self.n_kv
        else:
            return rows
        return (rows.reshape(heads, rows.shape[0] // heads // 2, 2, *rows.shape[1:])
                .swapaxes(1, 2).reshape(rows.shape))


def _read_model_facts(hf_dir: Path) -> _QKLayout:
    from quantmatch.plugins.methods.gguf_convert import _read_model

    m = _read_model(hf_dir)
    return _QKLayout(m.n_head, m.n_kv, m.permute)


def _type_counts(path: Path) -> dict[str, Any]:
    """``{"tensor_types": {ggml type: tensor count}}`` of a GGUF file (header only)."""
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    for t in GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return {"tensor_types": dict(sorted(counts.items()))}


def tensor_types_for_rules(hf_dir: str | Path, rules: Sequence[Any]) -> dict[str, str]:
    """``{GGUF tensor name: ggml type}`` for the 2-D weights that layer-wise ``rules`` hit.

    Precisions map to ggml types: ``fp32``/``fp16``/``bf16`` -> F32/F16/BF16, ``int8`` -> Q8_0,
    ``int4`` -> Q4_K (Q4_0 where the row is not a multiple of 256), ``int3`` -> Q3_K, ``int2`` -> Q2_K.
    Rules for norms change nothing: llama.cpp keeps norms in F32. With tied embeddings the head is
    ``token_embd.weight``: a rule for the embeddings wins over one for ``lm_head``. Raises
    ``ValueError`` for a precision GGUF cannot store (``fp8``, ``int1``) or a row a k-quant cannot hold.
    """
    if not rules:
        return {}
    from quantmatch.sdk.layerwise import assign

    layout = weight_layout(hf_dir)
    out: dict[str, str] = {}
    for module, rule in sorted(assign(layout, rules).items(), key=lambda kv: kv[0] == "lm_head"):
        if rule is None:
            continue
        name, per_row = layout[module]
        if name in out:
            continue
        types = _PRECISION_TYPES.get(rule.precision)
        if types is None:
            raise ValueError(f"layer rule {rule.name!r}: GGUF has no {rule.precision} tensor type "
                             f"(valid: {', '.join(_PRECISION_TYPES)})")
        chosen = next((t for t in types if per_row % _BLOCK[t] == 0), None)
        if chosen is None:
            raise ValueError(f"layer rule {rule.name!r}: {rule.precision} is {types[0]} in GGUF, whose "
                             f"blocks of {_BLOCK[types[0]]} do not divide the {per_row} values per row "
                             f"of {module}; use int4 or int8 there")
        out[name] = chosen
    return out


# ---- llama.cpp quantizer -----------------------------------------------------------------------

def load_imatrix(path: str | Path) -> dict[str, Any]:
    """Read an importance matrix as ``{gguf tensor name: float32 array}``, as llama-quantize does.

    Both formats of llama.cpp's ``llama-imatrix`` are read: the GGUF one (``<name>.in_sum2`` and
    ``<name>.counts`` tensors; values are sums divided by counts, per expert) and the legacy binary
    ``.dat`` one (values divided by the call count). Raises :class:`GGUFQuantizeError` when the file
    is unreadable or holds non-finite values.
    """
    import numpy as np

    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise GGUFQuantizeError(f"cannot read importance matrix {p}: {e}; {_IMATRIX_FIX}") from e
    out: dict[str, Any] = {}
    try:
        if raw[:4] == b"GGUF":
            from gguf import GGUFReader

            tensors = {t.name: np.asarray(t.data, dtype=np.float32).reshape(-1)
                       for t in GGUFReader(p).tensors}
            for name in [n.removesuffix(".in_sum2") for n in tensors if n.endswith(".in_sum2")]:
                sums, counts = tensors[name + ".in_sum2"], tensors.get(name + ".counts")
                if counts is None:
                    raise GGUFQuantizeError(f"{p}: {name} has sums but no counts; {_IMATRIX_FIX}")
                rows = sums.reshape(counts.size, -1).astype(np.float64)
                c = np.round(counts).reshape(-1, 1)
                out[name] = np.where(c > 0, rows / np.where(c > 0, c, 1), 1.0).astype(np.float32).reshape(-1)
        else:
            (n_entries,) = struct.unpack_from("<i", raw, 0)
            pos = 4
            for _ in range(n_entries):
                (length,) = struct.unpack_from("<i", raw, pos)
                name = raw[pos + 4: pos + 4 + length].decode("utf-8")
                pos += 4 + length
                ncall, nval = struct.unpack_from("<ii", raw, pos)
                pos += 8
                vals = np.frombuffer(raw, dtype="<f4", count=nval, offset=pos).astype(np.float32)
                pos += 4 * nval
                out[name] = vals / ncall if ncall > 0 else vals.copy()
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise GGUFQuantizeError(f"{p} is not a llama.cpp importance matrix ({e}); {_IMATRIX_FIX}") from e
    if not out:
        raise GGUFQuantizeError(f"{p}: the importance matrix holds no entries; {_IMATRIX_FIX}")
    bad = [n for n, v in out.items() if not np.all(np.isfinite(v))]
    if bad:
        raise GGUFQuantizeError(f"{p}: non-finite importance values for {', '.join(bad[:3])}; {_IMATRIX_FIX}")
    return out


def quantize_gguf(src: str | Path, dst: str | Path, gguf_type: str, *,
                  imatrix: str | Path | Mapping[str, Any] | None = None,
                  tensor_types: Mapping[str, str] | None = None, threads: int | None = None,
                  progress: ProgressFn | None = None, verbose: bool = False) -> Path:
    """Quantize the F32/F16/BF16 GGUF ``src`` to ``gguf_type`` at ``dst`` with ``llama_model_quantize``.

    ``imatrix`` is a file (see :func:`load_imatrix`) or an already loaded mapping; ``tensor_types``
    maps GGUF tensor names to ggml types (``Q8_0``, ``F16`` ...) that override llama.cpp's choice
    (see :func:`tensor_types_for_rules`). llama.cpp's log is
    captured: ``progress("quantize", i, n)`` follows its per-tensor lines, ``verbose`` echoes it to
    stderr, and its last lines are in the :class:`GGUFQuantizeError` raised when it fails. A Ctrl-C
    during the (uninterruptible) C call is re-raised when it returns, with ``dst`` removed.
    """
    gtype = gguf_type.lower()
    if gtype not in _FTYPE_NAMES:
        raise ValueError(f"cannot quantize to {gguf_type!r} (valid: {', '.join(_FTYPE_NAMES)})")
    import llama_cpp
    import numpy as np

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _FTYPE_NAMES[gtype])
    params.nthread = int(threads or os.cpu_count() or 1)
    keep: list[Any] = []  # buffers the C side reads; alive until the call returns
    if imatrix is not None:
        data = imatrix if isinstance(imatrix, Mapping) else load_imatrix(imatrix)
        entries = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
        for i, (name, values) in enumerate(data.items()):
            buf = np.ascontiguousarray(values, dtype=np.float32)
            key = name.encode("utf-8")
            keep += [buf, key]
            entries[i].name = key
            entries[i].data = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = buf.size
        entries[len(data)].name = None  # terminator
        keep.append(entries)
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    if tensor_types:
        overrides = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
        for i, (name, type_name) in enumerate(tensor_types.items()):
            pattern = ("^" + re.escape(name) + "$").encode("utf-8")
            keep.append(pattern)
            overrides[i].pattern = pattern
            overrides[i].type = getattr(llama_cpp, f"GGML_TYPE_{type_name.upper()}")
        overrides[len(tensor_types)].pattern = None  # terminator
        keep.append(overrides)
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    dst = Path(dst)
    with _LlamaLog(progress, verbose) as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    del keep
    if log.interrupted:
        dst.unlink(missing_ok=True)
        raise KeyboardInterrupt
    if rc != 0 or not dst.is_file():
        dst.unlink(missing_ok=True)
        raise GGUFQuantizeError(f"llama.cpp could not quantize {src} to {gtype.upper()} (code {rc}); fix what "
                                "its log below names, or choose another gguf-* scheme:\n"
                                + "".join(log.lines).strip())
    return dst


class _LlamaLog:
    """Route llama.cpp's log through Python while a call runs: keep the tail, report progress."""

    _STEP = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")

    def __init__(self, progress: ProgressFn | None, verbose: bool) -> None:
        self.progress, self.verbose = progress, verbose
        self.lines: deque[str] = deque(maxlen=30)
        self.interrupted = False
        self._callback: Any = None

    def _on_log(self, level: int, text: bytes, user_data: Any) -> None:
        try:
            line = text.decode("utf-8", errors="replace")
            self.lines.append(line)
            if self.verbose:
                sys.stderr.write(line)
            m = self._STEP.match(line)
            if m and self.progress is not None:
                self.progress("quantize", int(m[1]), int(m[2]))
        except BaseException:  # never raise into C; a Ctrl-C is re-raised after the call
            self.interrupted = True

    def __enter__(self) -> _LlamaLog:
        import llama_cpp

        self._callback = llama_cpp.llama_log_callback(self._on_log)
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))
        return self

    def __exit__(self, *exc: object) -> None:
        import llama_cpp
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


# ---- evaluation --------------------------------------------------------------------------------

class GGUFModel:
    """A GGUF file loaded in llama-cpp-python for evaluation (see :func:`load_for_eval`).

    The llama.cpp context is created on first use with ``n_ctx`` equal to the window asked for
    (re-created when a longer one is needed), all logits kept, and an explicit thread count.
    ``kv_cache`` is the KV-cache type: ``f16`` (llama.cpp's default, what users run) or ``f32``
    (exact attention, for comparing logits with a float32 reference).
    """

    def __init__(self, path: str | Path, n_ctx: int = 512, threads: int | None = None,
                 kv_cache: str = "f16", remake: str = "re-create it") -> None:
        self.path = Path(path)
        self.remake = remake  # how to re-create the file, for the error when llama.cpp cannot load it
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such GGUF file")
        if kv_cache not in _KV_TYPES:
            raise ValueError(f"kv_cache must be one of {', '.join(_KV_TYPES)}, not {kv_cache!r}")
        self.threads = int(threads or os.cpu_count() or 1)
        self.n_ctx = int(n_ctx)
        self.kv_cache = kv_cache
        self._llm: Any = None

    # -- plumbing --
    def _model(self, n_ctx: int | None = None) -> Any:
        need = max(int(n_ctx or 0), 1)
        if self._llm is None or need > self.n_ctx:
            from llama_cpp import Llama

            from quantmatch.plugins.backends.llama_cpp_compat import safe_model_defaults

            self.close()
            self.n_ctx = max(self.n_ctx, need)
            kv = _KV_TYPES[self.kv_cache]
            try:
                with safe_model_defaults():
                    self._llm = Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_batch=min(self.n_ctx, 512),
                                      n_ubatch=min(self.n_ctx, 512), logits_all=True, n_threads=self.threads,
                                      n_threads_batch=self.threads, type_k=kv, type_v=kv, verbose=False)
            except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
                raise GGUFLoadError(f"{self.path}: llama.cpp cannot load this GGUF file (truncated or "
                                    f"corrupt?); {self.remake}. llama.cpp said: {e}") from e
        return self._llm

    def close(self) -> None:
        """Free the llama.cpp model and context."""
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def __enter__(self) -> GGUFModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries --
    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def metadata(self) -> dict[str, str]:
        """The GGUF key/values as llama.cpp reports them (strings)."""
        return dict(self._model().metadata)

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of ``text`` by the GGUF's own tokenizer (special-token text is not parsed)."""
        return list(self._model().tokenize(text.encode("utf-8"), add_bos=add_bos, special=False))

    def detokenize(self, ids: Sequence[int]) -> str:
        return bytes(self._model().detokenize(list(ids))).decode("utf-8", errors="replace")

    def logits(self, token_ids: Sequence[int]) -> Any:
        """``float32[len(token_ids), n_vocab]``: the logits after each token, from a fresh context."""
        import numpy as np

        ids = [int(t) for t in token_ids]
        llm = self._model(len(ids))
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32, copy=True)

    def nll(self, token_ids: Sequence[int]) -> float:
        """Summed negative log-likelihood of one window scored from a fresh context (the runner contract's
        ``nll``, so :func:`quantmatch.sdk.evaluate.perplexity` scores this model like any runner)."""
        chunk = [int(t) for t in token_ids]
        llm = self._model(len(chunk))
        llm.reset()
        llm.eval(chunk)
        return _sum_nll(llm.scores, chunk)

    def perplexity(self, token_ids: Sequence[int], window: int, progress: ProgressFn | None = None) -> float:
        """Perplexity over non-overlapping windows, each evaluated from an empty context: the one protocol of
        :func:`quantmatch.sdk.evaluate.perplexity` (``progress("evaluate", i, n)`` per window)."""
        from quantmatch.sdk.evaluate import perplexity

        return perplexity(self, [int(t) for t in token_ids], window, progress)[0]

    def generate(self, prompt: str, max_tokens: int = 16) -> str:
        """Greedy continuation of ``prompt`` (the GGUF's BOS rule applies), without the prompt."""
        llm = self._model()
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=_adds_bos(llm), special=True)
        llm.reset()
        out: list[int] = []
        for tok in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            if llm.token_eos() == tok or len(out) >= max_tokens:
                break
            out.append(int(tok))
            if len(ids) + len(out) >= self.n_ctx:
                break
        return self.detokenize(out)


def _sum_nll(scores: Any, chunk: Sequence[int], rows: int = 256) -> float:
    """Sum of ``-log softmax(scores[i])[chunk[i + 1]]`` over the window, ``rows`` rows at a time."""
    import numpy as np

    total = 0.0
    for a in range(0, len(chunk) - 1, rows):
        b = min(a + rows, len(chunk) - 1)
        logits = np.asarray(scores[a:b], dtype=np.float32)
        m = logits.max(axis=1)
        lse = m.astype(np.float64) + np.log(np.exp(logits - m[:, None]).sum(axis=1, dtype=np.float64))
        total += float((lse - logits[np.arange(b - a), chunk[a + 1: b + 1]]).sum())
    return total


def _adds_bos(llm: Any) -> bool:
    value = str(llm.metadata.get("tokenizer.ggml.add_bos_token", "false")).lower()
    return value == "true"


def load_for_eval(path: str | Path, n_ctx: int = 1024, threads: int | None = None,
                  kv_cache: str = "f16") -> GGUFModel:
    """Load a GGUF for evaluation (see :class:`GGUFModel`); the context widens when needed."""
    return GGUFModel(path, n_ctx=n_ctx, threads=threads, kv_cache=kv_cache)


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(GGUFQuantizer)
