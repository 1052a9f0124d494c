"""A mixed-precision recipe: one format per unit (weight tensor), with its predicted size and loss.

``quantmatch plan MODEL --mixed`` writes it (:mod:`quantmatch.planner.mixed`), ``quantmatch quantize MODEL
--recipe FILE`` executes it (the recipe's method's ``quantize_mixed``). JSON, version 1::

    {"format": "quantmatch-recipe", "version": 1, "model": "smollm2-135m", "method": "gguf",
     "backend": "llama.cpp", "device": "cpu", "base_scheme": "gguf-q4_k_m",
     "assignments": {"blk.0.ffn_down.weight": "gguf-q6_k", ...}, "budget_bytes": 104857600,
     "context": 4096, "kv": "fp16",
     "predicted": {"weight_bytes": 101234567, "kld": 0.0123, "basis": "measured sensitivity, additive"},
     "sensitivity": {"tokens": 256, "text": "tiny-shakespeare", "cache_key": "..."},
     "created_by": "quantmatch 0.x"}

``base_scheme`` is the format of every unit not listed. Unknown keys are refused (a file from a newer
quantmatch, a typo); the file is written atomically and never overwritten without ``force``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.artifact import atomic_write_json
from quantmatch.sdk.errors import InputError

__all__ = ["RECIPE_FORMAT", "RECIPE_VERSION", "Recipe", "RecipeError", "RecipeExistsError", "load_recipe",
           "save_recipe"]

RECIPE_FORMAT = "quantmatch-recipe"
RECIPE_VERSION = 1

_BASIS = ("measured sensitivity, additive", "prior")


class RecipeError(InputError):
    """A recipe file that cannot be read or does not follow the format; the message names the fix."""


class RecipeExistsError(RecipeError):
    """The recipe file exists and ``force`` was not given."""


@dataclass(frozen=True)
class Recipe:
    """A typed recipe (see the module docstring for the JSON form)."""

    model: str
    method: str
    backend: str
    device: str
    base_scheme: str
    assignments: Mapping[str, str]
    predicted_weight_bytes: int
    predicted_kld: float
    basis: str = "measured sensitivity, additive"
    budget_bytes: int | None = None
    context: int = 0
    kv: str = "fp16"
    sensitivity: Mapping[str, Any] = field(default_factory=dict)
    created_by: str = ""

    def __post_init__(self) -> None:
        if self.basis not in _BASIS:
            raise RecipeError(f"predicted.basis must be one of {', '.join(map(repr, _BASIS))}, not {self.basis!r}")

    def counts(self) -> dict[str, int]:
        """Units per format, most used first."""
        out: dict[str, int] = {}
        for s in self.assignments.values():
            out[s] = out.get(s, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_dict(self) -> dict[str, Any]:
        return {"format": RECIPE_FORMAT, "version": RECIPE_VERSION, "model": self.model, "method": self.method,
                "backend": self.backend, "device": self.device, "base_scheme": self.base_scheme,
                "assignments": dict(self.assignments), "budget_bytes": self.budget_bytes, "context": self.context,
                "kv": self.kv,
                "predicted": {"weight_bytes": self.predicted_weight_bytes, "kld": self.predicted_kld,
                              "basis": self.basis},
                "sensitivity": dict(self.sensitivity), "created_by": self.created_by}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "the recipe") -> Recipe:
        """Parse the JSON form; :class:`RecipeError` for a wrong format or version, a missing or unknown key,
        or a value of the wrong type."""
        if not isinstance(data, Mapping):
            raise RecipeError(f"{where}: not a JSON object (write it with quantmatch plan MODEL --mixed)")
        if data.get("format") != RECIPE_FORMAT:
            raise RecipeError(f"{where}: not a quantmatch recipe (format must be {RECIPE_FORMAT!r}; "
                              "write it with quantmatch plan MODEL --mixed --recipe-out FILE)")
        if data.get("version") != RECIPE_VERSION:
            raise RecipeError(f"{where}: recipe version {data.get('version')!r} is not {RECIPE_VERSION} "
                              "(re-create it with this quantmatch's plan --mixed)")
        known = {"format", "version", "model", "method", "backend", "device", "base_scheme", "assignments",
                 "budget_bytes", "context", "kv", "predicted", "sensitivity", "created_by"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)} (valid: {', '.join(sorted(known))})")
        pred = data.get("predicted")
        if not isinstance(pred, Mapping) or set(pred) - {"weight_bytes", "kld", "basis"}:
            raise RecipeError(f"{where}: predicted must hold only weight_bytes, kld and basis")
        assignments = data.get("assignments")
        if not isinstance(assignments, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in assignments.items()):
            raise RecipeError(f"{where}: assignments must map unit names to scheme strings")
        try:
            for k in ("model", "method", "backend", "device", "base_scheme"):
                if not isinstance(data[k], str) or not data[k]:
                    raise RecipeError(f"{where}: {k} must be a non-empty string")
            budget = data.get("budget_bytes")
            return cls(model=data["model"], method=data["method"], backend=data["backend"], device=data["device"],
                       base_scheme=data["base_scheme"], assignments=dict(assignments),
                       predicted_weight_bytes=int(pred["weight_bytes"]), predicted_kld=float(pred["kld"]),
                       basis=str(pred.get("basis", "measured sensitivity, additive")),
                       budget_bytes=None if budget is None else int(budget), context=int(data.get("context", 0)),
                       kv=str(data.get("kv", "fp16")), sensitivity=dict(data.get("sensitivity") or {}),
                       created_by=str(data.get("created_by", "")))
        except KeyError as e:
            raise RecipeError(f"{where}: missing key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise RecipeError(f"{where}: {e}") from None


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read a recipe file; :class:`RecipeError` when it is missing, not JSON, or not a valid recipe."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise RecipeError(f"{p}: cannot read the recipe ({e.strerror or e}); write one with "
                          "quantmatch plan MODEL --mixed --recipe-out FILE") from None
    except json.JSONDecodeError as e:
        raise RecipeError(f"{p}: not JSON ({e})") from None
    return Recipe.from_dict(data, str(p))


def save_recipe(recipe: Recipe, path: str | os.PathLike[str], force: bool = False) -> Path:
    """Write ``recipe`` atomically (temporary file + rename); :class:`RecipeExistsError` when ``path`` exists
    and ``force`` is false."""
    p = Path(path).expanduser()
    if p.exists() and not force:
        raise RecipeExistsError(f"{p} exists; pass --force to overwrite it or choose another --recipe-out")
    return atomic_write_json(p, recipe.to_dict())
