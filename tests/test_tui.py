"""The TUI (``quantmatch tui``), driven with Textual's pilot: keys, clicks, widget content, messages.

Every test injects its own :class:`Registry` (built-in plugins only, a fixed "local" device), so
nothing depends on the machine or on installed third-party plugins.
"""

from __future__ import annotations

import asyncio
import functools
import io
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import pytest

pytest.importorskip("textual")

from rich.console import Console
from textual.content import Content
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Select, Static
from textual.worker import Worker, WorkerState

from quantmatch.registry import Registry
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability
from quantmatch.sdk.pluginhost import PluginHost, get_host, module_plugin, reset_host
from quantmatch.sdk.profile import Figure, HardwareProfile
from quantmatch.sdk.quantizer import Quantizer, SchemeSupport
from quantmatch.sdk.verdict import Level
from quantmatch.tui.app import QuantmatchApp
from quantmatch.tui.layout import MatrixLayout, abbreviations, fit_columns, fit_flexible, matrix_layout, short_name
from quantmatch.tui.matrix_model import MatrixFilters, build_matrix
from quantmatch.tui.messages import CellChosen, DeviceChosen, PlanFailed, PlanFinished, RegistryReady
from quantmatch.tui.rendering import readable_reason, refinement_text
from quantmatch.tui.scenarios import settle
from quantmatch.tui.screens.devices import DevicesScreen
from quantmatch.tui.screens.explain import ExplainScreen
from quantmatch.tui.screens.help import HelpScreen
from quantmatch.tui.screens.matrix import MatrixScreen
from quantmatch.tui.screens.plan import PlanScreen, workload_for_context
from quantmatch.tui.screens.plugins import PluginsScreen
from quantmatch.tui.state import Selection

M = TypeVar("M", bound=Message)
A100 = "nvidia_a100_80gb_sxm"
H100 = "nvidia_h100_sxm"
SRC = "https://example.org/acme"


# ---- fixtures and helpers -----------------------------------------------------------------------
def fixed_local(reg: Registry) -> HardwareProfile:
    """A stable stand-in for the detected machine: a catalog CPU marked as detected."""
    return replace(reg.device("intel_sapphire_rapids"), id="local-cpu", name="Test machine CPU", detected=True,
                   aliases=())


def make_registry(*extra: tuple[str, object]) -> Registry:
    host = PluginHost(list(extra), autoload=False, stderr=io.StringIO())
    reg = Registry(host)
    return reg.with_local(fixed_local(reg))


@pytest.fixture(scope="module")
def registry() -> Registry:
    return make_registry()


class AcmeQuant(Quantizer):
    """A third-party method."""

    name = "acmeq"
    description = "ACME INT8 quantizer"
    support = SchemeSupport(weights=("int8",), activations=("int8",), weight_only=True, group_sizes=(0,))
    schemes = ("w8a8-int8", "w8a16")
    artifact_format = "acme"
    source = SRC


class AcmeRuntime(Backend):
    """A third-party runtime that loads only ACME artifacts."""

    name = "acme-rt"
    description = "ACME runtime"
    targets = ("cuda", "cpu")
    formats = ("acme",)
    source = SRC
    capabilities = (
        Capability(Level.NATIVE, "acme-rt runs INT8 x INT8 on the ACME tensor units", SRC,
                   weights=("int8",), activations=("int8",)),
        Capability(Level.WEIGHT_ONLY, "acme-rt dequantizes INT8 weights to 16-bit", SRC, weights=("int8",)),
    )


ACME_X1 = HardwareProfile(
    id="acme_x1", name="ACME X1 96GB", vendor="acme", family="nvidia", arch="sm_90", compute_capability=9.0,
    targets=("cuda",), features=frozenset({"fp16", "bf16", "int8", "fp32"}),
    memory=Figure(96, "GB", SRC), bandwidth=Figure(4000, "GB/s", SRC),
    peaks={"bf16": Figure(900, "TFLOPS", SRC), "int8": Figure(1800, "TOPS", SRC)}, aliases=("x1",),
)


def acme_plugin() -> object:
    """A third-party plugin adding a device, a method and a backend (no TUI code knows about them)."""
    plugin = module_plugin("acme", register_devices=lambda register: register(ACME_X1),
                           register_quantizers=lambda register: register(AcmeQuant),
                           register_backends=lambda register: register(AcmeRuntime))
    plugin.__version__ = "2.5"  # type: ignore[attr-defined]
    plugin.__distribution__ = "acme-quantmatch"  # type: ignore[attr-defined]
    return plugin


