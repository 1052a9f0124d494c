"""ONNX Runtime's quantization tools: export, then dynamic/static int8 or 4-bit MatMulNBits.

:meth:`OnnxQuantizer.quantize` (``quantmatch quantize MODEL --method onnx``) writes an ``onnx`` artifact
directory: the graph of :mod:`.onnx_export` (``model.onnx``), the source's config and tokenizer files,
and the ``quantmatch.json`` manifest. The scheme picks onnxruntime's tool (:data:`RECIPES`):

- ``w8a8-int8``: SmoothQuant factors folded into the float model
  (:func:`quantmatch.plugins.methods.algorithms.smoothquant.smooth_model`, strength searched per layer
  group on the calibration text), then ``quantize_dynamic`` (int8 per-channel weights, activations
  quantized per call and per tensor): ``DynamicQuantizeLinear`` + ``MatMulInteger`` (fused to
  ``DynamicQuantizeMatMul`` at load);
- ``w8a8-int8-static``: the same smoothing, then ``quantize_static`` with a MinMax calibration pass,
  QDQ format (uint8 activations per tensor, int8 per-channel weights);
- ``w4a32-g32`` / ``w4a16-g32`` / ``w4a8-int8-g32``: ``MatMulNBitsQuantizer`` (4-bit symmetric blocks
  of 32) with ``accuracy_level`` 0 (fp32 math), 2 (fp16 math where the CPU has it, else fp32) and
  4 (activations quantized to int8 per block: integer math).

Only ``MatMul`` nodes with a constant weight are quantized (attention score products stay fp32);
the LM head is quantized too, the ``down_proj`` layers stay fp32 in the int8 recipes
(:func:`weight_matmuls`; the static QDQ tool is told these names, since it would
quantize the attention products too), and on CPUs without VNNI the int8 weights use 7 bits
(``reduce_range``, as onnxruntime's documentation asks, since its u8 x s8 kernels can saturate there).
:func:`quantize_onnx` also writes scheme ``fp32``: the float graph, the ONNX Runtime runner's baseline.
The unsmoothed fp32 export of a model is kept in the user cache and reused by the next scheme of the
same model (the export is the slow step).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from quantmatch.plugins.methods._common import HF_CAUSAL_LM
from quantmatch.plugins.methods.onnx_export import OnnxLayout, export_llama, layout_of
from quantmatch.sdk.errors import InputError
from quantmatch.sdk.export import ExactExport, ExportRule
from quantmatch.sdk.hookspecs import Register
from quantmatch.sdk.options import MethodOptions, option
from quantmatch.sdk.pluginhost import hookimpl
from quantmatch.sdk.priors import JobPriors, MethodPriors
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport
from quantmatch.sdk.scheme import Scheme

__all__ = ["GRAPH_FILE", "RECIPES", "OnnxArtifact", "OnnxExportOptions", "OnnxQuantizer", "OnnxRecipe",
           "graph_weight_bytes", "op_counts", "quantize_onnx", "weight_matmuls"]

GRAPH_FILE = "model.onnx"
ProgressFn = Callable[[str, int, int], None]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "vocab.json", "merges.txt", "config.json", "generation_config.json", "chat_template.jinja")


@dataclass(frozen=True)
class OnnxRecipe:
    """How one scheme is produced with onnxruntime's tools."""

    tool: str  # "fp32", "dynamic", "static", "nbits"
    accuracy_level: int | None = None
    block_size: int = 32
    smooth: bool = False


RECIPES: dict[str, OnnxRecipe] = {
    "fp32": OnnxRecipe("fp32"),
    "w8a8-int8": OnnxRecipe("dynamic", smooth=True),
    "w8a8-int8-static": OnnxRecipe("static", smooth=True),
    "w4a32-g32": OnnxRecipe("nbits", accuracy_level=0),
    "w4a16-g32": OnnxRecipe("nbits", accuracy_level=2),
    "w4a8-int8-g32": OnnxRecipe("nbits", accuracy_level=4),
}
"""Scheme -> onnxruntime recipe (see the module docstring)."""


