"""7. Cancel latency: cancel → the whole process tree gone, cooperative and SIGTERM-ignoring.

The child starts a grandchild and both sleep; in the second case both ignore SIGTERM, so
the tree only goes when the grace period is over and the kill comes. The floor sends the same
signals to the process group itself: SIGTERM, wait up to the grace period, SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import psutil

from . import nbrun
from .children import tree_argv
from .context import Context
from .harness import (
    Metrics,
    Section,
    Target,
    Variant,
    adopts_orphans,
    figure_from,
    interleave,
    isolate,
    wait_until,
)

FLOOR = "floor (killpg by the parent)"
METHOD = """\
The run's child (`bench/children.py tree`) starts a grandchild; once both exist (psutil),
the clock starts and `run.cancel()` is called; latency = until every process of the tree is
gone or a zombie (polled every 5 ms with psutil). *Recorded* = until the run's record says
`cancelled`. The floor signals the process group from the parent with the same escalation
(SIGTERM, then SIGKILL once the grace period is over)."""


def _tree(pid: int) -> list[psutil.Process]:
    def both() -> bool:
        try:
            return len(psutil.Process(pid).children()) >= 1
        except psutil.Error:
            return False

    wait_until(both, 30, "child and grandchild started")
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def _gone(tree: list[psutil.Process]) -> bool:
    for process in tree:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.Error:
            continue
    return True


def _wait_gone(tree: list[psutil.Process], start: float, timeout: float = 60) -> float:
    wait_until(lambda: _gone(tree), timeout, "process tree gone", step=0.005)
    return time.perf_counter() - start


@adopts_orphans
def nbrunner_cancel(home: Path, ignore_term: bool, grace: float) -> Metrics:
    runner = nbrun.runner(home, grace_period=grace)
    run = runner.submit(nbrun.register(runner, "tree", tree_argv(ignore_term)))
    nbrun.wait_running([run])
    tree = _tree(run.pid or 0)
    start = time.perf_counter()
    run.cancel()
    gone = _wait_gone(tree, start)
    run.wait(60)
    recorded = time.perf_counter() - start
    runner.close()
    return {"gone_ms": 1000 * gone, "recorded_ms": 1000 * recorded}


@adopts_orphans
def floor_cancel(home: Path, ignore_term: bool, grace: float) -> Metrics:
    child = subprocess.Popen(
        tree_argv(ignore_term), start_new_session=True, stdout=subprocess.DEVNULL
    )
    tree = _tree(child.pid)
    start = time.perf_counter()
    os.killpg(child.pid, signal.SIGTERM)
    try:
        wait_until(lambda: _gone(tree), grace, "tree gone after SIGTERM", step=0.005)
    except TimeoutError:
        os.killpg(child.pid, signal.SIGKILL)
    gone = _wait_gone(tree, start)
    child.wait()
    return {"gone_ms": 1000 * gone}


def run(ctx: Context) -> Section:
    grace = ctx.size(5.0, 1.0)
    section = Section("cancel", "7. Cancel latency", METHOD)
    figures = {}
    for ignore, label, repeats in (
        (False, "cooperative", ctx.size(5, 2)),
        (True, "ignores SIGTERM", ctx.size(3, 1)),
    ):
        variants: dict[str, Variant] = {
            FLOOR: partial(isolate, "cancel:floor_cancel", ignore_term=ignore, grace=grace),
            "nbrunner": partial(isolate, "cancel:nbrunner_cancel", ignore_term=ignore, grace=grace),
        }
        results = interleave(variants, repeats)
        figures[ignore] = figure_from(
            section, results, "gone_ms", f"cancel → tree gone, {label}", "ms"
        )
        figure_from(
            section, results, "recorded_ms", f"cancel → record says cancelled, {label}", "ms"
        )
    default = "the default" if grace == 5.0 else "quick mode's shortened"
    section.notes.append(f"Grace period {grace:g} s ({default} `grace_period`).")
    bound = 1000 * (grace + 2)
    stubborn = figures[True].median()
    section.targets.append(
        Target(
            "a SIGTERM-ignoring tree is gone within grace + 2 s",
            f"{stubborn:.0f} ms (grace {grace:g} s)",
            stubborn <= bound,
        )
    )
    return section