def broken_plugin() -> object:
    def register_backends(register: Callable[..., None]) -> None:
        raise RuntimeError("acme driver 0.1 not found")

    return module_plugin("acme-broken", register_backends=register_backends)


def sync(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async pilot test with asyncio (no pytest async plugin needed)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


def posted(messages: list[Message], kind: type[M]) -> list[M]:
    """The distinct messages of one kind (the hook sees a bubbling message at every node it reaches)."""
    seen: dict[int, M] = {}
    for m in messages:
        if isinstance(m, kind):
            seen.setdefault(id(m), m)
    return list(seen.values())


def text_of(widget: Static, width: int = 200) -> str:
    """The plain text a Static shows (markup, Content or any rich renderable)."""
    content = widget.content
    if isinstance(content, Content):
        return content.plain
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(content)
    return console.export_text()


def table_text(table: DataTable[Any]) -> list[list[str]]:
    rows = []
    for r in range(table.row_count):
        rows.append([c.plain if hasattr(c, "plain") else str(c) for c in table.get_row_at(r)])
    return rows


async def type_text(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*["space" if ch == " " else ch for ch in text])


# ---- pure parts ------------------------------------------------------------------------------------
def test_matrix_model_cells_and_filters(registry: Registry) -> None:
    m = build_matrix(registry, "a100")
    row = next(r for r in m.rows if (r.method, r.scheme) == ("fp8", "w8a8-fp8"))
    col = next(c for c in m.columns if (c.backend, c.target) == ("vllm", "cuda"))
    a, b = m.cell(row, col)
    assert a is not None and b is None and a.level is Level.WEIGHT_ONLY and "Marlin" in (a.runs_as or "")
    assert not m.compare and m.counts()[Level.WEIGHT_ONLY] > 0
    # the text filter keeps the rows it names and, for a backend name, the columns
    f = build_matrix(registry, "a100", filters=MatrixFilters(text="fp8 w8a8-fp8 vllm"))
    assert ("fp8", "w8a8-fp8") in {(r.method, r.scheme) for r in f.rows}
    assert all("fp8" in f"{r.method} {r.scheme}" and "w8a8-fp8" in r.scheme for r in f.rows)
    assert [c.backend for c in f.columns] == ["vllm"]
    # the level filter keeps rows and columns with at least one cell of that level
    u = build_matrix(registry, "h100", filters=MatrixFilters(level=Level.UNSUPPORTED, method="rtn"))
    assert u.rows and all(any(u.matches_level(r, c) for c in u.columns) for r in u.rows)
    kv = build_matrix(registry, "h100", filters=MatrixFilters(layer="kv-cache"))
    assert all(v.layer == "kv-cache" for pair in kv.cells.values() for v in pair if v is not None)


def test_matrix_model_compare(registry: Registry) -> None:
    m = build_matrix(registry, "a100", "h100")
    assert m.compare and m.difference_count() > 0
    row = next(r for r in m.rows if (r.method, r.scheme) == ("fp8", "w8a8-fp8"))
    col = next(c for c in m.columns if c.backend == "vllm")
    a, b = m.cell(row, col)
    assert a is not None and b is not None
    assert (a.level, b.level) == (Level.WEIGHT_ONLY, Level.NATIVE) and m.differs(row, col)
    d = build_matrix(registry, "a100", "h100", MatrixFilters(differences_only=True))
    assert d.rows and all(any(d.differs(r, c) for c in d.columns) for r in d.rows)
    assert len(d.rows) < len(m.rows)


def test_layout_short_names_and_fitting() -> None:
    assert [short_name(n) for n in ("bitsandbytes", "onnxruntime", "tensorrt-llm", "optimum-quanto", "vllm")] == \
        ["bnb", "ort", "trt-llm", "quanto", "vllm"]
    assert short_name("optimum-habana") == "habana" and short_name("acme-super-runtime") == "acme-super-…"
    assert abbreviations(["vllm", "tensorrt-llm", "tensorrt-llm", "hqq"]) == [("trt-llm", "tensorrt-llm")]
    # by priority (0 first) while they fit, shown in their own order
    assert fit_columns([10, 10, 10], [0, 2, 1], 30) == [True, False, True]
    assert fit_columns([50, 10], [0, 1], 20) == [True, False]  # the first priority stays, even too wide
    # a flexible (name) column is cut to what is left, never below its minimum
    assert fit_flexible([20, 40, 10], [0, 1, 2], 1, 16, 60) == ([True, True, True], 24)
    assert fit_flexible([20, 40, 10], [0, 1, 2], 1, 16, 45) == ([True, True, False], 21)
    one = [("vllm", "cuda", False)]
    assert matrix_layout(one, 30, 80, compare=False) == MatrixLayout()  # room for the words
    many = [(b, t, True) for b in ("bitsandbytes", "onnxruntime", "tensorrt-llm", "vllm") for t in ("cuda", "vulkan")]
    assert matrix_layout(many, 30, 160, compare=False) == MatrixLayout(words=False, stacked=True)
    assert matrix_layout(many, 30, 80, compare=False) == MatrixLayout(words=False, stacked=True, short=True)


def test_refinements_read_whole_with_placeholders_filled() -> None:
    cap = Capability(Level.NATIVE, "{device} keeps the KV cache in {weights} for {activations} math", SRC,
                     weights=("bf16", "fp16"), targets=("cuda",), layers=("kv-cache",))
    text = refinement_text("vllm", cap).plain
    assert text.startswith("refines vllm: ● native for bf16/fp16 on cuda, kv-cache layers\n")
    assert text.endswith("<device> keeps the KV cache in bf16 or fp16 for <activations> math")
    assert readable_reason("odd {brace").plain == "odd {brace"  # not a template: shown as it is


def test_workload_for_context() -> None:
    assert workload_for_context(None) == (512, 256, None)
    assert workload_for_context(4096) == (512, 256, 4096)
    prompt, gen, ctx = workload_for_context(300)
    assert prompt + gen == ctx == 300 and gen == 100


def test_selection_cli() -> None:
    s = Selection("fp8", "w8a8-fp8", "vllm", "cuda")
    assert s.cli("a100") == "quantmatch explain fp8 w8a8-fp8 vllm a100 --target cuda"
    assert Selection(None, "w4a4-int4", "hardware", layer="moe").cli("h100") == \
        "quantmatch explain - w4a4-int4 hardware h100 --layer moe"


# ---- the "done means" path, keyboard only -------------------------------------------------------------
@sync
async def test_new_user_path_from_the_keyboard(registry: Registry) -> None:
    """Find a device, see why FP8 W8A8 on an A100 runs weight-only and W4A4 INT4 on an H100 is pruned,
    compare A100 with H100, and get a plan for a built-in model: all from the keyboard, at 80x24."""
    messages: list[Message] = []
    app = QuantmatchApp(registry=registry)
    async with app.run_test(size=(80, 24), message_hook=messages.append, notifications=True) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, DevicesScreen)
        assert any(isinstance(m, RegistryReady) for m in messages)
        # 1. find the A100
        await pilot.press("slash")
        await type_text(pilot, "a100")
        await pilot.press("enter")  # to the list, on the exact alias: the 80GB SXM part
        table = app.screen.query_one("#devices", DataTable)
        assert [r[0] for r in table_text(table)] == ["nvidia_a100_40gb_sxm", A100]
        assert "NVIDIA A100 SXM4 80GB" in text_of(app.screen.query_one("#detail-body", Static))
        await pilot.press("enter")
        await settle(pilot)
        chosen = posted(messages, DeviceChosen)
        assert chosen and chosen[-1].device_id == A100 and not chosen[-1].compare
        assert isinstance(app.screen, MatrixScreen) and app.device_id == A100

        # 2. FP8 W8A8 on the A100 in vLLM: weight-only, runs as FP8 Marlin
        await pilot.press("slash")
        await type_text(pilot, "fp8 w8a8-fp8 vllm")
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        cell = posted(messages, CellChosen)[-1].selection
        assert (cell.method, cell.scheme, cell.backend, cell.target) == ("fp8", "w8a8-fp8", "vllm", "cuda")
        assert isinstance(app.screen, ExplainScreen)
        explained = text_of(app.screen.query_one("#explain-content", Static))
        assert "◐ weight-only" in explained and "Marlin" in explained and "runs as" in explained
        assert "compute capability >= 8.9" in explained and "source:" in explained

        # 3. W4A4 INT4 on the H100: pruned, with the reasons
        await pilot.press("escape")
        await pilot.press("d")
        await type_text(pilot, "h100")
        await pilot.press("enter")
        await settle(pilot)
        assert app.device_id == H100
        await pilot.press("slash")  # selects the previous search: typing replaces it
        await type_text(pilot, "w4a4-int4 vllm")
        await pilot.press("enter")
        await settle(pilot)
        preview = text_of(app.screen.query_one("#preview", Static))
        assert "✕ unsupported" in preview
        await pilot.press("enter")
        await settle(pilot)
        explained = text_of(app.screen.query_one("#explain-content", Static))
        assert "✕ unsupported" in explained and "pruned" in explained
        assert "no INT4 x INT4 kernel" in explained
        assert "○ emulated" in explained  # the silicon alone: Hopper lowers s4 MMA to s8

        # 4. compare with the A100: the differing cells are marked
        await pilot.press("escape", "escape")  # back to the matrix; Esc clears the search
        await pilot.press("c")
        await type_text(pilot, "a100")
        await pilot.press("enter")
        await settle(pilot)
        assert app.compare_id == A100
        screen = app.screen
        assert isinstance(screen, MatrixScreen) and screen.matrix is not None and screen.matrix.compare
        assert "cells differ" in text_of(screen.query_one("#title", Static))
        cells = table_text(screen.query_one("#matrix", DataTable))
        assert any("≠" in c for row in cells for c in row)
        await pilot.press("x")
        await settle(pilot)
        m = screen.matrix
        assert m is not None and all(any(m.differs(r, c) for c in m.columns) for r in m.rows)

        # 5. a plan for a built-in model on the H100
        await pilot.press("4")
        await settle(pilot)
        assert isinstance(app.screen, PlanScreen)
        assert app.screen.query_one("#device", Input).value == H100
        await pilot.press("ctrl+r")
        await settle(pilot)
        finished = posted(messages, PlanFinished)
        assert finished and finished[-1].plan.status == "ok"
        plan = finished[-1].plan
        assert plan.model.name and plan.device.id == H100
        table = app.screen.query_one("#candidates", DataTable)
        rows = table_text(table)
        assert len(rows) == len(plan.candidates) > 1
        assert rows[0][app.screen.columns.index("scheme")] == plan.top.scheme
        assert table.virtual_size.width <= table.size.width  # the columns that fit 80 cells, no sideways scroll
        await pilot.press("y")
        await pilot.pause()
        assert app.clipboard == plan.top.command and plan.top.command.startswith("quantmatch quantize")
        assert any(isinstance(m, Notify) and "Copied" in m.notification.message for m in messages)

        # help, then quit
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("q")
    assert app.return_code == 0


