"""Small detached processes that start each run's child, watch it, and record how it ended.

    python -m nbrunner.supervisor HOME RUN_ID CLAIM

The child's output goes straight to the run's log file, so nothing depends on a reader
keeping up. Each loop step the supervisor:
1. waits briefly for the child to end (its true exit code),
2. marks the run running once its work has begun (a Ray job may wait for resources first),
3. acts on a requested action (cancel, pause, resume) read from the run's row,
4. enforces the timeout (paused time does not count),
5. about once a second samples the tree's CPU and memory, stops it past its memory limit
   and records the figures.
When the run has ended it repairs runs whose owners died, claims the queued runs that may
start (which keeps the queue moving with no kernel open), supervises the first of them itself
and launches supervisors for the others, and runs the module's on_done hook. One supervisor
thus serves runs in turn while a queue drains; each new one pays an interpreter start, so
imports stay few.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, BinaryIO

from .backends import Child, ChildEnded, Usage, start_child
from .errors import NbrunnerError
from .models import RunRecord
from .states import RunStatus
from .store import Store
from .units import format_size

POLL_S = 0.5  # how often a requested action (cancel, pause) is looked for
# A run with a memory limit (or a GPU memory share) is sampled every second, so the limit
# bites early; any other only as often as its figures are recorded.
LIMITED_SAMPLE_S = 1.0
RECORD_EVERY_S = 3.0
HOOK_TIMEOUT_S = 300


@dataclass
class Outcome:
    exit_code: int | None
    status: RunStatus | None = None  # None: decided by the exit code
    reason: str | None = None


class PausableDeadline:
    """A timeout clock that stops while the run is paused."""

    def __init__(self, seconds: float | None) -> None:
        self.left = seconds
        self._since = time.monotonic()
        self._running = True

    def pause(self, paused: bool) -> None:
        now = time.monotonic()
        if paused and self._running and self.left is not None:
            self.left -= now - self._since
        self._since, self._running = now, not paused

    def expired(self) -> bool:
        if self.left is None or not self._running:
            return False
        return time.monotonic() - self._since >= self.left


class Supervisor:
    def __init__(self, store: Store, run_id: int, claim: str) -> None:
        self.store = store
        self.run_id = run_id
        self.claim = claim
        self.grace = float(store.config()["grace_period"])
        self.peak_rss = 0
        self.usage: Usage | None = None

    def run(self) -> RunRecord | None:
        run = self._take_over()
        if run is None:
            return None
        with open(run.log_path, "ab") as log:
            with _pinned(run.cores):  # inherited by the child and everything it spawns
                child = self._start_child(run, log)
            if child is None:
                return self.store.get(self.run_id)
            outcome = self._watch(run, child)
        return self._finish(outcome)

    def _take_over(self) -> RunRecord | None:
        with self.store.write() as tx:
            run = tx.get(self.run_id)
            mine = run.status is RunStatus.STARTING and run.claim_token == self.claim
            if not mine or run.supervisor_pid is not None:
                return None  # cancelled, re-queued or re-claimed, or another supervisor has it
            if run.control == "cancel":
                tx.transition(
                    self.run_id,
                    RunStatus.CANCELLED,
                    ended_at=time.time(),
                    reason="cancelled before it started",
                )
                return None
            tx.update(self.run_id, supervisor_pid=os.getpid(), taken_at=time.time())
            return run

    def _start_child(self, run: RunRecord, log: BinaryIO) -> Child | None:
        env = {**os.environ, **run.env}
        env.setdefault("PYTHONUNBUFFERED", "1")  # live logs, unless the module opted out ("")
        env.setdefault("PYTHONIOENCODING", "utf-8")
        if run.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(run.gpus)
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        try:
            child = start_child(run, log, env)
        except (OSError, NbrunnerError) as exc:
            what = run.argv[0] if run.argv else "(empty command)"
            reason = f"could not start {what}: {exc}"
            log.write(f"nbrunner: {reason}\n".encode())
            self.store.transition(
                self.run_id, RunStatus.FAILED, ended_at=time.time(), reason=reason
            )
            return None
        self.store.update(self.run_id, pid=child.pid, backend_ref=child.ref)
        if child.started:
            self._mark_running()
        return child

    def _mark_running(self) -> None:
        self.store.transition(self.run_id, RunStatus.RUNNING, started_at=time.time())

    def _watch(self, run: RunRecord, child: Child) -> Outcome:
        deadline = PausableDeadline(run.timeout)
        running = child.started
        next_sample = next_record = time.monotonic()
        limited = run.resources.get("memory") or run.resources.get("gpu_memory")
        sample_every = LIMITED_SAMPLE_S if limited else RECORD_EVERY_S
        while True:
            try:
                code = child.wait(POLL_S)
            except ChildEnded as ended:
                return Outcome(ended.exit_code, ended.status, ended.reason)
            if not running and child.started:  # before an exit code: it may come first
                self._mark_running()
                running = True
                deadline = PausableDeadline(run.timeout)  # the timeout counts from running
            if code is not None:
                return Outcome(code)
            control = self.store.control(self.run_id)
            if control == "cancel":
                return self._stop(child, RunStatus.CANCELLED, "cancelled by request")
            if control in ("pause", "resume"):
                self._pause(child, control == "pause", deadline)
            if running and deadline.expired():
                return self._stop(child, RunStatus.TIMED_OUT, f"timed out after {run.timeout:g} s")
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + sample_every
                over = self._sample(run, child)
                if over:
                    return self._stop(child, RunStatus.FAILED, over)
                if now >= next_record and self.usage is not None:  # a Ray job has no usage
                    next_record = now + RECORD_EVERY_S
                    self.store.update(self.run_id, **self._metrics())

    def _stop(self, child: Child, status: RunStatus, reason: str) -> Outcome:
        try:
            return Outcome(child.stop(self.grace), status, reason)
        except ChildEnded as ended:
            return Outcome(ended.exit_code, status, reason)

    def _pause(self, child: Child, paused: bool, deadline: PausableDeadline) -> None:
        target = RunStatus.PAUSED if paused else RunStatus.RUNNING
        try:
            child.pause(paused)
        except NbrunnerError as exc:
            self.store.update(self.run_id, control=None, warning=str(exc))
            return
        deadline.pause(paused)
        with self.store.write() as tx:
            if tx.get(self.run_id).status is not target:
                tx.transition(self.run_id, target, control=None)

    def _sample(self, run: RunRecord, child: Child) -> str | None:
        """Record the tree's use; say why the run must stop if it broke its memory limit."""
        self.usage = child.sample()
        if self.usage is None:
            return None
        self.peak_rss = max(self.peak_rss, self.usage.rss)
        limit = int(run.resources.get("memory") or 0)
        if limit and self.usage.rss > limit:
            return (
                f"used {format_size(self.usage.rss)} of memory, over its limit of "
                f"{format_size(limit)} (peak {format_size(self.peak_rss)}); stopped"
            )
        return self._check_gpu_memory(run)

    def _check_gpu_memory(self, run: RunRecord) -> str | None:
        share = int(run.resources.get("gpu_memory") or 0)
        used = self._gpu_memory(run)
        if not share or used is None or used <= share:
            return None
        message = f"uses {format_size(used)} of GPU memory, over its share of {format_size(share)}"
        if run.resources.get("gpu_memory_strict"):
            return message + "; stopped"
        self.store.update(self.run_id, warning=message)
        return None

    def _gpu_memory(self, run: RunRecord) -> int | None:
        """GPU memory of the tree, where the driver reports it per process."""
        if not run.gpus or self.usage is None:
            return None
        from .gpu import gpu_source

        pids = set(self.usage.pids)
        found = [
            used
            for sample in gpu_source().sample()
            for pid, used in sample.processes.items()
            if pid in pids and used is not None
        ]
        return sum(found) if found else None

    def _metrics(self) -> dict[str, Any]:
        if self.usage is None:
            return {}
        return {
            "cpu_time": round(self.usage.cpu_time, 3),
            "rss": self.usage.rss,
            "cpu_percent": round(self.usage.cpu_percent, 1),
            "peak_rss": self.peak_rss,
        }

    def _finish(self, outcome: Outcome) -> RunRecord:
        status, reason, code = outcome.status, outcome.reason, outcome.exit_code
        if status is None:
            status = RunStatus.SUCCEEDED if code == 0 else RunStatus.FAILED
            reason = None if code == 0 else describe_exit(code)
        # Totals stay in the record; the current figures have no meaning once it ended.
        metrics = {**self._metrics(), "rss": None, "cpu_percent": None}
        return self.store.transition(
            self.run_id, status, exit_code=code, ended_at=time.time(), reason=reason, **metrics
        )


