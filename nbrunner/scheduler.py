"""Claiming queued runs under the limits, and launching a supervisor for each claimed run.

Anyone may call `launch_ready`: a runner's tick, a submitting CLI, a worker, or a supervisor
whose run just ended. The claim is one store transaction that re-reads the limits, so however
many processes call it at once, the limits hold.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from . import platform
from .config import GROUP_PREFIX
from .models import RunRecord
from .states import RunStatus
from .store import Store, Transaction

# How many queued runs one claim looks at: enough to skip past runs that cannot start yet
# (a full group) without scanning a huge queue on every claim.
CANDIDATE_WINDOW = 500


def admit(
    queued: Iterable[RunRecord], holding: list[RunRecord], cfg: dict[str, Any]
) -> list[RunRecord]:
    """Queued runs that may start now, best first. Pure: the caller holds the transaction.

    `queued` comes in priority order, then submission order. A run that cannot start (its
    group is full) is skipped rather than blocking the runs behind it.
    """
    free = int(cfg["max_concurrent"]) - len(holding)
    if cfg.get("paused") or free <= 0:
        return []
    per_group = Counter(r.group for r in holding if r.group)
    chosen: list[RunRecord] = []
    for run in queued:
        if len(chosen) >= free:
            break
        if run.group:
            limit = cfg.get(GROUP_PREFIX + run.group)
            if limit is not None and per_group[run.group] >= int(limit):
                continue
            per_group[run.group] += 1
        chosen.append(run)
    return chosen


def claim(tx: Transaction) -> list[RunRecord]:
    cfg = tx.config()
    if cfg.get("paused"):
        return []
    holding = tx.holding_slot()
    if len(holding) >= int(cfg["max_concurrent"]):
        return []
    queued = tx.select(
        "status = 'queued'", tail=f"ORDER BY priority DESC, id LIMIT {CANDIDATE_WINDOW}"
    )
    now = time.time()
    return [
        tx.transition(run.id, RunStatus.STARTING, claimed_at=now, claimed_by=os.getpid())
        for run in admit(queued, holding, cfg)
    ]


def claim_ready(store: Store) -> list[RunRecord]:
    with store.write() as tx:
        return claim(tx)


def supervisor_argv(store: Store, run_id: int) -> list[str]:
    return [sys.executable, "-m", "nbrunner.supervisor", str(store.home), str(run_id)]


def launch(store: Store, runs: Iterable[RunRecord]) -> None:
    """Start a detached supervisor for each claimed run; a run that cannot start fails."""
    for run in runs:
        try:
            platform.spawn_detached(
                supervisor_argv(store, run.id), str(store.logs_dir / f"{run.id}.supervisor.err")
            )
        except OSError as exc:
            store.transition(
                run.id,
                RunStatus.FAILED,
                ended_at=time.time(),
                reason=f"could not start the run's supervisor: {exc}",
            )


def launch_ready(store: Store) -> list[RunRecord]:
    runs = claim_ready(store)
    launch(store, runs)
    return runs
