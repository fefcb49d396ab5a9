"""2. Submit cost as the store grows: ms per `runner.submit` at 0 … 100,000 stored runs.

One process holds one paused runner per store size (the submitted runs stay queued) and
times single submits on each size in turn, interleaved. The floor is the store's own insert
of one row: what a submit costs before validation, module lookup and the runner's wake-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from nbrunner import Runner

from . import nbrun
from .context import Context
from .harness import Metrics, Section, Target, interleave, isolate, median

MODULE = "job"
FLOOR = "floor (store insert)"
METHOD = """\
Stores are seeded with finished runs through `Store.insert_runs` in batches (no processes),
copied from a template made once per session. A runner with `paused = true` is open on each
store; each repeat times single `runner.submit("job", params={"n": i})` calls
(`time.perf_counter` around the call) on every size in turn, and reports their median. The
floor is `store.insert_runs([row])` of one comparable row on the same store."""


def _time(call: Callable[[int], object], calls: int) -> Metrics:
    times = []
    for i in range(calls):
        start = time.perf_counter()
        call(i)
        times.append(1000 * (time.perf_counter() - start))
    return {"ms": median(times)}


def _submit(runner: Runner, i: int) -> object:
    return runner.submit(MODULE, params={"n": i})


def _insert(runner: Runner, i: int) -> object:
    row = {"module": MODULE, "params": {"n": i}, "argv": ["true", "--n", str(i)], "env": {}}
    return runner.store.insert_runs([row])


def submit_costs(home: Path, sizes: list[int], calls: int, repeats: int) -> Metrics:
    runners = {}
    for size in sizes:
        runner = nbrun.runner(nbrun.seeded_home(home / str(size), size), paused=True)
        runner.register(MODULE, command=["true"], params={"n": {"type": "int", "default": 0}})
        runners[size] = runner
    variants = {}
    for size, runner in runners.items():
        variants[f"nbrunner@{size}"] = partial(_time, partial(_submit, runner), calls)
        variants[f"{FLOOR}@{size}"] = partial(_time, partial(_insert, runner), calls)
    results = interleave(variants, repeats)
    for runner in runners.values():
        runner.close()
    return {name: [m["ms"] for m in runs] for name, runs in results.items()}


def run(ctx: Context) -> Section:
    sizes = ctx.size([0, 1_000, 10_000, 100_000], [0, 1_000, 10_000])
    calls, repeats = ctx.size(100, 20), ctx.size(5, 3)
    section = Section("submit", "2. Submit cost as the store grows", METHOD)
    samples = isolate("submit:submit_costs", sizes=sizes, calls=calls, repeats=repeats)
    figures = {}
    for size in sizes:
        fig = section.figure(f"ms per submit, {size:,} runs stored", "ms")
        for variant in ("nbrunner", FLOOR):
            for value in samples[f"{variant}@{size}"]:
                fig.add(variant, value)
        figures[size] = fig
    section.notes.append(
        f"{calls} submits per size per repeat, {repeats} interleaved repeats; "
        "each figure is the median of the per-repeat medians."
    )
    largest, smallest = figures[sizes[-1]].median(), figures[sizes[0]].median()
    growth = largest / smallest if smallest else float("nan")
    section.targets.append(
        Target(
            f"submit ≤ 5 ms at {sizes[-1]:,} stored runs, flat (≤ 1.5× the empty store)",
            f"{largest:.2f} ms, {growth:.2f}× the empty store",
            largest <= 5 and growth <= 1.5,
            "see the per-size rows: the growth shows which part (submit or the store "
            "insert itself) depends on the store's size.",
        )
    )
    return section
