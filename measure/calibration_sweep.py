"""``quantmatch calibrate-sweep``: how many calibration samples a calibrated method needs, measured.

:func:`sweep` quantizes a model with each method and scheme given, on each calibration text, at each
sample count, and measures every artifact's fidelity to the unquantized model on the same evaluation
tokens (:func:`quantmatch.sdk.evaluate.evaluate`: KL divergence, same top token, perplexity ratio).
Every point runs in a fresh subprocess (``python -m quantmatch.measure.calibration_sweep --worker``),
so memory and CPU time are its own: the quantization's wall and process CPU seconds
(:func:`time.process_time`, every thread of the process) and peak RSS are recorded beside its fidelity.

Calibration texts (:func:`parse_calibrations`):

- ``generic``: the text ``quantmatch quantize`` calibrates on by default (the bundled Tiny Shakespeare
  slice, :data:`quantmatch.sdk.calibration.DEFAULT_SOURCE`);
- ``in-domain``: the evaluation text itself from character :data:`IN_DOMAIN_FROM` on, written to
  ``OUT/in-domain-calibration.txt``; the evaluated tokens must end before that character (checked
  against the decoded evaluation tokens, else :class:`~quantmatch.sdk.errors.InputError`), so
  calibration and evaluation text are disjoint;
- ``LABEL=PATH`` or ``PATH``: a text file (a dataset name works too, as for ``quantize --calib``).

Resumable: artifacts go to ``OUT/<method>-<scheme>-<calibration>-n<samples>`` and results to
``OUT/calibration-sweep.json``, rewritten atomically after every point with every row it holds (a sweep of
other methods or texts into the same directory adds its rows). A point whose row is in that file with the
same settings (model, evaluation text and tokens, calibration length and seed, and the reference's form:
a change in how fidelity is measured evaluates every point again) is not run again; an artifact whose
manifest records the same calibration (source, samples, length, seed) is evaluated without quantizing
again. ``resume=False`` redoes both.

Where more samples stop helping (:data:`STOP_RULE`, :func:`plateaus`): per method, scheme and
calibration text, the smallest sample count ``n`` that no larger count beats: no larger count's mean KL
divergence is below ``n``'s by more than ``max(the 95% half-width of n's mean, 2% of it)``. A count that
more samples make *worse* (a small calibration set that transfers better) is where they stop helping too.

Nothing here names a method: they come from the caller, and the plugin host says which calibrate.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.errors import InputError

__all__ = ["GENERIC", "IN_DOMAIN", "IN_DOMAIN_FROM", "RESULTS_NAME", "STOP_REL", "STOP_RULE", "Plateau",
           "SweepPoint", "SweepReport", "SweepRow", "calibrating_methods", "parse_calibrations", "plateaus",
           "sweep"]

ProgressFn = Callable[[str, int, int], None]

GENERIC = "generic"
"""Calibration label: the text ``quantmatch quantize`` calibrates on by default (bundled Tiny Shakespeare)."""
IN_DOMAIN = "in-domain"
"""Calibration label: the evaluation text after :data:`IN_DOMAIN_FROM` characters (disjoint from the scored tokens)."""
IN_DOMAIN_FROM = 200_000
"""In-domain calibration text starts at this character of the evaluation text."""
IN_DOMAIN_MIN_CHARS = 50_000
"""The evaluation text must hold this many characters beyond :data:`IN_DOMAIN_FROM` for in-domain calibration."""
RESULTS_NAME = "calibration-sweep.json"
STOP_REL = 0.02
"""The relative tolerance of :data:`STOP_RULE` (2% of a count's mean KL divergence)."""
STOP_RULE = ("more samples stop helping at the smallest sample count n that no larger count beats: no larger "
             "count's mean KL divergence is below n's by more than max(the 95% half-width of n's mean, 2% of it)")


@dataclass(frozen=True)
class SweepPoint:
    """One quantization of the sweep."""

    method: str
    scheme: str
    calibration: str
    samples: int

    @property
    def key(self) -> str:
        return f"{self.method}-{self.scheme}-{self.calibration}-n{self.samples}"


@dataclass
class SweepRow:
    """What one point measured. ``status``: ``ok`` or ``failed``; ``quantized``: whether this run
    quantized it (``False``: the artifact was there already); ``reused``: the whole row came from the
    results file of an earlier run."""

    method: str
    scheme: str
    calibration: str
    calibration_source: str
    samples: int
    seq_len: int
    status: str = "ok"
    error: str = ""
    artifact: str = ""
    size_bytes: int | None = None
    quantize_wall_s: float | None = None
    quantize_cpu_s: float | None = None
    quantize_peak_rss_bytes: int | None = None
    eval_seconds: float | None = None
    perplexity: float | None = None
    fidelity: dict[str, Any] | None = None
    runtime: str = ""
    quantized: bool = False
    reused: bool = False

    @property
    def point(self) -> SweepPoint:
        return SweepPoint(self.method, self.scheme, self.calibration, self.samples)

    @property
    def kld(self) -> float | None:
        return None if self.fidelity is None else float(self.fidelity["kld_mean"])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key"] = self.point.key
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepRow:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Plateau:
    """Where more samples stop helping for one method, scheme and calibration text (:data:`STOP_RULE`).

    ``samples`` is ``None`` when fewer than two counts were measured; ``kld`` and ``band`` are its mean KL
    divergence and the tolerance no larger count beats it by; ``best``/``best_kld`` the count with the
    lowest mean; ``cpu_s``/``largest_cpu_s`` the quantization CPU seconds at ``samples`` and ``largest``."""

    method: str
    scheme: str
    calibration: str
    samples: int | None
    largest: int
    kld: float | None
    largest_kld: float
    band: float | None
    best: int
    best_kld: float
    cpu_s: float | None
    largest_cpu_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SweepReport:
    """One sweep: its settings, a row per point, and where more samples stop helping."""

    model: str
    text: str
    tokens: int
    window: int
    seq_len: int
    seed: int
    threads: int
    calibrations: dict[str, str]
    rows: list[SweepRow]
    started: str
    results: str
    seconds: float = 0.0
    reference: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[SweepRow]:
        return [r for r in self.rows if r.status != "ok"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    @property
    def quantized(self) -> int:
        """Points this run quantized (the others were resumed)."""
        return sum(r.quantized for r in self.rows)

    def plateaus(self) -> list[Plateau]:
        return plateaus(self.rows)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "rows"}
        d["rows"] = [r.to_dict() for r in self.rows]
        d["rule"] = STOP_RULE
        d["plateaus"] = [p.to_dict() for p in self.plateaus()]
        d["failed"] = len(self.failed)
        d["quantized"] = self.quantized
        return d


# ---- the rule ----------------------------------------------------------------------------------------------
def plateaus(rows: Sequence[SweepRow]) -> list[Plateau]:
    """:class:`Plateau` per method, scheme and calibration text of the ``ok`` rows (:data:`STOP_RULE`)."""
    groups: dict[tuple[str, str, str], list[SweepRow]] = {}
    for r in rows:
        if r.status == "ok" and r.fidelity is not None:
            groups.setdefault((r.method, r.scheme, r.calibration), []).append(r)
    out = []
    for (method, scheme, calib), group in groups.items():
        group = sorted(group, key=lambda r: r.samples)
        kld = [float(r.fidelity["kld_mean"]) for r in group]  # type: ignore[index]
        bands = [max(float(r.fidelity.get("kld_ci95") or 0.0), STOP_REL * m)  # type: ignore[union-attr]
                 for r, m in zip(group, kld, strict=True)]
        stop: int | None = None
        if len(group) > 1:
            stop = next(i for i in range(len(group)) if all(k >= kld[i] - bands[i] for k in kld[i + 1:]))
        best = min(range(len(group)), key=kld.__getitem__)
        last = group[-1]
        out.append(Plateau(method, scheme, calib, None if stop is None else group[stop].samples, last.samples,
                           None if stop is None else kld[stop], kld[-1], None if stop is None else bands[stop],
                           group[best].samples, kld[best],
                           None if stop is None else group[stop].quantize_cpu_s, last.quantize_cpu_s))
    return out


# ---- inputs ------------------------------------------------------------------------------------------------
def calibrating_methods() -> list[str]:
    """The methods whose :class:`~quantmatch.sdk.quantizer.Quantizer` declares ``needs_calibration`` and
    implements ``quantize`` (what a calibration sweep can say something about)."""
    from quantmatch.sdk.pluginhost import get_host
    from quantmatch.sdk.quantizer import Quantizer

    return sorted(name for name, e in get_host().quantizers.items()
                  if e.obj.needs_calibration and e.obj.quantize is not Quantizer.quantize)


def _check_method(method: str, scheme: str) -> None:
    """Raise :class:`InputError` for an unknown method, a scheme it does not write, or one that does not calibrate."""
    from quantmatch.sdk.errors import UnknownChoiceError
    from quantmatch.sdk.pluginhost import get_host
    from quantmatch.sdk.quantizer import Quantizer
    from quantmatch.sdk.scheme import SchemeError, parse_scheme

    host = get_host()
    entry = host.quantizers.get(method)
    if entry is None:
        raise UnknownChoiceError("method", method, host.quantizers)
    q: type[Quantizer] = entry.obj
    try:
        s = parse_scheme(scheme)
    except SchemeError as e:
        raise InputError(f"{method}: {e}") from e
    why = q.support.problems(s, q.name) + q.not_produced(s)
    if why:
        raise InputError(f"{method} {scheme}: {why[0]} (its schemes: {', '.join(q.schemes)})", choices=q.schemes)
    if not (q.needs_calibration or (not s.weight_only and not s.is_gguf)):
        raise InputError(f"{method} {scheme} does not calibrate, so its calibration size cannot matter; methods "
                         f"that calibrate: {', '.join(calibrating_methods())}", choices=calibrating_methods())


def parse_calibrations(items: Sequence[str]) -> dict[str, str | None]:
    """``{label: source}`` from ``generic``, ``in-domain``, ``LABEL=SOURCE`` or a path (label: its file
    name). ``generic`` maps to ``None`` (the bundled default) and ``in-domain`` to :data:`IN_DOMAIN`,
    resolved against the evaluation text by :func:`sweep`."""
    from quantmatch.sdk.calibration import check_source

    out: dict[str, str | None] = {}
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        label, sep, source = item.partition("=")
        if not sep:
            label, source = item, item
        label, source = label.strip(), source.strip()
        if not label or not source:
            raise InputError(f"calibration {raw!r}: give generic, in-domain, a text file or LABEL=FILE")
        if source == GENERIC:
            out[label] = None
        elif source == IN_DOMAIN:
            out[label] = IN_DOMAIN
        else:
            check_source(source)
            if not sep:
                label = Path(source).stem or source
            out[label] = source
    if not out:
        raise InputError("no calibration text: give generic, in-domain, a text file or LABEL=FILE")
    return out


def _in_domain_file(eval_text: str | Path | None, out_dir: Path) -> tuple[Path, int]:
    """Write the evaluation text after :data:`IN_DOMAIN_FROM` characters to ``out_dir``; ``(path, offset)``."""
    if eval_text is None or not Path(eval_text).expanduser().is_file():
        raise InputError("in-domain calibration is cut from the evaluation text: give --text with a long text "
                         "file (e.g. WikiText-2 raw test), or calibrate on generic / a file", fix="--text FILE")
    body = Path(eval_text).expanduser().read_text(encoding="utf-8", errors="replace")
    if len(body) < IN_DOMAIN_FROM + IN_DOMAIN_MIN_CHARS:
        raise InputError(f"in-domain calibration uses {eval_text} from character {IN_DOMAIN_FROM:,} on, but it has "
                         f"{len(body):,} characters (at least {IN_DOMAIN_FROM + IN_DOMAIN_MIN_CHARS:,} needed); give "
                         "a longer --text or calibrate on generic / a file")
    path = out_dir / "in-domain-calibration.txt"
    part = body[IN_DOMAIN_FROM:]
    if not path.is_file() or path.read_text(encoding="utf-8") != part:
        path.write_text(part, encoding="utf-8")
    return path, IN_DOMAIN_FROM


def _schemes_of(methods: Sequence[str], schemes: Mapping[str, str | Sequence[str]]) -> list[tuple[str, str]]:
    pairs = []
    for m in methods:
        given = schemes.get(m)
        if not given:
            raise InputError(f"no scheme for {m}: give METHOD=SCHEME (e.g. {m}=w4a16-g64)")
        for s in ([given] if isinstance(given, str) else list(given)):
            pairs.append((m, s.strip().lower()))
    return pairs


# ---- the sweep ---------------------------------------------------------------------------------------------
def sweep(model: str, methods: Sequence[str], schemes: Mapping[str, str | Sequence[str]],
          sample_counts: Sequence[int], calibrations: Sequence[str] | Mapping[str, str | None],
          eval_text: str | Path | None, tokens: int, seq_len: int, seed: int, threads: int,
          out_dir: str | Path, progress: ProgressFn | None = None, resume: bool = True, *, window: int = 1024,
          timeout: float = 7200, worker: Sequence[str] | None = None) -> SweepReport:
    """Quantize and evaluate every (method, scheme, calibration text, sample count); see the module docstring.

    ``schemes`` maps each method to its scheme (or schemes); ``calibrations`` are the specs of
    :func:`parse_calibrations` (or their parsed mapping); ``eval_text`` a text file (``None``: the bundled
    held-out text), scored on its first ``tokens`` tokens in ``window``-token windows; ``seq_len`` and
    ``seed`` shape the calibration samples; ``threads`` is every subprocess's thread count. Bad input raises
    :class:`~quantmatch.sdk.errors.InputError` before anything runs; a point that fails is a ``failed``
    row and the sweep goes on. ``worker`` replaces the subprocess command (tests)."""
    from quantmatch.sdk.calibration import CalibrationSpec

    methods = [m.strip().lower() for m in methods if m.strip()]
    if not methods:
        raise InputError("no method to sweep")
    counts = sorted({int(n) for n in sample_counts})
    if not counts or counts[0] < 1 or any(int(n) != n for n in sample_counts):
        raise InputError(f"sample counts must be positive integers, got {list(sample_counts)}")
    if tokens < 2 or window < 2 or threads < 1:
        raise InputError(f"tokens and window must be at least 2 and threads at least 1 (got {tokens}, {window}, "
                         f"{threads})")
    CalibrationSpec(None, counts[0], seq_len, seed)  # raises for a seq_len under 2
    lower = {m.lower(): v for m, v in schemes.items()}
    pairs = _schemes_of(methods, lower)
    for m, s in pairs:
        _check_method(m, s)
    cals = dict(calibrations) if isinstance(calibrations, Mapping) else parse_calibrations(calibrations)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is not a directory; give --out a directory for the artifacts and results")
    if eval_text is not None and not Path(eval_text).expanduser().is_file():
        raise InputError(f"{eval_text}: no such text file (give a UTF-8 text file, or leave --text out for the "
                         "bundled held-out text)")
    from quantmatch.sdk.pipeline import plan_quantization

    for m, s in pairs:  # shape checks, missing packages: before anything runs
        plan_quantization(model, m, s).raise_if_fatal()
    out.mkdir(parents=True, exist_ok=True)
    offset = None
    sources: dict[str, str] = {}
    for label, src in cals.items():
        if src == IN_DOMAIN:
            path, offset = _in_domain_file(eval_text, out)
            sources[label] = str(path.resolve())
        elif src is None:
            from quantmatch.sdk.calibration import DEFAULT_SOURCE

            sources[label] = DEFAULT_SOURCE
        else:
            path = Path(src).expanduser()
            sources[label] = str(path.resolve()) if path.is_file() else src
    text = str(Path(eval_text).expanduser().resolve()) if eval_text is not None else None
    runner = _Jobs(list(worker) if worker else [sys.executable, "-m", "quantmatch.measure.calibration_sweep",
                                                 "--worker"], threads, timeout)
    started = time.perf_counter()
    report = SweepReport(model, text or "", tokens, window, seq_len, seed, threads, sources, [],
                         time.strftime("%Y-%m-%dT%H:%M:%S%z"), str(out / RESULTS_NAME))
    points = [SweepPoint(m, s, label, n) for m, s in pairs for label in sources for n in counts]
    total = len(points) + 1
    if progress:
        progress("reference", 0, total)
    ok, ref, err = runner.run({"kind": "reference", "model": model, "text": text, "tokens": tokens,
                               "window": window, "threads": threads})
    if not ok:
        from quantmatch.sdk.errors import RunError

        raise RunError(f"the reference distributions of {model} could not be computed: {err}")
    report.reference = ref
    if offset is not None and ref.get("chars") is not None and int(ref["chars"]) > offset:
        raise InputError(f"the first {tokens:,} evaluation tokens reach character {ref['chars']:,}, past "
                         f"{offset:,} where in-domain calibration starts; score fewer --tokens")
    settings = {"model": model, "text": text, "text_sha256": _sha(text), "tokens": tokens, "window": window,
                "seed": seed, "seq_len": seq_len,  # and how fidelity is measured: a change re-evaluates every row
                "reference": {k: ref.get(k) for k in ("runtime", "dtype", "form", "top_k")}}
    previous = _previous_rows(out / RESULTS_NAME, settings) if resume else {}
    for i, p in enumerate(points, start=1):
        if progress:
            progress(p.key, i, total)
        row = previous.get(p.key)
        if row is not None and row.status == "ok" and row.calibration_source == sources[p.calibration] \
                and Path(row.artifact).is_dir():
            row.reused, row.quantized = True, False
        else:
            row = _run_point(runner, p, model, sources[p.calibration], out, settings, threads, resume)
        report.rows.append(row)
        report.seconds = time.perf_counter() - started
        _write(out / RESULTS_NAME, settings, report)
    if progress:
        progress("done", total, total)
    return report


def _sha(path: str | None) -> str:
    if path is None:
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _previous_rows(path: Path, settings: Mapping[str, Any]) -> dict[str, SweepRow]:
    """The rows of an earlier run with the same settings (empty when there is none or they differ)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    if data.get("settings") != dict(settings):
        return {}
    return {r.get("key", ""): SweepRow.from_dict(r) for r in data.get("rows", [])}


def _write(path: Path, settings: Mapping[str, Any], report: SweepReport) -> None:
    """Rewrite the results file atomically with a report of this run's rows, then the rows of other points
    already in the file with the same settings (an earlier run's, or a sweep of other methods or texts into
    the same directory): its plateaus, failures and calibration texts are those of every row in it."""
    done = {r.point.key for r in report.rows}
    others = [r for k, r in _previous_rows(path, settings).items() if k not in done]
    calibrations = dict(report.calibrations)
    for r in others:
        calibrations.setdefault(r.calibration, r.calibration_source)
    merged = SweepReport(**{**{k: getattr(report, k) for k in report.__dataclass_fields__},
                            "rows": [*report.rows, *others], "calibrations": calibrations})
    payload = {"settings": dict(settings), **merged.to_dict()}
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, default=str)
    os.replace(tmp, path)


def _artifact_matches(artifact: Path, p: SweepPoint, cal: Mapping[str, Any]) -> bool:
    """Whether ``artifact`` was written by the same method, scheme and calibration (source, samples, length, seed)."""
    from quantmatch.sdk.artifact import ArtifactError, read_manifest

    if not (artifact / "quantmatch.json").is_file():
        return False
    try:
        m = read_manifest(artifact)
    except (ArtifactError, OSError, ValueError):
        return False
    return bool(m.method == p.method and m.details.get("calibration") == dict(cal))


def _run_point(runner: _Jobs, p: SweepPoint, model: str, source: str, out: Path, settings: Mapping[str, Any],
               threads: int, resume: bool) -> SweepRow:
    from quantmatch.sdk.calibration import CalibrationSpec

    artifact = out / p.key
    cal = CalibrationSpec(source, p.samples, int(settings["seq_len"]), int(settings["seed"]))
    quantize = not (resume and _artifact_matches(artifact, p, cal.to_dict()))
    row = SweepRow(p.method, p.scheme, p.calibration, source, p.samples, cal.seq_len, artifact=str(artifact),
                   quantized=quantize)
    ok, res, err = runner.run({"kind": "point", "model": model, "method": p.method, "scheme": p.scheme,
                               "calibration": source, "samples": p.samples, "seq_len": cal.seq_len,
                               "seed": cal.seed, "out": str(artifact), "quantize": quantize,
                               "text": settings["text"], "tokens": settings["tokens"],
                               "window": settings["window"], "threads": threads})
    if not ok:
        row.status, row.error = "failed", err
        return row
    q = res.get("quantize") or {}
    row.quantize_wall_s, row.quantize_cpu_s = q.get("wall_s"), q.get("cpu_s")
    row.quantize_peak_rss_bytes = q.get("peak_rss_bytes")
    row.size_bytes, row.eval_seconds = res.get("size_bytes"), res.get("eval_seconds")
    row.perplexity, row.fidelity = res.get("perplexity"), res.get("fidelity")
    row.runtime = str(res.get("runtime") or "")
    if row.fidelity is None:
        row.status, row.error = "failed", "the evaluation measured no fidelity (no reference)"
    return row


class _Jobs:
    """Runs one job in a fresh subprocess (JSON in, JSON out), as :class:`~quantmatch.measure.bench.Bench` does."""

    def __init__(self, worker: list[str], threads: int, timeout: float) -> None:
        self.worker, self.threads, self.timeout = worker, threads, timeout

    def run(self, job: Mapping[str, Any]) -> tuple[bool, Any, str]:
        from quantmatch.measure.jobs import run_job

        return run_job(self.worker, job, self.threads, self.timeout)


# ---- worker ------------------------------------------------------------------------------------------------
def _reference_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Compute (or read from the cache) the reference distributions; also how many characters of the text
    the evaluated tokens cover (decoded with the model's tokenizer)."""
    from quantmatch.sdk.evaluate import _load_text, reference_for

    body, label = _load_text(job.get("text"))
    ref, info = reference_for(job["model"], body, label, int(job["tokens"]), int(job["window"]),
                              threads=int(job["threads"]))
    info = dict(info)
    try:
        from transformers import AutoTokenizer

        from quantmatch.sdk.models import resolve_model

        tok = AutoTokenizer.from_pretrained(str(resolve_model(job["model"]).hf_dir))
        info["chars"] = len(tok.decode([int(t) for t in ref.ids]))
    except Exception:  # the span check is a safeguard; without a tokenizer it is skipped
        info["chars"] = None
    return info


def _point_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Quantize (unless told the artifact is there), time it, then evaluate against the reference."""
    from quantmatch.sdk.evaluate import evaluate
    from quantmatch.sdk.runner import peak_rss_bytes

    out = Path(job["out"])
    timing_file = out.with_name(out.name + ".timing.json")
    if job["quantize"]:
        import torch

        from quantmatch.sdk.calibration import CalibrationSpec
        from quantmatch.sdk.pipeline import quantize
        from quantmatch.sdk.pluginhost import get_host

        torch.set_num_threads(int(job["threads"]))
        cal = CalibrationSpec(job["calibration"], int(job["samples"]), int(job["seq_len"]), int(job["seed"]))
        q = get_host().quantizers[job["method"]].obj
        threaded = any(s.key == "threads" for s in q.options.specs())
        options: dict[str, Any] = {"threads": int(job["threads"])} if threaded else {}
        wall, cpu = time.perf_counter(), time.process_time()
        quantize(job["model"], job["method"], job["scheme"], out, calibration=cal, force=True, seed=int(job["seed"]),
                 **options)
        timing = {"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
                  "peak_rss_bytes": peak_rss_bytes()}
        timing_file.write_text(json.dumps(timing), encoding="utf-8")
    else:
        try:
            timing = json.loads(timing_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            timing = {}
    res = evaluate(str(out), text=job.get("text"), tokens=int(job["tokens"]), window=int(job["window"]),
                   threads=int(job["threads"]), reference=job["model"])
    return {"quantize": timing, "eval_seconds": round(res.seconds, 3), "perplexity": res.perplexity,
            "size_bytes": res.size_bytes, "runtime": res.runtime,
            "fidelity": res.fidelity.to_dict() if res.fidelity else None}


def worker_main(job_file: str, result_file: str) -> int:
    """Run one job (``reference`` or ``point``) and write ``{"ok", "result"|"error"}`` as JSON."""
    from quantmatch.measure.jobs import worker_main as run

    return run(job_file, result_file, {"reference": _reference_job, "point": _point_job})


if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3]))
    sys.exit("usage: python -m quantmatch.measure.calibration_sweep --worker JOB.json RESULT.json")
