"""The executor contract: where units of work run (this process, a Ray cluster, or a third party's engine).

An executor is registered through :func:`quantmatch.sdk.hookspecs.register_executors`. Measurement code
(``quantmatch sweep``, ``bench --executor``, ``verify --executor``) plans *units* (one combination, on one
kind of device, for one model), and hands each to :meth:`Executor.submit` with a *selector*: the node labels
a node must carry to run it (``{"quantmatch/device": "in(x86-cpu-sapphire_rapids,h100)"}``, Ray's label
selector syntax: a value, ``in(a,b)``, ``!value`` or ``!in(a,b)``). The executor never decides what runs where;
it only honours the selector, reports the node that ran each unit, and says when a unit was lost with its node.

Nodes are labelled from what ``quantmatch detect`` finds (:func:`node_labels`): the device id
(:data:`DEVICE_LABEL`), its family and architecture, and one label per feature flag the registry reads.

Executors that start and stop nodes (``quantmatch fleet start|stop``) implement :meth:`Executor.start_node`
and :meth:`Executor.stop_node`; the others leave the defaults, which refuse with a clear message.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from quantmatch.sdk.errors import InputError

__all__ = ["ARCH_LABEL", "DEVICE_LABEL", "FAMILY_LABEL", "FEATURE_PREFIX", "NODE_ID_LABEL", "Executor",
           "FleetNode", "NodeProcess", "Outcome", "UnitFn", "device_label", "node_labels", "parse_labels",
           "selector_matches"]

LABEL_PREFIX = "quantmatch/"
DEVICE_LABEL = "quantmatch/device"
"""The device a node is (a catalog id such as ``h100``, or ``<family>-<arch>`` for a detected CPU)."""
FAMILY_LABEL = "quantmatch/family"
ARCH_LABEL = "quantmatch/arch"
FEATURE_PREFIX = "quantmatch/"
"""Feature flags are labels ``quantmatch/<flag>=1`` (``quantmatch/avx512_vnni=1``)."""
NODE_ID_LABEL = "ray.io/node-id"
"""The label every node carries with its own id (Ray sets it); :meth:`Executor.on_each_node` selects on it."""

_VALUE = re.compile(r"[^A-Za-z0-9_.-]+")
UnitFn = Callable[[dict[str, Any]], dict[str, Any]]
"""A unit's work: a picklable module-level function from a JSON-able dict to a JSON-able dict."""


def device_label(profile: Any) -> str:
    """The :data:`DEVICE_LABEL` value of a detected device: its catalog id, or ``<family>-<arch>`` for a
    profile detection built itself (``local-cpu`` on any CPU would say nothing across machines)."""
    pid = str(profile.id)
    if pid.startswith("local") and profile.arch:
        pid = f"{profile.family}-{profile.arch}"
    return _clean(pid)


def _clean(value: str) -> str:
    return _VALUE.sub("_", value.strip())[:63].strip("_.-") or "unknown"


def node_labels(profile: Any, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Ray node labels for a detected device: device, family, architecture and ``quantmatch/<flag>=1`` for
    each feature flag (target features and CPU flags); ``overrides`` (``--label KEY=VALUE``) win."""
    labels = {DEVICE_LABEL: device_label(profile), FAMILY_LABEL: _clean(profile.family),
              ARCH_LABEL: _clean(profile.arch or "unknown")}
    for flag in sorted(set(profile.features) | set(profile.cpu_features)):
        key = FEATURE_PREFIX + _clean(flag)
        if key not in labels:
            labels[key] = "1"
    for k, v in (overrides or {}).items():
        labels[k if "/" in k else LABEL_PREFIX + k] = v
    return labels


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (``--label``) as a dict; a key without a ``/`` gets the ``quantmatch/`` prefix."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"--label {item!r}: give KEY=VALUE (for example --label device=h100)")
        k = key.strip()
        out[k if "/" in k else LABEL_PREFIX + k] = value.strip()
    return out


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a node with ``labels`` satisfies a label ``selector`` (Ray's syntax: ``v``, ``!v``, ``in(a,b)``,
    ``!in(a,b)``)."""
    for key, expr in selector.items():
        have = labels.get(key)
        neg = expr.startswith("!")
        body = expr[1:] if neg else expr
        values = ({v.strip() for v in body[3:-1].split(",")} if body.startswith("in(") and body.endswith(")")
                  else {body})
        hit = have is not None and have in values
        if hit == neg:
            return False
    return True


@dataclass(frozen=True)
class FleetNode:
    """One node of the fleet: its id, name and address, whether it is alive, its labels and CPUs."""

    id: str
    name: str
    address: str
    alive: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    cpus: float = 0.0
    """CPUs the node offers to units; a node with none runs no unit (and is not a device of the fleet)."""
    head: bool = False

    @property
    def device(self) -> str:
        return self.labels.get(DEVICE_LABEL, "")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "address": self.address, "alive": self.alive,
                "head": self.head, "cpus": self.cpus, "device": self.device, "labels": dict(self.labels)}


@dataclass(frozen=True)
class Outcome:
    """How a submitted unit ended: ``ok`` with its ``value``; else ``error`` (the unit raised or its worker
    crashed) or ``lost`` (its node died and no other node could take it). ``node`` is the id of the node
    that ran it, where known."""

    ok: bool
    value: dict[str, Any] | None = None
    error: str = ""
    lost: bool = False
    node: str = ""


