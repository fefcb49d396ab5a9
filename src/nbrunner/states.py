"""Run states and the only transitions allowed between them."""

from __future__ import annotations

from enum import Enum

from .errors import InvalidTransition


class RunStatus(str, Enum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    PRUNED = "pruned"  # a sweep stopped it early: it was behind its peers (nbrunner.pruning)

    def __str__(self) -> str:
        return self.value

    @property
    def is_done(self) -> bool:
        return self in DONE

    @property
    def holds_slot(self) -> bool:
        """Counts against the concurrency limit and the resource reservations."""
        return self in HOLDS_SLOT


S = RunStatus
DONE = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT, S.LOST, S.PRUNED})
HOLDS_SLOT = frozenset({S.STARTING, S.RUNNING, S.PAUSED})
ACTIVE = frozenset({S.QUEUED}) | HOLDS_SLOT

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    S.QUEUED: frozenset({S.STARTING, S.CANCELLED}),
    # back to queued: the claimer died before the run's recorder came up, so it never ran
    S.STARTING: frozenset({S.QUEUED, S.RUNNING, S.FAILED, S.CANCELLED, S.LOST}),
    S.RUNNING: frozenset({S.PAUSED, *DONE}),
    S.PAUSED: frozenset({S.RUNNING, *DONE}),
    **{done: frozenset() for done in DONE},
}

# Where each state may be entered from: a transition is one UPDATE guarded by its sources.
SOURCES: dict[RunStatus, frozenset[RunStatus]] = {
    target: frozenset(source for source, targets in TRANSITIONS.items() if target in targets)
    for target in RunStatus
}


def check_transition(run_id: object, current: RunStatus, target: RunStatus) -> None:
    """Raise InvalidTransition naming the current state and what it allows."""
    allowed = TRANSITIONS[current]
    if target not in allowed:
        options = ", ".join(sorted(s.value for s in allowed)) or "nothing (it has ended)"
        raise InvalidTransition(
            f"run {run_id} is {current.value} and cannot become {target.value}; "
            f"from {current.value} it can become: {options}"
        )
