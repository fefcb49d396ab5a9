"""The home's service: the one process that moves a home's queue.

    client (kernel, CLI, dashboard) → store ← service (scheduler, supervisor, sampler, hooks)
                                                  → recorders → children

Clients only write intents to the store (submit, cancel, pause, config) and wake the
service; `contact.ensure_running` starts one, detached, when none is alive. A file lock in
the home keeps it single; it exits on its own once nothing has been queued or active for a
while, and at once when its home is removed or replaced by another folder at the same path.

It is level-triggered: each pass compares, for every run that has not ended, what the store
says with what is true (the recorder's lock or handle, its journal runs/ID.lock, the
child's pid and start marker, the controls asked for) and writes whatever step is missing.
Nothing depends on seeing an event once: a write that failed is made on a later pass. Each
pass is a short list of named steps:
1. check_home: the home is still the one it serves,
2. reap: poll the recorders this service started, each by its own handle,
3. read_changes: what changed in the store since the last pass (one query),
4. adopt: now and then, watch slot-holding runs no one watches (a previous service died);
   requeue claims whose recorder never came (by this service's monotonic clock),
5. cancel_queued: apply cancels of queued runs (with their hooks),
6. advance_all: act on every watched run first (ended, lost, cancel, pause, GPU shares:
   signals never wait on the store), then record what the store lacks (running, started_at,
   how a stop was meant to end, the end itself, figures),
7. claim what may start (dependency cancels run their hooks) and launch a recorder for each.
A step that fails (a locked store, a full disk) is logged and tried again next pass; once a
store write fails, the pass makes no more writes. Timeouts and memory limits are enforced by
the recorders, so a stalled or killed service cannot let a run overrun.

Between passes it sleeps until something happens (see `Service._sleep_s`): a client's
datagram on a loopback port named in `service.json`, the end of a recorder it started (a
pidfd in the same select() on Linux), or the next time something is due: a kill after a
stop's grace period, a look at an adopted run's recorder, a claim that never launched, a
sample someone needs (a reader of figures said so in the `watching` file, or a run holds a
GPU share), hourly retention. A slow safety pass (SAFETY_PASS_S) is the backstop: since each
pass re-derives everything, a missed event only delays a step, never loses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from . import platform, retry, version
from .contact import (
    ERR_NAME,
    INFO_NAME,
    LOCK_NAME,
    STARTING_NAME,
    WATCH_NAME,
    announce,
    notify,
    wake,
    watched_recently,
)
from .errors import NbrunnerError, StoreUnavailable
from .keepawake import KeepAwake
from .launching import KeeperHandle, start_recorder, wake_keepers
from .models import RunRecord
from .provenance import Capturer
from .prune import Retention
from .pruning import Pruner
from .recorder import RecorderSpec, ServiceLink, mark_paused, sweep_run_files
from .reporting import METRICS_ENV, METRICS_MAX_ENV, metrics_path
from .states import RunStatus
from .store import Transaction
from .supervisor import LocalWatch, Outcome, RayWatch, outcome_from_exit, run_hook

log = logging.getLogger("nbrunner.service")

# Ends and starts wake it at once; this paces what has no event: a queue that waits for
# room, Ray jobs, sweeps that prune, a store write to try again, recorders without a pidfd.
ACTIVE_TICK_S = 1.0
IDLE_TICK_S = 2.0  # nothing active: a removed home is noticed this soon, until idle exit
SAFETY_PASS_S = 30.0  # the longest it sleeps with runs active: the level-triggered backstop
ADOPT_EVERY_S = 2.0
IDLE_EXIT_S = 60.0
SERVICE_PATIENCE_S = 2.0
REPEAT_LOG_S = 60.0
# A claim whose recorder never took its lock, seen for this long by a service that did not
# launch it (forked recorders take it within milliseconds, spawned ones within a second or
# two): its recorder will never come.
UNLAUNCHED_CLAIM_S = 15.0


def idle_exit_s() -> float:
    from .config import seconds_from_env

    return seconds_from_env("NBRUNNER_SERVICE_IDLE_S", IDLE_EXIT_S)


# -- the service --------------------------------------------------------------------------
class ActiveRuns(dict[int, RunRecord]):
    """The unfinished runs by id, those under way (holding slots, starting) and those on
    GPUs also apart: a pass asks about them, and a queue of thousands must not be looked
    through to answer."""

    def __init__(self, records: Iterator[RunRecord] | list[RunRecord] = ()) -> None:
        super().__init__()
        self.under_way: dict[int, RunRecord] = {}
        self.on_gpus: dict[int, RunRecord] = {}  # local runs asking for GPUs or GPU memory
        for record in records:
            self[record.id] = record

    def __setitem__(self, run_id: int, record: RunRecord) -> None:
        super().__setitem__(run_id, record)
        _file_under(self.under_way, record, record.status is not RunStatus.QUEUED)
        _file_under(self.on_gpus, record, _wants_gpus(record))

    def pop(self, run_id: int, default: Any = None) -> Any:  # type: ignore[override]
        self.under_way.pop(run_id, None)
        self.on_gpus.pop(run_id, None)
        return super().pop(run_id, default)

    def any_queued(self) -> bool:
        return len(self) > len(self.under_way)


def _file_under(index: dict[int, RunRecord], record: RunRecord, belongs: bool) -> None:
    if belongs:
        index[record.id] = record
    else:
        index.pop(record.id, None)


def _wants_gpus(record: RunRecord) -> bool:
    resources = record.resources
    return record.backend != "ray" and bool(resources.get("gpus") or resources.get("gpu_memory"))


class End(NamedTuple):
    """A run's end, to be written with the pass's others: its watch, how it ended, and
    its recorder's exit record (none for a lost run or a Ray job)."""

    watch: Any
    outcome: Outcome
    ended: dict[str, Any] | None = None


