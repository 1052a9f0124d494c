"""What users see and get back: fix lines printed as written (never read as markup), artifacts readable by
others as the umask says, a dry run that tells the truth about --out, and one error hierarchy caught once."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from quantmatch.cli import main
from quantmatch.sdk.errors import InputError, PluginError, QuantmatchError, RunError
from quantmatch.sdk.pluginhost import PluginHost, module_plugin
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport
from quantmatch.testing import write_tiny_config

FIX = "pip install 'quantmatch[torch,quant]'"


class NeedsExtras(Quantizer):
    """A method whose requirements are not installed, with an install line that looks like markup."""

    name = "needs-extras"
    description = "a method whose requirements are missing here"
    support = SchemeSupport(weights=("int4",), group_sizes=(0, 32, 64))
    schemes = ("w4a16-g64",)
    artifact_format = "compressed-tensors"
    requires: ClassVar[tuple[str, ...]] = ("quantmatch-no-such-distribution>=1",)
    install_hint = FIX
    source = "https://example.org/needs-extras"

    def quantize(self, source: Any, scheme: Any, out_dir: Any, options: Any = None, **kw: Any) -> Any:
        raise AssertionError("never reached: its requirements are missing")


@pytest.fixture
def with_needs_extras(quantmatch_plugin: Callable[..., PluginHost]) -> PluginHost:
    def register_quantizers(register: Any) -> None:
        register(NeedsExtras)

    return quantmatch_plugin(module_plugin("needs_extras", register_quantizers=register_quantizers))


@pytest.mark.hook("register_quantizers")
def test_a_fix_line_with_brackets_is_printed_as_written(with_needs_extras: PluginHost, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``pip install 'quantmatch[torch,quant]'`` must not lose ``[torch,quant]`` to rich's markup."""
    model = write_tiny_config(tmp_path / "model")
    code = main(["quantize", str(model), "--method", "needs-extras", "--scheme", "w4a16-g64",
                 "--out", str(tmp_path / "x"), "--dry-run"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and FIX in err, err


@pytest.mark.hook("register_quantizers")
def test_plan_prints_the_install_line_as_written(with_needs_extras: PluginHost,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.cli.plan_view import print_plan
    from quantmatch.planner import plan

    p = plan("smollm2-135m", "h100", prefer="smallest", tolerance=50)
    ours = [c for c in p.candidates if c.method == "needs-extras"]
    assert ours and all(c.produce_with == FIX for c in ours)
    capsys.readouterr()
    print_plan(replace(p, candidates=(ours[0], *p.candidates)))  # the CLI's own console
    text = " ".join(capsys.readouterr().out.split())
    assert "Produce it:" in text and FIX in text  # the top plan says how to get it, brackets and all


@pytest.fixture
def umask_022() -> Iterator[int]:
    old = os.umask(0o022)
    try:
        yield 0o022
    finally:
        os.umask(old)


def test_artifacts_get_the_permissions_the_umask_gives(tiny_llama_dir: Path, tmp_path: Path,
                                                       umask_022: int) -> None:
    pytest.importorskip("torch")
    import quantmatch

    out = quantmatch.quantize(tiny_llama_dir, "rtn", "w8a16", tmp_path / "art").artifact
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    files = [f for f in out.rglob("*") if f.is_file()]
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in files), \
        {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files}


def test_the_atomic_directory_follows_another_umask(tmp_path: Path) -> None:
    from quantmatch.sdk.artifact import atomic_output

    old = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("x")
            (tmp / "sub").mkdir()
            (tmp / "sub" / "b.bin").write_bytes(b"y")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "out", *(tmp_path / "out").rglob("*")]}
    assert modes == {"out": 0o750, "a.txt": 0o640, "sub": 0o750, "b.bin": 0o640}


def test_single_file_writes_follow_the_umask(tmp_path: Path) -> None:
    """Recipes, sensitivity tables and kernel-rate caches go through one atomic writer; mkstemp's 0600 must not
    survive the rename."""
    from quantmatch.sdk.artifact import atomic_write_json
    from quantmatch.sdk.recipe import Recipe, load_recipe, save_recipe

    old = os.umask(0o027)
    try:
        plain = atomic_write_json(tmp_path / "deep" / "a.json", {"x": [1, 2]})
        recipe = save_recipe(Recipe(model="m", method="gguf", backend="llama.cpp", device="d",
                                    base_scheme="gguf-q4_0", assignments={"blk.0.attn_q.weight": "gguf-q8_0"},
                                    predicted_weight_bytes=1, predicted_kld=0.0),
                             tmp_path / "r.json")
    finally:
        os.umask(old)
    assert json.loads(plain.read_text()) == {"x": [1, 2]}
    assert load_recipe(recipe).assignments == {"blk.0.attn_q.weight": "gguf-q8_0"}
    assert {stat.S_IMODE(f.stat().st_mode) for f in (plain, recipe)} == {0o640}
    assert sorted(f.name for f in tmp_path.rglob("*") if f.is_file()) == ["a.json", "r.json"]  # no temporaries


def test_dry_run_says_when_out_exists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_tiny_config(tmp_path / "model")
    out = tmp_path / "existing"
    out.mkdir()
    args = ["quantize", str(model), "--method", "rtn", "--scheme", "w8a16", "--out", str(out), "--dry-run"]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "already exists" in err and "--force" in err and "checks passed" not in err
    assert main([*args, "--force"]) == 0
    assert "checks passed" in capsys.readouterr().err
    assert main([*args[:-1], "--dry-run", "--json"]) == 2
    problems = json.loads(capsys.readouterr().out)["error"]["message"]
    assert "already exists" in problems


def test_one_error_hierarchy() -> None:
    from quantmatch.measure.bench import Combo
    from quantmatch.registry.conformance import ConformanceFormatError
    from quantmatch.sdk.artifact import ArtifactError, OutputExistsError
    from quantmatch.sdk.calibration import CalibrationError
    from quantmatch.sdk.layerwise import LayerwiseError
    from quantmatch.sdk.model_info import ModelInfoError
    from quantmatch.sdk.models import ModelSourceError
    from quantmatch.sdk.options import OptionsError
    from quantmatch.sdk.pipeline import QuantizeError
    from quantmatch.sdk.pluginhost import NoRunnerError, RegistrationError
    from quantmatch.sdk.runner import RunnerError
    from quantmatch.sdk.scheme import SchemeError

    for bad_input in (ArtifactError, OutputExistsError, CalibrationError, LayerwiseError, ModelInfoError,
                      ModelSourceError, OptionsError, QuantizeError, SchemeError, ConformanceFormatError,
                      NoRunnerError):
        assert issubclass(bad_input, InputError) and issubclass(bad_input, ValueError), bad_input
    assert issubclass(RunnerError, RunError) and issubclass(RegistrationError, PluginError)
    assert all(issubclass(e, QuantmatchError) for e in (InputError, RunError, PluginError))
    with pytest.raises(InputError, match="method:scheme:backend"):
        Combo.parse("nonsense")


def test_a_failed_run_exits_1_and_bad_input_2_with_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "gptq", "w4a16-g128", "vllm", "h1OO", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)["error"]
    assert out["type"] == "UnknownChoiceError" and "h100" in out["choices"]
