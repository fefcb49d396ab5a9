"""Claiming queued runs under the limits: which may start now, and where.

Only the home's service claims. The claim is one store transaction that re-reads the
limits; the machine's facts (memory, GPUs) are gathered before it, so the store's write
lock is never held while NVML or psutil answer.

The queue is read in pages, in priority order, until the free slots are filled or the queue
ends, so a run that may start is found however many blocked runs are ahead of it. A run
that cannot start blocks its *shape* (group, resources, dependencies, backend) for the rest
of the pass: every later run of that shape would be refused for the same reason, so the
next pages leave them out in SQL and a deep queue of one blocked kind costs one page.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .config import GROUP_PREFIX
from .models import RunRecord, SlotHolder
from .resources import GPU_WAIT, Assignment, Capacity, Ledger, Resources
from .states import RunStatus
from .store import Transaction, encode_column

# Queued runs read per query while looking for runs that may start: as many as there are
# free slots at first (a run's end frees one, and decoding rows is most of a claim's cost),
# twice as many each page after, up to this.
PAGE_SIZE = 32
# Blocked shapes left out in SQL; past these, blocked runs are read and skipped in Python.
MAX_EXCLUDED_SHAPES = 32

Shape = tuple[Any, Any, Any, str]  # the stored group, resources, after and backend


@dataclass
class Decision:
    start: list[tuple[RunRecord, Assignment]] = field(default_factory=list)
    doomed: list[tuple[RunRecord, str]] = field(default_factory=list)  # (run, why cancelled)
    # GPU runs' shapes looked at: why they wait for a GPU others hold, or None (they don't)
    gpu_waits: dict[Shape, str | None] = field(default_factory=dict)


def _dependency_verdict(run: RunRecord, statuses: dict[int, RunStatus]) -> str | None:
    """'ready', 'wait', or why the run can never start (a dependency did not succeed)."""
    for dep in run.after:
        status = statuses.get(dep)
        if status is not None and status.is_done and status is not RunStatus.SUCCEEDED:
            return f"run {dep}, which it depends on, ended {status.value}"
    if all(statuses.get(dep) is RunStatus.SUCCEEDED for dep in run.after):
        return "ready"
    return "wait"


def shape_of(run: RunRecord) -> Shape:
    """What decides whether a run may start, as the store keeps it."""
    return (
        run.group,
        encode_column("resources", run.resources),
        encode_column("after", run.after),
        run.backend,
    )


class Admission:
    """One pass over the queue: runs are offered in priority order, `decision` says which
    start and where. Pure: the caller holds the transaction.

    A run that cannot start yet (full group, resources in use, dependency unfinished) is
    skipped rather than blocking the runs behind it, so a CPU run never waits behind a GPU
    run. A Ray run counts against the slots and its group only: its CPUs, memory and GPUs
    are the cluster's, not this machine's.
    """

    def __init__(
        self, holding: Sequence[RunRecord | SlotHolder], cfg: dict[str, Any], capacity: Capacity
    ):
        self.cfg = cfg
        self.decision = Decision()
        self.blocked: set[Shape] = set()
        self.free = 0 if cfg.get("paused") else int(cfg["max_concurrent"]) - len(holding)
        self.ledger = Ledger(capacity, gpu_min_free=str(cfg.get("gpu_min_free", "90%")))
        for run in holding:
            if run.backend != "ray":
                self.ledger.take(
                    Resources.from_mapping(run.resources),
                    Assignment(tuple(int(g) for g in run.gpus), tuple(run.cores)),
                )
        self.per_group = Counter(r.group for r in holding if r.group)

    @property
    def room(self) -> int:
        """Slots still free in this pass."""
        return self.free - len(self.decision.start)

    @property
    def full(self) -> bool:
        return self.room <= 0

    def offer(self, run: RunRecord, dependencies: dict[int, RunStatus]) -> None:
        verdict = _dependency_verdict(run, dependencies)
        if verdict not in ("ready", "wait"):
            self.decision.doomed.append((run, verdict))  # type: ignore[arg-type]
            return
        if self.full:
            return
        shape = shape_of(run)
        if shape in self.blocked:
            return
        assignment = self._place(run) if verdict == "ready" else None
        if run.backend != "ray" and run.resources.get("gpus"):
            self.decision.gpu_waits[shape] = None if assignment else self.ledger.refusal
        if assignment is None:
            self.blocked.add(shape)
            return
        self.per_group[run.group] += 1
        self.decision.start.append((run, assignment))

    def _place(self, run: RunRecord) -> Assignment | None:
        """Where the run goes now (and booked there), or None if its group or the machine
        is full."""
        limit = self.cfg.get(GROUP_PREFIX + run.group) if run.group else None
        self.ledger.refusal = None
        if limit is not None and self.per_group[run.group] >= int(limit):
            return None
        if run.backend == "ray":
            return Assignment()
        need = Resources.from_mapping(run.resources)
        assignment = self.ledger.fit(need)
        if assignment is not None:
            self.ledger.take(need, assignment, admitted=True)
        return assignment


def admit(
    queued: Iterable[RunRecord],
    holding: list[RunRecord],
    cfg: dict[str, Any],
    capacity: Capacity,
    dependencies: dict[int, RunStatus] | None = None,
) -> Decision:
    """Which of `queued` (in priority order, then submission order) start now, and where."""
    admission = Admission(holding, cfg, capacity)
    for run in queued:
        admission.offer(run, dependencies or {})
    return admission.decision


def _pages(tx: Transaction, admission: Admission) -> Iterable[list[RunRecord]]:
    """The queue in priority order, a page at a time, without the shapes already blocked,
    until the queue ends or the free slots are filled (runs further back whose dependency
    failed are cancelled by a later claim)."""
    cursor: tuple[int, int] | None = None
    size = min(PAGE_SIZE, max(admission.room, 1))
    while True:
        where, params = ["status = 'queued'"], []
        if cursor is not None:
            where.append("(priority < ? OR (priority = ? AND id > ?))")
            params += [cursor[0], cursor[0], cursor[1]]
        for shape in list(admission.blocked)[:MAX_EXCLUDED_SHAPES]:
            where.append("NOT (grp IS ? AND resources IS ? AND after IS ? AND backend = ?)")
            params += shape
        page = tx.select(
            " AND ".join(where), params, tail=f"ORDER BY priority DESC, id LIMIT {size}"
        )
        if page:
            yield page
        if len(page) < size or admission.full:
            return
        cursor = (page[-1].priority, page[-1].id)
        size = min(PAGE_SIZE, 2 * size)


class Claim(NamedTuple):
    started: list[RunRecord]  # moved to starting
    room: bool  # False: the queue is paused or every slot taken, which only a write can change


def claim(tx: Transaction, capacity: Capacity, doomed: list[RunRecord] | None = None) -> Claim:
    """Move what may start now to starting; runs that never can (a dependency did not
    succeed) are cancelled, and added to `doomed` for their hooks."""
    cfg = tx.config()
    if cfg.get("paused"):
        return Claim([], room=False)
    holding = tx.slot_holders()
    admission = Admission(holding, cfg, capacity)
    if admission.full:
        return Claim([], room=False)
    for page in _pages(tx, admission):
        wanted = {dep for run in page for dep in run.after}
        dependencies = tx.statuses(wanted) if wanted else {}
        for run in page:
            admission.offer(run, dependencies)
    decision = admission.decision
    now = time.time()
    for run, why in decision.doomed:
        cancelled = tx.transition(run.id, RunStatus.CANCELLED, known=run, ended_at=now, reason=why)
        if doomed is not None:
            doomed.append(cancelled)
    for shape, why in decision.gpu_waits.items():
        _say_why_it_waits(tx, shape, why)
    started = [
        tx.transition(
            run.id,
            RunStatus.STARTING,
            known=run,
            claimed_at=now,
            claimed_by=os.getpid(),
            gpus=[str(g) for g in where.gpus],
            cores=list(where.cores),
            reason=None,  # no longer waiting
        )
        for run, where in decision.start
    ]
    return Claim(started, room=True)


def _say_why_it_waits(tx: Transaction, shape: Shape, why: str | None) -> None:
    """Queued runs of a shape say why they wait for a GPU (`ps`, `show`), or stop saying
    it; written only where it changes, so a long wait costs no writes."""
    where = (
        "status = 'queued' AND grp IS ? AND resources IS ? AND after IS ? AND backend = ? AND "
        + ("reason IS NOT ?" if why else f"reason LIKE '{GPU_WAIT}%'")
    )
    params = [*shape, why] if why else [*shape]
    if tx.conn.execute(f"SELECT 1 FROM runs WHERE {where} LIMIT 1", params).fetchone():
        tx.conn.execute(
            f"UPDATE runs SET reason = ?, version = ? WHERE {where}", [why, tx.stamp(), *params]
        )
