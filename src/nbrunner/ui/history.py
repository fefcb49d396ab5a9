"""History: one page of runs at a time, filtered and paged in SQL, newest first.

The page is a list of run records (`HistoryView.runs`) from the store, not `runner.history`'s
DataFrame: pandas would add ~40 MB to every page's kernel, and only the CSV export needs it.
It is drawn as one HTML table; the View / Restart buttons sit in a column of their own
beside it, one pair per row at the row's fixed height, so they never cover a cell. Rows of
runs that are active (or just ended) follow the live snapshot every tick, as the cards do:
state, elapsed time, exit code and progress. The page is reloaded only when runs were added
or ended, or the user asked.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..models import RunRecord
from ..scalars import Summaries, better
from ..states import RunStatus
from ..store import HistoryFilter
from . import text
from .cards import elapsed, progress_of
from .progress import bar_html
from .sync import Sync
from .theme import badge

if TYPE_CHECKING:  # the runner imports the dashboard, not the other way round
    from ..runner import Runner

PAGE_SIZES = (10, 25, 50, 100)
EXPORT_CHUNK = 5000
ALL = ""
RunAction = Callable[[int], None]
LastLine = Callable[[str], str]
# (title, CSS class); widths are in the stylesheet, so the table always fits its panel
COLUMNS = (
    ("Run", "nbr-c-id"),
    ("Module", "nbr-c-module"),
    ("Status", "nbr-c-status"),
    ("Submitted", "nbr-c-submitted"),
    ("Duration", "nbr-c-duration"),
    ("Exit", "nbr-c-exit"),
    ("Progress", "nbr-c-progress"),
    ("Params", "nbr-c-detail"),  # and the reason a run ended, when it has one
)


@dataclass(frozen=True)
class HistoryQuery:
    """The filter as the user set it; empty values mean "any"."""

    status: str = ALL
    modules: tuple[str, ...] = ()
    text: str = ""
    since: date | None = None
    until: date | None = None
    sweep: str = ALL
    metric: str = ""  # adds its last and best values to each row (not a filter)

    def kwargs(self) -> dict[str, Any]:
        """Arguments for runner.history / runner.count; `until` includes its whole day."""
        return {
            "status": self.status or None,
            "module": list(self.modules) or None,
            "text": self.text.strip() or None,
            "since": self.since,
            "until": self.until + timedelta(days=1) if self.until else None,
            "sweep": self.sweep.strip() or None,
        }


def matching_modules(typed: str, known: Iterable[str]) -> tuple[str, ...]:
    """The known modules the typed text begins; the text itself if it begins none."""
    typed = typed.strip()
    if not typed:
        return ()
    return tuple(sorted(m for m in known if m.startswith(typed))) or (typed,)


def page_count(total: int, page_size: int) -> int:
    return max(1, math.ceil(total / page_size))


def submitted_text(timestamp: float, now: float) -> str:
    """Local time; the day only when it is not today, the year only when not this one."""
    moment, today = datetime.fromtimestamp(timestamp), datetime.fromtimestamp(now)
    if moment.date() == today.date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%b %d %H:%M" if moment.year == today.year else "%Y-%m-%d")


def _cell(css: str, html: str, title: str = "") -> str:
    hover = f' title="{text.escape(title)}"' if title else ""
    return f'<td class="{css}"{hover}>{html}</td>'


def row_html(record: RunRecord, now: float, line: str, metric: str = "") -> str:
    """One table row; `record` is the live one while the run is followed, so its state,
    elapsed time, exit code and progress move as its card's do. `metric`: what it reported
    of the chosen metric, shown first."""
    detail = text.params(record.params, limit=1000)
    if record.reason:
        detail = f"{detail} — {record.reason}" if detail else record.reason
    detail = " · ".join(filter(None, [metric, detail]))
    exit_code = "" if record.exit_code is None else str(record.exit_code)
    local = datetime.fromtimestamp(record.submitted_at).strftime("%Y-%m-%d %H:%M:%S")
    cells = [
        _cell("nbr-c-id", f"#{record.id}"),
        _cell("nbr-c-module", text.escape(record.module), record.module),
        _cell("nbr-c-status", badge(record.status.value)),
        _cell("nbr-c-submitted", submitted_text(record.submitted_at, now), local),
        _cell("nbr-c-duration", elapsed(record, now)),
        _cell("nbr-c-exit", exit_code),
        _cell("nbr-c-progress", bar_html(progress_of(record, line, now))),
        _cell("nbr-c-detail", text.escape(detail), detail),
    ]
    return f'<tr class="nbr-hrow nbr-hrun-{record.id}">{"".join(cells)}</tr>'


def metric_text(name: str, last: float, best: float) -> str:
    """`loss 0.21 (best 0.19)`; nothing for a run that has not reported it."""
    return "" if math.isnan(last) else f"{name} {last:.4g} (best {best:.4g})"


def table_html(rows: Iterable[str]) -> str:
    head = "".join(f'<th class="{css}" title="{title}">{title}</th>' for title, css in COLUMNS)
    return (
        f'<table class="nbr-htable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


class RowActions:
    """View and Restart for one row; reused from page to page."""

    def __init__(self, view: RunAction, restart: RunAction) -> None:
        self.run_id = 0
        self.view_button = widgets.Button(description="View", tooltip="open its log")
        self.view_button.add_class("nbr-hview")
        self.view_button.on_click(lambda _: view(self.run_id))
        self.restart_button = widgets.Button(description="Restart", tooltip="run it again")
        self.restart_button.add_class("nbr-hrestart")
        self.restart_button.on_click(lambda _: restart(self.run_id))
        self.widget = widgets.HBox([self.view_button, self.restart_button])
        self.widget.add_class("nbr-hactions-row")


class HistoryView:
    """Filters, the page table, paging and export. Reloads only when asked (`stale`)."""

    def __init__(
        self,
        runner: Runner,
        sync: Sync,
        view: RunAction,
        restart: RunAction,
        on_change: Callable[[], None],
        page_size: int = 25,
    ) -> None:
        self.runner = runner
        self.sync = sync
        self.on_change = on_change
        self.page = 0
        self.total = 0
        self.runs: list[RunRecord] = []
        self.metric_texts: dict[int, str] = {}
        self.summaries = Summaries()
        self.stale = True
        self.known_modules: set[str] = set(runner.modules())
        self._count_for: HistoryQuery | None = None
        self._row_actions = (view, restart)
        self.actions: list[RowActions] = []
        self._build_filters(page_size)
        self.prev_button = widgets.Button(description="Previous")
        self.prev_button.add_class("nbr-prev")
        self.next_button = widgets.Button(description="Next")
        self.next_button.add_class("nbr-next")
        self.prev_button.on_click(lambda _: self.go(-1))
        self.next_button.on_click(lambda _: self.go(+1))
        self.page_label = widgets.HTML()
        self.page_label.add_class("nbr-page-label")
        self.export_button = widgets.Button(description="Export CSV")
        self.export_button.add_class("nbr-export")
        self.export_button.on_click(lambda _: self.export())
        self.export_message = widgets.HTML()
        self.export_message.add_class("nbr-export-message")
        self.table = widgets.HTML(table_html([]))
        self.table.add_class("nbr-htable-box")
        self.action_column = widgets.VBox()
        self.action_column.add_class("nbr-hactions")
        self.grid = widgets.HBox([self.table, self.action_column])
        self.grid.add_class("nbr-hgrid")
        self.empty = widgets.HTML('<div class="nbr-muted">No runs match.</div>')
        pager = widgets.HBox(
            [
                self.prev_button,
                self.page_label,
                self.next_button,
                self.page_size,
                self.export_button,
                self.export_message,
            ]
        )
        pager.add_class("nbr-toolbar")
        self.widget = widgets.VBox([self.filters, self.grid, self.empty, pager])
        self.widget.add_class("nbr-history")

    def _build_filters(self, page_size: int) -> None:
        statuses = [("any status", ALL)] + [(s.value, s.value) for s in RunStatus]
        self.status = widgets.Dropdown(
            options=statuses, value=ALL, layout=widgets.Layout(width="120px")
        )
        self.status.add_class("nbr-hstatus")
        self.module = widgets.Combobox(
            placeholder="any module",
            options=tuple(sorted(self.known_modules)),
            ensure_option=False,
            continuous_update=False,
            tooltip="a module, or the start of its name",
            layout=widgets.Layout(width="140px"),
        )
        self.module.add_class("nbr-hmodule")
        self.search = widgets.Text(
            placeholder="search params, reason",
            continuous_update=False,
            layout=widgets.Layout(width="170px"),
        )
        self.search.add_class("nbr-hsearch")
        self.sweep = widgets.Combobox(
            placeholder="any sweep",
            options=[sweep for sweep, _, _ in self.runner.sweeps()],
            ensure_option=False,
            continuous_update=False,
            layout=widgets.Layout(width="140px"),
        )
        self.sweep.add_class("nbr-hsweep")
        self.metric = widgets.Text(
            placeholder="metric: last, best",
            continuous_update=False,
            layout=widgets.Layout(width="130px"),
        )
        self.metric.add_class("nbr-hmetric")
        self.since = widgets.DatePicker(description="from", layout=widgets.Layout(width="180px"))
        self.until = widgets.DatePicker(description="to", layout=widgets.Layout(width="180px"))
        for picker in (self.since, self.until):
            picker.style.description_width = "36px"
        self.page_size = widgets.Dropdown(
            options=[(f"{n} / page", n) for n in PAGE_SIZES],
            value=page_size,
            layout=widgets.Layout(width="100px"),
        )
        self.page_size.add_class("nbr-page-size")
        for control in (
            self.status,
            self.module,
            self.search,
            self.since,
            self.until,
            self.page_size,
            self.sweep,
            self.metric,
        ):
            control.observe(lambda _: self.filters_changed(), names="value")
        self.filters = widgets.HBox(
            [
                self.status,
                self.module,
                self.search,
                self.sweep,
                self.since,
                self.until,
                self.metric,
            ]
        )
        self.filters.add_class("nbr-filters")

    # -- asked by the user (kernel thread): only flags and runner calls ----------------------
    def query(self) -> HistoryQuery:
        return HistoryQuery(
            self.status.value,
            matching_modules(self.module.value, self.known_modules),
            self.search.value,
            self.since.value,
            self.until.value,
            self.sweep.value or ALL,
            self.metric.value.strip(),
        )

    def filters_changed(self) -> None:
        self.page = 0
        self.invalidate()

    def go(self, step: int) -> None:
        self.page = max(0, self.page + step)
        self.stale = True
        self.on_change()

    def invalidate(self) -> None:
        """Runs were added or ended, or the filter changed: reload, counting again."""
        self._count_for = None
        self.stale = True
        self.on_change()

    def export(self) -> Path | None:
        """Write every run matching the current filter to a CSV file in the home."""
        path = self.runner.home / "exports" / time.strftime("history-%Y%m%d-%H%M%S.csv")
        try:
            written = export_csv(self.runner, self.query(), path)
        except OSError as exc:
            self.export_message.value = f'<span class="nbr-error">{text.escape(exc)}</span>'
            return None
        self.export_message.value = (
            f'<span class="nbr-ok">{written} runs → {text.escape(path)}</span>'
        )
        return path

    # -- done by the refresh loop --------------------------------------------------------------
    def learn_modules(self, modules: Iterable[str]) -> None:
        """Offer every module seen so far in the module filter."""
        self.known_modules.update(modules)
        self.sync.set(self.module, options=tuple(sorted(self.known_modules)))

    def load(self) -> None:
        """Count when the filter or the runs changed, else fetch the page.

        One query per call: after a recount the view stays stale, and the page comes with
        the next tick.
        """
        query = self.query()
        if self._count_for != query:
            self.total = self.runner.count(**query.kwargs())
            self._count_for = query
            return
        self.stale = False
        size = int(self.page_size.value)
        self.page = min(self.page, page_count(self.total, size) - 1)
        query_filter = HistoryFilter.build(**query.kwargs())
        self.runs = self.runner.store.history(query_filter, limit=size, offset=self.page * size)
        self._add_metric(query.metric)
        self.learn_modules(r.module for r in self.runs)
        self._show_page()

    def _add_metric(self, metric: str) -> None:
        """The page's runs with the metric's last and best values, the best run first: the
        table a sweep's user reads to pick the winner."""
        self.metric_texts = {}
        if not metric:
            return
        columns = self.summaries.columns(self.runs, metric)
        lasts, bests = columns[f"{metric}_last"], columns[f"{metric}_best"]
        for record, last, best in zip(self.runs, lasts, bests, strict=True):
            self.metric_texts[record.id] = metric_text(metric, last, best)
        sign = 1 if better(metric) == "min" else -1
        order = {r.id: (math.isnan(b), sign * b) for r, b in zip(self.runs, bests, strict=True)}
        self.runs = sorted(self.runs, key=lambda r: order[r.id])

    def _show_page(self) -> None:
        size = int(self.page_size.value)
        while len(self.actions) < len(self.runs):
            self.actions.append(RowActions(*self._row_actions))
        for actions, record in zip(self.actions, self.runs, strict=False):
            actions.run_id = record.id
        shown = tuple(a.widget for a in self.actions[: len(self.runs)])
        self.sync.set(self.action_column, children=shown)
        pages = page_count(self.total, size)
        runs = f"{self.total} run{'' if self.total == 1 else 's'}"
        self.sync.set(self.page_label, value=f"page {self.page + 1} of {pages} · {runs}")
        self.sync.set(self.prev_button, disabled=self.page == 0)
        self.sync.set(self.next_button, disabled=self.page + 1 >= pages)
        self.sync.show(self.grid, bool(self.runs))
        self.sync.show(self.empty, not self.runs)

    def update(self, live: Mapping[int, RunRecord], now: float, last_line: LastLine) -> None:
        """Draw the page; rows of followed runs (active or just ended) from `live`."""
        rows = []
        for record in self.runs:
            shown = live.get(record.id, record)
            line = "" if shown.is_done else last_line(shown.log_path)
            rows.append(row_html(shown, now, line, self.metric_texts.get(record.id, "")))
        self.sync.set(self.table, value=table_html(rows))


def export_csv(runner: Runner, query: HistoryQuery, path: Path) -> int:
    """All matching runs, newest first, fetched a chunk at a time; returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    while True:
        chunk = runner.history(
            **query.kwargs(), limit=EXPORT_CHUNK, offset=written, metric=query.metric or None
        )
        chunk["params"] = chunk["params"].map(json.dumps)
        chunk["gpus"] = chunk["gpus"].map(json.dumps)
        chunk.to_csv(path, mode="a" if written else "w", header=not written, index=False)
        written += len(chunk)
        if len(chunk) < EXPORT_CHUNK:
            return written
