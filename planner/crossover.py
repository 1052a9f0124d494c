"""The crossover: the batch size (and prompt length) at which a plan stops beating 16-bit and 8-bit plans.

Weight-only low-bit formats win while decode is memory-bound (fewer weight bytes per step) and lose
once the GEMMs become compute-bound: their math runs at the 16-bit peak, less whatever the runtime's
dequantization costs (``RuntimePriors.format_compute_eff``, ``materialize`` passes), while 8-bit formats
that compute natively run at the int8/fp8 peak.

**Beating** means a shorter *request time* at the workload's prompt and generation length: prefill of
``batch x prompt`` tokens plus ``gen`` decode steps of ``batch`` sequences, the time the planner ranks
``fastest`` plans by (decode steps only when one of the two has no prefill prediction, as the planner
does). A plan beats another when its request is more than :data:`TIE` shorter; within that they are
"as fast" (both compute-bound on the same 16-bit math, for example). ``metric="decode"`` compares one
decode step instead.

For each shown plan (the top :data:`CROSSOVER_TOP`) the planner re-evaluates the plan and its
comparators with its own roofline (:meth:`quantmatch.planner.engine._Builder.evaluate`, predictions
only: measured runs are not used, memory is not checked) at batches 1, 2, 4 ... :data:`MAX_BATCH`,
finds the first doubling at which the answer changes and bisects to the integer batch. The prompt
crossover does the same over prompt lengths at the workload's batch. Comparators:

- ``16-bit``: the fastest unquantized 16-bit baseline at each batch, among the plans that fit;
- ``8-bit``: the fastest plan at each batch whose weights are 8-bit (int8/fp8, GGUF ``q8_0``) and that
  computes natively in int8/fp8 (:func:`is_eight_bit`), among the plans that fit and meet the tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from quantmatch.planner.types import Workload
from quantmatch.sdk.scheme import parse_scheme

if TYPE_CHECKING:
    from quantmatch.planner.plan import Candidate, Plan

__all__ = ["CROSSOVER_TOP", "DEFAULT_MODEL", "MAX_BATCH", "MAX_PROMPT", "METRICS", "TIE", "Crossover",
           "attach_crossovers", "crossover_sentence", "crossovers", "explain_crossovers", "is_eight_bit", "label"]

MAX_BATCH = 4096
"""The largest batch the search looks at; ``batch`` is ``None`` when nothing changes up to it."""

MAX_PROMPT = 131072
"""The longest prompt the prompt search looks at (capped by the model's ``max_position_embeddings``)."""

TIE = 0.01
"""A plan beats another when its time is more than 1% shorter; closer than that they are as fast."""

CROSSOVER_TOP = 3
"""``plan`` computes crossovers for this many of the top plans (each costs a few hundred roofline
evaluations of about 0.5 ms)."""

METRICS = ("request", "decode")

_EIGHT_BIT_DTYPES = ("int8", "fp8")


@dataclass(frozen=True)
class Crossover:
    """Where ``candidate`` stops beating (or starts beating) the best ``vs`` plan on ``device``.

    ``vs``: ``16-bit`` or ``8-bit``. ``comparator``: the best such plan at the workload's batch.
    ``status``: ``crosses`` (faster up to ``batch - 1``, not from ``batch`` on), ``overtakes`` (slower
    or as fast up to ``batch - 1``, faster from ``batch``), ``never`` (faster at every batch up to
    ``max_batch``: ``batch`` is ``None``), ``always-slower`` (never faster up to ``max_batch``) or
    ``none`` (no such comparator fits). ``winner``: the faster side beyond ``batch`` (timed at twice it: the
    comparator for ``crosses``, the candidate for ``overtakes``); ``tie``: it is only as fast (within
    :data:`TIE`), not faster. ``prompt``/``prompt_status``: the same search over
    prompt lengths at the workload's ``at_batch``, up to ``max_prompt``. ``metric``: ``request`` or
    ``decode`` (see the module). ``sentence``: all of it in words.
    """

    candidate: str
    vs: str
    comparator: str | None
    status: str
    batch: int | None
    winner: str | None
    tie: bool
    prompt: int | None
    prompt_status: str
    at_batch: int
    device: str
    sentence: str
    metric: str = "request"
    max_batch: int = MAX_BATCH
    max_prompt: int = MAX_PROMPT

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "vs": self.vs, "comparator": self.comparator, "status": self.status,
                "batch": self.batch, "winner": self.winner, "tie": self.tie, "prompt": self.prompt,
                "prompt_status": self.prompt_status, "at_batch": self.at_batch, "device": self.device,
                "metric": self.metric, "max_batch": self.max_batch, "max_prompt": self.max_prompt,
                "sentence": self.sentence}


