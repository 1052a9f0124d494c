"""Quantize a model with a method plugin and load the result back: the orchestration API.

:func:`quantize` resolves the model, runs the registry's checks from the config alone (a pruned
combination raises :class:`QuantizeError` with the reasons before any weight is loaded), then lets
the method plugin write into a temporary directory beside ``out``, adds the ``quantmatch.json``
manifest and renames the directory into place. :func:`load_artifact` reads the manifest and hands
the directory to the plugin that wrote it.

A method plugin takes part by implementing ``Quantizer.quantize(source, scheme, out_dir, options=...)``
(``source`` is a :class:`~quantmatch.sdk.models.ModelSource`; ``options`` a mapping with ``rules``,
``calibration``, ``seed``, ``progress`` and the values of the options the method declares in
``Quantizer.options``, validated before anything loads) returning an object with
``to_dict()``, and a static ``load_artifact(directory, dtype=None)`` returning ``(model, tokenizer)``
(``tokenizer`` ``None`` when the model tokenizes itself, as llama.cpp models do). A plugin that takes
layer rules declares the precisions it produces in ``layer_precisions``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.artifact import (
    Manifest,
    atomic_output,
    check_output,
    job_dir_for,
    library_versions,
    read_manifest,
    write_manifest,
)
from quantmatch.sdk.calibration import CalibrationSpec, check_source
from quantmatch.sdk.errors import InputError
from quantmatch.sdk.layerwise import FLOAT_PRECISIONS, LayerRule, RuleHits, check_rules, rules_from
from quantmatch.sdk.models import ModelSource, resolve_model
from quantmatch.sdk.options import OptionsError
from quantmatch.sdk.quantizer import Problem, Quantizer
from quantmatch.sdk.scheme import Scheme, parse_scheme

__all__ = [
    "LoadedArtifact",
    "QuantizeError",
    "QuantizePlan",
    "QuantizeResult",
    "calibrates",
    "load_artifact",
    "plan_quantization",
    "quantize",
    "stream_problems",
]

ProgressFn = Callable[[str, int, int], None]
_VERSIONED = ("quantmatch", "torch", "transformers", "safetensors", "optimum-quanto", "hqq", "gguf",
              "llama-cpp-python")


class QuantizeError(InputError):
    """A request the checks refuse (before loading weights); ``problems`` holds the reasons."""

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass
class QuantizePlan:
    """A checked request: the source, method, scheme, layer rules and what the checks found."""

    source: ModelSource
    quantizer: type[Quantizer]
    scheme: Scheme
    rules: tuple[LayerRule, ...] = ()
    rule_hits: list[RuleHits] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.fatal]

    def raise_if_fatal(self) -> None:
        if self.fatal:
            method, scheme = self.quantizer.name, self.scheme
            reasons = "\n".join(f"  - {p}" for p in self.fatal)
            menu = ", ".join(self.quantizer.schemes)
            raise QuantizeError(f"{method} cannot quantize {self.source.spec} to {scheme}:\n{reasons}\n"
                                f"{method} schemes: {menu}", self.fatal)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.source.spec, "method": self.quantizer.name, "scheme": str(self.scheme),
                "problems": [{"text": p.text, "fatal": p.fatal, "fix": p.fix} for p in self.problems],
                "rules": [h.to_dict() for h in self.rule_hits]}


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize` produced: the artifact directory, its scheme and its measured size."""

    artifact: Path
    method: str
    scheme: str
    requested_scheme: str
    source: str
    size_bytes: int
    seconds: float
    manifest: Manifest
    warnings: tuple[str, ...] = ()

    def load(self, dtype: str | None = None) -> LoadedArtifact:
        return load_artifact(self.artifact, dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.artifact), "method": self.method, "scheme": self.scheme,
                "requested_scheme": self.requested_scheme, "source": self.source, "size_bytes": self.size_bytes,
                "seconds": round(self.seconds, 3), "warnings": list(self.warnings), "manifest": self.manifest.to_dict()}