class Service:
    def __init__(self, home: str | Path, *, idle_exit: float | None = None, echo: bool = False):
        from .store import Store, default_patience

        self.home = Path(home)
        self.idle_exit = idle_exit_s() if idle_exit is None else idle_exit
        self.echo = echo
        # a tick never waits long on a locked store: it tries again next tick
        self.store = Store(self.home, patience=min(default_patience(), SERVICE_PATIENCE_S))
        self.active = ActiveRuns()
        self._cancels: set[int] = set()  # queued runs a client asked to cancel
        self.watches: dict[int, Any] = {}
        self.version = 0
        self._lock_fd: int | None = None
        self._socket: socket.socket | None = None
        self._exiting = False
        self._next_adopt = 0.0
        self._idle_since = time.monotonic()
        self._hooks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hook")
        self._hooks_pending = 0
        self._hooks_lock = threading.Lock()
        self._gpu_source: Any = None
        self._last_error: tuple[tuple[str, str], float] | None = None
        self._environments: dict[int | None, dict[str, str] | None] = {}
        self._pruner = Pruner(self.store)
        self._provenance = Capturer(self.store)
        self._retention = Retention()
        self._successor: list[str] | None = None  # a newer service to hand over to
        self._keep_awake = KeepAwake(f"runs are active in {self.home}")
        self._recorders: dict[int, Any] = {}  # run id → handle of the recorder started here
        self._exit_signals: dict[int, int] = {}  # recorder or keeper pid → its pidfd (Linux)
        self._retry_soon = False  # a step failed: the next pass comes soon, not at a deadline
        self._unlaunched: dict[int, float] = {}  # run id → when first seen claimed, unlaunched
        self._home_id: tuple[int, int] | None = None
        self._store_failed = False  # a write failed this pass: make no more until the next
        # the store's version when a claim found no slot free, and when (monotonic)
        self._no_room: tuple[int, float] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def serve(self) -> bool:
        """Serve until idle (or asked to stop); False if another service holds the home."""
        if not self._take_over():
            return False
        try:
            while not self._exiting:
                self._tick()
                if self._exiting:
                    break
                if self._idle_for() >= self.idle_exit and self._hand_back():
                    break
                self._wait(self._sleep_s())
        finally:
            self._close()
        return True

    def _take_over(self) -> bool:
        self._lock_fd = platform.take_lock(self.home / LOCK_NAME)
        if self._lock_fd is None:
            return False
        with contextlib.suppress(OSError):
            (self.home / STARTING_NAME).unlink()  # on its way no more: here
        self._home_id = home_identity(self.home)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        announce(self.home / INFO_NAME, self._socket)
        self._refresh_all()
        sweep_run_files(self.home, set(self.active))
        return True

    def request_exit(self, *_: Any) -> None:
        self._exiting = True
        with contextlib.suppress(OSError):
            wake(self.home)

    def _close(self) -> None:
        self._hooks.shutdown(wait=True)
        for fd in self._exit_signals.values():
            os.close(fd)
        if self._socket is not None:
            self._socket.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._successor is not None:
            version.start_successor(self.home, self._successor, str(self.home / ERR_NAME))

    def _idle_for(self) -> float:
        with self._hooks_lock:
            busy = bool(self.watches or self.active or self._hooks_pending)
        if busy:
            self._idle_since = time.monotonic()
        return time.monotonic() - self._idle_since

    def _hand_back(self) -> bool:
        """Give up the home, unless work arrived meanwhile. A client that queued work sees
        the lock held (and wakes us) or free (and starts a service), never a gap: it wrote
        before it looked, and we look after letting go."""
        assert self._lock_fd is not None
        os.close(self._lock_fd)
        self._lock_fd = None
        if not self.store.active():
            return True
        self._lock_fd = platform.take_lock(self.home / LOCK_NAME)
        return self._lock_fd is None  # another service took over: leave it the work

    def _wait(self, timeout: float) -> bool:
        """Sleep until a client's datagram, the end of a recorder started here, or the
        timeout; True if an event came."""
        assert self._socket is not None
        import select

        ready, _, _ = select.select([self._socket, *self._exit_signals.values()], [], [], timeout)
        if self._socket in ready:
            with contextlib.suppress(OSError):
                self._socket.setblocking(False)
                while self._socket.recv(64):
                    pass
        self._socket.setblocking(True)
        return bool(ready)

    def _sleep_s(self) -> float:
        """How long to sleep before the next pass if no event comes first."""
        now = time.monotonic()
        return max(0.0, min(self._wakes(now)) - now)

    def _wakes(self, now: float) -> list[float]:
        """When each thing that has a time is due (monotonic); events need no entry."""
        if not (self.active or self.watches):
            return [now + IDLE_TICK_S]  # idle: home checks until the idle exit
        wakes = [now + SAFETY_PASS_S, self._retention.next_at]
        watched = self._watched()
        for watch in self.watches.values():
            if isinstance(watch, LocalWatch):
                due = watch.next_wake(watched)
                wakes += [due] if due is not None else []
        unwatched = any(
            r.status.holds_slot and r.id not in self.watches for r in self.active.under_way.values()
        )
        if unwatched:  # adopting, or a claim whose recorder never came
            wakes.append(self._next_adopt)
        if self._retry_soon or self._claim_may_start() or self._paced():
            wakes.append(now + ACTIVE_TICK_S)
        return wakes

    def _paced(self) -> bool:
        """Whether a watched run changes with no event to say so: a Ray job, a sweep that
        prunes (its runs' reports), a recorder that can only be polled (no pidfd)."""
        return any(
            not isinstance(watch, LocalWatch)
            or (watch.record.prune and watch.record.sweep)
            or (run_id in self._recorders and self._recorders[run_id].pid not in self._exit_signals)
            for run_id, watch in self.watches.items()
        )

    def _watched(self) -> bool:
        return watched_recently(self.home / WATCH_NAME)

    # -- the pass -------------------------------------------------------------------------
    def _tick(self) -> None:
        self._store_failed = False
        self._retry_soon = False
        steps = (
            self._check_home,
            self._reap,
            self._read_changes,
            self._adopt,
            self._cancel_queued,
            self._advance_all,
            self._prune,
            self._claim,
        )
        for step in (*steps, *self._long_run_steps()):
            try:
                step()
            except Exception as exc:  # a locked store or a bug: logged, tried again next pass
                self._report(step.__name__, exc)

    # -- what runs lasting days need ------------------------------------------------------
    def _long_run_steps(self) -> tuple[Any, ...]:
        return (self._stay_awake, self._retire_old_runs, self._requeue_lost, self._hand_over)

    def _stay_awake(self) -> None:
        """Keep the machine from sleeping while runs hold slots (nbrunner.keepawake)."""
        holding = any(r.status.holds_slot for r in self.active.under_way.values())
        self._keep_awake.update(holding, self.store.config)

    def _retire_old_runs(self) -> None:
        """Now and then, remove what the `retention` setting says (nbrunner.prune)."""
        self._retention.apply(self.store)

    def _requeue_lost(self) -> None:
        """Queue again runs lost to a reboot whose module asks for it (nbrunner.retry)."""
        retry.requeue_lost(self.store)

    def _hand_over(self) -> None:
        """Exit for a newer nbrunner's service once no run is being started (version)."""
        starting = any(r.status is RunStatus.STARTING for r in self.active.under_way.values())
        if not starting and not self._hooks_pending:
            self._successor = version.successor(self.home)
            self._exiting = self._exiting or self._successor is not None

    def _report(self, step: str, exc: Exception) -> None:
        """Log a failure once, then once a minute while it repeats, so a store locked for
        hours does not fill the disk with the same traceback twice a second."""
        self._retry_soon = True
        if isinstance(exc, StoreUnavailable):
            self._store_failed = True
        now, key = time.monotonic(), (step, repr(exc))
        if (
            self._last_error is not None
            and self._last_error[0] == key
            and now < self._last_error[1]
        ):
            return
        self._last_error = (key, now + REPEAT_LOG_S)
        log.error("nbrunner service: %s failed; trying again", step, exc_info=exc)

    def _check_home(self) -> None:
        """A home removed (rm -rf) or replaced by another folder at its path has nothing
        left for this service to serve: it leaves (runs go on; their recorders hold them)."""
        try:
            found = home_identity(self.home)
        except OSError:
            found = None
        if found != self._home_id:
            log.warning("nbrunner service: home %s was removed or replaced; leaving", self.home)
            self._exiting = True

    def _reap(self) -> None:
        """Poll the recorders started here, each by its own handle: a waitpid on any child
        would take the exit status a hook's subprocess waits for. A handle on the keeper is
        let go once its run's end is written: the keeper is no child of ours to reap, and
        it may hold the home's runs for weeks."""
        locks: dict[Path, bool] = {}  # the keeper's lock looked at once, however many it holds
        for run_id, recorder in list(self._recorders.items()):
            ended = (
                recorder.poll(locks) if isinstance(recorder, KeeperHandle) else recorder.poll()
            ) is not None
            if ended or (isinstance(recorder, KeeperHandle) and run_id not in self.watches):
                self._let_go(run_id)
            else:
                self._watch_exit(recorder)  # a keeper's pid is known once it holds its lock
            watch = self.watches.get(run_id)
            if ended and watch is not None and watch.recorder is recorder:
                watch.recorder_gone = True

    def _watch_exit(self, recorder: Any) -> None:
        """Put the end of this recorder (or keeper) in the sleep's select(): one pidfd per
        process, however many runs it holds."""
        if recorder.pid and recorder.pid not in self._exit_signals:
            fd = platform.exit_signal(recorder.pid)
            if fd is not None:
                self._exit_signals[recorder.pid] = fd

    def _let_go(self, run_id: int) -> None:
        pid = self._recorders.pop(run_id).pid
        if all(other.pid != pid for other in self._recorders.values()):
            fd = self._exit_signals.pop(pid, None)
            if fd is not None:
                os.close(fd)

    def _refresh_all(self) -> None:
        self.version = self.store.version()
        self.active = ActiveRuns(self.store.active())
        self._cancels = {run_id for run_id, r in self.active.items() if _cancel_asked(r)}

    def _read_changes(self) -> None:
        changes, self.version = self.store.changes_since(self.version)
        for record in changes:
            self._learn(record)

    def _learn(self, record: RunRecord) -> None:
        """What the store now says of a run, from the change feed or from our own write."""
        if record.is_done:
            self.active.pop(record.id, None)
        else:
            self.active[record.id] = record
        if _cancel_asked(record):
            self._cancels.add(record.id)
        watch = self.watches.get(record.id)
        if watch is not None:
            watch.record = record
        if self.echo:
            print(
                f"{time.strftime('%H:%M:%S')} run {record.id} {record.module} "
                f"{record.status.value}",
                flush=True,
            )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Transaction]:
        """A store write. When nothing else was written since the change feed was last read,
        what it wrote is learnt from the transaction, and the feed's next read starts after
        it: reading back our own writes was a fifth of the rows decoded per run."""
        with self.store.write() as tx:
            yield tx
        if tx.prior is not None and tx.prior == self.version and not tx.undecoded:
            for record in tx.written.values():
                self._learn(record)
            self.version = tx.version

    def _queued(self) -> bool:
        return self.active.any_queued()

    # -- adopting what a previous service left ---------------------------------------------
    def _adopt(self) -> None:
        now = time.monotonic()
        if now < self._next_adopt:
            return
        self._next_adopt = now + ADOPT_EVERY_S
        for record in list(self.active.under_way.values()):
            if record.status.holds_slot and record.id not in self.watches:
                self._adopt_one(record, now)
        for run_id in list(self._unlaunched):
            if run_id not in self.active or run_id in self.watches:
                del self._unlaunched[run_id]

    def _adopt_one(self, record: RunRecord, now: float) -> None:
        if record.backend == "ray":
            self._watch_ray(record, self.store.config())
            return
        watch = LocalWatch(record, str(self.home))
        files = watch.files
        ended = watch.look()
        if files.recorder_alive() or ended is not None:
            self.watches[record.id] = watch  # advanced like any other from now on
        elif watch.child is not None:
            self._mark_lost(watch)  # recorded by the next pass's advance
            self.watches[record.id] = watch
        elif now - self._unlaunched.setdefault(record.id, now) > UNLAUNCHED_CLAIM_S:
            with self._writing() as tx:  # claimed, but no recorder ever came: it never ran
                if tx.get(record.id).status is RunStatus.STARTING:
                    tx.transition(record.id, RunStatus.QUEUED, claimed_at=None, claimed_by=None)
            del self._unlaunched[record.id]

    def _mark_lost(self, watch: Any) -> None:
        """The recorder ended without writing the exit code: what is left of the run's tree
        is stopped, if the recorded pid is still provably the run's; the run is lost."""
        if watch.child_is_ours():
            stop_leftovers_of(watch)
        watch.lost = True

    def _lost_outcome(self, watch: Any) -> Outcome:
        pid = watch.recorder_pid
        recorder = f"its recorder (pid {pid})" if pid else "its recorder"
        return Outcome(
            None,
            RunStatus.LOST,
            f"{recorder} ended without recording how the run ended; the run's remaining "
            "processes were stopped",
        )

    # -- cancels of queued runs ------------------------------------------------------------
    def _cancel_queued(self) -> None:
        """Clients ask (noted as the change feed brings each ask, so a deep queue is not
        looked through every pass); queued runs leave the queue here, where every end runs
        its hook. An ask stays noted until the transaction that cancels it commits."""
        self._cancels = {i for i in self._cancels if _cancel_asked(self.active.get(i))}
        if not self._cancels or self._store_failed:
            return
        cancelled = []
        with self._writing() as tx:
            for run_id in sorted(self._cancels):
                if tx.status(run_id) is RunStatus.QUEUED:
                    cancelled.append(
                        tx.transition(
                            run_id,
                            RunStatus.CANCELLED,
                            ended_at=time.time(),
                            reason="cancelled while queued",
                        )
                    )
        self._cancels.clear()
        self._ended(cancelled)

    def _ended(self, records: list[RunRecord]) -> None:
        """Runs that ended without ever being watched: forgotten here, their hooks run."""
        for record in records:
            self.active.pop(record.id, None)
            if record.on_done:
                self._run_hook(record)

    # -- advancing watched runs -------------------------------------------------------------
    def _advance_all(self) -> None:
        """Act on every run first (signals never wait on the store), then record."""
        now, watched = time.monotonic(), self._watched()
        samples_due = []
        for watch in list(self.watches.values()):
            if isinstance(watch, LocalWatch):
                try:
                    if self._act(watch, now) and watch.sample_due(now, watched):
                        samples_due.append(watch)
                except Exception as exc:  # one run's trouble is not the others'
                    self._report(f"run {watch.record.id}", exc)
        if samples_due:
            self._sample(samples_due)
        ends: list[End] = []
        for watch in list(self.watches.values()):
            if self._store_failed:
                return  # the store is locked or full: next pass
            try:
                if isinstance(watch, LocalWatch):
                    ends += self._record(watch)
                else:
                    self._advance_ray(watch)
            except Exception as exc:
                self._report(f"run {watch.record.id}", exc)
        if ends and not self._store_failed:
            self._finish_all(ends)

    def _act(self, watch: LocalWatch, now: float) -> bool:
        """Learn what is true of a local run and act on it; True while it is still going."""
        if watch.ended is not None or watch.lost:
            return False
        watch.ended = watch.look()
        if watch.ended is not None:
            return False
        if watch.recorder_dead(now):
            watch.ended = watch.look()  # written just before it ended?
            if watch.ended is None:
                self._mark_lost(watch)
            return False
        self._apply_controls(watch)
        watch.escalate()
        return watch.child is not None

    def _apply_controls(self, watch: LocalWatch) -> None:
        control = watch.record.control
        if control == "cancel" and not watch.stopping:
            watch.begin_stop(RunStatus.CANCELLED, "cancelled by request", self._grace())
        elif control in ("pause", "resume") and watch.child is not None and not watch.stopping:
            paused = control == "pause"
            watch.pause(paused)
            mark_paused(watch.files, paused)  # the recorder's timeout stops meanwhile
            watch.pause_marked = True
            watch.applied = control

    def _grace(self) -> float:
        return float(self.store.config()["grace_period"])

    def _record(self, watch: LocalWatch) -> list[End]:
        """Write what the store lacks of a local run, one step at a time; its end, once it
        has one, is returned to be written with the pass's other ends."""
        if watch.ended is not None:
            record = watch.record
            if watch.ending is not None and not record.ending:  # not in the store yet
                record = dataclasses.replace(record, ending=watch.ending)
            return [End(watch, outcome_from_exit(record, watch.ended), watch.ended)]
        if watch.lost:
            return [End(watch, self._lost_outcome(watch))]
        record = watch.record
        if watch.child is not None and (record.status is RunStatus.STARTING or (
            record.status.holds_slot and record.started_at is None
        )):  # fmt: skip
            self._record_started(watch)
        if watch.ending is not None and watch.record.ending != watch.ending:
            with self._writing() as tx:
                tx.update(record.id, ending=watch.ending)
                watch.record = tx.get(record.id)
        if watch.record.control in ("pause", "resume") and watch.applied == watch.record.control:
            self._record_pause(watch, watch.record.control == "pause")
        return []

    def _record_started(self, watch: LocalWatch) -> None:
        assert watch.child is not None
        pid, started_at = watch.child[0], watch.started_at
        run_id = watch.record.id
        with self._writing() as tx:
            current = tx.fresh(watch.record)
            if current.status is RunStatus.STARTING:
                current = tx.transition(
                    run_id, RunStatus.RUNNING, known=current, pid=pid, started_at=started_at
                )
            elif current.status.holds_slot and current.started_at is None:
                tx.update(run_id, pid=pid, started_at=started_at)
                current = tx.get(run_id)
        watch.record = current

    def _record_pause(self, watch: LocalWatch, paused: bool) -> None:
        target = RunStatus.PAUSED if paused else RunStatus.RUNNING
        with self._writing() as tx:
            if tx.get(watch.record.id).status is not target:
                tx.transition(watch.record.id, target, control=None)
            else:
                tx.update(watch.record.id, control=None)
            watch.record = tx.get(watch.record.id)

    def _sample(self, watches: list[Any]) -> None:
        """One pass over the runs due: figures and GPU shares; one write."""
        gpu_samples = self._gpu_samples(watches)
        figures: dict[int, dict[str, Any]] = {}
        for watch in watches:
            try:
                watch.sample()
                over = self._check_gpu_share(watch, gpu_samples, figures)
                if over is not None and not watch.stopping:
                    watch.begin_stop(RunStatus.FAILED, over, self._grace())
                figures.setdefault(watch.record.id, {}).update(watch.metrics())
            except Exception as exc:  # one run's trouble is not the others'
                self._report(f"run {watch.record.id}", exc)
        if self._store_failed:
            return
        with contextlib.suppress(NbrunnerError), self._writing() as tx:  # best effort
            for run_id, values in figures.items():
                if values:
                    tx.update(run_id, **values)

    def _gpu_samples(self, watches: list[Any]) -> list[Any]:
        if not any(w.record.gpus for w in watches):
            return []
        if self._gpu_source is None:
            from .gpu import gpu_source

            self._gpu_source = gpu_source()
        return self._gpu_source.sample()

    def _check_gpu_share(
        self, watch: Any, samples: list[Any], figures: dict[int, dict[str, Any]]
    ) -> str | None:
        from .units import format_size

        share = int(watch.record.resources.get("gpu_memory") or 0)
        used = watch.gpu_memory(samples)
        if used is None:
            if share and watch.gpu_memory_hidden(samples):
                figures.setdefault(watch.record.id, {})["warning"] = (
                    "GPU memory per process is not available on Windows WDDM: its share of "
                    f"{format_size(share)} is reserved but not enforced"
                )
            return None
        figures.setdefault(watch.record.id, {})["gpu_memory"] = used
        if not share or used <= share:
            return None
        message = f"uses {format_size(used)} of GPU memory, over its share of {format_size(share)}"
        if watch.record.resources.get("gpu_memory_strict"):
            return message + "; stopped"
        figures[watch.record.id]["warning"] = message
        return None

    # -- pruning sweeps ---------------------------------------------------------------------
    def _prune(self) -> None:
        """Stop, the normal way, the runs their sweep's rule finds behind their peers."""
        for run_id, reason in self._pruner.behind([w.record for w in self.watches.values()]):
            watch = self.watches[run_id]
            if not hasattr(watch, "files"):  # a Ray run
                watch.stop_requested = watch.stop_requested or (RunStatus.PRUNED, reason)
            elif not watch.stopping:
                watch.begin_stop(RunStatus.PRUNED, reason, self._grace())

    # -- ending runs ------------------------------------------------------------------------
    def _finish(self, watch: Any, outcome: Any, ended: dict[str, Any] | None = None) -> None:
        """Write the run's end; on failure the watch stays and the next pass tries again."""
        self._finish_all([End(watch, outcome, ended)])

    def _finish_all(self, ends: list[End]) -> None:
        """Write the ends of runs in one transaction (its commit is much of what a run
        costs), then let the runs go. If it fails for any reason but the store (locked,
        full: all wait for the next pass), each end is written alone, so that one run's
        trouble is not the others'; a run whose end is not written stays watched."""
        if len(ends) > 1:
            try:
                with self._writing() as tx:
                    written = [self._write_end(tx, end) for end in ends]
            except StoreUnavailable:
                raise
            except Exception:  # written alone below: each failure is said, by run
                pass
            else:
                for end, record in zip(ends, written, strict=True):
                    self._let_go_of_ended(end.watch, record)
                return
        for end in ends:
            try:
                with self._writing() as tx:
                    record = self._write_end(tx, end)
            except Exception as exc:
                if len(ends) == 1 or isinstance(exc, StoreUnavailable):
                    raise
                self._report(f"run {end.watch.record.id}", exc)
                continue
            self._let_go_of_ended(end.watch, record)

    def _write_end(self, tx: Transaction, end: End) -> RunRecord:
        watch, outcome, ended = end
        status, reason = outcome.decided()
        extra: dict[str, Any] = {}
        if ended is not None and ended.get("log_dropped"):
            extra["log_dropped"] = ended["log_dropped"]
        if hasattr(watch, "final_metrics"):
            extra.update(watch.final_metrics())
        record = tx.fresh(watch.record)
        if record.is_done:
            return record
        if record.status is RunStatus.STARTING and status not in (
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.LOST,
        ):
            started = getattr(watch, "child", None)  # a Ray job has none
            record = tx.transition(
                record.id,
                RunStatus.RUNNING,
                known=record,
                pid=started and started[0],
                started_at=getattr(watch, "started_at", None),
            )
        return tx.transition(
            record.id,
            status,
            known=record,
            exit_code=outcome.exit_code,
            ended_at=(ended or {}).get("ended_at") or time.time(),
            reason=reason,
            **extra,
        )

    def _let_go_of_ended(self, watch: Any, record: RunRecord) -> None:
        self.watches.pop(record.id, None)
        self.active.pop(record.id, None)
        if isinstance(watch, LocalWatch):
            watch.remove_files()
        if record.on_done:
            self._run_hook(record)

    def _run_hook(self, record: RunRecord) -> None:
        """Hooks run beside the queue, never in its way."""
        with self._hooks_lock:
            self._hooks_pending += 1

        def done(_: Any) -> None:
            with self._hooks_lock:
                self._hooks_pending -= 1
            wake(self.home)  # its end may let the service hand over or leave

        self._hooks.submit(run_hook, self.store.logs_dir, record).add_done_callback(done)

    # -- Ray runs -----------------------------------------------------------------------------
    def _watch_ray(self, record: RunRecord, settings: dict[str, Any]) -> None:
        grace = float(settings["grace_period"])
        env = self._child_env(record, settings)
        self.watches[record.id] = RayWatch(self.store, record, env, grace)

    def _advance_ray(self, watch: Any) -> None:
        if watch.outcome is not None:
            self._finish(watch, watch.outcome)
            return
        record = watch.record
        if watch.running and record.status is RunStatus.STARTING:
            # kept as written: a pass before the change feed brings it must not write it again
            watch.record = self.store.transition(
                record.id, RunStatus.RUNNING, started_at=time.time()
            )
        if record.control == "cancel" and watch.stop_requested is None:
            watch.stop_requested = (RunStatus.CANCELLED, "cancelled by request")

    # -- claiming and launching ------------------------------------------------------------
    def _claim_may_start(self) -> bool:
        """Whether a claim now might start a run: some are queued, and a slot may be free.
        A claim that found none is believed until something is written (a run's end, a
        setting), or for a safety pass at most: a write by hand that moved no version is
        seen then."""
        if not self._queued():
            return False
        if self._no_room is None:
            return True
        version, at = self._no_room
        return version != self.version or time.monotonic() - at >= SAFETY_PASS_S

    def _claim(self) -> None:
        if not self._claim_may_start() or self._store_failed:
            return
        from . import scheduler
        from .resources import machine_capacity

        settings = self.store.config()  # one read serves the claim and every launch
        if settings["paused"] or len(self.active.under_way) >= int(settings["max_concurrent"]):
            # what the feed and this pass's own writes say: no slot is free (a run's start
            # moves the version, and frees none), so neither facts nor a write are needed
            self._found_room(False)
            return
        on_gpus = self.active.on_gpus.values()
        wants_gpus = bool(on_gpus)
        # whole GPUs and shares alike go only where others' memory leaves room
        shares = any(r.status is RunStatus.QUEUED for r in on_gpus)
        capacity = machine_capacity(  # facts first, then the claim
            with_gpus=wants_gpus,
            gpu_mask=str(settings["gpus"]),
            ours=self._run_pids() if shares else None,
        )
        doomed: list[RunRecord] = []  # a dependency did not succeed: cancelled by the claim
        with self._writing() as tx:
            claimed, room = scheduler.claim(tx, capacity, doomed)
        self._found_room(room)
        self._ended(doomed)
        for record in claimed:
            self.active[record.id] = record
            try:
                self._launch(record, settings)
            except Exception:  # not even its failure could be written: _adopt requeues it
                self.watches.pop(record.id, None)
                log.exception("nbrunner service: run %s: launch failed", record.id)
        wake_keepers()
        self._provenance.flush()

    def _found_room(self, room: bool) -> None:
        """What a claim found, believed as _claim_may_start says."""
        self._no_room = None if room else (self.version, time.monotonic())

    def _run_pids(self) -> set[int]:
        """The processes of the runs watched here, as last sampled."""
        return {
            pid
            for watch in self.watches.values()
            if isinstance(watch, LocalWatch) and watch.usage is not None
            for pid in watch.usage.pids
        }

    def _launch(self, record: RunRecord, settings: dict[str, Any]) -> None:
        if record.backend == "ray":
            self._watch_ray(record, settings)
            return
        watch = LocalWatch(record, str(self.home))
        self.watches[record.id] = watch
        try:
            spec = self._recorder_spec(record, settings)
            watch.recorder = start_recorder(spec, ServiceLink(wake, notify))
            self._recorders[record.id] = watch.recorder
            self._watch_exit(watch.recorder)
        except Exception as exc:  # one failed launch must not stop the rest
            self._finish(
                watch,
                Outcome(None, RunStatus.FAILED, f"could not start the run's recorder: {exc}"),
            )
            return
        self._provenance.started(record, spec.env)  # captured beside the queue: flush

    def _recorder_spec(self, record: RunRecord, settings: dict[str, Any]) -> RecorderSpec:
        return RecorderSpec(
            home=str(self.home),
            run_id=record.id,
            argv=record.argv,
            cwd=record.cwd,
            env=self._child_env(record, settings),
            log_path=record.log_path,
            max_log_size=int(settings["max_log_size"]),
            keep_leftovers=record.keep_leftovers,
            cores=record.cores,
            memory_limit=int(record.resources.get("memory") or 0),
            timeout=record.timeout,
            grace=float(settings["grace_period"]),
        )

    def _environment(self, env_id: int | None) -> dict[str, str] | None:
        """A stored submitter's environment; rows never change, so each is read once."""
        if env_id not in self._environments:
            self._environments[env_id] = self.store.environment(env_id)
        return self._environments[env_id]

    def _child_env(self, record: RunRecord, settings: dict[str, Any]) -> dict[str, str]:
        """The submitter's environment, the module's env, and what nbrunner adds."""
        base = self._environment(record.env_id)
        env = {**(base if base is not None else os.environ), **record.env}
        env.setdefault("PYTHONUNBUFFERED", "1")  # live logs, unless the module opted out ("")
        env.setdefault("PYTHONIOENCODING", "utf-8")
        env["NBRUNNER_RUN_ID"] = str(record.id)
        env[METRICS_ENV] = metrics_path(record.log_path)  # where report() writes
        env[METRICS_MAX_ENV] = str(settings["max_log_size"])
        if record.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(record.gpus)
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return env


def _cancel_asked(record: RunRecord | None) -> bool:
    """A queued run a client asked to cancel."""
    return record is not None and record.status is RunStatus.QUEUED and record.control == "cancel"


def home_identity(home: Path) -> tuple[int, int]:
    """What tells this folder from another later made at the same path."""
    found = os.stat(home)
    return found.st_dev, found.st_ino


def stop_leftovers_of(watch: Any) -> None:
    """Kill (at once: its recorder is gone, nobody waits on it) the run's verified tree."""
    from .backends.tree import signal_tree

    signal_tree(watch.child[0], graceful=False, members=watch.tree_members())


def main(argv: list[str] | None = None) -> int:
    """python -m nbrunner.service HOME: serve the home's queue until idle."""
    home = (argv if argv is not None else sys.argv[1:])[0]
    logging.basicConfig(format="%(asctime)s %(message)s", stream=sys.stderr)  # service.log
    service = Service(home)
    signal.signal(signal.SIGTERM, service.request_exit)
    with contextlib.suppress(KeyboardInterrupt):
        if not service.serve():
            log.warning("another service serves %s already; this one leaves", home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
