"""quantmatch's plugin hooks. The docstrings are the contract.

Every hook receives a ``register`` callable and hands classes or data to it; the registry indexes
what is handed over and records the plugin and distribution version it came from. Built-in plugins
(``quantmatch.plugins.*``) use exactly these hooks; third-party packages ship plugins through the
``quantmatch`` entry-point group::

    [project.entry-points.quantmatch]
    myplugin = "my_package.quantmatch_plugin"

and implement hooks with :data:`quantmatch.sdk.hookimpl`, typed with :data:`Register` (so that a
strict type checker needs no ``type: ignore`` in a plugin)::

    from quantmatch.sdk import Backend, Register, hookimpl

    @hookimpl
    def register_backends(register: Register[type[Backend]]) -> None:
        register(MyBackend)

Rules that apply to every hook:

- A hook must not do expensive work (no torch import, no device probing): the registry calls it at
  start-up, and ``quantmatch --help``/``registry``/``explain`` must stay fast.
- Names are global per kind: registering a name that another plugin already registered is refused
  and both plugins are named in the error.
- An exception raised by a hook, or a declaration that fails validation, marks the plugin broken:
  one warning line on stderr, nothing it handed over in that hook is used, everything else works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import pluggy

if TYPE_CHECKING:  # annotations only: importing the hooks stays as cheap as pluggy
    from quantmatch.sdk.backend import Backend
    from quantmatch.sdk.capability import Capability
    from quantmatch.sdk.device import DeviceFamily
    from quantmatch.sdk.executor import Executor
    from quantmatch.sdk.profile import HardwareProfile
    from quantmatch.sdk.quantizer import Quantizer

hookspec = pluggy.HookspecMarker("quantmatch")

T = TypeVar("T")
Register = Callable[[T], None]
"""The ``register`` callable a hook receives: ``Register[type[Backend]]`` takes backend classes."""

__all__ = [
    "Register",
    "hookspec",
    "register_backends",
    "register_capabilities",
    "register_device_families",
    "register_devices",
    "register_executors",
    "register_quantizers",
]


@hookspec
def register_device_families(register: Register[type[DeviceFamily]]) -> None:
    """Register device-family classes (subclasses of :class:`quantmatch.sdk.device.DeviceFamily`).

    Call ``register(FamilyClass)`` once per family. A family contributes its catalog
    (``FamilyClass.catalog()``, pure data) and live detection (``FamilyClass.detect()``, which must
    never raise and must degrade to "not present, because ..." when its library is missing).
    The family ``name`` must be unique. A family whose chips run code through an execution target
    quantmatch does not know yet (``cuda``, ``rocm``, ``metal``, ``vulkan``, ``cpu``) declares it in
    ``FamilyClass.targets`` (for example ``("hpu",)``); its devices and every backend may then use it.
    """


@hookspec
def register_devices(register: Register[HardwareProfile]) -> None:
    """Register individual devices as :class:`quantmatch.sdk.profile.HardwareProfile` instances.

    Use this to add a device to an existing family (a new SKU) or to add a device of a family your
    plugin also registers. Every figure must carry its source (a URL, ``detected`` or ``measured``)
    and uncertain figures must say so in their ``confidence``. Device ids must be unique.
    """


@hookspec
def register_quantizers(register: Register[type[Quantizer]]) -> None:
    """Register quantization methods (subclasses of :class:`quantmatch.sdk.quantizer.Quantizer`).

    Call ``register(QuantizerClass)``. The class must declare its data as class variables: ``name``,
    ``support`` (a :class:`~quantmatch.sdk.quantizer.SchemeSupport`), ``schemes`` (the canonical scheme
    strings the registry enumerates), ``artifact_format``, ``needs_calibration`` and ``requires``.
    Every scheme in ``schemes`` must parse and be allowed by ``support``.
    """


@hookspec
def register_backends(register: Register[type[Backend]]) -> None:
    """Register runtimes / kernel families (subclasses of :class:`quantmatch.sdk.backend.Backend`).

    Call ``register(BackendClass)``. The class declares ``name``, ``targets``, ``formats`` and an
    ordered tuple of :class:`~quantmatch.sdk.capability.Capability` rows, each with a level, a
    non-empty reason and a source. Backends that cannot run here are still declared so the registry
    can answer for hardware the user does not have.
    """


@hookspec
def register_capabilities(register: Callable[[str, Capability], None]) -> None:
    """Refine another backend's capabilities for your hardware: ``register(backend_name, capability)``.

    The way hardware vendors patch a runtime's support for their chips. Precedence rule: rows
    registered through this hook are evaluated *before* the backend's own rows, in plugin load order
    (built-ins first, then entry points sorted by name), so a matching refinement wins over the
    built-in declaration. Every such row is logged in ``quantmatch plugins`` (with the evaluation
    order per refined backend) and the verdict names the plugin that decided it. Refining a backend
    that is not registered is an error.

    Keep a refinement to your hardware: give it a ``when`` predicate (``Requires(families=...)``) or
    ``targets`` that only your devices have, or it changes verdicts on every device. A row whose
    ``targets`` names a target the backend lacks but a registered device family added (``hpu``)
    adds that target to the backend, as a vendor's runtime plugin teaches the runtime a new chip;
    such a refinement should end with a catch-all row for that target so that none of the
    backend's own rows decides for hardware they were not written for.
    """


@hookspec
def register_executors(register: Register[type[Executor]]) -> None:
    """Register executors (subclasses of :class:`quantmatch.sdk.executor.Executor`): where units of a sweep,
    a bench or a verification run (``--executor NAME``).

    Call ``register(ExecutorClass)``. The class declares ``name``, ``description``, ``requires`` (import
    names, checked without importing them) and ``install`` (the ``pip install`` line that provides them) as
    class variables; importing the plugin must not import the engine (Ray, Dask ...): do that in
    :meth:`~quantmatch.sdk.executor.Executor.connect`. The executor honours each unit's label selector and
    never chooses hardware itself: routing is the registry's. ``local`` is the built-in default.
    """
