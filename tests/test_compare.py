"""The Compare view and the dashboard's metric hooks, asserted on widget state (no browser)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.procs import wait_until

from nbrunner import Runner
from nbrunner.monitor import SystemSampler
from nbrunner.scalars import Series
from nbrunner.ui import Dashboard
from nbrunner.ui.compare import CompareView, downsample, line_xy
from nbrunner.ui.sync import Sync

# reports one point every 20 ms for `steps` steps, then ends
LIVE = """\
import argparse, time
from nbrunner import report
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.5)
parser.add_argument("--steps", type=int, default=300)
args = parser.parse_args()
for step in range(args.steps):
    report(step=step, loss=1 / (1 + args.lr * step))
    time.sleep(0.02)
"""


@pytest.fixture
def live(runner: Runner, tmp_path: Path) -> Runner:
    script = tmp_path / "live.py"
    script.write_text(LIVE)
    runner.register(
        "live",
        script=str(script),
        params={"lr": {"type": "float", "default": 0.5}, "steps": {"type": "int", "default": 300}},
    )
    return runner


@pytest.fixture
def dash(live: Runner) -> Iterator[Dashboard]:
    dashboard = Dashboard(live, start=False, sampler=SystemSampler(interval=3600))
    yield dashboard
    dashboard.close()


def test_downsampling_keeps_the_extremes_and_the_last_point() -> None:
    x = np.arange(1_000_000, dtype=np.float64)
    y = np.sin(x / 1000)
    y[123_457] = 50.0  # a spike
    small_x, small_y = downsample(x, y, 200)
    assert len(small_x) <= 201 and small_x[-1] == 999_999 and 50.0 in small_y
    series = Series()
    for step in range(10):
        series.add(step, 1000.0 + step, 2.0**-step)
    x, y = line_xy(series, "time", 0.0, True, 200)
    assert x.dtype == np.float32 and x[0] == 0 and y[-1] == pytest.approx(2.0**-9)


def test_compare_follows_a_live_run(live: Runner) -> None:
    runs = [live.submit("live", {"lr": lr}) for lr in (0.1, 0.9)]
    view = CompareView(live, Sync(), redraw_s=0.0)
    view.select([r.id for r in runs], "loss")

    def points() -> list[int]:
        view.refresh()
        return [len(line.mark.y) for line in view.lines.values()]

    first = wait_until(lambda: min(points()) >= 5 and points(), timeout=30, what="points")
    grown = wait_until(
        lambda: all(n > m for n, m in zip(points(), first, strict=True)), timeout=30, what="growth"
    )
    assert grown
    assert view.metric.value == "loss" and view.y_axis_mark.label == "loss"
    marks = view.figure.marks
    assert len(marks) == 2 and [m.labels for m in marks] == [
        [f"#{runs[0].id} live lr=0.1"],
        [f"#{runs[1].id} live lr=0.9"],
    ]  # only the params that differ, so steps is not shown
    assert marks[0].colors != marks[1].colors
    colours = {m.labels[0]: m.colors for m in marks}
    view.log_y.value = True
    view.refresh()
    log_scale = view.y_axis_mark.scale
    assert type(log_scale).__name__ == "LogScale" and view.figure.axes[1] is view.y_axis_mark
    assert all(m.scales["y"] is log_scale for m in view.figure.marks)
    view.runs.value = (runs[1].id,)  # dropped and picked again: the same colours
    view.refresh()
    view.runs.value = (runs[0].id, runs[1].id)
    view.refresh()
    assert {m.labels[0]: m.colors for m in view.figure.marks} == colours
    for run in runs:
        run.cancel()


def test_the_dashboard_compares_a_sweep_in_one_click_and_cards_show_the_metric(
    dash: Dashboard, live: Runner
) -> None:
    sweep = live.sweep("live", grid={"lr": [0.1, 0.5, 0.9]}, params={"steps": 1000})
    wait_until(lambda: dash.refresh() or sweep.id in dict(dash.compare.sweep.options).values())
    dash.compare.sweep.value = sweep.id  # the one click
    assert dash.compare.runs.value == tuple(sweep.ids)
    dash.refresh()

    def card_metric() -> bool:
        dash.refresh()
        cards = dash.cards.cards
        return all(i in cards and "nbr-metric" in cards[i].body.value for i in sweep.ids)

    wait_until(card_metric, timeout=30, what="the latest loss on every card")
    assert "loss <b>" in dash.cards.cards[sweep.ids[0]].body.value
    assert len(dash.compare.figure.marks) == 3
    for run in sweep:
        run.cancel()


def test_the_launcher_sweeps_and_history_shows_the_metric(dash: Dashboard, live: Runner) -> None:
    dash.launcher.module.value = "live"
    dash.launcher.sweep.value = True
    dash.launcher.fields["lr"].input.value = "0.1, 0.9"
    dash.launcher.fields["steps"].input.value = "5"
    ids = dash.launcher.submit()
    assert len(ids) == 2 and "Queued sweep live-" in dash.launcher.message.value
    for run_id in ids:
        live.wait(run_id, timeout=60)
    dash.launcher.fields["lr"].input.value = "0.1, fast"
    assert "fast" in dash.launcher.fields["lr"].error.value
    sweep_id = live.get(ids[0]).record.sweep
    dash.history.sweep.value = sweep_id
    dash.history.metric.value = "loss"
    wait_until(
        lambda: dash.refresh() or (not dash.history.stale and len(dash.history.runs) == 2),
        what="the sweep's page",
    )
    assert [r.id for r in dash.history.runs] == [ids[1], ids[0]]  # lr=0.9: the lower loss first
    dash.refresh()
    table = dash.history.table.value
    assert table.index(f"nbr-hrun-{ids[1]}") < table.index(f"nbr-hrun-{ids[0]}")
    first_row = table[table.index(f"nbr-hrun-{ids[1]}") :]
    assert first_row.index("loss 0.2174 (best 0.2174)") < first_row.index("</tr>")


def test_runner_compare_is_a_live_widget_in_a_cell(live: Runner) -> None:
    run = live.submit("live", {"steps": 50})
    before = set(threading.enumerate())
    widget = live.compare([run.id], "loss")
    view = widget.compare
    refresher = [t for t in threading.enumerate() if t not in before and t.name == "nbr-compare"]
    assert refresher, "the widget refreshes in a thread of its own"
    wait_until(
        lambda: view.lines and len(view.lines[run.id].mark.y) >= 5, timeout=30, what="a line"
    )
    widget.close()
    wait_until(lambda: not any(t.is_alive() for t in refresher), what="its refresh to stop")
