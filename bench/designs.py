"""13. Process designs: what holding a run costs, measured before choosing how runs are held.

Three ways to hold a run (start its child, capture its output, learn its exit), each alone,
with no store and no scheduler around it, so the figures are the holders' own:

- *forked recorder* (POSIX's before the keeper; `NBRUNNER_RECORDER=fork`): the warm service
  forks a recorder per run (nbrunner.launching.fork_recorder, the real code);
- *spawned recorder* (Windows' today; `NBRUNNER_RECORDER=spawn`): an interpreter per run
  (nbrunner.launching.spawn_recorder, the real code);
- *one keeper* (prototyped here before nbrunner.keeper was built): one process per home
  starts every child (`subprocess`, which uses vfork), reads every output pipe with one
  selector into the run's log and learns exits from pidfds (`os.wait4` for the code and
  the CPU). Windows would wait on process handles on the Proactor's completion port instead;
- *one keeper, output straight to the log*: the same, but the child writes its log file
  itself (pueue's and task-spooler's way): nothing to read, only exits to learn.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from .context import Context
from .harness import (
    Metrics,
    Section,
    Target,
    cpu_self_children,
    figure_from,
    isolate,
    wait_until,
)

SLEEPER = ["sleep", "3600"]
CONCURRENCY = 10
FORKED = "forked recorder (NBRUNNER_RECORDER=fork)"
SPAWNED = "spawned recorder (today, Windows)"
KEEPER = "one keeper"
DIRECT = "one keeper, output straight to the log"
CPU_TARGET_MS = 3.0
MEMORY_TARGET_MB = 100.0
# What a holder's death costs (kill -9 of it, nothing else), from how each one works.
BLAST_RADIUS = {
    FORKED: "one run: its exit code, and its output reader (the child dies of SIGPIPE at its "
    "next write); every other run goes on",
    SPAWNED: "one run, as the forked recorder",
    KEEPER: "every active run of the home: their output readers and exit codes; the "
    "service's death costs nothing (the keeper, not the service, is the runs' parent)",
    DIRECT: "the exit codes of every active run of the home; the runs go on and their logs "
    "stay whole (pueue and task-spooler hold runs this way), but no log cap can hold while "
    "a run writes, and a file that another process appends to cannot be cut without losing "
    "lines",
}
METHOD = """\
*CPU per run outside the child*: 300 runs of `true`, 10 at a time, held by each design
alone; the CPU of the measuring process and every descendant (getrusage SELF + CHILDREN)
minus the CPU of `true` itself (the median of the same runs started with posix_spawn and
reaped with wait4). The forked recorder is forked from a process that imported the service,
as the service is. *Memory*: PSS of what holds 50 `sleep 3600` runs (the recorders; the
keeper process, which here also carries the benchmark's imports: an upper bound).
*Blast radius*: what a kill -9 of the holder costs, from how each works (not measured)."""


def _child_cpu(argv: list[str], count: int) -> float:
    """CPU seconds the child itself takes: started bare, reaped with its rusage."""
    used = []
    for _ in range(count):
        pid = os.posix_spawnp(argv[0], argv, os.environ)
        _, _, usage = os.wait4(pid, 0)
        used.append(usage.ru_utime + usage.ru_stime)
    return sorted(used)[len(used) // 2]


class Keeper:
    """The candidate: every run of a home held by one process and one selector."""

    def __init__(self, logs: Path, direct: bool = False) -> None:
        self.logs, self.direct = logs, direct
        self.selector = selectors.DefaultSelector()
        self.held = 0

    def start(self, run_id: int, argv: list[str]) -> None:
        log = os.open(self.logs / f"{run_id}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log if self.direct else subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        if child.stdout is not None:
            os.set_blocking(child.stdout.fileno(), False)
            self.selector.register(child.stdout, selectors.EVENT_READ, (self._pump, log))
        pidfd = os.pidfd_open(child.pid)
        self.selector.register(pidfd, selectors.EVENT_READ, (self._reap, (child, log)))
        self.held += 1

    def _pump(self, source: Any, log: int) -> None:
        try:
            data = os.read(source.fileno(), 65536)
        except BlockingIOError:
            return
        if data:
            os.write(log, data)
        else:
            self.selector.unregister(source)
            source.close()

    def _reap(self, pidfd: int, held: tuple[subprocess.Popen[bytes], int]) -> None:
        child, log = held
        self.selector.unregister(pidfd)
        os.close(pidfd)
        os.wait4(child.pid, 0)  # the exit code and CPU a recorder would write
        child.returncode = 0
        while child.stdout is not None and not child.stdout.closed:
            self._pump(child.stdout, log)
        os.close(log)
        self.held -= 1

    def serve_once(self) -> None:
        for key, _ in self.selector.select():
            handler, data = key.data
            handler(key.fileobj, data)


def _holders(home: Path, design: str) -> tuple[Callable[[int, list[str]], Any], Callable[[], None]]:
    """start(run_id, argv) and wait_one() of a per-run recorder design."""
    from nbrunner import service  # noqa: F401  the forking process is the service's size
    from nbrunner.launching import fork_recorder, spawn_recorder
    from nbrunner.recorder import RecorderSpec, ServiceLink

    (home / "runs").mkdir(exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    link = ServiceLink(lambda _: None, lambda _: None)
    handles = []  # a dropped Popen is reaped by the next one, behind os.wait's back

    def start(run_id: int, argv: list[str]) -> Any:
        spec = RecorderSpec(
            home=str(home), run_id=run_id, argv=argv, cwd=None, env=dict(os.environ),
            log_path=str(home / "logs" / f"{run_id}.log"), max_log_size=0,
            keep_leftovers=False, cores=[],
        )  # fmt: skip
        handles.append(fork_recorder(spec, link) if design == FORKED else spawn_recorder(spec))

    def wait_one() -> None:
        os.wait()

    return start, wait_one


def launch_cpu(home: Path, design: str, count: int) -> Metrics:
    """CPU per run outside the child: `count` runs of `true`, CONCURRENCY at a time."""
    argv = ["true"]
    child = _child_cpu(argv, count)
    keeper = Keeper(home, design == DIRECT) if design in (KEEPER, DIRECT) else None
    if keeper is None:
        start, wait_one = _holders(home, design)
    cpu0, wall0 = sum(cpu_self_children()), time.perf_counter()
    started = ended = 0
    while ended < count:
        while started < count and started - ended < CONCURRENCY:
            (keeper.start if keeper else start)(started, argv)
            started += 1
        if keeper is not None:
            keeper.serve_once()
            ended = started - keeper.held
        else:
            wait_one()
            ended += 1
    wall, used = time.perf_counter() - wall0, sum(cpu_self_children()) - cpu0
    return {"cpu_ms": 1000 * (used / count - child), "runs_per_s": count / wall}


def holding_memory(home: Path, design: str, count: int) -> Metrics:
    """PSS in MB of what holds `count` sleeping runs."""
    if design in (KEEPER, DIRECT):
        keeper = Keeper(home, design == DIRECT)
        for run_id in range(count):
            keeper.start(run_id, SLEEPER)
        time.sleep(1.0)
        holders = [psutil.Process()]
    else:
        from nbrunner.recorder import RunFiles

        start, _ = _holders(home, design)
        for run_id in range(count):
            start(run_id, SLEEPER)
        held = [RunFiles.of(home, run_id) for run_id in range(count)]
        wait_until(lambda: all("child" in f.recorded() for f in held), 120, "every run held")
        holders = psutil.Process().children()  # the recorders; the sleepers are theirs
    pss = sum(p.memory_full_info().pss for p in holders) / 2**20
    for process in psutil.Process().children(recursive=True):
        process.kill()
    return {"pss_mb": pss, "processes": float(len(holders))}


def run(ctx: Context) -> Section:
    count, held = ctx.size(300, 60), ctx.size(50, 10)
    section = Section("designs", "13. Process designs: what holding a run costs", METHOD)
    designs = (FORKED, SPAWNED, KEEPER, DIRECT)
    launch = {d: [isolate("designs:launch_cpu", design=d, count=count)] for d in designs}
    memory = {d: [isolate("designs:holding_memory", design=d, count=held)] for d in designs}
    cpu = figure_from(section, launch, "cpu_ms", "CPU per run outside the child", "ms")
    rate = figure_from(section, launch, "runs_per_s", "runs/s, `true`", "runs/s", True)
    pss = figure_from(section, memory, "pss_mb", f"memory holding {held} runs (PSS)", "MB")
    for fig in (cpu, rate, pss):
        fig.subject = KEEPER
    section.notes += [f"Blast radius of a {name}: {text}." for name, text in BLAST_RADIUS.items()]
    section.targets += [
        Target(
            f"a design whose holding costs ≤ {CPU_TARGET_MS:g} ms CPU per run",
            ", ".join(f"{d}: {cpu.median(d):.2f} ms" for d in designs),
            any(cpu.median(d) <= CPU_TARGET_MS for d in designs),
        ),
        Target(
            f"a design holding {held} runs in ≤ {MEMORY_TARGET_MB * held / 50:g} MB",
            ", ".join(f"{d}: {pss.median(d):.1f} MB" for d in designs),
            any(pss.median(d) <= MEMORY_TARGET_MB * held / 50 for d in designs),
        ),
    ]
    return section
