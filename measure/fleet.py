"""Sweeps across a fleet: ``quantmatch sweep``, ``bench --executor`` and ``verify --executor``.

A sweep is a set of *units*. A unit is one combination (``method:scheme:backend``) of one model on one kind
of device, and is idempotent: its key (:func:`unit_key`) hashes the model's fingerprint, the combination, the
device, quantmatch's and the runtimes' versions on that device's nodes, and the measurement settings; a unit
whose key is in the results store with status ``ok`` is not run again (``rerun=True`` forces it).

Routing is the registry's, never the executor's:

1. every alive node runs :func:`detect_unit` once (what it detected, its versions); the *devices* of the fleet
   are the distinct ``quantmatch/device`` labels (:data:`~quantmatch.sdk.executor.DEVICE_LABEL`), each with the
   catalog profile of that id, or else the profile its node detected;
2. each combination gets a unit for every fleet device where the registry's verdict is runnable, with the
   selector ``{"quantmatch/device": <device>}``; a combination that runs on no device of the fleet gets one row
   **unverified: no node with ...**, naming the devices of the catalog where it would run, and the sweep goes on;
3. the executor runs each unit on a node that matches (:func:`run_unit`: quantize unless the artifact exists,
   run, measure, with the node's detected hardware in the row).

Artifacts move once. Units that need the same artifact (the same model, method, scheme and export format) run
after the first of them, which makes it: with ``artifact_store`` (a directory every node sees) it is published
there and every node copies it into its own cache; without one, on an executor whose nodes do not share this
machine's disk, the artifact comes back through the executor (:meth:`~quantmatch.sdk.executor.Executor.share`;
the Ray object store) when it is at most :data:`BLOB_LIMIT` bytes. The same artifact is never quantized twice in
one sweep.

Faults: a unit that raises or whose worker crashes is ``failed`` with the error; a unit whose node died is
retried by the executor on another matching node, or ``lost`` when no alive node matches; Ctrl-C cancels every
unit in flight and keeps what finished (each finished unit is stored as it finishes).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import socket
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.errors import InputError
from quantmatch.sdk.executor import DEVICE_LABEL, Executor, FleetNode, Outcome, selector_matches

__all__ = ["BLOB_LIMIT", "FleetReport", "Progress", "Unit", "UnitRow", "VerifyFleetReport", "detect_unit",
           "node_name", "run_sweep", "run_unit", "unit_key", "verify_fleet", "verify_unit"]

BLOB_LIMIT = 256 * 2**20
"""The largest artifact sent through the executor (the Ray object store) when there is no ``--artifact-store``."""
NODE_LABEL = "quantmatch/node"
"""The label ``quantmatch fleet start`` sets to the machine's name (``--label node=NAME`` overrides it)."""
LOST_CHECK_S = 2.0

ProgressFn = Callable[["Progress"], None]


# ---- what runs on a node -----------------------------------------------------------------------------------
def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower()


def _versions() -> dict[str, str]:
    """Installed versions of quantmatch and of every distribution a registered method or backend requires (asked
    of the plugins: their ``requires``; read from package metadata, nothing imported)."""
    from quantmatch.sdk.artifact import library_versions
    from quantmatch.sdk.pluginhost import get_host

    host = get_host()
    names = {"quantmatch"} | {_requirement_name(r) for table in (host.quantizers, host.backends)
                              for e in table.values() for r in e.obj.requires}
    return library_versions(sorted(names))


def _versions_for(versions: Mapping[str, str], combo: Any, registry: Any) -> dict[str, str]:
    """The versions a unit depends on: quantmatch's and those of its method's and backend's requirements."""
    reqs = list(registry.backend(combo.backend).requires)
    if combo.method is not None:
        reqs += list(registry.method(combo.method).requires)
    wanted = {"quantmatch"} | {_requirement_name(r) for r in reqs}
    return {k: v for k, v in versions.items() if k in wanted}


