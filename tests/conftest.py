"""Shared fixtures: fake third-party distributions on sys.path, fresh plugin hosts."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quantmatch.sdk.pluginhost import PluginHost, reset_host

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The session's caches and results store live under pytest's temporary root, never in the user's.

    Dequantized models and ONNX exports take about 1 GB per run; in the user's cache directory they would
    pile up, one copy per checkout, since the cache key includes the model file's path. Pytest keeps the last
    three temporary roots only. Set here, the variables reach the subprocesses that tests start as well.
    """
    root = tmp_path_factory.mktemp("user-dirs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTMATCH_CACHE_DIR", str(root / "cache"))
        mp.setenv("QUANTMATCH_RESULTS_DB", str(root / "results.sqlite"))
        yield


@pytest.fixture(autouse=True)
def _isolated_plugin_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("QUANTMATCH_DISABLE_PLUGIN_AUTOLOAD", "QUANTMATCH_PLUGINS", "QUANTMATCH_BLOCK_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    reset_host()
    yield
    reset_host()


@pytest.fixture
def no_rocm(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ROCm on this machine, whatever is installed: amdsmi, rocm-smi and a ROCm torch all absent."""
    from quantmatch.plugins.devices import amd_rocm

    monkeypatch.setattr(amd_rocm, "_amdsmi", lambda: None)
    monkeypatch.setattr(amd_rocm, "_rocm_smi_json", lambda: None)
    monkeypatch.setattr(amd_rocm, "_torch", lambda: None)


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Install a fake distribution (a module plus dist-info with a ``quantmatch`` entry point)."""
    created: list[str] = []

    def make(dist: str, module: str, source: str, ep_name: str | None = None, version: str = "1.0") -> str:
        root = tmp_path / f"site-{dist}"
        root.mkdir(exist_ok=True)
        (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
                                       encoding="utf-8")
        (info / "entry_points.txt").write_text(f"[quantmatch]\n{ep_name or dist} = {module}\n",
                                               encoding="utf-8")
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        created.append(module)
        return ep_name or dist

    yield make  # type: ignore[misc]
    for m in created:
        sys.modules.pop(m, None)


@pytest.fixture
def host_factory(capsys: pytest.CaptureFixture[str]) -> Callable[..., PluginHost]:
    def make(**kw: object) -> PluginHost:
        return PluginHost(**kw)  # type: ignore[arg-type]

    return make
