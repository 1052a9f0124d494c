"""Verdict levels and verdicts: what the registry answers for one combination, always with reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from quantmatch.sdk.profile import Provenance

__all__ = ["LAYERS", "Dispute", "Evidence", "Level", "Reason", "Verdict", "VersionAnswer"]

LAYERS = ("linear", "moe", "kv-cache")
"""Layer types that can get different verdicts: dense linear layers, MoE expert layers, the KV cache."""


class Level(str, Enum):
    """How a combination executes.

    - ``native``: the device's matrix or vector engine computes in the scheme's low precision (a real
      compute and memory win). Integer or fp8 math on weights unpacked to the activation type counts.
    - ``weight-only``: weights are stored low-bit and expanded to 16/32-bit for the math: memory and
      bandwidth win, no compute win.
    - ``emulated``: accepted, but executed through wider math or slow lowering with no native unit:
      expect it to be slower than 16-bit.
    - ``unsupported``: pruned; the runtime refuses it, has no kernel, or the hardware lacks the type.
    """

    NATIVE = "native"
    WEIGHT_ONLY = "weight-only"
    EMULATED = "emulated"
    UNSUPPORTED = "unsupported"

    @property
    def rank(self) -> int:
        """0 is best. Sorting by rank puts native first and unsupported last."""
        return _RANK[self]

    @property
    def runnable(self) -> bool:
        return self is not Level.UNSUPPORTED

    @property
    def symbol(self) -> str:
        """A marker that does not rely on colour."""
        return _SYMBOL[self.value]

    @property
    def style(self) -> str:
        """The colour the command line and the TUI give this level (a rich style); every use also shows
        :attr:`symbol` and the word."""
        return _STYLE[self.value]

    @property
    def meaning(self) -> str:
        """What the level means, in one line (legends, help screens)."""
        return _MEANING[self.value]

    @property
    def label(self) -> str:
        """Symbol and word: ``● native``."""
        return f"{self.symbol} {self.value}"

    @classmethod
    def parse(cls, text: str) -> Level:
        t = text.strip().lower().replace("_", "-")
        t = {"weight-only-dequant": "weight-only", "weightonly": "weight-only"}.get(t, t)
        return cls(t)

    def __str__(self) -> str:
        return self.value


_RANK = {Level.NATIVE: 0, Level.WEIGHT_ONLY: 1, Level.EMULATED: 2, Level.UNSUPPORTED: 3}
_SYMBOL = {"native": "●", "weight-only": "◐", "emulated": "○", "unsupported": "✕"}
_STYLE = {"native": "bold green", "weight-only": "cyan", "emulated": "yellow", "unsupported": "red"}
_MEANING = {
    "native": "the device computes in the low precision: a real compute and memory win",
    "weight-only": "weights stored low-bit, expanded to 16/32-bit for the math: memory and bandwidth win only",
    "emulated": "accepted, but through wider math or slow lowering: expect slower than 16-bit",
    "unsupported": "pruned: the runtime refuses it, has no kernel, or the hardware lacks the type",
}


@dataclass(frozen=True)
class Reason:
    """One human-readable reason, with the source it rests on and the plugin that said it."""

    text: str
    source: str = ""
    plugin: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "source": self.source, "plugin": self.plugin}


@dataclass(frozen=True)
class Dispute:
    """What a second credible source says about the same combination on the same runtime version.

    A capability row that carries one (:attr:`quantmatch.sdk.capability.Capability.disputed`) is answered
    as **disputed**: the verdict keeps the row's level (the side the plugin author judged stronger) and
    shows this side with its source next to it.
    """

    level: Level
    reason: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level.value, "reason": self.reason, "source": self.source}


@dataclass(frozen=True)
class VersionAnswer:
    """The answer for a range of runtime versions (``explain`` shows each range whose answer differs)."""

    versions: str
    """The range in PEP 440 specifier form: ``>=0.10.2``, ``>=0.9,<0.10.2``, ``<0.9``."""
    level: Level
    reason: str
    source: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"versions": self.versions, "level": self.level.value, "reason": self.reason, "source": self.source}


@dataclass(frozen=True)
class Evidence:
    """A measurement attached to a verdict (filled by ``quantmatch verify``/``bench``)."""

    kind: str
    figure: str
    date: str
    versions: str = ""
    agrees: bool | None = None
    node: str = ""
    """The machine that measured it (a fleet node's name; empty: this machine, before fleets)."""
    observed: str = ""
    """The level the measurement observed (``verify``), where it judged one."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "figure": self.figure, "date": self.date,
                "versions": self.versions, "agrees": self.agrees, "node": self.node, "observed": self.observed}


@dataclass(frozen=True)
class Verdict:
    """The registry's answer for one combination.

    ``reasons`` is never empty: the first reason is why this level, the rest say why a better level
    was not reached and which checks pruned it. ``runs_as`` says what actually executes when the
    runtime falls back (for example FP8 W8A8 on an A100 in vLLM runs as FP8 weight-only through
    Marlin). ``provenance`` names the plugin that declared the deciding capability.
    """

    level: Level
    reasons: tuple[Reason, ...]
    method: str | None
    scheme: str
    backend: str
    target: str
    device: str
    layer: str = "linear"
    runs_as: str | None = None
    provenance: Provenance | None = None
    evidence: tuple[Evidence, ...] = field(default=())
    runtime_version: str = ""
    """The runtime version the verdict is for, and why that one: ``vllm 0.11.0 (latest known)``,
    ``(installed)`` or ``(asked)``; empty when the backend's rows do not depend on a version."""
    disputed: Dispute | None = None
    """The other side, when credible sources disagree on this combination (see :class:`Dispute`)."""
    other_versions: tuple[VersionAnswer, ...] = field(default=())
    """Every range of runtime versions and its answer, when the answer depends on the version (filled by
    :meth:`quantmatch.registry.Registry.explain`)."""

    @property
    def sources(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for r in self.reasons:
            for s in (r.source or "").split(" ; "):
                if s.strip():
                    seen.setdefault(s.strip(), None)
        return tuple(seen)

    @property
    def runnable(self) -> bool:
        return self.level.runnable

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scheme": self.scheme,
            "backend": self.backend,
            "target": self.target,
            "device": self.device,
            "layer": self.layer,
            "level": self.level.value,
            "runs_as": self.runs_as,
            "reasons": [r.to_dict() for r in self.reasons],
            "sources": list(self.sources),
            "plugin": self.provenance.plugin if self.provenance else None,
            "plugin_version": self.provenance.version if self.provenance else None,
            "evidence": [e.to_dict() for e in self.evidence],
            "runtime_version": self.runtime_version or None,
            "disputed": self.disputed.to_dict() if self.disputed else None,
            "versions": [a.to_dict() for a in self.other_versions],
        }
