"""Holding runs: one thread that starts each run's child, copies its output into the run's
log, enforces its timeout and memory limit, stops what it leaves behind and writes how it
ended, for as many runs as it is handed (the keeper) or for one (a forked or spawned
recorder), the same code either way.

The thread sleeps in one `select` on everything that can happen: a child's output (its
pipe), a child's exit (a Linux pidfd), the next deadline (a run's timeout, a memory check,
a retried write) and a wake from outside. Each event moves its run one step on
(`HeldRun.advance`, which looks at what has happened so far, not at the event), so nothing
depends on the order in which events come. Where the OS has no descriptor to wait on (no
pidfd: macOS, old kernels; Windows, whose `select` takes sockets only), a small thread per
run waits instead and hands what it saw to the loop (`Holder.post`): that is the whole OS
seam. No run costs a thread of its own where pidfds exist: a thread per run was 53 futex
calls (GIL hand-overs) per run for a keeper holding ten.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from . import platform
from .recorder import (
    KEPT_LEFTOVER_DRAIN_S,
    LEFTOVER_GRACE_S,
    PUMP_CHUNK,
    Backoff,
    CappedLog,
    Guard,
    RecorderSpec,
    RunFiles,
    RunJournal,
    ServiceLink,
)

CHILD_FILE_PATIENCE_S = 2.0  # then the child, which no one could find or cancel, is stopped
LEFTOVER_LOOK_S = 0.05  # how often stopped leftovers are looked for until the grace is over
# Windows' select() takes sockets only, and macOS and old kernels have no pidfd: there a
# thread per run waits instead. Set to "1", it takes that path anywhere (the tests do).
THREADS_ENV = "NBRUNNER_HOLD_IN_THREADS"


class Timer:
    """A callback due at a monotonic time; cancelled ones are dropped as they come due."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Holder:
    """The loop: runs by id, the descriptors it sleeps on, its timers, and what the seam's
    threads posted. In a process of its own (the keeper, a recorder), it is the subreaper
    of its runs' orphans and reaps those no run waits for (their pids are in `own`)."""

    def __init__(self, link: ServiceLink, *, own_process: bool = True) -> None:
        self.link = link
        self.in_threads = platform.IS_WINDOWS or os.environ.get(THREADS_ENV) == "1"
        self.runs: dict[int, HeldRun] = {}
        self.own: set[int] = set()  # the runs' children: their exit codes are theirs
        self.selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._posted: deque[Callable[[], None]] = deque()
        self._untold: dict[str, bool] = {}  # home → only starts to tell (else an end too)
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)  # full: a wake is pending already
        self.watch(self._wake_in, self._drain_wakes)
        # Orphans and exit statuses are the whole process's: a holder inside another
        # program (a test's) must neither adopt that program's orphans nor reap its children.
        self.reaps = own_process and not platform.IS_WINDOWS  # Windows: no zombies to reap
        if own_process:
            platform.become_subreaper()

    # -- the loop -------------------------------------------------------------------------
    def step(self, timeout: float | None) -> None:
        """Sleep until something happens (or timeout seconds pass), then handle it all;
        the service hears of what changed before the loop sleeps again."""
        self.tell_service()  # what was done between two steps (runs taken)
        for key, _ in self.selector.select(self._wait_s(timeout)):
            key.data()
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled:
                timer.callback()
        while self._posted:
            self._posted.popleft()()
        self.reap_orphans()
        self.tell_service()

    def tell(self, home: str, started: bool) -> None:
        """A run of `home` started (or ended: `started` False): its service is told once
        this step is done, once for all the runs it moved (each wake costs both sides a
        system call and the service a pass)."""
        self._untold[home] = self._untold.get(home, True) and started

    def tell_service(self) -> None:
        """Tell the services what the runs did since they were last told."""
        while self._untold:
            home, started = self._untold.popitem()
            self.link.tell(home, started)

    def _wait_s(self, timeout: float | None) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return timeout
        due = max(self._timers[0][0] - time.monotonic(), 0.0)
        return due if timeout is None else min(due, timeout)

    def later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def watch(self, source: Any, callback: Callable[[], None]) -> None:
        self.selector.register(source, selectors.EVENT_READ, callback)

    def unwatch(self, source: Any) -> None:
        with suppress(KeyError, ValueError):
            self.selector.unregister(source)

    def post(self, callback: Callable[[], None]) -> None:
        """From a seam thread: run callback in the loop, which wakes for it."""
        self._posted.append(callback)
        with suppress(OSError):
            self._wake_out.send(b"w")

    def _drain_wakes(self) -> None:
        with suppress(OSError):  # BlockingIOError once every byte is read
            while self._wake_in.recv(4096):
                pass

    # -- runs -----------------------------------------------------------------------------
    def hold(self, spec: RecorderSpec, journal: RunJournal | None = None) -> bool:
        """Start the run's child: a run taken with its journal (the keeper's), or one whose
        journal is made here; False if another recorder has it."""
        files = RunFiles.of(spec.home, spec.run_id)
        if journal is None:
            with suppress(OSError):  # removed under a living service
                files.directory.mkdir(mode=0o700, exist_ok=True)
            journal = RunJournal.create(files.lock)
            if journal is None:
                return False
        run = HeldRun(self, spec, files, journal)
        self.runs[spec.run_id] = run
        run.safely(run.start)
        return True

    def fail(self, home: str, journal: RunJournal, reason: str) -> None:
        """A run that will not be held (its spec could not be read): its journal says why."""
        outcome = {"exit_code": None, "error": reason, "ended_at": time.time()}
        ExitWriter(self, home, journal, outcome, journal.close).write()

    def reap_orphans(self) -> None:
        """Reap exited orphans, one syscall when there are none; a run's own child next in
        line is left to its run (whose exit watch fires in this same pass)."""
        while self.reaps:
            try:
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if found is None or found.si_pid in self.own:
                return
            with suppress(ChildProcessError):
                os.waitpid(found.si_pid, 0)

    def may_have_leftovers(self, child_pid: int) -> bool:
        """Whether the run's group still has a process, or any orphan (whose run is not
        known without a look at it) has come to this holder. Windows: the run's job knows."""
        if platform.IS_WINDOWS:  # pragma: no cover
            return True
        with suppress(OSError):
            os.killpg(child_pid, 0)
            return True
        return any(pid not in self.own for pid in platform.direct_children())


