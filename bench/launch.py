"""1. Launch overhead: many trivial runs at concurrency 10, and submit → child-started latency.

Throughput: `count` runs of `true` and of a trivial Python child, 10 at a time. Latency: with
9 long runs active, one probe run at a time whose child prints time.time() as it starts;
latency is that stamp minus the moment just before the submit call.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from . import nbrun
from .children import read_stamps, stamp_argv
from .context import Context
from .harness import (
    CpuWindow,
    Figure,
    Metrics,
    Section,
    Target,
    Variant,
    adopts_orphans,
    cpu_seconds,
    figure_from,
    interleave,
    isolate,
    median,
    percentile,
    wait_for_descendants,
)
from .peers import ParallelFeed, RayJobs, Tsp, parallel_batch_argv, ray_processes
from .plots import bar_plot

CONCURRENCY = 10
FLOOR = "floor (asyncio)"
RAY = "Ray Jobs"
SLEEPER = ["sleep", "600"]

METHOD = """\
Each batch runs in a fresh process. *runs/s* is runs divided by the wall time from the first
submit to the last run's end. *CPU outside the child* is the CPU of the submitting process
plus every descendant (nbrunner's detached service, its keeper or forked recorders and the
`/bin/sh` launcher, the
task-spooler server, GNU parallel) over the batch — counted with `getrusage(RUSAGE_CHILDREN)`
after the measuring process adopted and reaped them as a Linux child subreaper — minus the
children's own CPU, taken as the floor's median `RUSAGE_CHILDREN` per run. For the floor it
is the asyncio process's own CPU. nbrunner's is also split by process: the client's own, and
the service's and the keeper's read just before they are stopped.
For Ray it is the client's CPU plus the growth of CPU time
of the head's processes alive at the end (processes that exited are missed: a lower bound).
*Latency*: with 9 `sleep 600` runs active, a probe child prints `time.time()` as it starts;
latency = that stamp − the time just before the submit call (nbrunner also reports
`started_at − submitted_at` from its records). Ray: no background jobs, fewer probes.
The Python child is `python -c "import time; print('T', time.time())"` (`python -c pass`
plus one print)."""


def _result(window: CpuWindow, count: int, done_wall: float) -> Metrics:
    return {
        "runs_per_s": count / done_wall,
        "cpu_ms": 1000 * window.total_cpu / count,
        "self_ms": 1000 * window.self_cpu / count,
        "children_ms": 1000 * window.children_cpu / count,
    }


def _latency(stamps: Sequence[float]) -> Metrics:
    millis = [1000 * s for s in stamps]
    return {"p50_ms": median(millis), "p99_ms": percentile(millis, 99)}


# -- throughput, one batch per isolated process ---------------------------------------------------
def floor_batch(home: Path, argv: list[str], count: int) -> Metrics:
    async def batch() -> None:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with gate:
                proc = await asyncio.create_subprocess_exec(*argv)
                await proc.wait()

        await asyncio.gather(*(one() for _ in range(count)))

    with CpuWindow() as window:
        asyncio.run(batch())
    return _result(window, count, window.wall)


@adopts_orphans
def nbrunner_batch(home: Path, argv: list[str], count: int, recorder: str = "") -> Metrics:
    runner = nbrun.runner(home, CONCURRENCY, recorder)
    name = nbrun.register(runner, "child", argv)
    with CpuWindow() as window:
        for _ in range(count):
            runner.submit(name)
        nbrun.wait_done(runner, timeout=300)
        done = time.perf_counter() - window.wall0
        helpers = nbrun.helpers_cpu(home)  # both were started inside the window
        runner.close()
        nbrun.stop_service(home)
        wait_for_descendants()
    result = _result(window, count, done)
    return result | {f"{name}_ms": 1000 * cpu / count for name, cpu in helpers.items()}


@adopts_orphans
def tsp_batch(home: Path, argv: list[str], count: int, binary: str) -> Metrics:
    with CpuWindow() as window:
        queue = Tsp(binary, CONCURRENCY)
        for _ in range(count):
            queue.add(argv)
        queue.wait_all()
        done = time.perf_counter() - window.wall0
        queue.close()
        wait_for_descendants()
    return _result(window, count, done)


def parallel_batch(home: Path, argv: list[str], count: int, binary: str) -> Metrics:
    command = parallel_batch_argv(binary, CONCURRENCY, argv, count)
    with CpuWindow() as window:
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return _result(window, count, window.wall)


def ray_batch(home: Path, argv: list[str], count: int, address: str, temp: str) -> Metrics:
    jobs = RayJobs(address)
    before = {p.pid: cpu_seconds([p]) for p in ray_processes(temp)}
    with CpuWindow() as window:
        ids = [jobs.submit(argv) for _ in range(count)]
        jobs.wait(ids)
    after = {p.pid: cpu_seconds([p]) for p in ray_processes(temp)}
    head = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    result = _result(window, count, window.wall)
    result["cpu_ms"] += 1000 * head / count
    return result


# -- latency, probes one at a time with 9 runs active ---------------------------------------------
def floor_latency(home: Path, probes: int) -> Metrics:
    async def measure() -> list[float]:
        sleepers = [await asyncio.create_subprocess_exec(*SLEEPER) for _ in range(9)]
        gaps: list[float] = []
        for _ in range(probes):
            before = time.time()
            proc = await asyncio.create_subprocess_exec(
                *stamp_argv(), stdout=asyncio.subprocess.PIPE
            )
            out, _ = await proc.communicate()
            gaps.append(read_stamps(out.decode())[0] - before)
        for sleeper in sleepers:
            sleeper.kill()
            await sleeper.wait()
        return gaps

    return _latency(asyncio.run(measure()))


@adopts_orphans
def nbrunner_latency(home: Path, probes: int, recorder: str = "") -> Metrics:
    runner = nbrun.runner(home, CONCURRENCY, recorder)
    sleeper = nbrun.register(runner, "sleeper", SLEEPER)
    stamp = nbrun.register(runner, "stamp", stamp_argv())
    background = [runner.submit(sleeper) for _ in range(CONCURRENCY - 1)]
    nbrun.wait_running(background)
    gaps, recorded = [], []
    for _ in range(probes):
        before = time.time()
        run = runner.submit(stamp)
        record = run.wait(60)
        gaps.append(read_stamps(nbrun.log_text(run))[0] - before)
        recorded.append((record.started_at or 0) - record.submitted_at)
    nbrun.cancel_all(background)
    runner.close()
    nbrun.stop_service(home)
    result = _latency(gaps)
    result["record_p50_ms"] = 1000 * median(recorded)
    return result


@adopts_orphans
def tsp_latency(home: Path, probes: int, binary: str) -> Metrics:
    queue = Tsp(binary, CONCURRENCY)
    background = [queue.add(SLEEPER) for _ in range(CONCURRENCY - 1)]
    gaps = []
    for _ in range(probes):
        before = time.time()
        job = queue.add(stamp_argv())
        queue.call("-w", str(job))
        gaps.append(read_stamps(queue.output(job))[0] - before)
    for job in background:
        queue.call("-k", str(job))
    queue.close()
    return _latency(gaps)


def parallel_latency(home: Path, probes: int, binary: str) -> Metrics:
    feed = ParallelFeed(binary, CONCURRENCY)
    for _ in range(CONCURRENCY - 1):
        feed.add(SLEEPER)
    for _ in range(2):  # parallel reads a slot's worth of lines ahead before it starts any
        feed.add(["true"])
    time.sleep(0.5)
    gaps = []
    for _ in range(probes):
        before = time.time()
        feed.add(stamp_argv())
        gaps.append(read_stamps(feed.read_line())[0] - before)
    feed.close()
    return _latency(gaps)


def ray_latency(home: Path, probes: int, address: str, temp: str) -> Metrics:
    jobs = RayJobs(address)
    gaps = []
    for _ in range(probes):
        before = time.time()
        job = jobs.submit(stamp_argv())
        jobs.wait([job])
        gaps.append(read_stamps(jobs.logs(job))[0] - before)
    return _latency(gaps)


# -- the section ----------------------------------------------------------------------------------
def _variants(ctx: Context, kind: str, ray_count: int, **kwargs: object) -> dict[str, Variant]:
    """floor, nbrunner and each peer found, as isolated calls of `<variant>_<kind>`."""
    variants: dict[str, Variant] = {
        FLOOR: partial(isolate, f"launch:floor_{kind}", **kwargs),
        "nbrunner": partial(isolate, f"launch:nbrunner_{kind}", **kwargs),
        FORKED: partial(isolate, f"launch:nbrunner_{kind}", recorder="fork", **kwargs),
    }
    for peer, label in (("tsp", TSP), ("parallel", "parallel -j10")):
        if ctx.has(peer):
            variants[label] = partial(
                isolate, f"launch:{peer}_{kind}", binary=ctx.binary(peer), **kwargs
            )
    head = ctx.ray() if ray_count else None
    if head is not None:
        smaller = {k: (ray_count if k in ("count", "probes") else v) for k, v in kwargs.items()}
        variants[RAY] = partial(
            isolate, f"launch:ray_{kind}", address=head.address, temp=str(head.temp), **smaller
        )
    return variants


def run(ctx: Context) -> Section:
    count, repeats = ctx.size(300, 30), ctx.size(3, 1)
    section = Section("launch", "1. Launch overhead", METHOD)
    ray_jobs = ctx.size(6, 2)
    rates: dict[str, Figure] = {}
    cpu: dict[str, Figure] = {}
    python_ms = 0.0  # the Python child's own CPU per run
    for child, argv in (("true", ["true"]), ("python", stamp_argv())):
        ray_count = ray_jobs if child == "python" else 0  # Ray's cost does not depend on it
        results = interleave(_variants(ctx, "batch", ray_count, argv=argv, count=count), repeats)
        rates[child] = figure_from(
            section, results, "runs_per_s", f"runs/s, `{child}`", "runs/s", True
        )
        cpu[child] = _cpu_outside(section, results, child)
        if child == "python":
            python_ms = median([m["children_ms"] for m in results[FLOOR]])
        section.notes.append(_cpu_by_process(results["nbrunner"], child))
    probes = ctx.size(20, 5)
    latency = interleave(_variants(ctx, "latency", ctx.size(3, 0), probes=probes), repeats)
    p50 = figure_from(section, latency, "p50_ms", "submit → child started, p50", "ms")
    p99 = figure_from(section, latency, "p99_ms", "submit → child started, p99", "ms")
    figure_from(section, latency, "record_p50_ms", "started_at − submitted_at, p50", "ms")
    section.notes.append(
        f"{count} runs per batch, {repeats} interleaved repeat(s); {probes} latency probes per "
        f"repeat. Ray Jobs: {ray_jobs} jobs per batch of the Python child only (its cost per "
        "job does not depend on the child)"
        + (", no latency probes in quick mode." if ctx.quick else ", 3 latency probes.")
    )
    section.targets += [
        _floor_target(rates, cpu["python"], python_ms),
        _tsp_target(rates),
        _cpu_target(cpu),
        _ray_target(rates),
        _latency_target(p50, p99),
    ]
    section.plots.append(
        bar_plot(ctx.out_dir, "launch_throughput.png", "Launch throughput", list(rates.values()))
    )
    return section


def _cpu_outside(section: Section, results: dict[str, list[Metrics]], child: str) -> Figure:
    child_cpu = median([m["children_ms"] for m in results[FLOOR]])
    fig = section.figure(f"CPU outside the child, `{child}`", "ms/run")
    for variant, runs in results.items():
        for metrics in runs:
            own = metrics["self_ms"] if variant == FLOOR else metrics["cpu_ms"] - child_cpu
            fig.add(variant, own)
    return fig


def _cpu_by_process(runs: list[Metrics], child: str) -> str:
    """Where nbrunner's CPU outside the child goes, per process (medians)."""
    parts = {
        "the submitting client": "self_ms",
        "the service": "service_ms",
        "the keeper (its children excluded)": "keeper_ms",
    }
    shares = ", ".join(f"{name} {median([m[k] for m in runs]):.2f}" for name, k in parts.items())
    return f"nbrunner's CPU per run, `{child}`, by process (ms, starts included): {shares}."


