"""The measurements ``quantmatch bench`` makes through the runner contract, the same way for every backend.

:func:`measure` loads one artifact (or a float baseline) in a :class:`~quantmatch.sdk.runner.Runner`
and builds every figure from the contract's primitives:

- perplexity: the protocol of ``quantmatch eval`` (:func:`quantmatch.sdk.evaluate.perplexity`): the
  first ``tokens`` tokens of the text in consecutive non-overlapping windows of ``window`` tokens, each
  scored from an empty context; ``exp`` of the mean negative log-likelihood over every predicted token;
- prefill tokens/s: one ``prompt``-token sequence processed from an empty cache (best of
  ``repeats``), only the last position's logits computed;
- decode tokens/s at batch 1 and, where the runner batches, at ``batch`` sequences: greedy steps
  through the KV cache after a ``prompt``-token prefill (``context`` tokens when the config sets a
  context), ``new_tokens`` steps timed after a warm-up;
- the KV cache: the format asked for (``kv_cache``: the runner runs it in its cache, perplexity and
  fidelity included, :meth:`~quantmatch.sdk.runner.Runner.check_kv_cache`) and the bytes it holds after the
  batch-1 decode, measured from the runtime (:meth:`~quantmatch.sdk.runner.Runner.kv_cache_bytes`);
- load time, the runner's peak memory (:meth:`~quantmatch.sdk.runner.Runner.peak_memory_bytes`: the
  process's peak RSS on a CPU) and the RSS before loading.

Threads are set explicitly by every runner (``threads``) and reported with the result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantmatch.sdk.runner import MeasureConfig, Runner, RunnerError, current_rss_bytes

if TYPE_CHECKING:
    from quantmatch.sdk.fidelity import Reference

__all__ = ["GenerationTiming", "RunResult", "TooSlowError", "measure", "time_generation"]


class TooSlowError(RunnerError):
    """The perplexity pass would exceed the time budget at the prefill speed measured first."""


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
    imports, before the model was loaded. ``kv_cache`` is the KV format run (``None``: the runtime's
    default), ``context`` the prompt length the decodes started from when the config set one, and
    ``kv_bytes`` what the KV cache held after the batch-1 decode (``kv_tokens`` tokens), measured from the
    runtime (``None`` where the runner cannot say).
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
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    fidelity: dict[str, Any] | None = None
    """:class:`~quantmatch.sdk.fidelity.Fidelity` against the reference given to :func:`measure` (as a dict)."""
    kv_cache: str | None = None
    context: int | None = None
    kv_bytes: int | None = None
    kv_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _kv_bytes(layout: tuple[int, int, int, float] | None, context: float) -> int:
    """KV-cache bytes read by one decode step: ``(layers, kv_heads, head_dim, bytes per value)``."""
    if layout is None:
        return 0
    layers, kv_heads, head_dim, width = layout
    return int(layers * 2 * kv_heads * head_dim * width * context)


def measure(runner: Runner, target: str | Path, text: str, config: MeasureConfig, dtype: str | None = None,
            kv_layout: tuple[int, int, int, float] | None = None, flops_per_token: float = 0.0,
            budget_s: float | None = None, reference: Reference | None = None) -> RunResult:
    """Load ``target`` in ``runner`` and measure everything (see the module docstring).

    ``kv_layout`` (layers, kv_heads, head_dim, bytes per cached value) sizes the KV-cache traffic of
    a decode step; ``flops_per_token`` is the model's matmul work per token (for the roofline). With
    ``budget_s``, prefill is timed first and :class:`TooSlowError` raised (with that figure) when the
    perplexity pass alone would take longer than the budget at that speed. With ``reference`` (a
    :class:`~quantmatch.sdk.fidelity.Reference` of the same text), the perplexity pass scores the
    reference's token ids and also measures fidelity to it, at the cost of one log-softmax per position.
    """
    from quantmatch.sdk.artifact import library_versions
    from quantmatch.sdk.evaluate import perplexity, token_ids

    runner.check_kv_cache(config.kv_cache)  # before loading anything, whatever the runner's configure does
    runner.configure(config)
    before = current_rss_bytes()
    t0 = time.perf_counter()
    runner.load(target, dtype)
    load_s = time.perf_counter() - t0
    try:
        ids = [int(t) for t in reference.ids] if reference is not None else token_ids(runner.tokenize, text,
                                                                                         config.tokens)
        longest = max(config.prompt, config.decode_start)
        rest = token_ids(runner.tokenize, text, config.tokens + longest * (config.batch + 1))[config.tokens:]
        prompts = _prompts(rest or ids, config.batch + 1, config.prompt)
        starts = prompts if config.context is None else _prompts(rest or ids, config.batch + 1, config.context)
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
        fidelity = None
        if reference is not None:
            from quantmatch.sdk.fidelity import score, summarize

            fid = summarize(score(runner, reference), reference.top_k)
            ppl, predicted, windows, fidelity = fid.ppl, fid.tokens, len(reference.chunks()), fid.to_dict()
        else:
            ppl, predicted, windows = perplexity(runner, ids, config.window)
        single = time_generation(runner, starts[:1], config.new_tokens, config.warmup)
        kv_bytes, kv_tokens = runner.kv_cache_bytes(), runner.cached_tokens(0)
        batched = None
        if runner.batches and config.batch > 1:
            batched = time_generation(runner, starts[1: config.batch + 1], config.new_tokens, config.warmup)
        sample = runner.detokenize(single.tokens[0][:16])
        context = config.mean_decode_context
        return RunResult(
            backend=runner.backend, target=str(target), threads=runner.threads, compute=runner.compute,
            load_seconds=load_s, perplexity=ppl, ppl_tokens=predicted, ppl_windows=windows,
            prefill_tps=best.prefill_tps, decode_tps=single.decode_tps,
            decode_batch_tps=batched.decode_tps if batched else None, batch=config.batch if batched else 1,
            peak_rss_bytes=runner.peak_memory_bytes(), rss_before_load=before,
            weight_bytes_per_token=runner.weight_bytes_per_token(), kv_bytes_per_token=_kv_bytes(kv_layout, context),
            flops_per_token=flops_per_token, sample=sample, config=config.to_dict(),
            versions=library_versions(("quantmatch", *runner.versioned)), fidelity=fidelity,
            kv_cache=config.kv_cache, context=config.context, kv_bytes=kv_bytes or None,
            kv_tokens=kv_tokens if kv_bytes and kv_tokens >= 0 else None)
    finally:
        runner.close()