def is_eight_bit(c: Candidate) -> bool:
    """Whether ``c`` stores 8-bit weights (int8, fp8, GGUF ``q8_0``) and computes natively in int8/fp8."""
    return (parse_scheme(c.scheme).weight_bits == 8 and c.level == "native"
            and c.prefill.compute_dtype in _EIGHT_BIT_DTYPES)


def label(c: Candidate, default_target: str = "") -> str:
    """``W4A16-G32-ASYM (tensorrt-llm)``; the target is named when it is not the device's first."""
    where = c.backend if c.target == default_target else f"{c.backend}/{c.target}"
    return f"{c.scheme.upper()} ({where})"


class _Sweep:
    """Evaluates candidates of one plan at other batches and prompts, with a cache."""

    def __init__(self, p: Plan, reg: Any, metric: str) -> None:
        from quantmatch.planner.engine import _Builder

        self.plan, self.reg, self.metric = p, reg, metric
        self._builder_cls = _Builder
        self._builders: dict[tuple[int, int], Any] = {}
        self._verdicts: dict[tuple[str, str, str, str], Any] = {}
        self._times: dict[tuple[tuple[str, str, str, str], int, int], tuple[float, float, bool]] = {}
        self.default_target = p.device.profile.targets[0] if p.device.profile.targets else ""

    def _builder(self, batch: int, prompt: int) -> Any:
        key = (batch, prompt)
        if key not in self._builders:
            w = self.plan.workload
            ctx = w.context if prompt == w.prompt else None
            wl = Workload(batch, prompt, w.gen, ctx)
            # local=False: the roofline only (bench measurements stand for one batch, not a sweep)
            b = self._builder_cls(self.plan.model, self.plan.params, self.plan.device, wl,
                                  self.plan.memory_budget_gib, False, None, None, self.reg)
            b.results_db, b.measured = None, {}  # times only: no measured quality to look up per call
            self._builders[key] = b
        return self._builders[key]

    def _verdict(self, c: Candidate) -> Any:
        if c.key not in self._verdicts:
            self._verdicts[c.key] = self.reg.verdict(c.method, c.scheme, c.backend, self.plan.device.profile,
                                                     c.target, model=self.plan.model.info)
        return self._verdicts[c.key]

    def phases(self, c: Candidate, batch: int, prompt: int) -> tuple[float, float, bool]:
        """(prefill time, decode step time, prefill predicted with a compute peak)."""
        key = (c.key, batch, prompt)
        if key not in self._times:
            kv = _forced_kv(c)
            b = self._builder(batch, prompt)
            e = b.evaluate(self._verdict(c), kv=kv) if kv else b.evaluate(self._verdict(c))
            self._times[key] = (e.prefill.rank_time_s, e.decode.rank_time_s, e.prefill.peak_tflops is not None)
        return self._times[key]

    def pair(self, a: Candidate, b: Candidate, batch: int, prompt: int) -> tuple[float, float]:
        """The times of ``a`` and ``b`` under the metric, made comparable as the planner does."""
        pa, da, ka = self.phases(a, batch, prompt)
        pb, db, kb = self.phases(b, batch, prompt)
        gen = self.plan.workload.gen
        if self.metric == "decode":
            return da, db
        if ka != kb:  # one prefill has no compute peak: decode alone (engine._comparable)
            return gen * da, gen * db
        return pa + gen * da, pb + gen * db

    def best(self, c: Candidate, group: Sequence[Candidate], batch: int, prompt: int) -> tuple[Candidate, float, float]:
        """The fastest of ``group`` against ``c``: (it, c's time, its time)."""
        scored = [(self.pair(c, g, batch, prompt), g) for g in group]
        (tc, tg), g = min(scored, key=lambda x: x[0][1])
        return g, tc, tg


def _forced_kv(c: Candidate) -> str | None:
    """The KV format ``plan --kv`` set on ``c`` (``None``: the scheme's or the runtime's own)."""
    kv = getattr(c, "kv", None)
    how = str(getattr(kv, "how", ""))
    if kv is None or how in ("scheme", "runtime default") or how.startswith("auto: the default"):
        return None
    return str(kv.format)


def _beats(tc: float, tg: float) -> bool:
    return tc < tg * (1.0 - TIE)


def _grid(hi: int) -> list[int]:
    out, x = [], 1
    while x < hi:
        out.append(x)
        x *= 2
    out.append(hi)
    return out