def op_counts(path: str | Path) -> dict[str, int]:
    """``{op_type: count}`` of the nodes in an ONNX file's main graph (weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


# ---- quantization -----------------------------------------------------------------------------------
def _calibration_feeds(samples: Any, lay: OnnxLayout) -> list[dict[str, Any]]:
    import numpy as np

    feeds = []
    for row in samples:
        ids = row.numpy()[None].astype(np.int64)
        feed: dict[str, Any] = {"input_ids": ids, "logit_index": np.arange(ids.shape[1], dtype=np.int64)}
        empty = np.zeros((1, lay.kv_heads, 0, lay.head_dim), dtype=np.float32)
        for i in range(lay.layers):
            feed[f"past_key_{i}"] = empty
            feed[f"past_value_{i}"] = empty
        feeds.append(feed)
    return feeds


def weight_matmuls(path: Path) -> tuple[list[str], list[str]]:
    """The ``MatMul`` nodes with a constant weight, split into those the int8 recipes quantize and those
    they leave in fp32: the ``down_proj`` layers, whose SwiGLU inputs carry rare huge values that one
    per-tensor activation scale cannot cover (the same reason SmoothQuant keeps their activations
    per-token; docs/benchmarks.md). The attention products (no constant operand) are in neither."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    const_b = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    kept = [n for n in const_b if "down_proj" in n]
    return [n for n in const_b if n not in kept], kept


def _apply_recipe(recipe: OnnxRecipe, fp32: Path, out: Path, samples: Any, lay: OnnxLayout) -> dict[str, Any]:
    """Write the quantized graph; returns what the manifest records about the tool's settings."""
    from onnxruntime.quantization import QuantFormat, QuantType

    from quantmatch.sdk.hostcpu import has_fast_int8_dot

    opts = {"MatMulConstBOnly": True}
    # Without VNNI, ONNX Runtime's u8 x s8 kernels add pairs of products in int16 and can saturate:
    # its documentation asks for 7-bit weights (reduce_range) there.
    reduce_range = not has_fast_int8_dot()
    quantized, excluded = weight_matmuls(fp32) if recipe.tool in ("dynamic", "static") else ([], [])
    settings = {"reduce_range": reduce_range, "fp32_matmuls": len(excluded)} if quantized else {}
    if recipe.tool == "fp32":
        shutil.copy(fp32, out)
    elif recipe.tool == "dynamic":
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(fp32, out, op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8, nodes_to_quantize=quantized, extra_options=opts)
    elif recipe.tool == "static":
        from onnxruntime.quantization import CalibrationDataReader, quantize_static

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self) -> None:
                self._it = iter(_calibration_feeds(samples, lay))

            def get_next(self) -> dict[str, Any] | None:
                return next(self._it, None)

        quantize_static(fp32, out, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                        per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_quantize=quantized, extra_options=opts)
    elif recipe.tool == "nbits":
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=recipe.block_size, is_symmetric=True,
                                 accuracy_level=recipe.accuracy_level, op_types_to_quantize=("MatMul",))
        q.process()
        q.model.save_model_to_file(str(out), use_external_data_format=False)
    else:  # pragma: no cover - RECIPES is closed
        raise ValueError(f"unknown ONNX recipe {recipe.tool!r}")
    return settings