# ---- screens one by one ------------------------------------------------------------------------------
@sync
async def test_devices_family_filter_search_and_detail(registry: Registry) -> None:
    app = QuantmatchApp(registry=registry)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#devices", DataTable)
        keys = [r[0] for r in table_text(table)]
        assert keys[0].startswith("⌂ local") and len(keys) == len(registry.devices()) + 1
        screen.query_one("#family", Select).value = "apple-metal"
        await settle(pilot)
        ids = [r[0] for r in table_text(table)]
        assert ids and all(i.startswith("apple_") for i in ids)
        await pilot.press("slash")
        await type_text(pilot, "m2 max")
        await settle(pilot)
        assert [r[0] for r in table_text(table)] == ["apple_m2_max"]
        detail = text_of(screen.query_one("#detail-body", Static))
        for word in ("arch", "features", "memory", "bandwidth", "source:", "sourced"):
            assert word in detail
        await pilot.press("escape")  # clears the search
        await settle(pilot)
        assert len(table_text(table)) > 1


@sync
async def test_device_detail_shows_every_figure_with_source_and_confidence(registry: Registry) -> None:
    app = QuantmatchApp(registry=registry, device="h100")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        detail = text_of(app.screen.query_one("#detail-body", Static), width=300)
        dev = registry.device("h100")
        assert dev.name in detail and dev.arch in detail
        for name, fig in [("memory", dev.memory), ("bandwidth", dev.bandwidth), *dev.peaks.items()]:
            assert name in detail and fig.source in detail and fig.confidence in detail


