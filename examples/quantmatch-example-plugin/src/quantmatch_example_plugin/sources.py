"""Where every fact of this plugin comes from (URLs, or ``owner/repo path @commit``)."""

from __future__ import annotations

HF_TRANSFORMERS_GAUDI = "https://huggingface.co/docs/transformers/perf_train_gaudi"
"""'96GB on Gaudi 2' (memory per HPU); Trainer sets the device to ``hpu``; all Gaudi generations support bf16."""

HF_GAUDI2_BLOG = "https://huggingface.co/blog/habana-gaudi-2-benchmark"
"""Gaudi2: 96GB of memory per accelerator device (vs 80GB on A100 80GB)."""

ML_ENGINEERING_ACCELERATORS = ("stas00/ml-engineering compute/accelerator/README.md @b9e29720 "
                               "(TFLOPS comparison table; memory table)")
"""Gaudi2 BF16 432 TFLOPS (1650 MHz x 256x256 FMAs x 2 MMEs), FP8 865 TFLOPS, 96 GB HBM2e at 2.46 TB/s;
FP32/TF32/FP16 supported without published figures."""

GAUDI2_PRESS_BANDWIDTH = "https://nerdshala.com/intel-says-its-gaudi2-accelerator-more-than-matches-nvidia-a100/"
"""Six 16GB HBM2e stacks, 96GB and 2.45TB/s; FP32, TF32, BF16, FP16 and FP8 data types; 2 MMEs, 24 TPCs."""

GAUDI3_LAUNCH_PRESS = "https://pcguia.pt/2024/04/nvidia-e-amd-tem-um-novo-rival-no-mercado-de-ia-a-intel"
"""Intel Vision 2024 comparison: Gaudi 2 96 GB, 2.45 TB/s, 432 TFLOPS BF16 matrix, '835' TFLOPS FP8 matrix."""

HABANA_ARCHITECTURE = "https://docs.habana.ai/en/latest/Gaudi_Overview/Gaudi_Architecture.html"
"""MME (matrix multiplication engine) for everything lowered to matmul, TPC cluster for the rest."""

HABANA_FP8_INFERENCE = "https://docs.habana.ai/en/latest/PyTorch/Inference_on_PyTorch/Inference_Using_FP8.html"
"""FP8 inference on Gaudi 2 and Gaudi 3 with INC: measure, then quantize; FP8 compute is twice as fast as
BF16; Llama 2/3, Mixtral-8x7B, Falcon and Phi-2 validated."""

INC_FP8 = "https://intel.github.io/neural-compressor/latest/docs/source/3x/PT_FP8Quant.html"
"""INC FP8: E4M3 (default) or E5M2 on Gaudi2 (HPU); FP8 mode on HPU, only QDQ simulation on CPU; maxabs
observer; bf16 for the operators left in high precision."""

VLLM_INC = "https://docs.vllm.ai/en/v0.10.0/features/quantization/inc.html"
"""vLLM FP8 W8A8 with INC on Gaudi 2 and Gaudi 3 (--quantization inc --kv-cache-dtype fp8_inc)."""

VLLM_HW_TABLE = "https://docs.vllm.ai/en/v0.11.2/features/quantization/"
"""Upstream vLLM's table: INC (W8A8) on Intel Gaudi; AWQ/GPTQ/FP8/GGUF/bitsandbytes not upstream on Gaudi."""

VLLM_GAUDI_FEATURES = "https://docs.vllm.ai/projects/gaudi/en/latest/features/supported_features.html"
"""vLLM Hardware Plugin for Intel Gaudi: paged KV cache and custom operators for HPU."""

VLLM_GAUDI_FP8 = "https://docs.vllm.ai/projects/gaudi/en/latest/features/floating_point_8.html"
"""FP8 on Gaudi: calibrate, quantize, infer; quantization backends INC, Auto_Awq, Gptqmodel."""

VLLM_GAUDI_CT = "https://docs.vllm.ai/projects/gaudi/en/0.13.0/api/vllm_gaudi/ops/hpu_compressed_tensors.html"
"""HPUCompressedTensorsLinearMethod: compressed-tensors checkpoints on HPU (channel and tensor strategies)."""

VLLM_GAUDI_AWQ = "https://docs.vllm.ai/projects/gaudi/en/0.13.0/api/vllm_gaudi/ops/hpu_awq.html"
"""awq_hpu: 4-bit weights only; get_supported_act_dtypes() == [torch.bfloat16]."""

VLLM_GAUDI_OPS = "https://docs.vllm.ai/projects/gaudi/en/0.13.0/api/vllm_gaudi/ops/index.html"
"""vllm_gaudi.ops: hpu_awq, hpu_compressed_tensors, hpu_fp8, hpu_gptq, hpu_fused_moe, ..."""

VLLM_GAUDI_SCALES = "https://docs.vllm.ai/projects/gaudi/en/0.13.0/api/vllm_gaudi/extension/scales.html"
"""Gaudi 2 FP8 (float8_e4m3fn) uses hardware-aligned scales: exponent biases 3/7/11/15, scale factor 4."""

OPTIMUM_HABANA = "https://huggingface.co/docs/optimum/main/en/habana/index"
"""Optimum for Intel Gaudi: Transformers and Diffusers on HPU."""

# ---- example-int8 (a method that really quantizes, on any CPU) ------------------------------------
LLM_INT8_ABSMAX = "https://arxiv.org/abs/2208.07339"
"""LLM.int8() section 2.1: absmax quantization scales by 127 / max|X| into [-127, 127]; vector-wise
quantization keeps one scale per row of the weight matrix (per output channel)."""

TORCH_LINEAR = "https://docs.pytorch.org/docs/stable/generated/torch.nn.functional.linear.html"
"""torch.nn.functional.linear: y = x A^T + b, for float inputs on every device PyTorch runs on."""

SAFETENSORS = "https://huggingface.co/docs/safetensors/index"
"""safetensors: a format for tensors that is safe to load (no pickle, no arbitrary code execution)."""


def join(*sources: str) -> str:
    """Several sources for one fact, joined the way quantmatch splits them (`` ; ``)."""
    return " ; ".join(s for s in sources if s)