TSP = "tsp -S 10"
FORKED = "nbrunner, a recorder forked per run (NBRUNNER_RECORDER=fork)"
CPU_PER_RUN = (
    "each run pays the client's submit; the service's share of a claim, the spec it hands "
    "the keeper (a file; one datagram wakes the keeper for all the runs a pass hands over) "
    "and its share of the store transactions that record it running and ended (the ends a "
    "pass finds share one); the keeper's share of its one thread's loop (the child's start "
    "through subprocess, a pidfd and its output pipe in the select(), the spec renamed to "
    "be the run's journal and two lines appended to it, the run's log file, one wake-up "
    "datagram per step of the loop for all the runs it moved, and on kernels without /proc "
    "children lists a read of every process's /proc stat file at each run's end); and the "
    "start of the service's and the keeper's interpreters, spread over the batch. The notes "
    "split it by process. task-spooler's server is C and keeps its queue in memory; it "
    "makes one file per job, its output, where nbrunner makes two (the spec, the log)."
)


def _floor_target(rates: dict[str, Figure], outside: Figure, child_ms: float) -> Target:
    """Ten Python children at once keep every core busy, so runs/s follow the CPU each run
    costs: the why says how much CPU outside the child 0.9× the floor leaves."""
    ratio = rates["python"].ratio(FLOOR)
    floor_ms = child_ms + outside.median(FLOOR)
    budget = floor_ms / 0.9 - child_ms
    tsp = f" (task-spooler {outside.median(TSP):.1f} ms)" if TSP in outside.samples else ""
    cores = os.cpu_count() or 1
    budget_line = (
        f"{CONCURRENCY} Python children on {cores} cores keep every core busy, so runs/s "
        f"follow the CPU a run costs. The floor's run costs {floor_ms:.1f} ms ({child_ms:.1f} "
        f"ms the child, {outside.median(FLOOR):.2f} ms the asyncio loop); 0.9× the floor "
        f"leaves {budget:.1f} ms per run outside the child, and nbrunner spends "
        f"{outside.median():.1f} ms{tsp}. "
        if cores < CONCURRENCY
        else ""
    )
    why = (
        f"{budget_line}`true` is {rates['true'].ratio(FLOOR):.2f}× the floor: with a child "
        "that costs nothing, what nbrunner records per run is all there is to measure; "
        + CPU_PER_RUN
    )
    return Target(
        "launch, Python child ≥ 0.9× the asyncio floor", f"{ratio:.2f}×", ratio >= 0.9, why
    )


