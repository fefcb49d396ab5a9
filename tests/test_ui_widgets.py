"""The dashboard's widgets without a browser: real runner, real runs, ticks driven by hand."""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import ipywidgets as widgets
import pytest
from helpers.browser import seed_history
from helpers.procs import wait_until

from nbrunner import Runner, contact
from nbrunner.monitor import SystemSample, SystemSampler, take_sample
from nbrunner.states import RunStatus
from nbrunner.ui import Dashboard, text
from nbrunner.ui.cards import card_html
from nbrunner.ui.gauges import gauges_html
from nbrunner.ui.history import HistoryView
from nbrunner.ui.logview import LogBuffer
from nbrunner.ui.progress import parse
from nbrunner.ui.summary import bars_svg
from nbrunner.ui.theme import stylesheet

T = TypeVar("T")


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sampler() -> SystemSampler:
    """A sampler that takes one sample and then no more, so gauges hold still."""
    return SystemSampler(interval=3600)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def dash(runner: Runner, sampler: SystemSampler, clock: FakeClock) -> Iterator[Dashboard]:
    dashboard = Dashboard(runner, start=False, clock=clock, sampler=sampler, page_size=25)
    settle(dashboard)
    yield dashboard
    dashboard.close()


def table_rows(history: HistoryView) -> int:
    return history.table.value.count('<tr class="nbr-hrow')


def settle(dash: Dashboard) -> None:
    """Tick until the history view has caught up (a recount and a page take a tick each)."""
    dash.refresh()
    while dash.history.stale:
        dash.refresh()


def refresh_until(dash: Dashboard, predicate: Callable[[], T], what: str) -> T:
    def tick() -> T:
        dash.refresh()
        return predicate()

    return wait_until(tick, timeout=20, what=what)


def quiet_refresh(dash: Dashboard) -> bool:
    """Whether the next refresh sends nothing (what a change asked to reload is done)."""
    dash.stats.reset()
    dash.refresh()
    return dash.stats.updates == 0


# -- launcher ------------------------------------------------------------------------------------
def test_form_is_generated_from_the_module_parameters(dash: Dashboard) -> None:
    launcher = dash.launcher
    launcher.module.value = "train"
    fields = launcher.fields
    assert list(fields) == ["epochs", "lr", "arch", "steps", "step_time", "fail"]
    assert isinstance(fields["epochs"].input, widgets.Text)
    assert fields["epochs"].input.value == "3"
    assert isinstance(fields["arch"].input, widgets.Dropdown)
    assert [value for _, value in fields["arch"].input.options] == ["small", "large"]
    assert isinstance(fields["fail"].input, widgets.Checkbox)
    assert "passes over the data" in fields["epochs"].widget.children[1].value


def test_invalid_value_is_shown_next_to_its_field_and_nothing_is_submitted(
    dash: Dashboard, runner: Runner
) -> None:
    launcher = dash.launcher
    launcher.module.value = "count"
    launcher.fields["n"].input.value = "ten"
    launcher.fields["delay"].input.value = "-1"
    assert "must be an int" in launcher.fields["n"].error.value
    assert "≥ 0" in launcher.fields["delay"].error.value
    assert launcher.fields["label"].error.value == ""
    assert launcher.submit() == []
    assert "nothing was submitted" in launcher.message.value
    assert runner.count() == 0
    launcher.fields["n"].input.value = "2"
    assert launcher.fields["n"].error.value == ""


def test_run_button_queues_copies_with_priority(dash: Dashboard, runner: Runner) -> None:
    runner.config("paused", True)
    launcher = dash.launcher
    launcher.module.value = "count"
    launcher.fields["label"].input.value = "copy"
    launcher.priority.value = 5
    launcher.copies.value = 3
    launcher.run_button.click()
    frame = runner.history()
    assert len(frame) == 3
    assert set(frame["priority"]) == {5}
    assert all(p["label"] == "copy" for p in frame["params"])
    assert "Queued 3 runs of count" in launcher.message.value


