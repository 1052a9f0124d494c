"""ONNX Runtime (CPU execution provider): export, quantize with onnxruntime's own tools, run with a KV cache.

:func:`quantize_onnx` writes an ``onnx`` artifact directory: the graph of :mod:`.onnx_export`
(``model.onnx``), the source's config and tokenizer files, and the ``quantmatch.json`` manifest.
The scheme picks onnxruntime's tool (:data:`RECIPES`):

- ``w8a8-int8``: SmoothQuant factors folded into the float model
  (:func:`quantmatch.algorithms.smoothquant.smooth_model`, strength searched per layer group on the
  calibration text), then ``quantize_dynamic`` (int8 per-channel weights, activations quantized per
  call and per tensor): ``DynamicQuantizeLinear`` + ``MatMulInteger`` (fused to
  ``DynamicQuantizeMatMul`` at load);
- ``w8a8-int8-static``: the same smoothing, then ``quantize_static`` with a MinMax calibration pass,
  QDQ format (uint8 activations per tensor, int8 per-channel weights);
- ``w4a32-g32`` / ``w4a16-g32`` / ``w4a8-int8-g32``: ``MatMulNBitsQuantizer`` (4-bit symmetric blocks
  of 32) with ``accuracy_level`` 0 (fp32 math), 2 (fp16 math where the CPU has it, else fp32) and
  4 (activations quantized to int8 per block: integer math).

Only ``MatMul`` nodes with a constant weight are quantized (attention score products stay fp32);
the LM head is quantized too, the ``down_proj`` layers stay fp32 in the int8 recipes
(:func:`weight_matmuls`; the static QDQ tool is told these names, since it would
quantize the attention products too), and on CPUs without VNNI the int8 weights use 7 bits (``reduce_range``, as
onnxruntime's documentation asks, since its u8 x s8 kernels can saturate there); scheme ``fp32``
writes the float graph (the ONNX baseline).
``OnnxRunner`` runs an artifact with ``intra_op_num_threads`` set, feeding the present keys/values
back as the next past.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .base import Runner, RunnerError
from .onnx_export import OnnxLayout, export_llama, layout_of

__all__ = ["GRAPH_FILE", "RECIPES", "OnnxRecipe", "OnnxRunner", "graph_weight_bytes", "op_counts", "quantize_onnx",
           "weight_matmuls"]

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

    from quantmatch.hostcpu import has_fast_int8_dot

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


def quantize_onnx(model: Any, scheme: str, out: str | Path, *, force: bool = False, calibration: Any = None,
                  progress: ProgressFn | None = None, fp32_cache: str | Path | None = None) -> Path:
    """Export ``model`` (a spec ``resolve_model`` takes, or a ``ModelSource``) and quantize it to
    ``scheme`` with onnxruntime's tools into the artifact directory ``out`` (written atomically).

    ``calibration`` is a :class:`~quantmatch.calibration.CalibrationSpec` for the static scheme
    (default: 8 samples of 256 tokens of the packaged calibration text). ``fp32_cache`` is a path where
    the unsmoothed fp32 export is kept and reused by later calls (the export is the slow step). Raises
    ``ValueError`` for a
    scheme without a recipe and :class:`~quantmatch.runners.onnx_export.OnnxExportError` for models
    the exporter cannot write.
    """
    from quantmatch.artifact import Manifest, atomic_output, check_output, library_versions, write_manifest
    from quantmatch.models import resolve_model

    recipe = RECIPES.get(scheme)
    if recipe is None:
        raise ValueError(f"no ONNX Runtime recipe for {scheme!r} (valid: {', '.join(RECIPES)})")
    check_output(out, force)
    started = time.perf_counter()
    source = model if hasattr(model, "load") and hasattr(model, "info") else resolve_model(str(model))

    def say(stage: str, done: int) -> None:
        if progress:
            progress(stage, done, 1)

    say("load", 0)
    hf_model, tokenizer = source.load("float32")
    details: dict[str, Any] = {"tool": recipe.tool, "accuracy_level": recipe.accuracy_level,
                               "block_size": recipe.block_size if recipe.tool == "nbits" else None}
    samples = None
    if recipe.tool == "static" or recipe.smooth:
        from quantmatch.calibration import CalibrationSpec, calibration_samples

        cal = calibration or CalibrationSpec(samples=8, seq_len=256)
        samples = calibration_samples(tokenizer, cal)
        details["calibration"] = cal.to_dict()
        if recipe.smooth:
            from quantmatch.algorithms.smoothquant import smooth_model

            say("smooth", 0)
            chosen = sorted(smooth_model(hf_model, samples).values())
            details["smoothquant_alpha"] = {"min": chosen[0], "median": chosen[len(chosen) // 2], "max": chosen[-1]}
    cache = Path(fp32_cache) if fp32_cache and not recipe.smooth else None
    with atomic_output(out, force) as tmp:
        say("export", 0)
        if cache is not None and cache.is_file():
            fp32, lay = cache, layout_of(hf_model.config)
        else:
            fp32 = tmp / ".fp32.onnx"
            lay = export_llama(hf_model, fp32)
            if cache is not None and not (fp32.with_name(fp32.name + ".data")).exists():
                cache.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(fp32, cache.with_suffix(".tmp"))
                cache.with_suffix(".tmp").replace(cache)
        del hf_model
        say("quantize", 0)
        details.update(_apply_recipe(recipe, fp32, tmp / GRAPH_FILE, samples, lay))
        for leftover in tmp.glob(".fp32.onnx*"):
            leftover.unlink()
        for name in _TOKENIZER_FILES:
            f = Path(source.hf_dir) / name
            if f.is_file():
                shutil.copy(f, tmp / name)
        details["layout"] = lay.to_dict()
        details["ops"] = op_counts(tmp / GRAPH_FILE)
        details["weight_bytes_per_token"] = graph_weight_bytes(tmp / GRAPH_FILE)
        manifest = Manifest(method="onnx", scheme=scheme, artifact_format="onnx", source_model=source.spec,
                            model_type=source.info.model_type,
                            versions=library_versions(("quantmatch", "torch", "onnx", "onnxruntime", "onnx-ir")),
                            seconds=round(time.perf_counter() - started, 3), details=details)
        write_manifest(tmp, manifest)
    say("quantize", 1)
    return Path(out)


# ---- runner -------------------------------------------------------------------------------------------
class OnnxRunner(Runner):
    """ONNX Runtime on the CPU execution provider, for artifacts written by :func:`quantize_onnx`."""

    backend = "onnxruntime"
    requires = ("onnxruntime", "onnx", "transformers")
    install = "pip install onnxruntime onnx onnx-ir"
    batches = True
    versioned: ClassVar[tuple[str, ...]] = ("onnxruntime", "onnx")

    def __init__(self, threads: int | None = None) -> None:
        super().__init__(threads)
        self.session: Any = None
        self.tokenizer: Any = None
        self.layout: OnnxLayout | None = None
        self.graph: Path | None = None
        self._past: dict[str, Any] = {}
        self._weight_bytes = 0

    def load(self, target: str | Path, dtype: str | None = None) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        path = Path(target)
        if not (path.is_dir() and (path / GRAPH_FILE).is_file()):
            raise RunnerError(f"{path}: not an ONNX artifact (no {GRAPH_FILE}); write one with "
                              "quantmatch.runners.onnx_runner.quantize_onnx (scheme fp32 for the float graph)")
        self.graph = path / GRAPH_FILE
        manifest = _manifest(path)
        self._weight_bytes = int(manifest.get("details", {}).get("weight_bytes_per_token") or 0)
        lay = manifest.get("details", {}).get("layout")
        if lay:
            self.layout = OnnxLayout(**lay)
        else:
            from transformers import AutoConfig

            self.layout = layout_of(AutoConfig.from_pretrained(str(path)))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.graph), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise RunnerError(f"{self.graph}: ONNX Runtime cannot load this graph ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); the file may be truncated or corrupt: "
                              "re-create the artifact") from e
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        recipe = manifest.get("details", {})
        level = recipe.get("accuracy_level")
        self.compute = {"dynamic": "int8 (dynamic)", "static": "int8 (static QDQ)"}.get(
            recipe.get("tool", ""), f"MatMulNBits accuracy_level={level}" if level is not None else "float32")

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def _run(self, ids: Any, index: Any, past: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        assert self.layout is not None
        feed = {"input_ids": ids, "logit_index": index, **past}
        out = self.session.run(None, feed)
        names = [o.name for o in self.session.get_outputs()]
        presents = {n.replace("present_", "past_"): v for n, v in zip(names[1:], out[1:])}
        return out[0], presents

    def _empty(self, batch: int) -> dict[str, Any]:
        import numpy as np

        assert self.layout is not None
        empty = np.zeros((batch, self.layout.kv_heads, 0, self.layout.head_dim), dtype=np.float32)
        return {f"past_{k}_{i}": empty for i in range(self.layout.layers) for k in ("key", "value")}

    def nll(self, ids: Sequence[int]) -> float:
        import numpy as np

        arr = np.asarray([list(ids)], dtype=np.int64)
        logits, _ = self._run(arr, np.arange(arr.shape[1] - 1, dtype=np.int64), self._empty(1))
        total = 0.0
        for a in range(0, len(ids) - 1, 256):  # float64 in slices: no second copy of every logit
            x = logits[0, a: a + 256].astype(np.float64)
            m = x.max(axis=1)
            lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
            total += float((lse - x[np.arange(len(x)), arr[0, a + 1: a + 1 + len(x)]]).sum())
        return total

    def prefill(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        import numpy as np

        arr = np.asarray([list(p) for p in prompts], dtype=np.int64)
        logits, self._past = self._run(arr, np.asarray([arr.shape[1] - 1], dtype=np.int64), self._empty(len(arr)))
        return [int(t) for t in logits[:, -1].argmax(-1)]

    def step(self, tokens: Sequence[int]) -> list[int]:
        import numpy as np

        arr = np.asarray([[t] for t in tokens], dtype=np.int64)
        logits, self._past = self._run(arr, np.zeros(1, dtype=np.int64), self._past)
        return [int(t) for t in logits[:, -1].argmax(-1)]

    def cached_tokens(self, sequence: int = 0) -> int:
        return int(self._past["past_key_0"].shape[2]) if self._past else 0

    def weight_bytes_per_token(self) -> int:
        return self._weight_bytes

    def close(self) -> None:
        self.session = None
        self._past = {}


def graph_weight_bytes(path: str | Path) -> int:
    """Initializer bytes of an ONNX graph, less tables only read by ``Gather`` (one row per token)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    used_elsewhere = {i for n in model.graph.node if n.op_type != "Gather" for i in n.input}
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer
               if t.name not in gathered or t.name in used_elsewhere)


def _manifest(path: Path) -> dict[str, Any]:
    f = path / "quantmatch.json"
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RunnerError(f"{f}: unreadable manifest ({e}); re-create the artifact") from e
    return dict(data) if isinstance(data, dict) else {}
