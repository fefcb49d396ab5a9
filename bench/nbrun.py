"""Driving nbrunner the way a user does, shared by every benchmark."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from nbrunner import Run, Runner, RunStatus, contact
from nbrunner.store import DB_NAME, Store

from .harness import cache_dir, cpu_seconds, processes, wait_until


def runner(home: Path, max_concurrent: int = 10, recorder: str = "", **settings: Any) -> Runner:
    """A started runner on `home` with the given settings (config keys); `recorder`: how
    its service holds runs (NBRUNNER_RECORDER, e.g. "keeper"), else the default."""
    from nbrunner.recorder import RECORDER_ENV

    if recorder:
        os.environ[RECORDER_ENV] = recorder  # inherited by the service it starts
    started = Runner(home)
    started.config("max_concurrent", max_concurrent)
    for key, value in settings.items():
        started.config(key, value)
    return started


def register(target: Runner, name: str, argv: Sequence[str]) -> str:
    target.register(name, command=list(argv))
    return name


def wait_running(runs: Sequence[Run], timeout: float = 120) -> None:
    def all_running() -> bool:
        return all(run.status is RunStatus.RUNNING for run in runs)

    wait_until(all_running, timeout, f"{len(runs)} runs running", step=0.05)


ACTIVE_STATES = "queued,starting,running,paused"


def wait_done(target: Runner, timeout: float = 600) -> None:
    """Until no run in the home is active, polling the store (does not rely on the tick).

    Raises if the runner's own tick died on the way: that is a failure to report, not to
    wait out.
    """

    def done() -> bool:
        task = target._task
        if task is not None and task.done() and not target._closed and task.exception():
            raise RuntimeError(f"the runner's tick died: {task.exception()!r}")
        return target.count(status=ACTIVE_STATES) == 0

    wait_until(done, timeout, "every run ended", step=0.05)


def cancel_all(runs: Sequence[Run], timeout: float = 60) -> None:
    for run in runs:
        if not run.record.is_done:
            run.cancel()
    for run in runs:
        run.wait(timeout)


def owners(home: Path, runs: Sequence[Run]) -> list[psutil.Process]:
    """What nbrunner runs beside the children: the home's service and each run's recorder
    (its child's parent)."""
    found = contact.info(home)
    pids: list[int | None] = [found["pid"] if found else None]
    for run in runs:
        with contextlib.suppress(psutil.Error, TypeError):
            pids.append(psutil.Process(run.record.pid).ppid())
    return processes(pids)


def helpers_cpu(home: Path) -> dict[str, float]:
    """CPU seconds (own, children excluded) the home's living service and keeper have used."""
    from nbrunner.launching import living_keeper

    found = contact.info(home)
    helpers = {"service": found["pid"] if found else None, "keeper": living_keeper(str(home))}
    return {name: cpu_seconds(processes([pid])) for name, pid in helpers.items()}


def stop_service(home: Path) -> None:
    """End the home's service, and its keeper if it has one (it would leave after its idle
    time, while the measurement waits), so that the CPU they spent is counted once they are
    reaped. Called once no run is active."""
    from nbrunner.launching import living_keeper

    contact.stop(home)
    keeper = living_keeper(str(home))
    if keeper:
        with contextlib.suppress(OSError):
            os.kill(keeper, signal.SIGTERM)


def log_text(run: Run) -> str:
    return Path(run.log_path).read_text(errors="replace")


SEED_BATCH = 10_000


def seeded_home(home: Path, runs: int) -> Path:
    """`home` holding `runs` finished runs, copied from a template seeded once per session."""
    home.mkdir(parents=True, exist_ok=True)
    if runs == 0:
        return home
    template = cache_dir() / f"seeded-{runs}"
    if not (template / DB_NAME).exists():
        _seed(template, runs)
    shutil.copyfile(template / DB_NAME, home / DB_NAME)
    return home


def _seed(home: Path, runs: int) -> None:
    """Bulk-insert finished runs through the store's own insert (no processes started)."""
    store = Store(home)
    start = time.time() - 30 * 86400
    for first in range(0, runs, SEED_BATCH):
        rows = [_finished_row(i, start + i) for i in range(first, min(runs, first + SEED_BATCH))]
        store.insert_runs(rows)
    store.close()


def _finished_row(i: int, submitted: float) -> dict[str, Any]:
    module = ("train", "prep", "eval")[i % 3]
    status, code, reason = RunStatus.SUCCEEDED, 0, None
    if i % 20 == 0:
        status, code, reason = RunStatus.FAILED, 1, "exited with code 1"
    elif i % 20 == 1:
        status, code, reason = RunStatus.CANCELLED, -15, "cancelled by request"
    return {
        "module": module,
        "params": {"epochs": i % 7, "seed": i},
        "argv": [module, "--epochs", str(i % 7), "--seed", str(i)],
        "env": {},
        "status": status,
        "exit_code": code,
        "reason": reason,
        "submitted_at": submitted,
        "claimed_at": submitted + 0.5,
        "started_at": submitted + 0.6,
        "ended_at": submitted + 30.0,
    }


def dashboard_available() -> bool:
    try:
        from nbrunner.ui import Dashboard  # noqa: F401
    except ImportError:
        return False
    return True


def dashboard(target: Runner, **options: Any) -> Any:
    """`nbrunner.ui.Dashboard(runner, **options)`: the controller, not its widget."""
    from nbrunner.ui import Dashboard

    return Dashboard(target, **options)
