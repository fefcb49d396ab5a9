"""9. Metrics: what `nbrunner.report` costs a run, and the Compare view with many live runs.

Reporting: the same run (a loop of fixed steps) with and without one `report(step, loss,
acc)` per step. Compare: 20 runs that each reported 10,000 points and go on reporting, all
in the dashboard's Compare view; its ticks' CPU and the bytes sent to the browser (a
recording comm, as in the dashboard benchmark). Then one run of 1,000,000 points: the
ticks while the view reads it.
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from . import nbrun
from .context import Context
from .dashboard import _Wire
from .harness import (
    Metrics,
    Section,
    Target,
    adopts_orphans,
    figure_from,
    interleave,
    isolate,
    median,
    percentile,
    wait_until,
)

WORK = """\
import hashlib, sys, time
from nbrunner import report
from nbrunner.reporting import flush
steps, reporting, native = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "native"
block = bytes(256 * 1024)
start, cpu = time.perf_counter(), time.process_time()
x = 0.0
for step in range(steps):
    if native:  # work in C that releases the GIL, as GPU, NumPy and I/O steps do
        hashlib.sha256(block).digest()
    else:  # pure Python, holding the GIL: about 40 µs on an idle core
        for i in range(1000):
            x += i * 0.5
    if reporting:
        report(step=step, loss=1 / (1 + step), acc=step / (1 + step))
flush()
print(f"elapsed {time.perf_counter() - start:.6f} {time.process_time() - cpu:.6f}")
"""
LIVE = """\
import sys, time
from nbrunner import report
points = int(sys.argv[1])
for step in range(points):
    report(step=step, loss=1 / (1 + step))
while True:  # live: one more point every 0.1 s until cancelled
    step += 1
    report(step=step, loss=1 / (1 + step))
    time.sleep(0.1)
"""
STEP_KINDS = {  # the figure each kind of step is judged on
    "native": ("wall_s", "steps releasing the GIL, its wall time"),
    "python": ("cpu_s", "pure-Python steps, its CPU"),
}
METHOD = """\
*Reporting*: a real run (a command module running a Python script) doing 100,000 steps,
with or without `report(step=..., loss=..., acc=...)` per step, interleaved. Two kinds of
step: sha256 of 256 kB (~0.2 ms of C code that releases the GIL, as a GPU step waiting on
its device, NumPy or I/O does; the figure is the child's wall time), and a pure-Python
loop of ~40 µs on an idle core that holds the GIL throughout (the worst case; the figure is
the child's CPU time, all threads, which other load on a shared machine disturbs far less
than wall time). Both are timed
from the first step to the end of the last write (`flush()`), as the child prints them.
*Compare*: 20 runs (max_concurrent 20) each report 10,000 points at once and then one
point every 0.1 s; a `Dashboard(start=False)` has all of them in its Compare view (metric
`loss`); once every line holds its 10,000 points, `refresh()` is called every 0.25 s: each
tick's thread CPU (`last_tick_cpu_s`) and the bytes of the comm messages it sent (JSON plus
binary buffers). *A million points*: one run reports 1,000,000 points; the view (alone) is
refreshed back to back until its line holds them all: the slowest tick's CPU and the time
to catch up."""


def _elapsed(log: str) -> tuple[float, float]:
    """The child's own wall time and CPU time (all its threads)."""
    line = next(x for x in reversed(log.splitlines()) if x.startswith("elapsed "))
    wall, cpu = line.split()[1:]
    return float(wall), float(cpu)


@adopts_orphans
def reporting_cost(home: Path, steps: int, reporting: bool, native: bool) -> Metrics:
    runner = nbrun.runner(home)
    (home / "work.py").write_text(WORK)
    kind = "native" if native else "python"
    argv = [sys.executable, str(home / "work.py"), str(steps), "01"[reporting], kind]
    runner.register("work", command=argv)
    run = runner.submit("work")
    record = run.wait(600)
    runner.close()
    if record.exit_code != 0:
        raise RuntimeError(f"the run failed: {run.logs(tail=10)}")
    wall, cpu = _elapsed(run.logs(tail=5))
    return {"cpu_s": cpu, "wall_s": wall}


def _catch_up(view: Any, points: int, timeout: float) -> tuple[float, float]:
    """Refresh until every line holds `points`: (seconds it took, slowest tick CPU in ms)."""
    start, slowest = time.perf_counter(), 0.0

    def caught_up() -> bool:
        nonlocal slowest
        cpu = time.thread_time()
        view.refresh()
        slowest = max(slowest, time.thread_time() - cpu)
        return all(
            line.follower.series.get("loss") is not None
            and line.follower.series["loss"].count >= points
            for line in view.lines.values()
        )

    wait_until(caught_up, timeout, f"{points} points in every line", step=0.0)
    return time.perf_counter() - start, 1000 * slowest


