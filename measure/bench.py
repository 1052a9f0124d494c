"""``quantmatch bench``: run combinations on this machine, each in a fresh subprocess, and compare them.

:class:`Bench` plans the combinations (the ones listed, or every combination the registry marks
runnable on the local device, always with the reference baseline first), then for each one in its
own subprocess (so that memory figures do not mix and a crash takes down only that combination):

1. prepares the artifact unless it is cached (``quantmatch.quantize`` with the method plugin; a float
   baseline that its runner cannot load from the model itself is prepared by the runner,
   :meth:`~quantmatch.sdk.runner.Runner.prepare_baseline`) under
   ``<cache>/bench-artifacts/<model>/<method>-<scheme>``; a backend that does not load the method's
   format but runs an exact export of it (GPTQ on llama.cpp) gets the export,
   ``<method>-<scheme>-<format>`` (:func:`~quantmatch.sdk.export.export_artifact`);
2. measures it with the backend's runner, found through the plugin host
   (:func:`~quantmatch.measure.run.measure`).

A scheme's ``-kv<fmt>`` suffix (``gguf-q4_0-kvq8_0``) is a KV-cache format the runner sets at run time
(:attr:`~quantmatch.sdk.runner.Runner.kv_caches`): the artifact is the scheme's without the suffix (the same
cached directory), and the run measures with that KV cache (:attr:`~quantmatch.sdk.runner.MeasureConfig.kv_cache`),
perplexity and fidelity included; a runner that does not run the format skips the combination with the
formats it runs. ``MeasureConfig.context`` (``bench --context N``) starts the timed decodes after an
``N``-token prompt, and every row records the KV format, the context and the KV-cache bytes measured.

The machine is measured once (:func:`~quantmatch.measure.machine.measure_machine`, also in a
subprocess). Each decode figure gets its roofline; each speed its ratio to the reference baseline of
the same run (:data:`BASELINE`: fp32 on the backend that declares itself the reference, PyTorch);
each perplexity its change from that baseline. Results go to the store
(:mod:`.store`). A combination whose backend or method is not installed is ``skipped`` with the
``pip install`` line; one whose subprocess fails or crashes is ``failed`` with its error, and the run
goes on (:attr:`BenchReport.exit_code` is 1 when anything failed). A combination whose perplexity pass
would exceed the time budget at its measured prefill speed is ``skipped`` with that figure.

The worker side is ``python -m quantmatch.measure.bench --worker JOB RESULT`` (JSON files).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.errors import InputError
from quantmatch.sdk.runner import MeasureConfig, Runner, RunnerError, default_threads

__all__ = ["Bench", "BenchReport", "Combo", "ComboResult", "model_key", "parse_combos",
           "reference_combo"]

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Combo:
    """One combination: ``method`` (``None`` for an unquantized baseline), scheme and backend."""

    method: str | None
    scheme: str
    backend: str

    @classmethod
    def parse(cls, text: str) -> Combo:
        """``method:scheme:backend`` (method ``none`` or ``-`` for a baseline, e.g. ``none:fp32:torch``)."""
        parts = [p.strip() for p in text.split(":")]
        if len(parts) != 3 or not all(parts):
            raise InputError(f"{text!r}: a combination is method:scheme:backend (e.g. gguf:gguf-q8_0:llama.cpp, "
                             "none:fp32:torch)")
        method = None if parts[0].lower() in ("none", "-") else parts[0].lower()
        return cls(method, parts[1].lower(), parts[2].lower())

    @property
    def key(self) -> str:
        return f"{self.method or 'none'}:{self.scheme}:{self.backend}"

    @property
    def is_baseline(self) -> bool:
        return self.method is None


def reference_combo() -> Combo:
    """The reference every speed ratio and perplexity change is computed against: fp32 on the backend
    that declares itself the reference (:attr:`quantmatch.sdk.backend.Backend.reference`)."""
    from quantmatch.sdk.pluginhost import get_host

    return Combo(None, "fp32", get_host().reference_backend())


def __getattr__(name: str) -> Any:
    if name == "BASELINE":  # module constant of earlier versions, now asked of the plugins
        return reference_combo()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_combos(text: str) -> list[Combo]:
    """Comma-separated ``method:scheme:backend`` items."""
    return [Combo.parse(t) for t in text.split(",") if t.strip()]


def model_key(spec: str) -> str:
    """The model id results are stored under: a bundled alias or hub id as given, else the directory
    or GGUF file name (what the planner matches)."""
    p = Path(spec)
    if p.exists():
        return p.stem if p.is_file() else p.resolve().name
    return spec.strip()


@dataclass
class ComboResult:
    """What happened to one combination. ``status``: ``ok``, ``failed`` or ``skipped``."""

    combo: Combo
    status: str
    level: str = ""
    reason: str = ""
    install: str = ""
    artifact: str = ""
    size_bytes: int | None = None
    run: dict[str, Any] | None = None
    roofline: dict[str, Any] | None = None
    roofline_batch: dict[str, Any] | None = None
    ppl_delta_pct: float | None = None
    fidelity: dict[str, Any] | None = None
    """Fidelity to the reference model on the perplexity tokens (:class:`~quantmatch.sdk.fidelity.Fidelity`)."""
    ratios: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["combo"] = self.combo.key
        d.update(method=self.combo.method or "none", scheme=self.combo.scheme, backend=self.combo.backend)
        return d


@dataclass
class BenchReport:
    """One ``quantmatch bench`` run."""

    model: str
    device: str
    device_name: str
    threads: int
    config: dict[str, Any]
    machine: dict[str, Any]
    results: list[ComboResult]
    started: str
    seconds: float = 0.0
    store: str = ""
    reference: str = ""
    """The backend of the reference baseline every ratio is computed against."""
    fidelity_reference: dict[str, Any] = field(default_factory=dict)
    """The reference distributions fidelity is measured against (model, runtime, cache file), or the error."""

    @property
    def failed(self) -> list[ComboResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def result(self, key: str) -> ComboResult | None:
        return next((r for r in self.results if r.combo.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "results"}
        d["results"] = [r.to_dict() for r in self.results]
        d["failed"] = len(self.failed)
        return d


# ---- planning ------------------------------------------------------------------------------------
def _can_quantize(quantizer: type[Any]) -> bool:
    from quantmatch.sdk.quantizer import Quantizer

    return quantizer.quantize is not Quantizer.quantize


class Bench:
    """Plan and run a benchmark (see the module docstring).

    ``runners`` maps backend names to runner classes that replace the backends' own (default: none,
    every backend's runner comes from its plugin);
    ``worker`` is the command prefix that runs one job (default: this module's ``--worker``);
    ``work_dir`` holds cached artifacts (default: ``<cache>/bench-artifacts``); ``store`` is the results store
    path (default: :func:`~quantmatch.sdk.store.results_path`) and ``save`` whether to write it;
    ``timeout`` bounds each subprocess (seconds); ``budget`` is the perplexity time one combination may
    take at its measured prefill speed (slower ones are ``skipped`` with that figure; ``None``: no
    limit); ``quick_machine`` trims the machine measurement (tests).
    """

    def __init__(self, model: str, *, config: MeasureConfig | None = None, threads: int | None = None,
                 runners: Mapping[str, type[Runner]] | None = None, worker: Sequence[str] | None = None,
                 work_dir: str | Path | None = None, store: str | Path | None = None, save: bool = True,
                 requantize: bool = False, timeout: float = 900, text: str | Path | None = None,
                 registry: Any = None, quick_machine: bool = False, budget: float | None = 240) -> None:
        from quantmatch.sdk.models import cache_root

        self.model = model
        self.config = config or MeasureConfig()
        self.threads = int(threads or default_threads())
        self.runners = dict(runners or {})
        self.worker = list(worker) if worker else [sys.executable, "-m", "quantmatch.measure.bench", "--worker"]
        self.work_dir = Path(work_dir) if work_dir else cache_root() / "bench-artifacts"
        self.store = store
        self.save = save
        self.requantize = requantize
        self.timeout = timeout
        self.text = str(text) if text else None
        self.quick_machine = quick_machine
        self.budget = budget
        if registry is None:
            from quantmatch.registry import Registry

            registry = Registry()
        self.registry = registry
        self._runner_errors: dict[str, str] = {}
        self._reference: str | None = None
        self.baseline = Combo(None, "fp32", registry.host.reference_backend())

    def runner_class(self, backend: str) -> type[Runner] | None:
        """The runner that measures ``backend`` here (an override given to the bench, else its plugin's)."""
        if backend in self.runners:
            return self.runners[backend]
        return self.registry.host.runner_class(backend)  # type: ignore[no-any-return]

    # -- planning --
    def plan(self, combos: Sequence[Combo] | None = None, all_runnable: bool = False
             ) -> tuple[list[ComboResult], list[ComboResult]]:
        """``(to run, skipped)``: every combination with its verdict level; ``to run`` starts with the
        reference baseline. Unknown methods/backends raise :class:`~quantmatch.registry.UnknownChoiceError`."""
        from quantmatch.sdk.models import resolve_model

        info = resolve_model(self.model).info
        dev = self.registry.local()
        wanted: list[Combo] = [self.baseline]
        if all_runnable:
            ref = self.baseline.backend
            for backend in sorted(self.registry.host.runnable_backends(), key=lambda b: b != ref):
                cls = self._runner_or_none(backend)
                wanted += [c for s in (cls.baselines if cls else ()) if (c := Combo(None, s, backend)) not in wanted]
            for v in self.registry.combinations(dev, model=info, include_unsupported=False):
                wanted.append(Combo(v.method, v.scheme, v.backend))
        for c in combos or ():
            if c not in wanted:
                wanted.append(c)
        run: list[ComboResult] = []
        skipped: list[ComboResult] = []
        for c in wanted:
            v = self.registry.verdict(c.method, c.scheme, c.backend, dev, model=info)
            res = ComboResult(c, "planned", level=v.level.value)
            why, install = self._why_not(c, v)
            if why:
                res.status, res.reason, res.install = "skipped", why, install
                skipped.append(res)
            else:
                run.append(res)
        return run, skipped

    def _why_not(self, c: Combo, verdict: Any) -> tuple[str, str]:
        """Why ``c`` cannot run here (empty when it can) and the install line that would fix it."""
        if not verdict.runnable:
            return f"the registry prunes it: {verdict.reasons[0].text}", ""
        runner = self._runner_or_none(c.backend)
        if runner is None:
            why = self._runner_errors.get(c.backend, "declared so the registry can answer for it")
            return f"quantmatch has no runner for {c.backend} ({why})", ""
        missing = runner.missing()
        if missing:
            return f"{c.backend} needs {', '.join(missing)}, which is not installed", runner.install
        from quantmatch.sdk.scheme import parse_scheme

        try:
            runner.check_kv_cache(parse_scheme(c.scheme).kv_cache)
        except RunnerError as e:
            return str(e), ""
        scheme = self.artifact_scheme(c)
        if c.method is not None:
            q = self.registry.method(c.method)
            if not _can_quantize(q):
                return f"quantizing with {c.method} is not implemented in this version", ""
            unmade = q.not_produced(scheme)
            if unmade:
                return unmade[0], ""
            missing = q().missing()
            if missing:
                return f"{c.method} needs {', '.join(missing)}, which is not installed", q.install_hint
        elif scheme not in runner.baselines:
            where = [f"{b} ({', '.join(k.baselines)})" for b in self.registry.host.runnable_backends()
                     if (k := self._runner_or_none(b)) is not None and k.baselines]
            return f"{c.backend}'s runner runs no {c.scheme} baseline; float baselines run on {', '.join(where)}", ""
        return "", ""

    def _runner_or_none(self, backend: str) -> type[Runner] | None:
        """:meth:`runner_class`, with a plugin's runner that fails to import recorded as the reason."""
        try:
            return self.runner_class(backend)
        except Exception as e:
            self._runner_errors[backend] = f"its runner cannot be loaded: {type(e).__name__}: {e}"
            return None

    def artifact_dir(self, c: Combo) -> Path:
        safe = model_key(self.model).replace("/", "--")
        fmt = self.export_format(c)
        name = f"{c.method or c.backend}-{self.artifact_scheme(c)}"
        return self.work_dir / safe / (name + (f"-{fmt}" if fmt else ""))

    def runtime_kv(self, c: Combo) -> str | None:
        """The KV-cache format of ``c``'s scheme when its runner sets it at run time (``None`` otherwise)."""
        from quantmatch.sdk.scheme import parse_scheme

        kv = parse_scheme(c.scheme).kv_cache
        runner = self._runner_or_none(c.backend)
        return kv if kv is not None and runner is not None and kv in runner.kv_caches else None

    def artifact_scheme(self, c: Combo) -> str:
        """The scheme ``c``'s artifact is made for: its own, less a ``-kv`` suffix the runner sets at run time
        (``gguf-q4_0-kvq8_0`` runs the ``gguf-q4_0`` artifact)."""
        from dataclasses import replace

        from quantmatch.sdk.scheme import parse_scheme

        return str(replace(parse_scheme(c.scheme), kv_cache=None)) if self.runtime_kv(c) else c.scheme

    def export_format(self, c: Combo) -> str | None:
        """The format ``c``'s artifact is exported to because its backend does not load the method's own
        (GPTQ on llama.cpp: ``gguf``); ``None`` when the backend loads what the method writes."""
        exported = self.registry.exported_as(c.method, self.artifact_scheme(c), c.backend)
        return None if exported is None else str(exported[0].artifact_format)

    # -- running --
    def run(self, combos: Sequence[Combo] | None = None, all_runnable: bool = False,
            progress: ProgressFn | None = None) -> BenchReport:
        """Plan, measure the machine, prepare and run every combination; store and return the report."""
        from quantmatch.measure.machine import MachineFigures

        started = time.perf_counter()
        date = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        todo, skipped = self.plan(combos, all_runnable)
        total = len(todo) + 1
        if progress:
            progress("measuring the machine", 0, total)
        ok, payload, err = self._job({"kind": "machine", "threads": self.threads, "quick": self.quick_machine})
        machine = MachineFigures.from_dict(payload) if ok else None
        dev = self.registry.local()
        report = BenchReport(self.model, dev.id, dev.name, self.threads, self.config.to_dict(),
                             machine.to_dict() if machine else {"error": err}, [], date,
                             reference=self.baseline.backend)
        ok, payload, err = self._job({"kind": "reference", "model": self.model, "text": self.text,
                                      "tokens": self.config.tokens, "window": self.config.window,
                                      "threads": self.threads})
        report.fidelity_reference = payload if ok else {"error": err}
        self._reference = payload.get("cache") if ok else None
        for i, res in enumerate(todo, start=1):
            if progress:
                progress(f"{res.combo.key}", i, total)
            self._run_one(res)
            report.results.append(res)
            _derive(res, report.result(self.baseline.key), machine)
            if self.save and res.status == "ok":  # stored as it finishes: an interrupted run keeps its rows
                report.store = str(_save(report, res, self.model, self.store))
        report.results.extend(skipped)
        report.seconds = time.perf_counter() - started
        if progress:
            progress("done", total, total)
        return report

    def _run_one(self, res: ComboResult) -> None:
        t0 = time.perf_counter()
        c = res.combo
        target = self.model
        runner = self.runner_class(c.backend)
        needs_artifact = not c.is_baseline or (runner is not None and runner.prepares_baselines())
        if needs_artifact:
            out = self.artifact_dir(c)
            fmt = self.export_format(c)
            made = out.with_name(out.name.removesuffix(f"-{fmt}")) if fmt else out
            exported = bool(fmt) and (out / "quantmatch.json").is_file()  # the export is all the run needs
            if self.requantize or not (exported or (made / "quantmatch.json").is_file()):
                ok, _, err = self._job({"kind": "prepare", "model": self.model, "method": c.method,
                                        "scheme": self.artifact_scheme(c), "backend": c.backend, "out": str(made),
                                        "threads": self.threads})
                if not ok:
                    res.status, res.reason, res.seconds = "failed", f"quantize: {err}", time.perf_counter() - t0
                    return
            if fmt and (self.requantize or not (out / "quantmatch.json").is_file()):
                ok, _, err = self._job({"kind": "export", "source": str(made), "to": fmt, "out": str(out),
                                        "threads": self.threads})
                if not ok:
                    res.status, res.reason, res.seconds = "failed", f"export: {err}", time.perf_counter() - t0
                    return
            target = str(out)
            res.artifact = target
            from quantmatch.sdk.artifact import path_size

            res.size_bytes = path_size(out)
        ok, payload, err = self._job({"kind": "run", "backend": c.backend, "target": target, "threads": self.threads,
                                      "dtype": "bfloat16" if self.artifact_scheme(c) == "bf16" else "float32",
                                      "config": {**self.config.to_dict(), "kv_cache": self.runtime_kv(c)},
                                      "text": self.text, "model": self.model,
                                      "budget": self.budget, "reference": self._reference})
        res.seconds = time.perf_counter() - t0
        if not ok:
            res.status, res.reason = ("skipped" if err.startswith("TooSlowError") else "failed"), err
            return
        res.status, res.run = "ok", payload
        if not needs_artifact:
            from quantmatch.sdk.models import resolve_model

            res.size_bytes = _weights_size(resolve_model(self.model).hf_dir, self.artifact_scheme(c))

    def _job(self, job: dict[str, Any]) -> tuple[bool, Any, str]:
        """Run one job in a fresh subprocess: ``(ok, result payload, error text)``."""
        from quantmatch.measure.jobs import run_job

        return run_job(self.worker, job, self.threads, self.timeout, who="the backend process")


def _weights_size(hf_dir: Path, scheme: str) -> int:
    """Size of the baseline's weights in its compute dtype (fp32 files; bf16 holds half)."""
    total = sum(f.stat().st_size for f in Path(hf_dir).glob("*.safetensors"))
    return total // 2 if scheme in ("bf16", "fp16") else total


# ---- derived figures and storage -------------------------------------------------------------------------
def _derive(r: ComboResult, base: ComboResult | None, machine: Any) -> None:
    """Perplexity delta, speed ratios to the reference baseline (the run's first combination) and the
    rooflines of one result, in place."""
    from quantmatch.measure.roofline import compute_dtype, decode_roofline

    if r.status != "ok" or r.run is None:
        return
    run = r.run
    b = base.run if base is not None and base.status == "ok" else None
    r.fidelity = run.get("fidelity")
    if b:
        r.ppl_delta_pct = 100.0 * (run["perplexity"] / b["perplexity"] - 1.0)
        r.ratios = {k: (run[k] / b[k] if run.get(k) and b.get(k) else None)
                    for k in ("prefill_tps", "decode_tps", "decode_batch_tps")}
    if machine is not None:
        dt = compute_dtype(r.level, r.combo.scheme)
        r.roofline = decode_roofline(run["decode_tps"], run["weight_bytes_per_token"],
                                     run["kv_bytes_per_token"], run["flops_per_token"], machine, dt).to_dict()
        if run.get("decode_batch_tps"):
            r.roofline_batch = decode_roofline(run["decode_batch_tps"], run["weight_bytes_per_token"],
                                               run["kv_bytes_per_token"], run["flops_per_token"], machine,
                                               dt, run["batch"]).to_dict()


def result_row(model_key: str, combo: str, device: str, run: Mapping[str, Any], date: str,
               ppl_delta_pct: float | None = None) -> Any:
    """The ``results`` row (:class:`~quantmatch.sdk.store.ResultRow`) of one measured run of ``combo``
    (``method:scheme:backend``) on ``device``: what ``bench`` and fleet units store."""
    from quantmatch.sdk.store import ResultRow

    method, scheme, backend = combo.split(":")
    fid = run.get("fidelity") or {}
    return ResultRow(model_key, method, scheme, backend, device, run.get("perplexity"), ppl_delta_pct,
                     run.get("decode_tps"), run.get("prefill_tps"), run.get("peak_rss_bytes"), date,
                     kld_mean=fid.get("kld_mean"), kld_p99=fid.get("kld_p99"), top1_pct=fid.get("top1_pct"),
                     ppl_ratio=fid.get("ppl_ratio"), kv_cache=run.get("kv_cache"), context=run.get("context"),
                     kv_bytes=run.get("kv_bytes"))


def _save(report: BenchReport, r: ComboResult, model: str, store: str | Path | None) -> Path:
    """Write one measured result to the ``results`` and ``runs`` tables, with ``bench`` evidence."""
    from quantmatch.sdk.store import EvidenceRow, ResultsStore
    from quantmatch.sdk.verdict import Evidence

    st = ResultsStore(store)
    key = model_key(model)
    if r.run is not None:
        c, run = r.combo, r.run
        fid = r.fidelity or {}
        st.add_result(result_row(key, c.key, report.device, run, report.started, r.ppl_delta_pct),
                      detail={**r.to_dict(), "machine": report.machine})
        ratio = r.ratios.get("decode_tps")
        ach = (r.roofline or {}).get("achieved")
        fig = (f"{key}: decode {run['decode_tps']:.1f} tok/s"
               + (f" ({ratio:.2f}x fp32 {report.reference})" if ratio else "")
               + (f", {100 * ach:.0f}% of roofline" if ach else "")
               + f", prefill {run['prefill_tps']:.0f} tok/s, ppl {run['perplexity']:.3f}"
               + (f" ({r.ppl_delta_pct:+.2f}%)" if r.ppl_delta_pct is not None else "")
               + (f", KLD {fid['kld_mean']:.4f} (p99 {fid['kld_p99']:.3f}), same top token {fid['top1_pct']:.1f}%"
                  if fid else "")
               + (f", {run['kv_cache'] or 'default'} KV cache {run['kv_bytes'] / 2**20:.2f} MiB at "
                  f"{run['kv_tokens']} tokens" if (run.get("kv_cache") or run.get("context")) and run.get("kv_bytes")
                  and run.get("kv_tokens") else "")
               + f", {run['threads']} threads")
        versions = ", ".join(f"{k} {v}" for k, v in sorted(run.get("versions", {}).items()))
        st.add_evidence([EvidenceRow(c.method or "none", c.scheme, c.backend, report.device,
                                     Evidence("bench", fig, report.started, versions), r.level)])
    return st.path


# ---- worker ------------------------------------------------------------------------------------------------
def _prepare(job: Mapping[str, Any]) -> dict[str, Any]:
    out = Path(job["out"])
    if job["method"] is None:
        from quantmatch.sdk.pluginhost import get_host

        cls = get_host().runner_class(job["backend"])
        assert cls is not None
        cls.prepare_baseline(job["model"], job["scheme"], out)
    else:
        from quantmatch.sdk.pipeline import quantize

        quantize(job["model"], job["method"], job["scheme"], out, force=True)
    return {"artifact": str(out)}


def _export(job: Mapping[str, Any]) -> dict[str, Any]:
    from quantmatch.sdk.export import export_artifact

    return export_artifact(job["source"], job["to"], job["out"], force=True).to_dict()


def _run(job: Mapping[str, Any]) -> dict[str, Any]:
    from quantmatch.measure.roofline import flops_per_token
    from quantmatch.measure.run import measure
    from quantmatch.sdk.evaluate import _load_text
    from quantmatch.sdk.models import resolve_model
    from quantmatch.sdk.pluginhost import get_host

    cfg = MeasureConfig(**job["config"])
    text, _ = _load_text(job.get("text"))
    reference = None
    if job.get("reference"):
        from quantmatch.sdk.fidelity import Reference

        reference = Reference.load(job["reference"])
    info = resolve_model(job["model"]).info
    runner = get_host().runner(job["backend"], job["threads"])
    runner.configure(cfg)  # the KV format, which sets the bytes per cached value
    width = runner.kv_value_bytes(job.get("dtype"))
    context = cfg.mean_decode_context
    result = measure(runner, job["target"], text, cfg, job.get("dtype"),
                     kv_layout=(info.num_layers, info.num_kv_heads, info.head_dim, width),
                     flops_per_token=flops_per_token(info, context), budget_s=job.get("budget"), reference=reference)
    return result.to_dict()


def _reference(job: Mapping[str, Any]) -> dict[str, Any]:
    """The reference distributions of the perplexity tokens (cached across runs); its description."""
    from quantmatch.sdk.evaluate import _load_text, reference_for

    body, label = _load_text(job.get("text"))
    _, info = reference_for(job["model"], body, label, int(job["tokens"]), int(job["window"]),
                            threads=int(job["threads"]))
    return info


def _machine(job: Mapping[str, Any]) -> dict[str, Any]:
    from quantmatch.measure.machine import measure_machine

    return measure_machine(int(job["threads"]), quick=bool(job.get("quick"))).to_dict()


def worker_main(job_file: str, result_file: str) -> int:
    """Run one job (``machine``, ``prepare``, ``export``, ``run`` or ``reference``) and write
    ``{"ok", "result"|"error"}``."""
    from quantmatch.measure.jobs import worker_main as run

    return run(job_file, result_file, {"machine": _machine, "prepare": _prepare, "export": _export, "run": _run,
                                       "reference": _reference})


if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3]))
    sys.exit("usage: python -m quantmatch.measure.bench --worker JOB.json RESULT.json")
