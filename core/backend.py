"""The Backend interface: a runtime or kernel family that executes an artifact on a device."""

from __future__ import annotations

from typing import ClassVar

from .capability import Capability

__all__ = ["Backend"]


class Backend:
    """A runtime or kernel family (torch, ONNX Runtime, llama.cpp, vLLM, TensorRT-LLM ...).

    Class-level contract (data the registry indexes):

    - ``name``: unique id as used on the command line (``vllm``, ``llama.cpp``, ``onnxruntime`` ...).
    - ``description``: one line.
    - ``targets``: execution targets it has (``cuda``, ``rocm``, ``metal``, ``vulkan``, ``cpu``).
    - ``formats``: artifact formats it loads (``gguf``, ``compressed-tensors``, ``quanto`` ...).
    - ``capabilities``: ordered :class:`~quantmatch.capability.Capability` rows: per scheme, layer
      type and target, a predicate over the device's features, the level, the reason and the source.
      The first row whose filters match and whose predicate holds decides; a combination no row
      accepts is ``unsupported``.
    - ``requires``: pip requirement strings to execute it on this machine; ``executable`` says
      whether quantmatch can run it here (runtimes such as vLLM or TensorRT-LLM are declared so the
      registry can answer for hardware the user does not have).
    - ``source``: the runtime's documentation.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    targets: ClassVar[tuple[str, ...]] = ()
    formats: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[tuple[Capability, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""
    executable: ClassVar[bool] = False
    source: ClassVar[str] = ""
