"""An example third-party quantmatch plugin for Intel Gaudi 2.

It contributes, through the ``quantmatch`` entry-point group (see ``pyproject.toml``):

- a device family ``intel-gaudi`` with one device, ``intel_gaudi2`` (every figure sourced), which
  adds the execution target ``hpu``;
- a backend ``optimum-habana`` (Hugging Face Optimum for Intel Gaudi);
- a quantization method ``inc-fp8`` (Intel Neural Compressor FP8 with measured static scales),
  declared only: quantizing needs an HPU;
- a quantization method ``example-int8`` that really quantizes, on any CPU with plain PyTorch
  (per-output-channel absmax int8 weights, a safetensors artifact), and the backend that runs its
  artifacts, ``example-torch``;
- refinements of two built-in backends for its hardware: ``vllm`` (what the vllm-gaudi hardware
  plugin adds to vLLM) and ``hardware`` (what Gaudi 2's matrix engine computes).

Importing it is cheap: no torch (only quantizing or loading an ``example-int8`` artifact imports it), no
Gaudi software; detection imports the Gaudi stack only when it
is installed.
"""

from __future__ import annotations

__version__ = "0.1.0"