def describe_exit(code: int | None) -> str:
    if code is None:
        return "ended without an exit code"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@contextmanager
def _pinned(cores: list[int]) -> Iterator[None]:
    """This process on `cores` while the child starts; back as it was for the next run.
    Affinity is a request: a platform without it runs the child unpinned."""
    if not cores:
        yield
        return
    import psutil

    me, before = psutil.Process(), None
    with suppress(psutil.Error, AttributeError, ValueError, OSError):
        before = me.cpu_affinity()
        me.cpu_affinity(cores)
    try:
        yield
    finally:
        if before is not None:
            with suppress(psutil.Error, ValueError, OSError):
                me.cpu_affinity(before)


def run_hook(store: Store, record: RunRecord) -> None:
    """The module's on_done command, templated with the outcome; output to a log of its own."""
    values = {
        "id": record.id,
        "module": record.module,
        "status": record.status.value,
        "exit_code": "" if record.exit_code is None else record.exit_code,
    }
    hook_log = store.logs_dir / f"{record.id}.on_done.log"
    with open(hook_log, "ab") as out:
        try:
            argv = [part.format_map(values) for part in record.on_done]
            code = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=HOOK_TIMEOUT_S,
            ).returncode
            out.write(f"nbrunner: on_done hook exited with code {code}\n".encode())
        except (OSError, KeyError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
            out.write(f"nbrunner: on_done hook failed: {exc!r}\n".encode())


def main(argv: list[str] | None = None) -> None:
    """Supervise the claimed run, then keep one of the runs that may start next for this
    process (no new interpreter to pay for) and launch supervisors for the others."""
    home, first_id, claim = (argv if argv is not None else sys.argv[1:])[:3]
    store = Store(home)
    claimed: tuple[int, str] | None = (int(first_id), claim)
    while claimed is not None:
        try:
            record = Supervisor(store, *claimed).run()
        except BaseException:
            keep_the_queue_moving(store, keep_one=False)
            raise
        claimed = keep_the_queue_moving(store, keep_one=True)
        if record is not None and record.is_done and record.on_done:
            run_hook(store, record)
    _drop_empty_stderr(store, first_id)  # not after a crash: its traceback is in there


def keep_the_queue_moving(store: Store, keep_one: bool) -> tuple[int, str] | None:
    """Repair runs whose owners died, claim what may start and launch supervisors for it,
    keeping the first for this process if asked. A failed repair is reported and must not
    keep the queue from moving."""
    from . import reconcile, scheduler  # loaded once the child runs: they are not cheap

    try:
        reconcile.repair(store)  # with no kernel open, supervisors are the ones who look
    except Exception:
        traceback.print_exc()
    runs = scheduler.claim_ready(store)
    kept = runs.pop(0) if keep_one and runs else None
    scheduler.launch(store, runs)
    return (kept.id, kept.claim_token) if kept is not None else None


def _drop_empty_stderr(store: Store, run_id: str) -> None:
    err = store.logs_dir / f"{run_id}.supervisor.err"
    try:
        if err.stat().st_size == 0:
            err.unlink()
    except OSError:
        pass


if __name__ == "__main__":
    main()
