"""``quantmatch plan --run``: quantize the best plan this machine can produce, then evaluate it.

The planner ranks every method the registry knows, but only some methods have a quantization
implementation in this version, with their requirements installed (:mod:`.produce`). ``--run``
takes the highest-ranked plan quantmatch can produce whose quantization job fits THIS machine (the
job is always estimated for the machine running it, whatever device the plan is for: RAM,
accelerator memory and free disk, :mod:`.job`), says which better-ranked plans it skipped and why,
calls :func:`quantmatch.sdk.pipeline.quantize` and then :func:`quantmatch.sdk.evaluate.evaluate` on the
artifact. When no plan's job fits, it refuses with what the best one needs and what is available.
Torch is imported only here, only when ``--run`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantmatch.planner.engine import _slug
from quantmatch.planner.footprint import weight_layout
from quantmatch.planner.hardware import GIB, DeviceSpec, device_spec
from quantmatch.planner.job import JobEstimate, _free_disk_gib, _host_ram_gib, estimate_job
from quantmatch.planner.plan import Candidate, Plan
from quantmatch.planner.priors import method_priors
from quantmatch.planner.produce import production
from quantmatch.planner.shapes import quantize_source
from quantmatch.planner.types import PlanInputError

__all__ = ["choose", "job_here", "pick_plan", "run_plan", "runnable_method"]


def _registry(registry: Any) -> Any:
    if registry is not None:
        return registry
    from quantmatch.registry import Registry

    return Registry()


def runnable_method(method: str | None, registry: Any = None) -> bool:
    """Whether ``quantmatch quantize`` can produce ``method``'s artifact here (``None``: nothing to run)."""
    return production(method, _registry(registry)).producible


def pick_plan(plans: Sequence[Plan]) -> tuple[Plan, str]:
    """The plan ``--run`` executes when several devices were planned, and the sentence that says so:
    the one for this machine (``--device local``) if given, else the first device."""
    if len(plans) == 1:
        return plans[0], f"--run: running the plan for {plans[0].device.name}"
    for p in plans:
        if p.device.profile.detected:
            return p, f"--run: running the plan for {p.device.name} (this machine), not the other devices'"
    others = ", ".join(p.device.name for p in plans[1:])
    return plans[0], (f"--run: running the plan for {plans[0].device.name} (the first --device); not those for "
                      f"{others}")


def _local_spec(registry: Any) -> DeviceSpec:
    return device_spec(registry.local())


def job_here(plan: Plan, cand: Candidate, registry: Any = None, out: str | Path | None = None,
             spec: DeviceSpec | None = None) -> JobEstimate:
    """What producing ``cand`` needs on THIS machine, checked against its RAM, accelerator memory and
    free disk (the baseline: loading the 16-bit checkpoint to evaluate it)."""
    reg = _registry(registry)
    here = spec or _local_spec(reg)
    where = _existing_dir(Path(out).expanduser().resolve().parent if out else Path.cwd())
    info, params = plan.model.info, plan.params
    if cand.method is None:
        return _baseline_job(plan, here, where)
    s = reg.scheme(cand.scheme)
    try:
        needs_cal = bool(reg.method(cand.method).needs_calibration)
    except Exception:
        needs_cal = False
    priors = method_priors(cand.method, reg)
    layout = weight_layout(info, params, s, cand.method, priors=priors)
    return estimate_job(cand.method, needs_cal, info, params, layout, here, True, where, priors.job)


def _existing_dir(path: Path) -> Path:
    """The nearest existing directory at or above ``path`` (where ``--out`` will be created)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _baseline_job(plan: Plan, here: DeviceSpec, where: Path) -> JobEstimate:
    """Evaluating the unquantized model loads its 16-bit weights (and downloads them unless local)."""
    weights = plan.params.total * 2.0 / GIB
    disk = 0.0 if plan.model.kind != "builtin" or plan.model.name == "smollm2-135m" else weights
    host = here.memory_gib if here.is_cpu else _host_ram_gib()
    free = _free_disk_gib(where)
    problems = []
    if host is not None and weights > host:
        problems.append(f"needs {weights:.1f} GiB RAM to load the 16-bit weights, this machine has {host:.1f} GiB")
    if free is not None and disk > free:
        problems.append(f"needs {disk:.1f} GiB disk for the 16-bit checkpoint, {free:.1f} GiB free")
    reason = "; ".join(problems) if problems else "fits this machine's RAM and free disk"
    return JobEstimate("none", False, weights, None, disk, None, not problems, reason)


def choose(plan: Plan, registry: Any = None, out: str | Path | None = None,
           spec: DeviceSpec | None = None) -> tuple[Candidate, list[str], JobEstimate]:
    """The best-ranked candidate quantmatch can produce whose job fits this machine, the notes on the
    better-ranked ones it skipped, and that job's estimate. Refuses (:class:`PlanInputError`, exit 2)
    when none fits, with what the best producible one needs against what this machine has."""
    if plan.status == "nothing-fits":
        raise PlanInputError(f"--run refused: nothing fits {plan.device.name} for {plan.model.name} "
                             f"({'; '.join(plan.notes[-1:])}); plan another device or a smaller model")
    reg = _registry(registry)
    here = spec or _local_spec(reg)
    notes: list[str] = []
    refused: list[tuple[Candidate, JobEstimate]] = []
    for c in plan.candidates:
        if not c.producible_here:
            notes.append(f"#{c.rank} {c.scheme} ({c.method}) skipped: quantmatch cannot produce it here "
                         f"({c.production})")
            continue
        job = job_here(plan, c, reg, out, here)
        if job.feasible is False:
            notes.append(f"#{c.rank} {c.scheme} ({c.method or '16-bit'}) skipped: its job does not fit this "
                         f"machine ({job.reason})")
            refused.append((c, job))
            continue
        return c, notes, job
    if refused:
        c, job = refused[0]
        raise PlanInputError(
            f"--run refused: no plan's job fits this machine; the best one quantmatch can produce, #{c.rank} "
            f"{c.scheme} ({c.method or '16-bit'}), {job.reason}. Free disk space or pass --out on a larger "
            "disk, run on a machine with more memory, or plan a smaller model")
    raise PlanInputError("--run refused: none of the ranked plans uses a method quantmatch can produce here; "
                         "produce the top plan with its own tool (see 'Produce it'), or relax --tolerance / "
                         "--memory-budget")


def run_plan(plan: Plan, model_arg: str, out: str | Path | None = None, force: bool = False,
             registry: Any = None) -> dict[str, Any]:
    """Quantize the best candidate of ``plan`` this machine can produce into ``out``, then evaluate it.

    Returns ``{"device", "candidate", "skipped", "job_here", "quantize", "evaluation"}``
    (``quantize`` is ``None`` when the best plan is the unquantized baseline, evaluated as is).
    """
    cand, skipped, job = choose(plan, registry, out)
    spec = quantize_source(plan.model, model_arg)
    from quantmatch.sdk.evaluate import evaluate

    base = {"device": plan.device.id, "candidate": cand.to_dict(), "skipped": skipped, "job_here": job.to_dict()}
    if cand.method is None:
        ev = evaluate(spec)
        return {**base, "quantize": None, "evaluation": ev.to_dict()}
    from quantmatch.sdk.pipeline import quantize

    target = Path(out) if out else Path(f"{_slug(model_arg)}-{cand.scheme}")
    result = quantize(spec, cand.method, cand.scheme, target, force=force)
    ev = evaluate(target)
    return {**base, "quantize": result.to_dict(), "evaluation": ev.to_dict()}
