"""One runner interface for every executable backend, and the measurements made through it.

A :class:`Runner` loads one artifact (or a float baseline) and offers four primitives: tokenize,
the summed negative log-likelihood of a window scored from an empty context, a *prefill* that
starts fresh sequences and returns each one's greedy next token, and a *step* that feeds one token
per sequence through the KV cache and returns the next ones. :func:`measure` builds every figure
from these primitives the same way for every backend:

- perplexity: the protocol of ``quantmatch eval`` (:mod:`quantmatch.evaluate`): the first ``tokens``
  tokens of the text in consecutive non-overlapping windows of ``window`` tokens, each scored from
  an empty context; ``exp`` of the mean negative log-likelihood over every predicted token;
- prefill tokens/s: one ``prompt``-token sequence processed from an empty cache (best of
  ``repeats``), only the last position's logits computed;
- decode tokens/s at batch 1 and, where the runner batches, at ``batch`` sequences: greedy steps
  through the KV cache after a ``prompt``-token prefill, ``new_tokens`` steps timed after a warm-up;
- load time, peak RSS of the process (``ru_maxrss``) and the RSS before loading.

Threads are set explicitly by every runner (``threads``) and reported with the result.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "GenerationTiming",
    "MeasureConfig",
    "RunResult",
    "Runner",
    "RunnerError",
    "TooSlowError",
    "current_rss_bytes",
    "default_threads",
    "measure",
    "perplexity",
    "time_generation",
]


class RunnerError(RuntimeError):
    """An artifact a runner cannot load or run; the message says what is wrong and what to do."""


class TooSlowError(RunnerError):
    """The perplexity pass would exceed the time budget at the prefill speed measured first."""


def default_threads() -> int:
    """Physical cores when known (what matmul kernels scale with), else logical CPUs."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except ImportError:
        pass
    return os.cpu_count() or 1


