"""History: one page of runs at a time, filtered and paged in SQL, newest first.

The page is a pandas DataFrame (`HistoryView.frame`) from `runner.history`; only its rows
are rendered, into a fixed pool of row widgets that is reused from page to page, so the
browser never holds more than one page and paging costs one query and a few updates.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ..runner import Runner
from ..scalars import better
from ..states import RunStatus
from . import text
from .sync import Sync
from .theme import badge

PAGE_SIZES = (10, 25, 50, 100)
EXPORT_CHUNK = 5000
ALL = ""
RunAction = Callable[[int], None]
COLUMNS = ("Run", "Module", "Status", "Submitted", "Duration", "Exit", "Params / reason")


@dataclass(frozen=True)
class HistoryQuery:
    """The filter as the user set it; empty values mean "any"."""

    status: str = ALL
    module: str = ALL
    text: str = ""
    since: date | None = None
    until: date | None = None
    sweep: str = ALL
    metric: str = ""  # adds its last and best values as columns (not a filter)

    def kwargs(self) -> dict[str, Any]:
        """Arguments for runner.history / runner.count; `until` includes its whole day."""
        return {
            "status": self.status or None,
            "module": self.module.strip() or None,
            "text": self.text.strip() or None,
            "since": self.since,
            "until": self.until + timedelta(days=1) if self.until else None,
            "sweep": self.sweep.strip() or None,
        }


def page_count(total: int, page_size: int) -> int:
    return max(1, math.ceil(total / page_size))


def row_html(row: pd.Series) -> str:
    submitted = row["submitted_at"]
    local = datetime.fromtimestamp(submitted.timestamp()).strftime("%Y-%m-%d %H:%M:%S")
    exit_code = "" if pd.isna(row["exit_code"]) else str(int(row["exit_code"]))
    detail = text.params(row["params"] or {})
    if isinstance(row["reason"], str) and row["reason"]:
        detail = f"{detail} — {row['reason']}" if detail else row["reason"]
    detail = " · ".join(filter(None, [metric_text(row), detail]))
    duration = None if pd.isna(row["duration_s"]) else float(row["duration_s"])
    cells = [
        f"#{int(row['id'])}",
        text.escape(row["module"]),
        badge(str(row["status"])),
        local,
        text.duration(duration),
        exit_code,
        text.escape(detail),
    ]
    return '<div class="nbr-hcells">' + "".join(f"<span>{c}</span>" for c in cells) + "</div>"


def metric_text(row: pd.Series) -> str:
    """`loss 0.21 (best 0.19)` when the page has a metric's columns (and this run the metric)."""
    for column, last in row.items():
        name = str(column).removesuffix("_last")
        if name != column and f"{name}_best" in row and not pd.isna(last):
            return f"{name} {last:.4g} (best {row[f'{name}_best']:.4g})"
    return ""


class HistoryRow:
    def __init__(self, view: RunAction, restart: RunAction) -> None:
        self.run_id = 0
        self.cells = widgets.HTML()
        view_button = widgets.Button(description="View")
        view_button.add_class("nbr-hview")
        view_button.on_click(lambda _: view(self.run_id))
        restart_button = widgets.Button(description="Restart")
        restart_button.add_class("nbr-hrestart")
        restart_button.on_click(lambda _: restart(self.run_id))
        self.widget = widgets.HBox([self.cells, view_button, restart_button])
        self.widget.add_class("nbr-hrow")


class HistoryView:
    """Filters, the page grid, paging and export. Reloads only when asked (`stale`)."""

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
        self.frame = pd.DataFrame()
        self.stale = True
        self._count_for: HistoryQuery | None = None
        self._row_actions = (view, restart)
        self.rows: list[HistoryRow] = []
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
        self.export_button.on_click(lambda _: self.export())
        self.export_message = widgets.HTML()
        header = "".join(f"<span>{c}</span>" for c in COLUMNS)
        self.header = widgets.HTML(f'<div class="nbr-hcells nbr-hhead">{header}</div>')
        self.grid = widgets.VBox()
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
        self.widget = widgets.VBox([self.filters, self.header, self.empty, self.grid, pager])
        self.widget.add_class("nbr-history")

    def _build_filters(self, page_size: int) -> None:
        statuses = [("any status", ALL)] + [(s.value, s.value) for s in RunStatus]
        self.status = widgets.Dropdown(
            options=statuses, value=ALL, layout=widgets.Layout(width="120px")
        )
        self.status.add_class("nbr-hstatus")
        self.module = widgets.Combobox(
            placeholder="any module",
            options=sorted(self.runner.modules()),
            ensure_option=False,
            continuous_update=False,
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
            options=[s for s, _, _ in self.runner.sweeps()],
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
            self.module.value or ALL,
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
    def load(self) -> None:
        """Count when the filter or the runs changed, else fetch the page and render it.

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
        self.frame = self.runner.history(
            **query.kwargs(), limit=size, offset=self.page * size, metric=query.metric or None
        )
        if query.metric:  # the page's best runs first: a sweep's winner on top
            self.frame = self.frame.sort_values(
                f"{query.metric}_best", ascending=better(query.metric) == "min", kind="stable"
            )
        self.render()

    def render(self) -> None:
        size = int(self.page_size.value)
        while len(self.rows) < len(self.frame):
            self.rows.append(HistoryRow(*self._row_actions))
        for row, (_, data) in zip(self.rows, self.frame.iterrows(), strict=False):
            row.run_id = int(data["id"])
            self.sync.set(row.cells, value=row_html(data))
        self.sync.set(self.grid, children=tuple(r.widget for r in self.rows[: len(self.frame)]))
        pages = page_count(self.total, size)
        self.sync.set(self.page_label, value=f"page {self.page + 1} of {pages} · {self.total} runs")
        self.sync.set(self.prev_button, disabled=self.page == 0)
        self.sync.set(self.next_button, disabled=self.page + 1 >= pages)
        self.sync.show(self.empty, self.frame.empty)


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
