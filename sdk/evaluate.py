"""Evaluate a model or an artifact: perplexity, fidelity to the unquantized model, size on disk, peak memory.

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

A bare ``.gguf`` file runs on a backend that loads GGUF (llama.cpp), the runtime it is made for;
``runtime`` names another (``torch``: its dequantized view). With a reference model (an artifact's own,
from its manifest, by default) the artifact scores the reference's token ids and the result carries its
fidelity (:mod:`quantmatch.sdk.fidelity`); the reference's distributions are computed once by the
reference backend's runner and cached (:func:`reference_for`).

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
from quantmatch.sdk.errors import InputError
from quantmatch.sdk.fidelity import Fidelity
from quantmatch.sdk.runner import peak_rss_bytes

__all__ = ["DEFAULT_TOKENS", "DEFAULT_WINDOW", "EvalResult", "Scorer", "evaluate", "peak_rss_bytes", "perplexity",
           "reference_for", "token_ids", "windows"]

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
    runtime: str = ""
    """The backend whose runner computed the scores."""
    computed_by: str = ""
    """What computed, in the runner's words (``float32``, ``llama.cpp CPU (F16 KV cache)``)."""
    fidelity: Fidelity | None = None
    """Fidelity against the reference model (``None`` without one)."""
    reference: dict[str, Any] | None = None
    """The reference: model, runtime, compute, text, ``top_k``, cache file, whether it was cached."""
    tokenizer_agrees: bool | None = None
    """Whether the artifact's own tokenizer gives the reference's token ids (both score the reference's)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["perplexity"] = round(self.perplexity, 4)
        d["seconds"] = round(self.seconds, 2)
        d["fidelity"] = self.fidelity.to_dict() if self.fidelity else None
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


def _fingerprint(source: Any) -> dict[str, Any]:
    """What identifies a model's weights without reading them: files, sizes and modification times."""
    if source.gguf_path is not None:
        files = [Path(source.gguf_path)]
    else:
        d = Path(source.hf_dir)
        files = sorted(f for f in d.iterdir() if f.suffix in (".safetensors", ".json", ".bin"))
    return {"files": [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]}


