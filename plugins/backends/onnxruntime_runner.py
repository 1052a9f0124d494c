"""ONNX Runtime (CPU execution provider): runs the graphs the ``onnx`` method writes, with a KV cache.

``OnnxRunner`` runs an artifact of :mod:`quantmatch.plugins.methods.onnx` with
``intra_op_num_threads`` set, feeding the present keys/values back as the next past. Its fp32 baseline
is the float graph of the same exporter (:meth:`OnnxRunner.prepare_baseline`). ``verify``'s probe
quantizes one MatMul with the scheme's recipe and times it against the float MatMul; the machine
figures add ONNX Runtime's dynamic int8 GEMM.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from quantmatch.plugins.methods.onnx import GRAPH_FILE, RECIPES, OnnxRecipe, op_counts, quantize_onnx
from quantmatch.plugins.methods.onnx_export import OnnxLayout, layout_of
from quantmatch.sdk.runner import PROBE_SHAPE, Probe, Runner, RunnerError, UnreadableArtifactError
from quantmatch.sdk.scheme import Scheme

__all__ = ["OnnxRunner", "quantize_onnx"]


class OnnxRunner(Runner):
    """ONNX Runtime on the CPU execution provider, for artifacts written by :func:`quantize_onnx`."""

    requires = ("onnxruntime", "onnx", "transformers")
    install = "pip install onnxruntime onnx onnx-ir"
    batches = True
    versioned: ClassVar[tuple[str, ...]] = ("onnxruntime", "onnx")
    baselines: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, threads: int | None = None, backend: str = "onnxruntime") -> None:
        super().__init__(threads, backend)
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
            raise UnreadableArtifactError(f"{path}: not an ONNX artifact (no {GRAPH_FILE}); write one with "
                                          "`quantmatch quantize MODEL --method onnx --scheme SCHEME --out DIR`")
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
        self.compute = recipe.get("compute") or {"dynamic": "int8 (dynamic)", "static": "int8 (static QDQ)"}.get(
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

    def logits(self, ids: Sequence[int]) -> Any:
        import numpy as np

        arr = np.asarray([list(ids)], dtype=np.int64)
        logits, _ = self._run(arr, np.arange(arr.shape[1], dtype=np.int64), self._empty(1))
        return logits[0]

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

    # -- baseline, verify and machine figures --
    @classmethod
    def prepare_baseline(cls, model: str, scheme: str, out: Path) -> bool:
        """The float graph of ``model`` (the exporter's fp32 output, no quantization) written to ``out``."""
        quantize_onnx(model, scheme, out, force=True)
        return True

    @classmethod
    def probe_key(cls, method: str | None, scheme: Scheme) -> tuple[str | None, str]:
        if method is None:
            return None, "fp32 is the reference every probe compares against"
        if str(scheme) in RECIPES:
            return f"ort:{scheme}", ""
        return None, f"no ONNX Runtime recipe for {scheme}"

    def probe(self, key: str, workdir: Path, shape: tuple[int, int, int] = PROBE_SHAPE) -> Probe:
        """One MatMul quantized with the scheme's recipe against the float MatMul, in ONNX Runtime."""
        import numpy as np

        from quantmatch.sdk.artifact import library_versions
        from quantmatch.sdk.timing import time_pair

        m, k, n = shape
        recipe = RECIPES[key.partition(":")[2]]
        with tempfile.TemporaryDirectory(prefix="quantmatch-verify-", dir=workdir) as tmp:
            fp32, q = Path(tmp) / "fp32.onnx", Path(tmp) / "q.onnx"
            _matmul_graph(fp32, k, n)
            _quantize_matmul(recipe, fp32, q, k)
            sessions = [self._session(p) for p in (fp32, q)]
            ops = ", ".join(o for o in op_counts(q) if o not in ("Cast", "Mul", "Reshape"))
            rng = np.random.default_rng(2)
            x, x1 = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((1, k)).astype(np.float32)
            timings = time_pair(lambda a: sessions[0].run(None, {"X": a}), lambda a: sessions[1].run(None, {"X": a}),
                                x, x1)
            versions = ", ".join(f"{k} {v}" for k, v in library_versions(("onnxruntime", "onnx")).items())
            return Probe(f"ONNX Runtime {ops}", shape, *timings, _initializer_bytes(fp32), _initializer_bytes(q),
                         versions)

    def _session(self, path: Path) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    @classmethod
    def gemm_rates(cls, threads: int, shape: tuple[int, int, int], seconds: float) -> dict[str, float]:
        """Ops/s of one MatMul quantized by ``quantize_dynamic`` (int8, activation quantization included)."""
        if cls.missing():
            return {}
        import numpy as np

        from quantmatch.sdk.timing import time_best

        m, k, n = shape
        with tempfile.TemporaryDirectory(prefix="quantmatch-gemm-") as tmp:
            src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
            _matmul_graph(src, k, n)
            _quantize_matmul(RECIPES["w8a8-int8"], src, dst, k)
            sess = cls(threads)._session(dst)
            x = np.random.default_rng(0).standard_normal((m, k)).astype(np.float32)
            best = time_best(lambda: sess.run(None, {"X": x}), seconds)
        return {"int8": 2.0 * m * k * n / best}


def _matmul_graph(path: Path, k: int, n: int) -> None:
    """One ``[M, k] x [k, n]`` MatMul with a constant random weight, as an ONNX file."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.random.default_rng(0).standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"], name="matmul")], "probe",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
                              [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _quantize_matmul(recipe: OnnxRecipe, src: Path, dst: Path, k: int) -> None:
    """The one-MatMul graph through ``recipe``'s tool (random calibration rows for the static one)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from quantmatch.plugins.methods.onnx import _apply_recipe

    if recipe.tool != "static":
        _apply_recipe(recipe, src, dst, None, None)  # type: ignore[arg-type]
        return

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self._it = iter([{"X": rng.standard_normal((64, k)).astype(np.float32)} for _ in range(4)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"MatMulConstBOnly": True})


def _initializer_bytes(path: Path) -> int:
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)


def _manifest(path: Path) -> dict[str, Any]:
    f = path / "quantmatch.json"
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UnreadableArtifactError(f"{f}: unreadable manifest ({e}); re-create the artifact") from e
    return dict(data) if isinstance(data, dict) else {}
