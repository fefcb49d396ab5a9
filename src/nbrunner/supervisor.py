"""Watching one run from the service: its state, limits, controls and how it ended.

The service holds one watch per run it supervises. A watch learns what is true from the
recorder's journal (runs/ID.lock), its lock or its process handle, and the
child's pid with its start marker; the service compares that with the store on every pass
and writes whatever step is missing (running, started_at, how a stop was meant to end, the
end itself), so a write that failed once is simply made on a later pass.

What must hold even while no service runs is enforced by the recorder, where the child is
held: the timeout (paused time excluded) and the memory limit; its exit record says how such
a stop was meant to end. The service carries out cancels and pauses, GPU memory shares, and
samples the tree's figures. Stopping never blocks a pass: SIGTERM, then SIGKILL once the
grace period is over. How a stop was meant to end (`ending`) is kept in memory until the
store takes it, so a locked store never delays a kill. A Ray run is watched by a thread of
its own (its client calls block).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import platform
from .backends import ChildEnded, Usage
from .errors import NbrunnerError
from .failure import run_failure
from .models import RunRecord
from .recorder import RunFiles
from .states import RunStatus

if TYPE_CHECKING:
    from .backends.tree import ProcessTree
    from .store import Store

# A run with a GPU memory share is sampled every second, so the share (the service's to
# enforce) bites early; a run on GPUs as often as its figures are recorded (its processes
# tell the runs' GPU memory from others'); any other only while someone reads its figures
# (`watched`): its recorder enforces its memory limit and timeout itself.
LIMITED_SAMPLE_S = 1.0
RECORD_EVERY_S = 3.0
# How often an adopted run's recorder (no handle here: a previous service started it) is
# looked for by its lock; it wakes the service when it ends, so this only catches a recorder
# killed before it could say so.
ADOPTED_CHECK_S = 5.0
HOOK_TIMEOUT_S = 300
RAY_POLL_S = 0.5


@dataclass
class Outcome:
    exit_code: int | None
    status: RunStatus | None = None  # None: decided by the exit code
    reason: str | None = None

    def decided(self) -> tuple[RunStatus, str | None]:
        if self.status is not None:
            return self.status, self.reason
        if self.exit_code == 0:
            return RunStatus.SUCCEEDED, None
        return RunStatus.FAILED, describe_exit(self.exit_code)


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


def describe_exit(code: int | None) -> str:
    if code is None:
        return "ended without an exit code"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def outcome_from_exit(record: RunRecord, ended: dict[str, Any]) -> Outcome:
    """The run's outcome from its recorder's exit record and what the service had asked."""
    code = ended.get("exit_code")
    if ended.get("error"):
        return Outcome(None, RunStatus.FAILED, str(ended["error"]))
    ending = record.ending or ended.get("ending")  # the service's stop, or the recorder's
    if ending:
        return Outcome(code, RunStatus(ending["status"]), ending["reason"])
    if record.control == "cancel":
        return Outcome(code, RunStatus.CANCELLED, "cancelled by request")
    if code and record.notebook_path:
        return Outcome(code, RunStatus.FAILED, _notebook_failure(record) or describe_exit(code))
    if code:  # says why: the exception, the signal, the crash code or the last words
        return Outcome(code, RunStatus.FAILED, run_failure(code, record.log_path, record.pid))
    return Outcome(code)


def _notebook_failure(record: RunRecord) -> str | None:
    """The executor's last word on a failed notebook: which cell, and the exception."""
    from .logs import last_line
    from .notebook import LOG_PREFIX

    line = last_line(record.log_path)
    return line[len(LOG_PREFIX) :].strip() if line.startswith(LOG_PREFIX) else None


