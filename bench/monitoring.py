"""5. Monitoring cost: CPU of the runner's process, the service and the keeper with 10
active runs.

Windows without and with a dashboard refreshing (its own refresh thread, as in a notebook)
alternate; each window's CPU is divided by its length to give % of one core.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import psutil

from nbrunner import Run, Runner

from . import nbrun
from .context import Context
from .harness import (
    Metrics,
    Section,
    Target,
    adopts_orphans,
    cpu_seconds,
    figure_from,
    interleave,
    isolate,
)

ACTIVE = 10
BARE = "runner + service + keeper"
WITH_UI = "… + one dashboard refreshing"
METHOD = """\
One process holds a runner with 10 `sleep 600` runs (all running). Over each window the
CPU (user + system, psutil `cpu_times`) of the runner's process — every thread: the
runner's tick, and in the dashboard windows the dashboard's refresh thread and the system
sampler — and of the home's service and its keeper (the runs' parent; their own CPU, not
their children's) is summed and divided
by the window's length: % of one core. Windows without and with a dashboard
(`nbrunner.ui.Dashboard(runner)`, built before the window, closed after it) alternate."""


def _window(home: Path, runs: Sequence[Run], seconds: float) -> Metrics:
    me = psutil.Process()
    sups = nbrun.owners(home, runs)
    own0, sup0 = cpu_seconds([me]), cpu_seconds(sups)
    start = time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - start
    own, sup = cpu_seconds([me]) - own0, cpu_seconds(sups) - sup0
    return {
        "runner_pct": 100 * own / wall,
        "service_pct": 100 * sup / wall,
        "total_pct": 100 * (own + sup) / wall,
    }


def _with_dashboard(home: Path, runner: Runner, runs: Sequence[Run], seconds: float) -> Metrics:
    board = nbrun.dashboard(runner)
    time.sleep(1.0)  # its first ticks build the cards; the window measures the steady state
    try:
        return _window(home, runs, seconds)
    finally:
        board.close()


@adopts_orphans
def monitoring(home: Path, bare_s: float, ui_s: float, rounds: int) -> dict[str, list[Metrics]]:
    runner = nbrun.runner(home, ACTIVE)
    name = nbrun.register(runner, "sleeper", ["sleep", "600"])
    runs = [runner.submit(name) for _ in range(ACTIVE)]
    nbrun.wait_running(runs)
    time.sleep(1.0)
    variants: dict[str, Callable[[], Metrics]] = {BARE: partial(_window, home, runs, bare_s)}
    if nbrun.dashboard_available():
        variants[WITH_UI] = partial(_with_dashboard, home, runner, runs, ui_s)
    results = interleave(variants, rounds)
    nbrun.cancel_all(runs)
    runner.close()
    nbrun.stop_service(home)
    return results


def run(ctx: Context) -> Section:
    bare_s, ui_s, rounds = ctx.size(5.0, 3.0), 10.0, ctx.size(6, 1)
    section = Section("monitoring", "5. Monitoring cost", METHOD)
    results = isolate("monitoring:monitoring", bare_s=bare_s, ui_s=ui_s, rounds=rounds)
    for key, label in (
        ("total_pct", "runner + service + keeper"),
        ("runner_pct", "runner's process"),
        ("service_pct", "service + keeper"),
    ):
        figure_from(section, results, key, f"CPU, {label}", "% of one core")
    subject = WITH_UI if WITH_UI in results else BARE
    for fig in section.figures:
        fig.subject = subject
    if subject == BARE:
        section.notes.append(
            "The dashboard (`nbrunner.ui`) could not be imported: measured without it."
        )
    section.notes.append(
        f"{rounds} round(s) of a {bare_s:g} s window without and a {ui_s:g} s window with the "
        f"dashboard: {rounds * ui_s:g} s measured with the dashboard in all."
    )
    total = section.figures[0].median()
    sups = section.figures[2].median()
    runner_share = section.figures[1].median()
    why = (
        f"the service and keeper take {sups:.2f} % of it: both sleep until something "
        "happens; while a dashboard watches, the service samples the runs' trees every 3 s "
        "and writes the figures in one commit. The runner's process takes "
        f"{runner_share:.2f} %: its change-feed read when a commit rings it and every 2 s, "
        "the dashboard's wake every 5 s (clocks, gauges) and the system sampler's (5 s)."
    )
    section.targets.append(
        Target(
            "monitoring ≤ 1 % of one core (10 active runs, one dashboard)",
            f"{total:.2f} %",
            total <= 1,
            why,
        )
    )
    return section
