"""Runs lost to a reboot are queued again, when their module asks (`retry_lost`).

A reboot (Windows Update at night) kills every run and its recorder; the next service marks
them `lost`, truthfully. A module with `retry_lost = N` gets each lost run queued again as a
new run (`restart_of` the lost one, `retry_lost` one less), so the history keeps what
happened and a run that keeps getting lost stops after N tries. The step is level-triggered:
each pass looks for lost runs that still have tries; queueing the new run and taking the
tries from the lost one is one transaction, so it happens once, whoever dies when.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .models import again_row
from .states import RunStatus

if TYPE_CHECKING:
    from .store import Store, Transaction

_LOST_WITH_TRIES = f"status = '{RunStatus.LOST.value}' AND retry_lost > 0"


def requeue_lost(store: Store) -> list[int]:
    """Queue again every lost run that has tries left; the new runs' ids. The lost run's
    tries move to the new run in the same transaction, so each is requeued once."""
    lost = store.select(_LOST_WITH_TRIES)
    if not lost:
        return []
    rows = [
        again_row(run)
        | {"backend": run.backend, "backend_address": run.backend_address}
        | {"retry_lost": run.retry_lost - 1}
        for run in lost
    ]

    def spend_tries(tx: Transaction) -> None:
        for run in lost:
            tx.update(run.id, retry_lost=0)

    return store.insert_runs(rows, also=spend_tries)
