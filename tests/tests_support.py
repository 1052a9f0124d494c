"""Test data shared by several test modules."""

from __future__ import annotations

import types

SMOLLM2_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
    "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
    "max_position_embeddings": 8192,
}


class CheckpointTensors:
    """Every tensor of a safetensors checkpoint directory, whatever its sharding (``model.safetensors`` or
    ``model-0000i-of-0000n.safetensors``), with ``safe_open``'s ``keys()`` and ``get_tensor()``."""

    def __init__(self, directory: object) -> None:
        from pathlib import Path

        from safetensors.torch import load_file

        self.tensors: dict[str, object] = {}
        for f in sorted(Path(str(directory)).glob("*.safetensors")):
            self.tensors.update(load_file(str(f)))

    def keys(self) -> list[str]:
        return list(self.tensors)

    def get_tensor(self, name: str) -> object:
        return self.tensors[name]

    def __enter__(self) -> CheckpointTensors:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def fake_amdsmi(name: str, gfx: str, total: int) -> types.ModuleType:
    """A stand-in for the ``amdsmi`` module reporting one GPU (the outside world tests cannot have)."""
    mod = types.ModuleType("amdsmi")
    mod.amdsmi_init = lambda: None  # type: ignore[attr-defined]
    mod.amdsmi_shut_down = lambda: None  # type: ignore[attr-defined]
    mod.amdsmi_get_processor_handles = lambda: ["h0"]  # type: ignore[attr-defined]
    mod.amdsmi_get_gpu_asic_info = lambda h: {  # type: ignore[attr-defined]
        "market_name": name, "target_graphics_version": gfx}
    mod.AmdSmiMemoryType = types.SimpleNamespace(VRAM=0)  # type: ignore[attr-defined]
    mod.amdsmi_get_gpu_memory_total = lambda h, kind: total  # type: ignore[attr-defined]
    return mod
