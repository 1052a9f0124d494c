"""Convert a Hugging Face Llama-family model directory to a GGUF file (F32, F16 or BF16).

The directory is what ``save_pretrained`` writes: ``config.json``, the tokenizer files
(``tokenizer.json``, ``tokenizer_config.json``, optionally ``chat_template.jinja``) and safetensors
weights (one file or shards with an index). Pickled ``*.bin`` weights are refused.

What is written follows llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel`` / ``Qwen2Model`` /
``Qwen3Model`` and ``TextModel``): tensor names from ``gguf``'s own name maps, the hyperparameters
llama.cpp reads, the Q/K row permutation for llama.cpp's rotary layout (Llama and Mistral only; Qwen
uses NeoX rope and needs none), and a ``gpt2`` byte-level BPE vocabulary with merges, special tokens,
add-BOS/EOS flags and the chat template. Tied embeddings write no ``output.weight``: llama.cpp then
uses ``token_embd.weight`` for the head.

Heavy imports (``gguf``, ``numpy``, ``torch``, ``safetensors``, ``transformers``) happen inside the
functions, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmatch.sdk.errors import InputError

__all__ = [
    "CONVERTIBLE_MODEL_TYPES",
    "OUT_TYPES",
    "ConversionError",
    "ConvertResult",
    "convert_hf_to_gguf",
    "detect_tokenizer_pre",
    "permute_qk",
    "tokenizer_refusal",
    "weight_layout",
]

OUT_TYPES = ("f32", "f16", "bf16")
"""File types the converter writes; every other GGUF type is made from one of them by llama.cpp."""

# HF model_type -> (gguf MODEL_ARCH member name, permute Q/K rows for llama.cpp's rope layout)
_ARCHS: dict[str, tuple[str, bool]] = {
    "llama": ("LLAMA", True),
    "mistral": ("LLAMA", True),
    "qwen2": ("QWEN2", False),
    "qwen3": ("QWEN3", False),
}
CONVERTIBLE_MODEL_TYPES = frozenset(_ARCHS)
"""``config.json`` ``model_type`` values this converter handles."""

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called once per tensor while converting."""


