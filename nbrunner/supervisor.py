"""One small detached process per run: starts the child, watches it, records how it ended.

    python -m nbrunner.supervisor HOME RUN_ID

The child's output goes straight to the run's log file, so nothing depends on a reader
keeping up. The supervisor polls its run's row for requested actions (cancel), enforces the
timeout, records the true exit code, then claims and launches the next queued runs before it
exits, which keeps the queue moving with no kernel open. Imports stay few: this start-up is
paid once per run.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import BinaryIO

from . import reconcile, scheduler
from .backends import Child, ChildEnded, start_child
from .errors import NbrunnerError
from .models import RunRecord
from .states import RunStatus
from .store import Store

POLL_S = 0.25


class Supervisor:
    def __init__(self, store: Store, run_id: int) -> None:
        self.store = store
        self.run_id = run_id
        self.grace = float(store.config()["grace_period"])

    def run(self) -> None:
        run = self._take_over()
        if run is None:
            return
        with open(run.log_path, "ab") as log:
            child = self._start_child(run, log)
            if child is None:
                return
            try:
                code, status, reason = self._watch(run, child)
            except ChildEnded as ended:
                code, status, reason = ended.exit_code, ended.status, ended.reason
        self._finish(code, status, reason)

    def _take_over(self) -> RunRecord | None:
        with self.store.write() as tx:
            run = tx.get(self.run_id)
            if run.status is not RunStatus.STARTING or run.supervisor_pid is not None:
                return None  # cancelled, re-queued or taken by another supervisor meanwhile
            if run.control == "cancel":
                tx.transition(
                    self.run_id,
                    RunStatus.CANCELLED,
                    ended_at=time.time(),
                    reason="cancelled before it started",
                )
                return None
            tx.update(self.run_id, supervisor_pid=os.getpid())
            return run

    def _start_child(self, run: RunRecord, log: BinaryIO) -> Child | None:
        env = {**os.environ, **run.env, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
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
        return child

    def _mark_running(self) -> float:
        """Record that the run's work has begun; returns when, on the monotonic clock."""
        self.store.transition(self.run_id, RunStatus.RUNNING, started_at=time.time())
        return time.monotonic()

    def _watch(self, run: RunRecord, child: Child) -> tuple[int, RunStatus | None, str | None]:
        """Wait for the child; on cancel or timeout stop it and say why.

        The run is `running` once its backend says its work began (a Ray job waiting for
        resources is still `starting`); the timeout counts from then.
        """
        started: float | None = None
        while True:
            if started is None and child.started:
                started = self._mark_running()
            code = child.wait(POLL_S)
            if code is not None:
                if started is None:
                    self._mark_running()
                return code, None, None
            if self.store.control(self.run_id) == "cancel":
                return child.stop(self.grace), RunStatus.CANCELLED, "cancelled by request"
            if started is not None and run.timeout and time.monotonic() - started >= run.timeout:
                code = child.stop(self.grace)
                return code, RunStatus.TIMED_OUT, f"timed out after {run.timeout:g} s"

    def _finish(self, code: int | None, status: RunStatus | None, reason: str | None) -> None:
        if status is None and code is not None:
            status = RunStatus.SUCCEEDED if code == 0 else RunStatus.FAILED
            reason = None if code == 0 else describe_exit(code)
        self.store.transition(
            self.run_id, status, exit_code=code, ended_at=time.time(), reason=reason
        )


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def main(argv: list[str] | None = None) -> None:
    home, run_id = (argv if argv is not None else sys.argv[1:])[:2]
    store = Store(home)
    try:
        Supervisor(store, int(run_id)).run()
    finally:
        reconcile.repair(store)  # with no kernel open, supervisors are the ones who look
        scheduler.launch_ready(store)
        _drop_empty_stderr(store, run_id)


def _drop_empty_stderr(store: Store, run_id: str) -> None:
    err = store.logs_dir / f"{run_id}.supervisor.err"
    try:
        if err.stat().st_size == 0:
            err.unlink()
    except OSError:
        pass


if __name__ == "__main__":
    main()
