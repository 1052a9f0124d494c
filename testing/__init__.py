"""``quantmatch.testing``: what a plugin author needs to test a quantmatch plugin.

- :func:`registered_plugin` (a context manager) and the ``quantmatch_plugin`` pytest fixture register
  a plugin for one test: they build a :class:`~quantmatch.sdk.pluginhost.PluginHost` with it, make it the
  process-wide host (so ``quantmatch.registry()``, the CLI and the planner see it) and restore the
  previous host afterwards.
- Tiny models built from configs: :data:`TINY_LLAMA_CONFIG`, :data:`TINY_GPT2_CONFIG`,
  :func:`tiny_model_info` (no torch needed) and :func:`write_tiny_model` (a random Hugging Face model
  directory with a tokenizer; needs torch and transformers).
- A reusable contract test suite: subclass :class:`QuantizerContract`, :class:`BackendContract`,
  :class:`RunnerContract` (the runner a backend names: declarations, then a real run on an artifact) or
  :class:`DeviceFamilyContract` in a ``Test*`` class, name the class under test, and pytest runs every
  contract check against it. quantmatch runs the same suite against its built-in plugins.

The pytest fixtures are registered through the ``pytest11`` entry point, so they are available in
any project that has quantmatch installed; ``pytest_plugins = ["quantmatch.testing.pytest_plugin"]``
in a ``conftest.py`` does the same explicitly. Importing this package never imports torch.
"""

from __future__ import annotations

from quantmatch.testing.contracts import (
    HEAVY_MODULES,
    BackendContract,
    DeviceFamilyContract,
    QuantizerContract,
    RunnerContract,
    blocked_imports,
)
from quantmatch.testing.host import PluginRegistrationError, plugin_from, registered_plugin
from quantmatch.testing.models import (
    TINY_GPT2_CONFIG,
    TINY_LLAMA_CONFIG,
    MissingDependency,
    tiny_config,
    tiny_model_info,
    write_tiny_config,
    write_tiny_model,
)

__all__ = [
    "HEAVY_MODULES",
    "TINY_GPT2_CONFIG",
    "TINY_LLAMA_CONFIG",
    "BackendContract",
    "DeviceFamilyContract",
    "MissingDependency",
    "PluginRegistrationError",
    "QuantizerContract",
    "RunnerContract",
    "blocked_imports",
    "plugin_from",
    "registered_plugin",
    "tiny_config",
    "tiny_model_info",
    "write_tiny_config",
    "write_tiny_model",
]