def test_each_input_is_labelled_by_its_own_label(dash: Dashboard) -> None:
    """The label is the input's description (ipywidgets 8 renders it as <label for>), not a
    separate Label widget beside it; the browser test finds inputs by it."""
    launcher = dash.launcher
    launcher.module.value = "train"
    for name, field in launcher.fields.items():
        assert field.input.description == name
        assert not any(isinstance(c, widgets.Label) for c in field.row.children)
    assert launcher.module.description == "Module"
    assert launcher.priority.input.description == "Priority"
    assert launcher.copies.input.description == "Copies"


def register_seeded(runner: Runner) -> None:
    runner.register(
        "seeded",
        command=[sys.executable, "-c", "pass"],
        params={"seed": {"type": "int", "default": 7}, "lr": {"type": "float", "default": 0.1}},
    )


def test_vary_seed_gives_copies_seed_seed_plus_one_and_so_on(
    dash: Dashboard, runner: Runner
) -> None:
    runner.config("paused", True)
    register_seeded(runner)
    launcher = dash.launcher
    launcher.reload_button.click()
    launcher.module.value = "count"  # no seed parameter: nothing to vary
    assert launcher.vary_seed.layout.display == "none"
    launcher.module.value = "seeded"
    assert launcher.vary_seed.layout.display is None
    launcher.copies.value = 3
    launcher.vary_seed.value = True
    launcher.fields["seed"].input.value = "40"
    launcher.run_button.click()
    assert "Queued 3 runs of seeded" in launcher.message.value
    stored = sorted(runner.store.active(), key=lambda r: r.id)
    assert [r.params["seed"] for r in stored] == [40, 41, 42]
    assert all(r.params["lr"] == 0.1 for r in stored)

    launcher.vary_seed.value = False  # off: identical copies, as before
    launcher.copies.value = 2
    launcher.run_button.click()
    newest = sorted(runner.store.active(), key=lambda r: r.id)[-2:]
    assert [r.params["seed"] for r in newest] == [40, 40]


def test_the_module_choice_survives_a_reload_of_the_module_list(
    dash: Dashboard, runner: Runner
) -> None:
    launcher = dash.launcher
    launcher.module.value = "train"
    launcher.fields["epochs"].input.value = "7"
    path = Path(runner.modules_file)
    path.write_text(path.read_text() + '\n[modules.added]\npython_module = "nbrunner.demo.count"\n')
    later = path.stat().st_mtime + 10
    os.utime(path, (later, later))
    dash.refresh()  # the tick sees modules.toml changed and reloads the list
    assert "added" in launcher.module.options
    assert launcher.module.value == "train"
    assert launcher.fields["epochs"].input.value == "7"  # same parameters: typing kept

    register_seeded(runner)
    launcher.reload_button.click()
    assert "seeded" in launcher.module.options
    assert launcher.module.value == "train"

    launcher.module.value = "seeded"
    runner.unregister("seeded")
    launcher.reload_button.click()  # the chosen module is gone: the first one, its form
    assert launcher.module.value == sorted(runner.modules())[0]
    assert set(launcher.fields) == {p.name for p in runner.modules()[launcher.module.value].params}


# -- cards ---------------------------------------------------------------------------------------
def test_cards_show_queue_positions_then_the_end_of_a_cancelled_run(
    dash: Dashboard, runner: Runner, clock: FakeClock
) -> None:
    runner.config("paused", True)
    low = runner.submit("sleep", {"n": 60}).id
    high = runner.submit("sleep", {"n": 60}, priority=9).id
    refresh_until(dash, lambda: len(dash.cards.cards) == 2, "two cards")
    assert dash.cards.heading.value == "<h3>Active runs (2)</h3>"
    assert "queue #1" in dash.cards.cards[high].body.value
    assert "queue #2" in dash.cards.cards[low].body.value
    assert "CPU -" in dash.cards.cards[low].body.value  # no metrics while queued
    assert "n=60" in dash.cards.cards[low].body.value  # a queued card shows its params

    dash.cards.cards[low].cancel_button.click()
    refresh_until(dash, lambda: "cancelled" in dash.cards.cards[low].body.value, "cancelled")
    card = dash.cards.cards[low]
    assert "nbr-ended" in card.widget._dom_classes
    assert card.cancel_button.disabled
    assert dash.cards.heading.value == "<h3>Active runs (1)</h3>"
    assert "queue #1" in dash.cards.cards[high].body.value
    assert any("cancelled" in t.widget.children[0].value for t in dash.toasts.toasts)

    clock.now += dash.linger_s + 1
    settle(dash)
    assert low not in dash.cards.cards
    assert list(dash.cards.cards) == [high]


