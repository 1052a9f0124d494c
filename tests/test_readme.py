"""The README's two commands are what a new user runs, and what CI runs, exactly as written."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return [line for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("python3 -m venv .venv && ")]


def test_the_readme_has_a_setup_command_and_a_test_command() -> None:
    setup, test = _commands()[:2]
    assert setup.endswith("quantmatch registry --device local") and ".[all,fleet,test]" in setup
    assert test.endswith(".venv/bin/python -m pytest")
    steps = [s.strip() for s in test.split("&&")]
    quantmatch = next(i for i, s in enumerate(steps) if '-e ".[all,fleet,test]"' in s)
    plugin = next(i for i, s in enumerate(steps) if "./examples/quantmatch-example-plugin" in s)
    # the plugin is installed by a pip call of its own, after quantmatch: one call for both fails to resolve
    # `quantmatch>=0.1` under the pip that `python3 -m venv` brings with Python 3.11 (23.2)
    assert plugin > quantmatch and "-e" not in steps[plugin].split()


def test_ci_runs_the_readme_test_command_as_written() -> None:
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    code = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not any("pip" in line and "install" in line for line in code), "no install step of its own"
    assert "grep -E '^python3 -m venv \\.venv && .*pytest' README.md" in script and 'bash -c "$cmd"' in script
    found = subprocess.run(["bash", "-c", "grep -E '^python3 -m venv \\.venv && .*pytest' README.md | head -n 1"],
                           capture_output=True, text=True, cwd=REPO, check=True).stdout.strip()
    assert found == _commands()[1]


@pytest.mark.slow
def test_the_plugin_installs_after_quantmatch_with_the_pip_venv_brings(tmp_path: Path) -> None:
    """The README's order of pip calls, with the pip of a new ``python3 -m venv`` (no upgrade), on the light
    install (the extras only add wheels): quantmatch first, then the example plugin, which needs it."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip"]
    version = subprocess.run([*pip, "--version"], capture_output=True, text=True, check=True).stdout
    first = subprocess.run([*pip, "install", "-q", "-e", str(REPO)], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run([*pip, "install", "-q", str(REPO / "examples" / "quantmatch-example-plugin")],
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, f"{version}: {second.stderr[-2000:]}"
    r = subprocess.run([str(env_dir / "bin" / "quantmatch"), "plugins", "--json"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and '"example-gaudi"' in r.stdout, r.stderr[-2000:]
    assert sys.version_info >= (3, 10)
