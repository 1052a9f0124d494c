"""Test data shared by several test modules."""

from __future__ import annotations

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
