"""12. Holding idle runs: 50 sleeping runs and nobody looking, for minutes.

What nbrunner costs while nothing happens: the home's service and what holds the runs (its
keeper, or a recorder per run for comparison), measured from outside. CPU as % of one core
(psutil, user + system, over the window); wake-ups per second of the same processes (their
threads' voluntary context switches from /proc/PID/task/*/status: each sleep that ends is
one); their memory (PSS) at the end.
"""

from __future__ import annotations

import os
import time
from contextlib import suppress
from pathlib import Path

import psutil

from . import nbrun
from .context import Context
from .harness import Metrics, Section, Target, adopts_orphans, cpu_seconds, figure_from, isolate

SLEEPER = ["sleep", "3600"]
WINDOW_ENV = "NBRUNNER_BENCH_IDLE_RUNS_S"  # a shorter window than the full 10 minutes
CPU_PCT = 0.1
WAKEUPS_PER_S = 1.0
MEMORY_MB = 100.0
SETTLE_S = 3.0
# The same measurement before the service slept between events (a pass every second while
# runs were active, each run's tree sampled every 3 s), on this machine on 2026-12-05, 50
# runs for 60 s: service + recorders CPU %, service wake-ups/s, service + recorders PSS MB.
BEFORE = (0.733, 1.13, 345.0)
BEFORE_LABEL = "before: a pass every second"
FORKED_LABEL = "a recorder forked per run (NBRUNNER_RECORDER=fork)"
METHOD = """\
N `sleep 3600` runs (max_concurrent N) are started and left alone for the window: no
dashboard, no reader of figures. Before and after the window: psutil CPU times (user +
system) of the home's service and of every run's parent (the keeper, or its recorder), and
their voluntary context switches summed over their threads (/proc/PID/task/*/status); a
thread that sleeps and is woken counts one, so this is their wake-ups, whatever woke them
('before' counted the service's alone). CPU is shown as % of one core over the window;
memory is PSS (`memory_full_info`) of the same processes summed at the end. The runner's
own process (the benchmark's) is left out: it is the user's kernel, not what holds the
runs."""


def wakeups(processes: list[psutil.Process]) -> int:
    """Voluntary context switches so far of every thread of these processes."""
    total = 0
    for process in processes:
        with suppress(OSError):  # a process that ended
            for task in Path(f"/proc/{process.pid}/task").iterdir():
                with suppress(OSError):  # a thread that ended meanwhile
                    for line in (task / "status").read_text().splitlines():
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
    return total


@adopts_orphans
def hold_idle_runs(home: Path, count: int, window: float, recorder: str = "") -> Metrics:
    from nbrunner import contact
    from nbrunner.recorder import RECORDER_ENV

    if recorder:
        os.environ[RECORDER_ENV] = recorder  # inherited by the service this starts

    runner = nbrun.runner(home, count)
    name = nbrun.register(runner, "sleeper", SLEEPER)
    runs = [runner.submit(name) for _ in range(count)]
    nbrun.wait_running(runs, timeout=300)
    time.sleep(SETTLE_S)  # the starts' own passes are over
    owners = nbrun.owners(home, runs)
    assert contact.info(home) is not None, "no service is running"
    cpu0, wake0, started = cpu_seconds(owners), wakeups(owners), time.monotonic()
    time.sleep(window)
    cpu1, wake1, elapsed = cpu_seconds(owners), wakeups(owners), time.monotonic() - started
    memory = 0.0
    for process in owners:
        try:
            memory += process.memory_full_info().pss / 2**20
        except psutil.Error:
            continue
    alive = sum(1 for process in owners if process.is_running())
    nbrun.cancel_all(runs)
    runner.close()
    nbrun.stop_service(home)
    return {
        "cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
        "wakeups_per_s": (wake1 - wake0) / elapsed,
        "pss_mb": memory,
        "processes": float(alive),
        "window_s": elapsed,
    }


def run(ctx: Context) -> Section:
    count = ctx.size(50, 10)
    window = float(os.environ.get(WINDOW_ENV) or ctx.size(600, 15))
    section = Section("idle_runs", f"12. Holding {count} idle runs", METHOD)
    metrics = isolate("idle_runs:hold_idle_runs", timeout=window + 600, count=count, window=window)
    forked = isolate(
        "idle_runs:hold_idle_runs", timeout=window + 600, count=count, window=window,
        recorder="fork",
    )  # fmt: skip
    results = {"nbrunner": [metrics], FORKED_LABEL: [forked]}
    cpu = figure_from(section, results, "cpu_pct", "service + keeper CPU", "% of a core")
    wake = figure_from(section, results, "wakeups_per_s", "service + keeper wake-ups", "per s")
    pss = figure_from(section, results, "pss_mb", "service + keeper memory (PSS)", "MB")
    for fig, before in zip((cpu, wake, pss), BEFORE, strict=True):
        if not ctx.quick:  # measured at the full size only
            fig.add(BEFORE_LABEL, before)
    section.notes.append(
        f"{count} runs ({metrics['processes']:.0f} nbrunner processes: service, keeper) held for "
        f"{metrics['window_s']:.0f} s"
        + (f" (shortened from 600 s with {WINDOW_ENV})" if os.environ.get(WINDOW_ENV) else "")
        + "; one repeat. 'before' is the same measurement of the service that passed every "
        "second while runs were active, taken on this machine before the change. CPU times "
        f"count in clock ticks: 0.000 % means under one tick, {_tick_pct(metrics):.3f} % here."
    )
    section.targets += [
        Target(
            f"service + keeper ≤ {CPU_PCT} % of a core",
            f"{cpu.median():.3f} %",
            cpu.median() <= CPU_PCT,
        ),
        Target(
            f"≤ {WAKEUPS_PER_S:g} wake-up per second (service and keeper)",
            f"{wake.median():.2f}/s",
            wake.median() <= WAKEUPS_PER_S,
        ),
        Target(
            f"memory of nbrunner's processes ≤ {MEMORY_MB:g} MB (PSS)",
            f"{pss.median():.1f} MB",
            pss.median() <= MEMORY_MB,
            "one keeper holds every run (a thread each): "
            f"{pss.median(FORKED_LABEL):.0f} MB with a recorder forked per run",
        ),
    ]
    return section


def _tick_pct(metrics: Metrics) -> float:
    """One clock tick of CPU time over the window, as % of one core."""
    return 100 / os.sysconf("SC_CLK_TCK") / metrics["window_s"]
