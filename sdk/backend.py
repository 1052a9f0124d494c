"""The Backend interface: a runtime or kernel family that executes an artifact on a device."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from quantmatch.sdk.capability import Capability
from quantmatch.sdk.priors import RuntimePriors

__all__ = ["Backend"]


class Backend:
    """A runtime or kernel family (torch, ONNX Runtime, llama.cpp, vLLM, TensorRT-LLM ...).

    Class-level contract (data the registry indexes):

    - ``name``: unique id as used on the command line (``vllm``, ``llama.cpp``, ``onnxruntime`` ...).
    - ``description``: one line.
    - ``targets``: execution targets it has (``cuda``, ``rocm``, ``metal``, ``vulkan``, ``cpu``).
    - ``formats``: artifact formats it loads (``gguf``, ``compressed-tensors``, ``quanto`` ...).
    - ``capabilities``: ordered :class:`~quantmatch.sdk.capability.Capability` rows: per scheme, layer
      type and target, a predicate over the device's features, the level, the reason and the source.
      The first row whose filters match and whose predicate holds decides; a combination no row
      accepts is ``unsupported``.
    - ``requires``: pip requirement strings to execute it on this machine.
    - ``runner``: where its :class:`~quantmatch.sdk.runner.Runner` lives, as ``"package.module:Class"``,
      imported only when something runs (``bench``, ``eval``, ``verify``); empty for runtimes declared
      so the registry can answer for hardware the user does not have (vLLM, TensorRT-LLM here).
    - ``reference``: its fp32 baseline is the reference every measured speed and perplexity is compared
      with (one backend; the built-in PyTorch one).
    - ``source``: the runtime's documentation.
    - ``priors``: what the planner assumes about it, one
      :class:`~quantmatch.sdk.priors.RuntimePriors` per target: the planner looks up the target's
      own key (``cpu``, ``metal`` ...), then, for any target other than ``cpu``, the key
      :data:`~quantmatch.sdk.priors.ACCELERATOR`, then falls back to its generic default.
    - ``serves_unquantized``: it serves an unquantized Hugging Face checkpoint as is (the planner
      offers the 16-bit, and on CPUs fp32, baseline on it).
    - ``kv_caches``: KV-cache formats (``q8_0``, ``int8`` ...; scheme ``-kv<fmt>`` names) the runtime
      quantizes to by itself at run time, whatever wrote the artifact (llama.cpp's ``type_k``/``type_v``):
      a scheme's ``-kv<fmt>`` among them asks nothing of the method (its artifact is the scheme's without
      the suffix), and the KV cache is judged by the ``kv-cache`` capability rows alone. Its runner
      runs them (:attr:`quantmatch.sdk.runner.Runner.kv_caches`).
    - ``runtime``: the distribution whose version the capability rows' ``since``/``until`` bounds
      refer to (``vllm``, ``onnxruntime``, ``llama-cpp-python`` ...); empty when no row is bounded.
    - ``latest_version``: the newest version of ``runtime`` the rows were checked against. Verdicts are
      for it unless the user names a version (``--runtime-version vllm=0.9.2``) or one is installed.
    - ``rate_probe``: where its kernel-rate probe lives, as ``"package.module:function"`` (see
      :mod:`quantmatch.sdk.kernel_rates`), imported only when ``quantmatch detect --probe`` or the planner
      benchmark runs it; the planner then uses the measured GEMV/GEMM rates of this machine instead of the
      ``cpu`` priors' fitted kernel efficiencies. Empty: no probe.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    targets: ClassVar[tuple[str, ...]] = ()
    formats: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[tuple[Capability, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""
    runner: ClassVar[str] = ""
    reference: ClassVar[bool] = False
    source: ClassVar[str] = ""
    priors: ClassVar[Mapping[str, RuntimePriors]] = MappingProxyType({})
    serves_unquantized: ClassVar[bool] = False
    kv_caches: ClassVar[tuple[str, ...]] = ()
    runtime: ClassVar[str] = ""
    latest_version: ClassVar[str] = ""
    rate_probe: ClassVar[str] = ""
    executable: ClassVar[bool] = False
    """Deprecated and unused: a backend is executable when it names a ``runner``."""