def test_card_text_is_escaped_and_missing_metrics_show_a_dash(runner: Runner) -> None:
    runner.config("paused", True)
    record = runner.submit("count").record
    html = card_html(record, record.submitted_at + 5, 1, "<img src=x onerror=alert(1)>")
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img" not in html
    assert "CPU -" in html and "Mem -" in html and "GPU -" in html
    assert "waiting 5s" in html
    assert 'class="nbr-params"' in html and "n=10" in html  # with its defaults


def test_a_queued_card_shows_its_params_escaped(runner: Runner) -> None:
    runner.config("paused", True)
    record = runner.submit("count", {"n": 3, "label": "<b>sweep</b>"}).record
    assert record.status is RunStatus.QUEUED
    html = card_html(record, record.submitted_at, 1, "")
    assert "n=3" in html and "label=&lt;b&gt;sweep&lt;/b&gt;" in html
    assert "<b>sweep" not in html


def test_toasts_are_dismissible(dash: Dashboard, runner: Runner) -> None:
    run = runner.submit("count", {"n": 1, "delay": 0})
    run.wait(timeout=30)
    refresh_until(dash, lambda: dash.toasts.toasts, "a toast")
    toast = dash.toasts.toasts[0]
    assert f"#{run.id} count" in toast.widget.children[0].value
    assert "succeeded" in toast.widget.children[0].value
    toast.widget.children[1].click()
    settle(dash)
    assert dash.toasts.toasts == []
    assert dash.toasts.widget.children == ()


# -- logs ----------------------------------------------------------------------------------------
def test_log_buffer_collapses_redraws_renders_colours_and_escapes() -> None:
    buffer = LogBuffer()
    buffer.feed("step 1\rstep 2\rst")
    buffer.feed("ep 3\n\x1b[32mgreen\x1b[0m <script>x()</script>\n")
    buffer.feed("bar 10%\rbar 20%")
    html = buffer.tail_html()
    assert html.splitlines()[0] == "step 3"
    assert '<span style="color: #00aa00">green</span>' in html
    assert "&lt;script&gt;x()&lt;/script&gt;" in html and "<script>" not in html
    assert html.splitlines()[-1] == "bar 20%"
    assert buffer.tail_html(needle="GREEN").count("\n") == 0


def test_each_log_tab_tails_only_its_own_run(dash: Dashboard, runner: Runner) -> None:
    first = runner.submit("count", {"n": 200, "delay": 0.05, "label": "first"}).id
    second = runner.submit("count", {"n": 200, "delay": 0.05, "label": "second"}).id
    dash.view_logs(first)
    dash.view_logs(second)
    settle(dash)
    assert dash.tabs.widget.titles == ("History", "Compare", f"#{first} count", f"#{second} count")
    assert dash.tabs.widget.selected_index == 3
    bodies = {run_id: dash.tabs.tabs[run_id].body for run_id in (first, second)}
    refresh_until(
        dash, lambda: all("5/200" in b.value for b in bodies.values()), "five lines in each tab"
    )
    assert "second" not in bodies[first].value
    assert "first" not in bodies[second].value

    tab = dash.tabs.tabs[first]
    tab.filter.value = "first 3/200"
    settle(dash)
    assert tab.body.value.count("\n") == 0 and "first 3/200" in tab.body.value
    tab.follow.value = False
    settle(dash)
    assert "nbr-nofollow" in tab.body._dom_classes
    parts = tab.widget.children[:-1]  # toolbar and provenance line
    tab.follow.value = True  # a new body, scrolled to its end; the rest of the tab stays
    settle(dash)
    assert tab.widget.children == (*parts, tab.body) and "nbr-nofollow" not in tab.body._dom_classes

    tab.widget.children[0].children[2].click()  # Full log
    settle(dash)
    assert 'download="run-' in tab.link.value and "base64," in tab.link.value

    tab.widget.children[0].children[3].click()  # Close tab
    settle(dash)
    assert list(dash.tabs.tabs) == [second]
    assert dash.tabs.widget.titles == ("History", "Compare", f"#{second} count")
    runner.cancel(first)
    runner.cancel(second)


