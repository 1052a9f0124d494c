"""The planner's inputs: the workload, the quality tolerance and the preference, validated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from quantmatch.sdk.errors import InputError

__all__ = ["PREFERENCES", "TOLERANCE_PRESETS", "PlanInputError", "Tolerance", "Workload", "parse_budget"]

PREFERENCES = ("fastest", "smallest", "most-accurate")
"""How to rank the plans that fit and meet the tolerance: by predicted request throughput, by memory,
or by expected quality loss."""

TOLERANCE_PRESETS: dict[str, tuple[float, str]] = {
    "chat": (3.0, "chat (2-3%)"),
    "code": (1.0, "code (<1%)"),
    "reasoning": (0.5, "reasoning (<0.5%)"),
}


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
    """The largest acceptable perplexity increase in percent, with where it came from."""

    pct: float
    label: str

    @classmethod
    def parse(cls, value: str | float | Tolerance | None) -> Tolerance:
        """``chat``, ``code``, ``reasoning``, ``2.5``, ``2.5%``; ``None`` means ``chat``."""
        if isinstance(value, Tolerance):
            return value
        if value is None:
            value = "chat"
        if isinstance(value, (int, float)):
            pct = float(value)
        else:
            text = value.strip().lower()
            if text in TOLERANCE_PRESETS:
                p, label = TOLERANCE_PRESETS[text]
                return cls(p, label)
            m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*%?", text)
            if not m:
                raise PlanInputError(f"invalid tolerance {value!r}: give a preset "
                                     f"({', '.join(TOLERANCE_PRESETS)}) or a percentage such as 2 or 1.5%")
            pct = float(m.group(1))
        if pct < 0 or pct > 1000:
            raise PlanInputError(f"invalid tolerance {value!r}: a percentage between 0 and 1000")
        return cls(pct, f"{pct:g}%")

    def to_dict(self) -> dict[str, Any]:
        return {"pct": self.pct, "label": self.label}


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
