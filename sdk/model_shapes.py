"""Model shapes without weights: the built-in table and GGUF headers.

- The built-in shapes (``quantmatch/sdk/data/model_shapes.json``: Llama-3.1, Mistral, Mixtral, Qwen2.5,
  SmolLM2, Gemma-2/3, Phi-3), each with the ``config.json`` URL it came from and how it was verified:
  :func:`builtin_shapes`, :func:`find_builtin`.
- The shapes a GGUF file's header records (:func:`read_gguf_header`, :func:`gguf_config`), read without
  loading a tensor and without the ``gguf`` package.

:func:`quantmatch.sdk.models.resolve_model` uses both: a built-in shape is one more kind of model source.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from quantmatch.sdk.model_info import ModelInfoError

__all__ = ["GGUF_FILE_TYPES", "BuiltinShape", "builtin_names", "builtin_shapes", "find_builtin", "gguf_config",
           "read_gguf_header"]


@dataclass(frozen=True)
class BuiltinShape:
    """One entry of the built-in table: an id, aliases, the HF config and where it came from."""

    id: str
    hf_id: str
    aliases: tuple[str, ...]
    source: str
    verified: str
    published_params: str
    note: str
    config: dict[str, Any]

    @property
    def is_verified(self) -> bool:
        return self.verified.startswith(("yes", "partly"))


# ---- built-in table ---------------------------------------------------------------------------
@lru_cache(maxsize=1)
def builtin_shapes() -> tuple[BuiltinShape, ...]:
    """The built-in shapes shipped as ``quantmatch/data/model_shapes.json``."""
    text = resources.files("quantmatch.sdk").joinpath("data", "model_shapes.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return tuple(BuiltinShape(id=m["id"], hf_id=m["hf_id"], aliases=tuple(m.get("aliases", ())),
                              source=m["source"], verified=m["verified"],
                              published_params=m.get("published_params", ""), note=m.get("note", ""),
                              config=dict(m["config"]))
                 for m in data["models"])


def _norm(name: str) -> str:
    n = name.strip().lower().replace("_", "-")
    n = n.split("/")[-1]
    n = re.sub(r"^meta-", "", n)
    return n


def _builtin_index() -> dict[str, BuiltinShape]:
    idx: dict[str, BuiltinShape] = {}
    for s in builtin_shapes():
        for key in (s.id, s.hf_id, *s.aliases):
            idx.setdefault(_norm(key), s)
    return idx


def builtin_names() -> list[str]:
    return [s.id for s in builtin_shapes()]


def find_builtin(name: str) -> BuiltinShape | None:
    """A built-in shape by id, HF id (``meta-llama/Llama-3.1-8B``) or alias, case-insensitively."""
    idx = _builtin_index()
    key = _norm(name)
    if key in idx:
        return idx[key]
    for suffix in ("-instruct", "-it", "-chat", "-hf", "-base"):
        if key.endswith(suffix) and key[: -len(suffix)] in idx:
            return idx[key[: -len(suffix)]]
    return None


# ---- GGUF metadata -----------------------------------------------------------------------------
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}


@dataclass(frozen=True)
class _GGUFArray:
    """An array value in a GGUF header, skipped rather than read: only its length is kept."""

    length: int
    elem_type: int


def read_gguf_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """The key/value metadata and tensor shapes of a GGUF file (format v2/v3), reading only the header.

    Arrays (the tokenizer's vocabulary and merges) are skipped, keeping their length. This is a small
    reader of the documented header layout (ggml-org/ggml docs/gguf.md) rather than
    ``gguf.GGUFReader``, which maps every array element and takes seconds on a 100 MB file.
    """
    import struct

    with open(path, "rb") as f:
        def read(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise ModelInfoError(f"{path}: truncated GGUF header")
            return struct.unpack(fmt, data)[0]

        def string() -> str:
            n = read("<Q")
            if n > 1 << 24:
                raise ModelInfoError(f"{path}: corrupt GGUF header (string of {n} bytes)")
            return f.read(n).decode("utf-8", errors="replace")

        def value(t: int) -> Any:
            if t in _GGUF_SCALARS:
                return read(_GGUF_SCALARS[t])
            if t == 8:
                return string()
            if t == 9:
                et, n = read("<I"), read("<Q")
                if et in _GGUF_SCALARS:
                    f.seek(struct.calcsize(_GGUF_SCALARS[et]) * n, 1)
                else:
                    for _ in range(n):
                        value(et)
                return _GGUFArray(n, et)
            raise ModelInfoError(f"{path}: unknown GGUF value type {t}")

        if f.read(4) != b"GGUF":
            raise ModelInfoError(f"{path}: not a GGUF file (bad magic)")
        version = read("<I")
        if version < 2:
            raise ModelInfoError(f"{path}: GGUF version {version} is not supported (need 2 or later)")
        n_tensors, n_kv = read("<Q"), read("<Q")
        kv: dict[str, Any] = {}
        for _ in range(n_kv):
            key = string()
            kv[key] = value(read("<I"))
        tensors: dict[str, tuple[int, ...]] = {}
        for _ in range(n_tensors):
            name = string()
            dims = tuple(read("<Q") for _ in range(read("<I")))
            read("<I")  # ggml type
            read("<Q")  # offset
            tensors[name] = dims
    return kv, tensors


GGUF_FILE_TYPES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 10: "q2_k",
                    11: "q3_k_s", 12: "q3_k_m", 13: "q3_k_l", 14: "q4_k_s", 15: "q4_k_m", 16: "q5_k_s",
                    17: "q5_k_m", 18: "q6_k", 32: "bf16"}
"""``general.file_type`` values (llama.cpp ``llama_ftype``) for the types quantmatch knows."""


def gguf_config(path: Path) -> tuple[dict[str, Any], str | None, str]:
    """``(config, file type, general.name)`` of a GGUF file: a Hugging Face style config dict from its
    header metadata (no tensor data is read), the ``general.file_type`` as a GGUF type name
    (``q4_1``; ``None`` when unknown) and the model name the file records (``""`` when none)."""
    try:
        kv, tensors = read_gguf_header(path)
    except OSError as e:
        raise ModelInfoError(f"{path}: cannot read ({e})") from e
    arch = kv.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelInfoError(f"{path}: GGUF file has no general.architecture")

    def get(key: str, default: Any = None) -> Any:
        v = kv.get(f"{arch}.{key}")
        return default if v is None or isinstance(v, _GGUFArray) else v

    hidden, heads, blocks = get("embedding_length"), get("attention.head_count"), get("block_count")
    if hidden is None or heads is None or blocks is None:
        raise ModelInfoError(f"{path}: GGUF metadata lacks {arch}.embedding_length/head_count/block_count")
    vocab = get("vocab_size")
    toks = kv.get("tokenizer.ggml.tokens")
    if vocab is None and isinstance(toks, _GGUFArray):
        vocab = toks.length
    if vocab is None and "token_embd.weight" in tensors:
        vocab = max(tensors["token_embd.weight"])
    ffn = int(get("feed_forward_length", 4 * int(hidden)))
    tied = "output.weight" not in tensors
    if arch == "gpt2":
        cfg: dict[str, Any] = {"model_type": "gpt2", "architectures": [], "n_embd": int(hidden), "n_head": int(heads),
                               "n_layer": int(blocks), "n_inner": ffn, "vocab_size": int(vocab or 0),
                               "n_positions": int(get("context_length", 0)), "tie_word_embeddings": tied}
    else:
        cfg = {
            "model_type": {"gemma3": "gemma3_text"}.get(arch, arch),
            "architectures": [],
            "hidden_size": int(hidden),
            "intermediate_size": ffn,
            "num_hidden_layers": int(blocks),
            "num_attention_heads": int(heads),
            "num_key_value_heads": int(get("attention.head_count_kv", heads)),
            "head_dim": int(get("attention.key_length", int(hidden) // int(heads))),
            "vocab_size": int(vocab or 0),
            "tie_word_embeddings": tied,
            "max_position_embeddings": int(get("context_length", 0)),
        }
        experts = get("expert_count")
        if experts:
            cfg["num_local_experts"] = int(experts)
            cfg["num_experts_per_tok"] = int(get("expert_used_count", 2))
            cfg["moe_intermediate_size"] = int(get("expert_feed_forward_length", cfg["intermediate_size"]))
        window = get("attention.sliding_window")
        if window:
            cfg["sliding_window"] = int(window)
    ftype = kv.get("general.file_type")
    gtype = GGUF_FILE_TYPES.get(int(ftype)) if isinstance(ftype, int) else None
    name = kv.get("general.name")
    return cfg, gtype, str(name) if isinstance(name, str) else ""
