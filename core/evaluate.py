"""Evaluate a model or an artifact: perplexity, size on disk, peak memory.

One protocol for the float baseline and every artifact: the text is tokenized without special
tokens, the first ``tokens`` tokens are cut into consecutive non-overlapping windows of ``window``
tokens (the last one may be shorter), each window is scored from an empty context, and perplexity
is ``exp`` of the mean negative log-likelihood over every predicted token of every window.

The default text is a held-out slice of Tiny Shakespeare shipped with the package (not the slice
used for calibration); pass ``text`` for WikiText-2 or any other file. Torch models compute in
fp32 by default (``dtype``): the artifact's stored weights are used exactly, only the arithmetic is
widened, because CPUs without native fp16/bf16 math run 16-bit matmuls several times slower.
GGUF artifacts are evaluated by llama.cpp with the GGUF's own tokenizer.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .artifact import MANIFEST_NAME, path_size

__all__ = ["DEFAULT_TOKENS", "DEFAULT_WINDOW", "EvalResult", "evaluate", "peak_rss_bytes", "perplexity",
           "token_ids"]

DEFAULT_TOKENS = 20_000
DEFAULT_WINDOW = 1024
DEFAULT_TEXT = "tiny-shakespeare-heldout"
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EvalResult:
    """One evaluation. ``tokens`` were read, ``predicted`` of them scored, in ``windows`` windows.

    ``size_bytes`` is everything in the artifact (or model directory); ``weights_bytes`` the weight
    files alone (``*.safetensors``/``*.gguf``). ``peak_rss_bytes`` is the process's peak resident
    memory when the evaluation finished (it includes loading).
    """

    target: str
    kind: str
    method: str | None
    scheme: str | None
    perplexity: float
    tokens: int
    predicted: int
    windows: int
    window: int
    text: str
    compute_dtype: str
    size_bytes: int
    weights_bytes: int
    peak_rss_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["perplexity"] = round(self.perplexity, 4)
        d["seconds"] = round(self.seconds, 2)
        return d


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:  # Windows: psutil's peak working set
        import psutil

        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _weights_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.suffix in (".safetensors", ".gguf"))


def token_ids(tokenize: Callable[[str], Sequence[int]], text: str, tokens: int) -> list[int]:
    """The first ``tokens`` ids of ``text`` (tokenizing only a prefix long enough to hold them)."""
    chars = max(4 * tokens, 4096)
    while True:
        part = text[:chars]
        ids = list(tokenize(part))
        # A cut inside a word may change the last tokens; keep a margin unless the text is whole.
        if len(ids) >= tokens + 16 or chars >= len(text):
            return ids[:tokens]
        chars *= 2


def perplexity(model: Any, ids: Sequence[int], window: int = DEFAULT_WINDOW,
               progress: ProgressFn | None = None) -> tuple[float, int, int]:
    """``(perplexity, predicted tokens, windows)`` of a torch causal LM over ``ids``."""
    import torch

    if window < 2:
        raise ValueError("window must be at least 2 tokens")
    data = torch.tensor(list(ids), dtype=torch.long)
    starts = [s for s in range(0, len(data), window) if len(data) - s >= 2]
    if not starts:
        raise ValueError("need at least 2 tokens to measure perplexity")
    nll, count = 0.0, 0
    # no_grad, not inference_mode: quanto's packed int2/int4 weights fail under inference mode.
    with torch.no_grad():
        for i, s in enumerate(starts):
            if progress:
                progress("evaluate", i, len(starts))
            chunk = data[s: s + window]
            logits = model(input_ids=chunk[None]).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum"))
            count += len(chunk) - 1
    if progress:
        progress("evaluate", len(starts), len(starts))
    return math.exp(nll / count), count, len(starts)


def _load_text(text: str | Path | None) -> tuple[str, str]:
    from .calibration import CalibrationError, load_text

    if text is None:
        return load_text(DEFAULT_TEXT)
    p = Path(text).expanduser()
    if not p.is_file():
        raise CalibrationError(f"{text}: no such text file (give a UTF-8 text file, or leave --text out for "
                               f"the bundled {DEFAULT_TEXT} text)")
    return load_text(str(p))


def evaluate(target: str | Path, text: str | Path | None = None, tokens: int = DEFAULT_TOKENS,
             window: int = DEFAULT_WINDOW, dtype: str = "float32",
             progress: ProgressFn | None = None, threads: int | None = None) -> EvalResult:
    """Evaluate a model (directory, ``.gguf``, hub id, ``smollm2-135m``) or a quantmatch artifact.

    Artifacts (directories with ``quantmatch.json``) are reloaded through the plugin that wrote
    them. Raises :class:`~quantmatch.models.ModelSourceError`, :class:`~quantmatch.artifact.ArtifactError`
    or :class:`~quantmatch.calibration.CalibrationError` for bad input. ``threads`` sets the
    threads of torch or llama.cpp (default: torch's default; every core for llama.cpp).
    """
    if tokens < 2:
        raise ValueError("tokens must be at least 2")
    if threads is not None and threads < 1:
        raise ValueError("threads must be at least 1")
    if threads:
        import torch

        torch.set_num_threads(threads)
    started = time.perf_counter()
    body, label = _load_text(text)
    path = Path(target).expanduser()
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        from .pipeline import load_artifact

        loaded = load_artifact(path, dtype)
        method, scheme, kind = loaded.manifest.method, loaded.manifest.scheme, "artifact"
        size_path = path
        if loaded.tokenizer is None:  # a llama.cpp model: its own tokenizer and perplexity
            if threads:
                loaded.model.threads = threads
            ids = token_ids(loaded.model.tokenize, body, tokens)
            ppl = float(loaded.model.perplexity(ids, window))
            predicted = sum(len(ids[s: s + window]) - 1 for s in range(0, len(ids), window)
                            if len(ids) - s >= 2)
            windows = sum(1 for s in range(0, len(ids), window) if len(ids) - s >= 2)
            return EvalResult(str(target), kind, method, scheme, ppl, len(ids), predicted, windows, window, label,
                              "llama.cpp", path_size(size_path), _weights_bytes(size_path), peak_rss_bytes(),
                              time.perf_counter() - started)
        model, tokenizer = loaded.model, loaded.tokenizer
    else:
        from .models import resolve_model

        source = resolve_model(target)
        model, tokenizer = source.load(dtype)
        method, scheme, kind = None, dtype, "model"
        size_path = source.hf_dir
    ids = token_ids(lambda t: tokenizer(t, add_special_tokens=False)["input_ids"], body, tokens)
    ppl, predicted, windows = perplexity(model, ids, window, progress)
    return EvalResult(str(target), kind, method, scheme, ppl, len(ids), predicted, windows, window, label, dtype,
                      path_size(size_path), _weights_bytes(size_path), peak_rss_bytes(),
                      time.perf_counter() - started)