@dataclass(frozen=True)
class NodeProcess:
    """A node this machine started (``quantmatch fleet start``): what ``fleet stop`` needs to stop it."""

    executor: str
    pid: int
    address: str
    head: bool
    labels: Mapping[str, str]
    log: str = ""
    note: str = ""
    """Anything the user must know or do (``wrote a new Ray token to ...: copy it to every machine that joins``)."""

    def to_dict(self) -> dict[str, Any]:
        return {"executor": self.executor, "pid": self.pid, "address": self.address, "head": self.head,
                "labels": dict(self.labels), "log": self.log, "note": self.note}


class Executor(ABC):
    """Runs units of work on nodes (see the module docstring). Class-level data:

    - ``name``: what ``--executor`` takes; ``description``: one line for ``quantmatch plugins``;
    - ``requires``: import names it needs (``("ray",)``), with ``install``, the ``pip install`` line;
    - ``shares_filesystem``: every unit runs on this machine, so artifacts need no moving;
    - ``remote``: units may run on other machines (it connects to an ``address``).

    An executor object is used by one run: :meth:`connect`, then any number of :meth:`submit`/:meth:`wait`,
    then :meth:`close`. Handles are opaque to the caller, and hashable.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""
    shares_filesystem: ClassVar[bool] = False
    remote: ClassVar[bool] = True

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    @classmethod
    def missing(cls) -> list[str]:
        """The modules in ``requires`` that cannot be imported here (checked without importing them)."""
        import importlib.util

        return [m for m in cls.requires if importlib.util.find_spec(m) is None]

    def check(self) -> None:
        """Refuse, naming the ``pip install`` line, when a required module is missing."""
        missing = self.missing()
        if missing:
            raise InputError(f"--executor {self.name} needs {', '.join(missing)}, which is not installed: "
                             f"{self.install or 'pip install ' + ' '.join(missing)}")

    @abstractmethod
    def connect(self) -> None:
        """Join the fleet (or start nothing, for an executor that runs here)."""

    @abstractmethod
    def nodes(self) -> list[FleetNode]:
        """Every node the fleet knows, alive or not, with its labels."""

    @abstractmethod
    def submit(self, fn: UnitFn, payload: dict[str, Any], selector: Mapping[str, str] | None, name: str) -> Any:
        """Start ``fn(payload)`` on a node whose labels satisfy ``selector`` (any node when ``None``); a handle."""

    @abstractmethod
    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]:
        """The handles among ``handles`` that have finished, waiting at most ``timeout`` seconds for one."""

    @abstractmethod
    def outcome(self, handle: Any) -> Outcome:
        """How a finished unit ended."""

    @abstractmethod
    def cancel(self, handles: Sequence[Any]) -> None:
        """Stop these units wherever they run (Ctrl-C); nothing they would have returned is kept."""

    def share(self, blob: bytes) -> Any:
        """Make ``blob`` (an artifact) available to later units once, returning what to put in their payloads
        (the executor resolves it on the node before the unit runs). Default: the bytes themselves."""
        return blob

    def running_on(self, handle: Any) -> str | None:
        """The id of the node running an unfinished unit, when the executor knows it (else ``None``)."""
        return None

    def on_each_node(self, fn: UnitFn, payload: dict[str, Any], timeout: float = 3600
                     ) -> list[tuple[FleetNode, Outcome]]:
        """Run ``fn(payload)`` once on every alive node that takes units (``detect``, ``verify``): each node with its
        outcome. A node that offers no CPU to units (a head started with ``--num-cpus 0``) is left out."""
        import time

        alive = [n for n in self.nodes() if n.alive and n.cpus > 0]
        handles = {id(h): (n, h) for n in alive
                   for h in [self.submit(fn, payload, {NODE_ID_LABEL: n.id}, f"{name_of(fn)}@{n.name}")]}
        todo = [h for _, h in handles.values()]
        end = time.monotonic() + timeout
        done: dict[int, Outcome] = {}
        while todo and time.monotonic() < end:
            for h in self.wait(todo, 1.0):
                done[id(h)] = self.outcome(h)
                todo.remove(h)
        if todo:
            self.cancel(todo)
        return [(n, done.get(key, Outcome(False, error=f"no answer in {timeout:.0f} s", lost=True)))
                for key, (n, _) in handles.items()]

    def close(self) -> None:  # noqa: B027 - most executors hold nothing to release
        """Leave the fleet (the nodes keep running)."""

    # -- node lifecycle (``quantmatch fleet start|stop``) --
    @classmethod
    def start_node(cls, *, head: bool, address: str | None, port: int | None, labels: Mapping[str, str],
                   num_cpus: int | None, state_dir: str) -> NodeProcess:
        """Start a node on this machine labelled ``labels`` (a head, or a worker joining ``address``)."""
        raise InputError(f"executor {cls.name!r} does not start nodes; use --executor with one that does")

    @classmethod
    def stop_node(cls, node: NodeProcess) -> str:
        """Stop a node this machine started (by its process id); what was done, in words."""
        raise InputError(f"executor {cls.name!r} does not stop nodes")


def name_of(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", "unit")
