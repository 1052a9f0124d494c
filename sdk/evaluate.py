"""Evaluate a model or an artifact: perplexity, size on disk, peak memory; the one perplexity protocol.

One protocol for the float baseline and every artifact, on every runtime: the text is tokenized
without special tokens, the first ``tokens`` tokens are cut into consecutive non-overlapping windows of
``window`` tokens (the last one may be shorter), each window is scored from an empty context, and
perplexity is ``exp`` of the mean negative log-likelihood over every predicted token of every window
(:func:`perplexity`, over anything with the runner contract's ``nll``).

:func:`evaluate` runs through the runner contract: an artifact on the runner of a backend that loads
its format (a GGUF artifact on llama.cpp with the GGUF's own tokenizer, a compressed-tensors checkpoint
on torch ...), a model on the runner of the reference backend (PyTorch), computing in ``dtype``
(default fp32: the stored weights are used exactly, only the arithmetic is widened, because CPUs
without native fp16/bf16 math run 16-bit matmuls several times slower).

The default text is a held-out slice of Tiny Shakespeare shipped with the package (not the slice
used for calibration); pass ``text`` for WikiText-2 or any other file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from quantmatch.sdk.artifact import MANIFEST_NAME, ArtifactError, check_files, path_size, remake_command
from quantmatch.sdk.runner import peak_rss_bytes

__all__ = ["DEFAULT_TOKENS", "DEFAULT_WINDOW", "EvalResult", "Scorer", "evaluate", "peak_rss_bytes", "perplexity",
           "token_ids", "windows"]

DEFAULT_TOKENS = 20_000
DEFAULT_WINDOW = 1024
DEFAULT_TEXT = "tiny-shakespeare-heldout"
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EvalResult:
    """One evaluation. ``tokens`` were read, ``predicted`` of them scored, in ``windows`` windows.

    ``size_bytes`` is everything in the artifact (or model directory); ``weights_bytes`` the weight
    files alone (``*.safetensors``, ``*.gguf``, ``*.onnx`` and its external data). ``peak_rss_bytes`` is
    the runner's peak memory when the evaluation finished (the process's peak RSS: loading included).
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


def _weights_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.suffix in (".safetensors", ".gguf", ".onnx", ".data"))


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


class Scorer(Protocol):
    """What :func:`perplexity` needs: the summed negative log-likelihood of a window scored from an empty
    context (:meth:`quantmatch.sdk.runner.Runner.nll`)."""

    def nll(self, ids: Sequence[int]) -> float: ...


def windows(n: int, window: int) -> list[int]:
    """Start offsets of the windows of ``n`` tokens that predict something (at least 2 tokens)."""
    if window < 2:
        raise ValueError("window must be at least 2 tokens")
    return [s for s in range(0, n, window) if n - s >= 2]


class _TorchModelScorer:
    """A transformers causal LM used directly (not through a runner) as a :class:`Scorer`."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def nll(self, ids: Sequence[int]) -> float:
        import torch

        chunk = torch.tensor(list(ids), dtype=torch.long)
        # no_grad, not inference_mode: quanto's packed int2/int4 weights fail under inference mode.
        with torch.no_grad():
            logits = self.model(input_ids=chunk[None]).logits[0, :-1].float()
            return float(torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum"))


def perplexity(scorer: Scorer | Any, ids: Sequence[int], window: int = DEFAULT_WINDOW,
               progress: ProgressFn | None = None) -> tuple[float, int, int]:
    """``(perplexity, predicted tokens, windows)`` of ``ids`` with the protocol of the module docstring.

    ``scorer`` is a runner (anything with ``nll``), or a transformers causal LM used as it is."""
    if not hasattr(scorer, "nll"):
        scorer = _TorchModelScorer(scorer)
    starts = windows(len(ids), window)
    if not starts:
        raise ValueError("need at least 2 tokens to measure perplexity")
    total, count = 0.0, 0
    for i, s in enumerate(starts):
        if progress:
            progress("evaluate", i, len(starts))
        chunk = list(ids[s: s + window])
        total += scorer.nll(chunk)
        count += len(chunk) - 1
    if progress:
        progress("evaluate", len(starts), len(starts))
    return math.exp(total / count), count, len(starts)


def _load_text(text: str | Path | None) -> tuple[str, str]:
    from quantmatch.sdk.calibration import CalibrationError, load_text

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

    Artifacts (directories with ``quantmatch.json``) run on the runner of a backend that loads their
    format (:meth:`~quantmatch.sdk.pluginhost.PluginHost.runner_for_format`); models on the reference
    backend's runner. Raises :class:`~quantmatch.sdk.models.ModelSourceError`,
    :class:`~quantmatch.sdk.artifact.ArtifactError` or :class:`~quantmatch.sdk.calibration.CalibrationError`
    for bad input (all :class:`~quantmatch.sdk.errors.InputError`). ``threads`` sets the runtime's
    threads (default: the physical cores).
    """
    from quantmatch.sdk.pluginhost import get_host
    from quantmatch.sdk.runner import MeasureConfig, RunnerError

    if tokens < 2:
        raise ValueError("tokens must be at least 2")
    if threads is not None and threads < 1:
        raise ValueError("threads must be at least 1")
    windows(tokens, window)  # a window under 2 tokens is bad input before anything loads
    started = time.perf_counter()
    body, label = _load_text(text)
    path = Path(target).expanduser()
    host = get_host()
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        manifest = check_files(path)
        runner = host.runner_for_format(manifest.artifact_format, threads)
        method, scheme, kind, size_path = manifest.method, manifest.scheme, "artifact", path
    else:
        from quantmatch.sdk.models import resolve_model

        source = resolve_model(target)
        runner = host.reference_runner(threads)
        method, scheme, kind, size_path = None, dtype, "model", None
    runner.configure(MeasureConfig(tokens=tokens, window=window, batch=1))
    try:
        runner.load(target, dtype)
    except RunnerError as e:
        if kind != "artifact":
            raise
        # the artifact is the user's input: one that its runtime cannot read is bad input, with the fix
        raise ArtifactError(f"{e}; re-create it with {remake_command(path, manifest)}") from e
    try:
        if size_path is None:
            size_path = source.hf_dir
        ids = token_ids(runner.tokenize, body, tokens)
        ppl, predicted, count = perplexity(runner, ids, window, progress)
        compute = runner.compute_dtype or dtype
        peak = runner.peak_memory_bytes()
    finally:
        runner.close()
    return EvalResult(str(target), kind, method, scheme, ppl, len(ids), predicted, count, window, label, compute,
                      path_size(size_path), _weights_bytes(size_path), peak, time.perf_counter() - started)
