"""``quantmatch verify``: check the registry's claimed levels against what this machine does.

For each runnable combination on the local device a short microbenchmark runs one linear layer of
a fixed shape through the backend's own kernel and through fp32 (the same shape, the same backend's
fp32 path where it has one), and measures

- the *compute* speed-up: fp32 time / quantized time at ``M = 256`` rows (compute-bound);
- the *memory* win: bytes of the fp32 weights / bytes the backend holds for the quantized weights;
- the GEMV speed-up at ``M = 1`` (reported, not judged: bandwidth plus dequantization cost).

The observed level is ``native`` when the compute speed-up is at least :data:`COMPUTE_WIN` (measurably
faster), else ``weight-only`` when the weights are at least :data:`MEMORY_WIN` times smaller, else
``emulated``. A claim of ``native`` or ``weight-only`` agrees when the observed level is the same; a
claim of ``emulated`` agrees when there is no speed win at either shape. Disagreements are *drift*,
reported with both figures. compressed-tensors weight-only checkpoints (GPTQ, AWQ, RTN, FP8 weights on
torch) are probed on the path transformers takes on a CPU: the library's layer, decompressed by its
first forward, then a float matmul; their bytes are those held after that first call. The evidence
(figure, date, library versions) is written to the results store, where the registry picks it up for
this machine's verdicts (``quantmatch explain ... local``). Combinations sharing a kernel share one
measurement.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .machine import time_best

__all__ = ["COMPUTE_WIN", "MEMORY_WIN", "Check", "Probe", "VerifyReport", "judge", "observed_level", "probe_key",
           "run_probe", "verify"]

COMPUTE_WIN = 1.2
"""Speed-up over fp32 at the compute-bound shape that counts as a compute win."""
MEMORY_WIN = 1.5
"""Ratio of fp32 weight bytes to the quantized weight bytes that counts as a memory win."""
SHAPE = (256, 1536, 1536)
"""``(M, K, N)``: 256 rows through an MLP-sized layer (SmolLM2's intermediate width)."""


@dataclass(frozen=True)
class Probe:
    """One microbenchmark: seconds for fp32 and the quantized kernel at ``M`` and at one row, and bytes."""

    kernel: str
    shape: tuple[int, int, int]
    ref_seconds: float
    q_seconds: float
    ref_gemv_seconds: float
    q_gemv_seconds: float
    ref_bytes: int
    q_bytes: int
    versions: str = ""

    @property
    def compute_speedup(self) -> float:
        return self.ref_seconds / self.q_seconds

    @property
    def gemv_speedup(self) -> float:
        return self.ref_gemv_seconds / self.q_gemv_seconds

    @property
    def weight_ratio(self) -> float:
        return self.ref_bytes / self.q_bytes if self.q_bytes else 1.0

    def figure(self) -> str:
        m, k, n = self.shape
        return (f"{self.kernel}, {m}x{k}x{n}: {self.compute_speedup:.2f}x fp32 "
                f"({1e3 * self.q_seconds:.2f} vs {1e3 * self.ref_seconds:.2f} ms); weights "
                f"{1 / self.weight_ratio:.2f}x fp32 bytes; GEMV (M=1) {self.gemv_speedup:.2f}x fp32")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(compute_speedup=self.compute_speedup, gemv_speedup=self.gemv_speedup, weight_ratio=self.weight_ratio)
        return d


def observed_level(probe: Probe) -> str:
    """``native`` (compute win), ``weight-only`` (memory win only) or ``emulated`` (neither)."""
    if probe.compute_speedup >= COMPUTE_WIN:
        return "native"
    if probe.weight_ratio >= MEMORY_WIN:
        return "weight-only"
    return "emulated"


def judge(claimed: str, probe: Probe) -> tuple[bool, str]:
    """``(agrees, observed level)`` for a claimed level (see the module docstring)."""
    seen = observed_level(probe)
    if claimed == "emulated":
        no_win = probe.compute_speedup < COMPUTE_WIN and probe.gemv_speedup < COMPUTE_WIN
        return no_win, "emulated" if no_win else seen
    return seen == claimed, seen


@dataclass
class Check:
    """One combination: its claimed level and, when a microbenchmark covers it, the evidence."""

    method: str
    scheme: str
    backend: str
    claimed: str
    status: str  # agrees | drift | unchecked | failed
    observed: str = ""
    kernel: str = ""
    figure: str = ""
    note: str = ""
    probe: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VerifyReport:
    device: str
    device_name: str
    threads: int
    date: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    store: str = ""

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def exit_code(self) -> int:
        """1 when any claim drifted or a microbenchmark failed, else 0."""
        return 1 if (self.count("drift") or self.count("failed")) else 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = {s: self.count(s) for s in ("agrees", "drift", "unchecked", "failed")}
        return d


# ---- which kernel a combination runs on ------------------------------------------------------------
def probe_key(method: str | None, scheme: str, backend: str) -> tuple[str | None, str]:
    """``(probe key, why not)``: the microbenchmark that covers a combination, or why none does."""
    from .onnx_runner import RECIPES

    if backend == "torch":
        if method is None:
            return ("torch-bf16", "") if scheme == "bf16" else (None, "fp32 is the reference every probe compares "
                                                                      "against")
        if scheme.startswith("w8a8-int8"):
            return "torch-int8", ""
        if _ct_weight_only(scheme):
            return f"ct:{scheme}", ""
        return None, f"no microbenchmark for compressed-tensors {scheme} checkpoints yet"
    if backend == "optimum-quanto":
        return f"quanto:{scheme}", ""
    if backend == "hqq":
        return f"hqq:{scheme}", ""
    if backend == "onnxruntime" and scheme in RECIPES and scheme != "fp32":
        return f"ort:{scheme}", ""
    if backend == "llama.cpp" and scheme.startswith("gguf-") and scheme != "gguf-f32":
        return f"gguf:{scheme.removeprefix('gguf-')}", ""
    if backend == "llama.cpp" and scheme == "gguf-f32":
        return None, "F32 is the reference the GGUF probes compare against"
    return None, f"quantmatch has no runner for {backend} on this machine"


def _ct_weight_only(scheme: str) -> bool:
    """Whether :func:`_probe_compressed` covers ``scheme``: integer or FP8 weights, float activations."""
    from quantmatch.scheme import SchemeError, parse_scheme

    try:
        s = parse_scheme(scheme)
    except SchemeError:
        return False
    return s.weight_only and (s.weight_format == "int" or s.weight_type == "fp8-e4m3")


# ---- probes -------------------------------------------------------------------------------------------------
def _torch_bytes(module: Any) -> int:
    from .torch_runner import module_bytes

    return module_bytes(module, skip_input_embedding=False)


def _pair(ref: Callable[[Any], Any], fn: Callable[[Any], Any], x: Any, x1: Any) -> tuple[float, float, float, float]:
    """Best times of ``ref`` and ``fn`` at ``x`` and ``x1``, interleaved so load changes hit both
    (three rounds; one when a call takes over a quarter of a second)."""
    r, q, r1, q1 = (float("inf"),) * 4
    for i in range(3):
        r = min(r, time_best(lambda: ref(x), 0.1))
        q = min(q, time_best(lambda: fn(x), 0.1, min_runs=1 if q > 0.25 else 3))
        r1 = min(r1, time_best(lambda: ref(x1), 0.05))
        q1 = min(q1, time_best(lambda: fn(x1), 0.05, min_runs=1 if q1 > 0.25 else 3))
        if i == 0 and max(q, q1) > 0.25:
            break
    return r, q, r1, q1


def _versions(*names: str) -> str:
    from quantmatch.artifact import library_versions

    return ", ".join(f"{k} {v}" for k, v in library_versions(names).items())


def _torch_layer(kernel: str, build: Callable[[Any, Any], Any], versions: tuple[str, ...],
                 shape: tuple[int, int, int]) -> Probe:
    import torch

    m, k, n = shape
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=False).eval()
    x, x1 = torch.randn(m, k), torch.randn(1, k)
    with torch.inference_mode():
        q = build(torch.nn.Linear(k, n, bias=False).eval().requires_grad_(False), x)
        ref_bytes = _torch_bytes(lin)
        timings = _pair(lin, q, x, x1)
    return Probe(kernel, shape, *timings, ref_bytes, _torch_bytes(q), _versions("torch", *versions))


