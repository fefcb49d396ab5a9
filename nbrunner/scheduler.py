"""Claiming queued runs under the limits: which may start now, and where.

Only the home's service claims. The claim is one store transaction that re-reads the
limits; the machine's facts (memory, GPUs) are gathered before it, so the store's write
lock is never held while NVML or psutil answer.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import GROUP_PREFIX
from .models import RunRecord
from .resources import Assignment, Capacity, Ledger, Resources
from .states import RunStatus
from .store import Transaction

# How many queued runs one claim looks at: enough to skip past runs that cannot start yet
# (a full group, a busy GPU, an unfinished dependency) without scanning a huge queue.
CANDIDATE_WINDOW = 500


@dataclass
class Decision:
    start: list[tuple[RunRecord, Assignment]] = field(default_factory=list)
    doomed: list[tuple[RunRecord, str]] = field(default_factory=list)  # (run, why cancelled)
    looked_at: int = 0  # how many queued runs were considered


def _dependency_verdict(run: RunRecord, statuses: dict[int, RunStatus]) -> str | None:
    """'ready', 'wait', or why the run can never start (a dependency did not succeed)."""
    for dep in run.after:
        status = statuses.get(dep)
        if status is not None and status.is_done and status is not RunStatus.SUCCEEDED:
            return f"run {dep}, which it depends on, ended {status.value}"
    if all(statuses.get(dep) is RunStatus.SUCCEEDED for dep in run.after):
        return "ready"
    return "wait"


def admit(
    queued: Iterable[RunRecord],
    holding: list[RunRecord],
    cfg: dict[str, Any],
    capacity: Capacity,
    dependencies: dict[int, RunStatus] | None = None,
) -> Decision:
    """Which queued runs start now, and where. Pure: the caller holds the transaction.

    `queued` comes in priority order, then submission order. A run that cannot start yet
    (full group, resources in use, dependency unfinished) is skipped rather than blocking
    the runs behind it, so a CPU run never waits behind a GPU run.
    """
    decision = Decision()
    free = int(cfg["max_concurrent"]) - len(holding)
    if cfg.get("paused"):
        return decision
    ledger = Ledger(capacity)
    for run in holding:
        ledger.take(
            Resources.from_mapping(run.resources),
            Assignment(tuple(int(g) for g in run.gpus), tuple(run.cores)),
        )
    per_group = Counter(r.group for r in holding if r.group)
    for run in queued:
        verdict = _dependency_verdict(run, dependencies or {})
        if verdict not in ("ready", "wait"):
            decision.doomed.append((run, verdict))  # type: ignore[arg-type]
            continue
        if verdict == "wait" or len(decision.start) >= free:
            continue
        limit = cfg.get(GROUP_PREFIX + run.group) if run.group else None
        if limit is not None and per_group[run.group] >= int(limit):
            continue
        need = Resources.from_mapping(run.resources)
        assignment = ledger.fit(need)
        if assignment is None:
            continue
        ledger.take(need, assignment, admitted=True)
        per_group[run.group] += 1
        decision.start.append((run, assignment))
    return decision


def _decide(
    tx: Transaction, cfg: dict[str, Any], holding: list[RunRecord], window: int, capacity: Capacity
) -> Decision:
    queued = tx.select("status = 'queued'", tail=f"ORDER BY priority DESC, id LIMIT {window}")
    wanted = {dep for run in queued for dep in run.after}
    dependencies = tx.statuses(wanted) if wanted else {}
    decision = admit(queued, holding, cfg, capacity, dependencies)
    decision.looked_at = len(queued)
    return decision


def claim(tx: Transaction, capacity: Capacity) -> list[RunRecord]:
    cfg = tx.config()
    if cfg.get("paused"):
        return []
    holding = tx.holding_slot()
    free = int(cfg["max_concurrent"]) - len(holding)
    if free <= 0:
        return []
    # A few candidates per free slot usually fill it; the whole window only when they don't.
    window = min(CANDIDATE_WINDOW, 2 * free + 8)
    decision = _decide(tx, cfg, holding, window, capacity)
    if len(decision.start) < free and decision.looked_at == window < CANDIDATE_WINDOW:
        decision = _decide(tx, cfg, holding, CANDIDATE_WINDOW, capacity)
    now = time.time()
    for run, why in decision.doomed:
        tx.transition(run.id, RunStatus.CANCELLED, ended_at=now, reason=why)
    return [
        tx.transition(
            run.id,
            RunStatus.STARTING,
            claimed_at=now,
            claimed_by=os.getpid(),
            gpus=[str(g) for g in where.gpus],
            cores=list(where.cores),
        )
        for run, where in decision.start
    ]
