"""Layer-wise precision: per-module overrides by name pattern, and named presets.

A :class:`LayerRule` gives one precision to every module whose name matches one of its patterns.
Patterns are shell globs matched against the whole module name (``*.self_attn.[qkv]_proj``), or
regular expressions searched in it when prefixed with ``re:`` (``re:mlp\\.(gate|up)_proj$``). Rules
are tried in order and the first match wins; modules no rule hits take the scheme's precision.

Precisions: ``fp32``, ``fp16``, ``bf16`` keep a module unquantized (stored in the artifact's float
type); ``int8``, ``int4``, ``int3``, ``int2``, ``int1``, ``fp8`` quantize its weights (group size,
symmetry and activations follow the scheme and the method).

:func:`check_rules` works from a :class:`~quantmatch.sdk.model_info.ModelInfo` alone (no weights): it
lists the modules each rule hits and flags the rules that hit nothing.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quantmatch.sdk.errors import InputError
from quantmatch.sdk.model_info import ModelInfo

__all__ = [
    "FLOAT_PRECISIONS",
    "PRESETS",
    "QUANT_PRECISIONS",
    "LayerRule",
    "LayerwiseError",
    "Preset",
    "RuleHits",
    "assign",
    "check_rules",
    "get_preset",
    "module_names",
    "plan_table",
    "rules_from",
    "summarize",
]

FLOAT_PRECISIONS = ("fp32", "fp16", "bf16")
"""Precisions that keep a module unquantized."""

QUANT_PRECISIONS = ("int8", "int4", "int3", "int2", "int1", "fp8")
"""Precisions that quantize a module's weights."""


class LayerwiseError(InputError):
    """An unknown preset, a malformed rule or an unknown precision."""


@dataclass(frozen=True)
class LayerRule:
    """Give ``precision`` to every module matching one of ``patterns``; ``name`` labels reports."""

    name: str
    patterns: tuple[str, ...]
    precision: str

    def __post_init__(self) -> None:
        if self.precision not in FLOAT_PRECISIONS + QUANT_PRECISIONS:
            raise LayerwiseError(f"rule {self.name!r}: unknown precision {self.precision!r} (valid: "
                                 f"{', '.join(FLOAT_PRECISIONS + QUANT_PRECISIONS)})")
        for p in self.patterns:
            if p.startswith("re:"):
                try:
                    re.compile(p[3:])
                except re.error as e:
                    raise LayerwiseError(f"rule {self.name!r}: bad regular expression {p[3:]!r}: {e}") from e

    @property
    def quantized(self) -> bool:
        return self.precision in QUANT_PRECISIONS

    def matches(self, module: str) -> bool:
        for p in self.patterns:
            if p.startswith("re:"):
                if re.search(p[3:], module):
                    return True
            elif fnmatch.fnmatchcase(module, p):
                return True
        return False

    @classmethod
    def parse(cls, text: str) -> LayerRule:
        """``PATTERN[,PATTERN...]=PRECISION``, e.g. ``*.mlp.*=int4`` or ``re:q_proj$=int8``."""
        patterns, sep, precision = text.rpartition("=")
        if not sep or not patterns.strip():
            raise LayerwiseError(f"bad rule {text!r}: write PATTERN=PRECISION, e.g. '*.mlp.*=int4'")
        pats = tuple(p.strip() for p in patterns.split(",") if p.strip())
        return cls(patterns, pats, precision.strip().lower())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "patterns": list(self.patterns), "precision": self.precision}


@dataclass(frozen=True)
class Preset:
    """A named list of rules."""

    name: str
    description: str
    rules: tuple[LayerRule, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "rules": [r.to_dict() for r in self.rules]}


# Module-name patterns for the Llama family and GPT-2 (transformers' names).
_EMBEDDINGS = ("*embed_tokens", "*.wte", "*.wpe")
_QKV = ("*.self_attn.[qkv]_proj", "*.attn.c_attn")
_ATTN_OUT = ("*.self_attn.o_proj", "*.attn.c_proj")
_FFN = ("*.mlp.*_proj", "*.mlp.c_fc", "*.mlp.c_proj")
_NORMS = ("*norm", "*.ln_[12f]")
_HEAD = ("lm_head",)


