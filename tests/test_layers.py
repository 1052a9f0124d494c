"""The architecture, checked: each top-level folder is one layer (import-linter contracts in pyproject.toml),
and measurement and planning code names no backend or method: it asks the plugins.

import-linter walks a package's directory, and the source folders map onto one import name only when
installed, so the test lays the package out as the wheel does (``[tool.setuptools] package-dir``) in a
temporary directory and lints that.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"


def _package_dirs() -> dict[str, str]:
    return dict(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"])


def _installed_layout(out: Path) -> Path:
    for package, folder in sorted(_package_dirs().items()):
        shutil.copytree(REPO / folder, out.joinpath(*package.split(".")), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "data"))
    return out


def _lint(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    site = _installed_layout(tmp_path / "site")
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([str(exe), "--no-cache", str(PYPROJECT)], capture_output=True, text=True, cwd=site,
                          env=env, timeout=300)


def test_contracts_are_written_with_no_ignored_imports() -> None:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert config["root_package"] == "quantmatch" and config["exclude_type_checking_imports"] is True
    contracts = {c["id"]: c for c in config["contracts"]}
    assert not any("ignore_imports" in c for c in contracts.values())
    layers = contracts["layers"]["layers"]
    assert layers[-1] == "quantmatch.sdk"  # the SDK imports no sibling
    assert "quantmatch.registry | quantmatch.plugins" in layers  # neither imports the other, nor anything above
    assert contracts["test-kit"]["forbidden_modules"] == ["quantmatch.testing"]
    # every top-level folder but the package root and the test kit is a layer of the contract
    every = {pkg for pkg in _package_dirs() if pkg.count(".") == 1} - {"quantmatch.testing"}
    assert every == {name.strip() for layer in layers for name in layer.split("|")}


def test_every_layering_contract_is_kept(tmp_path: Path) -> None:
    r = _lint(tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "2 kept, 0 broken" in r.stdout


def test_a_violation_is_caught(tmp_path: Path) -> None:
    """The check can fail: an SDK module importing the planner breaks the layers contract."""
    site = _installed_layout(tmp_path / "site")
    (site / "quantmatch" / "sdk" / "text.py").write_text(
        (REPO / "sdk" / "text.py").read_text(encoding="utf-8") + "\nfrom quantmatch.planner import plan  # noqa\n",
        encoding="utf-8")
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed")
    r = subprocess.run([str(exe), "--no-cache", str(PYPROJECT)], capture_output=True, text=True, cwd=site,
                       env={**os.environ, "PYTHONPATH": str(site)}, timeout=300)
    assert r.returncode != 0 and "quantmatch.sdk is not allowed to import quantmatch.planner" in r.stdout


# ---- no backend or method names in measurement and planning code ----------------------------------------
NUMBER_FORMAT_WORDS = frozenset({"fp8"})
"""Names that are also number formats of the scheme grammar (the ``fp8`` method, the ``fp8`` peak)."""


def _builtin_names() -> set[str]:
    from quantmatch.sdk.pluginhost import PluginHost

    host = PluginHost(autoload=False)
    return ({e.obj.name for e in host.backends.values()} | {e.obj.name for e in host.quantizers.values()}) \
        - NUMBER_FORMAT_WORDS


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """Every string constant of a module except docstrings (f-string pieces included); a piece of prose
    that mentions a runtime is not a name the code compares with, so only whole constants are checked."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("folder", ["measure", "planner"])
def test_measurement_and_planning_name_no_backend_or_method(folder: str) -> None:
    names = _builtin_names()
    assert {"torch", "llama.cpp", "onnxruntime", "gptq", "gguf", "hqq"} <= names
    found = [f"{path.relative_to(REPO)}:{line}: {value!r}" for path in sorted((REPO / folder).glob("*.py"))
             for line, value in _string_literals(path) if value in names]
    assert not found, "ask the plugin instead of naming it:\n" + "\n".join(found)


def test_the_name_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('"""Docstrings may say llama.cpp."""\nX = "llama.cpp"\n', encoding="utf-8")
    assert [v for _, v in _string_literals(bad) if v in _builtin_names()] == ["llama.cpp"]
