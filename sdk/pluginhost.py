"""Plugin discovery and strict, traceable registration.

Built-in plugins and third-party entry points (group ``quantmatch``) are loaded into one pluggy
``PluginManager``. Each hook implementation is called on its own, so that a broken plugin is
isolated: it is listed as broken with its error and one warning line goes to stderr; the host and
every other plugin keep working.

Environment switches:

- ``QUANTMATCH_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry-point plugins (built-ins only).
- ``QUANTMATCH_PLUGINS=a,b``: allow-list; only these entry-point plugins are loaded.
- ``QUANTMATCH_BLOCK_PLUGINS=a,b``: never load these (entry-point names, distribution names, or
  built-in plugin names such as ``quantmatch.plugins.backends.vllm`` or short ``backends.vllm``).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from quantmatch.sdk import hookspecs
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability, readable_template, validate_capability
from quantmatch.sdk.device import DeviceFamily
from quantmatch.sdk.errors import InputError, PluginError, UnknownChoiceError
from quantmatch.sdk.options import validate_options_class
from quantmatch.sdk.priors import backend_priors_problems, method_priors_problems
from quantmatch.sdk.profile import CONFIDENCES, DEVICE_FAMILIES, TARGETS, HardwareProfile, Provenance, canonical_target
from quantmatch.sdk.quantizer import Problem, Quantizer
from quantmatch.sdk.scheme import SchemeError, parse_scheme
from quantmatch.sdk.text import count

if TYPE_CHECKING:  # the runner contract is imported when a runner is asked for, not at start-up
    from quantmatch.sdk.executor import Executor
    from quantmatch.sdk.runner import Runner

__all__ = [
    "ENTRY_POINT_GROUP",
    "Entry",
    "NoRunnerError",
    "PluginHost",
    "PluginInfo",
    "contribution_summary",
    "get_host",
    "hookimpl",
    "reset_host",
]

ENTRY_POINT_GROUP = "quantmatch"
hookimpl = pluggy.HookimplMarker("quantmatch")

BUILTIN_PLUGINS = tuple(
    f"quantmatch.plugins.{kind}.{mod}"
    for kind, mods in (
        ("devices", ("nvidia", "amd_rocm", "apple_metal", "intel_gpu", "x86_cpu", "arm_cpu")),
        ("methods", ("quanto", "hqq", "gguf", "gptq", "awq", "smoothquant", "fp8", "rtn", "bitsandbytes",
                     "onnx", "mlx", "torchao")),
        ("backends", ("hardware", "torch", "optimum_quanto", "hqq", "onnxruntime", "llama_cpp", "vllm",
                      "tensorrt_llm", "bitsandbytes", "mlx", "torchao")),
        ("executors", ("local", "ray_cluster")),
    )
    for mod in mods
)
"""Built-in plugin modules, registered through the same hooks as third-party plugins."""

HOOKS = ("register_device_families", "register_devices", "register_quantizers", "register_backends",
         "register_capabilities", "register_executors")


def _version() -> str:
    try:
        return importlib.metadata.version("quantmatch")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@dataclass
class PluginInfo:
    """A loaded (or refused) plugin and what it contributed."""

    name: str
    distribution: str
    version: str
    builtin: bool
    status: str = "ok"  # ok | broken | blocked
    errors: list[str] = field(default_factory=list)
    contributed: list[str] = field(default_factory=list)

    @property
    def provenance(self) -> Provenance:
        return Provenance(self.name, self.distribution, self.version)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "builtin": self.builtin, "status": self.status, "errors": list(self.errors),
                "contributed": list(self.contributed)}


def contribution_summary(contributed: Iterable[str]) -> str:
    """What a plugin contributed, counted by kind: ``16 devices, 1 family, 12 refinements`` (``-``: nothing).
    The words the command line and the TUI both show."""
    def kind(contribution: str) -> str:
        if contribution.startswith("device family"):
            return "family"
        if contribution.startswith("refines "):
            return "refinement"
        return contribution.split(" ")[0]

    kinds = Counter(kind(c) for c in contributed)
    return ", ".join(count(n, k) for k, n in sorted(kinds.items())) or "-"


@dataclass(frozen=True)
class Entry:
    """A registered item and the plugin it came from."""

    name: str
    obj: Any
    provenance: Provenance


def _env_list(name: str) -> set[str]:
    return {x.strip() for x in os.environ.get(name, "").split(",") if x.strip()}


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class RegistrationError(PluginError):
    """A built-in plugin's declaration is invalid, or two built-ins collide (a bug: raised, not warned)."""