def detect_unit(payload: dict[str, Any]) -> dict[str, Any]:
    """On a node: what it detected (the local device's profile and label), its host name and versions."""
    from quantmatch.registry import Registry

    reg = Registry()
    dev = reg.local()
    return {"profile": dev.to_dict(), "label": reg.device_label(dev), "host": socket.gethostname(),
            "versions": _versions()}


def _pack(path: Path) -> bytes:
    """An artifact directory's files as an uncompressed tar (what travels through the executor)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(path), arcname=".")
    return buf.getvalue()


def _unpack(blob: bytes, dest: Path) -> None:
    """Unpack an artifact into ``dest`` (:func:`~quantmatch.sdk.artifact.atomic_output`: nothing half-written)."""
    from quantmatch.sdk.artifact import atomic_output

    with atomic_output(dest, force=True) as tmp, tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(tmp, filter="data")


def _copy_in(src: Path, dest: Path) -> None:
    """Copy an artifact directory to ``dest`` through :func:`~quantmatch.sdk.artifact.atomic_output`; when another
    node published the same artifact first, theirs is kept."""
    from quantmatch.sdk.artifact import OutputExistsError, atomic_output

    try:
        with atomic_output(dest) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    except OutputExistsError:
        pass


def run_unit(payload: dict[str, Any]) -> dict[str, Any]:
    """On a node: one combination of one model (quantize unless the artifact is there, run, measure).

    Returns the bench's result row (``result``), the status, the node's detected hardware and versions, and
    the artifact's bytes (``artifact_blob``) when the caller asked for them and this node made it.
    """
    from quantmatch.measure.bench import Bench, Combo
    from quantmatch.sdk.runner import MeasureConfig

    t0 = time.perf_counter()
    combo = Combo.parse(payload["combo"])
    bench = Bench(payload["model"], config=MeasureConfig(**payload.get("config", {})),
                  threads=payload.get("threads"), save=False, timeout=float(payload.get("timeout", 900)),
                  text=payload.get("text"), budget=payload.get("budget"),
                  requantize=bool(payload.get("requantize")))
    local = bench.registry.local()
    out: dict[str, Any] = {"host": socket.gethostname(), "profile": local.to_dict(), "versions": _versions(),
                           "detected_as": bench.registry.device_label(local), "made_here": False}
    todo, skipped = bench.plan([combo])
    res = next(r for r in [*todo, *skipped] if r.combo == combo)
    if res.status == "skipped":
        return {**out, "status": "skipped", "reason": res.reason, "install": res.install,
                "seconds": time.perf_counter() - t0}
    rel = str(payload.get("artifact") or "")
    target = bench.work_dir / rel if rel else None
    if target is not None and not payload.get("requantize"):
        _bring_artifact(payload, target, out)
    ok, ref, _err = bench._job({"kind": "reference", "model": bench.model, "text": bench.text,
                               "tokens": bench.config.tokens, "window": bench.config.window,
                               "threads": bench.threads})
    bench._reference = ref.get("cache") if ok else None
    had = target is not None and (target / "quantmatch.json").is_file()
    bench._run_one(res)
    if target is not None and res.status == "ok":
        out["made_here"] = not had
        store = payload.get("artifact_store")
        if store and not had and not (Path(store) / rel).exists():
            _copy_in(target, Path(store) / rel)
            out["published"] = str(Path(store) / rel)
        if payload.get("want_blob") and not had:
            from quantmatch.sdk.artifact import path_size

            if path_size(target) <= BLOB_LIMIT:
                out["artifact_blob"] = _pack(target)
    out.update(status=res.status, reason=res.reason, result=res.to_dict(), seconds=time.perf_counter() - t0)
    return out


def _bring_artifact(payload: Mapping[str, Any], target: Path, out: dict[str, Any]) -> None:
    """Put the unit's artifact in this node's cache from the shared store or the bytes that came with the unit."""
    if (target / "quantmatch.json").is_file():
        out["artifact_from"] = "node cache"
        return
    store = payload.get("artifact_store")
    if store and (Path(store) / payload["artifact"] / "quantmatch.json").is_file():
        _copy_in(Path(store) / payload["artifact"], target)
        out["artifact_from"] = "artifact store"
    elif payload.get("artifact_blob"):
        _unpack(payload["artifact_blob"], target)
        out["artifact_from"] = "sent by the executor"


def verify_unit(payload: dict[str, Any]) -> dict[str, Any]:
    """On a node: ``quantmatch verify`` for its own hardware (nothing stored there); the report, as a dict."""
    from quantmatch.measure.verify import verify
    from quantmatch.registry import Registry

    want = payload.get("only") or [None, None, None]

    def only(method: str, scheme: str, backend: str) -> bool:
        return all(w is None or w.lower() == got for w, got in zip(want, (method, scheme, backend), strict=True))

    reg = Registry()
    report = verify(registry=reg, threads=payload.get("threads"), save=False, only=only)
    return {"report": report.to_dict(), "host": socket.gethostname(), "profile": reg.local().to_dict(),
            "detected_as": reg.device_label(reg.local()), "versions": _versions()}


# ---- planning ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One unit: a combination of a model, routed to a device (the nodes whose device label is ``device``)."""

    key: str
    model: str
    combo: str
    device: str
    selector: Mapping[str, str]
    artifact: str
    payload: Mapping[str, Any]

    @property
    def method(self) -> str:
        return self.combo.split(":")[0]