class ExitWriter:
    """Writes how a run ended into its journal, retried (a full disk frees, a removed runs/
    folder is made again) without holding up the loop, until written or until the home
    itself is gone: then no one will ever read it. Then the service is told, and `then` is
    called."""

    def __init__(
        self,
        holder: Holder,
        home: str,
        journal: RunJournal,
        outcome: dict[str, Any],
        then: Callable[[], None],
    ) -> None:
        self.holder, self.home, self.journal = holder, home, journal
        self.outcome, self.then = outcome, then
        self.retry = Backoff()

    def write(self) -> None:
        try:
            self.journal.append("exit", self.outcome)
        except OSError:
            if Path(self.home).is_dir():
                self.holder.later(self.retry.next(), self.write)
                return
        self.holder.tell(self.home, started=False)
        self.then()


class HeldRun:
    """One run from its child's start to its exit record, moved on by events.

    Like Slurm's stepd, it starts the child in a session of its own, copies its output into
    the run's log under the size cap (the output is watched before anything may block),
    learns the true exit code, then stops whatever the child left behind, unless the module
    asked to keep it, and records the exit only once the log has all the output.
    """

    def __init__(
        self, holder: Holder, spec: RecorderSpec, files: RunFiles, journal: RunJournal
    ) -> None:
        self.holder, self.spec, self.files, self.journal = holder, spec, files, journal
        self.log: CappedLog | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.guard: Guard | None = None
        self.limits: Timer | None = None
        self.start_writes: Backoff | None = None  # while its start is not yet recorded
        self.start_deadline = 0.0
        self.ended: platform.ChildExit | None = None
        self.ended_at = 0.0
        self.error: str | None = None
        self.started: dict[str, Any] = {}
        self.output_open = False
        self.log_closed = False
        self.leftovers: Leftovers | None = None
        self.drain: Timer | None = None  # a kept leftover may hold the output pipe for good
        self.drain_over = False
        self.exit: str | None = None  # "writing", "written"; "failed": not held

    def safely(self, step: Callable[[], None]) -> None:
        """One run's failure must not end the others: it ends this run, saying why."""
        try:
            step()
        except Exception as exc:
            print(f"nbrunner: run {self.spec.run_id}: {exc!r}", file=sys.stderr, flush=True)
            self.abandon(f"nbrunner could not hold the run: {exc!r}")

    def on(self, step: Callable[[], None]) -> Callable[[], None]:
        return lambda: self.safely(step)

    # -- start ----------------------------------------------------------------------------
    def start(self) -> None:
        spec = self.spec
        try:
            self.log = CappedLog(spec.log_path, spec.max_log_size)
        except OSError as exc:
            return self.fail(f"could not open the run's log {spec.log_path}: {exc}")
        try:
            with _pinned(spec.cores):  # the child and its tree inherit the loop's affinity
                child = _start(spec)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            what = spec.argv[0] if spec.argv else "(empty command)"
            return self.fail(f"could not start {what}: {exc}")
        self.child = child
        self.holder.own.add(child.pid)
        platform.contain(child, spec.keep_leftovers, spec.memory_limit)
        self._watch_output(child)  # first: a child must never block on a full pipe
        self._watch_exit(child)
        marker = platform.start_marker(child.pid)
        self.started = {"pid": child.pid, "marker": marker, "at": time.time()}
        self.guard = Guard(spec, self.files, child.pid)
        self.start_writes = Backoff()
        self.start_deadline = time.monotonic() + CHILD_FILE_PATIENCE_S
        self._write_start()

    def _write_start(self) -> None:
        assert self.start_writes is not None and self.child is not None
        try:
            self.journal.append("child", self.started)
        except OSError as exc:
            if time.monotonic() < self.start_deadline:
                self.holder.later(self.start_writes.next(), self.on(self._write_start))
                return
            # no one could find, cancel or adopt this child: stop it now (what it left: below)
            self.error = (
                f"could not record the run's start in {self.journal.path} ({exc}); it was stopped"
            )
            self._note(self.error)
            self.guard = None
            platform.signal_group(self.child.pid, graceful=False)
        else:
            self.holder.tell(self.spec.home, started=True)
        self.start_writes = None
        self._watch_limits()
        self.advance()

    def _watch_limits(self) -> None:
        """The next look at its timeout or memory; none at all for a run without limits."""
        wait = self.guard.wait_s() if self.guard is not None and self.ended is None else None
        if wait is not None:
            self.limits = self.holder.later(wait, self.on(self._check_limits))

    def _check_limits(self) -> None:
        if self.guard is not None and self.ended is None:
            self.guard.check()
            self._watch_limits()

    # -- output and exit: pidfd and pipe where the OS has them, else a thread each ----------
    def _watch_output(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None and self.log is not None
        self.output_open = True
        if self.holder.in_threads:
            self._in_thread(_pump, child.stdout, self.log, then=self._output_ended)
            return
        os.set_blocking(child.stdout.fileno(), False)
        self.holder.watch(child.stdout, self.on(self._read_output))

    def _read_output(self) -> None:
        assert self.child is not None and self.child.stdout is not None
        assert self.log is not None
        if self.child.stdout.closed:  # abandoned in this same pass
            return
        try:
            data = os.read(self.child.stdout.fileno(), PUMP_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.log.write(data)
            return
        self.holder.unwatch(self.child.stdout)
        self.child.stdout.close()
        self._output_ended()

    def _output_ended(self) -> None:
        self.output_open = False
        self.advance()

    def _watch_exit(self, child: subprocess.Popen[bytes]) -> None:
        signal_fd = None if self.holder.in_threads else platform.exit_signal(child.pid)
        if signal_fd is None:
            self._in_thread(platform.wait_child, child, None, then=self._exited)
            return

        def exited() -> None:
            self.holder.unwatch(signal_fd)
            os.close(signal_fd)
            self._exited(platform.reap_child(child))

        self.holder.watch(signal_fd, self.on(exited))

    def _in_thread(self, wait: Callable[..., Any], *args: Any, then: Callable[..., None]) -> None:
        def waiter() -> None:
            found = wait(*args)
            self.holder.post(self.on(lambda: then(found) if found is not None else then()))

        threading.Thread(target=waiter, daemon=True).start()

    def _exited(self, ended: platform.ChildExit) -> None:
        assert self.child is not None
        self.ended, self.ended_at = ended, time.time()
        self.holder.own.discard(self.child.pid)
        if self.limits is not None:
            self.limits.cancel()
        if not self.spec.keep_leftovers and self.holder.may_have_leftovers(self.child.pid):
            self.leftovers = Leftovers(self.child.pid, self.spec.run_id)
            self._stop_leftovers()
        self.advance()

    def _stop_leftovers(self) -> None:
        assert self.leftovers is not None
        again = self.leftovers.step(time.monotonic())
        if again is None:
            self.leftovers = None
            self.advance()
        else:
            self.holder.later(again, self.on(self._stop_leftovers))

    # -- the end --------------------------------------------------------------------------
    def advance(self) -> None:
        """The next step, from what has happened so far: the exit record once the child's
        start is recorded, it has ended, its leftovers are gone and its output is all in the
        log (or a kept leftover has held the output past KEPT_LEFTOVER_DRAIN_S); the run is
        let go once its exit is recorded and its output has ended."""
        if self.start_writes is not None or self.ended is None or self.leftovers is not None:
            return
        if self.exit is None:
            if not self.output_open or self.drain_over:
                self._write_exit()
            elif self.spec.keep_leftovers and self.drain is None:
                self.drain = self.holder.later(KEPT_LEFTOVER_DRAIN_S, self.on(self._drain_over))
        elif self.exit == "written" and not self.output_open:
            self._let_go()

    def _drain_over(self) -> None:
        self.drain_over = True
        self.advance()

    def _write_exit(self) -> None:
        assert self.ended is not None and self.log is not None
        self.exit = "writing"
        if self.drain is not None:
            self.drain.cancel()
        if not self.output_open:
            self._close_log()
        code, usage = self.ended
        outcome: dict[str, Any] = {
            "exit_code": code, "ended_at": self.ended_at, "log_dropped": self.log.dropped,
            **usage,
        }  # fmt: skip
        if self.error is not None:
            outcome["error"] = self.error
        elif self.guard is not None and self.guard.ending is not None:
            outcome["ending"] = self.guard.ending
        ExitWriter(self.holder, self.spec.home, self.journal, outcome, self._exit_written).write()

    def _exit_written(self) -> None:
        self.exit = "written"
        self.journal.close()  # a kept leftover may still write: its output keeps going to the log
        self.advance()

    def _let_go(self) -> None:
        self._close_log()
        self.journal.close()
        self.holder.runs.pop(self.spec.run_id, None)

    def _close_log(self) -> None:
        if self.log is not None and not self.log_closed:
            self.log_closed = True
            self.log.close()

    # -- a run that never started, or could not be held ------------------------------------
    def fail(self, reason: str) -> None:
        """The child never started, or cannot be held: say why in its log and its journal."""
        self.exit = "failed"  # whatever comes later for this run changes nothing
        self._note(reason)
        outcome = {"exit_code": None, "error": reason, "ended_at": time.time()}
        ExitWriter(self.holder, self.spec.home, self.journal, outcome, self._let_go).write()

    def abandon(self, reason: str) -> None:
        """A step of this run raised: its child is stopped, and its journal says why (not
        its log, which may be what failed)."""
        if self.child is not None:
            if self.child.stdout is not None:
                self.holder.unwatch(self.child.stdout)
                with suppress(OSError):
                    self.child.stdout.close()
            if self.ended is None:
                platform.signal_group(self.child.pid, graceful=False)
        if self.log is not None and not self.log_closed:
            self.log_closed = True
            with suppress(Exception):
                self.log.close()
        self.output_open = False
        self.fail(reason)

    def _note(self, text: str) -> None:
        if self.log is not None and not self.log_closed:
            self.log.write(f"nbrunner: {text}\n".encode())


class Leftovers:
    """Stopping what a run's child left behind, one step at a time: its process group, and
    every descendant of the holder that belongs to the run (its session, or its
    NBRUNNER_RUN_ID; orphans come to the holder as the subreaper on Linux; on Windows they
    are in the run's job object). SIGTERM, then SIGKILL once LEFTOVER_GRACE_S is over."""

    def __init__(self, child_pid: int, run_id: int, grace: float = LEFTOVER_GRACE_S) -> None:
        from .backends.tree import escalate

        self.child_pid, self.run_id, self.grace = child_pid, run_id, grace
        self.escalate = escalate
        self.kill_at: float | None = None

    def step(self, now: float) -> float | None:
        """Signal; returns how long until the next step, None once it is done."""
        if self.kill_at is None:
            self.kill_at = self.escalate(self._signal, None, self.grace, now)
            return LEFTOVER_LOOK_S
        if self._found() and now < self.kill_at:
            return LEFTOVER_LOOK_S
        self.escalate(self._signal, self.kill_at, self.grace, self.kill_at)  # the rest is killed
        return None

    def _signal(self, graceful: bool) -> None:
        from .backends.tree import signal_tree

        signal_tree(self.child_pid, graceful, self._found())

    def _found(self) -> list[Any]:
        import psutil

        with suppress(psutil.Error):
            found = [p for p in psutil.Process().children(recursive=True) if self._ours(p)]
            found += [psutil.Process(pid) for pid in platform.job_pids(self.child_pid)]
            return [p for p in found if p.status() != psutil.STATUS_ZOMBIE]
        return []

    def _ours(self, process: Any) -> bool:
        import psutil

        same_session = getattr(os, "getsid", lambda _: None)  # POSIX; Windows has the job
        try:
            return same_session(process.pid) == self.child_pid or (
                process.environ().get("NBRUNNER_RUN_ID") == str(self.run_id)
            )
        except (OSError, psutil.Error):  # gone meanwhile
            return False


def _pump(source: Any, log: CappedLog) -> None:
    """A seam thread's copy of the output into the log (Windows)."""
    read = source.read1 if hasattr(source, "read1") else source.read
    while True:
        try:
            data = read(PUMP_CHUNK)
        except (OSError, ValueError):
            return
        if not data:
            return
        log.write(data)


@contextmanager
def _pinned(cores: list[int]) -> Iterator[None]:
    """This thread pinned to cores while the child starts (the child inherits it), then
    as it was: the loop holds other runs."""
    if not cores:
        yield
        return
    before = platform.usable_cpus()
    platform.pin_this_thread(cores)
    try:
        yield
    finally:
        platform.pin_this_thread(before)


def _start(spec: RecorderSpec) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        spec.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=spec.cwd or None,
        env=spec.env,
        **platform.child_popen_kwargs(),
    )


def record(spec: RecorderSpec, link: ServiceLink) -> int:
    """A recorder of its own (forked or spawned): hold the one run to its end; returns the
    recorder's exit status (3: another recorder has this run)."""
    holder = Holder(link)
    if not holder.hold(spec):
        return 3
    while holder.runs:
        holder.step(None)
    holder.tell_service()  # a run that ended as it was taken (no step came)
    return 0
