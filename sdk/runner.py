"""The runner contract: how quantmatch executes an artifact on a backend, whoever wrote the backend.

A backend names its runner lazily (:attr:`quantmatch.sdk.backend.Backend.runner`, a
``"package.module:Class"`` path, imported only when something runs) and the plugin host hands it out
(:meth:`quantmatch.sdk.pluginhost.PluginHost.runner`). ``quantmatch bench`` measures through it,
``quantmatch eval`` scores through it, ``quantmatch verify`` checks claims with its micro-probe; none of
them knows a backend by name.

A :class:`Runner` loads one artifact (or an unquantized model, for the float baselines it declares)
and offers these primitives:

- :meth:`~Runner.tokenize` / :meth:`~Runner.detokenize`: the model's own tokenizer;
- :meth:`~Runner.logits`: the logits of every position of a window scored from an empty context
  (:meth:`~Runner.nll` derives the window's summed negative log-likelihood from them; runners may
  compute it more cheaply);
- :meth:`~Runner.output_head` / :meth:`~Runner.final_hidden` (optional): the LM head and its input, so
  that a fidelity reference can keep full distributions compactly;
- :meth:`~Runner.prefill`: start fresh sequences from equal-length prompts, return each one's greedy
  next token; :meth:`~Runner.step`: feed one token per sequence through the KV cache;
- KV-cache formats: a measurement asks for one with :attr:`MeasureConfig.kv_cache` (a scheme's ``-kv<fmt>``
  suffix: ``q8_0``, ``q4_0``, ``int8``, ``int4`` ...), which :meth:`~Runner.configure` takes before
  :meth:`~Runner.load`; the runner runs the formats in its class data :attr:`~Runner.kv_caches` and refuses
  any other with a :class:`RunnerError` naming them (:meth:`~Runner.check_kv_cache`). Under a KV format,
  :meth:`~Runner.logits` and :meth:`~Runner.nll` go through that cache (the window fed in chunks, so that
  later positions attend to quantized keys and values), and :meth:`~Runner.kv_cache_bytes` says what the
  cache holds, measured from the runtime;
- :meth:`~Runner.peak_memory_bytes`: the peak memory of the run (the process's peak RSS on a CPU);
- :meth:`~Runner.probe_key` and :meth:`~Runner.probe`: the micro-benchmark ``verify`` runs for a
  combination: one layer through the backend's kernel against fp32, as a :class:`Probe`.

Runners import their libraries (torch, onnxruntime, llama.cpp ...) in :meth:`~Runner.load` and the
probe, never at module level, and set their thread count explicitly (``threads``).
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from quantmatch.sdk.errors import InputError, RunError
from quantmatch.sdk.scheme import KV_FORMATS

if TYPE_CHECKING:
    import numpy as np

    from quantmatch.sdk.scheme import Scheme

__all__ = [
    "PROBE_SHAPE",
    "MeasureConfig",
    "Probe",
    "Runner",
    "RunnerError",
    "UnreadableArtifactError",
    "current_rss_bytes",
    "default_threads",
    "peak_rss_bytes",
]

PROBE_SHAPE = (256, 1536, 1536)
"""``(M, K, N)`` of ``verify``'s micro-probes: 256 rows through an MLP-sized layer (SmolLM2's
intermediate width), compute-bound; the GEMV figure uses one row."""


class RunnerError(RunError):
    """An artifact a runner cannot load or run; the message says what is wrong and what to do."""


class UnreadableArtifactError(RunnerError, InputError):
    """An artifact a runner cannot read (not its format, truncated, corrupt): bad input, whose fix is to give
    the right file or re-create it (exit code 2 in the CLI)."""


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


@dataclass(frozen=True)
class MeasureConfig:
    """What a measurement runs. ``tokens``/``window``: the perplexity protocol; ``prompt``: prefill
    length (also the context decode starts from, unless ``context`` says otherwise); ``new_tokens``: timed
    decode steps; ``batch``: the larger decode batch (runners that do not batch skip it); ``repeats``:
    best-of for prefill.

    ``kv_cache``: the KV-cache format to run (a name of :data:`~quantmatch.sdk.scheme.KV_FORMATS`, from a
    scheme's ``-kv<fmt>`` suffix); ``None``, the runner's own default cache. ``context``: the length of the
    prompt the timed decodes start from (``None``: ``prompt``), so that decode speed and KV-cache bytes
    are measured at a long context while prefill speed stays measured at ``prompt``.
    """

    tokens: int = 2048
    window: int = 1024
    prompt: int = 128
    new_tokens: int = 32
    batch: int = 4
    repeats: int = 2
    warmup: int = 4
    kv_cache: str | None = None
    context: int | None = None

    def __post_init__(self) -> None:
        if self.tokens < 2 or self.window < 2:
            raise InputError("tokens and window must be at least 2")
        if self.prompt < 1 or self.new_tokens < 1 or self.batch < 1:
            raise InputError("prompt, new_tokens and batch must be positive")
        if self.context is not None and self.context < 1:
            raise InputError("context must be positive (the prompt length decoding starts from)")
        if self.kv_cache is not None and self.kv_cache not in KV_FORMATS:
            raise InputError(f"unknown KV-cache format {self.kv_cache!r}; KV formats: {', '.join(KV_FORMATS)}")

    @property
    def decode_start(self) -> int:
        """Tokens in the KV cache when the timed decodes start: ``context``, else ``prompt``."""
        return self.context or self.prompt

    @property
    def mean_decode_context(self) -> float:
        """The mean KV-cache length over the timed decode steps (after the untimed warm-up steps)."""
        return self.decode_start + self.warmup + self.new_tokens / 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Probe:
    """One micro-benchmark of ``verify``: the backend's kernel against fp32 on one layer shape.

    Seconds of the fp32 reference and of the kernel at ``M`` rows (``shape[0]``, compute-bound) and at
    one row (GEMV), and the bytes each holds for the weights.
    """

    kernel: str
    shape: tuple[int, int, int]
    ref_seconds: float
    q_seconds: float
    ref_gemv_seconds: float
    q_gemv_seconds: float
    ref_bytes: int
    q_bytes: int
    versions: str = ""

    @property
    def compute_speedup(self) -> float:
        return self.ref_seconds / self.q_seconds

    @property
    def gemv_speedup(self) -> float:
        return self.ref_gemv_seconds / self.q_gemv_seconds

    @property
    def weight_ratio(self) -> float:
        return self.ref_bytes / self.q_bytes if self.q_bytes else 1.0

    def figure(self) -> str:
        m, k, n = self.shape
        return (f"{self.kernel}, {m}x{k}x{n}: {self.compute_speedup:.2f}x fp32 "
                f"({1e3 * self.q_seconds:.2f} vs {1e3 * self.ref_seconds:.2f} ms); weights "
                f"{1 / self.weight_ratio:.2f}x fp32 bytes; GEMV (M=1) {self.gemv_speedup:.2f}x fp32")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(compute_speedup=self.compute_speedup, gemv_speedup=self.gemv_speedup, weight_ratio=self.weight_ratio)
        return d


class Runner(ABC):
    """An executable backend: load one artifact, then tokenize, score and generate with a KV cache.

    Class-level contract (data, read without loading anything):

    - ``requires``: distributions needed to run (checked without importing); ``install``: the
      ``pip install`` line that provides them.
    - ``batches``: whether :meth:`prefill`/:meth:`step` take several sequences.
    - ``versioned``: distributions whose versions every measurement records.
    - ``baselines``: unquantized float schemes (``fp32``, ``bf16``) it runs from a model (a directory,
      hub id or bundled alias) rather than from an artifact; see :meth:`prepare_baseline`.
    - ``kv_caches``: KV-cache formats (:data:`~quantmatch.sdk.scheme.KV_FORMATS` names) it runs when
      :attr:`MeasureConfig.kv_cache` asks for one, on the artifact of the scheme without its ``-kv``
      suffix; empty: only its default cache. Runners that run one set the runtime's cache type in
      :meth:`load` from :attr:`kv_cache`, feed :meth:`logits`/:meth:`nll` through that cache in chunks,
      and measure :meth:`kv_cache_bytes`.

    An instance serves one backend (``backend``, set by the plugin host: one runner class may serve
    several backends that load different artifact formats through the same library).
    """

    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""
    batches: ClassVar[bool] = True
    versioned: ClassVar[tuple[str, ...]] = ()
    baselines: ClassVar[tuple[str, ...]] = ()
    kv_caches: ClassVar[tuple[str, ...]] = ()

    def __init__(self, threads: int | None = None, backend: str = "") -> None:
        self.threads = int(threads or default_threads())
        self.backend = backend
        self.kv_cache: str | None = None
        """The KV-cache format asked for (:meth:`configure`; one of :attr:`kv_caches`), ``None`` for the
        runner's default cache."""
        self.compute = ""
        """What computed, in words (``float32``, ``llama.cpp CPU (F16 KV cache)``), set by :meth:`load`."""
        self.compute_dtype = ""
        """Set by :meth:`load` when the runtime computes in its own types rather than the ``dtype`` it was
        given (``llama.cpp``); empty means the ``dtype`` asked for."""

    @classmethod
    def missing(cls) -> list[str]:
        """Required distributions that are not installed."""
        from quantmatch.sdk.quantizer import missing_requirements

        return missing_requirements(cls.requires)

    # ---- loading -----------------------------------------------------------------------------
    @abstractmethod
    def load(self, target: str | Path, dtype: str | None = None) -> None:
        """Load an artifact directory or file (or, for :attr:`baselines`, a model spec computing in
        ``dtype``: ``float32``/``bfloat16``). Raise :class:`RunnerError` (or an
        :class:`~quantmatch.sdk.errors.InputError`) with the fix for what cannot be loaded."""

    def configure(self, config: MeasureConfig) -> None:
        """Take ``config`` before :meth:`load`: its KV-cache format (checked, :meth:`check_kv_cache`, and kept
        in :attr:`kv_cache`); runners that preallocate also size context and batch here (an override calls
        this one first)."""
        self.kv_cache = self.check_kv_cache(config.kv_cache)

    @classmethod
    def check_kv_cache(cls, kv_cache: str | None) -> str | None:
        """``kv_cache`` when this runner runs it (``None``, its default cache, always); else raise
        :class:`RunnerError` naming the formats it runs."""
        if kv_cache is None or kv_cache in cls.kv_caches:
            return kv_cache
        runs = f"the KV-cache formats {', '.join(cls.kv_caches)}" if cls.kv_caches else "only its default KV cache"
        raise RunnerError(f"{cls.__name__} does not run a {kv_cache} KV cache; it runs {runs} (drop the -kv"
                          f"{kv_cache} suffix or pick one of those)")

    @classmethod
    def prepares_baselines(cls) -> bool:
        """Whether this runner overrides :meth:`prepare_baseline` (its baselines need an artifact)."""
        return cls.prepare_baseline.__func__ is not Runner.prepare_baseline.__func__  # type: ignore[attr-defined]

    @classmethod
    def prepare_baseline(cls, model: str, scheme: str, out: Path) -> bool:
        """Write what :meth:`load` needs to run the float baseline ``scheme`` of ``model`` into the
        directory ``out`` (an export, say) and return ``True``; ``False`` (the default) when :meth:`load`
        takes the model spec itself."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the model (called once measurements are done)."""

    # ---- tokens and scores -------------------------------------------------------------------
    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (the model's own tokenizer)."""

    def detokenize(self, ids: Sequence[int]) -> str:
        return ""

    @abstractmethod
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """float32 logits ``[len(ids), vocab]`` of every position of ``ids``, scored from an empty context
        (row ``i`` predicts ``ids[i + 1]``)."""

    def nll(self, ids: Sequence[int]) -> float:
        """Sum of ``-log p(ids[i+1] | ids[:i+1])`` over the window, from an empty context (from
        :meth:`logits`, in float64)."""
        import numpy as np

        x = self.logits(ids)
        target = np.asarray(ids[1:])
        total = 0.0
        for a in range(0, len(target), 256):  # float64 in slices: no second copy of every logit
            rows = x[a: a + 256][: len(target) - a].astype(np.float64)
            m = rows.max(axis=1)
            lse = m + np.log(np.exp(rows - m[:, None]).sum(axis=1))
            total += float((lse - rows[np.arange(len(rows)), target[a: a + len(rows)]]).sum())
        return total

    def output_head(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """``(weight [vocab, d], bias [vocab] or None)`` of the LM head as float32 arrays, when this runner's
        logits are ``final_hidden(ids) @ weight.T + bias``; ``None`` (the default) otherwise. Lets a
        fidelity reference keep every full distribution in a fraction of their size
        (:mod:`quantmatch.sdk.fidelity`); checked against :meth:`logits` before it is relied on."""
        return None

    def final_hidden(self, ids: Sequence[int]) -> np.ndarray:
        """float32 ``[len(ids), d]``: the input of the LM head at every position of ``ids`` scored from an
        empty context (for runners whose :meth:`output_head` is not ``None``)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its last hidden state")

    # ---- generation --------------------------------------------------------------------------
    @abstractmethod
    def prefill(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        """Start fresh sequences from equal-length ``prompts``; return each one's greedy next token."""

    @abstractmethod
    def step(self, tokens: Sequence[int]) -> list[int]:
        """Feed one token per sequence through the KV cache; return each one's greedy next token."""

    def cached_tokens(self, sequence: int = 0) -> int:
        """Tokens held in the KV cache for ``sequence`` (what the next step attends to); -1 when unknown."""
        return -1

    # ---- what a measurement reports ------------------------------------------------------------
    def weight_bytes_per_token(self) -> int:
        """Bytes of weights one decode step reads (as held by the backend); 0 when unknown."""
        return 0

    def kv_value_bytes(self, dtype: str | None = None) -> float:
        """Bytes per cached key/value element when computing in ``dtype`` (the KV cache follows the
        compute dtype unless the runtime keeps its own cache type, or :attr:`kv_cache` sets one: then
        fractional for block formats, scales included)."""
        return 2 if dtype in ("bfloat16", "float16", "bf16", "fp16") else 4

    def kv_cache_bytes(self) -> int:
        """Bytes the KV cache holds now, every sequence of the last :meth:`prefill` together, measured from
        the runtime (its cache tensors, quantized codes and scales included); 0 when unknown."""
        return 0

    def peak_memory_bytes(self) -> int:
        """Peak memory of the run so far: the process's peak RSS (runners on an accelerator report
        its memory)."""
        return peak_rss_bytes()

    # ---- verify --------------------------------------------------------------------------------
    @classmethod
    def probe_key(cls, method: str | None, scheme: Scheme) -> tuple[str | None, str]:
        """``(key, why not)``: the micro-benchmark that covers ``method``/``scheme`` on this runner (a key
        several combinations sharing a kernel share), or ``None`` and the reason none does. Cheap: no
        library is imported."""
        return None, "this runner has no micro-benchmark"

    def probe(self, key: str, workdir: Path, shape: tuple[int, int, int] = PROBE_SHAPE) -> Probe:
        """Run the micro-benchmark ``key`` (from :meth:`probe_key`) with :attr:`threads` threads;
        ``workdir`` is a scratch directory shared by the probes of one ``verify`` run."""
        raise NotImplementedError(f"{type(self).__name__} has no micro-benchmark {key!r}")

    @classmethod
    def gemm_rates(cls, threads: int, shape: tuple[int, int, int], seconds: float) -> dict[str, float]:
        """Operations per second (2 per multiply-add) of this runtime's matrix kernels on one
        compute-bound ``shape``, keyed by compute type (``fp32``, ``bf16``, ``int8``): the machine
        figures bench's rooflines divide by. Empty by default; a missing library leaves its keys out."""
        return {}
