"""Fidelity against the unquantized model: KL divergence, same-top-token rate, flips, perplexity ratio.

The protocol is llama.cpp's ``llama-perplexity --kl-divergence``, on quantmatch's perplexity windows
(:mod:`quantmatch.sdk.evaluate`): the reference model scores the evaluation tokens once and its
next-token distributions are kept (:class:`Reference`); every artifact then scores *the same token ids*
through its runner (:meth:`quantmatch.sdk.runner.Runner.logits`, so any runtime is scored the same way)
and each predicted position gives

- the KL divergence ``KL(P_ref || Q)`` of the artifact's next-token distribution from the reference's;
- whether both put the same token on top (and, with the actual next token as the answer, the
  *flips*: positions where one is right and the other wrong);
- both negative log-likelihoods of the actual next token (perplexity of both, and their ratio).

:func:`summarize` turns the per-token figures into a :class:`Fidelity`: mean KL divergence with a 95%
interval, median, p90, p99 and maximum, the same-top-token percentage with its Wilson 95% interval,
the flips, the perplexity ratio with the interval of its logarithm, and a histogram by decade.

**The reference, stored exactly.** The full reference distributions take ``positions x vocabulary``
floats (3.9 GB for 20,000 positions of SmolLM2's 49,152-way vocabulary). When the reference runner exposes
its output head (:meth:`quantmatch.sdk.runner.Runner.output_head` and
:meth:`~quantmatch.sdk.runner.Runner.final_hidden`: the last hidden state of every position and the
LM head's weight), the reference keeps those instead (20,000 x 576 floats plus the head, 160 MB for
SmolLM2) and recomputes each distribution when it is needed: exact to float32 rounding. The head is
checked against the runner's own logits on the first window; a model whose logits are not a plain linear
function of the last hidden state (a soft cap, a scale) falls back to the compact form.

**The compact reference** (``top_k`` given, or a runner without an output head) keeps, per position,
the ``top_k`` largest log-probabilities with their token ids, the log of the remaining mass, and the
log-probability of the actual next token, as llama.cpp's ``--kl-divergence-base`` file keeps a reduced
form of each distribution. Against it the divergence is computed over ``top_k + 1`` outcomes (the top
tokens and "any other"):

``KL_k = sum_top p_i (log p_i - log q_i) + P_rest (log P_rest - log Q_rest)``

which is exact up to the tail term ``P_rest * KL(P_tail / P_rest || Q_tail / Q_rest) >= 0``: by the
log-sum inequality the compact figure never exceeds the full one, and it is short of it by at most the
divergence within the tail weighted by the reference's tail mass. For a small model with a flat tail
the gap is large (SmolLM2-135M, top 32: 67-71% of the full figure; top 1,024: 94-95%;
``docs/fidelity.md``), which is why the exact form is the default. The same-top-token rate, the flips
and both perplexities are exact in both forms.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantmatch.sdk.errors import InputError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DEFAULT_TOP_K", "HISTOGRAM_EDGES", "Fidelity", "FidelityError", "Reference", "TokenScores",
           "compute_reference", "kl_full", "reference_cache_path", "reference_key", "reference_targets", "score",
           "summarize"]

DEFAULT_TOP_K = 32
"""Log-probabilities the compact reference keeps per position (with the rest's mass) when the runner has
no output head: 20,000 positions take about 5 MB."""

HISTOGRAM_EDGES = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""Upper edges of the per-token KL divergence histogram (nats); a last bin holds everything above."""

_ROWS = 256  # rows converted to float64 at a time: no second full copy of a window's logits
ProgressFn = Callable[[str, int, int], None]


class FidelityError(InputError):
    """A reference and an artifact that cannot be compared (different vocabularies, a stale cache file)."""


# ---- per-row math ------------------------------------------------------------------------------------
def _log_softmax(rows: np.ndarray) -> np.ndarray:
    import numpy as np

    x = rows.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    x -= m
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    return x


def kl_full(ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-row ``KL(softmax(ref) || softmax(q))`` over the full vocabulary, in float64 (for checks)."""
    import numpy as np

    lp, lq = _log_softmax(ref_logits), _log_softmax(logits)
    return np.asarray((np.exp(lp) * (lp - lq)).sum(axis=1))


@dataclass
class TokenScores:
    """Per predicted position: reference and artifact NLL of the actual next token, KL divergence, whether
    the top tokens agree, and whether each top token is the actual next token."""

    nll_ref: np.ndarray
    nll: np.ndarray
    kld: np.ndarray
    same_top: np.ndarray
    ref_right: np.ndarray
    right: np.ndarray


# ---- the reference -------------------------------------------------------------------------------------
@dataclass
class Reference:
    """The reference model's next-token distributions on the evaluation tokens, kept compactly.

    ``ids``: every token scored (windows of ``window`` tokens from position 0, as
    :func:`quantmatch.sdk.evaluate.windows` cuts them); per predicted position (windows in order, each
    window's rows ``0 .. len-2``): ``top_ids``/``top_logp`` (``[n, top_k]``, descending), ``rest_logp``
    (log of the mass outside the top ``top_k``) and ``target_logp`` (log-probability of the actual next
    token). In the exact form ``hidden`` (``[n, d]``, the last hidden state of every position) and
    ``head_weight``/``head_bias`` (the LM head) give every full distribution back; ``top_*`` then hold the
    top token only. ``meta`` says what computed it (model, runtime, compute, text, versions).
    """

    ids: np.ndarray
    window: int
    top_ids: np.ndarray
    top_logp: np.ndarray
    rest_logp: np.ndarray
    target_logp: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    hidden: np.ndarray | None = None
    head_weight: np.ndarray | None = None
    head_bias: np.ndarray | None = None
    _tensors: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def exact(self) -> bool:
        """Whether the full distributions are kept (through the output head)."""
        return self.hidden is not None and self.head_weight is not None

    @property
    def top_k(self) -> int:
        """Log-probabilities kept per position: the whole vocabulary in the exact form."""
        if self.exact:
            assert self.head_weight is not None
            return int(self.head_weight.shape[0])
        return int(self.top_ids.shape[1])

    def log_probs(self, rows: slice) -> np.ndarray:
        """The full reference log-probabilities of ``rows`` (exact form only), float64."""
        assert self.hidden is not None and self.head_weight is not None
        logits = self.hidden[rows] @ self.head_weight.T
        if self.head_bias is not None:
            logits += self.head_bias
        return _log_softmax(logits)

    @property
    def positions(self) -> int:
        return int(self.target_logp.shape[0])

    @property
    def perplexity(self) -> float:
        return math.exp(-float(self.target_logp.astype("float64").mean()))

    def chunks(self) -> list[tuple[int, list[int]]]:
        """``(first row, window ids)`` of every window that predicts something."""
        from quantmatch.sdk.evaluate import windows

        ids = [int(t) for t in self.ids]
        out, row = [], 0
        for s in windows(len(ids), self.window):
            chunk = ids[s: s + self.window]
            out.append((row, chunk))
            row += len(chunk) - 1
        return out

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (a compressed ``.npz``) atomically: a temporary file renamed into place."""
        import numpy as np

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp.npz", dir=p.parent)
        os.close(fd)
        arrays: dict[str, Any] = dict(
            ids=self.ids.astype(np.int32), window=np.int64(self.window), top_ids=self.top_ids.astype(np.int32),
            top_logp=self.top_logp.astype(np.float32), rest_logp=self.rest_logp.astype(np.float32),
            target_logp=self.target_logp.astype(np.float32),
            meta=np.frombuffer(json.dumps(self.meta, default=str).encode(), dtype=np.uint8))
        if self.exact:  # float weights and states hardly compress: stored as they are, fast to read
            arrays.update(hidden=self.hidden, head_weight=self.head_weight)
            if self.head_bias is not None:
                arrays["head_bias"] = self.head_bias
        try:
            (np.savez if self.exact else np.savez_compressed)(tmp, **arrays)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return p

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        """Read a file written by :meth:`save`; :class:`FidelityError` when it is not one."""
        import numpy as np

        try:
            with np.load(Path(path), allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode()) if "meta" in z else {}
                return cls(z["ids"], int(z["window"]), z["top_ids"], z["top_logp"], z["rest_logp"],
                           z["target_logp"], meta, z.get("hidden"), z.get("head_weight"), z.get("head_bias"))
        except (OSError, KeyError, ValueError) as e:
            raise FidelityError(f"{path}: not a quantmatch reference file ({type(e).__name__}: {e}); delete it "
                                "and it is computed again") from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def reference_key(**parts: Any) -> str:
    """A stable key for a reference: the hash of what determines it (model fingerprint, runtime, compute
    dtype, library versions, text hash, tokens, window, ``top_k``)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def reference_cache_path(key: str) -> Path:
    """``<cache>/fidelity/reference-<key>.npz`` (``$QUANTMATCH_CACHE_DIR`` or the user cache dir)."""
    from quantmatch.sdk.models import cache_root

    return cache_root() / "fidelity" / f"reference-{key}.npz"


def compute_reference(scorer: Any, ids: Sequence[int], window: int, top_k: int | None = None,
                      meta: dict[str, Any] | None = None, progress: ProgressFn | None = None) -> Reference:
    """Score ``ids`` with ``scorer`` (anything with the runner contract's ``logits``) and keep the reference:
    exact when ``top_k`` is ``None`` and the scorer exposes its output head (``output_head`` and
    ``final_hidden``), else compact with ``top_k`` (default :data:`DEFAULT_TOP_K`) log-probabilities per
    position (see the module docstring)."""
    from quantmatch.sdk.evaluate import windows

    if top_k is not None and top_k < 1:
        raise InputError("top_k must be at least 1")
    starts = windows(len(ids), window)
    if not starts:
        raise InputError("need at least 2 tokens to compare distributions")
    info = dict(meta or {})
    if top_k is None:
        head = _head(scorer, [int(t) for t in ids[starts[0]: starts[0] + window]])
        if head is not None:
            return _exact_reference(scorer, ids, window, starts, head, info, progress)
        info["exact_unavailable"] = getattr(scorer, "_head_note", "the runner exposes no output head")
    return _compact_reference(scorer, ids, window, starts, top_k or DEFAULT_TOP_K, info, progress)


def _head(scorer: Any, first: list[int]) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The scorer's output head when its logits are exactly ``hidden @ weight.T + bias`` (checked on the first
    window), else ``None`` (with the reason in ``scorer._head_note``)."""
    import numpy as np

    get = getattr(scorer, "output_head", None)
    head = get() if get is not None else None
    if head is None:
        return None
    weight, bias = head
    hidden = scorer.final_hidden(first)
    direct = scorer.logits(first)
    rebuilt = hidden @ weight.T + (bias if bias is not None else 0.0)
    scale = float(np.abs(direct).max()) or 1.0
    if rebuilt.shape != direct.shape or float(np.abs(rebuilt - direct).max()) > 1e-4 * scale:
        scorer._head_note = "the model's logits are not a plain linear function of its last hidden state"
        return None
    return weight, bias


def _exact_reference(scorer: Any, ids: Sequence[int], window: int, starts: list[int],
                     head: tuple[np.ndarray, np.ndarray | None], meta: dict[str, Any],
                     progress: ProgressFn | None) -> Reference:
    import numpy as np

    weight, bias = head
    hidden, tops, topl, rest, target = [], [], [], [], []
    for i, s in enumerate(starts):
        if progress:
            progress("reference", i, len(starts))
        chunk = [int(t) for t in ids[s: s + window]]
        h = np.asarray(scorer.final_hidden(chunk), dtype=np.float32)[:-1]
        tgt = np.asarray(chunk[1:])
        hidden.append(h)
        for a in range(0, len(tgt), _ROWS):
            logits = h[a: a + _ROWS] @ weight.T
            if bias is not None:
                logits += bias
            lp = _log_softmax(logits)
            top = lp.argmax(axis=1)
            best = lp[np.arange(len(lp)), top]
            tops.append(top[:, None].astype(np.int32))
            topl.append(best[:, None].astype(np.float32))
            with np.errstate(divide="ignore"):
                rest.append(np.log(np.clip(-np.expm1(best), 0.0, None)).astype(np.float32))
            target.append(lp[np.arange(len(lp)), tgt[a: a + len(lp)]].astype(np.float32))
    if progress:
        progress("reference", len(starts), len(starts))
    return Reference(np.asarray(list(ids), dtype=np.int32), window, np.concatenate(tops), np.concatenate(topl),
                     np.concatenate(rest), np.concatenate(target), dict(meta, form="exact"),
                     np.concatenate(hidden), np.asarray(weight, dtype=np.float32),
                     None if bias is None else np.asarray(bias, dtype=np.float32))


def _compact_reference(scorer: Any, ids: Sequence[int], window: int, starts: list[int], top_k: int,
                       meta: dict[str, Any], progress: ProgressFn | None) -> Reference:
    import numpy as np

    tops, topl, rest, target = [], [], [], []
    for i, s in enumerate(starts):
        if progress:
            progress("reference", i, len(starts))
        chunk = [int(t) for t in ids[s: s + window]]
        logits = scorer.logits(chunk)
        tgt = np.asarray(chunk[1:])
        for a in range(0, len(tgt), _ROWS):
            lp = _log_softmax(logits[a: min(a + _ROWS, len(tgt))])
            k = min(top_k, lp.shape[1])
            part = np.argpartition(-lp, k - 1, axis=1)[:, :k]
            vals = np.take_along_axis(lp, part, axis=1)
            order = np.argsort(-vals, axis=1, kind="stable")
            part, vals = np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)
            mass = np.exp(vals).sum(axis=1)
            tops.append(part.astype(np.int32))
            topl.append(vals.astype(np.float32))
            with np.errstate(divide="ignore"):
                rest.append(np.log(np.clip(1.0 - mass, 0.0, None)).astype(np.float32))
            target.append(lp[np.arange(len(lp)), tgt[a: a + len(lp)]].astype(np.float32))
    if progress:
        progress("reference", len(starts), len(starts))
    return Reference(np.asarray(list(ids), dtype=np.int32), window, np.concatenate(tops), np.concatenate(topl),
                     np.concatenate(rest), np.concatenate(target), dict(meta, form="top-k"))


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _exact_rows_torch(torch: Any, logits: np.ndarray, ref: Reference, rows: slice,
                      targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """The exact comparison in torch (float32, every core): the reference's distributions rebuilt from its
    hidden states, both log-softmaxes and the divergence, several times faster than numpy's single thread.
    float32 is enough: both log-probabilities are centred on their maximum, so the terms that carry the
    mass are computed with a relative error near 1e-7."""
    assert ref.hidden is not None
    x = torch.from_numpy(ref.hidden[rows])
    w = ref._tensors.get("weight")
    if w is None:
        w = ref._tensors["weight"] = torch.from_numpy(ref.head_weight)
    lp = x @ w.T
    if ref.head_bias is not None:
        lp += torch.from_numpy(ref.head_bias)
    lp = torch.log_softmax(lp, dim=1)
    lq = torch.log_softmax(torch.from_numpy(logits).float(), dim=1)
    kld = (lp.exp() * (lp - lq)).sum(dim=1).clamp_min(0.0)
    argmax = lq.argmax(dim=1).numpy()
    tgt = torch.from_numpy(targets.astype("int64"))
    nll = -lq.gather(1, tgt[:, None])[:, 0]
    return (kld.double().numpy(), argmax == ref.top_ids[rows][:, 0], nll.double().numpy(), argmax == targets)


def _compare_rows(lq: np.ndarray, ref: Reference, rows: slice, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """KL divergence, same top, NLL and right-answer of a slice of the artifact's log-probabilities."""
    import numpy as np

    if ref.exact:
        lp = ref.log_probs(rows)
        kld = np.maximum((np.exp(lp) * (lp - lq)).sum(axis=1), 0.0)
        argmax = lq.argmax(axis=1)
        return kld, argmax == ref.top_ids[rows][:, 0], -lq[np.arange(len(lq)), targets], argmax == targets
    top_ids, top_lp = ref.top_ids[rows], ref.top_logp[rows].astype(np.float64)
    rest_lp = ref.rest_logp[rows].astype(np.float64)
    q_top = np.take_along_axis(lq, top_ids.astype(np.int64), axis=1)
    p_top = np.exp(top_lp)
    kld = (p_top * (top_lp - q_top)).sum(axis=1)
    q_rest = np.clip(1.0 - np.exp(q_top).sum(axis=1), 1e-300, None)
    p_rest = np.exp(rest_lp)
    with np.errstate(invalid="ignore", divide="ignore"):
        tail = np.where(p_rest > 0, p_rest * (rest_lp - np.log(q_rest)), 0.0)
    kld = np.maximum(kld + tail, 0.0)  # rounding can make a tiny divergence negative
    argmax = lq.argmax(axis=1)
    same = argmax == top_ids[:, 0]
    nll = -lq[np.arange(len(lq)), targets]
    return kld, same, nll, argmax == targets


def score(scorer: Any, reference: Reference, progress: ProgressFn | None = None) -> TokenScores:
    """Score the reference's tokens with ``scorer`` (the runner contract's ``logits``) against it.

    Raises :class:`FidelityError` when the artifact's vocabulary is smaller than a token id the reference
    uses (a model of a different family)."""
    import numpy as np

    chunks = reference.chunks()
    n = reference.positions
    kld, same, nll, right = (np.empty(n), np.empty(n, bool), np.empty(n), np.empty(n, bool))
    for i, (row, chunk) in enumerate(chunks):
        if progress:
            progress("evaluate", i, len(chunks))
        logits = scorer.logits(chunk)
        if logits.shape[1] != reference.top_k if reference.exact else \
                logits.shape[1] <= int(reference.top_ids[row: row + len(chunk) - 1].max(initial=0)):
            raise FidelityError(f"the artifact's vocabulary ({logits.shape[1]} tokens) does not hold the "
                                "reference's token ids: compare artifacts of the reference model only")
        tgt = np.asarray(chunk[1:])
        torch = _torch() if reference.exact else None
        for a in range(0, len(tgt), _ROWS):
            b = min(a + _ROWS, len(tgt))
            if torch is not None:
                with torch.no_grad():
                    out = _exact_rows_torch(torch, logits[a:b], reference, slice(row + a, row + b), tgt[a:b])
            else:
                out = _compare_rows(_log_softmax(logits[a:b]), reference, slice(row + a, row + b), tgt[a:b])
            kld[row + a: row + b], same[row + a: row + b], nll[row + a: row + b], right[row + a: row + b] = out
    if progress:
        progress("evaluate", len(chunks), len(chunks))
    ref_lp = reference.target_logp.astype(np.float64)
    ref_right = reference.top_ids[:, 0] == reference_targets(reference)
    return TokenScores(-ref_lp, nll, kld, same, ref_right, right)


def reference_targets(reference: Reference) -> np.ndarray:
    """The actual next token of every predicted position, in row order."""
    import numpy as np

    return np.concatenate([np.asarray(chunk[1:]) for _, chunk in reference.chunks()])


# ---- the summary ------------------------------------------------------------------------------------
def _wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (sound near 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Fidelity:
    """How far an artifact's next-token distributions are from the reference's, on ``tokens`` positions.

    KL divergence in nats (``kld_ci95``: half-width of the normal 95% interval of the mean); ``top1_pct``
    the share of positions whose most likely token is the reference's, with its Wilson 95% interval
    (``top1_low``, ``top1_high``); ``flips_lost``/``flips_gained``: positions where the reference's top
    token is the actual next token and the artifact's is not, and the reverse; ``ppl_ratio`` is
    ``ppl / ref_ppl`` and ``ln_ppl_ratio_ci95`` the half-width of the interval of its logarithm (the mean
    per-token NLL difference); ``histogram`` counts positions per KL decade (:data:`HISTOGRAM_EDGES`).
    """

    tokens: int
    kld_mean: float
    kld_ci95: float
    kld_median: float
    kld_p90: float
    kld_p99: float
    kld_max: float
    top1_pct: float
    top1_low: float
    top1_high: float
    flips_lost: int
    flips_gained: int
    ppl: float
    ref_ppl: float
    ppl_ratio: float
    ln_ppl_ratio_ci95: float
    histogram: tuple[int, ...]
    top_k: int = 0

    @property
    def flips(self) -> int:
        return self.flips_lost + self.flips_gained

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 8 if k.startswith("kld") else 6)
        d["histogram"] = {"edges": list(HISTOGRAM_EDGES), "counts": list(self.histogram)}
        d["flips"] = self.flips
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fidelity:
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in data.items() if k in known}
        hist = d.get("histogram")
        d["histogram"] = tuple(hist["counts"] if isinstance(hist, dict) else hist or ())
        return cls(**d)

    def line(self) -> str:
        """One line for evidence and notes."""
        return (f"KLD {self.kld_mean:.4f} (p99 {self.kld_p99:.3f}), same top token {self.top1_pct:.1f}%, "
                f"PPL ratio {self.ppl_ratio:.4f}")


def summarize(s: TokenScores, top_k: int = 0) -> Fidelity:
    """The :class:`Fidelity` of per-token scores (percentiles by linear interpolation, as numpy's)."""
    import numpy as np

    n = int(s.kld.shape[0])
    if n == 0:
        raise InputError("no positions to summarize")
    kld = s.kld.astype(np.float64)
    sd = float(kld.std(ddof=1)) if n > 1 else 0.0
    diff = s.nll - s.nll_ref
    dsd = float(diff.std(ddof=1)) if n > 1 else 0.0
    hits = int(s.same_top.sum())
    lo, hi = _wilson(hits, n)
    p50, p90, p99 = (float(v) for v in np.percentile(kld, [50, 90, 99]))
    bins = np.searchsorted(np.asarray(HISTOGRAM_EDGES), kld, side="left")
    hist = np.bincount(bins, minlength=len(HISTOGRAM_EDGES) + 1)
    ppl, ref_ppl = math.exp(float(s.nll.mean())), math.exp(float(s.nll_ref.mean()))
    return Fidelity(
        tokens=n, kld_mean=float(kld.mean()), kld_ci95=1.959964 * sd / math.sqrt(n), kld_median=p50,
        kld_p90=p90, kld_p99=p99, kld_max=float(kld.max()), top1_pct=100.0 * hits / n, top1_low=100.0 * lo,
        top1_high=100.0 * hi, flips_lost=int((s.ref_right & ~s.right).sum()),
        flips_gained=int((~s.ref_right & s.right).sum()), ppl=ppl, ref_ppl=ref_ppl, ppl_ratio=ppl / ref_ppl,
        ln_ppl_ratio_ci95=1.959964 * dsd / math.sqrt(n), histogram=tuple(int(c) for c in hist), top_k=top_k)

