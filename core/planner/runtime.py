"""How well each runtime uses the hardware: the priors that turn a roofline into tokens/s.

A roofline gives the time a phase needs at the device's peak compute and bandwidth. Real runtimes
reach a fraction of both, spend time dispatching kernels (eager PyTorch launches every op from
Python; vLLM, TensorRT-LLM and llama.cpp replay graphs), hold a fixed amount of memory of their own
(the CUDA context, the Python interpreter with torch imported, compute buffers), and expand
low-bit weights either inside the matmul kernel (``fused``: only the packed bytes are read) or into
a full 16/32-bit copy first (``materialize``: packed bytes read, the expanded copy written and read
again). These are priors, stated here once, for any backend name; measured figures replace them
where the planner benchmark or ``quantmatch bench`` has measured. The CPU figures for eager PyTorch,
optimum-quanto, HQQ, ONNX Runtime and llama.cpp were set from measurements on the development
machines (a Zen 3 and then a Sapphire Rapids core; benchmarks/bench_planner.py, docs/benchmarks.md):
there the planner's accuracy check is partly in-sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

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
      reads a 16/32-bit copy); ``extra_passes``: more of them for a weight bit width whose
      unpacking takes longer.
    - ``float_dtype``: the float dtype the runtime computes in and holds unquantized weights in when
      it does not follow the scheme (quantmatch's CPU runners load torch models in fp32, the bf16
      baseline aside), else ``None``.
    - ``gemv_eff`` (CPU): decode at batch B is a matrix-vector product per sequence; kernels that read
      low-bit or 16-bit weights there are bound by the instructions that unpack and convert each
      block, not by the ISA's int8/bf16 peak. Their rate per sequence, as a fraction of the cores'
      fp32 FMA rate at 256-bit vectors (:func:`~quantmatch.planner.hardware.vector_fp32_tflops`);
      keys ``quant`` (integer or packed weights), ``bf16``, ``fp16``, or a GGUF type
      (``gguf-q4_0``) that has kernels of its own.
    - ``cast_eff`` (CPU): for weight formats the CPU has no conversion instructions for (``fp8``),
      elements a ``materialize`` runtime converts per second per FLOP/s of that 256-bit fp32 rate.
    - ``import_gib``: the process with the runtime imported, before a model loads;
      ``load_copy_bytes``: bytes per quantized weight of a dense copy the loader builds before the
      quantized weights replace it (the skeleton is created in fp32 first); ``decompress_retained``:
      the share of a decompressed-at-load copy that the allocator keeps from the decompression's
      temporaries. The peak is the larger of the load and the run.
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
    extra_passes: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))
    float_dtype: str | None = None
    gemv_eff: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    cast_eff: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    import_gib: float = 0.0
    load_copy_bytes: float = 0.0
    decompress_retained: float = 0.0


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

_MEASURED_SPR = "benchmarks/bench_planner.py and torch.profiler on one Sapphire Rapids core, 2026-12-06"
_TORCH_CPU_LOAD: dict[str, Any] = {"float_dtype": "fp32", "import_gib": 0.22, "load_copy_bytes": 4.0}
"""quantmatch's CPU runners load torch models in fp32; python + torch + transformers imported hold
0.22 GiB; transformers (compressed-tensors) and optimum-quanto build the fp32 model before the
quantized weights replace it (VmHWM at load, measured)."""

_CPU_GEMV_PRIOR = MappingProxyType({"quant": 0.16})
"""For CPU runtimes with no measurement of their own: llama.cpp's quantized vec_dot rate."""