@adopts_orphans
def compare_live(home: Path, runs: int, points: int, ticks: int, million: int) -> Metrics:
    _Wire.install()
    runner = nbrun.runner(home, max_concurrent=runs)
    (home / "live.py").write_text(LIVE)
    runner.register("live", command=[sys.executable, str(home / "live.py"), str(points)])
    live = [runner.submit("live") for _ in range(runs)]
    nbrun.wait_running(live)
    board = nbrun.dashboard(runner, start=False)
    board.compare.select([r.id for r in live], "loss")
    _catch_up(board.compare, points, 300)
    for _ in range(4):  # the first ticks build the cards and load the history page
        board.refresh()
    samples = []
    sent, started = _Wire.sent_bytes, time.perf_counter()
    for _ in range(ticks):
        time.sleep(0.25)
        board.refresh()
        samples.append(1000 * board.last_tick_cpu_s)
    seconds = time.perf_counter() - started
    result = {
        "tick_ms": median(samples),
        "tick_p95_ms": percentile(samples, 95),
        "kb_per_s": (_Wire.sent_bytes - sent) / 1000 / seconds,
        "points_per_line": median([line.points for line in board.compare.lines.values()]),
    }
    board.close()
    nbrun.cancel_all(live)
    result.update(_million(runner, million))
    runner.close()
    return result


def _million(runner: Any, points: int) -> Metrics:
    from nbrunner.ui.compare import CompareView
    from nbrunner.ui.sync import Sync

    (runner.home / "many.py").write_text(LIVE.split("while True")[0])
    runner.register("many", command=[sys.executable, str(runner.home / "many.py"), str(points)])
    run = runner.submit("many")
    run.wait(600)
    view = CompareView(runner, Sync())
    view.select([run.id], "loss")
    seconds, slowest = _catch_up(view, points, 600)
    return {"million_catch_up_s": seconds, "million_slowest_tick_ms": slowest}


def _of_kind(results: dict[str, list[Metrics]], kind: str) -> dict[str, list[Metrics]]:
    """The variants of one kind of step, by variant name ("kind|variant" keys)."""
    return {key.split("|")[1]: runs for key, runs in results.items() if key.startswith(kind)}


def run(ctx: Context) -> Section:
    section = Section("metrics", "9. Metrics: reporting and Compare", METHOD)
    steps = ctx.size(100_000, 20_000)
    variants = {
        f"{kind}|{variant}": partial(
            isolate,
            "metrics:reporting_cost",
            steps=steps,
            reporting=reporting,
            native=kind == "native",
        )
        for kind in STEP_KINDS
        for variant, reporting in (("not reporting", False), ("nbrunner", True))
    }
    results = interleave(variants, ctx.size(3, 1))
    costs = {
        kind: figure_from(section, _of_kind(results, kind), key, f"a run of {steps:,} {what}", "s")
        for kind, (key, what) in STEP_KINDS.items()
    }
    runs, points, million = 20, ctx.size(10_000, 2_000), ctx.size(1_000_000, 100_000)
    data = isolate(
        "metrics:compare_live",
        runs=runs,
        points=points,
        ticks=ctx.size(60, 12),
        million=million,
    )
    for key, label, unit in (
        ("tick_ms", f"dashboard tick CPU, Compare with {runs} live runs × {points:,}", "ms"),
        ("tick_p95_ms", "the same, p95", "ms"),
        ("kb_per_s", "bytes to the browser", "kB/s"),
        ("points_per_line", "points per line sent", "points"),
        ("million_slowest_tick_ms", f"slowest tick reading a {million:,}-point run", "ms"),
        ("million_catch_up_s", f"until the {million:,}-point line is whole", "s"),
    ):
        section.figure(label, unit).add("nbrunner", data[key])
    held, released = (costs[kind].ratio("not reporting") for kind in ("python", "native"))
    section.targets += [
        Target(
            f"a run reporting {steps:,} points ≤ 1.05× the same run not reporting "
            "(steps releasing the GIL, as GPU or NumPy work does)",
            f"{released:.3f}× (wall time)",
            released <= 1.05,
            "the caller only buffers each point (~1 µs); the flusher thread formats and "
            "writes them while the step has released the GIL, given a free core: on a "
            "loaded machine the two threads contend and the formatting shows.",
        ),
        Target(
            f"… and with pure-Python steps holding the GIL (~{steps // 1000}k × 40 µs)",
            f"{held:.3f}× (CPU time)",
            held <= 1.05,
            "with steps that never release the GIL nothing runs beside them: each point's "
            "formatting (float reprs, 4–8 µs of CPU on this machine) adds to the run; steps "
            "2–3× as long as this loop's would meet it.",
        ),
        Target(
            f"Compare with {runs} live runs × {points:,} points: tick ≤ 30 ms",
            f"{data['tick_ms']:.1f} ms (p95 {data['tick_p95_ms']:.1f} ms)",
            data["tick_ms"] <= 30,
            "see the p95 row: ticks that redraw lines cost the most.",
        ),
        Target(
            "… and ≤ 50 kB/s to the browser",
            f"{data['kb_per_s']:.1f} kB/s",
            data["kb_per_s"] <= 50,
            "each line redrawn sends its downsampled points (float32 x and y).",
        ),
    ]
    if ctx.quick:
        section.notes.append("Quick mode: fewer steps and points than the targets name.")
    return section