def test_a_page_with_active_runs_says_it_reads_their_figures(
    dash: Dashboard, runner: Runner
) -> None:
    watching = runner.home / contact.WATCH_NAME
    assert not watching.exists()  # no active run: the service has nothing to sample for it
    runner.config("paused", True)
    queued = runner.submit("sleep", {"n": 60})
    refresh_until(dash, lambda: len(dash.cards.cards) == 1, "a card")
    assert contact.watched_recently(watching)  # its cards show CPU and memory: sampled
    queued.cancel()


# -- history -------------------------------------------------------------------------------------
def test_history_pages_through_one_page_at_a_time(dash: Dashboard, runner: Runner) -> None:
    seed_history(runner.store, 60)
    history = dash.history
    history.invalidate()
    settle(dash)
    assert history.page_label.value == "page 1 of 3 · 60 runs"
    assert len(history.runs) == 25 and table_rows(history) == 25
    assert len(history.action_column.children) == 25
    ids = [r.id for r in history.runs]
    assert ids == sorted(ids, reverse=True)
    assert history.prev_button.disabled and not history.next_button.disabled
    newest = history.runs[0].id

    history.next_button.click()
    settle(dash)
    assert history.page_label.value == "page 2 of 3 · 60 runs"
    assert history.runs[0].id == newest - 25
    history.next_button.click()
    settle(dash)
    assert history.page_label.value == "page 3 of 3 · 60 runs"
    assert table_rows(history) == 10 and len(history.action_column.children) == 10
    assert history.next_button.disabled

    history.page_size.value = 50
    settle(dash)
    assert history.page_label.value == "page 1 of 2 · 60 runs"
    assert table_rows(history) == 50


def test_history_filters_by_module_status_and_text(dash: Dashboard, runner: Runner) -> None:
    seed_history(runner.store, 5, module="alpha")
    seed_history(runner.store, 3, module="beta")
    history = dash.history
    history.module.value = "beta"
    settle(dash)
    assert history.page_label.value == "page 1 of 1 · 3 runs"
    assert {r.module for r in history.runs} == {"beta"}
    history.module.value = ""
    history.status.value = "failed"
    settle(dash)
    assert history.total == 0 and history.empty.layout.display is None
    history.status.value = ""
    history.search.value = '"i": 4'
    settle(dash)
    assert history.total == 1 and history.page_label.value == "page 1 of 1 · 1 run"


def test_history_row_actions_view_and_restart(dash: Dashboard, runner: Runner) -> None:
    runner.config("paused", True)
    (seeded,) = seed_history(runner.store, 1, module="count")
    dash.history.invalidate()
    settle(dash)
    actions = dash.history.actions[0]
    assert actions.run_id == seeded
    actions.view_button.click()
    settle(dash)
    assert seeded in dash.tabs.tabs
    actions.restart_button.click()
    assert runner.store.active()[0].restart_of == seeded
    assert f"Restarted #{seeded}" in dash.notice.value


def test_export_writes_every_matching_run(dash: Dashboard, runner: Runner) -> None:
    seed_history(runner.store, 30, module="alpha")
    seed_history(runner.store, 4, module="beta")
    dash.history.module.value = "alpha"
    path = dash.history.export()
    assert path is not None and path.parent == runner.home / "exports"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and {r["module"] for r in rows} == {"alpha"}
    assert "30 runs" in dash.history.export_message.value


# -- gauges, summary, the loop -------------------------------------------------------------------
def test_no_gpu_is_said_plainly() -> None:
    sample = SystemSample(1.0, 10.0, (10.0,), 1, 1, 2, gpus=(), gpu_status="no GPU detected (X)")
    blocks = gauges_html([sample])
    assert blocks[-1] == '<div class="nbr-nogpu">no GPU detected (X)</div>'
    assert "CPU" in blocks[0] and "Memory" in blocks[1]


