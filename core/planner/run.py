"""``quantmatch plan --run``: quantize the best runnable plan on this machine, then evaluate it.

The planner ranks every method the registry knows, but only some methods have a quantization
implementation in this version (``Quantizer.quantize`` overridden: quanto, HQQ, GGUF ...). ``--run``
takes the highest-ranked plan whose method can run, says so when that is not the top plan, calls
:func:`quantmatch.pipeline.quantize` and then :func:`quantmatch.evaluate.evaluate` on the artifact.
Torch is imported only here, only when ``--run`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .engine import _slug
from .plan import Candidate, Plan
from .types import PlanInputError

__all__ = ["run_plan", "runnable_method"]


def runnable_method(method: str | None, registry: Any = None) -> bool:
    """Whether ``method`` has a quantization implementation here (``None``: nothing to run)."""
    if method is None:
        return True
    from quantmatch.quantizer import Quantizer

    if registry is None:
        from quantmatch.registry import Registry

        registry = Registry()
    try:
        q = registry.method(method)
    except Exception:
        return False
    return q.quantize is not Quantizer.quantize


def _source_spec(plan: Plan, model_arg: str) -> str:
    """What the quantize pipeline understands: the path given, the bundled alias, or the HF id."""
    if plan.model.kind != "builtin":
        return model_arg
    if plan.model.name == "smollm2-135m":
        return "smollm2-135m"
    from .shapes import find_builtin

    shape = find_builtin(plan.model.name)
    return shape.hf_id if shape is not None else model_arg


def choose(plan: Plan, registry: Any = None) -> tuple[Candidate, list[str]]:
    """The best-ranked candidate whose method can run here, with notes on what was skipped."""
    notes: list[str] = []
    for c in plan.candidates:
        if runnable_method(c.method, registry):
            return c, notes
        notes.append(f"#{c.rank} {c.scheme} ({c.method}) skipped: quantmatch cannot run {c.method} yet")
    runnable = sorted({c.method for c in plan.candidates if c.method and runnable_method(c.method, registry)})
    raise PlanInputError("none of the ranked plans uses a method quantmatch can run here"
                         + (f" (runnable: {', '.join(runnable)})" if runnable else "")
                         + "; quantize another way, or relax --tolerance / --memory-budget")


def run_plan(plan: Plan, model_arg: str, out: str | Path | None = None, force: bool = False,
             registry: Any = None) -> dict[str, Any]:
    """Quantize the best runnable candidate of ``plan`` into ``out`` and evaluate the result.

    Returns ``{"candidate", "skipped", "quantize", "evaluation"}`` (``quantize`` is ``None`` when the
    best plan is the unquantized baseline, which is then evaluated as is).
    """
    cand, skipped = choose(plan, registry)
    spec = _source_spec(plan, model_arg)
    from quantmatch.evaluate import evaluate

    if cand.method is None:
        ev = evaluate(spec)
        return {"candidate": cand.to_dict(), "skipped": skipped, "quantize": None, "evaluation": ev.to_dict()}
    from quantmatch.pipeline import quantize

    target = Path(out) if out else Path(f"{_slug(model_arg)}-{cand.scheme}")
    result = quantize(spec, cand.method, cand.scheme, target, force=force)
    ev = evaluate(target)
    return {"candidate": cand.to_dict(), "skipped": skipped, "quantize": result.to_dict(),
            "evaluation": ev.to_dict()}