def reference_for(model: str | Path, body: str, label: str, tokens: int, window: int, dtype: str = "float32",
                  top_k: int | None = None, threads: int | None = None, progress: ProgressFn | None = None,
                  cache: bool = True) -> tuple[Any, dict[str, Any]]:
    """The reference distributions of ``model`` on the first ``tokens`` tokens of ``body`` (a
    :class:`~quantmatch.sdk.fidelity.Reference`) and what describes it: computed by the reference backend's
    runner once, then read from the user cache (:func:`~quantmatch.sdk.fidelity.reference_cache_path`)."""
    import hashlib

    from quantmatch.sdk.artifact import library_versions
    from quantmatch.sdk.fidelity import Reference, compute_reference, reference_cache_path, reference_key
    from quantmatch.sdk.models import resolve_model
    from quantmatch.sdk.pluginhost import get_host
    from quantmatch.sdk.runner import MeasureConfig

    source = resolve_model(model)
    host = get_host()
    backend = host.reference_backend()
    cls = host.runner_class(backend)
    versions = library_versions(("quantmatch", *(cls.versioned if cls else ())))
    key = reference_key(model=_fingerprint(source), runtime=backend, dtype=dtype, versions=versions,
                        text=hashlib.sha256(body.encode()).hexdigest(), tokens=tokens, window=window, top_k=top_k)
    path = reference_cache_path(key)
    started = time.perf_counter()
    info = {"model": str(model), "runtime": backend, "dtype": dtype, "cache": str(path)}
    if cache and path.is_file():
        ref = Reference.load(path)
        return ref, {**ref.meta, **info, "top_k": ref.top_k, "cached": True,
                     "seconds": round(time.perf_counter() - started, 2)}
    runner = host.runner(backend, threads)
    runner.configure(MeasureConfig(tokens=tokens, window=window, batch=1))
    runner.load(str(model), dtype)
    try:
        ids = token_ids(runner.tokenize, body, tokens)
        windows(len(ids), window)
        meta = {"model": str(model), "runtime": backend, "compute": runner.compute or dtype, "text": label,
                "versions": versions, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        ref = compute_reference(runner, ids, window, top_k, meta, progress)
    finally:
        runner.close()
    if cache:
        ref.save(path)
    return ref, {**ref.meta, **info, "top_k": ref.top_k, "cached": False,
                 "seconds": round(time.perf_counter() - started, 2)}


def _target_runner(target: str | Path, runtime: str | None, threads: int | None) -> tuple[Any, str, Any, Path | None]:
    """``(runner, kind, manifest, size path)`` for what ``eval`` scores: an artifact on a backend that
    loads its format, a ``.gguf`` file on a backend that loads GGUF (the runtime it is made for), a model
    on the reference backend; ``runtime`` (a backend name) overrides the choice."""
    from quantmatch.sdk.pluginhost import NoRunnerError, get_host

    host = get_host()
    path = Path(target).expanduser()
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        manifest = check_files(path)
        runner = host.runner(runtime, threads) if runtime else host.runner_for_format(manifest.artifact_format, threads)
        return runner, "artifact", manifest, path
    from quantmatch.sdk.models import resolve_model

    source = resolve_model(target)
    if runtime:
        runner = host.runner(runtime, threads)
    elif path.is_file() and source.gguf_path is not None:
        try:
            runner = host.runner_for_format("gguf", threads)
            if runner.missing():  # no GGUF runtime installed: the dequantized view, said in `compute`
                runner = host.reference_runner(threads)
        except NoRunnerError:
            runner = host.reference_runner(threads)
        return runner, "file", None, path
    else:
        runner = host.reference_runner(threads)
    return runner, "model", None, None


def evaluate(target: str | Path, text: str | Path | None = None, tokens: int = DEFAULT_TOKENS,
             window: int = DEFAULT_WINDOW, dtype: str = "float32",
             progress: ProgressFn | None = None, threads: int | None = None, reference: str | None = None,
             runtime: str | None = None, top_k: int | None = None) -> EvalResult:
    """Evaluate a model (directory, ``.gguf``, hub id, ``smollm2-135m``) or a quantmatch artifact.

    Artifacts (directories with ``quantmatch.json``) run on the runner of a backend that loads their
    format (:meth:`~quantmatch.sdk.pluginhost.PluginHost.runner_for_format`), a ``.gguf`` file on one
    that loads GGUF (llama.cpp), a model on the reference backend's runner; ``runtime`` names the backend
    instead (``torch`` for a GGUF file's dequantized view). ``reference``: the unquantized model to
    measure fidelity against (:mod:`quantmatch.sdk.fidelity`; default: the model an artifact's manifest
    names; ``"none"``: perplexity only); the artifact then scores the reference's token ids and the
    result carries :class:`~quantmatch.sdk.fidelity.Fidelity`. Raises
    :class:`~quantmatch.sdk.models.ModelSourceError`, :class:`~quantmatch.sdk.artifact.ArtifactError` or
    :class:`~quantmatch.sdk.calibration.CalibrationError` for bad input (all
    :class:`~quantmatch.sdk.errors.InputError`). ``threads`` sets the runtime's threads (default: the
    physical cores).
    """
    from quantmatch.sdk.fidelity import score, summarize
    from quantmatch.sdk.runner import MeasureConfig, RunnerError

    if tokens < 2:
        raise ValueError("tokens must be at least 2")
    if threads is not None and threads < 1:
        raise ValueError("threads must be at least 1")
    windows(tokens, window)  # a window under 2 tokens is bad input before anything loads
    started = time.perf_counter()
    body, label = _load_text(text)
    path = Path(target).expanduser()
    runner, kind, manifest, size_path = _target_runner(target, runtime, threads)
    method, scheme = (manifest.method, manifest.scheme) if manifest else (None, None if kind == "file" else dtype)
    implied = reference is None and manifest is not None
    if implied:
        reference = manifest.source_model
    if reference is not None and str(reference).lower() in ("none", "-", ""):
        reference = None
    ref = ref_info = None
    if reference is not None:
        try:
            ref, ref_info = reference_for(reference, body, label, tokens, window, "float32", top_k, threads,
                                          progress)
        except InputError as e:
            if not implied:
                raise
            # the manifest's model is gone (moved, another machine): perplexity alone, and say why
            ref_info = {"model": str(reference), "error": f"{e} (pass --reference MODEL to compare with it)"}
    runner.configure(MeasureConfig(tokens=tokens, window=window, batch=1))
    try:
        runner.load(target, dtype)
    except RunnerError as e:
        if manifest is None:
            raise
        # the artifact is the user's input: one that its runtime cannot read is bad input, with the fix
        raise ArtifactError(f"{e}; re-create it with {remake_command(path, manifest)}") from e
    fid = None
    agrees = None
    try:
        if size_path is None:
            from quantmatch.sdk.models import resolve_model

            size_path = resolve_model(target).hf_dir
        ids = token_ids(runner.tokenize, body, tokens)
        if ref is not None:
            agrees = ids == [int(t) for t in ref.ids]
            fid = summarize(score(runner, ref, progress), ref.top_k)
            ppl, predicted, count, ids = fid.ppl, fid.tokens, len(ref.chunks()), list(ref.ids)
        else:
            ppl, predicted, count = perplexity(runner, ids, window, progress)
        compute = runner.compute_dtype or dtype
        peak = runner.peak_memory_bytes()
    finally:
        runner.close()
    return EvalResult(str(target), kind, method, scheme, ppl, len(ids), predicted, count, window, label, compute,
                      path_size(size_path), _weights_bytes(size_path), peak, time.perf_counter() - started,
                      runtime=runner.backend, computed_by=runner.compute, fidelity=fid, reference=ref_info,
                      tokenizer_agrees=agrees)
