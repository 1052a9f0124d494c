"""W8A8 executed as integer arithmetic on the CPU, through ONNX Runtime's ``MatMulInteger`` kernel.

:class:`Int8Linear` replaces an ``nn.Linear`` whose weights are int8 (symmetric, per output channel):
the input is quantized to int8 (one scale per token, or a calibrated static per-tensor scale, both
compressed-tensors' convention), multiplied with the int8 weight matrix by ONNX Runtime into int32
accumulators, and rescaled by ``input_scale * weight_scale``. The integer product is exact, so the
result equals the fake-quantized float model up to float rounding in the final rescale.

Both operands are handed to ONNX Runtime as ``uint8`` with zero point 128 (``q + 128``): its AVX2
``u8s8`` kernel multiplies pairs into saturating 16-bit sums and returns wrong products for
full-range int8 inputs, while the ``u8u8`` kernel is exact and still about twice as fast as fp32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Int8Linear", "convert_to_int8", "int8_layers"]


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


class Int8Linear(nn.Module):
    """``y = (q(x) @ W_q^T) * s_x * s_w + b`` with the integer product computed by ONNX Runtime.

    ``codes`` is the int8 weight ``[out, in]``; ``weight_scale`` has one entry per output row;
    ``input_scale`` is a static per-tensor scale, or ``None`` for dynamic per-token scales.
    """

    def __init__(self, codes: Tensor, weight_scale: Tensor, bias: Tensor | None = None,
                 input_scale: Tensor | None = None, threads: int | None = None) -> None:
        super().__init__()
        if codes.dtype != torch.int8 or codes.dim() != 2:
            raise ValueError("codes must be a 2-D int8 tensor [out, in]")
        self.in_features, self.out_features = codes.shape[1], codes.shape[0]
        self.register_buffer("weight_scale", weight_scale.detach().float().reshape(1, -1))
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        self.register_buffer("input_scale", None if input_scale is None else input_scale.detach().float().reshape(()))
        w_u8 = (codes.to(torch.int16) + 128).to(torch.uint8).t().contiguous().numpy()
        self._session, self.onnx_ops = _session(w_u8, threads or torch.get_num_threads())

    def forward(self, x: Tensor) -> Tensor:
        shape, dtype = x.shape, x.dtype
        x2 = x.reshape(-1, self.in_features).float()
        if self.input_scale is not None:
            s = self.input_scale
        else:
            s = (x2.abs().amax(dim=1, keepdim=True) / 127.5).clamp(min=1e-10)
        q = (torch.round(x2 / s).clamp(-128, 127) + 128).to(torch.uint8)
        acc = self._session.run(None, {"x": q.numpy()})[0]
        y = torch.from_numpy(acc).float() * (s * self.weight_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(dtype)

    def extra_repr(self) -> str:
        mode = "static" if self.input_scale is not None else "per-token"
        return f"in_features={self.in_features}, out_features={self.out_features}, activations={mode}"


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
def convert_to_int8(model: nn.Module, threads: int | None = None) -> int:
    """Swap every compressed-tensors W8A8 linear layer of ``model`` for an :class:`Int8Linear`.

    Works on a model after :func:`~quantmatch.algorithms.export.attach` and on a checkpoint loaded by
    transformers (compressed or not yet decompressed). Returns the number of layers swapped.
    """
    names = int8_layers(model)
    for name in names:
        m = model.get_submodule(name)
        scale = m.weight_scale.detach().float().reshape(-1)
        w = m.weight.detach()
        codes = w if w.dtype == torch.int8 else torch.round(w.float() / scale.view(-1, 1)).clamp(-128, 127)
        static = m.quantization_scheme.input_activations.strategy == "tensor"
        layer = Int8Linear(codes.to(torch.int8), scale, m.bias, m.input_scale if static else None, threads)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
    hook = getattr(model, "ct_decompress_hook", None)
    if hook is not None:  # nothing compressed is left for compressed-tensors to decompress
        hook.remove()
        delattr(model, "ct_decompress_hook")
    return len(names)
