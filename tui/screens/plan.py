"""Plan: a form (model, device, batch, context, tolerance, memory budget) and the planner's ranked
plans with memory and speed, the rejected candidates, and the top plan's command to copy."""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from rich.cells import cell_len
from rich.console import Group
from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.suggester import SuggestFromList
from textual.widgets import Button, DataTable, Footer, Input, Label, Select, Static, TabbedContent, TabPane

from quantmatch.sdk.verdict import Level
from quantmatch.tui.layout import PAD, SCROLLBAR, fit_columns, fit_flexible, short_name
from quantmatch.tui.messages import PlanFailed, PlanFinished
from quantmatch.tui.rendering import level_text
from quantmatch.tui.screens.base import QMScreen

if TYPE_CHECKING:
    from textual.app import ComposeResult

__all__ = ["DEFAULT_MODEL", "PLAN_COLUMNS", "PlanRequest", "PlanScreen", "candidate_cells", "workload_for_context"]

DEFAULT_MODEL = "llama-3.1-8b"
TOLERANCES = (("chat (3%)", "chat"), ("code (1%)", "code"), ("reasoning (0.5%)", "reasoning"),
              ("2%", "2"), ("5%", "5"), ("10%", "10"))
PROMPT, GEN = 512, 256
_STATUS = {"ok": ("●", "green"), "over-tolerance": ("○", "yellow"), "nothing-fits": ("✕", "bold red")}
REJECTION_COLUMNS = ("stage", "candidate", "reason")


