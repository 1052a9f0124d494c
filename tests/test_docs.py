"""The documentation stays current: every hook documented and tested, generated pages (CLI, hooks, API,
capability matrix) equal to what the code generates now, and the site builds with ``mkdocs --strict``."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from quantmatch.sdk import hookspecs
from quantmatch.sdk.pluginhost import HOOKS

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
REGENERATE = "regenerate with: python docs/gen_docs.py"


def _gen_docs():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_docs", DOCS / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = _gen_docs()
SPEC_HOOKS = [h for h in hookspecs.__all__ if h.startswith("register_")]


def test_the_host_calls_exactly_the_specified_hooks() -> None:
    assert sorted(SPEC_HOOKS) == sorted(HOOKS)


@pytest.mark.parametrize("hook", SPEC_HOOKS)
def test_every_hook_is_documented(hook: str) -> None:
    doc = getattr(hookspecs, hook).__doc__ or ""
    assert len(doc.split()) >= 15, f"{hook} has no real docstring: the docstring is the contract"
    page = (DOCS / "hooks.md").read_text(encoding="utf-8")
    assert f"## `{hook}`" in page, f"docs/hooks.md does not document {hook}; {REGENERATE}"


@dataclass(frozen=True)
class HookMark:
    """One ``@pytest.mark.hook("register_x")`` found in a test file."""

    hook: str
    where: str  # path::name, for messages
    is_test: bool  # on a test function (test_*)
    asserts: bool  # whose body asserts something (assert, or pytest.raises)


def _hook_of(decorator: ast.expr) -> str | None:
    """``"register_x"`` for a ``@pytest.mark.hook("register_x")`` decorator, else ``None``."""
    if not (isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.hook"):
        return None
    (arg,) = decorator.args
    assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), \
        f"pytest.mark.hook takes the hook's name as a string literal, got {ast.unparse(arg)}"
    return arg.value


def _asserts(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(n, ast.Assert) or (isinstance(n, ast.Call) and ast.unparse(n.func) == "pytest.raises")
               for n in ast.walk(fn))


def hook_marks() -> list[HookMark]:
    """Every hook mark in the test files (quantmatch's and the example plugin's), read from their AST."""
    files = sorted(REPO.glob("tests/*.py")) + sorted(REPO.glob("examples/*/tests/*.py"))
    marks = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for decorator in node.decorator_list:
                    hook = _hook_of(decorator)
                    if hook is not None:
                        is_fn = not isinstance(node, ast.ClassDef)
                        marks.append(HookMark(hook, f"{path.relative_to(REPO)}::{node.name}",
                                              is_fn and node.name.startswith("test_"),
                                              is_fn and _asserts(node)))  # type: ignore[arg-type]
    return marks


HOOK_MARKS = hook_marks()


@pytest.mark.parametrize("hook", SPEC_HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    """A test marked ``@pytest.mark.hook("<hook>")`` registers an implementation of the hook through the
    plugin host and asserts on what the host or registry returns."""
    marked = [m for m in HOOK_MARKS if m.hook == hook and m.is_test and m.asserts]
    assert marked, f"no test is marked @pytest.mark.hook({hook!r}): add a test that registers a {hook} " \
                   "implementation through the plugin host and asserts on the result, and mark it " \
                   "(tests/test_plugins.py shows how)"


def test_hook_marks_name_real_hooks_on_tests_that_assert() -> None:
    assert len(HOOK_MARKS) >= len(SPEC_HOOKS)
    unknown = [f"{m.where}: {m.hook}" for m in HOOK_MARKS if m.hook not in SPEC_HOOKS]
    assert not unknown, f"hook marks naming no hook of core/hookspecs.py: {unknown}"
    hollow = [m.where for m in HOOK_MARKS if not (m.is_test and m.asserts)]
    assert not hollow, f"hook marks on something that is not a test_* function asserting a result: {hollow}"


def test_the_hook_mark_scan_sees_what_it_must() -> None:
    """The AST scan itself: a marked, asserting test counts; a bare implementation or a mark without
    an assertion does not."""
    src = (
        "import pytest\n"
        "def register_backends(register): ...\n"
        "@pytest.mark.hook('register_backends')\n"
        "def test_real():\n    assert 1\n"
        "@pytest.mark.hook('register_devices')\n"
        "def test_hollow():\n    register_backends(print)\n"
        "@pytest.mark.slow\n@pytest.mark.hook('register_quantizers')\n"
        "def test_raises():\n    with pytest.raises(ValueError):\n        int('x')\n"
    )
    tree = ast.parse(src)
    fns = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert [_hook_of(d) for d in fns["test_raises"].decorator_list] == [None, "register_quantizers"]
    assert _asserts(fns["test_real"]) and _asserts(fns["test_raises"]) and not _asserts(fns["test_hollow"])
    assert [_hook_of(d) for d in fns["register_backends"].decorator_list] == []


@pytest.mark.parametrize("page", ["cli.md", "hooks.md", "api.md"])
def test_generated_reference_is_current(page: str) -> None:
    expected = {"cli.md": gen_docs.cli_reference, "hooks.md": gen_docs.hooks_reference,
                "api.md": gen_docs.api_reference}[page]()
    assert (DOCS / page).read_text(encoding="utf-8") == expected, f"docs/{page} is stale; {REGENERATE}"


def test_cli_reference_is_the_help_of_every_command() -> None:
    """Not only equal to the generator's output: the generator really prints every command's --help."""
    from quantmatch.cli import build_parser

    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    commands = gen_docs._subcommands(build_parser())
    assert {"plugins", "devices", "registry", "explain", "conformance"} <= set(commands)
    for name in commands:
        assert f"## quantmatch {name}\n" in page and f"usage: quantmatch {name}" in page


def test_capability_matrix_is_current() -> None:
    stale = [p for p in gen_docs.stale() if p.startswith("matrix/")]
    assert not stale, f"stale capability matrix pages: {', '.join(stale[:5])}; {REGENERATE}"
    index = (DOCS / "matrix" / "index.md").read_text(encoding="utf-8")
    assert "[NVIDIA H100 SXM 80GB](nvidia_h100_sxm.md)" in index
    h100 = (DOCS / "matrix" / "nvidia_h100_sxm.md").read_text(encoding="utf-8")
    assert "| fp8 | `w8a8-fp8` |" in h100 and "● native" in h100


def test_matrix_comes_from_builtins_only() -> None:
    """Installed third-party plugins (the example's Gaudi) never leak into the generated pages."""
    assert "matrix/intel_gaudi2.md" not in gen_docs.matrix_pages()


def test_check_mode_reports_a_stale_page(tmp_path: Path) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    gen_docs.write(tmp_path / "docs")  # current, whatever the repository's copy is
    (tmp_path / "docs" / "hooks.md").write_text("old\n", encoding="utf-8")
    (tmp_path / "docs" / "matrix" / "gone_device.md").write_text("old\n", encoding="utf-8")
    assert gen_docs.stale(tmp_path / "docs") == ["hooks.md", "matrix/gone_device.md"]
    gen_docs.write(tmp_path / "docs")
    assert gen_docs.stale(tmp_path / "docs") == []


def test_every_page_is_in_the_site() -> None:
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.glob("*.md")]
    missing = [p for p in pages if p not in nav]
    assert not missing, f"pages missing from mkdocs.yml's nav: {missing}"


@pytest.mark.slow
def test_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("index.html", "cli/index.html", "hooks/index.html", "api/index.html", "plugin-guide/index.html",
                 "troubleshooting/index.html", "matrix/index.html", "matrix/nvidia_h100_sxm/index.html"):
        assert (site / page).is_file(), page
    assert "QUANTMATCH_BLOCK_PLUGINS" in (site / "troubleshooting" / "index.html").read_text(encoding="utf-8")
