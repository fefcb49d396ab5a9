"""Active run cards: one per queued, starting, running or paused run, updated in place.

A run that ends while shown stays a little longer (dimmed, with its final status) so the
user sees how it ended; its card is then dropped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import ipywidgets as widgets

from ..logs import last_line
from ..models import RunRecord, queue_positions
from ..scalars import Series, Summaries
from ..states import RunStatus
from . import text
from .progress import Progress, bar_html, parse, reported
from .sync import Sync, close_tree
from .theme import badge

RunAction = Callable[[int], None]
TOTAL = "total"  # report(step=i, total=n): the run says how far it is


class Folded(Protocol):
    """Many runs in one table (`folded.FoldedRuns`; history's rows, which import cards)."""

    FOLD_AT: int
    widget: widgets.Widget

    def update(
        self, shown: Sequence[RunRecord], now: float, last_line: Callable[[str], str]
    ) -> None: ...


def elapsed(record: RunRecord, now: float) -> str:
    if record.is_done:
        return text.duration(record.duration_s)
    if record.started_at is None:
        return "waiting " + text.clock(now - record.submitted_at)
    return text.clock(now - record.started_at)


def progress_of(
    record: RunRecord, line: str, now: float, total: Series | None = None
) -> Progress | None:
    """Progress while the run is going (not before, not after): from what it reported as
    `total` (at the step it reached), else from its latest line."""
    if record.status not in (RunStatus.RUNNING, RunStatus.PAUSED) or record.started_at is None:
        return None
    elapsed_s = now - record.started_at
    if total is not None and total.count:
        return reported(total.last_step, total.last, elapsed_s)
    return parse(line, elapsed_s)


def gpu_text(record: RunRecord) -> str:
    if not record.gpus and record.gpu_memory is None:
        return text.DASH
    devices = ",".join(record.gpus) or "?"
    memory = f" {text.size(record.gpu_memory)}" if record.gpu_memory is not None else ""
    return f"{devices}{memory}"


def card_html(
    record: RunRecord, now: float, position: int | None, line: str, total: Series | None = None
) -> str:
    """A card's text: everything from the run is escaped, it is untrusted."""
    status = record.status.value
    place = f"<span>queue #{position}</span>" if position is not None else ""
    meta = (
        f'<div class="nbr-meta"><span>{elapsed(record, now)}</span>{place}'
        f"<span>CPU {text.percent(record.cpu_percent)}</span>"
        f"<span>Mem {text.size(record.rss)}</span>"
        f"<span>GPU {text.escape(gpu_text(record))}</span></div>"
    )
    return (
        f'<div><b>{text.escape(record.module)}</b> <span class="nbr-muted">#{record.id}</span> '
        f"{badge(status)}</div>{meta}{params_html(record)}"
        f"{bar_html(progress_of(record, line, now, total))}"
        f'<div class="nbr-lastline" title="{text.escape(line)}">{text.escape(line) or "&nbsp;"}'
        "</div>"
    )


def params_html(record: RunRecord) -> str:
    """The run's parameters as key=value, whatever its status (a queued run's too)."""
    if not record.params:
        return ""
    shown = text.escape(text.params(record.params, limit=1000))
    return f'<div class="nbr-params" title="{shown}">{shown}</div>'


class LastLines:
    """Last log line per run, re-read only when the log file has grown."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, str]] = {}

    def get(self, path: str) -> str:
        try:
            size = os.stat(path).st_size
        except OSError:
            return ""
        cached = self._cache.get(path)
        if cached is None or cached[0] != size:
            cached = (size, last_line(path))
            self._cache[path] = cached
        return cached[1]

    def forget(self, keep: Iterable[str]) -> None:
        kept = set(keep)
        self._cache = {p: v for p, v in self._cache.items() if p in kept}


class RunCard:
    def __init__(self, run_id: int, view: RunAction, cancel: RunAction, restart: RunAction) -> None:
        self.run_id = run_id
        self.body = widgets.HTML()
        self.view_button = self._button("View logs", view, "nbr-view")
        self.cancel_button = self._button("Cancel", cancel, "nbr-cancel")
        self.restart_button = self._button("Restart", restart, "nbr-restart")
        actions = widgets.HBox([self.view_button, self.cancel_button, self.restart_button])
        actions.add_class("nbr-row")
        self.widget = widgets.VBox([self.body, actions])
        self.widget.add_class("nbr-card")
        self.widget.add_class(f"nbr-run-{run_id}")

    def _button(self, label: str, action: RunAction, css: str) -> widgets.Button:
        button = widgets.Button(description=label)
        button.add_class(css)
        button.on_click(lambda _: action(self.run_id))
        return button

    def update(self, sync: Sync, record: RunRecord, html: str) -> None:
        sync.set(self.body, value=html)
        sync.set(self.cancel_button, disabled=record.is_done)
        statuses = {f"nbr-card-{s.value}": s is record.status for s in RunStatus}
        sync.classes(self.widget, {"nbr-ended": record.is_done, **statuses})


class CardsView:
    """The "Active runs (N)" panel."""

    def __init__(
        self,
        sync: Sync,
        view: RunAction,
        cancel: RunAction,
        restart: RunAction,
        folded: Folded | None = None,
    ) -> None:
        self.sync = sync
        self._actions = (view, cancel, restart)
        self.folded = folded  # many runs: shown by it, as one table, instead of cards
        self.cards: dict[int, RunCard] = {}
        self.last_lines = LastLines()
        self.summaries = Summaries()
        self.extra: Callable[[RunRecord], str] = lambda _: ""  # more HTML for a card
        self.heading = widgets.HTML()
        self.heading.add_class("nbr-active-heading")
        self.grid = widgets.Box()
        self.grid.add_class("nbr-cards")
        self.empty = widgets.HTML('<div class="nbr-muted">No active runs. Launch one.</div>')
        parts = [self.heading, self.empty, self.grid]
        self.widget = widgets.VBox(parts + ([folded.widget] if folded else []))
        self.widget.add_class("nbr-panel")
        self.set_heading(0)

    def set_heading(self, active: int) -> None:
        self.sync.set(self.heading, value=f"<h3>Active runs ({active})</h3>")

    def update(self, active: Sequence[RunRecord], ended: Sequence[RunRecord], now: float) -> None:
        """Show `active` runs and recently `ended` ones, each card touched only if changed."""
        shown = sorted([*active, *ended], key=lambda r: r.id)
        fold = self.folded is not None and len(shown) > self.folded.FOLD_AT
        if self.folded is not None:
            self.sync.show(self.folded.widget, fold)
            if fold:
                self.folded.update(shown, now, self.last_lines.get)
        carded = [] if fold else shown
        positions = queue_positions(active)
        for record in carded:
            card = self.cards.get(record.id) or self._new_card(record.id)
            line = self.last_lines.get(record.log_path)
            total = self.reported_total(record)
            html = card_html(record, now, positions.get(record.id), line, total)
            card.update(self.sync, record, html + self.extra(record))
        ids = {r.id for r in carded}
        for run_id in [i for i in self.cards if i not in ids]:
            close_tree(self.cards.pop(run_id).widget)
        self.last_lines.forget(r.log_path for r in shown)
        self.sync.set(self.grid, children=tuple(self.cards[r.id].widget for r in carded))
        self.sync.show(self.empty, not shown)
        self.set_heading(len(active))

    def reported_total(self, record: RunRecord) -> Series | None:
        """The `total` a running run reported with its steps, if it did."""
        if record.status is not RunStatus.RUNNING:
            return None
        return self.summaries.of(record).get(TOTAL)

    def _new_card(self, run_id: int) -> RunCard:
        card = RunCard(run_id, *self._actions)
        self.cards[run_id] = card
        return card