def test_gpu_gauges_come_from_the_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBRUNNER_GPUS", '[{"name": "RTX <5090>", "memory": "32GB"}]')
    blocks = gauges_html([take_sample()])
    assert len(blocks) == 3
    assert "GPU 0 RTX &lt;5090&gt;" in blocks[2]
    assert "0 B / 29.8 GB" in blocks[2]


def test_summary_counts_and_durations(dash: Dashboard, runner: Runner) -> None:
    seed_history(runner.store, 4, module="alpha")
    dash.summary.load()
    settle(dash)
    assert "succeeded</span> 4" in dash.summary.counts.value
    assert "<b>alpha</b>" in dash.summary.chart.value
    assert dash.summary.chart.value.count("<rect") == 4


def test_a_quiet_tick_sends_nothing(dash: Dashboard) -> None:
    settle(dash)
    dash.stats.reset()
    dash.refresh()
    assert dash.stats.updates == 0 and dash.stats.bytes == 0
    assert "nbr-ready" in dash.widget._dom_classes


def test_background_loop_refreshes_and_close_lets_go(runner: Runner) -> None:
    sampler = SystemSampler(interval=3600)
    dashboard = runner.dashboard(interval=0.05, sampler=sampler).dashboard
    wait_until(lambda: dashboard.ticks >= 3, what="three ticks")
    run = runner.submit("count", {"n": 1, "delay": 0})
    wait_until(lambda: run.id in dashboard.cards.cards, what="a card from the loop")
    dashboard.close()
    assert sampler._users == 0
    assert not dashboard._thread or not dashboard._thread.is_alive()
    assert dashboard.widget.comm is None


def test_runs_are_not_affected_by_closing_the_dashboard(dash: Dashboard, runner: Runner) -> None:
    run = runner.submit("count", {"n": 3, "delay": 0.05})
    dash.close()
    assert run.wait(timeout=30).status is RunStatus.SUCCEEDED


def test_every_tick_makes_at_most_one_store_query(
    dash: Dashboard, runner: Runner, clock: FakeClock
) -> None:
    statements: list[str] = []
    runner.store._conn().set_trace_callback(statements.append)  # refresh() runs on this thread
    reloads = 0
    for i in range(3):
        runner.submit("count", {"n": 1, "delay": 0, "label": f"q{i}"}).wait(timeout=30)
        for _ in range(8):
            clock.now += 3  # past every reload interval, so each kind of reload happens
            statements.clear()
            dash.refresh()
            selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
            assert len(selects) <= 1, selects
            reloads += len(selects)
    runner.store._conn().set_trace_callback(None)
    assert reloads >= 3  # history counts, pages and the summary did reload


# -- truth, live ---------------------------------------------------------------------------------
def test_durations_under_a_second_keep_a_decimal() -> None:
    assert [text.duration(s) for s in (0.0, 0.42, 1.0, 59.9, 200)] == [
        "0.0s",
        "0.4s",
        "1s",
        "59s",
        "3m20s",
    ]


@pytest.mark.parametrize(
    ("line", "fraction", "eta"),
    [
        ("45%|████▌     | 450/1000 [00:10<00:12, 43.1it/s]", 0.45, 12.0),
        ("step 450/1000", 0.45, 10 * 550 / 450),
        ("train: 30% done", 0.3, 10 * 0.7 / 0.3),
        ("epoch 3/10 [1:02:03<0:01:04]", 0.3, 64.0),
    ],
)
def test_progress_is_read_from_the_last_line(line: str, fraction: float, eta: float) -> None:
    progress = parse(line, elapsed_s=10)
    assert progress is not None
    assert progress.fraction == pytest.approx(fraction)
    assert progress.eta_s == pytest.approx(eta)


@pytest.mark.parametrize("line", ["", "loss 0.25", "saved 2024/11/30", "12/0", "150%"])
def test_no_progress_is_made_up(line: str) -> None:
    assert parse(line, elapsed_s=10) is None


