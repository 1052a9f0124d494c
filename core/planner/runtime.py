"""How well each runtime uses the hardware: the priors that turn a roofline into tokens/s.

A roofline gives the time a phase needs at the device's peak compute and bandwidth. Real runtimes
reach a fraction of both, spend time dispatching kernels (eager PyTorch launches every op from
Python; vLLM, TensorRT-LLM and llama.cpp replay graphs), hold a fixed amount of memory of their own
(the CUDA context, the Python interpreter with torch imported, compute buffers), and expand
low-bit weights either inside the matmul kernel (``fused``: only the packed bytes are read) or into
a full 16/32-bit copy first (``materialize``: packed bytes read, the expanded copy written and read
again). These are priors, stated here once, for any backend name; measured figures replace them
where the planner benchmark or ``quantmatch bench`` has measured. The CPU figures for eager PyTorch
and llama.cpp were set from measurements on the development machine (benchmarks/bench_planner.py,
docs/benchmarks.md): there the planner's accuracy check is partly in-sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["RuntimeProfile", "runtime_profile"]


@dataclass(frozen=True)
class RuntimeProfile:
    """Efficiency and overhead priors of one runtime on one kind of target (``gpu`` or ``cpu``).

    - ``bandwidth_eff``/``compute_eff``: fraction of the device's bandwidth reached by decode GEMV
      (of the catalog figure, or of the copy test for ``local``: a memcpy is not a GEMV kernel) and
      of its compute peak reached by GEMM (a peak measured with a GEMM counts as achieved: factor 1).
    - ``layer_overhead_s``: dispatch time per decoder layer per forward pass; ``step_overhead_s``:
      fixed time per forward pass (sampling, the generate loop).
    - ``memory_gib``: memory the runtime itself holds (context, libraries, graphs, buffers).
    - ``dequant``: ``fused`` or ``materialize`` for weight-only schemes.
    - ``prefill_chunk``: tokens per prefill pass (chunked prefill / ubatch), ``None`` = whole prompt.
    - ``logits_rows``: rows of vocab-sized fp32 buffers the runtime reserves up front (llama.cpp's
      compute graph holds the logits of a whole ubatch, and llama-cpp-python keeps an n_batch x vocab
      scores array), beyond the last position's logits every runtime needs.
    - ``format_compute_eff``: extra compute-efficiency factor for an artifact format whose kernels
      are slower than the runtime's main path (vLLM's GGUF kernels).
    - ``dequant_passes``: full passes over the expanded weights a ``materialize`` runtime makes per
      forward (unpack, subtract the zero point, scale, cast: each an elementwise op that writes and
      reads a 16/32-bit copy).
    - ``source``: why these numbers.
    """

    name: str
    bandwidth_eff: float
    compute_eff: float
    layer_overhead_s: float
    step_overhead_s: float
    memory_gib: float
    dequant: str = "fused"
    prefill_chunk: int | None = None
    source: str = "quantmatch prior"
    logits_rows: int = 0
    format_compute_eff: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    dequant_passes: float = 1.0


_GPU = {
    "vllm": RuntimeProfile("vllm", 0.80, 0.60, 5e-6, 1.0e-3, 1.5, "fused", 8192,
                           "CUDA graphs for decode; chunked prefill (max_num_batched_tokens 8192); context + "
                           "graphs + sampler ~1.5 GiB; GGUF runs through dp4a MMQ / dequantize + GEMM kernels "
                           "(vLLM docs: GGUF support is highly experimental and under-optimized)",
                           format_compute_eff=MappingProxyType({"gguf": 0.2})),
    "tensorrt-llm": RuntimeProfile("tensorrt-llm", 0.82, 0.65, 5e-6, 0.5e-3, 1.2, "fused", 8192,
                                   "compiled engine, CUDA graphs"),
    "llama.cpp": RuntimeProfile("llama.cpp", 0.7, 0.35, 1e-5, 0.5e-3, 0.4, "fused", 512,
                                "CUDA graphs for decode; ubatch 512; MMQ on mma.sync int8 (no wgmma/tcgen05), "
                                "batched decode kernels less tuned than vLLM's", 512),
    "torch": RuntimeProfile("torch", 0.65, 0.55, 2.5e-4, 3e-3, 0.6, "materialize", None,
                            "eager PyTorch/transformers: ~15 kernel launches per layer from Python; "
                            "compressed-tensors decompresses weight-only layers per forward"),
    "optimum-quanto": RuntimeProfile("optimum-quanto", 0.55, 0.45, 3e-4, 3e-3, 0.6, "fused", None,
                                     "eager PyTorch plus quanto's Marlin/AWQ kernels (cc >= 8)"),
    "hqq": RuntimeProfile("hqq", 0.6, 0.5, 2.5e-4, 3e-3, 0.6, "fused", None,
                          "eager PyTorch plus tinygemm/GemLite/BitBLAS kernels"),
    "bitsandbytes": RuntimeProfile("bitsandbytes", 0.55, 0.45, 3e-4, 3e-3, 0.6, "fused", None,
                                   "eager PyTorch plus bnb gemv_4bit (decode) / dequantize + GEMM (prefill)"),
    "torchao": RuntimeProfile("torchao", 0.7, 0.6, 3e-5, 1.5e-3, 0.7, "fused", None,
                              "torch.compile'd (mode max-autotune) model; tinygemm / _scaled_mm kernels"),
    "onnxruntime": RuntimeProfile("onnxruntime", 0.65, 0.5, 5e-5, 1e-3, 0.5, "fused", None,
                                  "ORT CUDA EP: MatMulNBits fused dequant GemV"),
    "mlx": RuntimeProfile("mlx", 0.75, 0.55, 2e-5, 1e-3, 0.3, "fused", 2048, "mlx-lm, lazy graph evaluation"),
}

_CPU = {
    "llama.cpp": RuntimeProfile("llama.cpp", 0.75, 0.5, 1e-4, 0.5e-3, 0.07, "fused", 512,
                                "ggml CPU backend: ~30 graph nodes per layer; quantized vec_dot quantizes the "
                                "activations and unpacks blocks, reaching ~15% of the int8 SIMD rate in decode "
                                "(format_compute_eff), twice that for Q4_0/IQ4_NL, which ggml-cpu repacks into "
                                "interleaved blocks with dedicated AVX2/NEON GEMV kernels "
                                "(ggml/src/ggml-cpu/repack.cpp); "
                                "python + numpy + llama-cpp-python ~40 MB resident, the "
                                "reserved compute buffers stay untouched (not resident) on CPU",
                                format_compute_eff=MappingProxyType({"gguf-quant": 0.3, "gguf-q4_0": 0.6,
                                                                     "gguf-iq4_nl": 0.6})),
    "torch": RuntimeProfile("torch", 0.4, 0.6, 8e-4, 3e-3, 0.4, "materialize", None,
                            "eager PyTorch/transformers on CPU: ~195 aten calls per decoder layer per token "
                            "(torch.profiler, transformers 5.23) at a few us each; single-thread fp32 GEMV "
                            "reads at ~40% of the copy-test rate; python + torch + transformers + generate "
                            "~0.4 GiB resident"),
    "optimum-quanto": RuntimeProfile("optimum-quanto", 0.6, 0.5, 3e-4, 3e-3, 0.45, "materialize", None,
                                     "no CPU kernels: weights dequantized per forward in ~3 elementwise passes "
                                     "(benchmarks/bench_planner.py, 2026-12-05: one pass predicted 2.4-3.4x "
                                     "the measured decode on one Sapphire Rapids core)", dequant_passes=3.0),
    "hqq": RuntimeProfile("hqq", 0.6, 0.5, 3e-4, 3e-3, 0.45, "materialize", None,
                          "PyTorch backend on CPU: dequantize (unpack, zero point, scale: ~4 elementwise "
                          "passes; benchmarks/bench_planner.py, 2026-12-05: one pass predicted 3.2x the "
                          "measured decode) then matmul", dequant_passes=4.0),
    "bitsandbytes": RuntimeProfile("bitsandbytes", 0.6, 0.5, 3e-4, 3e-3, 0.45, "materialize", None,
                                   "bnb CPU backend"),
    "torchao": RuntimeProfile("torchao", 0.65, 0.55, 1e-4, 2e-3, 0.5, "fused", None, "torchao CPU kernels"),
    "onnxruntime": RuntimeProfile("onnxruntime", 0.7, 0.6, 2e-5, 0.5e-3, 0.6, "fused", None,
                                  "ORT CPU EP, MatMulNBits; the session, its arena and the tokenizer stack hold "
                                  "~0.6 GiB beyond the weights (benchmarks/bench_planner.py, 2026-12-05: "
                                  "0.39-0.55 GiB more than a 0.15 GiB prior predicted for fp32, int8 and "
                                  "4-bit graphs)"),
    "vllm": RuntimeProfile("vllm", 0.7, 0.6, 5e-5, 2e-3, 1.0, "fused", 4096, "vLLM CPU backend (oneDNN)"),
    "mlx": RuntimeProfile("mlx", 0.7, 0.55, 2e-5, 1e-3, 0.3, "fused", 2048, "mlx-lm"),
}

_METAL = {
    "llama.cpp": RuntimeProfile("llama.cpp", 0.7, 0.6, 1e-5, 0.5e-3, 0.4, "fused", 512,
                                "ggml Metal backend. Prefill efficiency from llama-bench runs of Llama-3-8B "
                                "Q4_K_M (XiongjieDai/GPU-Benchmarks-on-LLM-Inference README, May 2024): pp512 408 "
                                "and 994 tok/s on M1 Max 32-core and M2 Ultra 76-core, 0.58-0.62 of their derived "
                                "GPU peaks (in-sample). The same runs decode at 0.44-0.60 of the memory bandwidth "
                                "(tg512 35.7 / 78.8 / 49.0 on M1 Max / M2 Ultra / M3 Max), below this 0.7 prior; it "
                                "stays at the GPU figure because the SoC's CPU-target figures are uncalibrated too "
                                "and lowering Metal alone would rank the CPU cores first", 512),
}
"""Apple-GPU figures where they differ from the CUDA ones."""

_DEFAULT_GPU = RuntimeProfile("default", 0.6, 0.5, 1e-4, 2e-3, 0.8, "fused", None,
                              "generic prior for a runtime quantmatch has no profile for")
_DEFAULT_CPU = RuntimeProfile("default", 0.6, 0.5, 1e-4, 2e-3, 0.3, "materialize", None,
                              "generic prior for a runtime quantmatch has no profile for")


def runtime_profile(backend: str, target: str) -> RuntimeProfile:
    """The prior for ``backend`` executing on ``target`` (``cpu`` or an accelerator target)."""
    if target == "metal" and backend in _METAL:
        return _METAL[backend]
    table, default = (_CPU, _DEFAULT_CPU) if target == "cpu" else (_GPU, _DEFAULT_GPU)
    return table.get(backend, default)
