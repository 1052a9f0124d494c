"""Register a plugin for the duration of a test (a context manager; the fixture wraps it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from quantmatch.sdk import pluginhost
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.device import DeviceFamily
from quantmatch.sdk.executor import Executor
from quantmatch.sdk.pluginhost import PluginHost, module_plugin, reset_host
from quantmatch.sdk.profile import HardwareProfile
from quantmatch.sdk.quantizer import Quantizer

__all__ = ["PluginRegistrationError", "plugin_from", "registered_plugin"]


class PluginRegistrationError(AssertionError):
    """The plugin under test was refused (broken or blocked); the message carries the host's errors."""


def plugin_from(obj: Any, name: str) -> object:
    """A plugin object for ``obj``.

    ``obj`` may be a plugin already (a module or object with ``@hookimpl`` functions: returned as is),
    or one declaration, wrapped into a plugin with the matching hook: a
    :class:`~quantmatch.sdk.quantizer.Quantizer`, :class:`~quantmatch.sdk.backend.Backend`,
    :class:`~quantmatch.sdk.device.DeviceFamily` or :class:`~quantmatch.sdk.executor.Executor` subclass, or a
    :class:`~quantmatch.sdk.profile.HardwareProfile`.
    """
    def hand_over(item: Any) -> Callable[[Callable[[Any], None]], None]:
        def hook(register: Callable[[Any], None]) -> None:
            register(item)
        return hook

    if isinstance(obj, HardwareProfile):
        return module_plugin(name, register_devices=hand_over(obj))
    if isinstance(obj, type):
        for base, hook in ((Quantizer, "register_quantizers"), (Backend, "register_backends"),
                           (DeviceFamily, "register_device_families"), (Executor, "register_executors")):
            if issubclass(obj, base):
                return module_plugin(name, **{hook: hand_over(obj)})
        raise TypeError(f"{obj.__name__} is not a Quantizer, Backend, DeviceFamily or Executor subclass")
    return obj


@contextmanager
def registered_plugin(plugin: Any, name: str | None = None, *, autoload: bool = False,
                      allow_broken: bool = False) -> Iterator[PluginHost]:
    """Make a host with ``plugin`` the process-wide plugin host for the ``with`` block.

    ``plugin`` is anything :func:`plugin_from` accepts. ``autoload`` (default ``False``: built-ins
    plus this plugin only, so the test does not depend on what else is installed) also loads the
    installed entry-point plugins. A plugin the host refuses raises :class:`PluginRegistrationError`
    with its errors unless ``allow_broken`` (for tests of the failure itself). On exit the previous
    host (or none) is restored, whatever happened inside.
    """
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    host = PluginHost([(name, plugin_from(plugin, name))], autoload=autoload)
    info = host.plugins[name]
    if info.status != "ok" and not allow_broken:
        raise PluginRegistrationError(f"plugin {name!r} is {info.status}: {'; '.join(info.errors) or '-'}")
    previous = pluginhost._HOST  # the host installed before this block, possibly none
    reset_host(host)
    try:
        yield host
    finally:
        reset_host(previous)