def _typical(qkv: str, head: str) -> tuple[LayerRule, ...]:
    return (
        LayerRule("embeddings", _EMBEDDINGS, "fp16"),
        LayerRule("attention q/k/v", _QKV, qkv),
        LayerRule("attention output", _ATTN_OUT, "int8"),
        LayerRule("feed-forward", _FFN, "int4"),
        LayerRule("norms", _NORMS, "fp16"),
        LayerRule("lm head", _HEAD, head),
    )


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("typical", "embeddings FP16, Q/K/V INT8, attention output INT8, FFN INT4, norms FP16, "
                      "LM head FP16", _typical("int8", "fp16")),
    Preset("typical-int4-qkv", "as typical, with Q/K/V at INT4", _typical("int4", "fp16")),
    Preset("typical-int8-head", "as typical, with the LM head at INT8", _typical("int8", "int8")),
    Preset("attn8-mlp4", "attention (Q/K/V and output) INT8, FFN INT4, everything else as the scheme",
           (LayerRule("attention", _QKV + _ATTN_OUT, "int8"), LayerRule("feed-forward", _FFN, "int4"))),
)}
"""Named presets (``--preset NAME``)."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``; :class:`LayerwiseError` listing the valid ones otherwise."""
    preset = PRESETS.get(name.strip().lower())
    if preset is None:
        close = difflib.get_close_matches(name.lower(), PRESETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise LayerwiseError(f"unknown preset {name!r}{hint}; valid presets: {', '.join(PRESETS)}")
    return preset


def module_names(info: ModelInfo) -> list[str]:
    """Every module a rule can address, by transformers' names, from the config alone.

    The linear layers of :meth:`ModelInfo.linear_layers` plus the embeddings and the norms.
    """
    names = [lin.name for lin in info.linear_layers()]
    if info.model_type == "gpt2":
        names += ["transformer.wte", "transformer.wpe", "transformer.ln_f"]
        names += [f"transformer.h.{i}.{n}" for i in range(info.num_layers) for n in ("ln_1", "ln_2")]
    else:
        names += ["model.embed_tokens", "model.norm"]
        names += [f"model.layers.{i}.{n}" for i in range(info.num_layers)
                  for n in ("input_layernorm", "post_attention_layernorm")]
    return names


def assign(names: Iterable[str], rules: Sequence[LayerRule]) -> dict[str, LayerRule | None]:
    """The first rule matching each name (``None`` where no rule does)."""
    return {n: next((r for r in rules if r.matches(n)), None) for n in names}


@dataclass(frozen=True)
class RuleHits:
    """The modules one rule decides (first match wins) and those it matches but loses to an earlier rule."""

    rule: LayerRule
    hits: tuple[str, ...]
    shadowed: tuple[str, ...] = ()

    @property
    def unused(self) -> bool:
        return not self.hits

    def to_dict(self) -> dict[str, Any]:
        return {**self.rule.to_dict(), "hits": len(self.hits), "modules": list(self.hits),
                "shadowed": list(self.shadowed), "unused": self.unused}


def check_rules(info_or_names: ModelInfo | Iterable[str], rules: Sequence[LayerRule]) -> list[RuleHits]:
    """Which modules each rule hits, from a config (no weights) or a list of module names."""
    names = module_names(info_or_names) if isinstance(info_or_names, ModelInfo) else list(info_or_names)
    winners = assign(names, rules)
    out = []
    for r in rules:
        matched = [n for n in names if r.matches(n)]
        out.append(RuleHits(r, tuple(n for n in matched if winners[n] is r),
                            tuple(n for n in matched if winners[n] is not r)))
    return out


def summarize(hits: Sequence[RuleHits]) -> list[str]:
    """One line per rule: its name, precision and hit count, flagging rules that hit nothing."""
    lines = []
    for h in hits:
        pats = ", ".join(h.rule.patterns)
        if h.unused:
            why = f" (all {len(h.shadowed)} matches taken by earlier rules)" if h.shadowed else ""
            lines.append(f"{h.rule.name} -> {h.rule.precision}: hits nothing [{pats}]{why}")
        else:
            lines.append(f"{h.rule.name} -> {h.rule.precision}: {len(h.hits)} modules [{pats}]")
    return lines


def rules_from(preset: str | Preset | None = None, rules: Iterable[str | LayerRule] = ()) -> tuple[LayerRule, ...]:
    """Rules from a preset name or object and extra rules (strings parsed); extra rules come first."""
    extra = tuple(r if isinstance(r, LayerRule) else LayerRule.parse(r) for r in rules)
    base = () if preset is None else (preset if isinstance(preset, Preset) else get_preset(preset)).rules
    return extra + base


def plan_table(names: Iterable[str], rules: Sequence[LayerRule]) -> Mapping[str, str | None]:
    """Module name -> precision (``None``: the scheme decides)."""
    return {n: (r.precision if r else None) for n, r in assign(names, rules).items()}