class LocalWatch:
    """The service's view of one local run, advanced on every tick."""

    def __init__(self, record: RunRecord, home: str, recorder: Any = None) -> None:
        self.record = record
        self.files = RunFiles.of(home, record.id)
        self.recorder = recorder  # a handle (pid, poll()) when this service started it
        self.recorder_gone = False  # its handle says it ended
        self.child: tuple[int, str | None] | None = None
        self.started_at: float | None = None
        self.ending: dict[str, str] | None = None  # a stop this service began (status, reason)
        self.ended: dict[str, Any] | None = None  # the exit record, once read
        self.lost = False
        self.applied: str | None = None  # the last control (pause, resume) carried out
        self.stopping = False
        self.grace = 0.0
        self.kill_at: float | None = None
        self.usage: Usage | None = None
        self.peak_rss = record.peak_rss or 0
        self.next_sample = self.next_record = 0.0
        self.next_lock_check = 0.0
        self._tree: ProcessTree | None = None
        self._journal_seen: tuple[int, int] | None = None  # when last read (journal_state)
        self._recorded: dict[str, Any] = {}
        self.pause_marked = False  # runs/ID.pause was written
        self.legacy_seen = False  # an earlier release's holder wrote its own files

    # -- what the recorder said -----------------------------------------------------------
    @property
    def recorder_pid(self) -> int | None:
        return self.recorder.pid if self.recorder is not None else None

    def look(self) -> dict[str, Any] | None:
        """Read what its recorder has recorded: the child once started, and how it ended
        (returned, None while it has not). Read again only once the journal has changed:
        a pass looks at every run, and most have nothing new."""
        state = self.files.journal_state()
        if state is None or not state[1] or state != self._journal_seen:
            self._recorded = self.files.recorded()
            self._journal_seen = state
            self.legacy_seen = self.legacy_seen or bool(self._recorded and not (state and state[1]))
        found = self._recorded
        started = found.get("child")
        if self.child is None and started is not None:
            self.child = (int(started["pid"]), started.get("marker"))
            self.started_at = float(started["at"])
        return found.get("exit")

    def remove_files(self) -> None:
        """Its files, once its end is written: the journal, and what else may be left. A
        run this service handed over leaves no spec once started, no pause file unless
        paused, no file of an earlier release unless one was read; of an adopted run
        nothing is known."""
        adopted = self.recorder is None
        self.files.remove(
            spec=adopted or self.child is None,
            pause=adopted or self.pause_marked,
            legacy=adopted or self.legacy_seen,
        )

    def recorder_dead(self, now: float) -> bool:
        """Gone: its handle says so, or (adopted) its lock is free."""
        if self.recorder_gone:
            return True
        if self.recorder is not None or now < self.next_lock_check:
            return False
        self.next_lock_check = now + ADOPTED_CHECK_S
        return not self.files.recorder_alive()

    # -- acting on the child ----------------------------------------------------------------
    def child_is_ours(self) -> bool:
        """The recorded pid is still the run's child: never signal a process not proven so."""
        return self.child is not None and platform.is_same_process(*self.child)

    def begin_stop(self, status: RunStatus, reason: str, grace: float) -> None:
        """Signal first; how it was meant to end is written to the store after."""
        self.ending = {"status": status.value, "reason": reason}
        self.stopping, self.grace = True, grace
        self.escalate()

    def escalate(self) -> None:
        """SIGTERM once the child is known (it may not be yet), SIGKILL after the grace."""
        if not self.stopping or self.child is None:
            return
        from .backends.tree import escalate

        self.kill_at = escalate(self.signal, self.kill_at, self.grace, time.monotonic())

    def signal(self, graceful: bool) -> None:
        if not self.child_is_ours():
            return
        from .backends.tree import stop_signal

        stop_signal(self.child[0], self.tree_members)(graceful)  # type: ignore[index]

    def pause(self, paused: bool) -> None:
        if not self.child_is_ours():
            return
        from .backends.tree import suspend_tree

        suspend_tree(self.child[0], paused, self.tree_members())  # type: ignore[index]

    def tree_members(self) -> list[Any]:
        tree = self.tree()
        return tree.members(rescan=True) if tree is not None else []

    def tree(self) -> ProcessTree | None:
        if self._tree is None and self.child_is_ours():
            from .backends.tree import ProcessTree

            self._tree = ProcessTree.of(self.child[0])  # type: ignore[index]
        return self._tree

    # -- sampling ---------------------------------------------------------------------------
    def sample_every(self, watched: bool) -> float | None:
        """How often this run's tree is sampled now; None: not at all (no one reads it)."""
        if self.child is None:
            return None
        if self.record.resources.get("gpu_memory"):
            return LIMITED_SAMPLE_S
        return RECORD_EVERY_S if watched or self.record.gpus else None

    def sample_due(self, now: float, watched: bool) -> bool:
        every = self.sample_every(watched)
        if every is None or now < self.next_sample:
            return False
        self.next_sample = now + every
        return True

    def next_wake(self, watched: bool) -> float | None:
        """The monotonic time this run next needs a pass (a kill after the grace, a look
        at an adopted recorder, a sample), or None: only an event concerns it."""
        if self.ended is not None or self.lost:
            return None
        wakes = [self.kill_at] if self.stopping and self.kill_at is not None else []
        if self.recorder is None and not self.recorder_gone:
            wakes.append(self.next_lock_check)
        if self.sample_every(watched) is not None:
            wakes.append(self.next_sample)
        return min(wakes, default=None)

    def sample(self) -> None:
        """Take the tree's figures (its memory limit is its recorder's to enforce)."""
        tree = self.tree()
        self.usage = tree.sample() if tree is not None else None
        if self.usage is not None:
            self.peak_rss = max(self.peak_rss, self.usage.rss)

    def metrics(self) -> dict[str, Any]:
        if self.usage is None:
            return {}
        return {
            "cpu_time": round(self.usage.cpu_time, 3),
            "rss": self.usage.rss,
            "cpu_percent": round(self.usage.cpu_percent, 1),
            "peak_rss": self.peak_rss,
        }

    def final_metrics(self) -> dict[str, Any]:
        """Totals stay in the record; the current figures mean nothing once it ended. The
        recorder's figures (the OS's accounts at the child's exit) count however short the
        run was; samples count what the child's accounts miss (descendants it never
        waited for, the sum of a tree's memory)."""
        found = {**self.metrics(), "rss": None, "cpu_percent": None}
        for key, digits in (("cpu_time", 3), ("peak_rss", 0)):
            at_exit = (self.ended or {}).get(key)
            if at_exit is not None:
                found[key] = round(max(float(at_exit), float(found.get(key) or 0)), digits)
        if found.get("peak_rss") is not None:
            found["peak_rss"] = int(found["peak_rss"])
        return found

    def gpu_memory(self, samples: list[Any]) -> int | None:
        """GPU memory of the tree, where the driver reports it per process."""
        found = [used for used in self._on_gpus(samples) if used is not None]
        return sum(found) if found else None

    def gpu_memory_hidden(self, samples: list[Any]) -> bool:
        """The tree is on a GPU whose driver hides per-process memory (Windows WDDM)."""
        return None in self._on_gpus(samples)

    def _on_gpus(self, samples: list[Any]) -> list[int | None]:
        if not self.record.gpus or self.usage is None:
            return []
        pids = set(self.usage.pids)
        return [used for s in samples for pid, used in s.processes.items() if pid in pids]


