"""Calibrated quantization algorithms in plain torch: GPTQ, AWQ, SmoothQuant, and what they share.

Nothing here is imported by ``import quantmatch``; every module needs torch. The modules:

- :mod:`.rtn`: integer grids, round-to-nearest and fake quantization (per-channel or group, sym/asym);
- :mod:`.blockwise`: run calibration through a decoder one block at a time;
- :mod:`.gptq`, :mod:`.awq`, :mod:`.smoothquant`: the algorithms;
- :mod:`.int8_runtime`: real int8 matrix multiplication on the CPU (ONNX Runtime integer kernels);
- :mod:`.export`: compressed-tensors checkpoints written with the ``compressed-tensors`` library.
"""
