"""Planning priors the built-in backends share (each backend declares its own in ``priors``).

The CPU figures for eager PyTorch, optimum-quanto, HQQ, ONNX Runtime and llama.cpp were set from
measurements on the development machines (a Zen 3 and then a Sapphire Rapids core;
benchmarks/bench_planner.py, docs/benchmarks.md): there the planner's accuracy check is partly
in-sample.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

MEASURED_SPR = "benchmarks/bench_planner.py and torch.profiler on one Sapphire Rapids core, 2026-12-06"

TORCH_CPU_LOAD: dict[str, Any] = {"float_dtype": "fp32", "import_gib": 0.22, "load_copy_bytes": 4.0}
"""quantmatch's CPU runners load torch models in fp32 (the bf16 baseline aside); python + torch +
transformers imported hold 0.22 GiB; transformers (compressed-tensors) and optimum-quanto build the
fp32 model (the skeleton is created in fp32 first) before the quantized weights replace it (VmHWM at
load, measured)."""

CPU_GEMV_PRIOR = MappingProxyType({"quant": 0.16})
"""For CPU runtimes with no measurement of their own: llama.cpp's quantized vec_dot rate."""
