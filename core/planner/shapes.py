"""Model shapes for the planner: where a shape comes from, and its exact parameter counts.

A model is given as a local ``config.json`` or model directory, a GGUF file (its header metadata,
read without loading tensors), or the id of a built-in shape (``core/data/model_shapes.json``:
Llama-3.1, Mistral, Mixtral, Qwen2.5, SmolLM2, Gemma-2/3, Phi-3, each with the ``config.json`` URL it
came from and how it was verified). Nothing here loads weights or imports torch.

Parameter counts are computed from the shapes, module type by module type (embeddings, attention
with its biases and q/k norms, dense MLP, MoE experts and router, norms, LM head), so a tied LM head
costs nothing and a Mixtral expert counts once per expert.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from quantmatch.model_info import ModelInfo, ModelInfoError

__all__ = [
    "BuiltinShape",
    "ModelSource",
    "ParamBreakdown",
    "builtin_shapes",
    "kv_bytes_per_token",
    "param_breakdown",
    "quantize_source",
    "resolve_model",
]

_QKV_BIAS_TYPES = frozenset({"qwen2", "qwen2_moe"})
_QK_NORM_TYPES = frozenset({"gemma3_text", "gemma3", "qwen3", "qwen3_moe"})
_FOUR_NORM_TYPES = frozenset({"gemma2", "gemma3_text", "gemma3"})
_SLIDING_PATTERN = {"gemma2": 2}
"""Every n-th layer is global (full attention), the others use the sliding window. Gemma-3 states
``sliding_window_pattern`` in its config (6); Gemma-2 alternates."""


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


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: its shape plus where the shape came from (``builtin``, ``config``, ``gguf``)."""

    info: ModelInfo
    kind: str
    name: str
    source: str
    verified: str = ""
    note: str = ""
    gguf_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "source": self.source, "verified": self.verified,
                "note": self.note, "gguf_type": self.gguf_type, "shape": self.info.to_dict()}


@dataclass(frozen=True)
class ParamBreakdown:
    """Exact parameter counts per module type. ``lm_head`` is 0 when tied to the embeddings.

    ``attention`` includes q/k/v/o weights, their biases and q/k norms; ``mlp`` the dense gated MLP;
    ``moe_experts`` every expert's weights and ``moe_router`` the gates; ``norms`` every layer norm
    and the final norm; ``positions`` learned position embeddings (GPT-2 style).
    """

    embeddings: int
    attention: int
    mlp: int
    moe_experts: int
    moe_router: int
    norms: int
    lm_head: int
    positions: int
    tied: bool
    experts: int = 0
    experts_per_token: int = 0

    @property
    def total(self) -> int:
        return (self.embeddings + self.attention + self.mlp + self.moe_experts + self.moe_router
                + self.norms + self.lm_head + self.positions)

    @property
    def linear(self) -> int:
        """Parameters of the decoder's linear layers: what weight quantization compresses."""
        return self.attention + self.mlp + self.moe_experts

    @property
    def output_params(self) -> int:
        """Parameters the output projection reads (the embedding matrix when tied)."""
        return self.embeddings if self.tied else self.lm_head

    @property
    def active_linear(self) -> int:
        """Linear parameters one token passes through (k of E experts for MoE)."""
        if not self.experts:
            return self.linear
        return self.attention + self.mlp + self.moe_experts * self.experts_per_token // self.experts

    @property
    def active(self) -> int:
        """Parameters one token multiplies with: active linears, router and the output projection."""
        return self.active_linear + self.moe_router + self.output_params

    def to_dict(self) -> dict[str, Any]:
        return {"embeddings": self.embeddings, "attention": self.attention, "mlp": self.mlp,
                "moe_experts": self.moe_experts, "moe_router": self.moe_router, "norms": self.norms,
                "lm_head": self.lm_head, "positions": self.positions, "tied_embeddings": self.tied,
                "total": self.total, "active_per_token": self.active}


def param_breakdown(info: ModelInfo) -> ParamBreakdown:
    """Count every parameter of ``info`` from its shapes (no rule of thumb)."""
    h, L, V = info.hidden_size, info.num_layers, info.vocab_size
    mt = info.model_type
    raw = info.raw
    if mt == "gpt2":
        inner = info.intermediate_size
        attn = L * (h * 3 * h + 3 * h + h * h + h)
        mlp = L * (h * inner + inner + inner * h + h)
        norms = L * 2 * 2 * h + 2 * h  # LayerNorm weight + bias, twice per block, plus ln_f
        positions = info.max_position_embeddings * h
        return ParamBreakdown(V * h, attn, mlp, 0, 0, norms, 0 if info.tie_word_embeddings else V * h,
                              positions, info.tie_word_embeddings)
    hd = info.head_dim
    q, kv = info.num_heads * hd, info.num_kv_heads * hd
    per_attn = h * q + 2 * h * kv + q * h
    if bool(raw.get("attention_bias", mt in _QKV_BIAS_TYPES)):
        per_attn += q + 2 * kv
        if raw.get("attention_bias") is True and mt not in _QKV_BIAS_TYPES:
            per_attn += h  # o_proj bias when the config says every attention projection has one
    if mt in _QK_NORM_TYPES:
        per_attn += 2 * hd
    norms_per_layer = 4 if mt in _FOUR_NORM_TYPES else 2
    experts = info.num_experts
    if experts:
        moe = L * experts * 3 * h * info.moe_intermediate_size
        router = L * h * experts
        mlp = 0
    else:
        moe = router = 0
        mlp = L * 3 * h * info.intermediate_size
    return ParamBreakdown(
        embeddings=V * h,
        attention=L * per_attn,
        mlp=mlp,
        moe_experts=moe,
        moe_router=router,
        norms=L * norms_per_layer * h + h,
        lm_head=0 if info.tie_word_embeddings else V * h,
        positions=0,
        tied=info.tie_word_embeddings,
        experts=experts,
        experts_per_token=info.experts_per_token if experts else 0,
    )


