"""Repairing runs whose owner died: claims never launched, supervisors gone.

- A claimed run whose claimer died before its supervisor came up never ran: it goes back
  to the queue (or fails, if its supervisor could not start and said why).
- A run whose supervisor died without recording the outcome ends `lost`, and what is left of
  its process tree is stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from . import platform
from .models import RunRecord
from .states import RunStatus
from .store import Store, Transaction

# A claim is given this long to bring up its supervisor once the claimer is gone, and this
# long in any case.
CLAIMER_GONE_GRACE_S = 10.0
START_TIMEOUT_S = 30.0


def process_alive(
    pid: int | None, born_after: float | None = None, born_before: float | None = None
) -> bool:
    """Whether pid is a live process born in the given window: a pid the OS handed to a
    new process since is not the one recorded."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        born = process.create_time()
    except psutil.Error:
        return False
    return (born_after is None or born >= born_after - 1.0) and (
        born_before is None or born <= born_before + 1.0
    )


def _stranded(run: RunRecord, now: float) -> bool:
    """Claimed, but its supervisor never came up and no longer will."""
    if run.status is not RunStatus.STARTING or run.supervisor_pid is not None:
        return False
    waited = now - (run.claimed_at or now)
    claimer_gone = not process_alive(run.claimed_by)
    return waited > START_TIMEOUT_S or (claimer_gone and waited > CLAIMER_GONE_GRACE_S)


def _supervisor_gone(run: RunRecord) -> bool:
    # A supervisor may serve several runs in turn, so it can be older than this claim; it
    # cannot be younger than its taking over.
    return run.supervisor_pid is not None and not process_alive(
        run.supervisor_pid, born_before=run.taken_at
    )


def _supervisor_error(run: RunRecord) -> str | None:
    err = Path(run.log_path).with_suffix(".supervisor.err")
    try:
        lines = err.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1] if lines else None


def _repair(tx: Transaction, run: RunRecord, now: float) -> RunRecord | None:
    if not run.status.holds_slot:
        return None  # it ended, or went back to the queue, since it was suspected
    if _stranded(run, now):
        error = _supervisor_error(run)
        if error:
            return tx.transition(
                run.id,
                RunStatus.FAILED,
                ended_at=now,
                reason=f"its supervisor could not start: {error}",
            )
        return tx.transition(run.id, RunStatus.QUEUED, claimed_at=None, claimed_by=None)
    if _supervisor_gone(run):
        return tx.transition(
            run.id,
            RunStatus.LOST,
            ended_at=now,
            reason=f"its supervisor (pid {run.supervisor_pid}) ended without recording how "
            f"the run ended; {_leftovers(run)}",
        )
    return None


def _leftovers(run: RunRecord) -> str:
    if run.backend == "ray":
        return f"its Ray job may still be running (ray job stop {run.backend_ref})"
    return "the run's remaining processes were stopped"


def repair(store: Store) -> list[RunRecord]:
    """Fix every slot-holding run whose owner is gone; returns the runs changed."""
    now = time.time()
    suspects = [r for r in store.holding_slot() if _stranded(r, now) or _supervisor_gone(r)]
    repaired: list[RunRecord] = []
    for suspect in suspects:
        with store.write() as tx:
            fixed = _repair(tx, tx.get(suspect.id), now)  # re-read: it may have moved on
        if fixed is None:
            continue
        repaired.append(fixed)
        if fixed.status is RunStatus.LOST and process_alive(fixed.pid, born_after=fixed.claimed_at):
            platform.signal_group(fixed.pid, graceful=False)  # type: ignore[arg-type]
    return repaired
