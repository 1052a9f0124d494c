"""The planner: which precision, method and runtime to use for a model on a device and workload.

``quantmatch.plan("llama-3.1-8b", "h100", batch=1, tolerance="chat")`` returns a
:class:`~quantmatch.planner.plan.Plan`: ranked candidates with memory, prefill/decode roofline
speed, expected quality and the quantization job's needs, the rejected options with reasons, and a
summary in words. Pure Python: nothing here imports torch. See ``docs/planner.md``.
"""

from __future__ import annotations

from quantmatch.planner.engine import SMALL_MODEL_PARAMS, baseline_backends, plan, plan_devices
from quantmatch.planner.hardware import DeviceSpec, Peak, device_spec, with_measurements
from quantmatch.planner.job import JobEstimate
from quantmatch.planner.memory import MemoryEstimate
from quantmatch.planner.plan import STATUSES, Candidate, Plan, Rejection
from quantmatch.planner.quality import QualityEstimate, kld_from_ppl, prior_quality, top1_from_kld
from quantmatch.planner.roofline import PhaseEstimate
from quantmatch.planner.shapes import (
    BuiltinShape,
    ModelSource,
    ParamBreakdown,
    builtin_shapes,
    param_breakdown,
    resolve_model,
)
from quantmatch.planner.training import TrainingPlan, plan_training
from quantmatch.planner.types import (
    PREFERENCES,
    TOLERANCE_KLD,
    TOLERANCE_PRESETS,
    PlanInputError,
    Tolerance,
    Workload,
)
from quantmatch.sdk.store import SCHEMA as RESULTS_SCHEMA
from quantmatch.sdk.store import measured_quality, results_path

__all__ = [
    "PREFERENCES",
    "RESULTS_SCHEMA",
    "SMALL_MODEL_PARAMS",
    "STATUSES",
    "TOLERANCE_KLD",
    "TOLERANCE_PRESETS",
    "BuiltinShape",
    "Candidate",
    "DeviceSpec",
    "JobEstimate",
    "MemoryEstimate",
    "ModelSource",
    "ParamBreakdown",
    "Peak",
    "PhaseEstimate",
    "Plan",
    "PlanInputError",
    "QualityEstimate",
    "Rejection",
    "Tolerance",
    "TrainingPlan",
    "Workload",
    "baseline_backends",
    "builtin_shapes",
    "device_spec",
    "kld_from_ppl",
    "measured_quality",
    "param_breakdown",
    "plan",
    "plan_devices",
    "plan_training",
    "prior_quality",
    "resolve_model",
    "results_path",
    "top1_from_kld",
    "with_measurements",
]
