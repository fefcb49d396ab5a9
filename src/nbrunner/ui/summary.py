"""Summary: how many runs are in each state, and recent durations per module as bars."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from statistics import median
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..models import RunRecord
from ..states import ACTIVE, DONE, RunStatus
from . import text
from .sync import Sync
from .theme import badge, status_colour

if TYPE_CHECKING:  # the runner imports the dashboard, not the other way round
    from ..runner import Runner

RECENT_RUNS = 200
DISK_EVERY_S = 60.0  # disk usage changes slowly; measuring it walks every file
BARS_PER_MODULE = 24
BAR_WIDTH, BAR_GAP, CHART_HEIGHT = 5, 1, 24
MIN_BAR = 2.0
ENDED = tuple(s.value for s in RunStatus if s in DONE)


def counts_html(counts: dict[str, int], loaded: bool = True) -> str:
    """Chips per status; before the store's counts are in, "counting…", never "no runs"."""
    chips = [
        f"{badge(status)} {counts.get(status, 0)}"
        for status in (s.value for s in RunStatus)
        if counts.get(status)
    ]
    none = "no runs" if loaded else "counting…"
    body = "".join(f"<span>{c}</span>" for c in chips) or f'<span class="nbr-muted">{none}</span>'
    return f'<div class="nbr-chips">{body}</div>'


def bar_height(duration: float, longest: float) -> float:
    """On a log scale, so one long run does not flatten the short ones; at least 2 px."""
    if longest <= 0:
        return MIN_BAR
    return max(MIN_BAR, CHART_HEIGHT * math.log1p(duration) / math.log1p(longest))


def bars_svg(durations: Sequence[float], statuses: Sequence[str]) -> str:
    """Oldest to newest; made of numbers and status names only, so safe. Hover: duration."""
    longest = max(durations, default=0.0)
    width = len(durations) * (BAR_WIDTH + BAR_GAP)
    rects = "".join(
        f'<rect x="{i * (BAR_WIDTH + BAR_GAP)}" y="{CHART_HEIGHT - h:.1f}" width="{BAR_WIDTH}" '
        f'height="{h:.1f}" fill="{status_colour(s)}"><title>{text.duration(d)} {s}</title></rect>'
        for i, (d, s) in enumerate(zip(durations, statuses, strict=True))
        for h in [bar_height(d, longest)]
    )
    return f'<svg width="{width}" height="{CHART_HEIGHT}">{rects}</svg>'


def durations_html(recent: Iterable[tuple[Any, ...]]) -> str:
    """A row per module: its last finished runs' durations as bars, and their median.

    `recent` holds the store's newest runs as (id, module, status, duration), newest first."""
    by_module: dict[str, list[tuple[int, float, str]]] = defaultdict(list)
    for run_id, module, status, duration in recent:
        if status in ENDED and duration is not None:
            by_module[module].append((run_id, float(duration), status))
    if not by_module:
        return '<div class="nbr-muted">No finished runs yet.</div>'
    rows = []
    for module, runs in sorted(by_module.items()):
        last = sorted(runs)[-BARS_PER_MODULE:]
        durations = [d for _, d, _ in last]
        rows.append(
            f"<tr><td><b>{text.escape(module)}</b></td>"
            f"<td>{bars_svg(durations, [s for _, _, s in last])}</td>"
            f'<td class="nbr-muted">median {text.duration(median(durations))}</td></tr>'
        )
    return f'<table class="nbr-chart">{"".join(rows)}</table>'


class SummaryView:
    """Counts of active runs come live from the snapshot; ended ones from `load()`."""

    def __init__(self, runner: Runner, sync: Sync) -> None:
        self.runner = runner
        self.sync = sync
        self.ended_counts: dict[str, int] = {}
        self.loaded = False
        self.counted_ended: set[int] = set()
        self.modules: set[str] = set()
        self.counts = widgets.HTML()
        self.counts.add_class("nbr-counts")
        self.chart = widgets.HTML()
        self.chart.add_class("nbr-durations")
        self.disk = widgets.HTML()  # how much disk the home takes (logs over months)
        # read once here: a refresh tick makes at most one store query (the overview)
        self.logs_dir = str(runner.config("logs_dir") or "")
        self.disk_at = float("-inf")
        self.disk.add_class("nbr-disk")
        self.widget = widgets.VBox(
            [
                widgets.HTML("<h3>Summary</h3>"),
                self.counts,
                widgets.HTML('<div class="nbr-muted">Recent durations per module</div>'),
                self.chart,
                self.disk,
            ]
        )
        self.widget.add_class("nbr-panel")
        self.widget.add_class("nbr-summary")

    def load(self) -> None:
        """The ended counts and the recent runs' durations, in one store query."""
        counts, recent = self.runner.store.overview(RECENT_RUNS)
        self.loaded = True
        self.counted_ended = {run_id for run_id, _, status, _ in recent if status in ENDED}
        self.ended_counts = {status: counts.get(status, 0) for status in ENDED}
        self.modules = {module for _, module, _, _ in recent}
        self.sync.set(self.chart, value=durations_html(recent))
        if time.monotonic() - self.disk_at >= DISK_EVERY_S:  # a walk over every log file
            self.disk_at = time.monotonic()
            usage = text.size(self.runner.disk_usage(self.logs_dir))
            self.sync.set(
                self.disk, value=f'<div class="nbr-muted">Disk used by this home: {usage}</div>'
            )

    def update(self, active: Iterable[RunRecord], ended: Iterable[RunRecord] = ()) -> None:
        """Active runs from the snapshot; `ended`: runs seen ending (the newest), counted
        until a load includes them, so a run that just ended is never missing."""
        counts = dict(self.ended_counts)
        late = [r for r in ended if r.is_done and r.id not in self.counted_ended]
        for record in [*(r for r in active if r.status in ACTIVE), *late]:
            counts[record.status.value] = counts.get(record.status.value, 0) + 1
        self.sync.set(self.counts, value=counts_html(counts, self.loaded))