@sync
async def test_matrix_legend_symbols_and_cells_do_not_rely_on_colour(registry: Registry) -> None:
    """Cells show the level's symbol and word when the columns fit, the symbol alone (a distinct shape,
    explained by the legend) when they do not; long backend names are then shortened, with a legend."""
    app = QuantmatchApp(registry=registry, device="h100", mode="matrix")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MatrixScreen)
        legend = text_of(screen.query_one("#legend", Static))
        for word in ("● native", "◐ weight-only", "○ emulated", "✕ unsupported", "· no combination"):
            assert word in legend
        table = screen.query_one("#matrix", DataTable)
        cells = {c for row in table_text(table) for c in row[2:]}
        assert cells <= {"●", "◐", "○", "✕", "·"} and {"●", "✕"} <= cells
        assert screen.fit.short and "bnb=bitsandbytes" in legend and "trt-llm=tensorrt-llm" in legend
        assert "bnb\ncuda" in [str(c.label) for c in table.columns.values()]  # the target under the backend
        # a few columns: every cell spelled out, full names, no abbreviation legend
        await pilot.press("slash")
        await type_text(pilot, "fp8 vllm")
        await pilot.press("enter")
        await settle(pilot)
        cells = {c for row in table_text(table) for c in row[2:]}
        assert cells <= {"● native", "◐ weight-only", "○ emulated", "✕ unsupported", "·"}
        assert "● native" in cells and screen.fit.words and "=" not in text_of(screen.query_one("#legend", Static))