def current_rss_bytes() -> int:
    """Resident memory of this process now (``/proc/self/statm``, else psutil, else 0)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except ImportError:
            return 0


@dataclass(frozen=True)
class MeasureConfig:
    """What :func:`measure` runs. ``tokens``/``window``: the perplexity protocol; ``prompt``: prefill
    length (also the context decode starts from); ``new_tokens``: timed decode steps; ``batch``: the
    larger decode batch (runners that do not batch skip it); ``repeats``: best-of for prefill."""

    tokens: int = 2048
    window: int = 1024
    prompt: int = 128
    new_tokens: int = 32
    batch: int = 4
    repeats: int = 2
    warmup: int = 4

    def __post_init__(self) -> None:
        if self.tokens < 2 or self.window < 2:
            raise ValueError("tokens and window must be at least 2")
        if self.prompt < 1 or self.new_tokens < 1 or self.batch < 1:
            raise ValueError("prompt, new_tokens and batch must be positive")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationTiming:
    """One timed generation: ``batch`` sequences of ``prompt`` tokens, then ``steps`` decode steps."""

    batch: int
    prompt: int
    steps: int
    prefill_seconds: float
    decode_seconds: float
    tokens: tuple[tuple[int, ...], ...]

    @property
    def prefill_tps(self) -> float:
        return self.batch * self.prompt / self.prefill_seconds if self.prefill_seconds > 0 else float("nan")

    @property
    def decode_tps(self) -> float:
        return self.batch * self.steps / self.decode_seconds if self.decode_seconds > 0 else float("nan")


@dataclass
class RunResult:
    """Everything measured for one artifact on one backend (one process).

    Speeds are tokens/s; ``decode_batch_tps`` is ``None`` where the runner does not batch.
    ``weight_bytes_per_token`` is what one decode step reads of the weights as the backend holds
    them (the input embedding table is left out unless the LM head shares it); ``kv_bytes_per_token``
    the KV cache read at the mean decode context. ``rss_before_load`` is the process's RSS after
    imports, before the model was loaded.
    """

    backend: str
    target: str
    threads: int
    compute: str
    load_seconds: float
    perplexity: float
    ppl_tokens: int
    ppl_windows: int
    prefill_tps: float
    decode_tps: float
    decode_batch_tps: float | None
    batch: int
    peak_rss_bytes: int
    rss_before_load: int
    weight_bytes_per_token: int
    kv_bytes_per_token: int
    flops_per_token: float
    sample: str = ""
    config: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Runner(ABC):
    """An executable backend: load one artifact, then tokenize, score and generate with a KV cache.

    Subclasses set ``backend`` (the registry's backend name), ``requires`` (distributions needed,
    checked without importing), ``install`` (the ``pip install`` line) and ``batches`` (whether
    :meth:`prefill`/:meth:`step` take several sequences). ``threads`` is applied to the backend's
    thread pool by :meth:`load`.
    """

    backend: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""
    batches: ClassVar[bool] = True
    versioned: ClassVar[tuple[str, ...]] = ()

    def __init__(self, threads: int | None = None) -> None:
        self.threads = int(threads or default_threads())
        self.compute = ""

    @classmethod
    def missing(cls) -> list[str]:
        """Required distributions that are not installed."""
        from quantmatch.quantizer import missing_requirements

        return missing_requirements(cls.requires)

    @abstractmethod
    def load(self, target: str | Path, dtype: str | None = None) -> None:
        """Load an artifact directory (or, for baselines, a model spec computing in ``dtype``)."""

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (the model's own tokenizer)."""

    @abstractmethod
    def nll(self, ids: Sequence[int]) -> float:
        """Sum of ``-log p(ids[i+1] | ids[:i+1])`` over the window, from an empty context."""

    @abstractmethod
    def prefill(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        """Start fresh sequences from equal-length ``prompts``; return each one's greedy next token."""

    @abstractmethod
    def step(self, tokens: Sequence[int]) -> list[int]:
        """Feed one token per sequence through the KV cache; return each one's greedy next token."""

    def configure(self, config: MeasureConfig) -> None:  # noqa: B027 - optional hook
        """Size context and batch for ``config`` before :meth:`load` (runners that preallocate)."""

    def cached_tokens(self, sequence: int = 0) -> int:
        """Tokens held in the KV cache for ``sequence`` (what the next step attends to); -1 when unknown."""
        return -1

    def weight_bytes_per_token(self) -> int:
        """Bytes of weights one decode step reads (as held by the backend); 0 when unknown."""
        return 0

    def detokenize(self, ids: Sequence[int]) -> str:
        return ""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the model (called once measurements are done)."""


def perplexity(runner: Runner, ids: Sequence[int], window: int) -> tuple[float, int, int]:
    """``(perplexity, predicted tokens, windows)`` with the protocol of ``quantmatch eval``."""
    import math

    if window < 2:
        raise ValueError("window must be at least 2 tokens")
    total, count, windows = 0.0, 0, 0
    for start in range(0, len(ids), window):
        chunk = list(ids[start: start + window])
        if len(chunk) < 2:
            continue
        total += runner.nll(chunk)
        count += len(chunk) - 1
        windows += 1
    if count == 0:
        raise ValueError("need at least 2 tokens to measure perplexity")
    return math.exp(total / count), count, windows


def time_generation(runner: Runner, prompts: Sequence[Sequence[int]], steps: int, warmup: int = 0) -> GenerationTiming:
    """Prefill ``prompts`` then greedily decode ``warmup`` untimed and ``steps`` timed tokens."""
    t0 = time.perf_counter()
    nxt = runner.prefill(prompts)
    prefill_s = time.perf_counter() - t0
    out = [[t] for t in nxt]
    for _ in range(warmup):
        nxt = runner.step(nxt)
        for o, t in zip(out, nxt):
            o.append(t)
    t1 = time.perf_counter()
    for _ in range(steps):
        nxt = runner.step(nxt)
        for o, t in zip(out, nxt):
            o.append(t)
    decode_s = time.perf_counter() - t1
    return GenerationTiming(len(prompts), len(prompts[0]), steps, prefill_s, decode_s, tuple(tuple(o) for o in out))


def _prompts(ids: Sequence[int], count: int, length: int) -> list[list[int]]:
    """``count`` distinct prompts of ``length`` tokens cut from ``ids`` (wrapping around)."""
    need = count * length
    pool = list(ids) * (need // max(len(ids), 1) + 1)
    return [pool[i * length: (i + 1) * length] for i in range(count)]


def _kv_bytes(layout: tuple[int, int, int, int] | None, context: float) -> int:
    """KV-cache bytes read by one decode step: ``(layers, kv_heads, head_dim, bytes per value)``."""
    if layout is None:
        return 0
    layers, kv_heads, head_dim, width = layout
    return int(layers * 2 * kv_heads * head_dim * width * context)


def measure(runner: Runner, target: str | Path, text: str, config: MeasureConfig, dtype: str | None = None,
            kv_layout: tuple[int, int, int, int] | None = None, flops_per_token: float = 0.0,
            budget_s: float | None = None) -> RunResult:
    """Load ``target`` in ``runner`` and measure everything (see the module docstring).

    ``kv_layout`` (layers, kv_heads, head_dim, bytes per cached value) sizes the KV-cache traffic of
    a decode step; ``flops_per_token`` is the model's matmul work per token (for the roofline). With
    ``budget_s``, prefill is timed first and :class:`TooSlowError` raised (with that figure) when the
    perplexity pass alone would take longer than the budget at that speed.
    """
    from quantmatch.artifact import library_versions
    from quantmatch.evaluate import peak_rss_bytes, token_ids

    runner.configure(config)
    before = current_rss_bytes()
    t0 = time.perf_counter()
    runner.load(target, dtype)
    load_s = time.perf_counter() - t0
    try:
        ids = token_ids(runner.tokenize, text, config.tokens)
        rest = token_ids(runner.tokenize, text, config.tokens + config.prompt * (config.batch + 1))[config.tokens:]
        prompts = _prompts(rest or ids, config.batch + 1, config.prompt)
        time_generation(runner, prompts[:1], 1)  # warm-up: first-call allocations, thread pools
        best: GenerationTiming | None = None
        for _ in range(max(1, config.repeats)):
            t = time_generation(runner, prompts[:1], 1)
            if best is None or t.prefill_seconds < best.prefill_seconds:
                best = t
        assert best is not None
        if budget_s is not None and len(ids) / best.prefill_tps > budget_s:
            raise TooSlowError(f"too slow to measure here: prefill {best.prefill_tps:.1f} tok/s, so perplexity over "
                               f"{len(ids)} tokens would take about {len(ids) / best.prefill_tps / 60:.0f} min "
                               f"(budget {budget_s:.0f} s)")
        ppl, predicted, windows = perplexity(runner, ids, config.window)
        single = time_generation(runner, prompts[:1], config.new_tokens, config.warmup)
        batched = None
        if runner.batches and config.batch > 1:
            batched = time_generation(runner, prompts[1: config.batch + 1], config.new_tokens, config.warmup)
        sample = runner.detokenize(single.tokens[0][:16])
        context = config.prompt + config.warmup + config.new_tokens / 2
        return RunResult(
            backend=runner.backend, target=str(target), threads=runner.threads, compute=runner.compute,
            load_seconds=load_s, perplexity=ppl, ppl_tokens=predicted, ppl_windows=windows,
            prefill_tps=best.prefill_tps, decode_tps=single.decode_tps,
            decode_batch_tps=batched.decode_tps if batched else None, batch=config.batch if batched else 1,
            peak_rss_bytes=peak_rss_bytes(), rss_before_load=before,
            weight_bytes_per_token=runner.weight_bytes_per_token(), kv_bytes_per_token=_kv_bytes(kv_layout, context),
            flops_per_token=flops_per_token, sample=sample, config=config.to_dict(),
            versions=library_versions(("quantmatch", *runner.versioned)))
    finally:
        runner.close()
