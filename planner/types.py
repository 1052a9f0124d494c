"""The planner's inputs: the workload, the quality tolerance and the preference, validated."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from quantmatch.sdk.errors import InputError

if TYPE_CHECKING:
    from quantmatch.planner.quality import QualityEstimate

__all__ = ["PREFERENCES", "TOLERANCE_KLD", "TOLERANCE_PRESETS", "PlanInputError", "Tolerance", "Workload",
           "parse_budget"]

PREFERENCES = ("fastest", "smallest", "most-accurate")
"""How to rank the plans that fit and meet the tolerance: by predicted request throughput, by memory,
or by expected quality loss."""

TOLERANCE_PRESETS: dict[str, tuple[float, str]] = {
    "chat": (3.0, "chat (2-3%)"),
    "code": (1.0, "code (<1%)"),
    "reasoning": (0.5, "reasoning (<0.5%)"),
}

TOLERANCE_KLD: dict[str, float] = {"chat": 0.04, "code": 0.01, "reasoning": 0.005}
"""The largest mean KL divergence (nats per token, against the unquantized model) each task class accepts.

Set from llama.cpp's LLaMA 3 8b Scoreboard (tools/perplexity/README.md, revision f364eb6f: mean KLD vs
FP16 at Llama-3-8B), one class per rung of its ladder:

- ``reasoning`` 0.005, Q8_0-class: a long chain of generated steps compounds every per-token change,
  so only the near-lossless rung passes. Q8_0 (0.0014 at 8B, 0.0041 at the x3 size factor of the
  smallest models) is in; Q6_K (0.0055) is out at 8B and below.
- ``code`` 0.01, Q6_K-class: one wrong identifier breaks a program, so a few flipped top tokens in a
  hundred already matter. Q6_K (0.0055) is in at 8B; Q5_K_M (0.0108) is out.
- ``chat`` 0.04, Q4_K_M-class: fluent text survives small changes of the distribution. Q4_K_M
  (0.031) and Q5_K_M (0.011) are in at 8B; Q4_K_S (0.043) and the legacy Q4_0/Q4_1 (0.072) are out,
  as the 3% perplexity bound also has them.