@dataclass
class UnitRow:
    """What happened to one unit. ``status``: ``ok``, ``failed``, ``skipped`` (the node cannot run it: a library
    is missing), ``unverified`` (no node of a device that runs it), ``lost`` (its node died, no other could take
    it), ``stored`` (measured before: not run again) or ``cancelled`` (Ctrl-C)."""

    model: str
    combo: str
    device: str
    status: str
    node: str = ""
    node_id: str = ""
    reason: str = ""
    install: str = ""
    seconds: float = 0.0
    key: str = ""
    date: str = ""
    result: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    """The hardware profile the node that ran it detected."""
    versions: dict[str, str] = field(default_factory=dict)
    artifact_from: str = ""
    made_here: bool = False
    ratios: dict[str, float | None] = field(default_factory=dict)
    latency: float = 0.0
    """Seconds from submission to the outcome, as the driver saw them (scheduling overhead is this minus
    ``seconds``, the unit's own time on its node)."""

    @property
    def method(self) -> str:
        return self.combo.split(":")[0]

    @property
    def scheme(self) -> str:
        return self.combo.split(":")[1]

    @property
    def backend(self) -> str:
        return self.combo.split(":")[2]

    def figure(self, name: str) -> float | None:
        run = (self.result or {}).get("run") or {}
        value = run.get(name)
        return float(value) if isinstance(value, int | float) else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(method=self.method, scheme=self.scheme, backend=self.backend)
        return d


@dataclass
class Progress:
    """A snapshot for the live view: per node (name), units ``done``/``failed``/``running``; and totals."""

    nodes: dict[str, dict[str, int]]
    queued: int
    unverified: int
    stored: int
    finished: int
    total: int


@dataclass
class FleetReport:
    """One sweep (``quantmatch sweep``, ``bench --executor``)."""

    models: list[str]
    executor: str
    address: str
    nodes: list[dict[str, Any]]
    rows: list[UnitRow]
    started: str
    seconds: float = 0.0
    store: str = ""
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.status == status)

    @property
    def exit_code(self) -> int:
        """130 when interrupted, 1 when a unit failed or was lost, else 0 (unverified units are not errors)."""
        if self.interrupted:
            return 130
        return 1 if self.count("failed") or self.count("lost") else 0

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "rows"}
        d["units"] = [r.to_dict() for r in self.rows]
        d["summary"] = {s: self.count(s) for s in
                        ("ok", "failed", "skipped", "unverified", "lost", "stored", "cancelled")}
        return d


def node_name(node: FleetNode) -> str:
    """How a node is shown: its ``quantmatch/node`` label, else its name, with its id's first characters."""
    return node.labels.get(NODE_LABEL) or f"{node.name}#{node.id[:6]}"


