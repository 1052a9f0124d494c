"""W8A8 executed as integer arithmetic on the CPU: ``torch._int_mm`` or ONNX Runtime's ``MatMulInteger``.

:class:`Int8Linear` replaces an ``nn.Linear`` whose weights are int8 (symmetric, per output channel):
the input is quantized to int8 (one scale per token, or a calibrated static per-tensor scale, both
compressed-tensors' convention), multiplied with the int8 weight matrix into int32 accumulators, and
rescaled by ``input_scale * weight_scale``. The integer product is exact, so the result equals the
fake-quantized float model up to float rounding in the final rescale.

Two integer kernels, and which is faster depends on the CPU: ``torch._int_mm`` (oneDNN; AMX-INT8
tiles on Sapphire Rapids make it ten times faster than fp32 there, while on a CPU without VNNI it
takes a slow reference path) and ONNX Runtime's ``MatMulInteger`` (MLAS). :func:`fastest_int8_kernel`
times both once per process and picks the faster (``QUANTMATCH_INT8_KERNEL=torch|ort`` forces one).
ONNX Runtime gets both operands as ``uint8`` with zero point 128 (``q + 128``): its AVX2 ``u8s8``
kernel multiplies pairs into saturating 16-bit sums and returns wrong products for full-range int8
inputs, while the ``u8u8`` kernel is exact.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["KERNELS", "Int8Linear", "convert_to_int8", "fastest_int8_kernel", "int8_layers"]

KERNELS = ("torch", "ort")
"""``torch``: ``torch._int_mm``; ``ort``: ONNX Runtime ``MatMulInteger``."""


def _session(codes_u8: np.ndarray, threads: int) -> tuple[Any, tuple[str, ...]]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = codes_u8.shape
    inits = [numpy_helper.from_array(codes_u8, "w"), numpy_helper.from_array(np.array(128, np.uint8), "zp")]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w", "zp", "zp"], ["y"])], "int8_linear",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["m", n])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session, tuple(n.op_type for n in graph.node)


def _best_ms(fn: Any, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


@functools.cache
def fastest_int8_kernel(threads: int) -> str:
    """``torch`` or ``ort``: the faster integer kernel on this CPU for a 128 x 768 x 768 product
    (timed once per process and thread count; ``QUANTMATCH_INT8_KERNEL`` overrides)."""
    forced = os.environ.get("QUANTMATCH_INT8_KERNEL", "").strip().lower()
    if forced in KERNELS:
        return forced
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-128, 128, (768, 768), generator=g, dtype=torch.int8)
    x = torch.randn(128, 768, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = {k: _best_ms(lambda k=k: Int8Linear(codes, torch.ones(768), kernel=k, threads=threads)(x))
                 for k in KERNELS}
    finally:
        torch.set_num_threads(before)
    return min(times, key=lambda k: times[k])


class Int8Linear(nn.Module):
    """``y = (q(x) @ W_q^T) * s_x * s_w + b`` with the integer product computed by ``kernel``.

    ``codes`` is the int8 weight ``[out, in]``; ``weight_scale`` has one entry per output row;
    ``input_scale`` is a static per-tensor scale, or ``None`` for dynamic per-token scales;
    ``kernel`` is ``torch``, ``ort`` or ``None`` (the faster one here, :func:`fastest_int8_kernel`).
    """

    codes_t: Tensor
    weight_scale: Tensor
    bias: Tensor | None
    input_scale: Tensor | None

    def __init__(self, codes: Tensor, weight_scale: Tensor, bias: Tensor | None = None,
                 input_scale: Tensor | None = None, threads: int | None = None, kernel: str | None = None) -> None:
        super().__init__()
        if codes.dtype != torch.int8 or codes.dim() != 2:
            raise ValueError("codes must be a 2-D int8 tensor [out, in]")
        threads = threads or torch.get_num_threads()
        kernel = kernel or fastest_int8_kernel(threads)
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
        self.kernel = kernel
        self.in_features, self.out_features = codes.shape[1], codes.shape[0]
        self.register_buffer("weight_scale", weight_scale.detach().float().reshape(1, -1))
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        self.register_buffer("input_scale", None if input_scale is None else input_scale.detach().float().reshape(()))
        self._session: Any = None
        self.onnx_ops: tuple[str, ...] = ()
        if kernel == "torch":
            self.register_buffer("codes_t", codes.t().contiguous())  # [in, out] for torch._int_mm
        else:
            w_u8 = (codes.to(torch.int16) + 128).to(torch.uint8).t().contiguous().numpy()
            self._session, self.onnx_ops = _session(w_u8, threads)

    def _int_product(self, q: Tensor) -> Tensor:
        """int32 ``q @ W_q^T`` of int8 codes ``q`` (shifted to uint8 for ONNX Runtime)."""
        if self.kernel == "torch":
            return torch._int_mm(q, self.codes_t)
        u8 = (q.to(torch.int16) + 128).to(torch.uint8)
        return torch.from_numpy(self._session.run(None, {"x": u8.numpy()})[0])

    def forward(self, x: Tensor) -> Tensor:
        shape, dtype = x.shape, x.dtype
        x2 = x.reshape(-1, self.in_features).float()
        if self.input_scale is not None:
            s = self.input_scale
        else:
            s = (x2.abs().amax(dim=1, keepdim=True) / 127.5).clamp(min=1e-10)
        q = torch.round(x2 / s).clamp(-128, 127).to(torch.int8)
        y = self._int_product(q).float() * (s * self.weight_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(dtype)

    def extra_repr(self) -> str:
        mode = "static" if self.input_scale is not None else "per-token"
        return (f"in_features={self.in_features}, out_features={self.out_features}, activations={mode}, "
                f"kernel={self.kernel}")


def int8_layers(model: nn.Module) -> list[str]:
    """Names of the compressed-tensors W8A8 layers (int8 per-channel weights, int8 activations)."""
    names = []
    for name, m in model.named_modules():
        scheme = getattr(m, "quantization_scheme", None)
        w, a = getattr(scheme, "weights", None), getattr(scheme, "input_activations", None)
        if (isinstance(m, nn.Linear) and w is not None and a is not None and w.num_bits == 8 and a.num_bits == 8
                and w.type == "int" and a.type == "int" and w.symmetric and a.symmetric
                and w.strategy == "channel" and a.strategy in ("token", "tensor")):
            names.append(name)
    return names


@torch.no_grad()
def convert_to_int8(model: nn.Module, threads: int | None = None, kernel: str | None = None) -> int:
    """Swap every compressed-tensors W8A8 linear layer of ``model`` for an :class:`Int8Linear`.

    Works on a model after :func:`~quantmatch.plugins.methods.algorithms.export.attach` and on a checkpoint loaded by
    transformers (compressed or not yet decompressed). ``kernel``: ``torch``, ``ort`` or ``None`` (the
    faster here). Returns the number of layers swapped.
    """
    names = int8_layers(model)
    for name in names:
        m: Any = model.get_submodule(name)
        scale = m.weight_scale.detach().float().reshape(-1)
        w = m.weight.detach()
        codes = w if w.dtype == torch.int8 else torch.round(w.float() / scale.view(-1, 1)).clamp(-128, 127)
        static = m.quantization_scheme.input_activations.strategy == "tensor"
        layer = Int8Linear(codes.to(torch.int8), scale, m.bias, m.input_scale if static else None, threads, kernel)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
    _drop_hook_when_done(model)
    return len(names)


def _drop_hook_when_done(model: nn.Module) -> None:
    """Remove compressed-tensors' decompress-on-first-forward hook once no layer needs it."""
    hook = getattr(model, "ct_decompress_hook", None)
    left = [n for n, m in model.named_modules() if getattr(m, "quantization_scheme", None) is not None]
    if not left and hook is not None:
        hook.remove()
        delattr(model, "ct_decompress_hook")


