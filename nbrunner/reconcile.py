"""Finding runs whose supervisor died without recording an outcome, and ending them `lost`."""

from __future__ import annotations

import time

import psutil

from . import platform
from .models import RunRecord
from .states import RunStatus
from .store import Store

# A claimed run whose supervisor has not reported its pid after this long never started.
START_TIMEOUT_S = 30.0


def process_alive(pid: int | None, not_before: float | None) -> bool:
    """Whether pid is a live process created no earlier than not_before (pid reuse check)."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return not_before is None or process.create_time() >= not_before - 1.0
    except psutil.Error:
        return False


def _why_lost(run: RunRecord, now: float) -> str | None:
    if run.backend != "local":
        return None
    if run.supervisor_pid is None:
        if run.status is RunStatus.STARTING and now - (run.claimed_at or now) > START_TIMEOUT_S:
            return f"its supervisor never started (see {run.log_path[:-4]}.supervisor.err)"
        return None
    if process_alive(run.supervisor_pid, run.claimed_at):
        return None
    return (
        f"its supervisor (pid {run.supervisor_pid}) ended without recording how the run "
        "ended; the run's remaining processes were stopped"
    )


def mark_lost(store: Store) -> list[RunRecord]:
    """End as `lost` every slot-holding run whose supervisor is gone; returns those runs."""
    now = time.time()
    suspects = {run.id: why for run in store.holding_slot() if (why := _why_lost(run, now))}
    lost: list[RunRecord] = []
    for run_id, why in suspects.items():
        with store.write() as tx:
            run = tx.get(run_id)  # re-read: it may have ended properly meanwhile
            if not run.status.holds_slot or _why_lost(run, now) is None:
                continue
            lost.append(tx.transition(run_id, RunStatus.LOST, ended_at=now, reason=why))
        if process_alive(run.pid, run.claimed_at):
            platform.signal_group(run.pid, graceful=False)  # type: ignore[arg-type]
    return lost
