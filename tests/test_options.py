"""Typed method options: parsing, refusal, the built-in declarations, the pipeline, the CLI and the views."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from quantmatch.sdk.errors import InputError
from quantmatch.sdk.options import MethodOptions, OptionsError, option, validate_options_class
from quantmatch.sdk.pluginhost import PluginHost, RegistrationError
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport
from quantmatch.testing import write_tiny_config


@dataclass(frozen=True)
class Opts(MethodOptions):
    damp: float = option(0.01, "dampening")
    block_size: int = option(128, "columns per block")
    act_order: bool = option(True, "activation order")
    search_samples: int | None = option(4, "samples per candidate")
    exclude: tuple[str, ...] = option(("lm_head",), "layers kept in float")
    names: list[str] = option([], "a list")  # noqa: RUF009 - option() is the field specifier
    intermediate: Literal["f16", "bf16", "f32"] | None = option(None, "intermediate type")
    axis: Literal[0, 1] = option(1, "group axis")
    path: str | None = option(None, "a file")


# ---- parsing and coercion --------------------------------------------------------------------------
def test_defaults_and_what_the_command_line_hands_over() -> None:
    assert Opts.parse() == Opts()
    assert Opts.parse({}).to_dict() == {"damp": 0.01, "block_size": 128, "act_order": True, "search_samples": 4,
                                        "exclude": ("lm_head",), "names": [], "intermediate": None, "axis": 1,
                                        "path": None}
    o = Opts.parse({"damp": 1, "block_size": "64", "act_order": "false", "search_samples": None,
                    "exclude": "lm_head,*.mlp.*", "names": ["a", "b"], "intermediate": "BF16", "axis": "0",
                    "path": Path("/tmp/x.dat")})
    assert o.damp == 1.0 and isinstance(o.damp, float)
    assert o.block_size == 64 and o.act_order is False and o.search_samples is None
    assert o.exclude == ("lm_head", "*.mlp.*") and o.names == ["a", "b"]
    assert o.intermediate == "bf16" and o.axis == 0 and o.path == "/tmp/x.dat"
    assert Opts.parse({"exclude": []}).exclude == () and Opts.parse({"act_order": 0}).act_order is False
    assert Opts.parse({"block_size": 4.0}).block_size == 4


def test_unknown_key_names_every_valid_key_with_type_and_default() -> None:
    with pytest.raises(OptionsError) as err:
        Opts.parse({"dmp": 0.05}, method="gptq")
    e = err.value
    assert isinstance(e, InputError) and isinstance(e, ValueError)
    text = str(e)
    assert text.startswith("unknown gptq option 'dmp'. Did you mean: damp?")
    for line in ("damp (float, default 0.01): dampening", "block_size (int, default 128)",
                 "act_order (bool, default true)", "search_samples (int|null, default 4)",
                 'exclude (list[str], default ["lm_head"])', "intermediate (f16|bf16|f32|null, default null)",
                 "axis (0|1, default 1)"):
        assert line in text, text
    assert e.choices == ["damp", "block_size", "act_order", "search_samples", "exclude", "names", "intermediate",
                         "axis", "path"]
    assert e.valid.startswith("valid gptq options: damp: float = 0.01, block_size: int = 128")
    with pytest.raises(OptionsError, match=r"unknown options 'nosuch', 'other'\.\n"):
        Opts.parse({"nosuch": 1, "other": 2})


@pytest.mark.parametrize("key, value, message", [
    ("damp", "abc", "damp expects a float, got 'abc'"),
    ("damp", True, "damp expects a float, got True"),
    ("block_size", 2.5, "block_size expects an int, got 2.5"),
    ("act_order", "maybe", "act_order expects true or false, got 'maybe'"),
    ("search_samples", "all", "search_samples expects an int or null, got 'all'"),
    ("exclude", [1, 2], "exclude expects a list of strings (or one comma-separated string), got [1, 2]"),
    ("intermediate", "q8", "intermediate expects one of 'f16', 'bf16', 'f32' or null, got 'q8'"),
    ("axis", 2, "axis expects one of 0, 1, got 2"),
    ("damp", None, "damp expects a float, got None"),
])
def test_wrong_types_are_refused(key: str, value: Any, message: str) -> None:
    with pytest.raises(OptionsError) as err:
        Opts.parse({key: value}, method="gptq")
    assert str(err.value).startswith(f"gptq option {message}\nvalid gptq options:"), str(err.value)


def test_pipeline_keys_are_left_out_by_of_but_refused_by_parse() -> None:
    mapping = {"rules": (), "calibration": object(), "seed": 3, "progress": print, "damp": "0.1"}
    assert Opts.of(mapping, "gptq").damp == 0.1
    with pytest.raises(OptionsError, match="unknown option 'seed'"):
        Opts.parse({"seed": 3})


def test_a_method_without_options_refuses_every_key() -> None:
    assert MethodOptions.parse() == MethodOptions() and MethodOptions.schema() == []
    with pytest.raises(OptionsError, match=r"unknown fp8 option 'x'\.\nfp8 takes no options"):
        MethodOptions.parse({"x": 1}, method="fp8")


def test_post_init_checks_become_option_errors() -> None:
    from quantmatch.plugins.methods.gptq import GPTQOptions

    with pytest.raises(OptionsError, match=r"gptq option shrink expects a fraction between 0 and 1, got 2\.0"):
        GPTQOptions.parse({"shrink": 2}, method="gptq")


def test_schema_is_json_data() -> None:
    schema = json.loads(json.dumps(Opts.schema()))
    assert schema[0] == {"key": "damp", "type": "float", "nullable": False, "choices": [], "default": 0.01,
                         "help": "dampening"}
    by_key = {s["key"]: s for s in schema}
    assert by_key["exclude"]["type"] == "list[str]" and by_key["exclude"]["default"] == ["lm_head"]
    assert by_key["intermediate"] == {"key": "intermediate", "type": "str", "nullable": True,
                                      "choices": ["f16", "bf16", "f32"], "default": None, "help": "intermediate type"}
    assert by_key["axis"]["type"] == "int" and by_key["axis"]["choices"] == [0, 1]


# ---- declarations ------------------------------------------------------------------------------------
class Undecorated(Opts):
    extra: int = 3


@dataclass(frozen=True)
class NoHelp(MethodOptions):
    level: int = option(1, "")


@dataclass(frozen=True)
class DictOption(MethodOptions):
    table: dict[str, int] | None = option(None, "a table")  # noqa: RUF009 - option() is the field specifier


@dataclass(frozen=True)
class Clash(MethodOptions):
    seed: int = option(0, "a seed")


@dataclass(frozen=True)
class BadDefault(MethodOptions):
    damp: float = option(None, "dampening")


@pytest.mark.parametrize("cls, problem", [
    (dict, "is not a quantmatch.sdk.options.MethodOptions subclass"),
    (Undecorated, "Undecorated is not declared with @dataclass(frozen=True) (fields extra are ignored)"),
    (NoHelp, "NoHelp: option level has no help"),
    (DictOption, "DictOption: option table has type dict[str, int]"),
    (Clash, "Clash: option seed clashes with the pipeline's own seed"),
    (BadDefault, "BadDefault: damp expects a float, got None"),
])
def test_bad_declarations_are_found(cls: Any, problem: str) -> None:
    problems = validate_options_class(cls)
    assert problems and problem in problems[0], problems


BUILTIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "quanto": {"exclude": ("lm_head",), "dtype": None},
    "hqq": {"axis": 1, "exclude": ("lm_head",), "dtype": None},
    "gguf": {"imatrix": None, "threads": None, "intermediate": None, "tokenizer_pre": None, "verbose": False},
    "gptq": {"damp": 0.01, "block_size": 128, "act_order": True, "true_sequential": True, "shrink": 0.5,
             "batch_size": 8, "threads": None, "exclude": ("lm_head",), "dtype": None},
    "awq": {"n_grid": 20, "search_samples": 4, "duo_scaling": True, "clip": True, "batch_size": 4, "threads": None,
            "exclude": ("lm_head",), "dtype": None},
    "smoothquant": {"alpha": None, "smooth": True, "clip": False, "dynamic_layers": ("mlp.down_proj",),
                    "batch_size": 8, "threads": None, "exclude": ("lm_head",), "dtype": None},
    "rtn": {"batch_size": 8, "dynamic_layers": ("mlp.down_proj",), "threads": None, "exclude": ("lm_head",),
            "dtype": None},
    "fp8": {}, "bitsandbytes": {}, "onnx": {}, "mlx": {}, "torchao": {},
}
"""The values each built-in method used before its options were typed (``opts.get(key, default)``)."""


@pytest.mark.parametrize("method", sorted(BUILTIN_DEFAULTS))
def test_builtin_options_keep_their_defaults(method: str) -> None:
    q = PluginHost(autoload=False).quantizers[method].obj
    assert validate_options_class(q.options) == []
    assert q.options().to_dict() == BUILTIN_DEFAULTS[method]
    assert q.options.parse({}, method=method) == q.options()
    assert all(s["help"] for s in q.options.schema())


def test_smoothquant_default_layers_are_the_algorithm_default() -> None:
    pytest.importorskip("torch")
    from quantmatch.plugins.methods.algorithms.smoothquant import SmoothQuantConfig
    from quantmatch.plugins.methods.smoothquant import SmoothQuantOptions

    assert SmoothQuantOptions().dynamic_layers == SmoothQuantConfig().dynamic_layers


def test_a_builtin_with_a_bad_declaration_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantmatch.plugins.methods.gptq import GPTQQuantizer

    monkeypatch.setattr(GPTQQuantizer, "options", dict)
    with pytest.raises(RegistrationError, match=r"GPTQQuantizer\.options: .* is not a quantmatch\.sdk\.options"):
        PluginHost(autoload=False)


class WithOptions(Quantizer):
    """A third-party method with options; ``quantize`` records what it was handed."""

    name = "opt-test"
    support = SchemeSupport(weights=("int8",), group_sizes=(0,), symmetric=(True,))
    schemes = ("w8a16",)
    artifact_format = "opt-test"
    received: dict[str, Any] = {}

    @dataclass(frozen=True)
    class Options(MethodOptions):
        level: int = option(1, "how hard to try")
        exclude: tuple[str, ...] = option(("lm_head",), "layers kept in float")

    options = Options

    def quantize(self, source: Any, scheme: Any, out_dir: Any, options: Any = None, **kw: Any) -> Any:
        WithOptions.received = dict(options)
        (Path(out_dir) / "weights.bin").write_bytes(b"x")
        return {"level": options["level"]}


class BadOptions(WithOptions):
    name = "opt-bad"
    options = NoHelp


def test_a_third_party_plugin_with_a_bad_declaration_is_broken(quantmatch_plugin: Any) -> None:
    host = quantmatch_plugin(BadOptions, "opt-bad-plugin", allow_broken=True)
    info = host.plugins["opt-bad-plugin"]
    assert info.status == "broken" and "opt-bad" not in host.quantizers
    assert "BadOptions.options: NoHelp: option level has no help" in info.errors[0]


# ---- pipeline ----------------------------------------------------------------------------------------
def test_plan_reports_bad_options_as_fatal_problems(tmp_path: Path) -> None:
    from quantmatch.sdk.pipeline import plan_quantization

    model = write_tiny_config(tmp_path / "tiny")
    plan = plan_quantization(model, "gptq", "w4a16-g32", options={"damp": "abc"})
    refused = [p for p in plan.fatal if "option" in p.text]
    assert [p.text for p in refused] == ["gptq option damp expects a float, got 'abc'"]
    assert "damp: float = 0.01" in refused[0].fix and "act_order: bool = true" in refused[0].fix
    ok = plan_quantization(model, "gptq", "w4a16-g32", options={"damp": 0.05, "act_order": False})
    assert not [p for p in ok.problems if "option" in p.text]


def test_quantize_validates_before_anything_loads_and_hands_plugins_a_mapping(tmp_path: Path,
                                                                              quantmatch_plugin: Any) -> None:
    from quantmatch.sdk.calibration import CalibrationSpec
    from quantmatch.sdk.pipeline import quantize

    model = write_tiny_config(tmp_path / "tiny")
    quantmatch_plugin(WithOptions, "opt-plugin")
    with pytest.raises(OptionsError, match=r"unknown opt-test option 'levle'\. Did you mean: level\?"):
        quantize(model, "opt-test", "w8a16", tmp_path / "out", levle=2)
    assert not (tmp_path / "out").exists() and WithOptions.received == {}
    res = quantize(model, "opt-test", "w8a16", tmp_path / "out", level="3")
    got = WithOptions.received
    assert {k: got[k] for k in ("level", "exclude", "seed", "progress")} == {
        "level": 3, "exclude": ("lm_head",), "seed": 0, "progress": None}
    assert isinstance(got["calibration"], CalibrationSpec) and got["rules"] == ()
    assert set(got) == {"level", "exclude", "rules", "calibration", "seed", "progress", "stream", "job_dir", "resume",
                        "offload_dir"}
    assert res.manifest.details["level"] == 3


@pytest.mark.parametrize("method, scheme", [("quanto", "w8a16"), ("hqq", "w4a16-g32-asym"), ("gptq", "w4a16-g32"),
                                            ("awq", "w4a16-g32-asym"), ("smoothquant", "w8a8-int8"),
                                            ("rtn", "w8a16"), ("gguf", "gguf-q8_0")])
def test_builtin_quantize_refuses_unknown_keys_before_loading(method: str, scheme: str, tmp_path: Path) -> None:
    q = PluginHost(autoload=False).quantizers[method].obj
    model = write_tiny_config(tmp_path / "tiny")  # no weights: reaching the loader would fail differently
    with pytest.raises(OptionsError, match=f"unknown {method} option 'nosuch'"):
        q().quantize(model, scheme, tmp_path / "out", {"nosuch": 1, "seed": 0})


# ---- command line ------------------------------------------------------------------------------------
def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from quantmatch.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_refuses_unknown_and_mistyped_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(write_tiny_config(tmp_path / "tiny"))
    base = ["quantize", model, "--method", "gptq", "--scheme", "w4a16-g32", "--out", str(tmp_path / "o"), "--dry-run"]
    code, _, err = _cli(capsys, *base, "--option", "nosuch=1")
    assert code == 2 and "Traceback" not in err
    assert "unknown gptq option 'nosuch'" in err
    for valid in ("damp: float = 0.01", "block_size: int = 128", "act_order: bool = true", "shrink: float = 0.5",
                  "batch_size: int = 8", "threads: int|null = null", 'exclude: list[str] = ["lm_head"]',
                  "dtype: float16|bfloat16|float32|null = null"):
        assert valid in err, err
    code, _, err = _cli(capsys, *base, "--option", "damp=abc")
    assert code == 2 and "gptq option damp expects a float, got 'abc'" in err and "block_size: int = 128" in err
    code, _, err = _cli(capsys, *base, "--option", "dmp=0.1")
    assert code == 2 and "Did you mean: damp" in err
    code, out, _ = _cli(capsys, *base, "--option", "nosuch=1", "--json")
    error = json.loads(out)["error"]
    assert code == 2 and "unknown gptq option 'nosuch'" in error["message"]
    assert not (tmp_path / "o").exists()


def test_cli_accepts_valid_options_on_a_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.plugins.methods.gptq import GPTQQuantizer

    if GPTQQuantizer().missing():
        pytest.skip(f"gptq needs {GPTQQuantizer().missing()}")
    model = str(write_tiny_config(tmp_path / "tiny"))
    code, _, err = _cli(capsys, "quantize", model, "--method", "gptq", "--scheme", "w4a16-g32", "--out",
                        str(tmp_path / "o"), "--dry-run", "--option", "damp=0.05", "--option", "act_order=false",
                        "--option", "exclude=lm_head,*.down_proj")
    assert code == 0, err
    assert "checks passed" in err


def test_plugins_json_lists_every_methods_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "plugins", "--json")
    data = json.loads(out)
    assert code == 0 and data["plugins"]
    methods = {m["name"]: m for m in data["methods"]}
    assert set(BUILTIN_DEFAULTS) <= set(methods)
    gptq = methods["gptq"]
    assert gptq["plugin"] == "quantmatch.plugins.methods.gptq"
    damp = next(o for o in gptq["options"] if o["key"] == "damp")
    assert damp == {"key": "damp", "type": "float", "nullable": False, "choices": [], "default": 0.01,
                    "help": "dampening added to the Hessian's diagonal, relative to its mean"}
    hqq_axis = next(o for o in methods["hqq"]["options"] if o["key"] == "axis")
    assert hqq_axis["choices"] == [0, 1] and hqq_axis["default"] == 1
    assert methods["fp8"]["options"] == []
    for name, defaults in BUILTIN_DEFAULTS.items():
        assert [o["key"] for o in methods[name]["options"]] == list(defaults)


def test_plugins_lists_options_per_method(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "plugins")
    text = " ".join(out.split())
    assert code == 0
    assert "damp: float = 0.01" in text and "axis: 0|1 = 1" in text and "none (fp8, bitsandbytes" in text


def test_the_tui_detail_shows_a_methods_options() -> None:
    from rich.console import Console

    from quantmatch.plugins.methods.hqq import HQQOptions
    from quantmatch.tui.rendering import plugin_detail

    host = PluginHost(autoload=False)
    info = host.plugins["quantmatch.plugins.methods.hqq"]
    console = Console(width=120, record=True)
    console.print(plugin_detail(info, (), {"hqq": HQQOptions.specs()}))
    text = console.export_text()
    assert "method hqq - options (quantize --option KEY=VALUE):" in text
    assert "axis 0|1 = 1  1: groups along the input dimension" in text
    assert 'exclude list[str] = ["lm_head"]' in text


def test_the_tui_plugins_screen_shows_the_highlighted_methods_options() -> None:
    pytest.importorskip("textual")
    import asyncio
    import io

    from rich.console import Console
    from textual.widgets import DataTable, Static

    from quantmatch.registry import Registry
    from quantmatch.tui.app import QuantmatchApp
    from quantmatch.tui.scenarios import settle

    async def run() -> str:
        reg = Registry(PluginHost(autoload=False, stderr=io.StringIO()))
        app = QuantmatchApp(registry=reg, mode="plugins")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#plugins", DataTable)
            table.move_cursor(row=table.get_row_index("quantmatch.plugins.methods.gptq"))
            await settle(pilot)
            console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
            console.print(app.screen.query_one("#plugin-detail-body", Static).content)
            return console.export_text()

    detail = asyncio.run(run())
    assert "method gptq - options (quantize --option KEY=VALUE):" in detail
    assert "damp float = 0.01  dampening added to the Hessian's diagonal" in detail
    assert "batch_size int = 8" in detail


# ---- start-up cost -----------------------------------------------------------------------------------
def test_importing_method_plugins_imports_neither_pydantic_nor_torch() -> None:
    code = ("import sys\n"
            "from quantmatch.sdk.pluginhost import get_host\n"
            "host = get_host()\n"
            "[e.obj.options.schema() for e in host.quantizers.values()]\n"
            "print('HEAVY=' + ','.join(m for m in ('pydantic', 'torch', 'transformers', 'textual') "
            "if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().endswith("HEAVY="), r.stdout[-500:] + r.stderr