def _search(beats_at: Callable[[int, Sequence[Candidate] | None], tuple[bool, Candidate]],
            hi: int) -> tuple[bool, int | None, Candidate]:
    """(beats at 1, the first value at which that answer flips or ``None``, the best comparator there).

    The doubling grid is evaluated against the whole group; the bisection between two grid points
    against the group's best at either end (what wins between them is one of those two in practice)."""
    grid = _grid(hi)
    first, g0 = beats_at(grid[0], None)
    prev, prev_g = grid[0], g0
    for x in grid[1:]:
        b, g = beats_at(x, None)
        if b != first:
            lo, up, up_g = prev, x, g
            pair = [prev_g] if prev_g is g else [prev_g, g]
            while up - lo > 1:
                mid = (lo + up) // 2
                bm, gm = beats_at(mid, pair)
                if bm == first:
                    lo = mid
                else:
                    up, up_g = mid, gm
            return first, up, up_g
        prev, prev_g = x, g
    return first, None, prev_g


def _contenders(sw: _Sweep, c: Candidate, group: Sequence[Candidate], max_prompt: int) -> list[Candidate]:
    """The members of ``group`` that are fastest at one end of the ranges or at the workload: memory-bound
    at batch 1, compute-bound at :data:`MAX_BATCH` and the longest prompt. Between the ends one of them
    wins (each time is a maximum of terms linear in the batch), so the search need not time the rest."""
    if len(group) <= 1:
        return list(group)
    w = sw.plan.workload
    keep: dict[tuple[str, str, str, str], Candidate] = {}
    for b, n in ((1, w.prompt), (w.batch, w.prompt), (MAX_BATCH, w.prompt), (w.batch, max_prompt)):
        g, _, _ = sw.best(c, group, b, n)
        keep.setdefault(g.key, g)
    return list(keep.values())


def _compare(sw: _Sweep, c: Candidate, group: Sequence[Candidate], vs: str) -> Crossover:
    p = sw.plan
    w = p.workload
    dev = p.device.name
    name = label(c, sw.default_target)
    max_prompt = MAX_PROMPT
    mpe = p.model.info.max_position_embeddings
    if mpe:
        max_prompt = max(1, min(MAX_PROMPT, mpe - w.gen))
    if not group:
        return Crossover(name, vs, None, "none", None, None, False, None, "none", w.batch, dev,
                         f"{name}: no {vs} plan fits on {dev} to compare with", sw.metric, MAX_BATCH, max_prompt)
    group = _contenders(sw, c, group, max_prompt)
    ref, _, _ = sw.best(c, group, w.batch, w.prompt)

    def by_batch(b: int, sub: Sequence[Candidate] | None) -> tuple[bool, Candidate]:
        g, tc, tg = sw.best(c, sub or group, b, w.prompt)
        return _beats(tc, tg), g

    def by_prompt(n: int, sub: Sequence[Candidate] | None) -> tuple[bool, Candidate]:
        g, tc, tg = sw.best(c, sub or group, w.batch, n)
        return _beats(tc, tg), g

    first, batch, g = _search(by_batch, MAX_BATCH)
    status = ("never" if first else "always-slower") if batch is None else ("crosses" if first else "overtakes")
    tie = False
    winner = None
    if batch is not None:  # who wins beyond it: at twice the batch, clear of the 1% threshold
        g, tc, tg = sw.best(c, group, min(MAX_BATCH, 2 * batch), w.prompt)
        winner = label(g, sw.default_target) if status == "crosses" else label(c, sw.default_target)
        tie = not _beats(tg, tc) if status == "crosses" else not _beats(tc, tg)
    pfirst, prompt, _ = _search(by_prompt, max_prompt)
    pstatus = ("never" if pfirst else "always-slower") if prompt is None else ("crosses" if pfirst else "overtakes")
    x = Crossover(name, vs, label(ref, sw.default_target), status, batch, winner, tie, prompt, pstatus, w.batch,
                  dev, "", sw.metric, MAX_BATCH, max_prompt)
    return replace(x, sentence=f"{name} on {dev} is {_clause(x)}.")


def _clause(x: Crossover) -> str:
    """``faster than BF16 (vllm) up to batch ~N; beyond that, W8A8-INT8 (vllm) is faster`` and the like."""
    what = "per decode step" if x.metric == "decode" else "per request"
    if x.status == "never":
        s = f"faster than {x.comparator} {what} at every batch up to {x.max_batch}"
    elif x.status == "always-slower":
        s = f"not faster than {x.comparator} {what} at any batch up to {x.max_batch}"
    elif x.status == "crosses":
        assert x.batch is not None
        beyond = f"{x.winner} is as fast" if x.tie else f"{x.winner} is faster"
        s = f"faster than {x.comparator} {what} up to batch ~{x.batch - 1}; beyond that, {beyond}"
    else:
        assert x.batch is not None
        s = f"not faster than {x.comparator} {what} below batch ~{x.batch}, and faster from there"
    if x.prompt is not None:
        if x.prompt_status == "crosses":
            s += f" (at batch {x.at_batch}, up to prompts of ~{x.prompt - 1} tokens)"
        else:
            s += f" (at batch {x.at_batch}, from prompts of ~{x.prompt} tokens)"
    return s


