"""The shared harness: interleaved repetition, isolated measurement processes, statistics.

Every measured variant (nbrunner, a floor, a peer) runs in a fresh Python process of its own
(`python -m bench.isolate`), with a temporary NBRUNNER_HOME. On Linux that process makes
itself a *child subreaper*, so detached descendants (nbrunner's service and recorders, the
task-spooler server) are re-parented to it instead of to init; once they are reaped, their
CPU time shows up in `getrusage(RUSAGE_CHILDREN)`. That gives one uniform CPU method for
every variant: CPU of the measuring process plus CPU of every descendant that ended inside the
window.

Variants run interleaved, A B C A B C ..., so that drift of a shared machine falls on all of
them alike; figures are reported as the median and the min–max spread over the repeats.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE_ENV = "NBRUNNER_BENCH_CACHE"

Metrics = dict[str, Any]
Variant = Callable[[], Metrics]


# -- statistics -----------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); exact for the small samples used here."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares slope, intercept and R² of ys against xs."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx else math.nan
    intercept = mean_y - slope * mean_x
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    return slope, intercept, (1 - ss_res / ss_tot) if ss_tot else math.nan


# -- the report model -----------------------------------------------------------------------------
@dataclass
class Figure:
    """One measured quantity: its samples (one per repeat) for each variant."""

    label: str
    unit: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    higher_is_better: bool = False
    subject: str = "nbrunner"

    def add(self, variant: str, value: float | None) -> None:
        if value is not None and not math.isnan(value):
            self.samples.setdefault(variant, []).append(float(value))

    def median(self, variant: str | None = None) -> float:
        return median(self.samples.get(variant or self.subject, []))

    def spread(self, variant: str) -> tuple[float, float]:
        values = self.samples.get(variant, [])
        return (min(values), max(values)) if values else (math.nan, math.nan)

    def ratio(self, variant: str) -> float:
        """The subject's median over this variant's median."""
        other = self.median(variant)
        return self.median() / other if other else math.nan


@dataclass
class Target:
    """A published target, whether this run met it, and why not when it did not."""

    text: str
    measured: str
    met: bool | None
    why: str = ""


@dataclass
class Section:
    name: str
    title: str
    method: str
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    measured_at: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Section:
        """The inverse of `dataclasses.asdict` (results.json)."""
        figures = [Figure(**fig) for fig in data.pop("figures")]
        targets = [Target(**target) for target in data.pop("targets")]
        return cls(**data, figures=figures, targets=targets)

    def figure(self, label: str, unit: str, higher_is_better: bool = False) -> Figure:
        fig = Figure(label, unit, higher_is_better=higher_is_better)
        self.figures.append(fig)
        return fig


def figure_from(
    section: Section,
    results: Mapping[str, Sequence[Metrics]],
    key: str,
    label: str,
    unit: str,
    higher_is_better: bool = False,
) -> Figure:
    """A figure of `key` taken from each variant's list of per-repeat metrics."""
    fig = section.figure(label, unit, higher_is_better)
    for variant, runs in results.items():
        for metrics in runs:
            fig.add(variant, metrics.get(key))
    return fig


# -- interleaving ---------------------------------------------------------------------------------
def interleave(variants: Mapping[str, Variant], repeats: int) -> dict[str, list[Metrics]]:
    """Run every variant once per round, in the same order each round (A B C A B C ...)."""
    results: dict[str, list[Metrics]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, variant in variants.items():
            results[name].append(variant())
    return results


# -- isolated measurement processes ---------------------------------------------------------------
def isolate(target: str, timeout: float = 600, **kwargs: Any) -> Metrics:
    """Run `bench.<module>:<function>(home, **kwargs)` in a fresh process; its metrics dict.

    The process gets a temporary NBRUNNER_HOME (also passed as `home`), removed afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="nbb-") as tmp:
        home, out = Path(tmp) / "home", Path(tmp) / "result.json"
        home.mkdir()
        # a home's service outlives its last run by this long: not a minute per variant
        env = {**os.environ, "NBRUNNER_HOME": str(home), "NBRUNNER_SERVICE_IDLE_S": "3"}
        env.pop("NBRUNNER_MODULES", None)
        argv = [
            sys.executable,
            "-m",
            "bench.isolate",
            target,
            json.dumps(kwargs),
            str(home),
            str(out),
        ]
        try:
            proc = subprocess.run(
                argv, cwd=REPO_ROOT, env=env, timeout=timeout, capture_output=True, text=True
            )
        finally:
            stop_services(Path(tmp))
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            raise RuntimeError(f"{target} failed (exit {proc.returncode}):\n" + "\n".join(tail))
        return dict(json.loads(out.read_text()))


def compile_nbrunner() -> None:
    """Leave nbrunner's bytecode compiled, as `pip install` does: with
    PYTHONDONTWRITEBYTECODE set (or a checkout never imported), every service, keeper and
    client would compile its modules again, and each start would cost twice what it costs a
    user."""
    import compileall

    import nbrunner

    compileall.compile_dir(Path(nbrunner.__file__).parent, quiet=2)


def stop_services(folder: Path) -> None:
    """Stop the service of every home under `folder` before it is removed: a detached
    service outlives the measurement that started it, and must not outlive its home."""
    from nbrunner import contact

    for store in folder.rglob("nbrunner.db"):
        contact.stop(store.parent)


def cache_dir() -> Path:
    """A directory shared by all isolated processes of one bench session (seeded stores)."""
    path = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "nbrunner-bench-cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- CPU and memory accounting --------------------------------------------------------------------
def cpu_self_children() -> tuple[float, float]:
    """CPU seconds (user + system) of this process, and of its reaped descendants."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


class CpuWindow:
    """CPU and wall time spent between enter and exit, by this process and its descendants.

    Descendants count once they have ended and been reaped: call `wait_for_descendants()`
    before leaving the window.
    """

    def __enter__(self) -> CpuWindow:
        self.wall0 = time.perf_counter()
        self.self0, self.kids0 = cpu_self_children()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        me, kids = cpu_self_children()
        self.self_cpu, self.children_cpu = me - self.self0, kids - self.kids0

    @property
    def total_cpu(self) -> float:
        return self.self_cpu + self.children_cpu


def wait_for_descendants(timeout: float = 60.0) -> None:
    """Wait until this process has no live children (adopted orphans included)."""
    me = psutil.Process()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [p for p in me.children() if _alive(p)]
        if not kids:
            time.sleep(0.05)  # let the reaper collect the last zombies
            return
        time.sleep(0.02)
    raise TimeoutError(f"descendants still alive after {timeout} s")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """Own CPU (user + system, children excluded) of the processes still readable."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


MEMORY_KINDS = ("rss", "pss", "uss")


def memory_of(processes: Iterable[psutil.Process]) -> dict[str, float]:
    """Summed RSS, PSS and USS in MB of the processes still readable."""
    totals = dict.fromkeys(MEMORY_KINDS, 0.0)
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        for kind in MEMORY_KINDS:
            totals[kind] += getattr(info, kind, 0) / 2**20
    return totals


def processes(pids: Iterable[int | None]) -> list[psutil.Process]:
    """Each living process once (runs held by one process name it once each)."""
    found: list[psutil.Process] = []
    for pid in dict.fromkeys(pids):
        if pid:
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(pid))
    return found


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not reached after {timeout} s")
        time.sleep(step)


def adopts_orphans(fn: Callable[..., Metrics]) -> Callable[..., Metrics]:
    """Mark an isolated function whose detached descendants must be reaped by its process."""
    fn.adopts_orphans = True  # type: ignore[attr-defined]
    return fn