def workload_for_context(context: int | None) -> tuple[int, int, int | None]:
    """(prompt, gen, context) for the planner: 512 + 256 tokens by default; a context shorter than
    that keeps the same 2:1 split of prompt and generated tokens inside it."""
    if context is None or context >= PROMPT + GEN:
        return PROMPT, GEN, context
    gen = max(1, min(GEN, context // 3))
    return max(1, context - gen), gen, context


class PlanRequest:
    """The form's values, validated just enough to call :func:`quantmatch.planner.plan`."""

    def __init__(self, model: str, device: str, batch: int, context: int | None, tolerance: str,
                 memory_budget: float | None) -> None:
        self.model, self.device, self.batch = model, device, batch
        self.context, self.tolerance, self.memory_budget = context, tolerance, memory_budget

    def kwargs(self) -> dict[str, Any]:
        prompt, gen, context = workload_for_context(self.context)
        return {"batch": self.batch, "prompt": prompt, "gen": gen, "context": context,
                "tolerance": self.tolerance, "memory_budget": self.memory_budget}

    def cli(self) -> str:
        budget = f" --memory-budget {self.memory_budget:g}GiB" if self.memory_budget else ""
        ctx = f" --context {self.context}" if self.context else ""
        return (f"quantmatch plan {self.model} --device {self.device} --batch {self.batch}{ctx} "
                f"--tolerance {self.tolerance}{budget}")


def _tps(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _fits(gib: float, fits: bool | None, digits: int = 2) -> Text:
    """``5.21 ✓`` (fits), ``81.3 ✕`` (does not), ``5.21 ?`` (unknown capacity): a mark, not only colour."""
    if fits is None:
        return Text(f"{gib:.{digits}f} ?")
    return Text(f"{gib:.{digits}f} ✓", style="green") if fits else Text(f"{gib:.{digits}f} ✕", style="red")


def _level(level: str | None, word: bool = True) -> Text:
    try:
        return level_text(Level(level), word=word) if level else Text("-")
    except ValueError:
        return Text(level or "-")


@dataclass(frozen=True)
class PlanColumn:
    """A column of the ranked plans: its header when every column fits and on a narrow screen, its
    priority when not all fit (0 is kept first), and how the line under the table says a value whose
    column was left out (``phrase``)."""

    key: str
    wide: str
    narrow: str
    priority: int
    phrase: str = "{}"


PLAN_COLUMNS = (
    PlanColumn("rank", "#", "#", 7, "#{}"),
    PlanColumn("scheme", "scheme", "scheme", 0),
    PlanColumn("method", "method", "method", 1),
    PlanColumn("runtime", "runtime", "runtime", 2, "on {}"),
    PlanColumn("level", "level", "lvl", 6),
    PlanColumn("gib", "GiB fit", "GiB", 4, "{} GiB"),
    PlanColumn("decode", "decode tok/s", "tok/s", 3, "decode {} tok/s"),
    PlanColumn("prefill", "prefill tok/s", "prefill", 8, "prefill {} tok/s"),
    PlanColumn("dppl", "ΔPPL %", "ΔPPL%", 5, "ΔPPL% {}"),
)


def candidate_cells(c: Any, compact: bool = False) -> dict[str, Text]:
    """One ranked plan's cells by column key; ``compact``: the level's symbol alone, short runtime
    and method names, memory to 0.1 GiB."""
    name = short_name if compact else str
    q = c.quality
    return {"rank": Text(str(c.rank)), "scheme": Text(c.scheme), "method": Text(name(c.method or "16-bit")),
            "runtime": Text(f"{name(c.backend)}/{c.target}"), "level": _level(c.level, word=not compact),
            "gib": _fits(c.memory.total_gib, c.memory.fits, 1 if compact else 2),
            "decode": Text(_tps(c.decode.tokens_per_s), justify="right"),
            "prefill": Text(_tps(c.prefill.tokens_per_s), justify="right"),
            "dppl": Text(f"{q.delta_pct:.2f} {q.basis[:1]}")}


class PlanTable(DataTable[Any]):
    """The ranked plans; Enter copies the highlighted plan's command."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Copy", show=False)]


class PlanScreen(QMScreen):
    """The planner in a form. Planning (and reading a model config) runs in a worker thread."""

    MODE = "plan"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "plan", "Plan", priority=True),
        Binding("y", "copy", "Copy command"),
        Binding("r", "next_tab", "Next tab"),
        Binding("slash", "search", "Model", key_display="/"),
        Binding("escape", "focus_results", "Results", show=False),
    ]
    DEFAULT_CSS = """
    PlanScreen .form-row { height: 1; }
    PlanScreen .form-row Label { width: auto; padding: 0 1 0 1; color: $text-muted; }
    PlanScreen #model { width: 1fr; max-width: 24; }
    PlanScreen #model-path { width: 1fr; }
    PlanScreen #device { width: 1fr; max-width: 28; }
    PlanScreen #batch { width: 6; }
    PlanScreen #context { width: 9; }
    PlanScreen #tolerance { width: 1fr; max-width: 20; }
    PlanScreen #budget { width: 8; }
    PlanScreen #run { width: auto; min-width: 8; margin-left: 1; }
    PlanScreen #plan-head { height: auto; max-height: 4; padding: 0 1; }
    PlanScreen #summary-scroll { padding: 0 1; }
    PlanScreen #results { height: 1fr; }
    PlanScreen #results TabPane { padding: 0; }
    PlanScreen #plan-command { height: auto; max-height: 3; padding: 0 1; background: $boost; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.plan: Any = None
        self.request: PlanRequest | None = None
        self.columns: tuple[str, ...] = ()
        """The keys of the columns the ranked plans show (those of :data:`PLAN_COLUMNS` that fit)."""
        self.compact = False
        self._rejections_width = 0
        self._prefilled_device = ""
        self._shapes_requested = False

    def compose(self) -> ComposeResult:
        yield self.nav()
        with Horizontal(classes="form-row"):
            yield Label("model")
            yield Select[str]([], prompt="built-in model", id="model", compact=True)
            yield Label("or path")
            yield Input(placeholder="model dir, config.json or .gguf", id="model-path", compact=True)
            yield Label("device")
            yield Input(placeholder="id, alias or local", id="device", compact=True)
        with Horizontal(classes="form-row"):
            yield Label("batch")
            yield Input("1", type="integer", id="batch", compact=True)
            yield Label("context")
            yield Input(placeholder=str(PROMPT + GEN), type="integer", id="context", compact=True)
            yield Label("tolerance")
            yield Select[str](TOLERANCES, value="chat", allow_blank=False, id="tolerance", compact=True)
            yield Label("budget GiB")
            yield Input(placeholder="device", type="number", id="budget", compact=True)
            yield Button("Plan", id="run", compact=True, variant="primary")
        yield Static(Text("Choose a model and a device, then Ctrl+R (or Enter in a field) plans.", style="dim"),
                     id="plan-head")
        with TabbedContent(id="results"):
            with TabPane("Plans", id="tab-plans"):
                yield PlanTable(id="candidates", cursor_type="row", zebra_stripes=True)
            with TabPane("Rejected", id="tab-rejected"):
                yield DataTable(id="rejections", cursor_type="row", zebra_stripes=True)
            with TabPane("Summary", id="tab-summary"), VerticalScroll(id="summary-scroll"):
                yield Static("", id="plan-summary")
        yield Static("", id="plan-command")
        yield Footer()

    def on_mount(self) -> None:
        self.fill_candidates()
        self.fill_rejections()
        self.query_one("#model", Select).focus()

    # ---- content ---------------------------------------------------------------------------------
    def state_key(self) -> Hashable:
        return (self.registry is not None, self.qm.device_id)

    def refresh_view(self) -> None:
        reg = self.registry
        if reg is None:
            return
        if not self._shapes_requested:
            self._shapes_requested = True
            self.load_shapes()
        device = self.query_one("#device", Input)
        if not device.value or device.value == self._prefilled_device:
            device.value = self._prefilled_device = self.qm.device_id
        names = ["local", *(d.id for d in reg.devices()), *(a for d in reg.devices() for a in d.aliases)]
        device.suggester = SuggestFromList(names, case_sensitive=False)

    @work(thread=True, exclusive=True, group="shapes", name="read the built-in model shapes")
    def load_shapes(self) -> None:
        from quantmatch.planner import builtin_shapes

        ids = [s.id for s in builtin_shapes()]
        self.app.call_from_thread(self._set_shapes, ids)

    def _set_shapes(self, ids: list[str]) -> None:
        model = self.query_one("#model", Select)
        model.set_options((i, i) for i in ids)
        if ids:
            model.value = DEFAULT_MODEL if DEFAULT_MODEL in ids else ids[0]

    # ---- planning --------------------------------------------------------------------------------
    def read_form(self) -> PlanRequest | str:
        """The form's request, or what is wrong with it."""
        path = self.query_one("#model-path", Input).value.strip()
        choice = self.query_one("#model", Select).value
        model = path or ("" if choice is Select.NULL else str(choice))
        if not model:
            return "choose a built-in model or give a path"
        device = self.query_one("#device", Input).value.strip() or self.qm.device_id

        def number(wid: str, kind: type[int] | type[float]) -> Any:
            text = self.query_one(f"#{wid}", Input).value.strip()
            if not text:
                return None
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"{wid}: {text!r} is not a {'whole ' if kind is int else ''}number") from None

        try:
            batch = number("batch", int) or 1
            context = number("context", int)
            budget = number("budget", float)
        except ValueError as e:
            return str(e)
        tolerance = str(self.query_one("#tolerance", Select).value)
        return PlanRequest(model, device, batch, context, tolerance, budget)

    def action_plan(self) -> None:
        """Run the planner on the form's values (in a worker)."""
        if self.registry is None:
            self.notify("The registry is still loading.", severity="warning")
            return
        req = self.read_form()
        if isinstance(req, str):
            self.post_message(PlanFailed(req))
            return
        self.request = req
        self.query_one("#results").loading = True
        self.query_one("#plan-head", Static).update(Text(f"Planning {req.model} on {req.device}…", style="dim"))
        self.run_plan(req)

    @work(thread=True, exclusive=True, group="plan", name="plan")
    def run_plan(self, req: PlanRequest) -> None:
        from quantmatch.planner import plan

        t0 = time.perf_counter()
        try:
            result = plan(req.model, req.device, registry=self.registry, **req.kwargs())
        except Exception as e:  # bad input names the valid choices; anything else must not kill the app
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.post_message(PlanFailed(first))
            return
        self.post_message(PlanFinished(result, time.perf_counter() - t0))

    def on_plan_failed(self, message: PlanFailed) -> None:
        self.query_one("#results").loading = False
        self.query_one("#plan-head", Static).update(Text(f"Cannot plan: {message.error}", style="bold red"))
        self.notify(message.error, title="Cannot plan", severity="error", markup=False)

    def on_plan_finished(self, message: PlanFinished) -> None:
        self.query_one("#results").loading = False
        self.show_plan(message.plan, message.seconds)

    def show_plan(self, p: Any, seconds: float = 0.0) -> None:
        """Show a :class:`quantmatch.planner.Plan` (``seconds``: how long planning took, for the log)."""
        self.plan = p
        self.log(f"planned in {seconds:.2f} s")
        sym, style = _STATUS.get(p.status, ("?", ""))
        head = Text.assemble((f"{p.model.name} on {p.device.name}: ", "bold"), (f"{sym} {p.status}", style),
                             (f" ({len(p.candidates)} plans, {len(p.rejections)} rejected)", "dim"))
        # the first line of the summary wraps (the Summary tab has all of it)
        self.query_one("#plan-head", Static).update(Group(head, Text(p.summary[0])) if p.summary else head)
        self.fill_candidates(force=True)
        cands = self.query_one("#candidates", DataTable)
        cands.move_cursor(row=0)
        self.fill_rejections()
        self.query_one("#plan-summary", Static).update(self.summary_text(p))
        tabs = self.query_one(TabbedContent)
        tabs.get_tab("tab-plans").label = f"Plans ({len(p.candidates)})"  # type: ignore[assignment]
        tabs.get_tab("tab-rejected").label = f"Rejected ({len(p.rejections)})"  # type: ignore[assignment]
        tabs.active = "tab-plans"
        self.show_command(0)
        cands.focus()

    def candidate_layout(self) -> tuple[bool, tuple[str, ...]]:
        """(compact, column keys) for the ranked plans: every column spelled out when they fit the
        screen, else compact cells and the columns of the best priority that fit."""
        rows = [] if self.plan is None else self.plan.candidates
        available = self.size.width - SCROLLBAR
        widths: list[int] = []
        for compact in (False, True):
            cells = [candidate_cells(c, compact) for c in rows]
            widths = [max([cell_len(col.narrow if compact else col.wide), *(r[col.key].cell_len for r in cells)])
                      for col in PLAN_COLUMNS]
            if sum(w + PAD for w in widths) <= available:
                return compact, tuple(col.key for col in PLAN_COLUMNS)
        keep = fit_columns(widths, [col.priority for col in PLAN_COLUMNS], available)
        return True, tuple(col.key for col, k in zip(PLAN_COLUMNS, keep) if k)

    def fill_candidates(self, force: bool = False) -> None:
        """(Re)build the ranked plans' table for the screen's width."""
        compact, keys = self.candidate_layout()
        if not force and (compact, keys) == (self.compact, self.columns):
            return
        self.compact, self.columns = compact, keys
        cands = self.query_one("#candidates", DataTable)
        cursor = cands.cursor_row
        cands.clear(columns=True)
        for col in PLAN_COLUMNS:
            if col.key in keys:
                cands.add_column(col.narrow if compact else col.wide, key=col.key)
        for i, c in enumerate([] if self.plan is None else self.plan.candidates):
            cells = candidate_cells(c, compact)
            cands.add_row(*(cells[k] for k in keys), key=str(i))
        if cands.row_count:
            cands.move_cursor(row=min(cursor, cands.row_count - 1))

    def fill_rejections(self) -> None:
        """The rejected candidates; a reason too long for the screen is cut (the line under the
        table gives the highlighted one whole)."""
        rej = self.query_one("#rejections", DataTable)
        name = short_name if self.narrow else str
        rows = [[Text(r.stage), Text(f"{r.scheme} ({name(r.method or '16-bit')}, {name(r.backend)}/{r.target})"),
                 Text(r.reason)] for r in ([] if self.plan is None else self.plan.rejections)]
        widths = [max([cell_len(h), *(row[i].cell_len for row in rows)]) for i, h in enumerate(REJECTION_COLUMNS)]
        shown, reason_width = fit_flexible(widths, (2, 0, 1), 2, 24, self.size.width - SCROLLBAR)
        self._rejections_width = self.size.width
        cursor = rej.cursor_row
        rej.clear(columns=True)
        for header, keep in zip(REJECTION_COLUMNS, shown):
            if keep:
                rej.add_column(header, key=header)
        for i, row in enumerate(rows):
            row[2].truncate(reason_width, overflow="ellipsis")
            rej.add_row(*(c for c, keep in zip(row, shown) if keep), key=str(i))
        if rej.row_count:
            rej.move_cursor(row=min(cursor, rej.row_count - 1))

    def on_resize(self) -> None:
        self.fill_candidates()
        if self.size.width != self._rejections_width:
            self.fill_rejections()

    def dropped(self, c: Any) -> Text:
        """The highlighted plan's figures whose columns did not fit (``● native, prefill 14,096 tok/s``)."""
        cells = candidate_cells(c)
        parts = []
        for col in PLAN_COLUMNS:
            if col.key not in self.columns and col.key != "rank":
                before, _, after = col.phrase.partition("{}")
                parts.append(Text.assemble(before, cells[col.key], after))
        return Text(", ").join(parts)

    def summary_text(self, p: Any) -> Text:
        """The planner's summary in words, its notes, the inputs, the top job and the CLI equivalent."""
        w = p.workload
        out = Text.assemble(("Inputs: ", "bold"), f"{p.model.name} ({p.model.kind}: {p.model.source}); "
                            f"batch {w.batch}, prompt {w.prompt}, generate {w.gen}, context {w.ctx}; "
                            f"tolerance {p.tolerance.label}; prefer {p.preference}"
                            + (f"; memory budget {p.memory_budget_gib:g} GiB" if p.memory_budget_gib else ""))
        for line in p.summary:
            out.append(f"\n• {line}")
        if p.top is not None and p.top.crossover:
            from quantmatch.planner.crossover import crossover_sentence

            out.append(f"\n• Crossover: {crossover_sentence(p.top.crossover)}")
        for note in p.notes:
            out.append(f"\nnote: {note}", style="yellow")
        top = p.top
        if top is not None and top.command:
            j = top.job
            minutes = "?" if j.time_s is None else f"{j.time_s / 60:.0f} min"
            out.append(f"\nJob for #1: RAM {j.ram_gib:.1f} GiB, disk {j.disk_gib:.1f} GiB, about {minutes}; {j.reason}",
                       style="dim")
        if self.request is not None:
            out.append(f"\nOn the command line: {self.request.cli()}", style="dim")
        return out

    def candidate(self, index: int) -> Any:
        if self.plan is None or not (0 <= index < len(self.plan.candidates)):
            return None
        return self.plan.candidates[index]

    def show_command(self, index: int) -> None:
        c = self.candidate(index)
        line = self.query_one("#plan-command", Static)
        if c is None:
            line.update("")
            return
        extra = self.dropped(c)
        if extra:
            extra = Text.assemble(" (", extra, ")")
        if c.command:
            line.update(Text.assemble((f"Run #{c.rank}", "bold"), extra, (": ", "bold"), c.command,
                                      ("   y copies it", "dim")))
        else:
            line.update(Text.assemble((f"#{c.rank}", "bold"), extra, (": ", "bold"),
                                      f"nothing to quantize: serve the {c.scheme} checkpoint with {c.backend}"))

    def show_rejection(self, index: int) -> None:
        """The highlighted rejection whole: the candidate, the stage that refused it, and why."""
        line = self.query_one("#plan-command", Static)
        if self.plan is None or not (0 <= index < len(self.plan.rejections)):
            line.update("")
            return
        r = self.plan.rejections[index]
        line.update(Text.assemble((f"{r.scheme} ({r.method or '16-bit'}, {r.backend}/{r.target})", "bold"),
                                  f" rejected at {r.stage}: {r.reason}"))

    def _rejected_tab(self) -> bool:
        return self.query_one(TabbedContent).active == "tab-rejected"

    @on(DataTable.RowHighlighted, "#candidates")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if not self._rejected_tab():
            self.show_command(event.cursor_row)

    @on(DataTable.RowHighlighted, "#rejections")
    def _rejection_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self._rejected_tab():
            self.show_rejection(event.cursor_row)

    @on(TabbedContent.TabActivated, "#results")
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        """The line under the results follows the tab: the rejection on Rejected, else the plan's command."""
        if event.pane.id == "tab-rejected":
            self.show_rejection(self.query_one("#rejections", DataTable).cursor_row)
        else:
            self.show_command(self.query_one("#candidates", DataTable).cursor_row)

    @on(DataTable.RowSelected, "#candidates")
    def _selected(self) -> None:
        self.action_copy()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("model-path", "device", "batch", "context", "budget"):
            self.action_plan()

    @on(Button.Pressed, "#run")
    def _pressed(self) -> None:
        self.action_plan()

    def action_copy(self) -> None:
        """Copy the highlighted plan's command (the top plan's unless you moved)."""
        if self.plan is None:
            self.notify("Plan first (Ctrl+R).", severity="warning")
            return
        c = self.candidate(self.query_one("#candidates", DataTable).cursor_row)
        if c is None or not c.command:
            what = "no plan" if c is None else f"the {c.scheme} baseline needs no quantization"
            self.notify(f"Nothing to copy: {what}.", severity="warning", markup=False)
            return
        self.app.copy_to_clipboard(c.command)
        self.notify(f"Copied: {c.command}", title="Command copied", markup=False)

    def action_next_tab(self) -> None:
        """Cycle the result tabs: plans, rejected, summary."""
        tabs = self.query_one(TabbedContent)
        order = ["tab-plans", "tab-rejected", "tab-summary"]
        tabs.active = order[(order.index(tabs.active) + 1) % 3] if tabs.active in order else order[0]

    def action_search(self) -> None:
        """Focus the model choice (the plan form's "search")."""
        self.query_one("#model", Select).focus()

    def action_focus_results(self) -> None:
        self.query_one("#candidates", DataTable).focus()
