"""Mixed precision under a memory budget: one format per unit, least predicted fidelity loss that fits.

Pure Python. The input is a sensitivity table (:class:`~quantmatch.sdk.sensitivity.SensitivityTable`:
per unit and format, the exact bytes and the KL increase measured with that unit alone quantized, or a
prior per tensor kind where nothing can be measured); the output a :class:`MixedSolution` and, with the
plan's context, a :class:`~quantmatch.sdk.recipe.Recipe`.

The search is a multiple-choice knapsack: choose one option per unit, minimize the summed KL increase
subject to summed bytes <= budget. :func:`solve`:

1. per unit, drop dominated options (more bytes and no less KL) and keep the lower convex hull of
   (bytes, KL);
2. start every unit at its smallest option; take hull upgrades in order of KL saved per byte, largest
   first, while they fit (the classic greedy of the LP relaxation, optimal up to the one upgrade that
   did not fit);
3. fix-up: with the bytes left, repeatedly apply the single-unit change (any option, hull or not) that
   saves the most KL and fits, then the best pair exchange (one unit up, another down) that saves KL and
   fits, until none does.

Deterministic: ties break by unit name and format. The predicted loss is the sum of the per-unit
increases (additive), which ``quantmatch quantize --recipe`` compares with the measured figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PRIOR_PRECISION", "MixedOption", "MixedPlan", "MixedSolution", "UniformRow", "budget_bytes_for", "hull",
           "plan_mixed", "solve", "uniform_point"]


@dataclass(frozen=True)
class MixedOption:
    """One format for one unit: its bytes and the KL divergence it adds (nats/token)."""

    scheme: str
    nbytes: int
    kld: float


@dataclass(frozen=True)
class MixedSolution:
    """The chosen option per unit, with the totals (``weight_bytes`` excludes what no unit holds)."""

    choice: Mapping[str, MixedOption]
    weight_bytes: int
    kld: float
    budget_bytes: int

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.choice.values():
            out[o.scheme] = out.get(o.scheme, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


PRIOR_PRECISION = (
    ("token_embd", "int8"), ("output.", "int8"), ("attn_", "int8"), ("ffn_", "int4"),
)
"""The prior where no sensitivity can be measured (a built-in shape without weights): the seeds'
layer-wise advice, embeddings/output and norms high precision, attention 8-bit, MLP 4-bit (norms stay
F32 in GGUF files anyway). Matched by GGUF tensor-name prefix/substring, first match wins."""


def _key(o: MixedOption) -> tuple[int, float, str]:
    return (o.nbytes, o.kld, o.scheme)


def hull(options: Sequence[MixedOption]) -> list[MixedOption]:
    """The lower convex hull of ``(bytes, kld)``, smallest first, dominated options removed."""
    pts: list[MixedOption] = []
    for o in sorted(options, key=_key):
        if pts and o.kld >= pts[-1].kld:
            continue  # no less loss for at least as many bytes
        if pts and o.nbytes == pts[-1].nbytes:
            pts.pop()
        while len(pts) >= 2:
            a, b = pts[-2], pts[-1]
            # b lies on or above the segment a-o: not on the lower hull
            if (b.kld - a.kld) * (o.nbytes - a.nbytes) >= (o.kld - a.kld) * (b.nbytes - a.nbytes):
                pts.pop()
            else:
                break
        pts.append(o)
    return pts


def solve(options: Mapping[str, Sequence[MixedOption]], budget_bytes: int) -> MixedSolution | None:
    """The least-KL choice of one option per unit within ``budget_bytes`` (see the module docstring);
    ``None`` when even the smallest option of every unit does not fit."""
    units = sorted(options)
    if any(not options[u] for u in units):
        raise ValueError("every unit needs at least one option")
    hulls = {u: hull(options[u]) for u in units}
    pos = {u: 0 for u in units}
    used = sum(hulls[u][0].nbytes for u in units)
    if used > budget_bytes:
        return None
    upgrades: list[tuple[float, str, int]] = []
    for u in units:
        h = hulls[u]
        for i in range(1, len(h)):
            slope = (h[i - 1].kld - h[i].kld) / max(h[i].nbytes - h[i - 1].nbytes, 1)
            upgrades.append((-slope, u, i))
    upgrades.sort()
    blocked: set[str] = set()
    for _neg, u, i in upgrades:
        if u in blocked or pos[u] != i - 1:
            continue
        delta = hulls[u][i].nbytes - hulls[u][i - 1].nbytes
        if used + delta <= budget_bytes:
            pos[u] = i
            used += delta
        else:
            blocked.add(u)
    choice = {u: hulls[u][pos[u]] for u in units}
    _fix_up(options, choice, budget_bytes)
    return MixedSolution(choice, sum(o.nbytes for o in choice.values()), sum(o.kld for o in choice.values()),
                         budget_bytes)


def _fix_up(options: Mapping[str, Sequence[MixedOption]], choice: dict[str, MixedOption], budget: int) -> None:
    """Improve ``choice`` in place: best single changes, then best pair exchanges, while one saves KL."""
    units = sorted(choice)
    cands = {u: sorted(options[u], key=_key) for u in units}
    for _ in range(10 * len(units) + 10):
        used = sum(o.nbytes for o in choice.values())
        best: tuple[float, str, MixedOption] | None = None
        for u in units:
            cur = choice[u]
            for o in cands[u]:
                gain = cur.kld - o.kld
                if gain > 1e-15 and used - cur.nbytes + o.nbytes <= budget and (best is None or gain > best[0]):
                    best = (gain, u, o)
        if best is not None:
            choice[best[1]] = best[2]
            continue
        pair = _best_pair(cands, choice, budget - used)
        if pair is None:
            return
        (u, o_up), (v, o_down) = pair
        choice[u], choice[v] = o_up, o_down


def _best_pair(cands: Mapping[str, list[MixedOption]], choice: Mapping[str, MixedOption],
               room: int) -> tuple[tuple[str, MixedOption], tuple[str, MixedOption]] | None:
    """The exchange (unit ``u`` to a larger option, unit ``v`` to a smaller one) that saves the most KL
    within ``room`` spare bytes; ``None`` when none saves anything."""
    ups = []  # (bytes added, kl saved, unit, option): for each unit, best saving per added-byte bucket
    downs = []  # (bytes freed, kl added, unit, option)
    for u, opts in cands.items():
        cur = choice[u]
        for o in opts:
            if o.nbytes > cur.nbytes and o.kld < cur.kld:
                ups.append((o.nbytes - cur.nbytes, cur.kld - o.kld, u, o))
            elif o.nbytes < cur.nbytes:
                downs.append((cur.nbytes - o.nbytes, o.kld - cur.kld, u, o))
    downs.sort(key=lambda d: (d[1], -d[0], d[2], d[3].scheme))
    best: tuple[float, tuple[str, MixedOption], tuple[str, MixedOption]] | None = None
    for add, saved, u, o in sorted(ups, key=lambda x: (-x[1], x[2], x[3].scheme)):
        need = add - room
        for freed, cost, v, od in downs:
            if v == u or freed < need:
                continue
            net = saved - cost
            if net > 1e-15 and (best is None or net > best[0]):
                best = (net, (u, o), (v, od))
            break  # downs are sorted by cost: the first that frees enough is this up's best partner
    return None if best is None else (best[1], best[2])


def uniform_point(options: Mapping[str, Sequence[MixedOption]], per_unit: Mapping[str, str]) -> tuple[int, float]:
    """``(bytes, additive kld)`` of a given assignment (a uniform file's per-tensor types, read from it)."""
    total_b, total_k = 0, 0.0
    for u, scheme in per_unit.items():
        o = next(o for o in options[u] if o.scheme == scheme)
        total_b += o.nbytes
        total_k += o.kld
    return total_b, total_k


def budget_bytes_for(capacity_bytes: float, kv_bytes: float, activation_bytes: float, runtime_bytes: float,
                     other_bytes: int) -> int:
    """Bytes the units may take: the capacity less the KV cache at the context, the activation workspace, the
    runtime's own memory (its headroom) and what no unit holds (header, norms)."""
    return int(capacity_bytes - kv_bytes - activation_bytes - runtime_bytes - other_bytes)


# ---- the plan: formats from the registry, budget from the memory model, sensitivity from the SDK ----------------

@dataclass(frozen=True)
class UniformRow:
    """A uniform scheme of the same method and runtime, priced by the same table: its artifact bytes
    (``None`` when not measured), the additive predicted KL, and whether it fits the budget."""

    scheme: str
    file_bytes: int | None
    predicted_kld: float | None
    fits: bool | None


@dataclass(frozen=True)
class MixedPlan:
    """What ``plan --mixed`` found: the recipe, the solution, the budget's parts and the uniform schemes."""

    recipe: Any
    solution: MixedSolution
    formats: tuple[str, ...]
    capacity_bytes: int
    kv_bytes: int
    activation_bytes: int
    runtime_bytes: int
    other_bytes: int
    uniform: tuple[UniformRow, ...]
    basis: str
    sensitivity_seconds: float
    notes: tuple[str, ...] = ()

    @property
    def file_bytes(self) -> int:
        return self.other_bytes + self.solution.weight_bytes

    def best_uniform(self) -> UniformRow | None:
        """The uniform scheme with the least predicted KL among those that fit."""
        fit = [u for u in self.uniform if u.fits and u.predicted_kld is not None]
        return min(fit, key=lambda u: (u.predicted_kld, u.scheme)) if fit else None

    def to_dict(self) -> dict[str, Any]:
        best = self.best_uniform()
        return {"recipe": self.recipe.to_dict(), "formats": list(self.formats), "units": len(self.solution.choice),
                "counts": self.solution.counts(), "predicted_file_bytes": self.file_bytes,
                "predicted_kld": self.solution.kld, "basis": self.basis,
                "budget": {"capacity_bytes": self.capacity_bytes, "kv_cache_bytes": self.kv_bytes,
                           "activation_bytes": self.activation_bytes, "runtime_bytes": self.runtime_bytes,
                           "other_bytes": self.other_bytes, "units_bytes": self.solution.budget_bytes},
                "uniform": [{"scheme": u.scheme, "file_bytes": u.file_bytes, "predicted_kld": u.predicted_kld,
                             "fits": u.fits} for u in self.uniform],
                "best_uniform": None if best is None else best.scheme,
                "sensitivity_seconds": self.sensitivity_seconds, "notes": list(self.notes)}


_PRIOR_BYTES_PER_WEIGHT = {"gguf-q8_0": 34 / 32, "gguf-q4_k": 144 / 256, "gguf-q4_0": 18 / 32}
"""ggml block sizes (ggml-org/llama.cpp ggml/src/ggml-common.h: block_q8_0 34 bytes per 32 values,
block_q4_K 144 per 256, block_q4_0 18 per 32), for sizing a prior recipe without a file."""
_PRIOR_FORMAT = {"int8": "gguf-q8_0", "int4": "gguf-q4_k"}


def _prior_options(info: Any) -> dict[str, list[MixedOption]]:
    """A single option per linear layer from :data:`PRIOR_PRECISION` (HF module names, which the GGUF
    method maps to its tensor names); the KL is unknown (0)."""
    names = {"embed_tokens": "token_embd", "lm_head": "output.", "self_attn": "attn_", "mlp": "ffn_"}
    out: dict[str, list[MixedOption]] = {}
    embed = int(info.vocab_size * info.hidden_size * _PRIOR_BYTES_PER_WEIGHT["gguf-q8_0"])
    out["model.embed_tokens"] = [MixedOption("gguf-q8_0", embed, 0.0)]
    for lin in info.linear_layers():
        if lin.name == "lm_head" and info.tie_word_embeddings:
            continue  # the embedding is the head
        kind = next((g for h, g in names.items() if h in lin.name), "ffn_")
        precision = next((p for prefix, p in PRIOR_PRECISION if prefix == kind), "int4")
        fmt = _PRIOR_FORMAT[precision]
        if fmt == "gguf-q4_k" and lin.in_features % 256:
            fmt = "gguf-q4_0"
        nbytes = int(lin.in_features * lin.out_features * _PRIOR_BYTES_PER_WEIGHT[fmt])
        out[lin.name] = [MixedOption(fmt, nbytes, 0.0)]
    return out


def plan_mixed(plan: Any, *, backend: str | None = None, registry: Any = None, tokens: int | None = None,
               threads: int | None = None, progress: Any = None) -> MixedPlan:
    """A per-unit mix for ``plan``'s model, device, context and memory budget (:class:`MixedPlan`).

    The method is one whose plugin mixes formats (``Quantizer.mixes``); the runtime ``backend`` (default:
    the one of that method's best-ranked plan); the formats are that method's quantized schemes the
    registry says the runtime runs on the device (native or weight-only). The units' budget is the memory
    budget (or the device's memory) less the KV cache at the plan's context, the activation workspace and
    the runtime's own memory (from the plan's memory model) and what no unit holds. A model with weights
    is measured (:func:`quantmatch.sdk.sensitivity.measure_sensitivity`, imports torch, cached); a
    built-in shape gets :data:`PRIOR_PRECISION`. Raises ``PlanInputError`` when nothing can be mixed.
    """
    from quantmatch.planner.hardware import GIB
    from quantmatch.planner.types import PlanInputError
    from quantmatch.sdk.recipe import Recipe

    reg = registry
    if reg is None:
        from quantmatch.registry import Registry

        reg = Registry()
    mixers = [e.name for e in reg.methods() if getattr(e.obj, "mixes", False)]
    pool = [*plan.candidates, *(r.candidate for r in plan.rejections if r.candidate is not None)]
    pool = [c for c in pool if c.method in mixers and (backend is None or c.backend == backend.strip().lower())]
    if not pool:
        valid = sorted({r.backend for r in plan.rejections if r.method in mixers}
                       | {c.backend for c in plan.candidates if c.method in mixers})
        raise PlanInputError(
            f"--mixed: no plan of a method that mixes formats per tensor ({', '.join(mixers) or 'none installed'})"
            + (f" runs on {backend}" if backend else "") + f" on {plan.device.profile.id}"
            + (f"; valid --backend: {', '.join(valid)}" if valid else ""))
    pool.sort(key=lambda c: (c.rank or 10**9, c.method or "", c.backend, c.scheme))
    top = pool[0]
    method, be, target = top.method, top.backend, top.target
    q = reg.method(method)
    info = plan.model.info
    formats = []
    for s in q.schemes:
        if q.not_produced(s):
            continue
        if reg.verdict(method, s, be, plan.device.profile, target, model=info).runnable:
            formats.append(s)
    if not formats:
        raise PlanInputError(f"--mixed: {be} runs none of {method}'s formats on {plan.device.profile.id}")
    mem = top.memory
    capacity_gib = plan.memory_budget_gib if plan.memory_budget_gib is not None else mem.capacity_gib
    if capacity_gib is None:
        raise PlanInputError("--mixed needs a budget: pass --memory-budget (e.g. 8GB) or a device with known memory")
    capacity = int(capacity_gib * GIB)
    kv, acts, rt = int(mem.kv_cache_gib * GIB), int(mem.activations_gib * GIB), int(mem.runtime_gib * GIB)
    notes: list[str] = []
    source = plan.model
    if getattr(source, "no_weights", "") or source.kind in ("builtin", "config"):
        options = _prior_options(info)
        other = 0
        basis, seconds, sens = "prior", 0.0, {}
        layouts: dict[str, dict[str, str]] = {}
        files: dict[str, int] = {}
        notes.append(f"{source.spec} has no weights here: the formats follow the prior (embeddings/output and "
                     "attention 8-bit, MLP 4-bit; norms stay 32-bit), not a measurement; run plan --mixed on the "
                     "model's directory to measure each tensor")
    else:
        from quantmatch.sdk.sensitivity import DEFAULT_SENSITIVITY_TOKENS, measure_sensitivity

        table = measure_sensitivity(source, q(), formats, tokens=tokens or DEFAULT_SENSITIVITY_TOKENS,
                                    threads=threads, progress=progress)
        options = {}
        for e in table.entries:
            options.setdefault(e.unit, []).append(MixedOption(e.scheme, e.nbytes, e.kld))
        other = table.other_bytes
        basis, seconds = "measured sensitivity, additive", table.seconds
        sens = {"tokens": table.tokens, "text": table.text, "cache_key": table.cache_key}
        layouts, files = table.layouts, table.files
    budget = budget_bytes_for(capacity, kv, acts, rt, other)
    solution = solve(options, budget)
    if solution is None:
        smallest = sum(min(o.nbytes for o in opts) for opts in options.values()) + other
        raise PlanInputError(f"--mixed: even the smallest formats take {smallest / 1e9:.2f} GB of weights, over the "
                             f"{budget / 1e9:.2f} GB left for them (budget {capacity / 1e9:.2f} GB less KV cache, "
                             "workspace and runtime); raise --memory-budget or lower --context")
    uniform = []
    for s in formats:
        lay = layouts.get(s)
        if lay and all(u in options for u in lay):
            b, k = uniform_point(options, lay)
            fb = files.get(s, b + other)
            uniform.append(UniformRow(s, fb, k, fb - other <= budget))
        else:
            uniform.append(UniformRow(s, None, None, None))
    counts = solution.counts()
    best = min((u for u in uniform if u.fits and u.predicted_kld is not None),
               key=lambda u: (u.predicted_kld or 0.0, u.scheme), default=None)
    base = best.scheme if best is not None else max(counts, key=lambda f: counts[f])
    try:
        from importlib.metadata import version

        made_by = f"quantmatch {version('quantmatch')}"
    except Exception:
        made_by = "quantmatch"
    kv_name = top.kv.format if getattr(top, "kv", None) is not None and hasattr(top.kv, "format") else "fp16"
    recipe = Recipe(model=source.spec, method=method, backend=be, device=plan.device.profile.id, base_scheme=base,
                    assignments={u: o.scheme for u, o in sorted(solution.choice.items())},
                    predicted_weight_bytes=other + solution.weight_bytes, predicted_kld=solution.kld, basis=basis,
                    budget_bytes=capacity, context=int(plan.workload.ctx), kv=str(kv_name), sensitivity=sens,
                    created_by=made_by)
    return MixedPlan(recipe, solution, tuple(formats), capacity, kv, acts, rt, other, tuple(uniform), basis,
                     seconds, tuple(notes))