class ConversionError(InputError):
    """The directory cannot be converted; the message names what is missing and the fix."""


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert_hf_to_gguf` wrote."""

    path: Path
    out_type: str
    arch: str
    tokenizer_pre: str
    n_tensors: int
    size_bytes: int


# ---- tokenizer ---------------------------------------------------------------------------------

# The check text and the token-id hashes of llama.cpp's convert_hf_to_gguf.py get_vocab_base_pre():
# a tokenizer is recognised exactly when it tokenizes this text to the same ids.
_CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 "
    "?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? "
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? "
    "We'Ve a'lL"
)
_KNOWN_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # GPT-2
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM(2)
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5/2/2.5/3
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
}
# Split regexes of tokenizer.json pre-tokenizers, for tokenizers whose vocabulary is not in the
# table above (fine-tunes with added tokens, retrained vocabularies).
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLIT_REGEXES = {_LLAMA3_REGEX: "llama-bpe", _QWEN2_REGEX: "qwen2"}


def _pre_from_structure(pre: Mapping[str, Any] | None) -> str | None:
    """llama.cpp's pre-tokenizer name for a ``tokenizer.json`` ``pre_tokenizer``, or ``None``."""
    if not pre:
        return None
    steps = list(pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if (kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
            and steps[1].get("use_regex", True)):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        return _SPLIT_REGEXES.get(regex or "")
    return None


def detect_tokenizer_pre(model_dir: Path, tokenizer: Any) -> str:
    """The ``tokenizer.ggml.pre`` value for the tokenizer in ``model_dir``.

    First the token-id hash of llama.cpp's check text (exactly as ``convert_hf_to_gguf.py`` does),
    then the structure of ``tokenizer.json``'s pre-tokenizer. Raises :class:`ConversionError` when
    neither recognises it; pass ``tokenizer_pre=`` to :func:`convert_hf_to_gguf` to choose.
    """
    ids = tokenizer.encode(_CHKTXT)
    name = _KNOWN_HASHES.get(hashlib.sha256(str(ids).encode()).hexdigest())
    if name:
        return name
    tj = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    name = _pre_from_structure(tj.get("pre_tokenizer"))
    if name:
        return name
    raise ConversionError(
        f"{model_dir}: the tokenizer's pre-tokenizer is not one llama.cpp is known to implement "
        f"({json.dumps(tj.get('pre_tokenizer'))[:200]}); pass tokenizer_pre='gpt-2' (or another "
        "llama.cpp pre-tokenizer name) if you know which one matches")


def _looks_special(token: str) -> bool:
    """Added tokens that act as control tokens even when not flagged special (llama.cpp's rule)."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>"))
            or (token.startswith("<unused") and token.endswith(">")))


def _bpe_vocab(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and ``gguf.TokenType`` values for ids ``0..vocab_size-1`` (get_vocab_base)."""
    import gguf

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            # llama.cpp expects control and user-defined tokens pre-normalized
            if not decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if decoder[i].special or _looks_special(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def _adds_special(tokenizer: Any) -> tuple[bool, bool]:
    """Whether the HF tokenizer adds BOS / EOS when encoding with special tokens (as observed)."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and len(full) > len(plain) and full[0] == bos
    add_eos = eos is not None and len(full) > len(plain) and full[-1] == eos
    return add_bos, add_eos


TOKENIZER_FIX = ("this converter writes byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, SmolLM style); "
                 "for others convert with llama.cpp's convert_hf_to_gguf.py and quantize the result")
"""What to do about a tokenizer :func:`tokenizer_refusal` refuses."""


def tokenizer_refusal(model_dir: Path) -> str | None:
    """Why the converter refuses the tokenizer in ``model_dir``, or ``None``; reads only ``tokenizer.json``.

    A directory with no tokenizer files at all is not judged here (``None``): conversion says so.
    """
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        if (model_dir / "tokenizer.model").is_file():
            return ("the tokenizer is a SentencePiece tokenizer.model with no tokenizer.json "
                    "(re-save it as a fast tokenizer first)")
        return None
    try:
        tj = json.loads(path.read_text(encoding="utf-8"))
        model = tj.get("model") or {}
        kind = model.get("type")
        sentencepiece = model.get("byte_fallback") or "Metaspace" in json.dumps(
            [tj.get("pre_tokenizer"), tj.get("normalizer"), tj.get("decoder")])
    except (OSError, ValueError, AttributeError) as e:
        return f"unreadable tokenizer.json ({e})"
    if kind != "BPE":
        return f"tokenizer model {kind!r} is not supported (only byte-level BPE tokenizers)"
    if sentencepiece:
        return ("a SentencePiece-style vocabulary (Metaspace/byte fallback, as in Llama 2 and Mistral 7B) "
                "is not supported")
    return None


def _write_vocab(writer: Any, model_dir: Path, vocab_size: int, tokenizer_pre: str | None) -> str:
    """Write the gpt2-BPE vocabulary, merges, special ids, add-BOS/EOS and chat template."""
    import gguf
    from transformers import AutoTokenizer

    refusal = tokenizer_refusal(model_dir)
    if refusal:
        raise ConversionError(f"{model_dir}: {refusal}; {TOKENIZER_FIX}")
    if not (model_dir / "tokenizer.json").is_file():
        raise ConversionError(f"{model_dir}: no tokenizer.json; the GGUF needs the tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if max(tokenizer.get_vocab().values()) >= vocab_size:
        raise ConversionError(f"{model_dir}: the tokenizer has ids beyond vocab_size={vocab_size}")
    pre = tokenizer_pre or detect_tokenizer_pre(model_dir, tokenizer)
    tokens, types = _bpe_vocab(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise ConversionError(f"{model_dir}: tokenizer.json has no BPE merges")
    if tokenizer.chat_template and special.chat_template is None:
        special.chat_template = tokenizer.chat_template
    add_bos, add_eos = _adds_special(tokenizer)
    special.add_special_token["bos"] = add_bos
    special.add_special_token["eos"] = add_eos
    special.add_to_gguf(writer, quiet=True)
    return pre


# ---- hyperparameters ---------------------------------------------------------------------------

def _rope(cfg: Mapping[str, Any]) -> tuple[float, dict[str, Any]]:
    """Rope base and scaling dict from a config (transformers 4 ``rope_theta``/``rope_scaling`` or
    transformers 5 ``rope_parameters``)."""
    params = dict(cfg.get("rope_parameters") or {})
    scaling = dict(cfg.get("rope_scaling") or {})
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    merged = {**scaling, **params}
    merged.setdefault("rope_type", merged.get("type", "default"))
    return float(theta), merged


def _llama3_rope_factors(cfg: Mapping[str, Any], rope: Mapping[str, Any], head_dim: int,
                         theta: float) -> list[float]:
    """Per-frequency factors llama.cpp reads from ``rope_freqs.weight`` (llama3 rope type)."""
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings",
                             cfg.get("original_max_position_embeddings", 8192)))
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * theta ** (i / head_dim)
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return out


def _write_hparams(writer: Any, cfg: Mapping[str, Any], file_type: int, name: str) -> list[float] | None:
    """Write the hyperparameters llama.cpp reads; returns llama3 rope factors when needed."""
    import gguf

    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_context_length(int(cfg.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(cfg["vocab_size"]))
    writer.add_rope_dimension_count(head_dim)
    theta, rope = _rope(cfg)
    writer.add_rope_freq_base(theta)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    kind = str(rope.get("rope_type") or "default").lower()
    if kind == "default":
        return None
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        return None
    if kind == "llama3":
        return _llama3_rope_factors(cfg, rope, head_dim, theta)
    raise ConversionError(f"rope type {kind!r} is not supported by this converter "
                          "(supported: default, linear, llama3)")


# ---- tensors -----------------------------------------------------------------------------------

def _weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of ``model_dir`` (single file or the shards named by the index)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
        files = [model_dir / f for f in sorted(set(weight_map.values()))]
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in model_dir.glob("*.bin"))
        more = (f" (found {', '.join(pickled)}: pickled weights are never loaded; re-save with "
                "save_pretrained(safe_serialization=True))" if pickled else "")
        raise ConversionError(f"{model_dir}: no safetensors weights{more}")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ConversionError(f"{model_dir}: missing weight files {', '.join(missing)}")
    return files


def _iter_tensors(files: list[Path]) -> Iterator[tuple[str, Any]]:
    """``(name, torch tensor)`` for every tensor, one at a time."""
    from safetensors import SafetensorError, safe_open

    for f in files:
        try:
            with safe_open(str(f), framework="pt", device="cpu") as st:
                for name in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                    yield name, st.get_tensor(name)
        except SafetensorError as e:
            raise _corrupt(f) from e


def permute_qk(weights: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """Reorder Q/K rows from HF's half-split rotary layout to llama.cpp's interleaved one.

    Identical to ``LlamaModel.permute`` in llama.cpp's ``convert_hf_to_gguf.py``: with grouped
    keys (``n_head_kv != n_head``) the key projection is permuted per KV head.
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def _stored_type(gguf_name: str, ndim: int, out_type: str) -> Any:
    """The GGML type a tensor is stored as: 1-D tensors, norms and biases stay F32."""
    import gguf

    q = gguf.GGMLQuantizationType
    if (out_type == "f32" or ndim <= 1 or gguf_name.endswith("_norm.weight")
            or not gguf_name.endswith(".weight")):
        return q.F32
    return q.F16 if out_type == "f16" else q.BF16


# ---- the file: shared with gguf_export ---------------------------------------------------------

@dataclass(frozen=True)
class _Model:
    """What writing the tensors needs from ``config.json``."""

    cfg: dict[str, Any]
    arch: Any  # gguf.MODEL_ARCH
    permute: bool  # Q/K rows into llama.cpp's rotary layout
    n_head: int
    n_kv: int
    tied: bool
    tensor_map: Any  # gguf.TensorNameMap

    @property
    def arch_name(self) -> str:
        import gguf

        return str(gguf.MODEL_ARCH_NAMES[self.arch])

    def gguf_name(self, hf_name: str, model_dir: Path) -> str | None:
        """The GGUF name of a checkpoint tensor; ``None`` for one not written (rotary frequencies, a tied head)."""
        if hf_name.endswith(".rotary_emb.inv_freq") or (self.tied and hf_name == "lm_head.weight"):
            return None
        new_name = self.tensor_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ConversionError(f"{model_dir}: cannot map tensor {hf_name!r} to a GGUF name")
        return str(new_name)

    def permute_rows(self, hf_name: str, data: Any) -> Any:
        """``data`` (rows first: a weight, a bias, a row's scales or codes) with Q/K rows permuted for rope."""
        if self.permute and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return permute_qk(data, self.n_head, self.n_head)
        if self.permute and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return permute_qk(data, self.n_head, self.n_kv)
        return data


def _read_model(model_dir: Path) -> _Model:
    """The architecture facts of ``model_dir``'s ``config.json``; :class:`ConversionError` when unsupported."""
    import gguf

    cfg_file = model_dir / "config.json"
    if not cfg_file.is_file():
        raise ConversionError(f"{model_dir}: no config.json (give a directory written by save_pretrained)")
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    if "text_config" in cfg and "hidden_size" not in cfg:
        cfg = {**cfg["text_config"], **{k: v for k, v in cfg.items() if k.endswith("token_id")}}
    model_type = str(cfg.get("model_type", "")).lower()
    if model_type not in _ARCHS:
        raise ConversionError(f"{model_dir}: model_type {model_type!r} cannot be converted to GGUF here "
                              f"(supported: {', '.join(sorted(_ARCHS))})")
    if cfg.get("num_local_experts") or cfg.get("num_experts"):
        raise ConversionError(f"{model_dir}: mixture-of-experts models are not supported by this converter")
    arch_name, permute = _ARCHS[model_type]
    arch = gguf.MODEL_ARCH[arch_name]
    n_layers = int(cfg["num_hidden_layers"])
    n_head = int(cfg["num_attention_heads"])
    return _Model(cfg, arch, permute, n_head, int(cfg.get("num_key_value_heads") or n_head),
                  bool(cfg.get("tie_word_embeddings", False)), gguf.get_tensor_name_map(arch, n_layers))


def _float_payload(array: Any, qtype: Any) -> tuple[Any, Any]:
    """``(data, raw type or None)`` for :meth:`gguf.GGUFWriter.add_tensor` of a float32 array stored as ``qtype``."""
    import gguf
    import numpy as np

    if qtype == gguf.GGMLQuantizationType.F32:
        return array, None
    if qtype == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16), None
    return gguf.quants.quantize(array, qtype), qtype


TensorStream = Iterable[tuple[str, Any, Any]]
"""``(GGUF name, data, raw type or None)`` per tensor, as :func:`_write_file` writes them."""


def _write_file(out_path: Path, model_dir: Path, model: _Model, file_type: int, name: str,
                tokenizer_pre: str | None, tensors: TensorStream) -> tuple[str, int]:
    """Write hyperparameters, vocabulary and ``tensors`` into ``out_path``: ``(pre-tokenizer, tensors written)``.

    ``out_path`` is removed when anything fails (including the iteration of ``tensors``).
    """
    import gguf
    import numpy as np

    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_path), model.arch_name, use_temp_file=True)
    try:
        rope_factors = _write_hparams(writer, model.cfg, file_type, name)
        pre = _write_vocab(writer, model_dir, int(model.cfg["vocab_size"]), tokenizer_pre)
        if rope_factors is not None:
            writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                              np.asarray(rope_factors, dtype=np.float32))
        written = int(rope_factors is not None)
        for new_name, data, raw_dtype in tensors:
            writer.add_tensor(new_name, data, raw_dtype=raw_dtype)
            written += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
    except BaseException:
        writer.close()
        out_path.unlink(missing_ok=True)
        raise
    writer.close()
    return pre, written


# ---- entry point -------------------------------------------------------------------------------

def convert_hf_to_gguf(model_dir: str | Path, out_path: str | Path, out_type: str = "f16", *,
                       tokenizer_pre: str | None = None, name: str | None = None,
                       progress: ProgressFn | None = None) -> ConvertResult:
    """Write the model in ``model_dir`` as one GGUF file at ``out_path``.

    ``out_type`` is ``f32``, ``f16`` or ``bf16`` (2-D weights; norms, biases and other 1-D tensors
    are always F32, as llama.cpp expects). ``tokenizer_pre`` overrides the detected llama.cpp
    pre-tokenizer name; ``name`` the ``general.name`` (default: the directory name). Raises
    :class:`ConversionError` for unsupported architectures, tokenizers, rope types or missing files,
    before anything is written. ``out_path`` is overwritten when it exists.
    """
    import gguf
    import torch

    model_dir, out_path = Path(model_dir), Path(out_path)
    out_type = out_type.lower()
    if out_type not in OUT_TYPES:
        raise ConversionError(f"cannot write GGUF type {out_type!r} directly (choose {', '.join(OUT_TYPES)}; "
                              "quantized types are made from these by llama.cpp)")
    model = _read_model(model_dir)
    files = _weight_files(model_dir)
    total = sum(len(_safetensors_header(f)) for f in files)  # refuses truncated files early
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16}[out_type]

    def tensors() -> Iterator[tuple[str, Any, Any]]:
        for count, (hf_name, tensor) in enumerate(_iter_tensors(files), 1):
            if progress is not None:
                progress("convert", count, total)
            new_name = model.gguf_name(hf_name, model_dir)
            if new_name is None:
                continue
            data = model.permute_rows(hf_name, tensor.to(torch.float32))
            yield (new_name, *_float_payload(data.numpy(), _stored_type(new_name, data.dim(), out_type)))

    pre, written = _write_file(out_path, model_dir, model, int(file_type), name or model_dir.name,
                               tokenizer_pre, tensors())
    return ConvertResult(path=out_path, out_type=out_type, arch=model.arch_name,
                         tokenizer_pre=pre, n_tensors=written, size_bytes=out_path.stat().st_size)


def _corrupt(path: Path) -> ConversionError:
    return ConversionError(f"corrupt or truncated safetensors file {path}; re-download or re-save the model")


def _safetensors_header(path: Path) -> dict[str, Any]:
    """``{tensor name: {"dtype", "shape", ...}}`` of one safetensors file, from its header only.

    Raises :class:`ConversionError` when the header is unreadable or the file is shorter than the
    tensors it lists (a truncated download), before any tensor is read.
    """
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise _corrupt(path) from e
    if path.stat().st_size < 8 + n + end:
        raise _corrupt(path)
    return tensors


def weight_layout(model_dir: str | Path) -> dict[str, tuple[str, int]]:
    """``{HF module name: (GGUF tensor name, values per row)}`` for every 2-D weight, from headers only.

    With tied embeddings ``lm_head`` is listed too and maps to ``token_embd.weight``, the tensor
    llama.cpp uses as the head. Raises :class:`ConversionError` like :func:`convert_hf_to_gguf`.
    """
    import gguf

    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if "text_config" in cfg and "hidden_size" not in cfg:
        cfg = {**cfg["text_config"]}
    model_type = str(cfg.get("model_type", "")).lower()
    if model_type not in _ARCHS:
        raise ConversionError(f"{model_dir}: model_type {model_type!r} cannot be converted to GGUF here")
    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[_ARCHS[model_type][0]],
                                          int(cfg["num_hidden_layers"]))
    out: dict[str, tuple[str, int]] = {}
    for f in _weight_files(model_dir):
        for name, meta in _safetensors_header(f).items():
            shape = meta.get("shape") or []
            if not name.endswith(".weight") or len(shape) != 2:
                continue
            new_name = tensor_map.get_name(name, try_suffixes=(".weight",))
            if new_name is not None:
                out[name.removesuffix(".weight")] = (new_name, int(shape[1]))
    embed = next((v for k, v in out.items() if v[0] == "token_embd.weight"), None)
    if embed is not None and bool(cfg.get("tie_word_embeddings", False)):
        out["lm_head"] = embed
    return out
