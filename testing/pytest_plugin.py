"""pytest fixtures of ``quantmatch.testing`` (loaded through the ``pytest11`` entry point).

- ``quantmatch_plugin``: a function ``quantmatch_plugin(plugin, name=None, **kw) -> PluginHost`` that
  registers a plugin for the current test (see :func:`quantmatch.testing.registered_plugin`); every
  host it installed is removed when the test ends.
- ``tiny_llama_dir`` / ``tiny_gpt2_dir``: a tiny random Hugging Face model directory (session-scoped;
  skipped when torch or transformers is missing).
- ``tiny_llama_info``: the tiny Llama's shapes as a :class:`~quantmatch.sdk.model_info.ModelInfo`.

It also registers the ``hook(name)`` marker: ``@pytest.mark.hook("register_backends")`` says that a
test registers an implementation of that hook and asserts on the result (quantmatch requires one such
test per hook; a plugin may mark its own tests the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from quantmatch.sdk.model_info import ModelInfo
from quantmatch.sdk.pluginhost import PluginHost
from quantmatch.testing.host import registered_plugin
from quantmatch.testing.models import MissingDependency, tiny_model_info, write_tiny_model

HOOK_MARKER = ("hook(name): the test registers an implementation of hook `name` (quantmatch's hookspecs) "
               "through the plugin host and asserts on what the host or registry returns")


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``hook`` marker, unless the project's own configuration already does."""
    if not any(line.split(":")[0].split("(")[0].strip() == "hook" for line in config.getini("markers")):
        config.addinivalue_line("markers", HOOK_MARKER)


@pytest.fixture
def quantmatch_plugin() -> Iterator[Callable[..., PluginHost]]:
    """Register a plugin for this test: ``host = quantmatch_plugin(my_plugin_module)``."""
    with ExitStack() as stack:
        def register(plugin: Any, name: str | None = None, **kw: Any) -> PluginHost:
            return stack.enter_context(registered_plugin(plugin, name, **kw))

        yield register


def _tiny_dir(factory: pytest.TempPathFactory, arch: str) -> Path:
    try:
        return write_tiny_model(factory.mktemp(f"tiny-{arch}"), arch)
    except MissingDependency as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama saved with ``save_pretrained`` (plus a tokenizer)."""
    return _tiny_dir(tmp_path_factory, "llama")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 saved with ``save_pretrained`` (plus a tokenizer)."""
    return _tiny_dir(tmp_path_factory, "gpt2")


@pytest.fixture
def tiny_llama_info() -> ModelInfo:
    return tiny_model_info("llama")
