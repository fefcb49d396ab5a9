"""11. Watching idle runs: one Voila dashboard page open in headless Chromium, 10 sleeping
runs, nothing changing but the clocks.

Measured from outside with psutil: the CPU of nbrunner's processes (the home's service, its
keeper, `nbrunner dashboard` with Voila and the page's kernel) and of Chromium's
processes over a window, as % of one core. Then how fresh the page stays while it sleeps:
a run submitted from another process, from the submit call to its card in the page.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil

from nbrunner import Run, Runner
from nbrunner.ui.app import LINGER_S
from nbrunner.ui.toasts import TOAST_S

from . import nbrun
from .context import Context
from .harness import Metrics, Section, Target, adopts_orphans, cpu_seconds, figure_from, isolate

ACTIVE = 10
PAGE = "one Voila page, 10 sleeping runs"
NBRUNNER_PCT = 0.5
CHROMIUM_PCT = 3.0
FRESH_S = 0.5
# The same measurement before the page slept (a 4 Hz redraw of every view, each card sent
# every second), on this machine on 2026-12-05: nbrunner %, Chromium %, freshness ms.
BEFORE = (2.37, 7.40, 310)
PARTS = {
    "service": "the home's service",
    "keeper": "the home's keeper",
    "voila": "`nbrunner dashboard` and Voila",
    "kernel": "the page's kernel",
}
METHOD = f"""\
A home with {ACTIVE} `sleep 600` runs (all running); `nbrunner dashboard` serves it through
Voila and one headless Chromium page (1280×800) shows it. Once the page is built and has
settled (5 s), the CPU (user + system, psutil `cpu_times`) of every process is summed over the
window and divided by its length: % of one core. *nbrunner* is the home's service, its
keeper (the runs' parent), and `nbrunner dashboard` with all its descendants (Voila, the page's
kernel); *Chromium* is every browser process. *Freshness*: then a run is submitted from
the measuring process (as the CLI would) and the time until its card (past 12 runs: its row
of the folded table) is in the page's DOM is taken, as Playwright's wait sees it."""


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return []


def _chromium() -> list[psutil.Process]:
    """Every Chromium process under this one (Playwright's driver starts the browser)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" in child.name().lower():
                found.append(child)
        except psutil.Error:
            continue
    return found


def _window(groups: dict[str, list[psutil.Process]], seconds: float) -> Metrics:
    before = {name: cpu_seconds(procs) for name, procs in groups.items()}
    start = time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - start
    return {
        f"{name}_pct": 100 * (cpu_seconds(procs) - before[name]) / wall
        for name, procs in groups.items()
    }


def _fresh_ms(page: Any, runs: list[Run], runner: Runner, name: str) -> float:
    started = time.perf_counter()
    runs.append(runner.submit(name))
    shown = f".nbr-run-{runs[-1].id}, .nbr-folded .nbr-hrun-{runs[-1].id}"  # a card, or a row
    page.wait_for_selector(shown, state="attached", timeout=60_000)
    return 1000 * (time.perf_counter() - started)


@adopts_orphans
def idle_page(home: Path, seconds: float, rounds: int) -> dict[str, list[Metrics]]:
    from tests.helpers.browser import chromium, dashboard_server, open_dashboard

    runner = nbrun.runner(home, ACTIVE + 1)
    name = nbrun.register(runner, "sleeper", ["sleep", "600"])
    runs = [runner.submit(name) for _ in range(ACTIVE)]
    nbrun.wait_running(runs)
    windows: list[Metrics] = []
    try:
        with dashboard_server(home, home / "server") as server, chromium() as browser:
            page = open_dashboard(browser, server.url)
            page.wait_for_selector(f".nbr-run-{runs[-1].id}", timeout=120_000)
            time.sleep(5.0)  # the first ticks and the page's own start-up are not steady state
            server_procs = _tree(psutil.Process(server.process.pid))
            kernels = server.kernels()
            owners = nbrun.owners(home, runs)
            groups = {
                "nbrunner": [*owners, *server_procs],
                "chromium": _chromium(),
                "service": owners[:1],
                "keeper": owners[1:],
                "voila": [p for p in server_procs if p not in kernels],
                "kernel": kernels,
            }
            for _ in range(rounds):
                metrics = _window(groups, seconds)
                metrics["load"] = os.getloadavg()[0]
                metrics["fresh_ms"] = _fresh_ms(page, runs, runner, name)
                windows.append(metrics)
                runs[-1].cancel()  # back to 10 runs, once its card and toast have gone
                runs[-1].wait(60)
                time.sleep(LINGER_S + TOAST_S - 10)
    finally:
        nbrun.cancel_all(runs)
        runner.close()
        nbrun.stop_service(home)
    return {PAGE: windows}


WHY = (
    "the page itself is quiet: Voila {voila:.2f} %, the page's kernel {kernel:.2f} % (its "
    "runner reads the change feed when a commit rings it and every 2 s, the page wakes every "
    "5 s for its clocks and gauges); the home's service takes {service:.2f} %: while a page "
    "watches, it samples every run's tree every 3 s and writes the figures in one commit, "
    "which rings the page's runner; the keeper {keeper:.2f} %."
)


def part(section: Section, key: str) -> float:
    """The median of one process group's figure (`… of which …`)."""
    return next(f.median() for f in section.figures if f.label.endswith(PARTS[key]))


def run(ctx: Context) -> Section:
    seconds, rounds = ctx.size(30.0, 10.0), ctx.size(3, 1)
    section = Section("idle_page", "11. Watching idle runs in the browser", METHOD)
    results = isolate("idle_page:idle_page", seconds=seconds, rounds=rounds)
    unit = "% of one core"
    nbr = figure_from(section, results, "nbrunner_pct", "CPU, nbrunner's processes", unit)
    chrome = figure_from(section, results, "chromium_pct", "CPU, Chromium", unit)
    for key, label in PARTS.items():
        figure_from(section, results, f"{key}_pct", f"… of which {label}", unit)
    fresh = figure_from(section, results, "fresh_ms", "submit → card in the page", "ms")
    for fig in section.figures:
        fig.subject = PAGE
    loads = [m["load"] for m in results[PAGE]]
    section.notes.append(
        f"{rounds} window(s) of {seconds:g} s; the machine's 1-minute load average at their "
        f"ends: {', '.join(f'{x:.1f}' for x in loads)} (on {os.cpu_count()} cores)."
    )
    section.notes.append(
        "Before the page slept (a 4 Hz redraw of every view, every card sent each second): "
        f"nbrunner {BEFORE[0]} %, Chromium {BEFORE[1]} %, a change shown in {BEFORE[2]} ms."
    )
    section.targets += [
        Target(
            f"idle page: nbrunner's processes ≤ {NBRUNNER_PCT} % of one core",
            f"{nbr.median():.2f} %",
            nbr.median() <= NBRUNNER_PCT,
            WHY.format(**{k: part(section, k) for k in PARTS}),
        ),
        Target(
            f"idle page: Chromium ≤ {CHROMIUM_PCT} % of one core",
            f"{chrome.median():.2f} %",
            chrome.median() <= CHROMIUM_PCT,
        ),
        Target(
            f"a change from another process shows in the page ≤ {FRESH_S * 1000:.0f} ms",
            f"{fresh.median():.0f} ms (max {fresh.spread(PAGE)[1]:.0f} ms)",
            fresh.median() <= FRESH_S * 1000,
        ),
    ]
    return section