def test_a_running_card_shows_a_progress_bar_with_percent_and_eta(runner: Runner) -> None:
    runner.config("paused", True)
    record = runner.submit("count").record
    running = dataclasses.replace(record, status=RunStatus.RUNNING, started_at=record.submitted_at)
    html = card_html(running, record.submitted_at + 10, None, "step 450/1000")
    assert 'class="nbr-progress"' in html and "45% · ETA 12s" in html
    assert "nbr-progress" not in card_html(record, record.submitted_at + 10, 1, "step 1/2")


def test_a_history_row_follows_its_run_without_a_reload(dash: Dashboard, runner: Runner) -> None:
    runner.config("paused", True)
    run_id = runner.submit("count", {"n": 40, "delay": 0.05}).id
    row = dash.history
    refresh_until(dash, lambda: f"nbr-hrun-{run_id}" in row.table.value, "the new run's row")
    assert "nbr-status-queued" in row.table.value
    runner.config("paused", False)
    refresh_until(dash, lambda: "nbr-status-running" in row.table.value, "running in history")
    assert row.runs[0].status is RunStatus.QUEUED  # the page was not reloaded: followed live
    refresh_until(dash, lambda: "nbr-progress" in row.table.value, "progress in the row")
    refresh_until(dash, lambda: "nbr-status-succeeded" in row.table.value, "the end")


def test_the_module_filter_offers_known_modules_and_matches_prefixes(
    dash: Dashboard, runner: Runner
) -> None:
    seed_history(runner.store, 2, module="alpha")
    seed_history(runner.store, 3, module="alphabet")
    seed_history(runner.store, 4, module="beta")
    dash.history.invalidate()
    settle(dash)
    history = dash.history
    assert {"alpha", "alphabet", "beta", "count", "sleep", "train"} <= set(history.module.options)
    history.module.value = "alp"
    settle(dash)
    assert history.total == 5
    history.module.value = "alphabet"
    settle(dash)
    assert history.total == 3
    history.module.value = "zeta"
    settle(dash)
    assert history.total == 0


def test_invalid_fields_are_highlighted(dash: Dashboard) -> None:
    launcher = dash.launcher
    launcher.module.value = "count"
    launcher.fields["n"].input.value = "ten"
    assert launcher.submit() == []
    assert "nbr-invalid" in launcher.fields["n"].row._dom_classes
    assert "nbr-invalid" not in launcher.fields["delay"].row._dom_classes
    launcher.copies.input.value = "0"
    assert "nbr-invalid" in launcher.copies.row._dom_classes
    launcher.fields["n"].input.value = "3"
    assert "nbr-invalid" not in launcher.fields["n"].row._dom_classes
    assert "nothing was submitted" in launcher.message.value  # Copies is still wrong
    launcher.copies.input.value = "1"  # the last one fixed: the note asking for it goes
    assert launcher.message.value == ""


def test_one_long_run_does_not_flatten_the_short_ones() -> None:
    heights = [
        float(h)
        for h in re.findall(r'height="([\d.]+)"', bars_svg([0.5, 5, 3600], ["succeeded"] * 3))[1:]
    ]
    assert heights[0] >= 2 and heights[1] > 0.2 * heights[2]  # linear: 0.1 %


def test_rerunning_the_cell_releases_the_previous_dashboard(runner: Runner) -> None:
    sampler = SystemSampler(interval=3600)
    first = runner.dashboard(interval=0.05, sampler=sampler).dashboard
    wait_until(lambda: first.ticks >= 1, what="a tick")
    listeners = len(runner._listeners)
    second = runner.dashboard(interval=0.05, sampler=sampler).dashboard
    try:
        assert first._thread is not None and not first._thread.is_alive()
        assert first.widget.comm is None
        assert len(runner._listeners) == listeners  # the old one's left, the new one's came
        wait_until(lambda: second.ticks >= 1, what="the new dashboard ticking")
    finally:
        second.close()
    assert sampler._users == 0


def test_a_dead_kernel_hides_the_dashboard_and_says_what_to_do() -> None:
    css = stylesheet().value
    assert ".nbr-app.jupyter-widgets-disconnected > *" in css
    assert "re-run the cell" in css