def _quantizer(method: str) -> type[Quantizer]:
    from quantmatch.sdk.errors import UnknownChoiceError
    from quantmatch.sdk.pluginhost import get_host

    host = get_host()
    entry = host.quantizers.get(method.strip().lower()) if method else None
    if entry is None:
        raise UnknownChoiceError("method", method, host.quantizers)
    return entry.obj  # type: ignore[no-any-return]


def calibrates(q: type[Quantizer], scheme: Scheme) -> bool:
    """Whether ``q`` draws calibration samples for ``scheme``."""
    return q.needs_calibration or (not scheme.weight_only and not scheme.is_gguf)



def stream_problems(q: type[Quantizer], stream: bool | None, resume: str = "auto",
                    offload_dir: str | Path | None = None) -> list[Problem]:
    """Streaming options a method that loads the whole model cannot honour (fatal), with the methods that can."""
    asked = [flag for flag, on in (("--resume", resume == "resume"), ("--restart", resume == "restart"),
                                   ("--offload-dir", bool(offload_dir)), ("stream=True", stream is True)) if on]
    if q.streams or not asked:
        return []
    from quantmatch.sdk.pluginhost import get_host

    able = sorted(e.obj.name for e in get_host().quantizers.values() if getattr(e.obj, "streams", False))
    return [Problem(f"{q.name} loads the whole model, it does not stream block by block: {', '.join(asked)} "
                    "cannot apply", fix=f"drop {', '.join(asked)}, or use a method that streams: {', '.join(able)}")]


def plan_quantization(model: str | Path | ModelSource, method: str, scheme: str | Scheme,
                      preset: str | None = None, rules: Iterable[str | LayerRule] = (),
                      options: Mapping[str, Any] | None = None) -> QuantizePlan:
    """Resolve and check a request from configs alone; nothing is loaded or written.

    Problems: ``options`` the method does not declare or of the wrong type (``Quantizer.options``), the
    method's checks (scheme support, architecture, group-size divisibility), missing packages, layer
    rules with precisions the method cannot produce (fatal) or hitting nothing.
    """
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    q = _quantizer(method)
    s = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    plan = QuantizePlan(source, q, s, rules_from(preset, rules))
    try:
        q.options.parse(options, method=q.name)
    except OptionsError as e:
        plan.problems.append(Problem(e.problem, fix=e.valid))
    plan.problems.extend(q().check(source.info, s))
    plan.problems.extend(Problem(w) for w in q.not_produced(s))
    missing = q().missing()
    if missing:
        plan.problems.append(Problem(f"{q.name} needs {', '.join(missing)}, which is not installed",
                                     fix=q.install_hint or f"pip install {' '.join(missing)}"))
    if plan.rules:
        allowed = getattr(q, "layer_precisions", None)
        if allowed is None:
            plan.problems.append(Problem(f"{q.name} does not take per-module precision rules",
                                         fix="drop --preset"))
        plan.rule_hits = check_rules(source.info, plan.rules)
        for h in plan.rule_hits:
            p = h.rule.precision
            if allowed is not None and p not in FLOAT_PRECISIONS and p not in allowed:
                plan.problems.append(Problem(f"rule {h.rule.name!r} asks for {p}, which {q.name} does not produce",
                                             fix=f"{q.name} layer precisions: {', '.join(allowed)}"))
            if h.unused:
                plan.problems.append(Problem(f"rule {h.rule.name!r} ({', '.join(h.rule.patterns)}) hits no "
                                             f"module of {source.spec}", fatal=False))
    return plan


