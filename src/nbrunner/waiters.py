"""Waiting for runs to end: futures the Runner's tick resolves as the store's change feed
shows each end, or (no tick running) a poll of the store."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import RunRecord
    from .store import Store

POLL_S = 0.1  # how often a wait without a running tick reads the store


class Waiters:
    """The futures waiting on each run's end, safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[int, list[concurrent.futures.Future[RunRecord]]] = {}

    def add(self, run_id: int) -> concurrent.futures.Future[RunRecord]:
        """A future for the run's ended record; check the store after adding it, so that no
        ending slips between."""
        future: concurrent.futures.Future[RunRecord] = concurrent.futures.Future()
        with self._lock:
            self._futures.setdefault(run_id, []).append(future)
        return future

    def drop(self, run_id: int, future: concurrent.futures.Future[RunRecord]) -> None:
        """A wait that gave up leaves nothing behind."""
        with self._lock:
            waiting = self._futures.get(run_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._futures.pop(run_id, None)

    def pending(self) -> bool:
        """Whether any wait is waiting."""
        return bool(self._futures)

    def resolve(self, record: RunRecord) -> None:
        """The run has ended: every wait on it gets its record."""
        with self._lock:
            futures = self._futures.pop(record.id, [])
        for future in futures:
            if not future.done():
                future.set_result(record)


class NotEnded(TimeoutError):
    """A wait ran out of time: which run had not ended, after the time the caller gave."""

    def __init__(self, run_id: int, timeout: float | None) -> None:
        super().__init__(f"run {run_id} still not ended after {round(timeout or 0, 1):g} s")
        self.run_id = run_id


def poll_until_done(store: Store, run_id: int, timeout: float | None) -> RunRecord:
    """The run's record once it has ended, read from the store; TimeoutError after
    `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        record = store.get(run_id)
        if record.is_done:
            return record
        if deadline is not None and time.monotonic() >= deadline:
            raise NotEnded(run_id, timeout)
        time.sleep(POLL_S)
