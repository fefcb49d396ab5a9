"""Compare: one metric of many runs in one chart, a line per run, live while they run.

Each chosen run's scalars are followed by byte offset (`ScalarFollower`), `READ_BUDGET`
bytes a tick shared by the runs, so a run with a million points is read over some seconds
without ever making a tick slow. A line is redrawn at most once per `redraw_s`, at most
`LINES_PER_TICK` lines a tick, downsampled to `points` (each bucket's min and max, so spikes
stay) as float32 arrays: the browser gets about 1.5 kB per line redrawn, never the whole
series, and bqplot draws SVG from them (no image rendered per tick). Smoothing (an
exponential moving average, as TensorBoard's) is applied to the whole series first.

Threads: controls (kernel thread) only set flags; `refresh()` (the dashboard's refresh
thread, or this view's own thread under `runner.compare()`) applies them.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np
import pandas as pd

from ..models import RunRecord, differing_params, params_text
from ..scalars import ScalarFollower, Series, Summaries
from ..store import HistoryFilter
from . import text
from .sync import TICK_LOCK, Sync, answer_pages_between_ticks, close_tree

if TYPE_CHECKING:  # the runner imports the dashboard, not the other way round
    from ..runner import Runner

POINTS = 160
REDRAW_S = 2.0
LINES_PER_TICK = 5
READ_BUDGET = 128 * 1024  # bytes of scalars read per tick, shared by the lines
MIN_READ = 8 * 1024
RUN_CHOICES = 100
LATEST_EVERY_S = 2.0
INTERVAL_S = 0.25
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
PREFERRED = ("loss", "val_loss", "acc")


def downsample(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about `points` points: each bucket's lowest and highest, and the last point."""
    n = len(y)
    if n <= points:
        return x, y
    buckets = max(points // 2, 1)
    width = n // buckets
    cut = width * buckets
    grid = y[:cut].reshape(buckets, width)
    starts = np.arange(buckets) * width
    with np.errstate(invalid="ignore"):
        lows = np.nanargmin(np.where(np.isnan(grid), np.inf, grid), axis=1) + starts
        highs = np.nanargmax(np.where(np.isnan(grid), -np.inf, grid), axis=1) + starts
    keep = np.unique(np.concatenate([lows, highs, [n - 1]]))
    return x[keep], y[keep]


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average with this weight (0: none)."""
    if weight <= 0 or len(values) == 0:
        return values
    return pd.Series(values).ewm(alpha=1 - weight, adjust=False).mean().to_numpy()


def line_xy(
    series: Series, x_axis: str, weight: float, log_y: bool, points: int
) -> tuple[np.ndarray, np.ndarray]:
    """What one run's line shows: x (step, or seconds since its first point), y; float32."""
    y = smooth(np.frombuffer(series.values, dtype=np.float64), weight)
    if x_axis == "time":
        x = np.frombuffer(series.times, dtype=np.float64)
        known = ~np.isnan(x)
        x, y = x[known], y[known]
        x = x - x[0] if len(x) else x
    else:
        x = np.frombuffer(series.steps, dtype=np.float64)
    if log_y:
        positive = y > 0
        x, y = x[positive], y[positive]
    x, y = downsample(x, y, points)
    return x.astype(np.float32), y.astype(np.float32)


def line_label(record: RunRecord, shown: set[str]) -> str:
    """The legend: id, module and the params that differ between the compared runs."""
    params = params_text({k: v for k, v in record.params.items() if k in shown})
    return f"#{record.id} {record.module} {params}".rstrip()


def choice_label(record: RunRecord) -> str:
    return f"#{record.id} {record.module} {record.status.value} {params_text(record.params)}"


@dataclass
class Line:
    """One run on the chart."""

    record: RunRecord
    follower: ScalarFollower
    mark: bq.Lines
    drawn_at: float = -math.inf
    dirty: bool = True
    points: int = 0


class CompareView:
    """Run picker (filtered like history, or a whole sweep), metric, x, log scale, smoothing."""

    def __init__(
        self,
        runner: Runner,
        sync: Sync,
        *,
        points: int = POINTS,
        redraw_s: float = REDRAW_S,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.runner = runner
        self.sync = sync
        self.points = points
        self.redraw_s = redraw_s
        self.on_change = on_change
        self.lines: dict[int, Line] = {}
        self.names: set[str] = set()
        self._force = True
        self._choices_stale = True
        self._newest_seen = 0
        self.want_metric: str | None = None
        self._latest = Summaries()
        self._latest_at: dict[int, float] = {}
        self._latest_series: dict[int, dict[str, Series]] = {}
        self._colours: dict[int, str] = {}  # a run keeps its colour when picked again
        self._changed: dict[int, RunRecord] = {}  # from the change feed: fresher statuses
        self._build()

    # -- widgets -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.sweep = widgets.Dropdown(options=[("a sweep…", "")], value="")
        self.sweep.add_class("nbr-csweep")
        self.filter = widgets.Text(
            placeholder="filter runs (params, module)", continuous_update=False
        )
        self.filter.add_class("nbr-cfilter")
        self.runs = widgets.SelectMultiple(options=[], rows=6, layout={"width": "100%"})
        self.runs.add_class("nbr-cruns")
        self.metric = widgets.Dropdown(options=[], description="metric")
        self.metric.add_class("nbr-cmetric")
        self.x_axis = widgets.ToggleButtons(options=["step", "time"], value="step")
        self.log_y = widgets.Checkbox(description="log scale", indent=False)
        self.smoothing = widgets.FloatSlider(
            value=0.0, min=0.0, max=0.99, step=0.01, description="smoothing"
        )
        self.smoothing.continuous_update = False
        self.x_scale = bq.LinearScale()
        self.x_axis_mark = bq.Axis(scale=self.x_scale, label="step", grid_lines="dashed")
        self.y_axis_mark = _y_axis(log=False)
        self.figure = bq.Figure(
            marks=[],
            axes=[self.x_axis_mark, self.y_axis_mark],
            legend_location="top-right",
            animation_duration=0,
            fig_margin={"top": 20, "bottom": 40, "left": 60, "right": 20},
            layout={"width": "100%", "height": "380px"},
        )
        self.figure.add_class("nbr-cfigure")
        self.message = widgets.HTML()
        self.message.add_class("nbr-cmessage")
        self.sweep.observe(lambda change: self.open_sweep(change["new"]), names="value")
        self.filter.observe(lambda _: self._stale_choices(), names="value")
        for control in (self.runs, self.metric, self.x_axis, self.log_y, self.smoothing):
            control.observe(lambda _: self._redraw_all(), names="value")
        pickers = widgets.HBox([self.sweep, self.filter])
        pickers.add_class("nbr-filters")
        options = widgets.HBox([self.metric, self.x_axis, self.log_y, self.smoothing])
        options.add_class("nbr-filters")
        self.widget = widgets.VBox([pickers, self.runs, options, self.figure, self.message])
        self.widget.add_class("nbr-compare")

    # -- asked by the user (kernel thread): flags and selections -------------------------------
    def select(self, run_ids: Sequence[int], metric: str | None = None) -> None:
        """Compare these runs (and this metric); they are added to the choices if needed."""
        records = [self.runner.store.get(i) for i in run_ids]
        known = dict(self.runs.options)
        extra = [(choice_label(r), r.id) for r in records if r.id not in known.values()]
        self.runs.options = [*self.runs.options, *extra]
        self.runs.value = tuple(r.id for r in records)
        if metric:
            self.want_metric = metric
        self._redraw_all()

    def open_sweep(self, sweep_id: str) -> None:
        """One click: every run of the sweep, compared."""
        if not sweep_id:
            return
        records = self.runner.store.history(HistoryFilter.build(sweep=sweep_id), limit=RUN_CHOICES)
        self.select(sorted(r.id for r in records))

    def _stale_choices(self) -> None:
        self._choices_stale = True
        self.on_change()

    def _redraw_all(self) -> None:
        self._force = True
        self.on_change()

    # -- the refresh thread ----------------------------------------------------------------------
    def following(self) -> bool:
        """Whether a line follows a run that may still report (its file is read often)."""
        if self._force or self._choices_stale:
            return True
        active = {r.id for r in self.runner.snapshot()}
        return any(run_id in active for run_id in self.lines)

    def note_changes(self, records: Iterable[RunRecord]) -> None:
        """Runs that changed (the change feed's thread): their choices are relabelled."""
        for record in records:
            self._changed[record.id] = record

    def refresh(self, now: float | None = None) -> None:
        """Read what the compared runs reported since the last tick; redraw what is due."""
        now = time.time() if now is None else now
        self._reload_choices()
        self._relabel()
        force, self._force = self._force, False
        if force:
            self._rescale()
            self._follow(self.runs.value)
        share = max(READ_BUDGET // max(len(self.lines), 1), MIN_READ)
        for line in self.lines.values():
            if line.follower.poll(share)[0]:
                line.dirty = True
        self._choose_metric()
        due = [line for line in self.lines.values() if line.dirty or force]
        due = sorted(due, key=lambda line: line.drawn_at)
        if not force:
            due = [line for line in due if now - line.drawn_at >= self.redraw_s]
            due = due[:LINES_PER_TICK]
        for line in due:
            self._draw(line, now)
        if force:
            self._restyle()
        self.sync.set(self.message, value=self._missing_html())

    def _reload_choices(self) -> None:
        newest = max((r.id for r in self.runner.snapshot()), default=0)
        if not self._choices_stale and newest <= self._newest_seen:
            return
        self._choices_stale = False
        self._newest_seen = max(newest, self._newest_seen)
        query = HistoryFilter.build(text=self.filter.value.strip() or None)
        records = self.runner.store.history(query, limit=RUN_CHOICES)
        chosen = [(label, i) for label, i in self.runs.options if i in self.runs.value]
        ids = {i for _, i in chosen}
        options = chosen + [(choice_label(r), r.id) for r in records if r.id not in ids]
        selected = self.runs.value
        self.sync.set(self.runs, options=tuple(options))
        self.sync.set(self.runs, value=selected)  # new options would drop the selection
        sweeps = [(f"{s} · {m} · {n} runs", s) for s, m, n in self.runner.sweeps()]
        self.sync.set(self.sweep, options=(("a sweep…", ""), *sweeps))

    def _relabel(self) -> None:
        """A chosen or offered run's status as it is now, not as when the list was made."""
        if not self._changed:
            return
        changed, self._changed = self._changed, {}
        options = tuple(
            (choice_label(changed[i]), i) if i in changed else (label, i)
            for label, i in self.runs.options
        )
        selected = self.runs.value
        if self.sync.set(self.runs, options=options):
            self.sync.set(self.runs, value=selected)
        for run_id, record in changed.items():
            if run_id in self.lines:
                self.lines[run_id].record = record

    def _rescale(self) -> None:
        """Log scale toggled: a new y axis and new lines on a new scale. bqplot keeps the
        old ticks (or shows none) on an axis whose scale is swapped once drawn."""
        log = bool(self.log_y.value)
        if isinstance(self.y_axis_mark.scale, bq.LogScale) == log:
            return
        old_axis, old_marks = self.y_axis_mark, [line.mark for line in self.lines.values()]
        self.y_axis_mark = _y_axis(log, self.metric.value or "")
        for line in self.lines.values():
            line.mark = self._new_mark()
        self.sync.set(self.figure, axes=[self.x_axis_mark, self.y_axis_mark])
        self.sync.set(self.figure, marks=[line.mark for line in self.lines.values()])
        for widget in (*old_marks, old_axis.scale, old_axis):
            widget.close()

    def _new_mark(self) -> bq.Lines:
        return bq.Lines(
            x=np.zeros(0, np.float32),
            y=np.zeros(0, np.float32),
            scales={"x": self.x_scale, "y": self.y_axis_mark.scale},
            display_legend=True,
        )

    def _follow(self, run_ids: Iterable[int]) -> None:
        wanted = list(run_ids)
        for run_id in [i for i in self.lines if i not in wanted]:
            close_tree(self.lines.pop(run_id).mark)
        for run_id in wanted:
            if run_id not in self.lines:
                record = self.runner.store.get(run_id)
                self.lines[run_id] = Line(record, ScalarFollower(record.log_path), self._new_mark())

    def _choose_metric(self) -> None:
        names = {name for line in self.lines.values() for name in line.follower.series}
        if names <= self.names and self.metric.value and not self.want_metric:
            return
        self.names |= names
        ordered = sorted(self.names, key=_preferred_first)
        value = self.want_metric if self.want_metric in self.names else self.metric.value
        value = value or (ordered[0] if ordered else None)
        self.sync.set(self.metric, options=tuple(ordered))
        self.sync.set(self.metric, value=value)
        if value == self.want_metric:
            self.want_metric = None

    def _draw(self, line: Line, now: float) -> None:
        series = line.follower.series.get(self.metric.value or "")
        if series is None:
            x = y = np.zeros(0, np.float32)
        else:
            x, y = line_xy(
                series, self.x_axis.value, self.smoothing.value, self.log_y.value, self.points
            )
        with line.mark.hold_sync():
            line.mark.x, line.mark.y = x, y
        self.sync.stats.updates += 1
        self.sync.stats.bytes += x.nbytes + y.nbytes
        line.points = len(x)
        line.dirty = False
        line.drawn_at = now

    def _restyle(self) -> None:
        """Labels, colours, scales and marks after the choice of runs or options changed."""
        records = [line.record for line in self.lines.values()]
        shown = differing_params(records)
        for run_id, line in self.lines.items():
            self.sync.set(
                line.mark, labels=[line_label(line.record, shown)], colors=[self._colour(run_id)]
            )
        self.sync.set(self.y_axis_mark, label=self.metric.value or "")
        self.sync.set(self.x_axis_mark, label="seconds" if self.x_axis.value == "time" else "step")
        self.sync.set(self.figure, marks=[line.mark for line in self.lines.values()])

    def _missing_html(self) -> str:
        """Says which chosen runs have nothing to draw, rather than leaving empty axes."""
        metric = self.metric.value or ""
        if self.lines and not self.names:
            return (
                '<span class="nbr-muted">No scalars reported yet: call nbrunner.report() '
                "or print nbrunner:metric lines.</span>"
            )
        missing = [
            f"#{run_id} {line.record.module}"
            for run_id, line in self.lines.items()
            if metric not in line.follower.series
        ]
        if not missing or not metric:
            return ""
        runs = text.escape(", ".join(missing))
        return f'<span class="nbr-muted">No {text.escape(metric)} reported by {runs}.</span>'

    def _colour(self, run_id: int) -> str:
        """A run's colour: given once, the first one no other shown line has."""
        if run_id not in self._colours:
            taken = {self._colours.get(i) for i in self.lines if i != run_id}
            free = [c for c in PALETTE if c not in taken] or list(PALETTE)
            self._colours[run_id] = free[0]
        return self._colours[run_id]

    # -- cards: the latest value of the chosen metric -------------------------------------------
    def latest_html(self, record: RunRecord, now: float | None = None) -> str:
        """A card's line for the chosen metric's latest value (read every LATEST_EVERY_S)."""
        metric = self.metric.value
        if not metric:
            return ""
        now = time.time() if now is None else now
        if now - self._latest_at.get(record.id, -math.inf) >= LATEST_EVERY_S:
            if len(self._latest_at) > self._latest.size:
                self._latest_at.clear()
                self._latest_series.clear()
            self._latest_at[record.id] = now
            self._latest_series[record.id] = self._latest.of(record)
        series = self._latest_series.get(record.id, {}).get(metric)
        if series is None or not series.count:
            return ""
        return (
            f'<div class="nbr-metric">{text.escape(metric)} '
            f"<b>{series.last:.4g}</b> at step {series.last_step:g}</div>"
        )

    # -- in a notebook cell ------------------------------------------------------------------------
    @classmethod
    def standalone(
        cls,
        runner: Runner,
        run_ids: Sequence[int],
        metric: str | None = None,
        *,
        sweep: str | None = None,
        interval: float = INTERVAL_S,
        **options: Any,
    ) -> widgets.VBox:
        """The view with its own refresh thread, which ends when the widget is closed."""
        view = cls(runner, Sync(), **options)
        if sweep:
            view.open_sweep(sweep)
        if run_ids:
            view.select(run_ids, metric)
        elif metric:
            view.want_metric = metric
        if not runner.running:
            runner.start()
        threading.Thread(
            target=_refresh_until_closed, args=(view, interval), daemon=True, name="nbr-compare"
        ).start()
        view.widget.compare = view  # type: ignore[attr-defined]
        return view.widget


def _y_axis(log: bool, label: str = "") -> bq.Axis:
    scale = bq.LogScale() if log else bq.LinearScale()
    return bq.Axis(scale=scale, side="left", grid_lines="dashed", label=label)


def _preferred_first(name: str) -> tuple[int, str]:
    return (PREFERRED.index(name) if name in PREFERRED else len(PREFERRED), name)


def _refresh_until_closed(view: CompareView, interval: float) -> None:
    """Ticks between the kernel's answers to pages asking for every widget (sync.TICK_LOCK):
    a tick makes and closes plot marks."""
    answer_pages_between_ticks()
    while True:
        with TICK_LOCK:
            view.refresh()
        if view.widget.comm is None:
            return
        time.sleep(interval)
