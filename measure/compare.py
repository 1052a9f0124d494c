"""``quantmatch compare``: artifacts of one model side by side, ranked by fidelity to the unquantized model.

Each artifact is scored by the runtime it is made for (:func:`quantmatch.sdk.evaluate.evaluate`), on the
same token ids, against one reference computed once (:func:`quantmatch.sdk.evaluate.reference_for`,
cached). Rows are ranked by mean KL divergence (then by size); a decode speed measured by ``bench`` on this
machine for the same method, scheme and runtime is shown beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.errors import InputError

__all__ = ["Comparison", "compare"]

ProgressFn = Callable[[str, int, int], None]


@dataclass
class Comparison:
    """Rows (``name``, ``target``, ``method``, ``scheme``, ``runtime``, ``size_bytes``, ``fidelity`` dict,
    ``decode_tps`` or ``None``, ``evaluation`` dict), best first, and the reference they share."""

    reference: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "ranked_by": "kld_mean", "artifacts": self.rows}


def _source_model(target: str) -> str | None:
    from quantmatch.sdk.artifact import MANIFEST_NAME, read_manifest

    p = Path(target).expanduser()
    if p.is_dir() and (p / MANIFEST_NAME).is_file():
        return read_manifest(p).source_model
    return None


def _measured_speed(model: str, method: str | None, scheme: str | None, runtime: str) -> float | None:
    """Decode tok/s that ``bench`` stored for this combination on this machine, if any."""
    if not method or not scheme:
        return None
    from quantmatch.measure.bench import model_key
    from quantmatch.sdk.store import measured_runs

    try:
        from quantmatch.registry import Registry

        device = Registry().local().id
    except Exception:  # detection is best effort here: no speed column rather than no comparison
        return None
    run = measured_runs([model_key(model)], device).get((method.lower(), scheme.lower(), runtime.lower()))
    return run.decode_tps if run else None


def compare(targets: Sequence[str], reference: str | None = None, text: str | Path | None = None,
            tokens: int = 4096, window: int = 1024, threads: int | None = None, top_k: int | None = None,
            progress: ProgressFn | None = None) -> Comparison:
    """Score every target against one reference and rank them (see the module docstring).

    ``reference`` defaults to the model the artifacts' manifests name; artifacts of different models, or
    plain files with no ``reference``, are bad input (:class:`~quantmatch.sdk.errors.InputError`)."""
    from quantmatch.sdk.evaluate import evaluate

    if len(targets) < 2:
        raise InputError("give at least two artifacts to compare (quantmatch eval scores one)")
    if reference is None:
        named = {t: _source_model(t) for t in targets}
        models = {m for m in named.values() if m}
        if len(models) > 1:
            raise InputError("these artifacts come from different models ("
                             + ", ".join(f"{t}: {m}" for t, m in named.items() if m)
                             + "); compare artifacts of one model, or pass --reference MODEL")
        if not models or any(m is None for m in named.values()):
            missing = [t for t, m in named.items() if m is None]
            if not models:
                raise InputError(f"{', '.join(missing)} name no model; pass --reference MODEL (the unquantized model)")
        reference = models.pop()
    rows: list[dict[str, Any]] = []
    ref_info: dict[str, Any] = {}
    for i, t in enumerate(targets):
        if progress:
            progress(f"{t} ({i + 1}/{len(targets)})", i, len(targets))
        ev = evaluate(t, text=text, tokens=tokens, window=window, threads=threads, reference=reference, top_k=top_k)
        assert ev.fidelity is not None
        ref_info = ev.reference or ref_info
        rows.append({"name": Path(t).name or t, "target": str(t), "method": ev.method, "scheme": ev.scheme,
                     "runtime": ev.runtime, "computed_by": ev.computed_by, "size_bytes": ev.size_bytes,
                     "fidelity": ev.fidelity.to_dict(),
                     "decode_tps": _measured_speed(reference, ev.method, ev.scheme, ev.runtime),
                     "evaluation": {k: v for k, v in ev.to_dict().items() if k not in ("fidelity", "reference")}})
    rows.sort(key=lambda r: (r["fidelity"]["kld_mean"], r["size_bytes"]))
    for rank, r in enumerate(rows, start=1):
        r["rank"] = rank
    return Comparison({k: v for k, v in ref_info.items() if k != "seconds"}, rows)
