"""Calibration text: where it comes from and how it is cut into token samples.

The default is a 40 KB slice of Tiny Shakespeare shipped with the package
(``quantmatch/data/calibration/tiny_shakespeare.txt``; Shakespeare's text is in the public domain;
taken from pytorch/examples ``distributed/minGPT-ddp/mingpt/data/input.txt`` @77f55b91), so every
method works offline. A source can also be a text file or a Hugging Face dataset name
(``NAME[:CONFIG[:SPLIT]]``, optionally prefixed ``hf:``), which needs the ``datasets`` package and
either the network or its cache.

Samples are ``samples`` windows of ``seq_len`` tokens at offsets drawn with ``random.Random(seed)``:
the same text, tokenizer and seed always give the same samples.
"""

from __future__ import annotations

import importlib.resources
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmatch.sdk.errors import InputError

__all__ = [
    "DEFAULT_SOURCE",
    "CalibrationError",
    "CalibrationSpec",
    "calibration_samples",
    "check_source",
    "load_text",
    "packaged_text",
]

DEFAULT_SOURCE = "tiny-shakespeare"
_PACKAGED = {
    "tiny-shakespeare": ("calibration", "tiny_shakespeare.txt"),
    "tiny-shakespeare-heldout": ("eval", "tiny_shakespeare_heldout.txt"),
}


_TEXT_SUFFIXES = (".txt", ".md", ".json", ".jsonl", ".text")


class CalibrationError(InputError):
    """Calibration text that cannot be read or is too short; the message names the fix."""


@dataclass(frozen=True)
class CalibrationSpec:
    """What to calibrate on: ``source`` (``None``: the shipped default), sample count and length, seed.

    The default, 16 samples of 256 tokens (4,096 tokens; also what ``quantmatch plan --run`` calibrates
    with), is kept on measurement: in the calibration-size sweep on SmolLM2-135M (``quantmatch
    calibrate-sweep``; docs/benchmarks.md, "Calibration size", compared by token count with its 128-token
    samples) 4,096 tokens came within 7% of the lowest mean KL divergence any larger set reached, for
    GPTQ, AWQ and SmoothQuant on generic and in-domain text, at an eighth of GPTQ's cost at 65,536 tokens.
    More samples stopped helping at 16,384 tokens (GPTQ, generic text), 8,192 (GPTQ, in-domain), 2,048
    (AWQ) and 32,768 (SmoothQuant static, generic). Calibrating on text of the target domain helped more
    than any count (11-36% lower KL divergence at 16 samples).
    """

    source: str | None = None
    samples: int = 16
    seq_len: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1 or self.seq_len < 2:
            raise CalibrationError(f"calibration needs at least 1 sample of 2 tokens "
                                   f"(got {self.samples} x {self.seq_len})")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source or DEFAULT_SOURCE, "samples": self.samples, "seq_len": self.seq_len,
                "seed": self.seed}


def packaged_text(name: str) -> str:
    """A text shipped with the package: ``tiny-shakespeare`` or ``tiny-shakespeare-heldout``."""
    folder, file = _PACKAGED[name]
    return importlib.resources.files("quantmatch.sdk").joinpath("data", folder, file).read_text(encoding="utf-8")


def load_text(source: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """``(text, label)`` for a source: ``None``/a packaged name, a file, or a dataset name."""
    if source is None or str(source) in _PACKAGED:
        name = str(source or DEFAULT_SOURCE)
        return packaged_text(name), name
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8", errors="replace"), str(path)
        except OSError as e:
            raise CalibrationError(f"{path}: cannot read ({e})") from e
    check_source(text)
    return _dataset_text(text.removeprefix("hf:")), text


def check_source(source: str | os.PathLike[str] | None) -> None:
    """Raise :class:`CalibrationError` now for a source that names a missing file (no download)."""
    if source is None or str(source) in _PACKAGED or str(source).startswith("hf:"):
        return
    path = Path(str(source)).expanduser()
    if path.is_dir():
        raise CalibrationError(f"{path} is a directory; give a text file or a dataset name")
    if not path.is_file() and (str(source).startswith((".", "/", "~")) or path.suffix.lower() in _TEXT_SUFFIXES):
        raise CalibrationError(f"{source}: no such file (give a text file, a dataset name such as "
                               f"wikitext:wikitext-2-raw-v1:train, or leave it out for {DEFAULT_SOURCE})")


def _dataset_text(spec: str) -> str:
    name, _, rest = spec.partition(":")
    config, _, split = rest.partition(":")
    try:
        import datasets
    except ImportError:
        raise CalibrationError(f"calibrating on the dataset {name!r} needs the datasets package "
                               "(pip install datasets); or give a text file, or leave the calibration "
                               f"source out to use {DEFAULT_SOURCE}") from None
    try:
        ds = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as e:  # datasets raises many types for network, cache and naming problems
        offline = os.environ.get("HF_DATASETS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE")
        where = datasets.config.HF_DATASETS_CACHE
        why = "offline mode is on (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE)" if offline else "it could not be fetched"
        raise CalibrationError(f"dataset {spec!r} is not in the datasets cache ({where}) and {why} "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); give a "
                               f"text file instead, or leave the source out for {DEFAULT_SOURCE}") from e
    column = "text" if "text" in ds.column_names else ds.column_names[0]
    return "\n".join(str(x) for x in ds[column] if x)


def calibration_samples(tokenizer: Any, spec: CalibrationSpec | None = None) -> Any:
    """A ``LongTensor[samples, seq_len]`` of token windows from the spec's text, seeded.

    Raises :class:`CalibrationError` when the text has fewer than ``seq_len`` tokens.
    """
    import torch

    spec = spec or CalibrationSpec()
    text, label = load_text(spec.source)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < spec.seq_len:
        raise CalibrationError(f"calibration text {label} has {len(ids)} tokens, fewer than the sample "
                               f"length {spec.seq_len}; use a longer text or a shorter --seq-len")
    rng = random.Random(spec.seed)
    starts = [rng.randrange(0, len(ids) - spec.seq_len + 1) for _ in range(spec.samples)]
    return torch.tensor([ids[s: s + spec.seq_len] for s in starts], dtype=torch.long)