def _model_fingerprint(model: str) -> str:
    """What makes a model the same model: its resolved shapes and source, and for a path its files' names,
    sizes and modification times (cheap: nothing is hashed in full)."""
    from quantmatch.sdk.models import resolve_model

    src = resolve_model(model, shapes_only=True)
    parts: list[Any] = [src.kind, str(src.source), asdict(src.info) if hasattr(src.info, "__dataclass_fields__")
                        else str(src.info)]
    p = Path(model)
    if p.exists():
        files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file())
        parts += [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:20]


def unit_key(fingerprint: str, combo: str, device: str, versions: Mapping[str, str],
             settings: Mapping[str, Any]) -> str:
    """The idempotency key of a unit (see the module docstring)."""
    text = json.dumps([fingerprint, combo, device, dict(sorted(versions.items())), dict(sorted(settings.items()))],
                      default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _need(registry: Any, method: str | None, scheme: str, backend: str, info: Any) -> str:
    """What hardware a combination needs, from the catalog: ``nvidia (h100, a100 +9 more)``, or why none runs it."""
    where: dict[str, list[str]] = {}
    first_reason = ""
    for d in registry.devices():
        try:
            v = registry.verdict(method, scheme, backend, d, model=info)
        except Exception:  # a combination the registry cannot judge on a device: not needed there
            continue
        if v.runnable:
            where.setdefault(d.family, []).append(d.id)
        elif not first_reason:
            first_reason = v.reasons[0].text
    if not where:
        return f"no known device runs it ({first_reason})" if first_reason else "no known device runs it"
    parts = []
    for fam, ids in where.items():
        shown = ", ".join(ids[:4]) + (f" +{len(ids) - 4} more" if len(ids) > 4 else "")
        parts.append(f"{fam} ({shown})")
    return "a device that runs it: " + "; ".join(parts)


class _Plan:
    def __init__(self, units: list[Unit], rows: list[UnitRow], nodes: list[FleetNode], names: dict[str, str]):
        self.units, self.rows, self.nodes, self.names = units, rows, nodes, names


def _fleet_devices(executor: Executor, registry: Any, devices: Sequence[str] | None
                   ) -> tuple[dict[str, Any], dict[str, dict[str, str]], list[FleetNode], list[UnitRow]]:
    """``(profile per device label, versions per device label, alive nodes, problem rows)``."""
    from quantmatch.sdk.profile import HardwareProfile

    nodes = [n for n in executor.nodes() if n.alive and n.cpus > 0]
    if not nodes:
        raise InputError("the fleet has no alive node that takes units: start one with `quantmatch fleet start "
                         "--head` (or a worker with --num-cpus 1 or more)")
    seen = executor.on_each_node(detect_unit, {})
    profiles: dict[str, Any] = {}
    versions: dict[str, dict[str, str]] = {}
    rows: list[UnitRow] = []
    for node, oc in seen:
        label = node.device or (oc.value or {}).get("label", "")
        if not oc.ok or oc.value is None:
            rows.append(UnitRow("", "-:-:-", label, "failed", node=node_name(node), node_id=node.id,
                                reason=f"detection on this node failed: {oc.error}"))
            continue
        if label and label not in profiles:
            try:
                profiles[label] = registry.device(label)
            except InputError:
                profiles[label] = HardwareProfile.from_dict({**oc.value["profile"], "id": label})
            versions[label] = dict(oc.value.get("versions") or {})
    if devices:
        profiles = {k: v for k, v in profiles.items() if k in devices or v.id in devices
                    or k in getattr(v, "aliases", ())}
    return profiles, versions, nodes, rows


def _combos_for(registry: Any, profiles: Mapping[str, Any], info: Any, combos: Sequence[str],
                all_runnable: bool, bench: Any) -> list[str]:
    """The reference baseline, then (``all_runnable``) every runner's float baselines and every combination the
    registry marks runnable on a fleet device, as ``bench --all-runnable`` plans them, then ``combos``."""
    from quantmatch.measure.bench import reference_combo

    ref = reference_combo()
    wanted = [ref.key]
    if all_runnable:
        for backend in sorted(registry.host.runnable_backends(), key=lambda b: b != ref.backend):
            cls = bench._runner_or_none(backend)
            wanted += [k for s in (cls.baselines if cls else ()) if (k := f"none:{s}:{backend}") not in wanted]
        for prof in profiles.values():
            for v in registry.combinations(prof, model=info, include_unsupported=False):
                key = f"{v.method or 'none'}:{v.scheme}:{v.backend}"
                if key not in wanted:
                    wanted.append(key)
    for c in combos:
        if c not in wanted:
            wanted.append(c)
    return wanted


def plan_sweep(models: Sequence[str], combos: Sequence[str], executor: Executor, *, registry: Any = None,
               all_runnable: bool = False, devices: Sequence[str] | None = None,
               settings: Mapping[str, Any] | None = None) -> _Plan:
    """Units for every model and combination on every fleet device that runs it, and the unverified rows."""
    from quantmatch.measure.bench import Bench, Combo
    from quantmatch.sdk.models import resolve_model

    if registry is None:
        from quantmatch.registry import Registry

        registry = Registry()
    settings = dict(settings or {})
    profiles, versions, nodes, rows = _fleet_devices(executor, registry, devices)
    missing = [d for d in devices or () if not any(d in (k, p.id) for k, p in profiles.items())]
    units: list[Unit] = []
    for model in models:
        info = resolve_model(model, shapes_only=True).info
        fp = _model_fingerprint(model)
        bench = Bench(model, registry=registry, save=False)
        for text in _combos_for(registry, profiles, info, combos, all_runnable, bench):
            c = Combo.parse(text)
            placed = False
            for label, prof in profiles.items():
                v = registry.verdict(c.method, c.scheme, c.backend, prof, model=info)
                if not v.runnable:
                    continue
                placed = True
                needs = not c.is_baseline or _prepares_baseline(bench, c.backend)
                rel = str(bench.artifact_dir(c).relative_to(bench.work_dir)) if needs else ""
                key = unit_key(fp, c.key, label, _versions_for(versions.get(label, {}), c, registry), settings)
                units.append(Unit(key, model, c.key, label, {DEVICE_LABEL: label}, rel,
                                  {"model": model, "combo": c.key, **settings}))
            if not placed:
                need = _need(registry, c.method, c.scheme, c.backend, info)
                need = (f"no node with device {', '.join(missing)}" if missing and not profiles
                        else need if need.startswith("no known device") else f"no node with {need}")
                rows.append(UnitRow(model, c.key, ", ".join(missing) or "-", "unverified", reason=need))
    names = {n.id: node_name(n) for n in nodes}
    return _Plan(units, rows, nodes, names)


def _prepares_baseline(bench: Any, backend: str) -> bool:
    cls = bench._runner_or_none(backend)
    return bool(cls is not None and cls.prepares_baselines())


# ---- running -------------------------------------------------------------------------------------------------
def run_sweep(models: Sequence[str], combos: Sequence[str], executor: Executor, *, all_runnable: bool = False,
              devices: Sequence[str] | None = None, settings: Mapping[str, Any] | None = None,
              artifact_store: str | Path | None = None, rerun: bool = False, store: str | Path | None = None,
              save: bool = True, registry: Any = None, progress: ProgressFn | None = None) -> FleetReport:
    """Plan and run a sweep on ``executor`` (connected here and closed at the end); see the module docstring."""
    from quantmatch.sdk.store import ResultsStore

    started = time.perf_counter()
    if artifact_store is not None:
        artifact_store = Path(artifact_store).expanduser().resolve()
        artifact_store.mkdir(parents=True, exist_ok=True)
    executor.connect()
    try:
        plan = plan_sweep(models, combos, executor, registry=registry, all_runnable=all_runnable, devices=devices,
                          settings=settings)
        report = FleetReport(list(models), executor.name, str(executor.address or ""),
                             [n.to_dict() | {"shown": plan.names.get(n.id, n.name)} for n in plan.nodes],
                             list(plan.rows), time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        st = ResultsStore(store)
        report.store = str(st.path)
        stored = {} if rerun else st.units(u.key for u in plan.units)
        todo = []
        for u in plan.units:
            prev = stored.get(u.key)
            if prev is not None and prev["status"] == "ok":
                row = UnitRow(u.model, u.combo, u.device, "stored", node=prev["node"], key=u.key, date=prev["date"],
                              result=prev["detail"].get("result"), reason=f"measured {prev['date']} on {prev['node']}")
                report.rows.append(row)
            else:
                todo.append(u)
        _Runner(executor, todo, report, plan.names, artifact_store, st if save else None, progress).run()
    finally:
        executor.close()
    _derive(report.rows)
    report.seconds = time.perf_counter() - started
    return report


class _Runner:
    """The scheduling loop: producers of artifacts first, their consumers after them; lost units detected."""

    def __init__(self, executor: Executor, units: list[Unit], report: FleetReport, names: dict[str, str],
                 artifact_store: Path | None, store: Any, progress: ProgressFn | None) -> None:
        self.ex, self.report, self.names, self.progress = executor, report, names, progress
        self.artifact_store, self.store = artifact_store, store
        self.want_blob = artifact_store is None and not executor.shares_filesystem
        self.waiting: dict[str, list[Unit]] = {}
        self.ready: list[Unit] = []
        producers: set[str] = set()
        for u in units:
            made_by = f"{u.model}|{u.artifact}"
            if u.artifact and made_by in producers:
                self.waiting.setdefault(made_by, []).append(u)
            else:
                if u.artifact:
                    producers.add(made_by)
                self.ready.append(u)
        self.inflight: dict[Any, tuple[Unit, float]] = {}
        self.first_node: dict[Any, str] = {}
        self.blobs: dict[str, Any] = {}
        self.total = len(units)

    def _payload(self, u: Unit) -> dict[str, Any]:
        p = dict(u.payload)
        if u.artifact:
            p["artifact"] = u.artifact
            if self.artifact_store is not None:
                p["artifact_store"] = str(self.artifact_store)
            blob = self.blobs.get(f"{u.model}|{u.artifact}")
            if blob is not None:
                p["artifact_blob"] = blob
            elif self.want_blob:
                p["want_blob"] = True
        return p

    def _submit(self, u: Unit) -> None:
        h = self.ex.submit(run_unit, self._payload(u), u.selector, f"{u.combo}@{u.device}")
        self.inflight[h] = (u, time.perf_counter())

    def run(self) -> None:
        try:
            for u in self.ready:
                self._submit(u)
            last_check = time.monotonic()
            while self.inflight:
                for h in self.ex.wait(list(self.inflight), 0.5):
                    self._finish(h, self.ex.outcome(h))
                for h in list(self.inflight):
                    node = self.ex.running_on(h)
                    if node:
                        self.first_node.setdefault(h, node)
                if time.monotonic() - last_check > LOST_CHECK_S:
                    self._find_lost()
                    last_check = time.monotonic()
                self._tick()
        except KeyboardInterrupt:
            self.ex.cancel(list(self.inflight))
            for u, t0 in self.inflight.values():
                self.report.rows.append(UnitRow(u.model, u.combo, u.device, "cancelled", key=u.key,
                                                reason="interrupted (Ctrl-C)", latency=time.perf_counter() - t0))
            for group in self.waiting.values():
                for u in group:
                    self.report.rows.append(UnitRow(u.model, u.combo, u.device, "cancelled", key=u.key,
                                                    reason="interrupted (Ctrl-C) before it started"))
            self.inflight.clear()
            self.waiting.clear()
            self.report.interrupted = True

    def _find_lost(self) -> None:
        alive = [n for n in self.ex.nodes() if n.alive and n.cpus > 0]
        for h, (u, _t0) in list(self.inflight.items()):
            if not any(selector_matches(u.selector, n.labels) for n in alive):
                self.ex.cancel([h])
                self._finish(h, Outcome(False, error="", lost=True))

    def _finish(self, h: Any, oc: Outcome) -> None:
        if h not in self.inflight:
            return
        u, t0 = self.inflight.pop(h)
        first = self.first_node.pop(h, "")
        row = UnitRow(u.model, u.combo, u.device, "failed", key=u.key, latency=time.perf_counter() - t0,
                      date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        node_id = oc.node or first
        row.node_id, row.node = node_id, self.names.get(node_id, node_id[:12])
        blob = None
        if oc.ok and oc.value is not None:
            v = dict(oc.value)
            blob = v.pop("artifact_blob", None)
            row.status = v.get("status", "failed")
            row.reason, row.install = v.get("reason", "") or "", v.get("install", "") or ""
            row.result, row.profile, row.versions = v.get("result"), v.get("profile"), v.get("versions") or {}
            row.seconds = float(v.get("seconds") or 0.0)
            row.artifact_from, row.made_here = v.get("artifact_from", ""), bool(v.get("made_here"))
            if first and oc.node and first != oc.node:
                row.reason = (row.reason + "; " if row.reason else "") + (
                    f"retried on {row.node} after {self.names.get(first, first[:12])} went away")
        elif oc.lost:
            row.status = "lost"
            where = self.names.get(first, first[:12]) if first else "its node"
            row.reason = (f"{where} died while running it and no other alive node has "
                          f"{DEVICE_LABEL}={u.device}" + (f" ({oc.error})" if oc.error else ""))
        else:
            row.reason = oc.error or "failed"
        self.report.rows.append(row)
        if self.store is not None and row.status == "ok":
            _store_row(self.store, row)
        group = self.waiting.pop(f"{u.model}|{u.artifact}", []) if u.artifact else []
        if group:
            if row.status == "ok":
                if blob is not None:
                    self.blobs[f"{u.model}|{u.artifact}"] = self.ex.share(blob)
                for w in group:
                    self._submit(w)
            else:  # the artifact could not be made: its other units would only fail the same way
                for w in group:
                    self.report.rows.append(UnitRow(w.model, w.combo, w.device, "failed", key=w.key,
                                                    reason=f"its artifact could not be made on {row.node or '?'}: "
                                                           f"{row.reason}"))

    def _tick(self) -> None:
        if self.progress is None:
            return
        nodes: dict[str, dict[str, int]] = {name: {"done": 0, "failed": 0, "running": 0}
                                            for name in self.names.values()}
        for r in self.report.rows:
            if r.node and r.status in ("ok", "skipped", "failed", "lost"):
                slot = nodes.setdefault(r.node, {"done": 0, "failed": 0, "running": 0})
                slot["done" if r.status in ("ok", "skipped") else "failed"] += 1
        running = 0
        for h in self.inflight:
            node = self.first_node.get(h)
            if node:
                running += 1
                nodes.setdefault(self.names.get(node, node[:12]), {"done": 0, "failed": 0, "running": 0})[
                    "running"] += 1
        queued = len(self.inflight) - running + sum(len(g) for g in self.waiting.values())
        finished = sum(1 for r in self.report.rows if r.status in ("ok", "skipped", "failed", "lost"))
        self.progress(Progress(nodes, queued, self.report.count("unverified"), self.report.count("stored"),
                               finished, self.total))


def _store_row(store: Any, row: UnitRow) -> None:
    """A finished unit in the results store: its ``results``/``runs`` row, ``bench`` evidence (with the node)
    and its ``units`` row."""
    from quantmatch.measure.bench import result_row
    from quantmatch.sdk.store import EvidenceRow
    from quantmatch.sdk.verdict import Evidence

    res = row.result or {}
    run = res.get("run") or {}
    key = _model_key(row.model)
    versions = ", ".join(f"{k} {v}" for k, v in sorted(row.versions.items()))
    detail = {**res, "node": row.node, "node_id": row.node_id, "profile": row.profile, "unit": row.key}
    if run:
        store.add_result(result_row(key, row.combo, row.device, run, row.date), detail=detail)
        fig = (f"{key} on {row.node}: decode {run.get('decode_tps', 0):.1f} tok/s, prefill "
               f"{run.get('prefill_tps', 0):.0f} tok/s, ppl {run.get('perplexity', float('nan')):.3f}")
        store.add_evidence([EvidenceRow(row.method, row.scheme, row.backend, row.device,
                                        Evidence("bench", fig, row.date, versions, node=row.node),
                                        res.get("level", ""))])
    store.add_unit(row.key, key, row.method, row.scheme, row.backend, row.device, row.node, row.status, row.date,
                   {"result": res, "node_id": row.node_id, "profile": row.profile, "versions": row.versions})


def _model_key(model: str) -> str:
    from quantmatch.measure.bench import model_key

    return model_key(model)


def _derive(rows: list[UnitRow]) -> None:
    """Speed ratios to the reference baseline of the same model on the same device, in place."""
    from quantmatch.measure.bench import reference_combo

    ref = reference_combo().key
    base = {(r.model, r.device): r for r in rows if r.combo == ref and r.status in ("ok", "stored") and r.result}
    for r in rows:
        b = base.get((r.model, r.device))
        if b is None or r.status not in ("ok", "stored") or not r.result:
            continue
        for k in ("decode_tps", "prefill_tps"):
            mine, theirs = r.figure(k), b.figure(k)
            r.ratios[k] = mine / theirs if mine and theirs else None


# ---- verification across the fleet -----------------------------------------------------------------------------
@dataclass
class VerifyFleetReport:
    """``quantmatch verify --executor``: each node's report, and the combinations nodes of one device disagree on."""

    executor: str
    nodes: list[dict[str, Any]]
    date: str
    seconds: float = 0.0
    store: str = ""
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        bad = any(n.get("error") or (n.get("report") or {}).get("summary", {}).get("drift")
                  or (n.get("report") or {}).get("summary", {}).get("failed") for n in self.nodes)
        return 1 if bad else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_fleet(executor: Executor, *, threads: int | None = None, only: Sequence[str | None] = (None, None, None),
                 store: str | Path | None = None, save: bool = True) -> VerifyFleetReport:
    """Every alive node checks the claims for its own hardware; the evidence (observed level, ratios, node,
    device, versions, date) merges into the results store here."""
    from quantmatch.sdk.store import EvidenceRow, ResultsStore
    from quantmatch.sdk.verdict import Evidence

    started = time.perf_counter()
    executor.connect()
    try:
        got = executor.on_each_node(verify_unit, {"threads": threads, "only": list(only)})
    finally:
        executor.close()
    out = VerifyFleetReport(executor.name, [], time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    rows: list[EvidenceRow] = []
    seen: dict[tuple[str, str, str, str], dict[str, str]] = {}
    for node, oc in got:
        name = node_name(node)
        entry: dict[str, Any] = {"node": name, "node_id": node.id, "device": node.device}
        if not oc.ok or oc.value is None:
            entry["error"] = oc.error or "lost"
            out.nodes.append(entry)
            continue
        rep = oc.value["report"]
        device = node.device or oc.value.get("detected_as", "")
        entry.update(device=device, report=rep, profile=oc.value.get("profile"), versions=oc.value.get("versions"))
        out.nodes.append(entry)
        for c in rep.get("checks", []):
            if c["status"] not in ("agrees", "drift"):
                continue
            head = (f"agrees ({c['claimed']})" if c["status"] == "agrees"
                    else f"DRIFT: claimed {c['claimed']}, measured {c['observed']}")
            versions = (c.get("probe") or {}).get("versions", "")
            rows.append(EvidenceRow(c["method"], c["scheme"], c["backend"], device,
                                    Evidence("verify", f"{head}; {c['figure']}; {versions}", rep["date"], versions,
                                             c["status"] == "agrees", node=name, observed=c["observed"]),
                                    c["claimed"], c["observed"]))
            seen.setdefault((device, c["method"], c["scheme"], c["backend"]), {})[name] = c["observed"]
    for (device, method, scheme, backend), by_node in sorted(seen.items()):
        if len(set(by_node.values())) > 1:
            out.disagreements.append({"device": device, "combo": f"{method}:{scheme}:{backend}",
                                      "observed": dict(sorted(by_node.items()))})
    if save and rows:
        st = ResultsStore(store)
        st.add_evidence(rows)
        out.store = str(st.path)
    out.seconds = time.perf_counter() - started
    return out
