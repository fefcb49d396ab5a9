"""One small detached process per run: starts the child, watches it, records how it ended.

    python -m nbrunner.supervisor HOME RUN_ID

The child's stdout and stderr go straight to the run's log file, so nothing depends on a
reader keeping up. The supervisor polls its run's row for requested actions (cancel), enforces
the timeout, records the true exit code, then claims and launches the next queued runs before
it exits, which keeps the queue moving with no kernel open. Imports stay few: this start-up
is paid once per run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from typing import BinaryIO

from . import platform, scheduler
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
            proc = self._start_child(run, log)
            if proc is None:
                return
            status, reason = self._watch(run, proc)
        self._finish(proc.returncode, status, reason)

    def _take_over(self) -> RunRecord | None:
        with self.store.write() as tx:
            run = tx.get(self.run_id)
            if run.status is not RunStatus.STARTING:
                return None  # cancelled, or taken by someone else, before we came up
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

    def _start_child(self, run: RunRecord, log: BinaryIO) -> subprocess.Popen[bytes] | None:
        env = {**os.environ, **run.env, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
        if run.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(run.gpus)
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        try:
            proc = subprocess.Popen(
                run.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=run.cwd or None,
                env=env,
                **platform.child_popen_kwargs(),
            )
        except OSError as exc:
            reason = f"could not start {run.argv[0] if run.argv else '(empty command)'}: {exc}"
            log.write(f"nbrunner: {reason}\n".encode())
            self.store.transition(
                self.run_id, RunStatus.FAILED, ended_at=time.time(), reason=reason
            )
            return None
        self.store.transition(self.run_id, RunStatus.RUNNING, pid=proc.pid, started_at=time.time())
        return proc

    def _watch(
        self, run: RunRecord, proc: subprocess.Popen[bytes]
    ) -> tuple[RunStatus | None, str | None]:
        """Wait for the child; on cancel or timeout stop its tree and say why."""
        deadline = time.monotonic() + run.timeout if run.timeout else None
        while True:
            try:
                proc.wait(timeout=POLL_S)
                return None, None
            except subprocess.TimeoutExpired:
                pass
            if self.store.control(self.run_id) == "cancel":
                stop_tree(proc, self.grace)
                return RunStatus.CANCELLED, "cancelled by request"
            if deadline is not None and time.monotonic() >= deadline:
                stop_tree(proc, self.grace)
                return RunStatus.TIMED_OUT, f"timed out after {run.timeout:g} s"

    def _finish(self, code: int, status: RunStatus | None, reason: str | None) -> None:
        if status is None:
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


def stop_tree(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Graceful signal to the whole tree, then a kill once the grace period is over.

    Descendants are listed first, so that any that left the child's process group (their
    own setsid) are still reached.
    """
    import psutil  # only paid on the kill path

    def alive(p: psutil.Process) -> bool:
        with suppress(psutil.Error):
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        return False

    tree: list[psutil.Process] = []
    with suppress(psutil.Error):
        tree = psutil.Process(proc.pid).children(recursive=True)
    platform.signal_group(proc.pid, graceful=True)
    for member in tree:
        with suppress(psutil.Error):
            member.terminate()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (proc.poll() is None or any(map(alive, tree))):
        time.sleep(0.05)
    platform.signal_group(proc.pid, graceful=False)
    for member in tree:
        with suppress(psutil.Error):
            member.kill()
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def main(argv: list[str] | None = None) -> None:
    home, run_id = (argv if argv is not None else sys.argv[1:])[:2]
    store = Store(home)
    try:
        Supervisor(store, int(run_id)).run()
    finally:
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
