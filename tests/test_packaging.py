"""The wheel: one import name, no generic top-level modules, a working CLI from a fresh venv."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
                   check=True, capture_output=True, text=True, timeout=600)
    (whl,) = out.glob("quantmatch-*.whl")
    return whl


def test_wheel_has_one_import_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"quantmatch"}
    # each top-level folder is one sub-package (README, "Layout"); the SDK carries the hooks and the data
    for expected in ("quantmatch/py.typed", "quantmatch/sdk/hookspecs.py", "quantmatch/cli/main.py",
                     "quantmatch/plugins/devices/data/nvidia.json", "quantmatch/registry/registry.py",
                     "quantmatch/plugins/backends/vllm.py", "quantmatch/tui/__init__.py",
                     "quantmatch/sdk/runner.py", "quantmatch/planner/engine.py", "quantmatch/measure/bench.py",
                     "quantmatch/testing/contracts.py", "quantmatch/sdk/data/model_shapes.json"):
        assert expected in names, expected


def test_fresh_venv_runs_the_cli(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600,
                   capture_output=True, text=True)
    exe = env_dir / "bin" / "quantmatch"
    r = subprocess.run([str(exe), "registry", "--device", "h100", "--json"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["device"]["id"] == "nvidia_h100_sxm" and data["combinations"]
    r = subprocess.run([str(exe), "explain", "fp8", "w8a8-fp8", "vllm", "a100"], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and "weight-only" in r.stdout
    # the light install has no torch, and the registry does not need it
    r = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "None"


def test_mypy_on_the_installed_package(wheel: Path, tmp_path: Path) -> None:
    """mypy checks the package as installed (the source folders map onto one import name)."""
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(target)
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                        "-p", "quantmatch"],
                       capture_output=True, text=True, cwd=target, timeout=600,
                       env={"PATH": "/usr/bin:/bin", "MYPYPATH": str(target)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