def _probe_torch_int8(shape: tuple[int, int, int]) -> Probe:
    import torch

    class Int8Linear(torch.nn.Module):
        """W8A8 with per-token dynamic activation scales through ``torch._int_mm``."""

        wq: torch.Tensor
        ws: torch.Tensor

        def __init__(self, lin: torch.nn.Linear) -> None:
            super().__init__()
            w = lin.weight.detach()
            scale = w.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127
            self.register_buffer("wq", torch.round(w / scale).to(torch.int8).t().contiguous())
            self.register_buffer("ws", scale.t().contiguous())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            xs = x.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127
            xq = torch.round(x / xs).to(torch.int8)
            if xq.shape[0] <= 16:  # _int_mm needs more than 16 rows on some builds: pad
                xq = torch.nn.functional.pad(xq, (0, 0, 0, 17 - xq.shape[0]))
            return torch._int_mm(xq, self.wq)[: x.shape[0]].float() * xs * self.ws

    return _torch_layer("torch._int_mm int8 x int8 (dynamic per-token activations)",
                        lambda lin, x: Int8Linear(lin), (), shape)


def _probe_torch_bf16(shape: tuple[int, int, int]) -> Probe:
    import torch

    class Bf16Linear(torch.nn.Module):
        """bf16 weights and math, fp32 in and out (as a bf16 model's layer sees it)."""

        def __init__(self, lin: torch.nn.Linear) -> None:
            super().__init__()
            self.inner = lin.to(torch.bfloat16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.inner(x.to(torch.bfloat16))
            return out.float()

    return _torch_layer("torch.matmul bf16", lambda lin, x: Bf16Linear(lin), (), shape)


def _probe_quanto(scheme: str, shape: tuple[int, int, int]) -> Probe:
    from quantmatch.scheme import parse_scheme

    s = parse_scheme(scheme)

    def build(lin: Any, x: Any) -> Any:
        import torch
        from optimum.quanto import Calibration, freeze, quantize

        from quantmatch.plugins.methods.quanto import QTYPES

        wt = "fp8" if s.weight_format == "fp8-e4m3" else s.weight_type
        acts = None if s.weight_only else QTYPES[s.activation_type or "int8"]
        model = torch.nn.Sequential(lin)
        quantize(model, weights=QTYPES[wt], activations=acts)
        if s.group_size:
            setattr(model[0], "weight_group_size", s.group_size)  # noqa: B010 - quanto's attribute, not typed
        if acts is not None:
            with Calibration():
                model(x)
        freeze(model)
        return model

    return _torch_layer(f"optimum-quanto QLinear {scheme}", build, ("optimum-quanto",), shape)


def _probe_hqq(scheme: str, shape: tuple[int, int, int]) -> Probe:
    from quantmatch.scheme import parse_scheme

    s = parse_scheme(scheme)

    def build(lin: Any, x: Any) -> Any:
        import torch
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

        cfg = BaseQuantizeConfig(nbits=int(s.weight_bits), group_size=s.group_size or 64, axis=1)
        return HQQLinear(lin, cfg, compute_dtype=torch.float32, device="cpu")

    return _torch_layer(f"HQQLinear {scheme} (PyTorch backend, fp32 compute)", build, ("hqq",), shape)


def compressed_linear(lin: Any, scheme: str) -> Any:
    """``lin`` as transformers loads a compressed-tensors weight-only checkpoint: quantized with the
    library (scales from the weights' range), compressed (``pack-quantized`` codes), and wrapped in a
    model that carries the library's decompress-on-first-forward hook (``ModelCompressor.compress_model``)."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        QuantizationStatus,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams

    from quantmatch.algorithms.export import quantization_args
    from quantmatch.algorithms.rtn import IntGrid
    from quantmatch.scheme import parse_scheme

    s = parse_scheme(scheme)
    if s.weight_format == "int":
        args = quantization_args(IntGrid(s.weight_bits, s.group_size or 0, s.symmetric))
    else:
        args = QuantizationArgs(num_bits=8, type="float", strategy="channel", symmetric=True)
    model = torch.nn.Sequential(lin)
    apply_quantization_config(model, QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=args)},
        quantization_status=QuantizationStatus.FROZEN), show_progress=False)
    w = lin.weight
    blocks = w.reshape(w.shape[0], -1, args.group_size or w.shape[1])
    scale, zero = calculate_qparams(blocks.amin(-1), blocks.amax(-1), args)
    lin.weight_scale.copy_(scale.reshape(lin.weight_scale.shape))
    if getattr(lin, "weight_zero_point", None) is not None:
        lin.weight_zero_point.copy_(zero.reshape(lin.weight_zero_point.shape))
    ModelCompressor.from_pretrained_model(model).compress_model(model)
    return model


def _probe_compressed(scheme: str, shape: tuple[int, int, int]) -> Probe:
    """A compressed-tensors weight-only layer on transformers' CPU path: compressed-tensors decompresses
    the whole model on its first forward, then every call is a float matmul on the decompressed weights.
    The bytes are those held after that first call (the packed size is named in the kernel)."""
    import contextlib
    import io

    import torch

    m, k, n = shape
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=False).eval()
    x, x1 = torch.randn(m, k), torch.randn(1, k)
    # the library reports each step on a progress bar: keep verify's output to its own lines
    with torch.inference_mode(), contextlib.redirect_stderr(io.StringIO()):
        q = compressed_linear(torch.nn.Linear(k, n, bias=False).eval().requires_grad_(False), scheme)
        packed = _torch_bytes(q)
        q(x1)  # the decompression, once, as at the start of generation
        ref_bytes = _torch_bytes(lin)
        timings = _pair(lin, q, x, x1)
    fmt = q[0].quantization_scheme.format
    dtype = str(q[0].weight.dtype).removeprefix("torch.")
    kernel = (f"compressed-tensors {scheme} ({getattr(fmt, 'value', fmt)}, {packed / ref_bytes:.2f}x fp32 bytes "
              f"packed), decompressed to {dtype} on the first forward: float matmul")
    return Probe(kernel, shape, *timings, ref_bytes, _torch_bytes(q), _versions("torch", "compressed-tensors"))


# -- ONNX Runtime --
def _matmul_graph(path: Path, k: int, n: int) -> None:
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


def _ort_quantize(recipe: Any, src: Path, dst: Path, k: int) -> None:
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from .onnx_runner import _apply_recipe

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


def _probe_ort(scheme: str, shape: tuple[int, int, int], threads: int) -> Probe:
    import numpy as np
    import onnxruntime as ort

    from .onnx_runner import RECIPES, op_counts

    m, k, n = shape
    recipe = RECIPES[scheme]
    with tempfile.TemporaryDirectory(prefix="quantmatch-verify-") as tmp:
        fp32, q = Path(tmp) / "fp32.onnx", Path(tmp) / "q.onnx"
        _matmul_graph(fp32, k, n)
        _ort_quantize(recipe, fp32, q, k)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sessions = [ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in (fp32, q)]
        ops = ", ".join(o for o in op_counts(q) if o not in ("Cast", "Mul", "Reshape"))
        rng = np.random.default_rng(2)
        x, x1 = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((1, k)).astype(np.float32)
        timings = _pair(lambda a: sessions[0].run(None, {"X": a}), lambda a: sessions[1].run(None, {"X": a}), x, x1)
        return Probe(f"ONNX Runtime {ops}", shape, *timings, _initializer_bytes(fp32), _initializer_bytes(q),
                     _versions("onnxruntime", "onnx"))


# -- llama.cpp --
class _GGUFProbe:
    """A synthetic two-layer Llama (hidden 1024, MLP 2816) as F32 GGUF, quantized per type on demand."""

    def __init__(self, root: Path, threads: int) -> None:
        self.root, self.threads = root, threads
        self._ref: tuple[float, float, int] | None = None

    def _hf(self) -> Path:
        hf = self.root / "hf"
        if not (hf / "config.json").is_file():
            import torch
            from transformers import LlamaConfig, LlamaForCausalLM

            from quantmatch.testing.models import write_tiny_model

            write_tiny_model(hf)
            cfg = LlamaConfig(vocab_size=320, hidden_size=1024, intermediate_size=2816, num_hidden_layers=2,
                              num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=512,
                              bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
            torch.manual_seed(0)
            LlamaForCausalLM(cfg).save_pretrained(str(hf), safe_serialization=True)
        return hf

    def file(self, gtype: str) -> Path:
        out = self.root / f"{gtype}.gguf"
        if out.is_file():
            return out
        from quantmatch.plugins.methods.gguf import quantize_gguf
        from quantmatch.plugins.methods.gguf_convert import OUT_TYPES, convert_hf_to_gguf

        if gtype in OUT_TYPES:
            convert_hf_to_gguf(self._hf(), out, gtype)
        else:
            quantize_gguf(self.file("f16"), out, gtype, threads=self.threads)
        return out

    def timings(self, gtype: str, m: int) -> tuple[float, float, int]:
        """``(seconds for an m-token prefill, seconds per decode step, weight bytes)``."""
        from .llamacpp_runner import LlamaCppRunner, gguf_weight_bytes

        path = self.file(gtype)
        r = LlamaCppRunner(self.threads, n_ctx=m + 64)
        r.load(path)
        try:
            prompt = [[(7 * i) % 300 + 3 for i in range(m)]]
            pre = time_best(lambda: r.prefill(prompt), 0.2)

            def decode() -> float:  # only the 8 steps are timed, not the short prefill before them
                nxt = r.prefill([prompt[0][:8]])
                t0 = time.perf_counter()
                for _ in range(8):
                    nxt = r.step(nxt)
                return time.perf_counter() - t0

            decode()  # warm-up
            dec = min(decode() for _ in range(5)) / 8
            return pre, dec, gguf_weight_bytes(path)
        finally:
            r.close()

    def probe(self, gtype: str, shape: tuple[int, int, int]) -> Probe:
        m = shape[0]
        if self._ref is None:
            self._ref = self.timings("f32", m)
        rp, rd, rb = self._ref
        qp, qd, qb = self.timings(gtype, m)
        return Probe(f"llama.cpp {gtype.upper()} (2-layer model, hidden 1024, MLP 2816; {m}-token prefill)",
                     (m, 1024, 2816), rp, qp, rd, qd, rb, qb, _versions("llama-cpp-python", "gguf"))


def run_probe(key: str, threads: int, shape: tuple[int, int, int] = SHAPE, gguf: _GGUFProbe | None = None) -> Probe:
    """Run the microbenchmark named by :func:`probe_key`."""
    import torch

    torch.set_num_threads(threads)
    kind, _, arg = key.partition(":")
    if kind == "torch-int8":
        return _probe_torch_int8(shape)
    if kind == "torch-bf16":
        return _probe_torch_bf16(shape)
    if kind == "quanto":
        return _probe_quanto(arg, shape)
    if kind == "hqq":
        return _probe_hqq(arg, shape)
    if kind == "ct":
        return _probe_compressed(arg, shape)
    if kind == "ort":
        return _probe_ort(arg, shape, threads)
    if kind == "gguf" and gguf is not None:
        return gguf.probe(arg, shape)
    raise ValueError(f"unknown probe {key!r}")


# ---- the command ------------------------------------------------------------------------------------------
def verify(registry: Any = None, threads: int | None = None, store: str | Path | None = None, save: bool = True,
           only: Callable[[str, str, str], bool] | None = None,
           progress: Callable[[str, int, int], None] | None = None) -> VerifyReport:
    """Check every runnable combination on the local device (``only(method, scheme, backend)`` filters).

    Each distinct kernel is measured once; results are persisted as ``verify`` evidence unless ``save``
    is false. Missing libraries make the affected checks ``unchecked`` with the install line.
    """
    from quantmatch.registry import Registry

    from . import RUNNERS
    from .base import default_threads

    started = time.perf_counter()
    reg = registry or Registry()
    dev = reg.local()
    n = int(threads or default_threads())
    verdicts = [reg.verdict(None, "fp32", "torch", dev), reg.verdict(None, "bf16", "torch", dev),
                *reg.combinations(dev, include_unsupported=False)]
    report = VerifyReport(dev.id, dev.name, n, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    probes: dict[str, Probe | str] = {}
    with tempfile.TemporaryDirectory(prefix="quantmatch-verify-gguf-") as tmp:
        gguf = _GGUFProbe(Path(tmp), n)
        todo = [v for v in verdicts if only is None or only(v.method or "none", v.scheme, v.backend)]
        for i, v in enumerate(todo):
            check = Check(v.method or "none", v.scheme, v.backend, v.level.value, "unchecked")
            report.checks.append(check)
            key, why = probe_key(v.method, v.scheme, v.backend)
            runner = RUNNERS.get(v.backend)
            if key is None:
                check.note = why
                continue
            missing = runner.missing() if runner else []
            if missing:
                check.note = f"{', '.join(missing)} not installed: {runner.install if runner else ''}"
                continue
            if progress:
                progress(key, i, len(todo))
            if key not in probes:
                try:
                    probes[key] = run_probe(key, n, gguf=gguf)
                except Exception as e:  # a library refusing a shape or a scheme: reported, not fatal
                    probes[key] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            probe = probes[key]
            if isinstance(probe, str):
                check.status, check.note = "failed", probe
                continue
            agrees, seen = judge(check.claimed, probe)
            check.status, check.observed, check.kernel = ("agrees" if agrees else "drift"), seen, probe.kernel
            check.figure, check.probe = probe.figure(), probe.to_dict()
    report.seconds = time.perf_counter() - started
    if save:
        report.store = str(_save(report, probes, store))
    return report


def _save(report: VerifyReport, probes: dict[str, Probe | str], store: str | Path | None) -> Path:
    from quantmatch.verdict import Evidence

    from .store import EvidenceRow, ResultsStore

    st = ResultsStore(store)
    rows = []
    for c in report.checks:
        if c.status not in ("agrees", "drift"):
            continue
        head = (f"agrees ({c.claimed})" if c.status == "agrees"
                else f"DRIFT: claimed {c.claimed}, measured {c.observed}")
        versions = (c.probe or {}).get("versions", "")
        rows.append(EvidenceRow(c.method, c.scheme, c.backend, report.device,
                                Evidence("verify", f"{head}; {c.figure}; {versions}", report.date, versions,
                                         c.status == "agrees"), c.claimed, c.observed))
    if rows:
        st.add_evidence(rows)
    return st.path