class RayWatch:
    """A Ray run, watched by a thread of its own; the service reads `outcome` each tick."""

    child = None  # no local process: the job's processes are the cluster's

    def __init__(self, store: Store, record: RunRecord, env: dict[str, str], grace: float) -> None:
        self.record = record
        self.store = store
        self.env = env
        self.grace = grace
        self.outcome: Outcome | None = None
        self.running = record.status is RunStatus.RUNNING
        self.job: Any = None
        self.stop_requested: tuple[RunStatus, str] | None = None
        self._thread = threading.Thread(target=self._watch, name=f"ray {record.id}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            self.outcome = self._follow()
        except ChildEnded as ended:
            self.outcome = Outcome(ended.exit_code, ended.status, ended.reason)
        except Exception as exc:  # any failure of Ray's client ends the run
            self.outcome = Outcome(None, RunStatus.FAILED, f"the Ray job failed: {exc}")

    def _follow(self) -> Outcome:
        from .backends.ray import attach_ray_job, start_ray_job

        with open(self.record.log_path, "ab") as log:
            if self.record.backend_ref:
                self.job = attach_ray_job(self.record, log)
            else:
                try:
                    self.job = start_ray_job(self.record, log, self.env)
                except (OSError, NbrunnerError) as exc:
                    reason = f"could not start the Ray job: {exc}"
                    log.write(f"nbrunner: {reason}\n".encode())
                    return Outcome(None, RunStatus.FAILED, reason)
                self.store.update(self.record.id, backend_ref=self.job.ref)
            deadline = PausableDeadline(self.record.timeout)
            while True:
                code = self.job.wait(RAY_POLL_S)
                if code is not None:
                    return Outcome(code)
                if self.stop_requested is not None:
                    status, reason = self.stop_requested
                    try:
                        return Outcome(self.job.stop(self.grace), status, reason)
                    except ChildEnded as ended:
                        return Outcome(ended.exit_code, ended.status, ended.reason)
                if self.job.started and not self.running:
                    self.running = True
                    deadline = PausableDeadline(self.record.timeout)
                if self.running and deadline.expired():
                    self.stop_requested = (
                        RunStatus.TIMED_OUT,
                        f"timed out after {self.record.timeout:g} s",
                    )


def run_hook(logs_dir: Any, record: RunRecord) -> None:
    """The module's on_done command, templated with the outcome; output to a log of its own."""
    values = {
        "id": record.id,
        "module": record.module,
        "status": record.status.value,
        "exit_code": "" if record.exit_code is None else record.exit_code,
    }
    hook_log = logs_dir / f"{record.id}.on_done.log"
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