def test_an_empty_optional_field_is_none_and_leaves_its_flag_out(
    dash: Dashboard, runner: Runner
) -> None:
    runner.config("paused", True)
    optional = {"type": "int", "default": 5, "optional": True}
    runner.register("fit", command=["echo"], params={"depth": optional, "lr": "float"})
    launcher = dash.launcher
    launcher.reload_modules()
    launcher.module.value = "fit"
    assert launcher.fields["depth"].input.value == "5"
    launcher.fields["depth"].input.value = ""
    launcher.fields["lr"].input.value = "0.1"
    launcher.run_button.click()
    (record,) = runner.store.active()
    assert record.params == {"depth": None, "lr": 0.1}
    assert record.argv == ["echo", "--lr", "0.1"]


# -- round three: a page that sleeps, and nothing on it wrong -------------------------------------
def test_live_clocks_are_coarse_so_an_idle_card_changes_rarely() -> None:
    shown = [text.clock(s) for s in (0, 4.9, 5, 59, 60, 119, 3599, 3600, 7322)]
    assert shown == ["0s", "0s", "5s", "55s", "1m", "1m", "59m", "1h00m", "2h02m"]
    steps = {text.clock(s / 10) for s in range(0, 600)}  # a minute, every 0.1 s
    assert len(steps) == 12  # twelve texts, not six hundred


def test_seconds_of_sleep_between_clock_steps_send_nothing(
    dash: Dashboard, runner: Runner, clock: FakeClock
) -> None:
    runner.config("paused", True)
    heard: list[int] = []  # subscribed after the dashboard: called after it, too
    runner.subscribe(lambda changes: heard.extend(r.id for r in changes))
    run = runner.submit("sleep", {"n": 60})
    refresh_until(dash, lambda: run.id in dash.cards.cards and run.id in heard, "a card")
    # a minute after its submission, the start of a clock step: the card counts from when it
    # was submitted (a busy machine may submit seconds after the clock was made)
    clock.now = run.record.submitted_at + 60
    wait_until(lambda: quiet_refresh(dash), timeout=20, what="the reloads the new run asked for")
    dash.stats.reset()
    for _ in range(4):  # four seconds within the step: the card's text stays the same
        clock.now += 1
        dash.refresh()
    assert dash.stats.updates == 0


def test_past_a_screenful_active_runs_fold_into_one_table(
    dash: Dashboard, runner: Runner, clock: FakeClock
) -> None:
    from nbrunner.ui.folded import FOLD_AT

    runner.config("paused", True)
    runs = [runner.submit("sleep", {"n": 60}) for _ in range(FOLD_AT + 1)]
    folded = dash.cards.folded
    assert folded is not None
    refresh_until(dash, lambda: f"nbr-hrun-{runs[-1].id}" in folded.table.value, "the table")
    assert folded.table.value.count('<tr class="nbr-hrow') == FOLD_AT + 1
    assert dash.cards.cards == {} and dash.cards.grid.children == ()
    assert folded.widget.layout.display is None
    assert dash.cards.heading.value == f"<h3>Active runs ({FOLD_AT + 1})</h3>"
    folded.pick.value = runs[0].id
    folded.widget.children[0].children[2].click()  # Cancel, for the picked run
    refresh_until(dash, lambda: "cancelled" in folded.table.value, "the cancel in the table")
    clock.now += dash.linger_s + 1  # its row lingers, then twelve runs are twelve cards
    refresh_until(dash, lambda: runs[1].id in dash.cards.cards, "cards again at twelve")
    assert folded.widget.layout.display == "none"


def test_toasts_leave_by_themselves(dash: Dashboard, runner: Runner, clock: FakeClock) -> None:
    from nbrunner.ui.toasts import TOAST_S

    runner.submit("count", {"n": 1, "delay": 0}).wait(timeout=30)
    refresh_until(dash, lambda: dash.toasts.toasts, "a toast")
    clock.now += TOAST_S + 5
    dash.refresh()
    assert dash.toasts.toasts == [] and dash.toasts.widget.children == ()
    overlay = next(
        c for c in dash.widget.children if dash.toasts.widget in getattr(c, "children", ())
    )
    assert "nbr-overlay" in overlay._dom_classes  # floats over the page (see the browser test)


