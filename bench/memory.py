"""4. Memory: the runner process plus the home's service and keeper with 1 … 100
sleeping runs.

Each point is a fresh process with a runner (max_concurrent 100) and N `sleep 600` runs,
measured once all are running. The slope over N is the memory each active run costs; the
children (`sleep`) are not counted, only what nbrunner adds. Ray Jobs: the growth of the
head's processes (jobs' own `sleep` excluded) with N sleeping jobs.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import psutil

from . import nbrun
from .context import Context
from .harness import (
    MEMORY_KINDS,
    Figure,
    Metrics,
    Section,
    Target,
    Variant,
    adopts_orphans,
    interleave,
    isolate,
    linear_fit,
    median,
    memory_of,
)
from .peers import RayJobs, ray_processes
from .plots import line_plot

SLEEPER = ["sleep", "600"]
SETTLE_S = 1.0
RAY = "Ray Jobs"
METHOD = """\
psutil `memory_full_info()` of the runner's process, the home's service and every run's
holder (its child's parent: the home's keeper), summed, once all N runs are `running` and
1 s has passed. RSS counts shared pages (the Python binary, libc) once per process, so it
overstates a sum of processes;
PSS divides each shared page among its users and adds up to the real total; USS is what
each process alone holds. **The target is judged on PSS.** The runner's process is the
benchmark's own (it also holds the harness), which moves the intercept, not the slope.
Per-run cost = least-squares slope of the total over N, per repeat; R² says how linear.
Ray Jobs: the summed memory of all processes of the local head (jobs' own `sleep` and
`/bin/sh` excluded) with N sleeping jobs minus the same with none, fitted the same way."""


def _summed(prefix: str, memory: dict[str, float]) -> Metrics:
    return {f"{prefix}_{kind}": memory[kind] for kind in MEMORY_KINDS}


@adopts_orphans
def nbrunner_memory(home: Path, count: int) -> Metrics:
    runner = nbrun.runner(home, max(10, count))
    name = nbrun.register(runner, "sleeper", SLEEPER)
    runs = [runner.submit(name) for _ in range(count)]
    nbrun.wait_running(runs, timeout=300)
    time.sleep(SETTLE_S)
    own = memory_of([psutil.Process()])
    owners = memory_of(nbrun.owners(home, runs))
    nbrun.cancel_all(runs)
    runner.close()
    nbrun.stop_service(home)
    total = {kind: own[kind] + owners[kind] for kind in MEMORY_KINDS}
    return {
        **_summed("runner", own),
        **_summed("service", owners),
        **_summed("total", total),
    }


def _ray_memory(temp: str) -> dict[str, float]:
    def not_a_job(process: psutil.Process) -> bool:
        try:
            return process.name() not in ("sleep", "sh", "bash")
        except psutil.Error:
            return False

    return memory_of(p for p in ray_processes(temp) if not_a_job(p))


def ray_memory(home: Path, count: int, address: str, temp: str) -> Metrics:
    jobs = RayJobs(address)
    idle = _ray_memory(temp)
    ids = [jobs.submit(SLEEPER) for _ in range(count)]
    jobs.wait(ids, frozenset({"RUNNING"}), timeout=300)
    time.sleep(2 * SETTLE_S)
    busy = _ray_memory(temp)
    jobs.stop(ids)
    return _summed("total", {kind: busy[kind] - idle[kind] for kind in MEMORY_KINDS})


def run(ctx: Context) -> Section:
    counts, repeats = ctx.size([1, 10, 50, 100], [1, 4, 8, 12]), ctx.size(2, 1)
    section = Section("memory", "4. Memory per active run", METHOD)
    variants: dict[str, Variant] = {
        str(n): partial(isolate, "memory:nbrunner_memory", count=n) for n in counts
    }
    results = interleave(variants, repeats)
    points = {n: results[str(n)] for n in counts}
    ray_points = _ray_points(ctx)
    slopes = {
        kind: section.figure(f"memory per active run ({kind.upper()})", "MB/run")
        for kind in MEMORY_KINDS
    }
    fits = section.figure("linearity of runner + service + keeper (R², PSS)", "R²", True)
    for subject, by_count in (("nbrunner", points), (RAY, ray_points)):
        for r in range(min(len(v) for v in by_count.values()) if by_count else 0):
            for kind in MEMORY_KINDS:
                slope, _, r2 = _fit(by_count, r, f"total_{kind}")
                slopes[kind].add(subject, slope)
                if kind == "pss":
                    fits.add(subject, r2)
    totals = {}
    for n in counts:
        fig = section.figure(f"runner + service + keeper, {n} runs (PSS)", "MB")
        for metrics in points[n]:
            fig.add("nbrunner", metrics["total_pss"])
        totals[n] = fig.median()
    section.notes.append(
        f"N = {', '.join(map(str, counts))} runs, {repeats} interleaved repeat(s); Ray Jobs at "
        f"N = {', '.join(map(str, ray_points)) or '— (left out in quick mode)'} (one repeat)."
    )
    section.plots.append(_plot(ctx, points, ray_points))
    section.targets += _targets(slopes["pss"], fits, slopes, totals)
    return section


def _ray_points(ctx: Context) -> dict[int, list[Metrics]]:
    head = None if ctx.quick else ctx.ray()
    if head is None:
        return {}
    counts = [1, 4, 8]
    run_one = partial(isolate, "memory:ray_memory", address=head.address, temp=str(head.temp))
    return {n: [run_one(count=n)] for n in counts}


def _fit(by_count: dict[int, list[Metrics]], repeat: int, key: str) -> tuple[float, float, float]:
    xs = list(by_count)
    return linear_fit(xs, [by_count[n][repeat][key] for n in xs])


def _plot(ctx: Context, points: dict[int, list[Metrics]], ray: dict[int, list[Metrics]]) -> str:
    series = {
        f"nbrunner runner + service + keeper ({kind.upper()})": [
            (n, median([m[f"total_{kind}"] for m in runs])) for n, runs in points.items()
        ]
        for kind in MEMORY_KINDS
    }
    if ray:
        series["Ray Jobs, growth over the idle head (PSS)"] = [
            (n, runs[0]["total_pss"]) for n, runs in ray.items()
        ]
    return line_plot(
        ctx.out_dir, "memory_vs_runs.png", "Memory vs active runs", series, "active runs", "MB"
    )


def _targets(
    pss: Figure, fits: Figure, slopes: dict[str, Figure], totals: dict[int, float]
) -> list[Target]:
    slope, r2 = pss.median(), fits.median()
    why = (
        "each run is held by the home's keeper, in its one thread: a run costs its entries in "
        "the keeper's and the service's tables, its output pipe and its pidfd (RSS "
        f"{slopes['rss'].median():.3f} MB, USS {slopes['uss'].median():.3f} MB per run)."
    )
    fewest, most = min(totals), max(totals)
    flat = (
        f"from {fewest} to {most} active runs the total grows by "
        f"{totals[most] - totals[fewest]:.1f} MB in all. Python's allocator takes memory from "
        "the OS in arenas of 256 KiB and its tables grow by doubling: with so little per run, "
        "those steps are a visible part of so flat a line, and R² (how straight it is) "
        "judges the steps."
    )
    return [
        Target("memory ≤ 5 MB per active run (PSS)", f"{slope:.3f} MB/run", slope <= 5, why),
        Target("memory linear in active runs (R² ≥ 0.99)", f"R² = {r2:.4f}", r2 >= 0.99, flat),
    ]