@sync
async def test_matrix_adapts_to_the_terminal_width(registry: Registry) -> None:
    """At 80 columns the A100's matrix compacts and says more columns are to the right; wider, all of
    them fit; a resize re-lays the table out and keeps the cursor on its cell."""
    app = QuantmatchApp(registry=registry, device="a100", mode="matrix")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MatrixScreen) and screen.matrix is not None
        table = screen.query_one("#matrix", DataTable)
        assert screen.fit.short and screen.fit.stacked and table.header_height == 2
        assert "→ more columns" in text_of(screen.query_one("#title", Static))
        await pilot.press("right", "right", "down")
        keys = screen.cursor_keys()
        await pilot.resize_terminal(130, 30)
        await settle(pilot)
        assert table.virtual_size.width <= table.size.width  # every backend column in view
        assert "→ more columns" not in text_of(screen.query_one("#title", Static))
        assert screen.cursor_keys() == keys
        await pilot.resize_terminal(200, 30)
        await settle(pilot)
        assert not screen.fit.short  # room for the full names again


@sync
async def test_matrix_filters_method_backend_level_layer(registry: Registry) -> None:
    app = QuantmatchApp(registry=registry, device="h100", mode="matrix")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MatrixScreen)
        screen.query_one("#method", Select).value = "rtn"
        screen.query_one("#level", Select).value = "unsupported"
        await settle(pilot)
        m = screen.matrix
        assert m is not None and {r.method for r in m.rows} == {"rtn"}
        assert ("rtn", "w4a4-int4") in {(r.method, r.scheme) for r in m.rows}
        screen.query_one("#backend", Select).value = "vllm"
        screen.query_one("#layer", Select).value = "moe"
        await settle(pilot)
        m = screen.matrix
        assert m is not None and [c.backend for c in m.columns] == ["vllm"] and m.filters.layer == "moe"
        assert all(v.layer == "moe" for pair in m.cells.values() for v in pair if v is not None)


@sync
async def test_w4a4_int4_on_h100_is_pruned_with_reasons(registry: Registry) -> None:
    sel = Selection("rtn", "w4a4-int4", "vllm", "cuda")
    app = QuantmatchApp(registry=registry, device="h100", mode="explain", selection=sel)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        text = text_of(app.screen.query_one("#explain-content", Static), width=300)
        v = registry.verdict("rtn", "w4a4-int4", "vllm", "h100")
        assert v.level is Level.UNSUPPORTED
        assert "✕ unsupported" in text and "runs as: nothing" in text
        for r in v.reasons:
            assert r.text in text
        assert "measured evidence: none yet" in text
        await pilot.press("y")
        assert app.clipboard == "quantmatch explain rtn w4a4-int4 vllm h100 --target cuda"