_CPU = {
    "llama.cpp": RuntimeProfile("llama.cpp", 0.55, 0.5, 5e-5, 0.5e-3, 0.07, "fused", 512,
                                "ggml CPU backend. Decode GEMV reads f32/f16/bf16 weights at ~55% of the "
                                "single-thread copy test (f32 12.4 GB/s against 21.9). The quantized vec_dot "
                                "kernels (ggml-cpu/arch/x86/quants.c) are built on 256-bit AVX2 helpers "
                                "(mul_sum_i8_pairs_float, hsum_float_8) and spend ~10-15 instructions per "
                                "32-weight block on unpacking and scales: ~0.16 of the 256-bit fp32 FMA rate "
                                "per core (11-15 GFLOP/s measured on one 2.6 GHz core for every type), twice "
                                "that for Q4_0/IQ4_NL when ggml-cpu repacks them into interleaved blocks "
                                "(repack.cpp). Prefill: ~15% of the int8 SIMD rate (format_compute_eff). "
                                "python + numpy + llama-cpp-python ~40 MB resident, the reserved compute buffers "
                                f"stay untouched (not resident) on CPU ({_MEASURED_SPR})",
                                format_compute_eff=MappingProxyType({"gguf-quant": 0.3, "gguf-q4_0": 0.6,
                                                                     "gguf-iq4_nl": 0.6}),
                                gemv_eff=MappingProxyType({"quant": 0.16, "gguf-q4_0": 0.32, "gguf-iq4_nl": 0.32})),
    "torch": RuntimeProfile("torch", 0.55, 0.6, 4.5e-4, 2e-3, 0.4, "materialize", None,
                            "eager PyTorch/transformers on CPU: ~195 aten calls per decoder layer per token at "
                            "~2.5 us each outside the matmuls (0.45 ms per layer); the fp32 GEMV (aten::mm) "
                            "reads at ~55% of the single-thread copy test; bf16 GEMV and torch._int_mm at M=1 "
                            "are compute-bound at ~0.08 of the 256-bit fp32 rate (aten::mm 44 ms per token in "
                            "bf16 and 45 ms in fp32; _int_mm 31 ms for the int8 layers); python + torch + "
                            "transformers + generate ~0.4 GiB resident; compressed-tensors checkpoints are "
                            "decompressed to fp32 and the allocator keeps ~0.4 of that size from the "
                            f"temporaries ({_MEASURED_SPR})",
                            gemv_eff=MappingProxyType({"quant": 0.08, "bf16": 0.08, "fp16": 0.08}),
                            decompress_retained=0.4, **_TORCH_CPU_LOAD),
    "optimum-quanto": RuntimeProfile("optimum-quanto", 0.55, 0.5, 1e-3, 3e-3, 0.45, "materialize", None,
                                     "no CPU kernels for weight-only types: weights dequantized to fp32 per "
                                     "forward in ~2 elementwise passes; its QTensor machinery (activation "
                                     "quantizer, qbytes_mm rescale, autograd Function wrappers) costs ~0.1 ms "
                                     "per linear beyond eager PyTorch's dispatch (torch.profiler: ~35 ms of an "
                                     "88 ms step); int8 activations run torch._int_mm "
                                     "(0.08 of the 256-bit fp32 rate at M=1); float8 weights are cast "
                                     "element by element (x86 has no fp8 conversion instructions: ~0.0034 "
                                     f"elements per FLOP of that rate) ({_MEASURED_SPR})", dequant_passes=2.0,
                                     gemv_eff=MappingProxyType({"quant": 0.08}),
                                     cast_eff=MappingProxyType({"fp8": 0.0034}), **_TORCH_CPU_LOAD),
    "hqq": RuntimeProfile("hqq", 0.55, 0.5, 3e-4, 3e-3, 0.5, "materialize", None,
                          "PyTorch backend on CPU: dequantize to fp32 (unpack, then zero point and scale: "
                          "2-3 elementwise passes; 3-bit weights, packed 10 per int32, unpack in 10 "
                          "shift-and-mask slices: one pass more) then matmul; the dequantization temporaries "
                          f"the allocator keeps add ~0.05 GiB to the torch runtime ({_MEASURED_SPR})",
                          dequant_passes=2.5, extra_passes=MappingProxyType({3: 1.0}),
                          float_dtype="fp32", import_gib=0.22),
    "bitsandbytes": RuntimeProfile("bitsandbytes", 0.55, 0.5, 3e-4, 3e-3, 0.45, "materialize", None,
                                   "bnb CPU backend; not measured here: ggml's decode GEMV figures",
                                   gemv_eff=_CPU_GEMV_PRIOR),
    "torchao": RuntimeProfile("torchao", 0.55, 0.55, 1e-4, 2e-3, 0.5, "fused", None,
                              "torchao CPU kernels; not measured here: ggml's decode GEMV figures",
                              gemv_eff=_CPU_GEMV_PRIOR),
    "onnxruntime": RuntimeProfile("onnxruntime", 0.55, 0.6, 2e-5, 0.5e-3, 0.6, "fused", None,
                                  "ORT CPU EP: the fp32 GEMV reads at ~55% of the single-thread copy test; "
                                  "MatMulNBits and MatMulInteger at M=1 reach ~0.15 of the 256-bit fp32 rate "
                                  "(12 GFLOP/s on one 2.6 GHz core); the session, its arena and the tokenizer "
                                  "stack hold ~0.6 GiB beyond the weights (benchmarks/bench_planner.py, "
                                  "2026-12-05: 0.39-0.55 GiB more than a 0.15 GiB prior predicted for fp32, "
                                  "int8 and 4-bit graphs)",
                                  gemv_eff=MappingProxyType({"quant": 0.15})),
    "vllm": RuntimeProfile("vllm", 0.5, 0.6, 5e-5, 2e-3, 1.0, "fused", 4096,
                           "vLLM CPU backend (oneDNN/IPEX); not measured here: a little below ggml's decode "
                           "figures (ggml's CPU kernels are the most tuned for batch-1 decode; vLLM's CPU path "
                           "targets batched serving)",
                           gemv_eff=MappingProxyType({"quant": 0.13})),
    "mlx": RuntimeProfile("mlx", 0.7, 0.55, 2e-5, 1e-3, 0.3, "fused", 2048, "mlx-lm", gemv_eff=_CPU_GEMV_PRIOR),
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
_DEFAULT_CPU = RuntimeProfile("default", 0.55, 0.5, 1e-4, 2e-3, 0.3, "materialize", None,
                              "generic prior for a runtime quantmatch has no profile for",
                              gemv_eff=_CPU_GEMV_PRIOR)


def runtime_profile(backend: str, target: str) -> RuntimeProfile:
    """The prior for ``backend`` executing on ``target`` (``cpu`` or an accelerator target)."""
    if target == "metal" and backend in _METAL:
        return _METAL[backend]
    table, default = (_CPU, _DEFAULT_CPU) if target == "cpu" else (_GPU, _DEFAULT_GPU)
    return table.get(backend, default)
