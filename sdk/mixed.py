"""Execute a mixed-precision recipe (:mod:`quantmatch.sdk.recipe`): ``quantmatch quantize MODEL --recipe FILE``.

:func:`quantize_recipe` resolves the model, checks that the recipe's method mixes formats
(``Quantizer.mixes``), runs its ``quantize_mixed`` into a temporary directory, writes the manifest (the
recipe's base scheme as the scheme, the recipe itself under ``details``) and renames the directory into
place, as :func:`quantmatch.sdk.pipeline.quantize` does for one scheme. The result carries the measured
size next to the predicted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmatch.sdk.artifact import Manifest, atomic_output, check_output, library_versions, write_manifest
from quantmatch.sdk.pipeline import QuantizeError, QuantizeResult
from quantmatch.sdk.recipe import Recipe, RecipeError, load_recipe

__all__ = ["MixedResult", "quantize_recipe"]

_VERSIONED = ("quantmatch", "gguf", "llama-cpp-python", "torch", "transformers", "safetensors")


@dataclass(frozen=True)
class MixedResult:
    """The artifact written, the recipe, and the measured size against the predicted one."""

    result: QuantizeResult
    recipe: Recipe
    predicted_bytes: int
    measured_bytes: int

    @property
    def size_error(self) -> float:
        """Measured over predicted size, minus one."""
        return self.measured_bytes / self.predicted_bytes - 1.0 if self.predicted_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.result.artifact), "method": self.recipe.method,
                "base_scheme": self.recipe.base_scheme, "units": len(self.recipe.assignments),
                "counts": self.recipe.counts(), "predicted_bytes": self.predicted_bytes,
                "measured_bytes": self.measured_bytes, "size_error": round(self.size_error, 6),
                "predicted_kld": self.recipe.predicted_kld, "basis": self.recipe.basis,
                "seconds": self.result.seconds}


def quantize_recipe(recipe: Recipe | str | Path, out: str | Path, model: str | Path | None = None, *,
                    force: bool = False, threads: int | None = None,
                    progress: Callable[[str, int, int], None] | None = None) -> MixedResult:
    """Quantize ``model`` (default: the recipe's) per ``recipe`` (a :class:`Recipe` or its file) into ``out``.

    Raises :class:`~quantmatch.sdk.recipe.RecipeError` for an unreadable recipe or a method that does not mix
    formats, :class:`~quantmatch.sdk.artifact.OutputExistsError` when ``out`` exists without ``force``
    (both before any weight is read).
    """
    from quantmatch.sdk.models import resolve_model
    from quantmatch.sdk.pluginhost import get_host

    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    check_output(out, force)
    entry = get_host().quantizers.get(rec.method)
    if entry is None:
        raise RecipeError(f"the recipe's method {rec.method!r} is not installed (installed: "
                          f"{', '.join(sorted(get_host().quantizers))})")
    q = entry.obj
    if not getattr(q, "mixes", False):
        raise RecipeError(f"{rec.method} does not write per-tensor mixed precision (no quantize_mixed); "
                          "make the recipe for a method that does with quantmatch plan MODEL --mixed")
    missing = q().missing()
    if missing:
        raise QuantizeError(f"{rec.method} needs {', '.join(missing)}: {q.install_hint or 'install them'}")
    source = resolve_model(str(model) if model is not None else rec.model)
    started = time.perf_counter()
    with atomic_output(out, force) as tmp:
        produced = q().quantize_mixed(source, rec.assignments, tmp, base_scheme=rec.base_scheme, threads=threads,
                                      progress=progress)
        details = dict(produced.to_dict()) if hasattr(produced, "to_dict") else dict(produced or {})
        details.pop("path", None)
        details.pop("scheme", None)
        details["recipe"] = rec.to_dict()
        manifest = Manifest(method=q.name, scheme=rec.base_scheme, artifact_format=q.artifact_format,
                            source_model=source.spec, model_type=source.info.model_type,
                            versions=library_versions((*_VERSIONED, *q.versioned)),
                            seconds=round(time.perf_counter() - started, 3), details=details)
        write_manifest(tmp, manifest)
    result = QuantizeResult(Path(out), q.name, manifest.scheme, rec.base_scheme, source.spec, manifest.size_bytes,
                            manifest.seconds, manifest)
    measured = int(getattr(produced, "size_bytes", 0) or manifest.size_bytes)
    return MixedResult(result, rec, rec.predicted_weight_bytes, measured)