@torch.no_grad()
def decompress_weight_only(model: nn.Module) -> int:
    """Decompress every compressed-tensors weight-only layer of ``model`` now, into a plain linear layer.

    Left to itself, compressed-tensors decompresses them on the first forward pass and leaves each
    layer ``DECOMPRESSED`` with its quantization parameters and quantized forward in place, which
    re-aligns the parameters on every call (two ``.data`` swaps and ~4 ``aten::to`` per layer: about a
    quarter of a SmolLM2 decode step on a CPU core). The weights are the same either way. Layers with
    quantized activations are left alone (:func:`convert_to_int8` handles int8 ones). Returns the number
    of layers decompressed."""
    from compressed_tensors.compressors.base import decompress_module
    from compressed_tensors.quantization import QuantizationMetadata, QuantizationStatus

    n = 0
    for _, m in list(model.named_modules()):
        scheme: Any = getattr(m, "quantization_scheme", None)
        if scheme is None or scheme.input_activations is not None or scheme.weights is None:
            continue
        if getattr(m, "quantization_status", None) == QuantizationStatus.DECOMPRESSED:
            QuantizationMetadata.clear_quantization(m)
            delattr(m, "quantization_status")
        else:
            decompress_module(m, leave_decompressed=False)
        n += 1
    _drop_hook_when_done(model)
    return n