def quantize(model: str | Path | ModelSource, method: str, scheme: str | Scheme, out: str | Path,
             preset: str | None = None, calibration: CalibrationSpec | str | Path | None = None,
             force: bool = False, seed: int = 0, *, rules: Iterable[str | LayerRule] = (),
             progress: ProgressFn | None = None, artifact_format: str | None = None,
             allow_requantize: bool = False, stream: bool | None = None, resume: str = "auto",
             offload_dir: str | Path | None = None, **options: Any) -> QuantizeResult:
    """Quantize ``model`` with ``method`` to ``scheme`` and write the artifact directory ``out``.

    ``model`` is a model directory, ``.gguf`` file, hub id or bundled alias (``smollm2-135m``).
    ``preset``/``rules`` set per-module precisions (:mod:`quantmatch.sdk.layerwise`). ``calibration`` is
    a :class:`CalibrationSpec`, or a text file / dataset name (default: the shipped text). Extra
    ``options`` are the method's own (``Quantizer.options``: ``axis`` for HQQ, ``imatrix`` for GGUF,
    ``exclude``, ``dtype`` ...); the method gets them validated, with the defaults filled in.

    Raises :class:`~quantmatch.sdk.options.OptionsError` for an option the method does not declare or a
    value of the wrong type, :class:`~quantmatch.sdk.artifact.OutputExistsError` when ``out`` exists and
    ``force`` is false, and :class:`QuantizeError` when the checks refuse the request; all before any
    weight is loaded. ``out`` is written atomically: an interruption leaves no partial directory.

    ``artifact_format`` (``gguf``, ``onnx`` ...; default: the method's own) writes the method's artifact
    and then exports it exactly into that format (:func:`~quantmatch.sdk.export.export_artifact`; the
    intermediate is not kept); a grid the format cannot hold is refused first unless ``allow_requantize``.

    Methods that declare a block step (GPTQ, AWQ, SmoothQuant, round-to-nearest) read the checkpoint
    one decoder block at a time instead of loading the model (``stream=False`` loads it as before), and
    keep their progress beside ``out`` (``.{name}.quantmatch-job``): the same call after an interruption
    continues from the first unfinished block. ``resume``: ``auto`` (continue a matching job, else
    start), ``resume`` (one must exist), ``restart`` (discard it). ``offload_dir`` carries calibration
    activations on disk there instead of in memory. A job left by another request is refused
    (:class:`~quantmatch.plugins.methods._stream_job.StaleJobError`, an ``InputError``).
    """
    method_q = _quantizer(method)
    if artifact_format and artifact_format.strip().lower() != method_q.artifact_format:
        return _quantize_and_export(model, method, scheme, out, artifact_format, allow_requantize, preset=preset,
                                    calibration=calibration, force=force, seed=seed, rules=rules,
                                    progress=progress, stream=stream, resume=resume, offload_dir=offload_dir,
                                    **options)
    values = method_q.options.parse(options, method=method_q.name).to_dict()
    check_output(out, force)
    if isinstance(calibration, CalibrationSpec):
        cal = calibration
    else:
        cal = CalibrationSpec(source=str(calibration) if calibration else None, seed=seed)
    check_source(cal.source)
    plan = plan_quantization(model, method, scheme, preset, rules, options=options)
    plan.problems.extend(stream_problems(plan.quantizer, stream, resume, offload_dir))
    if cal.source and not calibrates(plan.quantizer, plan.scheme):
        plan.problems.append(Problem(f"{plan.quantizer.name} {plan.scheme} does not calibrate; the calibration "
                                     f"text {cal.source} is not used", fatal=False))
    plan.raise_if_fatal()
    opts: dict[str, Any] = {"rules": plan.rules, "calibration": cal, "seed": seed, "progress": progress, **values,
                            "stream": stream, "job_dir": job_dir_for(out), "resume": resume,
                            "offload_dir": str(offload_dir) if offload_dir else None}
    started = time.perf_counter()
    q = plan.quantizer
    with atomic_output(out, force) as tmp:
        produced = q().quantize(plan.source, plan.scheme, tmp, options=opts)
        details = dict(produced.to_dict()) if hasattr(produced, "to_dict") else dict(produced or {})
        details.pop("path", None)
        if preset:
            details["preset"] = preset
        if plan.rules:
            details["rules"] = [h.rule.to_dict() for h in plan.rule_hits]
        manifest = Manifest(
            method=q.name, scheme=str(details.pop("scheme", plan.scheme)), artifact_format=q.artifact_format,
            source_model=plan.source.spec, model_type=plan.source.info.model_type,
            versions=library_versions((*_VERSIONED, *q.versioned)),
            seconds=round(time.perf_counter() - started, 3),
            details=details)
        write_manifest(tmp, manifest)
    return QuantizeResult(Path(out), q.name, manifest.scheme, str(plan.scheme), plan.source.spec,
                          manifest.size_bytes, manifest.seconds, manifest, tuple(str(p) for p in plan.warnings))