@sync
async def test_explain_shows_measured_evidence_when_present(registry: Registry,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from quantmatch.sdk.verdict import Evidence

    real = Registry.verdict

    def with_evidence(self: Registry, *a: Any, **kw: Any) -> Any:
        v = real(self, *a, **kw)
        return replace(v, evidence=(Evidence("bench", "decode 1.9x vs bf16", "2025-01-02", "vllm 0.9.2", True),))

    monkeypatch.setattr(Registry, "verdict", with_evidence)
    app = QuantmatchApp(registry=registry, device="a100", mode="explain",
                        selection=Selection("fp8", "w8a8-fp8", "vllm", "cuda"))
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        text = text_of(app.screen.query_one("#explain-content", Static), width=300)
        assert "measured evidence:" in text and "decode 1.9x vs bf16" in text and "(agrees)" in text


@sync
async def test_compare_a100_h100_highlights_differences(registry: Registry) -> None:
    app = QuantmatchApp(registry=registry, device="a100", compare="h100", mode="matrix")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MatrixScreen) and screen.matrix is not None
        m = screen.matrix
        table = screen.query_one("#matrix", DataTable)
        for r, row in enumerate(m.rows):
            for c, col in enumerate(m.columns):
                cell = table.get_cell_at((r, c + 2))
                assert ("≠" in cell.plain) == m.differs(row, col)
                if m.differs(row, col):
                    assert any("on" in str(s.style) for s in cell.spans)  # highlighted as well as marked
        assert "≠ differs" in text_of(screen.query_one("#legend", Static))
        # the explain screen shows both devices
        app.selection = Selection("fp8", "w8a8-fp8", "vllm", "cuda")
        await pilot.press("3")
        await settle(pilot)
        text = text_of(app.screen.query_one("#explain-content", Static), width=300)
        assert "A: NVIDIA A100" in text and "B: NVIDIA H100" in text
        assert "◐ weight-only" in text and "● native" in text
        # c leaves compare mode
        await pilot.press("2", "c")
        await settle(pilot)
        assert app.compare_id is None and screen.matrix is not None and not screen.matrix.compare


@sync
async def test_plan_for_a_builtin_model_ranks_plans_and_rejections(registry: Registry) -> None:
    messages: list[Message] = []
    app = QuantmatchApp(registry=registry, device="a100", mode="plan")
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, PlanScreen)
        screen.query_one("#model", Select).value = "llama-3.1-70b"
        screen.query_one("#budget", Input).value = "48"
        screen.query_one("#tolerance", Select).value = "code"
        screen.query_one("#batch", Input).value = "4"
        screen.query_one("#context", Input).value = "4096"
        screen.query_one("#run").focus()
        await pilot.press("enter")  # the Plan button
        await settle(pilot)
        plan = posted(messages, PlanFinished)[-1].plan
        assert plan.memory_budget_gib == 48 and plan.workload.batch == 4 and plan.workload.ctx == 4096
        assert plan.tolerance.pct == 1.0
        rows = table_text(screen.query_one("#candidates", DataTable))
        assert [r[0] for r in rows] == [str(c.rank) for c in plan.candidates]
        rejected = table_text(screen.query_one("#rejections", DataTable))
        assert len(rejected) == len(plan.rejections) > 0
        assert any(r[0] == "memory" for r in rejected)  # 70B at 16-bit does not fit 48 GiB
        head = text_of(screen.query_one("#plan-head", Static))
        assert plan.status in head and plan.device.name in head
        await pilot.press("r")
        await pilot.pause()
        assert screen.query_one("#results").active == "tab-rejected"  # type: ignore[attr-defined]
        # the line under the results gives the highlighted rejection whole, however narrow its column
        first = plan.rejections[0]
        assert f"rejected at {first.stage}: {first.reason}" in " ".join(
            text_of(screen.query_one("#plan-command", Static)).split())


@sync
async def test_plan_bad_input_is_reported_not_fatal(registry: Registry) -> None:
    messages: list[Message] = []
    app = QuantmatchApp(registry=registry, device="a100", mode="plan")
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.query_one("#budget", Input).value = "-3"
        await pilot.press("ctrl+r")
        await settle(pilot)
        failed = posted(messages, PlanFailed)
        assert failed and "memory-budget" in failed[-1].error
        screen.query_one("#budget", Input).value = ""
        screen.query_one("#model-path", Input).value = "/nonexistent/model"
        await pilot.press("ctrl+r")
        await settle(pilot)
        failed = posted(messages, PlanFailed)
        assert len(failed) == 2 and "Cannot plan" in text_of(screen.query_one("#plan-head", Static))
        assert app.is_running


@sync
async def test_plan_from_a_model_path_runs_in_a_worker(registry: Registry, tmp_path: Any) -> None:
    import json

    from tests_support import SMOLLM2_CONFIG

    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    messages: list[Message] = []
    app = QuantmatchApp(registry=registry, device="a100", mode="plan")
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        await settle(pilot)
        app.screen.query_one("#model-path", Input).value = str(tmp_path)
        await pilot.press("ctrl+r")
        await settle(pilot)
        plan = posted(messages, PlanFinished)[-1].plan
        assert plan.model.kind == "local" and plan.status == "ok"
        done = [m.worker for m in messages if isinstance(m, Worker.StateChanged) and m.state is WorkerState.SUCCESS]
        assert any(w.name == "plan" and w.is_finished for w in done)  # the planner ran in a worker thread