class NoRunnerError(InputError, KeyError):
    """A backend without a runner (declared so the registry can answer for it), or no backend for a format.
    Also a ``KeyError``, as the runner table it replaces raised."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _validate_quantizer(cls: Any) -> list[str]:
    if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
        return [f"{cls!r} is not a Quantizer subclass"]
    p = []
    if not cls.name or not isinstance(cls.name, str):
        p.append(f"{cls.__name__} has no name")
    if not cls.artifact_format:
        p.append(f"{cls.__name__} declares no artifact_format")
    p.extend(f"{cls.__name__}.options: {x}" for x in validate_options_class(cls.options))
    p.extend(f"{cls.__name__}.priors: {x}" for x in method_priors_problems(cls.priors))
    for s in cls.schemes:
        try:
            sch = parse_scheme(s)
        except SchemeError as e:
            p.append(f"{cls.__name__}: scheme {s!r} does not parse: {str(e).splitlines()[0]}")
            continue
        if str(sch) != s:
            p.append(f"{cls.__name__}: scheme {s!r} is not canonical (write {str(sch)!r})")
        bad = cls.support.problems(sch, cls.name)
        if bad:
            p.append(f"{cls.__name__}: scheme {s!r} contradicts its support: {bad[0]}")
        p.extend(_check_problems(cls, sch))
    return p


def _check_problems(cls: type[Quantizer], scheme: Any) -> list[str]:
    """Run ``check(None, scheme)`` once at registration, so that a ``check()`` that raises (or returns
    something other than Problems) marks its plugin broken instead of failing a query later."""
    try:
        found = cls().check(None, scheme)
        ok = isinstance(found, list) and all(isinstance(x, Problem) for x in found)
    except Exception as e:
        return [f"{cls.__name__}.check(None, {str(scheme)!r}) raised {type(e).__name__}: {e}"]
    return [] if ok else [f"{cls.__name__}.check() must return a list of quantmatch.sdk.quantizer.Problem, "
                          f"got {type(found).__name__}"]


def _validate_backend(cls: Any, known_targets: tuple[str, ...] = TARGETS) -> list[str]:
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        return [f"{cls!r} is not a Backend subclass"]
    p = []
    if not cls.name or not isinstance(cls.name, str):
        p.append(f"{cls.__name__} has no name")
    targets = tuple(canonical_target(t) or t for t in cls.targets)
    for t in targets:
        if t not in known_targets:
            p.append(f"{cls.__name__}: unknown target {t!r} (valid: {', '.join(known_targets)})")
    if not isinstance(cls.runner, str) or (cls.runner and not _RUNNER_PATH.match(cls.runner)):
        p.append(f"{cls.__name__}.runner must be 'package.module:Class' (or empty), got {cls.runner!r}")
    p.extend(f"{cls.__name__}.priors: {x}" for x in backend_priors_problems(cls.priors, known_targets))
    if not isinstance(cls.serves_unquantized, bool):
        p.append(f"{cls.__name__}.serves_unquantized must be True or False, got {cls.serves_unquantized!r}")
    if not isinstance(cls.capabilities, tuple):
        p.append(f"{cls.__name__}.capabilities must be a tuple")
        return p
    for i, cap in enumerate(cls.capabilities):
        for prob in validate_capability(cap, targets):
            p.append(f"{cls.__name__}.capabilities[{i}]: {prob}")
    return p


_TARGET_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_RUNNER_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def _validate_executor(cls: Any) -> list[str]:
    from quantmatch.sdk.executor import Executor

    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        return [f"{cls!r} is not a quantmatch.sdk.executor.Executor subclass"]
    problems = []
    if not cls.name or cls.name != cls.name.lower() or " " in cls.name:
        problems.append(f"executor {cls.__name__} needs a lower-case `name` without spaces")
    if not cls.description:
        problems.append(f"executor {cls.name or cls.__name__} needs a `description`")
    if cls.requires and not cls.install:
        problems.append(f"executor {cls.name} requires {', '.join(cls.requires)} but gives no `install` line")
    return problems


def _validate_family(cls: Any) -> list[str]:
    if not (isinstance(cls, type) and issubclass(cls, DeviceFamily)):
        return [f"{cls!r} is not a DeviceFamily subclass"]
    p = [] if cls.name else [f"{cls.__name__} has no name"]
    if not isinstance(cls.targets, tuple):
        return [*p, f"{cls.__name__}.targets must be a tuple of target names"]
    for t in cls.targets:
        if not isinstance(t, str) or not _TARGET_NAME.match(t) or canonical_target(t) != t:
            p.append(f"{cls.__name__}: target {t!r} is not a lower-case target name such as 'hpu'")
    return p


def _validate_profile(p: Any, known_targets: tuple[str, ...] = TARGETS) -> list[str]:
    if not isinstance(p, HardwareProfile):
        return [f"{p!r} is not a HardwareProfile"]
    out = []
    if not p.id:
        out.append("device without id")
    for t in p.targets:
        if t not in known_targets:
            out.append(f"device {p.id}: unknown target {t!r} (valid: {', '.join(known_targets)}; a device "
                       "family adds targets through its `targets` class variable)")
    for label, fig in [("memory", p.memory), ("bandwidth", p.bandwidth), *p.peaks.items()]:
        if fig.value is not None and not fig.source:
            out.append(f"device {p.id}: figure {label} has no source")
        if fig.confidence not in CONFIDENCES:
            out.append(f"device {p.id}: figure {label} has unknown confidence {fig.confidence!r}")
    return out


def _problems(validate: Callable[[Any], list[str]], item: Any) -> list[str]:
    """``validate(item)``, where a declaration odd enough to break the validator is a problem too."""
    try:
        return validate(item)
    except Exception as e:
        return [f"{item!r} could not be validated ({type(e).__name__}: {e})"]


class PluginHost:
    """Loads plugins and holds what they registered, with provenance."""

    def __init__(self, extra_plugins: Iterable[tuple[str, object]] = (), *, autoload: bool | None = None,
                 stderr: Any = None) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.families: dict[str, Entry] = {}
        self.devices: dict[str, Entry] = {}
        self.quantizers: dict[str, Entry] = {}
        self.backends: dict[str, Entry] = {}
        self.executors: dict[str, Entry] = {}
        self.refinements: dict[str, list[tuple[Capability, Provenance]]] = {}
        self.targets: tuple[str, ...] = TARGETS
        """Execution targets known to this host: :data:`~quantmatch.sdk.profile.TARGETS` plus those that
        registered device families add (``DeviceFamily.targets``)."""
        self._stderr = stderr
        self._failed_at_query: set[str] = set()
        self._runners: dict[str, type[Runner]] = {}
        self._load(extra_plugins, autoload)

    # ---- loading ---------------------------------------------------------------------------
    def _warn(self, text: str) -> None:
        stream = self._stderr if self._stderr is not None else sys.stderr
        print(f"quantmatch: warning: {text}", file=stream)

    def _blocked(self, *names: str) -> bool:
        blocked = _env_list("QUANTMATCH_BLOCK_PLUGINS")
        return any(n in blocked for n in names if n)

    def _load(self, extra: Iterable[tuple[str, object]], autoload: bool | None) -> None:
        version = _version()
        for modname in BUILTIN_PLUGINS:
            info = PluginInfo(modname, "quantmatch", version, builtin=True)
            self.plugins[modname] = info
            if self._blocked(modname, modname.split(".", 2)[-1]):
                info.status = "blocked"
                continue
            module = importlib.import_module(modname)
            self.pm.register(module, name=modname)
        self.pm.check_pending()  # a misspelt hook in a built-in is a bug: fail loudly

        if autoload is None:
            autoload = not _truthy("QUANTMATCH_DISABLE_PLUGIN_AUTOLOAD")
        if autoload:
            allow = _env_list("QUANTMATCH_PLUGINS")
            eps = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
            for ep in eps:
                dist = getattr(ep, "dist", None)
                dname = dist.metadata["Name"] if dist is not None else ep.value.split(":")[0]
                dver = dist.version if dist is not None else "?"
                info = PluginInfo(ep.name, dname, dver, builtin=False)
                if ep.name in self.plugins:
                    self._warn(f"entry point {ep.name!r} of {dname} {dver} has the name of an already "
                               f"loaded plugin ({self.plugins[ep.name].distribution}); skipped")
                    continue
                self.plugins[ep.name] = info
                if (allow and ep.name not in allow and dname not in allow) or self._blocked(ep.name, dname):
                    info.status = "blocked"
                    continue
                try:
                    obj = ep.load()
                except BaseException as e:
                    if isinstance(e, KeyboardInterrupt):
                        raise
                    self._mark_broken(info, f"import failed: {type(e).__name__}: {e}")
                    continue
                self._register_third_party(info, obj)
        for name, obj in extra:
            info = PluginInfo(name, getattr(obj, "__distribution__", name),
                              str(getattr(obj, "__version__", "0")), builtin=False)
            self.plugins[name] = info
            if self._blocked(name):
                info.status = "blocked"
                continue
            self._register_third_party(info, obj)
        self._collect()

    def _register_third_party(self, info: PluginInfo, obj: object) -> None:
        try:
            self.pm.register(obj, name=info.name)
        except Exception as e:  # pluggy validation of hookimpl signatures
            self._mark_broken(info, f"invalid hook implementation: {e}")
            return
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            self.pm.unregister(name=info.name)
            unknown = [n for n in dir(obj) if n.startswith("register_") and n not in HOOKS]
            hint = ""
            if unknown:
                close = difflib.get_close_matches(unknown[0], HOOKS, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                msg = f"unknown hook {unknown[0]!r}{hint}; valid hooks: {', '.join(HOOKS)}"
            else:
                msg = str(e)
            self._mark_broken(info, msg)

    def _mark_broken(self, info: PluginInfo, error: str) -> None:
        first = info.status != "broken"
        info.status = "broken"
        info.errors.append(error)
        if first:
            self._warn(f"plugin {info.name!r} ({info.distribution} {info.version}) is broken and was "
                       f"skipped: {error} [block it with QUANTMATCH_BLOCK_PLUGINS={info.name}]")
        elif error:
            self._warn(f"plugin {info.name!r}: {error}")
        if self.pm.has_plugin(info.name):
            self.pm.unregister(name=info.name)

    def plugin_failed(self, plugin: str, error: str) -> str:
        """Record that ``plugin``'s code raised while the registry judged a combination.

        The plugin is listed as broken with the error; the first failure of each plugin prints one
        warning line. Returns the text the verdict shows (plugin, version and error).
        """
        info = self.plugins.get(plugin)
        who = f"plugin {plugin!r}" + (f" ({info.distribution} {info.version})" if info else "")
        text = f"{who} failed: {error}"
        if info is not None:
            info.status = "broken"
            if f"at query time: {error}" not in info.errors:
                info.errors.append(f"at query time: {error}")
        if plugin not in self._failed_at_query:
            self._failed_at_query.add(plugin)
            self._warn(f"{text}; the combinations it judges are marked unsupported "
                       f"[block it with QUANTMATCH_BLOCK_PLUGINS={plugin}]")
        return text

    def _call_each(self, hook: str, make_register: Callable[[PluginInfo, list[Any]], Callable[..., None]],
                   commit: Callable[[PluginInfo, list[Any]], None]) -> None:
        caller = getattr(self.pm.hook, hook)
        # get_hookimpls() lists implementations in registration order: built-ins first.
        for impl in caller.get_hookimpls():
            info = self.plugins.get(impl.plugin_name)
            if info is None or info.status != "ok":
                continue
            staged: list[Any] = []
            try:
                impl.function(register=make_register(info, staged))
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt):
                    raise
                if info.builtin:
                    raise
                self._mark_broken(info, f"{hook} raised {type(e).__name__}: {e}")
                continue
            commit(info, staged)

    def _collect(self) -> None:
        def simple(info: PluginInfo, staged: list[Any]) -> Callable[..., None]:
            return staged.append

        def refine(info: PluginInfo, staged: list[Any]) -> Callable[..., None]:
            def register(backend: str, capability: Capability) -> None:
                staged.append((backend, capability))
            return register

        self._call_each("register_device_families", simple,
                        lambda i, s: self._commit(i, s, "device family", self.families, _validate_family))
        added = [t for e in self.families.values() for t in e.obj.targets if t not in TARGETS]
        self.targets = TARGETS + tuple(dict.fromkeys(added))

        def profile_ok(p: Any) -> list[str]:
            return _validate_profile(p, self.targets)

        def backend_ok(cls: Any) -> list[str]:
            return _validate_backend(cls, self.targets)

        for entry in list(self.families.values()):
            info = self.plugins[entry.provenance.plugin]
            try:
                profiles = list(entry.obj.catalog())
            except Exception as e:
                if info.builtin:
                    raise
                self._mark_broken(info, f"{entry.name}.catalog() raised {type(e).__name__}: {e}")
                continue
            self._commit(info, profiles, "device", self.devices, profile_ok)
        self._call_each("register_devices", simple,
                        lambda i, s: self._commit(i, s, "device", self.devices, profile_ok))
        self._call_each("register_quantizers", simple,
                        lambda i, s: self._commit(i, s, "method", self.quantizers, _validate_quantizer))
        self._call_each("register_backends", simple,
                        lambda i, s: self._commit(i, s, "backend", self.backends, backend_ok))
        self._call_each("register_capabilities", refine, self._commit_refinements)
        self._call_each("register_executors", simple,
                        lambda i, s: self._commit(i, s, "executor", self.executors, _validate_executor))

    def _commit(self, info: PluginInfo, items: list[Any], kind: str, table: dict[str, Entry],
                validate: Callable[[Any], list[str]]) -> None:
        problems = [p for item in items for p in _problems(validate, item)]
        if problems:
            if info.builtin:
                raise RegistrationError(f"built-in plugin {info.name}: {problems[0]}")
            self._mark_broken(info, f"invalid {kind} declaration: {'; '.join(problems[:3])}")
            return
        for item in items:
            name = item.id if isinstance(item, HardwareProfile) else item.name
            if kind == "device family" and name not in DEVICE_FAMILIES and not name:
                continue
            if name in table:
                other = table[name].provenance
                msg = (f"{kind} {name!r} from plugin {info.name!r} ({info.distribution} {info.version}) "
                       f"collides with {kind} {name!r} from plugin {other.plugin!r} "
                       f"({other.distribution} {other.version}); the second registration is refused")
                if info.builtin and other.distribution == "quantmatch":
                    raise RegistrationError(msg)
                info.errors.append(msg)
                self._warn(msg)
                continue
            prov = info.provenance
            obj = item.with_provenance(prov) if isinstance(item, HardwareProfile) else item
            table[name] = Entry(name, obj, prov)
            info.contributed.append(f"{kind} {name}")

    def _commit_refinements(self, info: PluginInfo, items: list[Any]) -> None:
        """Validate and record ``register_capabilities`` rows (see the hook's precedence rule).

        A row that names, in ``targets``, a target the backend lacks but this host knows (one a
        device family added, such as ``hpu``) adds that target to the backend - the way a vendor's
        runtime plugin teaches a runtime its chip. The host then holds a subclass of the backend
        with the extended ``targets``; the original class is left untouched.
        """
        problems = []
        added: dict[str, list[str]] = {}
        for backend, cap in items:
            if backend not in self.backends:
                close = difflib.get_close_matches(str(backend), list(self.backends), n=3)
                problems.append(f"refines unknown backend {backend!r}"
                                + (f" (did you mean {', '.join(close)}?)" if close else ""))
                continue
            targets = tuple(canonical_target(t) or t for t in self.backends[backend].obj.targets)
            if isinstance(cap, Capability) and isinstance(cap.targets, tuple):
                new = [t for t in (canonical_target(x) or x for x in cap.targets)
                       if t not in targets and t in self.targets]
                targets += tuple(new)
                added.setdefault(backend, []).extend(new)
            problems.extend(_problems(functools.partial(validate_capability, backend_targets=targets), cap))
        if problems:
            self._mark_broken(info, f"invalid capability refinement: {'; '.join(problems[:3])}")
            return
        for backend, new in added.items():
            new = [t for t in dict.fromkeys(new) if t not in self.backends[backend].obj.targets]
            if not new:
                continue
            entry = self.backends[backend]
            base = entry.obj
            extended = type(base.__name__, (base,), {"targets": (*base.targets, *new), "__doc__": base.__doc__,
                                                     "__module__": base.__module__})
            self.backends[backend] = Entry(entry.name, extended, entry.provenance)
            info.contributed.append(f"refines {backend}: adds target {', '.join(new)}")
        for backend, cap in items:
            self.refinements.setdefault(backend, []).append((cap, info.provenance))
            on = f" on {','.join(cap.targets)}" if cap.targets else ""
            info.contributed.append(f"refines {backend}: {cap.level.value} for "
                                    f"{','.join(cap.weights or ('*',))}{on} ({readable_template(cap.reason, 80)})")

    def precedence(self, backend: str) -> list[str]:
        """The order in which ``backend``'s capability rows are evaluated, as log lines.

        Refinements (``register_capabilities``) come first, in plugin load order (built-ins, then
        entry points sorted by name, then plugins passed to the host), then the backend's own rows;
        the first row whose filters match and whose device predicate holds decides.
        """
        lines = [f"{i}. {prov.plugin} ({prov.distribution} {prov.version}): {cap.level.value} - "
                 f"{readable_template(cap.reason)}"
                 for i, (cap, prov) in enumerate(self.refinements.get(backend, ()), 1)]
        entry = self.backends.get(backend)
        if entry is not None:
            lines.append(f"{len(lines) + 1}. then the {len(entry.obj.capabilities)} rows of {backend} itself "
                         f"({entry.provenance})")
        return lines

    # ---- queries ---------------------------------------------------------------------------
    @property
    def broken(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.status == "broken"]

    def family(self, name: str) -> type[DeviceFamily] | None:
        e = self.families.get(name)
        return e.obj if e else None  # type: ignore[no-any-return]

    # ---- runners ---------------------------------------------------------------------------
    def backend_entry(self, name: str) -> Entry:
        """The registered backend ``name``; :class:`~quantmatch.sdk.errors.UnknownChoiceError` otherwise."""
        entry = self.backends.get(name.strip().lower()) if name else None
        if entry is None:
            raise UnknownChoiceError("backend", name, self.backends)
        return entry

    def executor_class(self, name: str) -> type[Executor]:
        """The registered executor ``name``; :class:`~quantmatch.sdk.errors.UnknownChoiceError` with the valid
        names otherwise."""
        entry = self.executors.get(name.strip().lower()) if name else None
        if entry is None:
            raise UnknownChoiceError("executor", name, self.executors)
        return entry.obj  # type: ignore[no-any-return]

    def runner_class(self, backend: str) -> type[Runner] | None:
        """The :class:`~quantmatch.sdk.runner.Runner` class ``backend`` names (imported now), or ``None``
        when it declares none. A third-party runner that fails to import marks its plugin broken (one
        warning) and raises :class:`~quantmatch.sdk.errors.PluginError`."""
        entry = self.backend_entry(backend)
        path = entry.obj.runner
        if not path:
            return None
        cached = self._runners.get(path)
        if cached is not None:
            return cached
        from quantmatch.sdk.runner import Runner

        module, _, attr = path.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
            if not (isinstance(cls, type) and issubclass(cls, Runner)):
                raise TypeError(f"{path} is not a quantmatch.sdk.runner.Runner subclass")
        except Exception as e:
            info = self.plugins.get(entry.provenance.plugin)
            if info is None or info.builtin:
                raise
            text = self.plugin_failed(info.name, f"runner {path} of backend {entry.name!r} cannot be loaded: "
                                                 f"{type(e).__name__}: {e}")
            raise PluginError(text) from e
        self._runners[path] = cls
        return cls  # type: ignore[no-any-return]

    def runner(self, backend: str, threads: int | None = None) -> Runner:
        """A runner for ``backend`` (not loaded yet). Raises :class:`NoRunnerError` when the backend declares
        none (the registry still answers for it)."""
        cls = self.runner_class(backend)
        if cls is None:
            runnable = [n for n, e in sorted(self.backends.items()) if e.obj.runner]
            raise NoRunnerError(f"quantmatch has no runner for backend {backend!r} (it is declared so the registry "
                                f"can answer for it); backends with a runner: {', '.join(runnable)}", choices=runnable)
        return cls(threads, backend=self.backend_entry(backend).name)

    def runnable_backends(self) -> list[str]:
        """Backends that name a runner, in name order."""
        return [n for n, e in sorted(self.backends.items()) if e.obj.runner]

    def reference_backend(self) -> str:
        """The backend whose fp32 baseline every measurement is compared with (``Backend.reference``; the
        first one registered when several claim it)."""
        for name, entry in self.backends.items():
            if entry.obj.reference and entry.obj.runner:
                return name
        raise NoRunnerError("no backend is the reference (Backend.reference) with a runner; the built-in "
                            "backends may be blocked (QUANTMATCH_BLOCK_PLUGINS)")

    def reference_runner(self, threads: int | None = None) -> Runner:
        """A runner of :meth:`reference_backend`."""
        return self.runner(self.reference_backend(), threads)

    def runner_for_format(self, artifact_format: str, threads: int | None = None) -> Runner:
        """A runner of a backend that loads ``artifact_format``: the first, in name order, whose runner's
        requirements are installed, else the first at all (whose load names the install line)."""
        names = [n for n, e in sorted(self.backends.items())
                 if e.obj.runner and (artifact_format in e.obj.formats or "*" in e.obj.formats)]
        if not names:
            raise NoRunnerError(f"no backend with a runner loads {artifact_format} artifacts "
                                f"(backends with a runner: {', '.join(self.runnable_backends())})")
        for name in names:
            cls = self.runner_class(name)
            if cls is not None and not cls.missing():
                return self.runner(name, threads)
        return self.runner(names[0], threads)


_HOST: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host (loaded on first use)."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
    return _HOST


def reset_host(host: PluginHost | None = None) -> None:
    """Drop (or replace) the process-wide host; tests use this to load plugins for one test."""
    global _HOST
    _HOST = host


def module_plugin(name: str, **hooks: Callable[..., None]) -> ModuleType:
    """Build a plugin object from hook functions (handy in tests and notebooks)."""
    mod = ModuleType(name)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn))
    return mod