def graph_weight_bytes(path: str | Path) -> int:
    """Initializer bytes of an ONNX graph, less tables only read by ``Gather`` (one row per token)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    used_elsewhere = {i for n in model.graph.node if n.op_type != "Gather" for i in n.input}
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer
               if t.name not in gathered or t.name in used_elsewhere)


def export_cache(source: Any) -> Path:
    """Where the unsmoothed fp32 export of ``source`` is kept: the user cache, keyed by the model's
    directory and its weight files' sizes and times (a changed model gets a new export)."""
    from quantmatch.sdk.models import cache_root

    hf = Path(source.hf_dir).resolve()
    stamp = "|".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(hf.glob("*.safetensors")))
    key = hashlib.sha256(f"{hf}|{stamp}".encode()).hexdigest()[:16]
    return cache_root() / "onnx-exports" / f"{hf.name}-{key}.onnx"


def write_onnx(source: Any, scheme: str, out: Path, *, calibration: Any = None, progress: ProgressFn | None = None,
               fp32_cache: str | Path | None = None) -> dict[str, Any]:
    """Export ``source`` (a :class:`~quantmatch.sdk.models.ModelSource`) and quantize it to ``scheme`` with
    onnxruntime's tools, writing the graph and the tokenizer files into the existing directory ``out``;
    returns what the manifest records about the tool and the graph."""
    recipe = RECIPES.get(scheme)
    if recipe is None:
        raise InputError(f"no ONNX Runtime recipe for {scheme!r} (valid: {', '.join(RECIPES)})", choices=RECIPES)

    def say(stage: str, done: int) -> None:
        if progress:
            progress(stage, done, 1)

    say("load", 0)
    out.mkdir(parents=True, exist_ok=True)
    hf_model, tokenizer = source.load("float32")
    details: dict[str, Any] = {"tool": recipe.tool, "accuracy_level": recipe.accuracy_level,
                               "block_size": recipe.block_size if recipe.tool == "nbits" else None}
    samples = None
    if recipe.tool == "static" or recipe.smooth:
        from quantmatch.sdk.calibration import CalibrationSpec, calibration_samples

        cal = calibration or CalibrationSpec(samples=8, seq_len=256)
        samples = calibration_samples(tokenizer, cal)
        details["calibration"] = cal.to_dict()
        if recipe.smooth:
            from quantmatch.plugins.methods.algorithms.smoothquant import smooth_model

            say("smooth", 0)
            chosen = sorted(smooth_model(hf_model, samples).values())
            details["smoothquant_alpha"] = {"min": chosen[0], "median": chosen[len(chosen) // 2], "max": chosen[-1]}
    cache = Path(fp32_cache) if fp32_cache and not recipe.smooth else None
    say("export", 0)
    if cache is not None and cache.is_file():
        fp32, lay = cache, layout_of(hf_model.config)
    else:
        fp32 = out / ".fp32.onnx"
        lay = export_llama(hf_model, fp32)
        if cache is not None and not (fp32.with_name(fp32.name + ".data")).exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{time.monotonic_ns()}.tmp")
            shutil.copy(fp32, tmp)
            tmp.replace(cache)
    del hf_model
    say("quantize", 0)
    details.update(_apply_recipe(recipe, fp32, out / GRAPH_FILE, samples, lay))
    for leftover in out.glob(".fp32.onnx*"):
        leftover.unlink()
    for name in _TOKENIZER_FILES:
        f = Path(source.hf_dir) / name
        if f.is_file():
            shutil.copy(f, out / name)
    details["layout"] = lay.to_dict()
    details["ops"] = op_counts(out / GRAPH_FILE)
    details["weight_bytes_per_token"] = graph_weight_bytes(out / GRAPH_FILE)
    say("quantize", 1)
    return details


def quantize_onnx(model: Any, scheme: str, out: str | Path, *, force: bool = False, calibration: Any = None,
                  progress: ProgressFn | None = None, fp32_cache: str | Path | None = None) -> Path:
    """Export ``model`` (a spec ``resolve_model`` takes, or a ``ModelSource``) and quantize it to
    ``scheme`` with onnxruntime's tools into the artifact directory ``out`` (written atomically, with its
    manifest). ``scheme`` ``fp32`` writes the float graph (the ONNX Runtime baseline), which
    ``quantmatch quantize`` does not offer.

    ``calibration`` is a :class:`~quantmatch.sdk.calibration.CalibrationSpec` for the smoothed and static
    schemes (default: 8 samples of 256 tokens of the packaged calibration text). ``fp32_cache`` is a path
    where the unsmoothed fp32 export is kept and reused by later calls (default: :func:`export_cache`).
    Raises :class:`~quantmatch.sdk.errors.InputError` for a scheme without a recipe and
    :class:`~quantmatch.plugins.methods.onnx_export.OnnxExportError` for models the exporter cannot write.
    """
    from quantmatch.sdk.artifact import Manifest, atomic_output, check_output, library_versions, write_manifest
    from quantmatch.sdk.models import resolve_model

    if scheme not in RECIPES:
        raise InputError(f"no ONNX Runtime recipe for {scheme!r} (valid: {', '.join(RECIPES)})", choices=RECIPES)
    check_output(out, force)
    started = time.perf_counter()
    source = resolve_model(model)
    with atomic_output(out, force) as tmp:
        details = write_onnx(source, scheme, tmp, calibration=calibration, progress=progress,
                             fp32_cache=fp32_cache if fp32_cache is not None else export_cache(source))
        manifest = Manifest(method=OnnxQuantizer.name, scheme=scheme, artifact_format=OnnxQuantizer.artifact_format,
                            source_model=source.spec, model_type=source.info.model_type,
                            versions=library_versions(("quantmatch", "torch", *OnnxQuantizer.versioned)),
                            seconds=round(time.perf_counter() - started, 3), details=details)
        write_manifest(tmp, manifest)
    return Path(out)


@dataclass(frozen=True)
class OnnxArtifact:
    """What :meth:`OnnxQuantizer.quantize` wrote: the graph's recipe, layout, ops and weight bytes."""

    path: Path
    scheme: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "scheme": self.scheme, **dict(self.details)}


PRIORS = MethodPriors(
    job=JobPriors(memory="fp32-export", scratch_bytes=4.0, scratch_timed=False,
                  steps="torch.onnx export of an fp32 graph, then MatMulNBits/int8 quantization",
                  source="ONNX exports an fp32 graph"),
    quantizes_output=True,  # MatMulNBits quantizes every MatMul, the head included
    # from the Optimum / ONNX Runtime quantization docs
    produce_with="Optimum + ONNX Runtime (pip install 'optimum[onnxruntime]'): `optimum-cli export onnx --model "
                 "{model} out/`, then onnxruntime.quantization (quantize_dynamic for int8, MatMulNBitsQuantizer for "
                 "int4 blocks)",
)
"""Planning priors (quantmatch.sdk.priors)."""


@dataclass(frozen=True)
class OnnxExportOptions(MethodOptions):
    """``quantmatch export --to onnx`` options (``--option KEY=VALUE``); see :mod:`.onnx_exact`."""

    accuracy_level: Literal[1, 4] = option(
        1, "MatMulNBits arithmetic: 1 fp32 (the checkpoint's math) or 4, activations rounded to int8 per block "
           "for the integer kernels (faster on CPUs with VNNI/AMX or Arm dot products; weights stay exact)")
    head: Literal["source", "int8"] = option(
        "source", "a float LM head: as the checkpoint stores it (fp32 MatMul, exact) or int8, MatMulNBits 8-bit "
                  "blocks of 32 rounded as llama.cpp's Q8_0, run at accuracy_level 4 (smaller and faster; not "
                  "exact for the head)")


EXPORTS = (ExactExport(
    source_format="compressed-tensors",
    rules=(ExportRule("int4", True, "w4a32-g{group}", group_multiple=16),
           ExportRule("int4", False, "w4a32-g{group}-asym", group_multiple=16),
           ExportRule("int8", True, "w8a32", group_multiple=16),
           ExportRule("int8", False, "w8a32-asym", group_multiple=16),
           ExportRule("int8", True, "w8a8-int8-static", activations="int8", static=True),
           ExportRule("int8", True, "w8a8-int8", activations="int8", static=False)),
    exporter="quantmatch.plugins.methods.onnx_exact:export_compressed",
    options=OnnxExportOptions,
    tolerance="MatMulNBits dequantizes the same codes, scales and zero points in float32; the integer W8A8 graph "
              "multiplies the checkpoint's int8 weights with activations rounded on the same scales (options: "
              "accuracy_level=4 rounds MatMulNBits activations to int8 per block, head=int8 rounds a float LM head "
              "to 8-bit blocks; the details' accuracy_level and head say which)",
    source="https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md#com.microsoft.MatMulNBits"),)
"""GPTQ, AWQ, round-to-nearest and SmoothQuant checkpoints rewritten into ONNX Runtime's integer operators."""


class OnnxQuantizer(Quantizer):
    name = "onnx"
    description = "onnxruntime.quantization: int8 dynamic (MatMulInteger), static QDQ, MatMulNBits int4"
    support = SchemeSupport(weights=("int4", "int8"), activations=("int8",),
                            group_sizes=(0, 16, 32, 64, 128, 256))
    schemes = ("w8a8-int8", "w8a8-int8-static", "w4a32-g32", "w4a16-g32", "w4a8-int8-g32")
    artifact_format = "onnx"
    requires = ("onnxruntime>=1.18", "onnx>=1.16", "torch>=2.4", "transformers>=4.46")
    install_hint = "pip install 'quantmatch[torch,onnx]'"
    versioned = ("onnx", "onnxruntime", "onnx-ir")
    architectures = HF_CAUSAL_LM
    source = "https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html"
    priors = PRIORS
    exports = EXPORTS

    @staticmethod
    def load_artifact(directory: str | Path, dtype: str | None = None) -> tuple[Any, Any]:
        """``(session, tokenizer)``: an ``onnxruntime.InferenceSession`` of the graph (CPU execution provider)
        and the tokenizer saved beside it (``dtype`` unused: the graph's types are fixed). ``quantmatch eval``
        and ``bench`` run it through the ONNX Runtime runner, with its KV cache."""
        import onnxruntime as ort
        from transformers import AutoTokenizer

        d = Path(directory)
        session = ort.InferenceSession(str(d / GRAPH_FILE), providers=["CPUExecutionProvider"])
        return session, AutoTokenizer.from_pretrained(str(d))

    def load(self, out: str | Path) -> Any:
        """The session of what :meth:`quantize` wrote (the contract suite's round trip)."""
        return self.load_artifact(out)[0]

    @classmethod
    def not_produced(cls, scheme: Scheme | str) -> list[str]:
        """This version writes the schemes it has a recipe for (:data:`RECIPES`)."""
        if str(scheme) in RECIPES and str(scheme) != "fp32":
            return []
        return [f"onnx writes only {', '.join(s for s in RECIPES if s != 'fp32')} (one ONNX Runtime recipe each); "
                f"the registry judges {scheme} but this version of quantmatch does not write it"]

    def quantize(self, model: Any, scheme: Scheme | str, out: Any,  # type: ignore[override]
                 options: Mapping[str, Any] | None = None, **more: Any) -> OnnxArtifact:
        """Export and quantize ``model`` into ``out`` (a fresh directory the caller owns) with the recipe
        of ``scheme`` (:data:`RECIPES`); ``options``: ``calibration``, ``progress``."""
        from quantmatch.sdk.models import resolve_model

        opts = {**(options or {}), **more}
        source = resolve_model(model)
        details = write_onnx(source, str(scheme), Path(out), calibration=opts.get("calibration"),
                             progress=opts.get("progress"), fp32_cache=export_cache(source))
        return OnnxArtifact(Path(out), str(scheme), details)


@hookimpl
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    register(OnnxQuantizer)
