"""``verify``'s micro-probes for the PyTorch-family runners: one linear layer through each kernel.

Each probe builds one ``(K, N)`` layer two ways, an fp32 ``nn.Linear`` and the quantized kernel of the
combination, and times both at ``M`` rows and at one row (:func:`~quantmatch.sdk.timing.time_pair`):

- ``torch-int8``: W8A8 with per-token dynamic activation scales through ``torch._int_mm``;
- ``torch-bf16``: bf16 weights and math;
- ``ct:<scheme>``: a compressed-tensors weight-only layer as the torch runner runs it: packed for
  PyTorch's int4/int8 weight-only CPU kernels where the grid allows (:mod:`.packed_linear`), else on
  transformers' path (the library decompresses the model on its first forward, then every call is a
  float matmul);
- ``quanto:<scheme>``: optimum-quanto's ``QLinear``; ``hqq:<scheme>``: ``HQQLinear`` (PyTorch backend).

Imported only when ``verify`` runs a probe (it imports torch).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import torch

from quantmatch.sdk.artifact import library_versions
from quantmatch.sdk.runner import Probe
from quantmatch.sdk.scheme import parse_scheme
from quantmatch.sdk.timing import time_pair

__all__ = ["compressed_linear", "run_probe"]


def _versions(*names: str) -> str:
    return ", ".join(f"{k} {v}" for k, v in library_versions(names).items())


def _bytes(module: Any) -> int:
    from quantmatch.plugins.backends.torch_runner import module_bytes

    return module_bytes(module, skip_input_embedding=False)


def _layer(kernel: str, build: Callable[[Any, Any], Any], versions: tuple[str, ...],
           shape: tuple[int, int, int]) -> Probe:
    m, k, n = shape
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=False).eval()
    x, x1 = torch.randn(m, k), torch.randn(1, k)
    with torch.inference_mode():
        q = build(torch.nn.Linear(k, n, bias=False).eval().requires_grad_(False), x)
        ref_bytes = _bytes(lin)
        timings = time_pair(lin, q, x, x1)
    return Probe(kernel, shape, *timings, ref_bytes, _bytes(q), _versions("torch", *versions))


class _Int8Linear(torch.nn.Module):
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


class _Bf16Linear(torch.nn.Module):
    """bf16 weights and math, fp32 in and out (as a bf16 model's layer sees it)."""

    def __init__(self, lin: torch.nn.Linear) -> None:
        super().__init__()
        self.inner = lin.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x.to(torch.bfloat16))
        return out.float()


def _quanto(scheme: str, shape: tuple[int, int, int]) -> Probe:
    s = parse_scheme(scheme)

    def build(lin: Any, x: Any) -> Any:
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

    return _layer(f"optimum-quanto QLinear {scheme}", build, ("optimum-quanto",), shape)


def _hqq(scheme: str, shape: tuple[int, int, int]) -> Probe:
    s = parse_scheme(scheme)

    def build(lin: Any, x: Any) -> Any:
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

        cfg = BaseQuantizeConfig(nbits=int(s.weight_bits), group_size=s.group_size or 64, axis=1)
        return HQQLinear(lin, cfg, compute_dtype=torch.float32, device="cpu")

    return _layer(f"HQQLinear {scheme} (PyTorch backend, fp32 compute)", build, ("hqq",), shape)


def compressed_linear(lin: Any, scheme: str) -> Any:
    """``lin`` as transformers loads a compressed-tensors weight-only checkpoint: quantized with the
    library (scales from the weights' range), compressed (``pack-quantized`` codes), and wrapped in a
    model that carries the library's decompress-on-first-forward hook (``ModelCompressor.compress_model``)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        QuantizationStatus,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams

    from quantmatch.plugins.methods.algorithms.export import quantization_args
    from quantmatch.plugins.methods.algorithms.rtn import IntGrid

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


def _compressed(scheme: str, shape: tuple[int, int, int]) -> Probe:
    """A compressed-tensors weight-only layer on transformers' CPU path: compressed-tensors decompresses
    the whole model on its first forward, then every call is a float matmul on the decompressed weights.
    The bytes are those held after that first call (the packed size is named in the kernel)."""
    m, k, n = shape
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=False).eval()
    x, x1 = torch.randn(m, k), torch.randn(1, k)
    # the library reports each step on a progress bar: keep verify's output to its own lines
    from quantmatch.plugins.backends.packed_linear import pack_weight_only

    with torch.inference_mode(), contextlib.redirect_stderr(io.StringIO()):
        q = compressed_linear(torch.nn.Linear(k, n, bias=False).eval().requires_grad_(False), scheme)
        packed = _bytes(q)
        fmt = q[0].quantization_scheme.format
        kernels = pack_weight_only(q)  # as the torch runner does on the CPU
        q(x1)  # the decompression (when not packed), once, as at the start of generation
        ref_bytes = _bytes(lin)
        timings = time_pair(lin, q, x, x1)
    if kernels.packed:
        kernel = f"compressed-tensors {scheme} packed for PyTorch's CPU kernel:{kernels.note().removeprefix(' +')}"
    else:
        dtype = str(q[0].weight.dtype).removeprefix("torch.")
        why = f" ({next(iter(kernels.left.values()))})" if kernels.left else ""
        kernel = (f"compressed-tensors {scheme} ({getattr(fmt, 'value', fmt)}, {packed / ref_bytes:.2f}x fp32 "
                  f"bytes packed), decompressed to {dtype} on the first forward{why}: float matmul")
    return Probe(kernel, shape, *timings, ref_bytes, _bytes(q), _versions("torch", "compressed-tensors"))


def run_probe(key: str, threads: int, shape: tuple[int, int, int]) -> Probe:
    """Run the probe named ``key`` (see the module docstring) with ``threads`` threads."""
    torch.set_num_threads(threads)
    kind, _, arg = key.partition(":")
    if kind == "torch-int8":
        return _layer("torch._int_mm int8 x int8 (dynamic per-token activations)", lambda lin, x: _Int8Linear(lin),
                      (), shape)
    if kind == "torch-bf16":
        return _layer("torch.matmul bf16", lambda lin, x: _Bf16Linear(lin), (), shape)
    if kind == "quanto":
        return _quanto(arg, shape)
    if kind == "hqq":
        return _hqq(arg, shape)
    if kind == "ct":
        return _compressed(arg, shape)
    raise ValueError(f"unknown probe {key!r}")


def gemm_rates(threads: int, shape: tuple[int, int, int], seconds: float) -> dict[str, float]:
    """Ops/s of ``torch.matmul`` in fp32 and bf16 and of ``torch._int_mm`` (int8, int32 accumulation)."""
    from quantmatch.sdk.timing import time_best

    torch.set_num_threads(threads)
    m, k, n = shape
    out: dict[str, float] = {}
    g = torch.Generator().manual_seed(0)
    for dtype in ("fp32", "bf16", "int8"):
        if dtype == "int8":
            a = torch.randint(-127, 127, (m, k), dtype=torch.int8, generator=g)
            b = torch.randint(-127, 127, (k, n), dtype=torch.int8, generator=g)

            def run(a: Any = a, b: Any = b) -> Any:
                return torch._int_mm(a, b)
        else:
            td = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
            a = torch.randn((m, k), generator=g).to(td)
            b = torch.randn((k, n), generator=g).to(td)

            def run(a: Any = a, b: Any = b) -> Any:
                return torch.matmul(a, b)
        try:
            with torch.inference_mode():
                out[dtype] = 2.0 * m * k * n / time_best(run, seconds)
        except RuntimeError:  # e.g. no _int_mm kernel for this CPU build
            continue
    return out