Through :func:`quantmatch.planner.quality.kld_from_ppl` the bounds correspond to perplexity changes of
about 3.6% (chat), 0.7% (code) and 0.3% (reasoning): the KLD bound is the tighter of the two for code
and reasoning, the perplexity bound for chat.
"""


class PlanInputError(InputError):
    """Bad planner input (exit code 2 on the command line); the message names the valid choices."""


@dataclass(frozen=True)
class Workload:
    """What the model serves: ``batch`` concurrent sequences, ``prompt`` tokens in, ``gen`` tokens out,
    and a KV cache of ``context`` tokens per sequence (default ``prompt + gen``)."""

    batch: int = 1
    prompt: int = 512
    gen: int = 256
    context: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch", "prompt", "gen"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise PlanInputError(f"--{name} must be a positive integer, got {v!r}")
        if self.context is not None and (not isinstance(self.context, int) or self.context < 1):
            raise PlanInputError(f"--context must be a positive integer, got {self.context!r}")
        if self.context is not None and self.context < self.prompt + self.gen:
            raise PlanInputError(
                f"--context {self.context} is shorter than --prompt {self.prompt} + --gen {self.gen}; "
                f"use --context {self.prompt + self.gen} or more, or shorten the prompt/generation")

    @property
    def ctx(self) -> int:
        """KV-cache length per sequence."""
        return self.context if self.context is not None else self.prompt + self.gen

    @property
    def mean_decode_context(self) -> int:
        """Average context position of a generated token."""
        return self.prompt + self.gen // 2

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "prompt": self.prompt, "gen": self.gen, "context": self.ctx}


@dataclass(frozen=True)
class Tolerance:
    """The quality a plan must keep: the largest perplexity increase in percent (``pct``), and optionally
    the largest mean KL divergence to the unquantized model (``max_kld``, nats per token) and the smallest
    share of positions with the same most likely next token (``min_top1``, percent).

    A task class (``chat``, ``code``, ``reasoning``) sets ``pct`` and a default ``max_kld``
    (:data:`TOLERANCE_KLD`); a bare percentage sets ``pct`` only. Explicit ``max_kld``/``min_top1``
    replace the class's default for that metric (``max_kld_from`` says where the KLD bound came from:
    the class's name or ``--max-kld``). A plan is within tolerance when its expected perplexity
    change, KLD and same-top-token share all meet the bounds that are set (:meth:`failures`).
    """

    pct: float
    label: str
    max_kld: float | None = None
    min_top1: float | None = None
    max_kld_from: str = ""

    @classmethod
    def parse(cls, value: str | float | Tolerance | None, max_kld: str | float | None = None,
              min_top1: str | float | None = None) -> Tolerance:
        """``chat``, ``code``, ``reasoning``, ``2.5``, ``2.5%``; ``None`` means ``chat``. ``max_kld``: a
        positive number of nats (``0.02``); ``min_top1``: a percentage in (0, 100] (``97`` or ``97%``)."""
        tol = value if isinstance(value, Tolerance) else cls._parse_pct(value)
        if max_kld is not None:
            tol = replace(tol, max_kld=_parse_max_kld(max_kld), max_kld_from="--max-kld")
        if min_top1 is not None:
            tol = replace(tol, min_top1=_parse_min_top1(min_top1))
        return tol

    @classmethod
    def _parse_pct(cls, value: str | float | None) -> Tolerance:
        if value is None:
            value = "chat"
        if isinstance(value, (int, float)):
            pct = float(value)
        else:
            text = value.strip().lower()
            if text in TOLERANCE_PRESETS:
                p, label = TOLERANCE_PRESETS[text]
                return cls(p, label, max_kld=TOLERANCE_KLD[text], max_kld_from=text)
            m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*%?", text)
            if not m:
                raise PlanInputError(f"invalid tolerance {value!r}: give a preset "
                                     f"({', '.join(TOLERANCE_PRESETS)}) or a percentage such as 2 or 1.5%")
            pct = float(m.group(1))
        if not 0 <= pct <= 1000:
            raise PlanInputError(f"invalid tolerance {value!r}: a percentage between 0 and 1000")
        return cls(pct, f"{pct:g}%")

    @property
    def text(self) -> str:
        """The label, with the explicit bounds that were given: ``chat (2-3%), --max-kld 0.02``."""
        extra = [f"--max-kld {self.max_kld:g}"] if self.max_kld is not None and self.max_kld_from == "--max-kld" else []
        if self.min_top1 is not None:
            extra.append(f"--min-top1 {self.min_top1:g}")
        return ", ".join([self.label, *extra])

    def describe(self) -> str:
        """Every bound in words: ``at most +3% perplexity, mean KLD <= 0.04 (chat)``."""
        parts = [f"at most +{self.pct:g}% perplexity"]
        if self.max_kld is not None:
            parts.append(f"mean KLD <= {self.max_kld:g} ({self.max_kld_from})")
        if self.min_top1 is not None:
            parts.append(f"same top token >= {self.min_top1:g}% (--min-top1)")
        return ", ".join(parts)

    def failures(self, q: QualityEstimate) -> list[str]:
        """Why ``q`` is outside this tolerance, one line per bound it fails (empty: within)."""
        out = []
        if q.delta_pct > self.pct + 1e-9:
            out.append(f"expected +{q.delta_pct:.2f}% perplexity ({q.basis}) exceeds the {self.label} tolerance "
                       f"(+{self.pct:g}%)")
        if self.max_kld is not None and q.kld > self.max_kld * (1 + 1e-9):
            what = "measured" if q.kld_basis == "measured" else "predicted"
            bound = "--max-kld" if self.max_kld_from == "--max-kld" else f"the {self.label} tolerance's KLD bound"
            out.append(f"{what} KLD {q.kld:.3g} > {bound} {self.max_kld:g}")
        if self.min_top1 is not None and q.top1_pct < self.min_top1 - 1e-9:
            what = "measured" if q.top1_basis == "measured" else "predicted"
            out.append(f"{what} same top token {q.top1_pct:.1f}% < --min-top1 {self.min_top1:g}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"pct": self.pct, "label": self.label, "max_kld": self.max_kld,
                "max_kld_from": self.max_kld_from or None, "min_top1": self.min_top1}


def _number(flag: str, value: str | float, what: str) -> float:
    if isinstance(value, bool):
        raise PlanInputError(f"{flag} must be {what}, got {value!r}")
    text = value.strip().rstrip("%").strip() if isinstance(value, str) else value
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise PlanInputError(f"{flag} must be {what}, got {value!r}") from None
    if not math.isfinite(x):
        raise PlanInputError(f"{flag} must be {what}, got {value!r}")
    return x


def _parse_max_kld(value: str | float) -> float:
    what = "a positive number: the largest mean KL divergence in nats per token, such as 0.02"
    if isinstance(value, str) and value.strip().endswith("%"):
        raise PlanInputError(f"--max-kld must be {what} (nats, not a percentage), got {value!r}")
    x = _number("--max-kld", value, what)
    if x <= 0:
        raise PlanInputError(f"--max-kld must be {what}, got {value!r}")
    return x


def _parse_min_top1(value: str | float) -> float:
    what = "a percentage above 0 and at most 100: the smallest share of positions with the same top token, such as 97"
    x = _number("--min-top1", value, what)
    if not 0 < x <= 100:
        raise PlanInputError(f"--min-top1 must be {what}, got {value!r}")
    return x


_SIZE = re.compile(r"([-+]?[0-9]*\.?[0-9]+)\s*([a-z]*)")
_UNITS = {"": 1e9, "g": 1e9, "gb": 1e9, "gib": 2.0**30, "m": 1e6, "mb": 1e6, "mib": 2.0**20,
          "t": 1e12, "tb": 1e12, "tib": 2.0**40}
"""Memory-size units; a bare number is GB (10^9 bytes), the unit device datasheets and the issue use."""


def parse_budget(value: float | str | None) -> float | None:
    """A memory budget, returned in GiB (the planner's unit).

    A string takes a unit (``8GB``, ``7.5GiB``, ``512MB``; bare ``8`` is 8 GB = 10^9 bytes each), as
    ``--memory-budget`` does; a number is GiB, as the Python API has always taken it. Zero, negative
    or unreadable values are refused with the reason.
    """
    if value is None:
        return None
    if isinstance(value, str):
        m = _SIZE.fullmatch(value.strip().lower())
        if not m or m.group(2) not in _UNITS:
            raise PlanInputError(f"invalid --memory-budget {value!r}: a size such as 24, 24GB or 22.4GiB "
                                 "(a bare number is GB)")
        gib = float(m.group(1)) * _UNITS[m.group(2)] / 2**30
    else:
        try:
            gib = float(value)
        except (TypeError, ValueError):
            raise PlanInputError(f"invalid --memory-budget {value!r}: a number of GiB such as 24") from None
    if not gib > 0 or gib != gib or gib == float("inf"):
        raise PlanInputError(f"impossible --memory-budget {value!r}: it must be a positive size "
                             "(for example 8, 24GB or 80GiB)")
    return gib


def parse_preference(value: str | None) -> str:
    if value is None:
        return "fastest"
    v = value.strip().lower().replace("_", "-")
    v = {"accurate": "most-accurate", "accuracy": "most-accurate", "fast": "fastest", "small": "smallest"}.get(v, v)
    if v not in PREFERENCES:
        raise PlanInputError(f"invalid preference {value!r}; valid: {', '.join(PREFERENCES)}")
    return v