def _tsp_target(rates: dict[str, Figure]) -> Target:
    name = "launch vs task-spooler: Python child ≥ 1.0×, `true` ≥ 0.5×"
    if TSP not in rates["python"].samples:
        return Target(name, "tsp not found", None)
    ratios = {child: fig.ratio(TSP) for child, fig in rates.items()}
    measured = ", ".join(f"`{child}` {ratio:.2f}×" for child, ratio in ratios.items())
    met = ratios["python"] >= 1.0 and ratios["true"] >= 0.5
    return Target(name, measured, met, CPU_PER_RUN)


def _cpu_target(cpu: dict[str, Figure]) -> Target:
    overhead = cpu["true"].median()
    why = f"{CPU_PER_RUN} The floor pays {cpu['true'].median(FLOOR):.1f} ms and records nothing."
    return Target("CPU outside the child ≤ 3 ms per run", f"{overhead:.1f} ms", overhead <= 3, why)


def _ray_target(rates: dict[str, Figure]) -> Target:
    fig = rates["python"]
    if RAY not in fig.samples:
        return Target("launch ≥ 10× Ray Jobs' runs/s", "Ray not measured", None)
    ratio = fig.ratio(RAY)
    return Target("launch ≥ 10× Ray Jobs' runs/s", f"{ratio:.0f}× (`python`)", ratio >= 10)


def _latency_target(p50: Figure, p99: Figure) -> Target:
    low, high = p50.median(), p99.median()
    why = (
        "submit (one transaction) → a datagram wakes the service → one claim transaction → "
        "the spec file and a datagram to the keeper → its loop starts the child → "
        "the child's own interpreter "
        f"start, which the floor pays too ({p50.median(FLOOR):.0f} ms p50 there)."
    )
    return Target(
        "submit → child started: p50 ≤ 15 ms, p99 ≤ 30 ms (9 runs active)",
        f"p50 {low:.0f} ms, p99 {high:.0f} ms",
        low <= 15 and high <= 30,
        why,
    )
