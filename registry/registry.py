"""The capability registry: every combination of method, scheme, backend, target and device, judged
before anything runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from quantmatch.registry.engine import Decision, PluginFailure, Query, Rows, candidate_rows, decide, reasons_for, render
from quantmatch.registry.versions import RuntimeVersion, holds, ranges, select, specifier
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.errors import UnknownChoiceError
from quantmatch.sdk.export import ExactExport
from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.pluginhost import Entry, PluginHost, get_host
from quantmatch.sdk.profile import DEVICE_FAMILIES, HardwareProfile, canonical_target
from quantmatch.sdk.quantizer import Quantizer
from quantmatch.sdk.scheme import Scheme, parse_scheme
from quantmatch.sdk.verdict import LAYERS, Evidence, Level, Reason, Verdict, VersionAnswer

__all__ = ["Registry", "UnknownChoiceError"]


_FAMILY_ORDER = {f: i for i, f in enumerate(DEVICE_FAMILIES)}


def _loads(backend: type[Backend], quantizer: type[Quantizer]) -> bool:
    return "*" in backend.formats or quantizer.artifact_format in backend.formats


class Registry:
    """Answers, before anything runs, what executes where and at which level, and why.

    Built from what the plugins registered (see :mod:`quantmatch.sdk.hookspecs`). Results are
    deterministic: combinations sort by level (native first), then method, scheme, backend, target.

    Verdicts are for one version of each runtime (:mod:`quantmatch.registry.versions`): the one in
    ``runtime_versions`` (keyed by backend name or runtime distribution: ``{"vllm": "0.9.2"}``), else, with
    ``installed``, the one installed here, else the newest the backend's rows were checked against.
    """

    def __init__(self, host: PluginHost | None = None, runtime_versions: Mapping[str, str] | None = None,
                 installed: bool = True) -> None:
        self.host = host or get_host()
        self.runtime_versions = {k.lower(): v for k, v in (runtime_versions or {}).items()}
        self.installed = installed
        known = {n for e in self.host.backends.values() for n in (e.obj.name, e.obj.runtime) if n}
        for k in self.runtime_versions:
            if k not in known:
                raise UnknownChoiceError("runtime (for --runtime-version)", k, sorted(known))
        self._versions: dict[str, RuntimeVersion | None] = {}
        self._exported: dict[tuple[Any, ...], tuple[Scheme | None, tuple[Reason, ...], Reason | None]] = {}
        self._aliases: dict[str, str] = {}
        for dev_id, e in self.host.devices.items():
            self._aliases[dev_id.lower()] = dev_id
            for a in e.obj.aliases:
                self._aliases.setdefault(a.lower(), dev_id)
        self._local: HardwareProfile | None = None
        self._local_detected = False  # True once local() detected this machine (evidence applies to it only)
        self._evidence: dict[tuple[str, ...], dict[tuple[str, str, str], tuple[Evidence, ...]]] | None = None
        self._evidence_ids: frozenset[str] = frozenset()
        self._decisions: dict[tuple[str, Query, int], Decision] = {}
        self._rows: dict[str, Rows] = {}
        self._schemes: dict[str, Scheme] = {}
        self._btargets: dict[str, tuple[str, ...]] = {}
        self._pre: dict[tuple[Any, ...], tuple[Reason, ...]] = {}
        self._routes: dict[tuple[str, str], tuple[type[Quantizer], ExactExport] | None] = {}
        self._queries: dict[tuple[Any, ...], Query] = {}
        self._candidates: dict[tuple[str, Query], tuple[Rows, Rows]] = {}
        self._sig_ids: dict[str, int] = {}
        self._obj_sigs: dict[int, tuple[HardwareProfile, int]] = {}
        self._intern: dict[tuple[Any, ...], int] = {}

    # ---- lookups ---------------------------------------------------------------------------
    def devices(self, family: str | None = None) -> list[HardwareProfile]:
        """Catalog devices, optionally of one family, sorted by family then id."""
        if family is not None and family not in {e.obj.family for e in self.host.devices.values()}:
            raise UnknownChoiceError("family", family, {e.obj.family for e in self.host.devices.values()})
        devs = [e.obj for e in self.host.devices.values() if family is None or e.obj.family == family]
        return sorted(devs, key=lambda d: (_FAMILY_ORDER.get(d.family, 99), d.family, d.id))

    def device(self, key: str | HardwareProfile) -> HardwareProfile:
        """A device by id, alias (``h100``) or ``local``; unknown keys raise with the closest ids."""
        if isinstance(key, HardwareProfile):
            return key
        k = key.strip().lower()
        if k == "local":
            return self.local()
        if k in self._aliases:
            return self.host.devices[self._aliases[k]].obj  # type: ignore[no-any-return]
        raise UnknownChoiceError("device", key, [*self._aliases, "local"])

    def local(self) -> HardwareProfile:
        """The machine quantmatch runs on: its first detected GPU, else its CPU."""
        if self._local is None:
            from quantmatch.registry.detection import detect_all

            found = [d for det in detect_all(self.host) for d in det.devices]
            found.sort(key=lambda d: d.is_cpu)
            if not found:
                raise UnknownChoiceError("device", "local (nothing detected)", self.host.devices)
            self._local = found[0]
            self._local_detected = True
        return self._local

    def catalog_match(self, profile: HardwareProfile) -> HardwareProfile | None:
        """The catalog device a detected profile is (the one device of its family and architecture), or ``None``."""
        if profile.id in self.host.devices:
            return self.host.devices[profile.id].obj  # type: ignore[no-any-return]
        same = [e.obj for e in self.host.devices.values()
                if e.obj.family == profile.family and e.obj.arch and e.obj.arch == profile.arch]
        return same[0] if len(same) == 1 else None

    def device_label(self, profile: HardwareProfile) -> str:
        """The fleet label of a device (:data:`~quantmatch.sdk.executor.DEVICE_LABEL`): the catalog id it matches,
        else :func:`~quantmatch.sdk.executor.device_label`."""
        from quantmatch.sdk.executor import device_label

        match = self.catalog_match(profile)
        return match.id if match is not None else device_label(profile)

    def methods(self) -> list[Entry]:
        return [self.host.quantizers[k] for k in sorted(self.host.quantizers)]

    def method(self, name: str) -> type[Quantizer]:
        e = self.host.quantizers.get(name.strip().lower()) if name else None
        if e is None:
            raise UnknownChoiceError("method", name, self.host.quantizers)
        return e.obj  # type: ignore[no-any-return]

    def backends(self) -> list[Entry]:
        return [self.host.backends[k] for k in sorted(self.host.backends)]

    def backend(self, name: str) -> type[Backend]:
        e = self.host.backends.get(name.strip().lower()) if name else None
        if e is None:
            raise UnknownChoiceError("backend", name, self.host.backends)
        return e.obj  # type: ignore[no-any-return]

    def scheme(self, text: str | Scheme) -> Scheme:
        if isinstance(text, Scheme):
            return text
        s = self._schemes.get(text)
        if s is None:
            s = self._schemes[text] = parse_scheme(text)
        return s

    def runtime_version(self, backend: str | type[Backend]) -> RuntimeVersion | None:
        """The runtime version this registry answers for on ``backend`` (``None``: its rows name no version)."""
        be = self.backend(backend) if isinstance(backend, str) else backend
        if be.name not in self._versions:
            self._versions[be.name] = select(be, self.runtime_versions, self.installed)
        return self._versions[be.name]

    def at_versions(self, runtime_versions: Mapping[str, str]) -> Registry:
        """A registry over the same plugins that answers for these runtime versions (and this one's others)."""
        return Registry(self.host, {**self.runtime_versions, **runtime_versions}, self.installed)

    def _declared_rows(self, name: str) -> Rows:
        """Every row for backend ``name``: refinements first, then its own, whatever version they hold for."""
        rows = self._rows.get(name)
        if rows is None:
            entry = self.host.backends[name]
            rows = self._rows[name] = tuple(self.host.refinements.get(name, ())) + tuple(
                (cap, entry.provenance) for cap in entry.obj.capabilities)
        return rows

    def _candidates_for(self, name: str, q: Query) -> tuple[Rows, Rows]:
        """The rows of backend ``name`` whose scheme filters match ``q``: those that hold for the runtime version this
        registry answers for, and all of them (whatever version they hold for)."""
        got = self._candidates.get((name, q))
        if got is None:
            matched = candidate_rows(self._declared_rows(name), q)
            current = matched
            if any(cap.since or cap.until for cap, _prov in matched):
                rv = self.runtime_version(self.host.backends[name].obj)
                version = rv.version if rv is not None else None
                current = tuple((cap, prov) for cap, prov in matched if holds(cap, version))
            got = self._candidates[(name, q)] = (current, matched)
        return got

    # ---- verdicts --------------------------------------------------------------------------
    def _targets_of(self, backend: type[Backend]) -> tuple[str, ...]:
        t = self._btargets.get(backend.name)
        if t is None:
            t = self._btargets[backend.name] = tuple(canonical_target(x) or x for x in backend.targets)
        return t

    def resolve_target(self, backend: type[Backend], device: HardwareProfile, target: str | None) -> str | None:
        """The execution target: the one asked for, else the device's main one the backend has."""
        if target is not None:
            t = canonical_target(target)
            if t not in self.host.targets:
                raise UnknownChoiceError("target", target, self.host.targets)
            return t
        btargets = self._targets_of(backend)
        for t in device.targets:
            if t in btargets:
                return t
        return None

    @staticmethod
    def _method_scheme(sch: Scheme, be: type[Backend]) -> Scheme:
        """What the method must write for ``sch`` on ``be``: the scheme without its ``-kv`` suffix when ``be``
        quantizes the KV cache to that format itself at run time (:attr:`Backend.kv_caches`)."""
        return replace(sch, kv_cache=None) if sch.kv_cache and sch.kv_cache in be.kv_caches else sch

    def _method_problems(self, quantizer: type[Quantizer] | None, sch: Scheme, be: type[Backend],
                         model: ModelInfo | None) -> tuple[Reason, ...]:
        """Pruning that precedes the backend: artifact format, the method's declaration, model shapes. A KV
        format the backend sets at run time is not the method's to write (:meth:`_method_scheme`)."""
        key = (quantizer, str(sch), be.name)
        if model is None and key in self._pre:
            return self._pre[key]
        pre: list[Reason] = []
        if quantizer is not None:
            if "*" not in be.formats and quantizer.artifact_format not in be.formats:
                pre.append(Reason(f"{be.name} does not load {quantizer.artifact_format} artifacts "
                                  f"(it loads {', '.join(be.formats)})", be.source, be.name))
            if sch.kv_cache and be.kv_caches and sch.kv_cache not in be.kv_caches:
                pre.append(Reason(f"{be.name} sets its KV cache at run time to {', '.join(be.kv_caches)}, not "
                                  f"{sch.kv_cache}", be.source, be.name))
            try:
                pre.extend(Reason(str(p), p.source or quantizer.source, quantizer.name)
                           for p in quantizer().check(model, self._method_scheme(sch, be)) if p.fatal)
            except Exception as e:
                raise PluginFailure(self.host.quantizers[quantizer.name].provenance,
                                    f"{quantizer.__name__}.check()", e) from e
        elif model is not None and sch.group_size:
            pre.extend(Reason(str(p), p.source, "") for p in Quantizer().check_model(model, sch))
        if model is None:
            self._pre[key] = tuple(pre)
        return tuple(pre)

    def verdict(
        self,
        method: str | None,
        scheme: str | Scheme,
        backend: str,
        device: str | HardwareProfile,
        target: str | None = None,
        layer: str = "linear",
        model: ModelInfo | None = None,
    ) -> Verdict:
        """The verdict for one combination, with reasons and sources.

        ``method`` ``None`` asks about the number formats alone (any method producing them).
        ``model`` adds shape-aware pruning (group-size divisibility, architecture) before any
        weight is loaded.
        """
        sch = self.scheme(scheme)
        dev = self.device(device)
        be = self.backend(backend)
        if layer not in LAYERS:
            raise UnknownChoiceError("layer", layer, LAYERS)
        q_method = method.strip().lower() if method else None
        quantizer = self.method(q_method) if q_method else None
        v = self._verdict(quantizer, sch, be, dev, self.resolve_target(be, dev, target), layer, model)
        return self._with_evidence(v, dev)

    def _with_evidence(self, v: Verdict, dev: HardwareProfile) -> Verdict:
        """``v`` with the measurements ``quantmatch verify``/``bench``/``sweep`` stored for it on ``dev``.

        The detected machine gets what was measured here (its id) and on any fleet node of the same device
        (:func:`~quantmatch.sdk.executor.device_label`); a catalog device gets what fleet nodes labelled with its
        id measured. A profile given to :meth:`with_local` gets none. The store is read once per device and
        registry, read-only, and a missing store means none.
        """
        if dev is self._local:
            if not self._local_detected:
                return v
            ids: tuple[str, ...] = (dev.id, self.device_label(dev))
        elif dev.id in self.host.devices:
            ids = (dev.id,)
        else:
            return v
        if self._evidence is None:
            from quantmatch.sdk.store import evidence_devices

            self._evidence = {}
            self._evidence_ids = evidence_devices()
        found_all = self._evidence.get(ids)
        if found_all is None:
            from quantmatch.sdk.store import read_evidence

            found_all = self._evidence[ids] = read_evidence(ids) if set(ids) & self._evidence_ids else {}
        found = found_all.get((v.method or "none", v.scheme, v.backend))
        return replace(v, evidence=found) if found else v

    def export_route(self, quantizer: type[Quantizer], backend: str | type[Backend]
                     ) -> tuple[type[Quantizer], ExactExport] | None:
        """How ``backend`` runs ``quantizer``'s artifacts when it does not load their format: the plugin
        whose format it loads and that declares an exact export from that format (its
        :attr:`~quantmatch.sdk.quantizer.Quantizer.exports`), with the declaration; ``None`` when the
        backend loads the format itself or nothing exports it there."""
        be = self.backend(backend) if isinstance(backend, str) else backend
        key = (quantizer.artifact_format, be.name)
        if key not in self._routes:
            self._routes[key] = None
            if "*" not in be.formats and quantizer.artifact_format not in be.formats:
                self._routes[key] = next(((e.obj, spec) for e in self.methods()
                                          if e.obj.artifact_format in be.formats
                                          for spec in e.obj.exports if spec.source_format == quantizer.artifact_format),
                                         None)
        return self._routes[key]

    def exported_as(self, method: str | None, scheme: str | Scheme, backend: str | type[Backend]
                    ) -> tuple[type[Quantizer], Scheme] | None:
        """``(plugin, scheme it runs as)`` when ``backend`` runs ``method``'s ``scheme`` artifacts through an exact
        export (GPTQ w4a16-g32 on llama.cpp: the gguf plugin, ``gguf-q4_0``); ``None`` when the backend loads the
        method's format itself, nothing exports it there, or the export does not hold that grid."""
        if method is None:
            return None
        route = self.export_route(self.method(method), backend)
        sch = self.scheme(scheme)
        rule = route[1].rule_for(sch) if route is not None else None
        if route is None or rule is None:
            return None
        return route[0], self.scheme(rule.scheme_for(sch))

    def _loads(self, be: type[Backend], q: type[Quantizer]) -> bool:
        return _loads(be, q) or self.export_route(q, be) is not None

    def _verdict(self, quantizer: type[Quantizer] | None, sch: Scheme, be: type[Backend], dev: HardwareProfile,
                 t: str | None, layer: str, model: ModelInfo | None) -> Verdict:
        try:
            return self._judge(quantizer, sch, be, dev, t, layer, model)
        except PluginFailure as e:
            info = self.host.plugins.get(e.provenance.plugin)
            if info is None or info.builtin:
                raise  # a built-in that raises is a bug: fail loudly
            text = self.host.plugin_failed(e.provenance.plugin, str(e))
            return Verdict(Level.UNSUPPORTED, (Reason(text, "", e.provenance.plugin),),
                           quantizer.name if quantizer is not None else None, str(sch), be.name, t or "-",
                           dev.id, layer, provenance=e.provenance)

    def _judge(self, quantizer: type[Quantizer] | None, sch: Scheme, be: type[Backend], dev: HardwareProfile,
               t: str | None, layer: str, model: ModelInfo | None) -> Verdict:
        q_method = quantizer.name if quantizer is not None else None
        scheme_s = str(sch)
        route = self.export_route(quantizer, be) if quantizer is not None else None
        if quantizer is not None and route is not None:
            return self._judge_exported(quantizer, route, sch, be, dev, t, layer, model)
        pre = self._method_problems(quantizer, sch, be, model)
        if t is None:
            pre += (Reason(f"{be.name} runs on {', '.join(be.targets)}; {dev.name} offers "
                           f"{', '.join(dev.targets)}", be.source, be.name),)
            return Verdict(Level.UNSUPPORTED, pre, q_method, scheme_s, be.name, "-", dev.id, layer)
        if t not in dev.targets:
            pre += (Reason(f"{dev.name} has no {t} target (it offers {', '.join(dev.targets)})", "", ""),)
        elif t not in self._targets_of(be):
            pre += (Reason(f"{be.name} has no {t} target (it has {', '.join(be.targets)})", be.source,
                           be.name),)

        q = self._query(q_method, sch, layer, t)
        entry = self.host.devices.get(dev.id)
        if entry is not None and entry.obj is dev:  # a catalog device: its signature is computed once
            sig = self._sig_ids.get(dev.id)
            if sig is None:
                sig = self._sig_ids[dev.id] = self._intern.setdefault(dev.signature(), len(self._intern))
        else:  # a profile given directly (a variant of a catalog entry, a detected machine) may share an id
            held = self._obj_sigs.get(id(dev))
            if held is None or held[0] is not dev:
                held = self._obj_sigs[id(dev)] = (dev, self._intern.setdefault(dev.signature(), len(self._intern)))
            sig = held[1]
        key = (be.name, q, sig)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decisions[key] = decide(self._candidates_for(be.name, q)[0], dev, q)
        reasons = reasons_for(decision, dev, q, be.name)
        if pre:
            return Verdict(Level.UNSUPPORTED, pre + reasons, q_method, scheme_s, be.name, t, dev.id, layer,
                           provenance=decision.provenance)
        runs_as = self._runs_as(decision, dev, q)
        rv = self.runtime_version(be) if self._version_bounded(be.name, q) else None
        dispute = decision.row.disputed if decision.row is not None else None
        return Verdict(decision.level, reasons, q_method, scheme_s, be.name, t, dev.id, layer,
                       runs_as=runs_as, provenance=decision.provenance, runtime_version=str(rv) if rv else "",
                       disputed=dispute)

    def _version_bounded(self, backend: str, q: Query) -> bool:
        """Whether a row that matches ``q`` holds only for some runtime versions."""
        return any(cap.since or cap.until for cap, _prov in self._candidates_for(backend, q)[1])

    def version_answers(self, v: Verdict) -> tuple[VersionAnswer, ...]:
        """The answer for each range of runtime versions, when ``v``'s answer depends on the version (empty
        otherwise); neighbouring ranges with the same answer are merged."""
        be = self.backend(v.backend)
        if v.target == "-" or not be.runtime:
            return ()
        sch = self.scheme(v.scheme)
        q = self._query(v.method if v.method and not self.exported_as(v.method, sch, be) else None, sch,
                        v.layer, v.target)
        cuts = ranges(cap for cap, _prov in self._candidates_for(be.name, q)[1])
        if not cuts:
            return ()
        dev = self.local() if self._local is not None and v.device == self._local.id else self.device(v.device)
        method = self.method(v.method) if v.method else None
        spans: list[tuple[str | None, str | None, Verdict]] = []
        for lo, hi, at in cuts:
            w = self.at_versions({be.name: at})._verdict(method, sch, be, dev, v.target, v.layer, None)
            if spans and (spans[-1][2].level, spans[-1][2].reasons[0].text) == (w.level, w.reasons[0].text):
                spans[-1] = (lo, spans[-1][1], spans[-1][2])  # the same answer reaches further back
            else:
                spans.append((lo, hi, w))
        out = [VersionAnswer(specifier(lo, hi), w.level, w.reasons[0].text, w.reasons[0].source)
               for lo, hi, w in spans]
        return tuple(out) if len(out) > 1 else ()

    def _judge_exported(self, quantizer: type[Quantizer], route: tuple[type[Quantizer], ExactExport],
                        sch: Scheme, be: type[Backend], dev: HardwareProfile, t: str | None, layer: str,
                        model: ModelInfo | None) -> Verdict:
        """``quantizer``'s artifact exported exactly into a format ``be`` loads: judged as the scheme the
        export runs as there, after the method's own checks and the export's grid rules."""
        owner, spec = route
        key = (quantizer, str(sch), be.name)
        cached = self._exported.get(key) if model is None else None
        if cached is None:
            cached = self._exported_parts(quantizer, owner, spec, sch, be, model)
            if model is None:
                self._exported[key] = cached
        runs, own, lead = cached
        if runs is None or lead is None or own:
            return Verdict(Level.UNSUPPORTED, own, quantizer.name, str(sch), be.name, t or "-", dev.id, layer)
        inner = self._judge(owner, runs, be, dev, t, layer, model)
        return replace(inner, method=quantizer.name, scheme=str(sch),
                       reasons=(inner.reasons[0], lead, *inner.reasons[1:]))

    def _exported_parts(self, quantizer: type[Quantizer], owner: type[Quantizer], spec: ExactExport, sch: Scheme,
                        be: type[Backend], model: ModelInfo | None
                        ) -> tuple[Scheme | None, tuple[Reason, ...], Reason | None]:
        """What an exported combination's verdict rests on, whatever the device: the scheme it runs as (``None``:
        it does not export exactly), the method's own fatal problems (or why it does not export), the lead reason."""
        fmt = owner.artifact_format
        rule = spec.rule_for(sch)
        try:
            own = tuple(Reason(str(p), p.source or quantizer.source, quantizer.name)
                        for p in quantizer().check(model, self._method_scheme(sch, be)) if p.fatal)
        except Exception as e:
            raise PluginFailure(self.host.quantizers[quantizer.name].provenance, f"{quantizer.__name__}.check()",
                                e) from e
        if rule is None:
            why = Reason(f"{be.name} loads {', '.join(be.formats)}, not {quantizer.artifact_format}; "
                         f"{spec.why_not(sch, fmt)}, so {quantizer.name} {sch} does not export to it exactly "
                         f"(`quantmatch export ARTIFACT --to {fmt} --allow-requantize` rounds it again)", spec.source,
                         owner.name)
            return None, (*own, why), None
        if own:
            return None, own, None
        runs = self.scheme(rule.scheme_for(sch))
        if sch.kv_cache and not runs.kv_cache:
            runs = self.scheme(f"{runs}-kv{sch.kv_cache}")
        lead = Reason(f"{quantizer.name}'s integer codes and scales are exported exactly to {fmt} "
                      f"(`quantmatch export ARTIFACT --to {fmt}`) and run as {runs}", spec.source, owner.name)
        return runs, own, lead

    @staticmethod
    def _runs_as(decision: Decision, dev: HardwareProfile, q: Query) -> str | None:
        row, prov = decision.row, decision.provenance
        if row is None or not row.runs_as or prov is None:
            return None
        try:
            return render(row.runs_as, dev, q)
        except Exception as e:
            raise PluginFailure(prov, f"formatting runs_as {row.runs_as!r}", e) from e

    def _query(self, method: str | None, sch: Scheme, layer: str, target: str) -> Query:
        key = (method, sch, layer, target)
        q = self._queries.get(key)
        if q is None:
            if layer == "kv-cache":
                kv = sch.kv_type or (sch.compute_dtype if not sch.is_gguf else "fp16")
                q = Query(method, kv, kv, 0, True, layer, target)
            else:
                q = Query(method, sch.weight_type, sch.activation_type, sch.group_size or 0, sch.symmetric,
                          layer, target)
            self._queries[key] = q
        return q

    def explain(self, method: str | None, scheme: str | Scheme, backend: str, device: str | HardwareProfile,
                target: str | None = None, model: ModelInfo | None = None,
                layers: Iterable[str] | None = None) -> list[Verdict]:
        """Verdicts for every relevant layer type: linear; MoE experts when the model has them (or,
        without a model, when their verdict differs); the KV cache when the scheme sets one."""
        return [replace(v, other_versions=self.version_answers(v))
                for v in self._explain(method, scheme, backend, device, target, model, layers)]

    def _explain(self, method: str | None, scheme: str | Scheme, backend: str, device: str | HardwareProfile,
                 target: str | None, model: ModelInfo | None, layers: Iterable[str] | None) -> list[Verdict]:
        sch = self.scheme(scheme)
        if layers is not None:
            return [self.verdict(method, sch, backend, device, target, layer, model) for layer in layers]
        out = [self.verdict(method, sch, backend, device, target, "linear", model)]
        if model is None or model.is_moe:
            moe = self.verdict(method, sch, backend, device, target, "moe", model)
            lin = out[0]
            # Without a model, show MoE experts only where they differ from dense layers.
            if model is not None or (moe.level, moe.runs_as, moe.reasons[0].text) != (
                    lin.level, lin.runs_as, lin.reasons[0].text):
                out.append(moe)
        if sch.kv_cache:
            out.append(self.verdict(method, sch, backend, device, target, "kv-cache", model))
        return out

    def hardware(self, device: str | HardwareProfile, weights: str, activations: str | None = None,
                 target: str | None = None) -> Verdict:
        """Does the device's matrix/vector engine compute this type natively?"""
        from quantmatch.registry.conformance import scheme_from_types

        sch = scheme_from_types(weights, activations or weights)
        return self.verdict(None, sch, "hardware", device, target)

    # ---- enumeration -----------------------------------------------------------------------
    def combinations(
        self,
        device: str | HardwareProfile,
        method: str | None = None,
        backend: str | None = None,
        level: str | Level | None = None,
        layer: str = "linear",
        model: ModelInfo | None = None,
        include_unsupported: bool = True,
    ) -> list[Verdict]:
        """Every (method, scheme, backend, target) for ``device``, best level first."""
        if layer not in LAYERS:
            raise UnknownChoiceError("layer", layer, LAYERS)
        dev = self.device(device)
        methods = [self.method(method)] if method else [e.obj for e in self.methods()]
        backends = [self.backend(backend)] if backend else [e.obj for e in self.backends()
                                                             if e.obj.name != "hardware"]
        want = Level.parse(level) if isinstance(level, str) else level
        out: list[Verdict] = []
        for q in methods:
            for be in backends:
                if not self._loads(be, q):
                    continue
                btargets = self._targets_of(be)
                targets = [t for t in dev.targets if t in btargets]
                for t in targets:
                    for s in q.schemes:
                        v = self._verdict(q, self.scheme(s), be, dev, t, layer, model)
                        if want is not None and v.level is not want:
                            continue
                        if not include_unsupported and not v.runnable:
                            continue
                        out.append(self._with_evidence(v, dev))
        out.sort(key=lambda v: (v.level.rank, v.method or "", v.scheme, v.backend, v.target))
        return out

    def why_empty(self, device: str | HardwareProfile, method: str | None = None,
                  backend: str | None = None) -> list[str]:
        """Why :meth:`combinations` has no (method, backend, target) for these filters: the backend does
        not load the method's artifact format, or it has no target on the device. Empty when some pair
        is enumerated (then only a level filter can leave nothing)."""
        dev = self.device(device)
        methods = [self.method(method)] if method else [e.obj for e in self.methods()]
        every = [e.obj for e in self.backends() if e.obj.name != "hardware"]
        backends = [self.backend(backend)] if backend else every
        out: list[str] = []
        for q in methods:
            loaders = [be for be in backends if self._loads(be, q)]
            if not loaders:
                who = backends[0].name if len(backends) == 1 else "no backend"
                others = [be.name for be in every if self._loads(be, q)]
                out.append(f"{who} does not load {q.artifact_format} artifacts (what {q.name} writes); "
                           f"backends that do: {', '.join(others) or 'none'}")
                continue
            for be in loaders:
                if not set(dev.targets) & set(self._targets_of(be)):
                    out.append(f"{be.name} runs on {', '.join(self._targets_of(be))}; {dev.name} offers "
                               f"{', '.join(dev.targets)}")
                elif q.schemes:
                    return []
            if not q.schemes:
                out.append(f"{q.name} declares no schemes")
        return list(dict.fromkeys(out))

    def pruned(self, device: str | HardwareProfile, **kw: Any) -> list[Verdict]:
        return [v for v in self.combinations(device, **kw) if not v.runnable]

    def enumerate_all(self, layer: str = "linear") -> int:
        """Judge every combination on every catalog device; returns the count (for benchmarks)."""
        return sum(len(self.combinations(d, layer=layer)) for d in self.devices())

    def with_local(self, profile: HardwareProfile) -> Registry:
        """A copy of this registry whose ``local`` device is ``profile`` (for tests and tools)."""
        r = Registry(self.host, self.runtime_versions, self.installed)
        r._local = replace(profile)
        return r