def test_a_run_that_just_ended_is_counted_beside_its_card(dash: Dashboard, runner: Runner) -> None:
    run = runner.submit("count", {"n": 1, "delay": 0})
    run.wait(timeout=30)
    refresh_until(dash, lambda: "succeeded" in dash.cards.cards[run.id].body.value, "ended")
    assert "succeeded</span> 1" in dash.summary.counts.value
    assert "no runs" not in dash.summary.counts.value
    dash.summary.load()  # once the store's counts include it, it is not counted twice
    dash.refresh()
    assert "succeeded</span> 1" in dash.summary.counts.value


def test_the_summary_says_counting_before_it_knows(runner: Runner) -> None:
    from nbrunner.ui.summary import counts_html

    assert "counting" in counts_html({}, loaded=False)
    assert "no runs" in counts_html({}, loaded=True)


@pytest.mark.parametrize(
    ("field", "typed", "says"),
    [
        ("priority", "1e30", "whole number"),
        ("priority", "2.7", "whole number"),
        ("copies", "2.5", "whole number"),
        ("copies", "1000", "≤ 100"),
        ("copies", "-5", "≥ 1"),
    ],
)
def test_priority_and_copies_are_refused_as_typed_and_nothing_is_submitted(
    dash: Dashboard, runner: Runner, field: str, typed: str, says: str
) -> None:
    launcher = dash.launcher
    launcher.module.value = "count"
    box = getattr(launcher, field)
    box.input.value = typed
    assert says in box.error.value and typed in box.error.value
    assert "nbr-invalid" in box.row._dom_classes
    assert launcher.submit() == []
    assert "nothing was submitted" in launcher.message.value
    assert runner.count() == 0


def test_a_cleared_number_field_is_an_error_not_its_default(
    dash: Dashboard, runner: Runner
) -> None:
    launcher = dash.launcher
    launcher.module.value = "count"
    launcher.fields["n"].input.value = ""
    assert "n is empty" in launcher.fields["n"].error.value
    assert launcher.submit() == []
    assert runner.count() == 0


def test_the_run_confirmation_sits_beside_the_run_button(dash: Dashboard) -> None:
    launcher = dash.launcher
    row = next(
        c for c in launcher.widget.children if launcher.run_button in getattr(c, "children", ())
    )
    assert launcher.message in row.children


def test_huge_durations_read_sanely() -> None:
    assert text.duration(4e22) == "> 100d"
    assert text.duration(float("nan")) == text.DASH
    assert parse("step 1/1000000000000", elapsed_s=1e12) is not None
    assert "> 100d" in parse("step 1/1000000000000", elapsed_s=1e12).label()


@pytest.mark.parametrize(
    ("line", "fraction"),
    [
        ("\repoch 1/3:  45%|█████     | 9/20 loss=0.1", 0.15),  # the run's share, not 45 %
        ("\repoch 3/3: 100%|██████████| 20/20 loss=0.1", 1.0),
        ("\repoch 2/4:   0%|          | 0/20", 0.25),
    ],
)
def test_nested_bars_give_the_runs_progress(line: str, fraction: float) -> None:
    progress = parse(line, elapsed_s=10)
    assert progress is not None and progress.fraction == pytest.approx(fraction)


def test_a_run_that_reports_its_total_is_believed(runner: Runner) -> None:
    from nbrunner.scalars import Series
    from nbrunner.ui.cards import progress_of

    record = runner.submit("count", {"n": 1, "delay": 0}).wait(timeout=30)
    running = dataclasses.replace(record, status=RunStatus.RUNNING, started_at=100.0)
    total = Series(keep=False)
    total.add(30, 0.0, 120)  # report(step=30, total=120)
    progress = progress_of(running, "epoch 1: 99%|…| 99/100", 110.0, total)
    assert progress is not None and progress.fraction == pytest.approx(0.25)
    assert progress.eta_s == pytest.approx(30)  # 10 s for a quarter: 30 s more


def test_the_demo_refuses_a_step_time_that_would_overflow(dash: Dashboard, runner: Runner) -> None:
    launcher = dash.launcher
    launcher.module.value = "train"
    launcher.fields["step_time"].input.value = "1e308"
    assert "≤ 60" in launcher.fields["step_time"].error.value
    assert launcher.submit() == [] and runner.count() == 0