def attention_windows(info: ModelInfo) -> list[int | None]:
    """Per layer: the sliding-window length, or ``None`` for full attention.

    Only Gemma-2/3 are modelled with sliding layers (their runtimes allocate window-sized caches for
    them); other configs that declare a window get full-length caches, as vLLM and transformers
    allocate by default.
    """
    window = info.raw.get("sliding_window")
    mt = info.model_type
    if not window or mt not in ("gemma2", "gemma3_text", "gemma3"):
        return [None] * info.num_layers
    pattern = int(info.raw.get("sliding_window_pattern") or _SLIDING_PATTERN.get(mt, 6))
    return [None if (i + 1) % pattern == 0 else int(window) for i in range(info.num_layers)]


def kv_bytes_per_token(info: ModelInfo, context: int, kv_bytes: float) -> float:
    """KV-cache bytes of one sequence at ``context`` tokens: layers x KV heads x head dim x 2 x bytes,
    with sliding-window layers capped at their window."""
    per_layer = info.num_kv_heads * info.head_dim * 2 * kv_bytes
    return float(sum(per_layer * (context if w is None else min(context, w)) for w in attention_windows(info)))


# ---- built-in table ---------------------------------------------------------------------------
@lru_cache(maxsize=1)
def builtin_shapes() -> tuple[BuiltinShape, ...]:
    """The built-in shapes shipped as ``quantmatch/data/model_shapes.json``."""
    text = resources.files("quantmatch").joinpath("data/model_shapes.json").read_text(encoding="utf-8")
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


def _read_gguf_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
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


_GGUF_FILE_TYPES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 10: "q2_k",
                    11: "q3_k_s", 12: "q3_k_m", 13: "q3_k_l", 14: "q4_k_s", 15: "q4_k_m", 16: "q5_k_s",
                    17: "q5_k_m", 18: "q6_k", 32: "bf16"}
"""``general.file_type`` values (llama.cpp ``llama_ftype``) for the types quantmatch knows."""


def read_gguf(path: Path) -> ModelSource:
    """The shape stored in a GGUF file's metadata (no tensor data is read)."""
    try:
        kv, tensors = _read_gguf_header(path)
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
    cfg: dict[str, Any] = {
        "model_type": {"gemma3": "gemma3_text"}.get(arch, arch),
        "hidden_size": int(hidden),
        "intermediate_size": int(get("feed_forward_length", 4 * int(hidden))),
        "num_hidden_layers": int(blocks),
        "num_attention_heads": int(heads),
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": int(get("attention.key_length", int(hidden) // int(heads))),
        "vocab_size": int(vocab or 0),
        "tie_word_embeddings": "output.weight" not in tensors,
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
    gtype = _GGUF_FILE_TYPES.get(int(ftype)) if isinstance(ftype, int) else None
    name = kv.get("general.name")
    info = ModelInfo.from_config(cfg, name=str(name or path.stem))
    return ModelSource(info, "gguf", info.name, f"GGUF metadata of {path}", "read from the file", "", gtype)


# ---- resolution ------------------------------------------------------------------------------
def resolve_model(model: str | Path | ModelInfo | ModelSource) -> ModelSource:
    """Resolve a model argument: an existing path (directory, config.json or ``.gguf``), else a
    built-in name. Unknown names raise :class:`~quantmatch.registry.UnknownChoiceError` with the
    closest built-in names; unreadable configs raise :class:`~quantmatch.model_info.ModelInfoError`.
    """
    if isinstance(model, ModelSource):
        return model
    if isinstance(model, ModelInfo):
        return ModelSource(model, "config", model.name or model.model_type, "given ModelInfo")
    text = str(model)
    p = Path(text).expanduser()
    if p.exists():
        if p.is_file() and p.suffix.lower() == ".gguf":
            return read_gguf(p)
        if p.is_dir() and not (p / "config.json").exists():
            ggufs = sorted(p.glob("*.gguf"))
            if ggufs:
                return read_gguf(ggufs[0])
        info = ModelInfo.from_path(p)
        name = p.name if p.is_dir() else p.parent.name or p.stem
        return ModelSource(info, "config", name, str(p / "config.json" if p.is_dir() else p))
    shape = find_builtin(text)
    if shape is not None:
        info = ModelInfo.from_config(shape.config, name=shape.id)
        return ModelSource(info, "builtin", shape.id, shape.source, shape.verified, shape.note)
    from quantmatch.registry import UnknownChoiceError

    raise UnknownChoiceError("model", text, builtin_names())


BUNDLED = "smollm2-135m"
"""The built-in shape whose weights ship with quantmatch (``quantmatch quantize smollm2-135m``)."""


def quantize_source(src: ModelSource, model_arg: str) -> str:
    """The model argument ``quantmatch quantize`` (and ``plan --run``) understands for ``src``.

    A path or a Hugging Face id stays as given; a built-in shape's short name becomes the hub id its
    table entry records (``llama-3.1-8b`` -> ``meta-llama/Llama-3.1-8B``), because quantize reads a
    bare name as a hub id; SmolLM2-135M keeps the bundled alias.
    """
    if src.kind != "builtin" or "/" in model_arg:
        return model_arg
    if src.name == BUNDLED:
        return BUNDLED
    shape = find_builtin(src.name)
    return shape.hf_id if shape is not None else model_arg