def crossover_sentence(xs: Sequence[Crossover]) -> str:
    """One sentence for one candidate's crossovers: ``W4A16 (vllm) on D is faster than ...; and ...``."""
    shown = [x for x in xs if x.status != "none"]
    if not shown:
        return xs[0].sentence if xs else ""
    return f"{shown[0].candidate} on {shown[0].device} is " + "; and ".join(_clause(x) for x in shown) + "."


def _groups(p: Plan) -> tuple[list[Candidate], list[Candidate]]:
    """The 16-bit baselines and the 8-bit native plans to compare with, one per (scheme, runtime, target)."""
    seen: set[tuple[str, str, str]] = set()
    base: list[Candidate] = []
    eight: list[Candidate] = []
    for c in p.candidates:
        k = (c.scheme, c.backend, c.target)
        if k in seen:
            continue
        if c.is_baseline and parse_scheme(c.scheme).weight_bits == 16:
            seen.add(k)
            base.append(c)
        elif is_eight_bit(c):
            seen.add(k)
            eight.append(c)
    if not base and p.baseline is not None:
        base.append(p.baseline)
    return base, eight


def crossovers(p: Plan, candidate: Candidate | None = None, registry: Any = None, *,
               metric: str = "request", comparators: Sequence[Candidate] | None = None,
               vs: str | None = None) -> tuple[Crossover, ...]:
    """The crossovers of ``candidate`` (default: the top plan) against the 16-bit and the 8-bit plans
    of ``p`` (``comparators``/``vs``: against these candidates only, under that name)."""
    from quantmatch.planner.types import PlanInputError

    if metric not in METRICS:
        raise PlanInputError(f"unknown crossover metric {metric!r}; valid: {', '.join(METRICS)}")
    c = candidate or p.top
    if c is None:
        return ()
    if registry is None:
        from quantmatch.registry import Registry

        registry = Registry()
    sw = _Sweep(p, registry, metric)
    return _for(sw, c, comparators, vs)


def _for(sw: _Sweep, c: Candidate, comparators: Sequence[Candidate] | None, vs: str | None) -> tuple[Crossover, ...]:
    if comparators is not None:
        return (_compare(sw, c, [g for g in comparators if g.key != c.key], vs or "given"),)
    base, eight = _groups(sw.plan)
    out = []
    if not c.is_baseline:
        out.append(_compare(sw, c, base, "16-bit"))
    if not is_eight_bit(c):
        out.append(_compare(sw, c, eight, "8-bit"))
    return tuple(out)


def attach_crossovers(p: Plan, registry: Any, top: int = CROSSOVER_TOP) -> Plan:
    """``p`` with :attr:`Candidate.crossover` set on its first ``top`` plans (all one sweep's cache)."""
    if not p.candidates or top <= 0:
        return p
    sw = _Sweep(p, registry, "request")
    cands = list(p.candidates)
    for i, c in enumerate(cands[:top]):
        cands[i] = replace(c, crossover=_for(sw, c, None, None))
    return replace(p, candidates=tuple(cands))


DEFAULT_MODEL = "llama-3.1-8b"
"""The model ``explain`` assumes for the crossover when no ``--model`` is given: a representative 8B dense one."""


def explain_crossovers(method: str | None, scheme: str, backend: str, device: Any, target: str | None = None,
                       model: Any = None, registry: Any = None) -> tuple[str, tuple[Crossover, ...], str]:
    """The crossovers of one combination, as ``explain`` shows them: ``(model assumed, crossovers, why none)``.

    The combination is planned with ``model`` (default :data:`DEFAULT_MODEL`) on ``device`` at the default
    workload (batch 1, prompt 512, gen 256); it is compared with that plan's 16-bit and 8-bit plans. The
    crossovers are empty, with the reason, when the planner does not evaluate the combination (pruned by the
    registry, or not a quantization method) or when it is itself a 16-bit baseline."""
    from quantmatch.planner.engine import _registry, plan

    reg = _registry(registry)
    used = DEFAULT_MODEL if model is None else str(model)
    if method is None:
        return used, (), "no crossover: give a quantization method (the plans are method x scheme x runtime)"
    p = plan(model if model is not None else DEFAULT_MODEL, device, registry=reg)
    want = str(reg.scheme(scheme))
    pool = list(p.candidates) + [r.candidate for r in p.rejections if r.candidate is not None]
    found = [c for c in pool if (c.method or "").lower() == method.lower() and c.scheme == want
             and c.backend == backend and (target is None or c.target == target)]
    if not found:
        return used, (), (f"no crossover: the planner does not evaluate {method} {want} on {backend} for "
                          f"{p.model.name} on {p.device.name} (see the verdict above)")
    c = found[0]
    if c.crossover:
        return used, c.crossover, ""
    return used, crossovers(p, c, reg), ""