@sync
async def test_plugins_screen_lists_versions_contributions_and_broken_plugins() -> None:
    reg = make_registry(("acme", acme_plugin()), ("acme-broken", broken_plugin()))
    messages: list[Message] = []
    app = QuantmatchApp(registry=reg, mode="devices")
    async with app.run_test(size=(100, 30), message_hook=messages.append, notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        rows = table_text(app.screen.query_one("#plugins", DataTable))
        assert rows[0][0] == "acme-broken" and rows[0][2] == "✕ broken" and "acme driver 0.1" in rows[0][3]
        acme = next(r for r in rows if r[0] == "acme")
        assert acme[1] == "acme-quantmatch 2.5" and acme[2] == "● ok"
        assert acme[3] == "1 backend, 1 device, 1 method"
        assert any(r[0] == "backends.vllm" and r[1].startswith("quantmatch ") for r in rows)
        detail = text_of(app.screen.query_one("#plugin-detail-body", Static))
        assert "RuntimeError: acme driver 0.1 not found" in detail and "QUANTMATCH_BLOCK_PLUGINS=acme-broken" in detail
        assert any(isinstance(m, Notify) and "broken" in m.notification.message for m in messages)
        await pilot.press("slash")
        await type_text(pilot, "acme-rt")
        await settle(pilot)
        assert [r[0] for r in table_text(app.screen.query_one("#plugins", DataTable))] == ["acme"]


@sync
async def test_third_party_plugin_appears_in_every_screen() -> None:
    """A plugin adding a device, a backend and a method shows up everywhere without TUI changes."""
    plugin = acme_plugin()
    host = PluginHost([("acme", plugin)], autoload=False, stderr=io.StringIO())
    reset_host(host)  # the process-wide host is this one: also what a default app would load
    assert get_host() is host
    reg = Registry(host)
    reg = reg.with_local(fixed_local(reg))
    messages: list[Message] = []
    app = QuantmatchApp(registry=reg)
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        await settle(pilot)
        # Devices: listed and detailed
        await pilot.press("slash")
        await type_text(pilot, "acme")
        await pilot.press("enter")
        assert [r[0] for r in table_text(app.screen.query_one("#devices", DataTable))] == ["acme_x1"]
        assert "from plugin acme (acme-quantmatch 2.5)" in text_of(app.screen.query_one("#detail-body", Static))
        await pilot.press("enter")
        await settle(pilot)
        # Matrix: the plugin's method is a row group and its backend a column, with verdicts
        screen = app.screen
        assert isinstance(screen, MatrixScreen) and app.device_id == "acme_x1"
        m = screen.matrix
        assert m is not None
        assert ("acmeq", "w8a8-int8") in {(r.method, r.scheme) for r in m.rows}
        assert "acme-rt" in {c.backend for c in m.columns}
        assert "acmeq" in [v for _, v in screen.query_one("#method", Select)._options]
        await pilot.press("slash")
        await type_text(pilot, "acmeq w8a8-int8 acme-rt")
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        # Explain: the verdict and the plugin that declared it
        text = text_of(app.screen.query_one("#explain-content", Static), width=300)
        assert "● native" in text and "acme-rt runs INT8 x INT8" in text and "declared by plugin acme" in text
        # the plugin's device is also comparable with a built-in one
        await pilot.press("escape", "c")
        await type_text(pilot, "h100 sxm")
        await pilot.press("enter")
        await settle(pilot)
        assert app.compare_id == H100 and screen.matrix is not None and screen.matrix.compare
        # Plan: the plugin's device plans, and its method is among the candidates or the rejections
        await pilot.press("4")
        await settle(pilot)
        assert app.screen.query_one("#device", Input).value == "acme_x1"
        await pilot.press("ctrl+r")
        await settle(pilot)
        plan = posted(messages, PlanFinished)[-1].plan
        assert plan.device.id == "acme_x1"
        methods = {c.method for c in plan.candidates} | {r.method for r in plan.rejections}
        assert "acmeq" in methods
        seen = table_text(app.screen.query_one("#candidates", DataTable)) + \
            table_text(app.screen.query_one("#rejections", DataTable))
        assert any("acme" in " ".join(r) for r in seen)
        # Plugins: listed with its version and what it contributed
        await pilot.press("5")
        await settle(pilot)
        rows = table_text(app.screen.query_one("#plugins", DataTable))
        assert ["acme", "acme-quantmatch 2.5", "● ok", "1 backend, 1 device, 1 method"] in rows


@sync
async def test_default_app_loads_the_registry_in_a_worker() -> None:
    """Without an injected registry, the global plugin host is loaded off the UI thread."""
    host = PluginHost([("acme", acme_plugin())], autoload=False, stderr=io.StringIO())
    reset_host(host)
    messages: list[Message] = []
    app = QuantmatchApp(device=A100)
    async with app.run_test(size=(80, 24), message_hook=messages.append) as pilot:
        assert app.registry is None or isinstance(app.registry, Registry)
        await settle(pilot)
        assert app.registry is not None and app.registry.host is host
        assert any(isinstance(m, RegistryReady) for m in messages)
        assert app.registry_seconds is not None


@sync
async def test_unknown_start_device_falls_back_with_a_warning(registry: Registry) -> None:
    messages: list[Message] = []
    app = QuantmatchApp(registry=registry, device="a1000", mode="matrix")
    async with app.run_test(size=(80, 24), message_hook=messages.append, notifications=True) as pilot:
        await settle(pilot)
        assert app.device_id == registry.devices()[0].id
        assert any(isinstance(m, Notify) and "unknown device 'a1000'" in m.notification.message for m in messages)


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
@pytest.mark.parametrize("mode", ["devices", "matrix", "explain", "plan", "plugins"])
@sync
async def test_every_screen_fits_80x24_and_scales(registry: Registry, mode: str, size: tuple[int, int]) -> None:
    app = QuantmatchApp(registry=registry, device="a100", mode=mode,
                        selection=Selection("fp8", "w8a8-fp8", "vllm", "cuda"))
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        screen = app.screen
        assert screen.query_one("#nav").region.height == 1
        main = {"devices": "#devices", "matrix": "#matrix", "explain": "#explain-body", "plan": "#results",
                "plugins": "#plugins"}[mode]
        region = screen.query_one(main).region
        assert region.width >= min(30, size[0] // 3) and region.height >= 5
        assert region.bottom <= size[1] - 1  # nothing hides under the footer
        if mode in ("devices", "plugins"):  # the lists fit without sideways scrolling
            table = screen.query_one(main, DataTable)
            assert table.virtual_size.width <= table.size.width
        # the footer shows every key of the screen whole, Quit and Help included
        keys: list[Any] = list(screen.query("FooterKey"))
        assert {"Quit", "Help"} <= {k.description for k in keys}
        assert all(k.region.right <= size[0] for k in keys)


@sync
async def test_mouse_navigation_and_selection(registry: Registry) -> None:
    app = QuantmatchApp(registry=registry, device="a100")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        nav = app.screen.query_one("#nav", Static)
        x = text_of(nav).index("2 Matrix")
        await pilot.click("#nav", offset=(x + 1, 0))
        await settle(pilot)
        assert isinstance(app.screen, MatrixScreen)
        x = text_of(app.screen.query_one("#nav", Static)).index("5 Plugins")
        await pilot.click("#nav", offset=(x + 1, 0))
        await settle(pilot)
        assert isinstance(app.screen, PluginsScreen)


@sync
async def test_help_lists_the_screen_keys_and_the_legend(registry: Registry) -> None:
    app = QuantmatchApp(registry=registry, mode="matrix", device="a100")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        text = text_of(help_screen.query_one("#help-content", Static))
        for needle in ("Compare", "Diffs only", "Explain", "Quit", "● native", "✕ unsupported", "walk-through"):
            assert needle in text
        await pilot.press("question_mark")
        assert isinstance(app.screen, MatrixScreen)


def test_textual_and_torch_stay_out_of_other_commands() -> None:
    code = ("import sys, quantmatch.cli, quantmatch.tui; from quantmatch.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('textual', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = "import sys, quantmatch.tui.app; print('torch' in sys.modules, 'textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False True"


def test_cli_tui_subcommand_is_wired() -> None:
    from quantmatch.cli import build_parser

    args = build_parser().parse_args(["tui", "--device", "a100", "--compare", "h100", "--screen", "matrix"])
    assert args.func.__name__ == "cmd_tui" and (args.device, args.compare, args.screen) == ("a100", "h100", "matrix")


def test_app_rejects_an_unknown_screen(registry: Registry) -> None:
    with pytest.raises(ValueError, match="unknown screen"):
        QuantmatchApp(registry=registry, mode="nope")