def _quantize_and_export(model: Any, method: str, scheme: str | Scheme, out: str | Path, to: str,
                         allow_requantize: bool, *, force: bool, progress: ProgressFn | None,
                         **kw: Any) -> QuantizeResult:
    import shutil

    from quantmatch.sdk.export import export_artifact, export_route

    method_q = _quantizer(method)
    s = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    export_route(method_q.artifact_format, s, to, allow_requantize)
    check_output(out, force)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    # a stable name for the intermediate, so that an interrupted streamed job resumes
    source = target.absolute().parent / f".{target.name}.quantmatch-source"
    try:
        first = quantize(model, method, s, source, force=True, progress=progress, **kw)
        done = export_artifact(first.artifact, to, target, force=force, allow_requantize=allow_requantize,
                               progress=progress,
                               source_label=f"{method_q.artifact_format} artifact written and removed by quantize")
    finally:
        shutil.rmtree(source, ignore_errors=True)
    return QuantizeResult(target, first.method, first.scheme, first.requested_scheme, first.source,
                          done.size_bytes, first.seconds + done.seconds, done.manifest, first.warnings)


@dataclass
class LoadedArtifact:
    """An artifact loaded for use: ``model`` (a torch module, or a llama.cpp model for GGUF) and
    ``tokenizer`` (``None`` where the model tokenizes itself)."""

    path: Path
    manifest: Manifest
    model: Any
    tokenizer: Any = None


def _format_owner(manifest: Manifest) -> type[Quantizer]:
    """The plugin that loads an exported artifact: the one that exported it, else any writing its format."""
    from quantmatch.sdk.pluginhost import get_host

    host = get_host()
    named = host.quantizers.get(str(manifest.details.get("exported_by", "")))
    if named is not None and named.obj.artifact_format == manifest.artifact_format:
        return named.obj  # type: ignore[no-any-return]
    for name in sorted(host.quantizers):
        if host.quantizers[name].obj.artifact_format == manifest.artifact_format:
            return host.quantizers[name].obj  # type: ignore[no-any-return]
    raise QuantizeError(f"no installed plugin loads {manifest.artifact_format} artifacts "
                        f"(the manifest's method {manifest.method} writes another format)")


def load_artifact(path: str | Path, dtype: str | None = None) -> LoadedArtifact:
    """Load an artifact written by :func:`quantize`, dispatching on its manifest's method (or, for an
    artifact written by :func:`~quantmatch.sdk.export.export_artifact`, on its format).

    ``dtype`` (``float32``/``float16``/``bfloat16``) is the float type torch artifacts compute in
    (default: the one they were stored in).
    """
    d = Path(path)
    manifest = read_manifest(d)
    q = _quantizer(manifest.method)
    if manifest.artifact_format != q.artifact_format:  # exported (quantmatch export): the format's plugin loads it
        q = _format_owner(manifest)
    loader = getattr(q, "load_artifact", None)
    if loader is None:
        raise QuantizeError(f"{d}: the {q.name} plugin cannot load artifacts (it has no load_artifact())")
    missing = q().missing()
    if missing:
        raise QuantizeError(f"{d}: loading {q.name} artifacts needs {', '.join(missing)}, which is not installed "
                            f"({q.install_hint or 'pip install ' + ' '.join(missing)})")
    model, tokenizer = loader(d, dtype)
    return LoadedArtifact(d, manifest, model, tokenizer)
