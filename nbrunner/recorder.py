"""The recorder: one tiny process per local run that owns its child and writes how it ended.

The home's service forks a recorder for each run it launches (POSIX; Windows spawns
`python -m nbrunner.recording`). The recorder outlives the service: the service may be
killed at any moment and a later one adopts the run, so everything the recorder learns goes
to small files beside the store, written atomically:

    runs/ID.lock   held for the recorder's whole life: the proof that it is alive
    runs/ID.child  the child's pid and start marker, once it is started
    runs/ID.exit   the exit code, CPU time and peak memory (from the OS's own accounts) and
                   why it was stopped (or why the child could not start), once it has ended
    runs/ID.pause  written by the service as it pauses and resumes the run (paused time)

Like Slurm's stepd, it starts the child in a session of its own, copies its output into the
run's log under the size cap (the pump starts before anything that may block), waits for the
true exit code, then stops whatever the child left behind (it is the child subreaper of its
run on Linux), unless the module asked to keep it. It enforces what must hold whatever
happens to the service, where the child is held: the run's timeout (paused time excluded)
and its memory limit. Cancels, pauses, GPU shares and the store are the service's.

A child whose start cannot be recorded (a full disk, a removed or unwritable runs/ folder)
could be neither found nor cancelled: it is stopped at once, and the exit file says why.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from contextlib import nullcontext, suppress
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from . import platform

PUMP_CHUNK = 64 * 1024
LEFTOVER_GRACE_S = 2.0  # what a leftover gets to exit on SIGTERM before SIGKILL
KEPT_LEFTOVER_DRAIN_S = 1.0  # a kept daemon may hold the output pipe open for good
WRITE_RETRY_MAX_S = 5.0
CHILD_FILE_PATIENCE_S = 2.0  # then the child, which no one could find or cancel, is stopped
PAUSED_CHECK_S = 1.0  # how often a paused run's timeout looks whether it was resumed
MEMORY_CHECK_S = 1.0
HOME_CHECK_S = 30.0  # how often a recorder that cannot write its exit file looks for its home
# "spawn": the Windows path (an interpreter per recorder) on POSIX, for tests; "keeper": one
# process per home holds every run (nbrunner.keeper), the model that replaces both.
RECORDER_ENV = "NBRUNNER_RECORDER"
KEEPER_LOCK, KEEPER_INFO, KEEPER_LOG = "keeper.lock", "keeper.json", "keeper.log"
KEEPER_START_S = 30.0  # a keeper just started takes its lock within this


@dataclass(frozen=True)
class RecorderSpec:
    """All a recorder needs, so it never reads the store."""

    home: str
    run_id: int
    argv: list[str]
    cwd: str | None
    env: dict[str, str]
    log_path: str
    max_log_size: int
    keep_leftovers: bool
    cores: list[int]
    memory_limit: int = 0  # bytes; a Windows job's own limit backs the recorder's
    timeout: float | None = None  # seconds of running time (paused time does not count)
    grace: float = 10.0  # SIGTERM, then this long, then SIGKILL

    def as_json(self) -> dict[str, Any]:
        """Its fields as they are (all JSON already): asdict() would deep-copy the env."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, found: dict[str, Any]) -> RecorderSpec:
        """A spec as written by this or a newer nbrunner: fields added since are left out
        (a keeper started before an upgrade holds the newer service's runs too); one this
        version needs and does not find is a TypeError."""
        return cls(**{key: value for key, value in found.items() if key in _SPEC_FIELDS})


_SPEC_FIELDS = frozenset(f.name for f in fields(RecorderSpec))


@dataclass(frozen=True)
class RunFiles:
    """The files through which a run's recorder speaks to whichever service is alive."""

    directory: Path
    run_id: int

    @classmethod
    def of(cls, home: str | Path, run_id: int) -> RunFiles:
        return cls(Path(home) / "runs", run_id)

    # Made once per run (the service looks at its exit file on every pass)
    @cached_property
    def lock(self) -> Path:
        return self.directory / f"{self.run_id}.lock"

    @cached_property
    def child(self) -> Path:
        return self.directory / f"{self.run_id}.child"

    @cached_property
    def exit(self) -> Path:
        return self.directory / f"{self.run_id}.exit"

    @cached_property
    def pause(self) -> Path:
        return self.directory / f"{self.run_id}.pause"

    @cached_property
    def spec(self) -> Path:
        """The run handed to the home's keeper (NBRUNNER_RECORDER=keeper), until it is taken."""
        return self.directory / f"{self.run_id}.spec"

    def read(self, path: Path) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as found:
                return json.loads(found.read())
        except (OSError, ValueError):
            return None

    def recorder_alive(self) -> bool:
        return platform.is_locked(self.lock)

    def remove(self) -> None:
        for path in (self.spec, self.child, self.exit, self.pause, self.lock):
            with suppress(OSError):
                os.unlink(path)


def sweep_run_files(home: str | Path, active: Collection[int]) -> None:
    """Remove the files of runs that are over. `RunFiles.remove` cannot delete a file that
    is still open on Windows (a recorder holds its lock file until it exits), so what it
    left is cleared here, with the temporary files of interrupted writes."""
    for path in (Path(home) / "runs").glob("*"):
        run_id = path.name.split(".", 1)[0]
        if not run_id.isdigit() or int(run_id) in active:
            continue
        if path.suffix == ".lock" and platform.is_locked(path):
            continue  # its recorder is still on its way out
        with suppress(OSError):
            path.unlink()


def write_atomically(path: Path, data: dict[str, Any], patience: float | None = None) -> None:
    """Readers see the whole file or none of it. Retried (a full disk frees, a removed
    folder is made again) for `patience` seconds, then the last OSError is raised; for good
    when patience is None."""
    temporary = path.with_name(path.name + ".tmp")
    deadline = None if patience is None else time.monotonic() + patience
    delay = 0.05
    while True:
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(data))  # one write; json.dump encodes in pure Python
            os.replace(temporary, path)
            return
        except OSError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise
            if isinstance(exc, FileNotFoundError):
                with suppress(OSError):
                    path.parent.mkdir(mode=0o700, exist_ok=True)
            time.sleep(delay)
            delay = min(delay * 2, WRITE_RETRY_MAX_S)


def paused_for(files: RunFiles, now: float) -> tuple[float, bool]:
    """How long (monotonic seconds) the run has been paused in all, and whether it is now."""
    found = files.read(files.pause) or {}
    since = found.get("since")
    total = float(found.get("paused_s") or 0.0)
    return (total + now - float(since), True) if since is not None else (total, False)


def mark_paused(files: RunFiles, paused: bool) -> None:
    """Written by the service as it pauses or resumes the run, so the recorder's timeout
    stops while the run is paused; one try (OSError: the caller tries again later)."""
    now = time.monotonic()
    total, was_paused = paused_for(files, now)
    if was_paused != paused:
        write_atomically(files.pause, {"paused_s": total, "since": now if paused else None}, 0)


def timeout_reason(timeout: float) -> str:
    return f"timed out after {timeout:g} s"


def memory_verdict(rss: int, peak: int, limit: int) -> str | None:
    """Why a run using rss bytes must stop, if it is over its memory limit."""
    if not limit or rss <= limit:
        return None
    from .units import format_size

    return (
        f"used {format_size(rss)} of memory, over its limit of {format_size(limit)} "
        f"(peak {format_size(peak)}); stopped"
    )


class CappedLog:
    """The run's log, kept under `cap` bytes: past it, the head and the newest tail stay.

    The file may grow a quarter past the cap between compactions, so a compaction (read
    the tail, cut the file after the head, write the tail back) is paid once per that
    much output, not per write. A write the disk refuses is counted, never raised.
    """

    NOTE = b"\n[nbrunner: output dropped here; this log keeps its first and last %s]\n"

    def __init__(self, path: str, cap: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.path = path
        self._file = os.fdopen(fd, "ab", buffering=0)
        self.size = self._file.seek(0, os.SEEK_END)
        self.cap = cap
        self.dropped = 0
        self._prefix_end: int | None = None  # head plus the note, once compaction began

    def write(self, data: bytes) -> None:
        left = memoryview(data)
        try:
            while left:  # a nearly full disk takes part of a write, then refuses the rest
                written = self._file.write(left) or 0
                if not written:
                    raise OSError("nothing written")
                self.size += written
                left = left[written:]
        except OSError:
            self.dropped += len(left)
            return
        if self.cap > 0 and self.size > self.cap + self.cap // 4:
            self._compact()

    def _compact(self) -> None:
        from .units import format_size

        keep_tail = self.cap - self.cap // 2
        if self._prefix_end is None:
            note = self.NOTE % format_size(self.cap // 2).encode()
            self._prefix_end = self.cap // 2 + len(note)
            head_note = note
        else:
            head_note = b""
        try:
            with open(self.path, "rb") as reader:
                reader.seek(max(self.size - keep_tail, 0))
                tail = reader.read()
            cut_at = self._prefix_end - len(head_note)
            self.dropped += self.size - cut_at - len(tail)
            self._file.truncate(cut_at)
            self._file.write(head_note + tail)
            self.size = cut_at + len(head_note) + len(tail)
        except OSError:
            pass  # a full disk: the next compaction tries again

    def close(self) -> None:
        if self.cap > 0 and self.size > self.cap:
            self._compact()  # the log ends within its cap, not a quarter past it
        if self.dropped:
            from .units import format_size

            note = (
                f"\n[nbrunner: {format_size(self.dropped)} of output were dropped from this "
                f"log (max_log_size = {format_size(self.cap)})]\n"
            )
            with suppress(OSError):
                self._file.write(note.encode())
        with suppress(OSError):
            self._file.close()


def _pump(source: Any, log: CappedLog) -> None:
    read = source.read1 if hasattr(source, "read1") else source.read
    while True:
        try:
            data = read(PUMP_CHUNK)
        except (OSError, ValueError):
            return
        if not data:
            return
        log.write(data)


def _pin(cores: list[int]) -> None:
    """Pin this process before the child starts: the child and its tree inherit it."""
    if not cores:
        return
    with suppress(OSError, AttributeError, ValueError):
        os.sched_setaffinity(0, cores)  # type: ignore[attr-defined]
        return
    import psutil  # pragma: no cover - no sched_setaffinity (Windows)

    with suppress(psutil.Error, AttributeError, ValueError, OSError):  # pragma: no cover
        psutil.Process().cpu_affinity(cores)


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


def stop_leftovers(
    child_pid: int, grace: float = LEFTOVER_GRACE_S, shared_by: int | None = None
) -> None:
    """Stop what the run's child left behind: its process group, and every descendant of
    this recorder (orphans are re-parented to it as the subreaper on Linux; on Windows they
    are in the run's job object). A holder of many runs (`shared_by` the run's id) stops
    only the descendants of this run: its session, or its NBRUNNER_RUN_ID."""
    import psutil

    from .backends.tree import escalate, signal_tree

    def leftovers() -> list[psutil.Process]:
        with suppress(psutil.Error):
            found = psutil.Process().children(recursive=True)
            if shared_by is not None:
                found = [p for p in found if _of_run(p, child_pid, shared_by)]
            found += [psutil.Process(pid) for pid in platform.job_pids(child_pid)]
            return [p for p in found if p.status() != psutil.STATUS_ZOMBIE]
        return []

    def signal(graceful: bool) -> None:
        signal_tree(child_pid, graceful, leftovers())

    kill_at = escalate(signal, None, grace, time.monotonic())
    while leftovers() and time.monotonic() < kill_at:  # this recorder has nothing else to do
        time.sleep(0.05)
    escalate(signal, kill_at, grace, kill_at)  # whatever is left is killed now
    if shared_by is None:
        _reap_all()  # a shared holder reaps its orphans itself (Children)


def _of_run(process: Any, child_pid: int, run_id: int) -> bool:
    """Whether a descendant of a shared holder belongs to this run."""
    import psutil

    same_session = getattr(os, "getsid", lambda _: None)  # POSIX; Windows has the job
    try:
        return same_session(process.pid) == child_pid or (
            process.environ().get("NBRUNNER_RUN_ID") == str(run_id)
        )
    except (OSError, psutil.Error):  # gone meanwhile
        return False


class Children:
    """A shared holder's direct children that run threads wait for: its reaper of orphans
    takes none of their exit codes (a child is started and listed under the same lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pids: set[int] = set()

    def reap_orphans(self) -> None:
        """Reap exited orphans, one syscall when there are none; a run's own child next in
        line is left to its thread (which reaps it at once), and the rest to a later call."""
        if platform.IS_WINDOWS:  # pragma: no cover - no zombies to reap there
            return
        with self.lock:
            while True:
                try:
                    found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    return
                if found is None or found.si_pid in self.pids:
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
        with self.lock:  # a child just started is listed before anyone looks
            return any(pid not in self.pids for pid in platform.direct_children())


def _may_have_leftovers() -> bool:
    """Whether anything of the run may still live. As the subreaper, a recorder inherits
    every orphan of its run: with no child left at all, nothing was left behind (and the
    scan of the process table is spared). Elsewhere, assume there may be."""
    if not platform.IS_LINUX:
        return True
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    return True


def _reap_all() -> None:
    if platform.IS_WINDOWS:  # pragma: no cover
        return
    with suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


@dataclass(frozen=True)
class ServiceLink:
    """How a recorder reaches its home's service: handed in by the service (its `wake` and
    `notify`), so this module, which the service imports, never imports the service."""

    wake: Callable[[str], None]
    notify: Callable[[str], None]  # starts a service first when none lives

    def tell(self, home: str, started: bool) -> None:
        """Wake the service; at the end, start one if none lives (it was killed meanwhile),
        so the exit code is recorded with nothing else alive. A home that is gone has no
        one to tell."""
        with suppress(OSError, subprocess.SubprocessError):
            (self.wake if started else self.notify)(home)


class Guard:
    """What the recorder enforces itself, where the child is held, so that no stalled,
    killed or busy service can let a run overrun: its timeout (paused time excluded, as the
    service writes it in runs/ID.pause) and its memory limit. A stop is SIGTERM to the tree,
    then SIGKILL after the grace period; how it was meant to end goes to the exit file."""

    def __init__(self, spec: RecorderSpec, files: RunFiles, child_pid: int) -> None:
        self.spec, self.files, self.child_pid = spec, files, child_pid
        self.started = time.monotonic()
        self.next_memory_check = self.started + MEMORY_CHECK_S
        self.ending: dict[str, str] | None = None
        self.kill_at: float | None = None
        self.peak = 0
        self._tree: Any = None

    def wait_s(self) -> float | None:
        """How long the recorder may sleep on its child before the next check; None: for
        good (nothing to enforce: the common case costs no wake-up at all)."""
        now = time.monotonic()
        if self.kill_at is not None:
            wakes = [self.kill_at]
        elif self.ending is not None:
            return None
        else:
            wakes = [self._deadline(now)] if self.spec.timeout is not None else []
            wakes += [self.next_memory_check] if self.spec.memory_limit else []
        return max(min(wakes) - now, 0.0) if wakes else None

    def _deadline(self, now: float) -> float:
        paused_s, paused = paused_for(self.files, now)
        if paused:
            return now + PAUSED_CHECK_S
        return self.started + float(self.spec.timeout or 0) + paused_s

    def check(self) -> None:
        now = time.monotonic()
        if self.kill_at is not None:
            self.kill_at = self._escalate(now)
            return
        if self.spec.timeout is not None and now >= self._deadline(now):
            self._stop("timed_out", timeout_reason(self.spec.timeout))
        elif self.spec.memory_limit and now >= self.next_memory_check:
            self.next_memory_check = now + MEMORY_CHECK_S
            over = self._memory_verdict()
            if over is not None:
                self._stop("failed", over)

    def _memory_verdict(self) -> str | None:
        tree = self._process_tree()
        usage = tree.sample() if tree is not None else None
        if usage is None:
            return None
        self.peak = max(self.peak, usage.rss)
        return memory_verdict(usage.rss, self.peak, self.spec.memory_limit)

    def _stop(self, status: str, reason: str) -> None:
        self.ending = {"status": status, "reason": reason}
        self.kill_at = self._escalate(time.monotonic())

    def _escalate(self, now: float) -> float:
        from .backends.tree import escalate, stop_signal

        signal = stop_signal(self.child_pid, self._members)
        return escalate(signal, self.kill_at, self.spec.grace, now)

    def _members(self) -> list[Any]:
        tree = self._process_tree()
        return tree.members(rescan=True) if tree is not None else []

    def _process_tree(self) -> Any:
        if self._tree is None:
            from .backends.tree import ProcessTree

            self._tree = ProcessTree.of(self.child_pid)
        return self._tree


def _fail(
    spec: RecorderSpec, link: ServiceLink, files: RunFiles, log: CappedLog | None, reason: str
) -> int:
    """The child never started: say why in its log and its exit file."""
    if log is not None:
        log.write(f"nbrunner: {reason}\n".encode())
        log.close()
    record_failure(spec.home, files.run_id, link, reason)
    return 0


def record_failure(home: str, run_id: int, link: ServiceLink, reason: str) -> None:
    """The run ends without its child having run, or without it being held: its exit file
    says why, and the service is told."""
    outcome = {"exit_code": None, "error": reason, "ended_at": time.time()}
    _write_exit(home, RunFiles.of(home, run_id), outcome)
    link.tell(home, started=False)


def _write_exit(home: str, files: RunFiles, outcome: dict[str, Any]) -> None:
    """Retried until written (a full disk frees, a removed runs/ folder is made again),
    unless the home itself is gone: then no one will ever read it."""
    while Path(home).is_dir():
        with suppress(OSError):
            write_atomically(files.exit, outcome, HOME_CHECK_S)
            return


def record(spec: RecorderSpec, link: ServiceLink, shared: Children | None = None) -> int:
    """Run the child to its end and write how it ended; returns the recorder's exit status.
    `shared`: the children of a process that holds many runs (the keeper), one per thread."""
    files = RunFiles.of(spec.home, spec.run_id)
    with suppress(OSError):
        files.directory.mkdir(mode=0o700, exist_ok=True)  # removed under a living service
    fd = platform.take_lock(files.lock)
    if fd is None:
        return 3  # another recorder has this run
    lock = HeldLock(fd)
    try:
        return _hold(spec, link, files, lock, shared)
    finally:
        lock.release()  # a keeper's thread ends, its process lives on


class HeldLock:
    """The run's lock, let go once: early when a kept leftover still writes to the log."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _hold(
    spec: RecorderSpec, link: ServiceLink, files: RunFiles, lock: HeldLock, shared: Children | None
) -> int:
    if shared is None:  # a keeper became the subreaper as it started
        platform.become_subreaper()
    try:
        log = CappedLog(spec.log_path, spec.max_log_size)
    except OSError as exc:
        reason = f"could not open the run's log {spec.log_path}: {exc}"
        return _fail(spec, link, files, None, reason)
    _pin(spec.cores)  # this thread only, in a shared holder: the child inherits it
    try:
        with shared.lock if shared is not None else nullcontext():
            child = _start(spec)
            if shared is not None:
                shared.pids.add(child.pid)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        what = spec.argv[0] if spec.argv else "(empty command)"
        return _fail(spec, link, files, log, f"could not start {what}: {exc}")
    platform.contain(child, spec.keep_leftovers, spec.memory_limit)
    pump = threading.Thread(target=_pump, args=(child.stdout, log), daemon=True)
    pump.start()  # first: a child must never block on a full pipe while we write files
    started = {"pid": child.pid, "marker": platform.start_marker(child.pid), "at": time.time()}
    guard: Guard | None = Guard(spec, files, child.pid)
    error = None
    try:
        write_atomically(files.child, started, CHILD_FILE_PATIENCE_S)
        link.tell(spec.home, started=True)
    except OSError as exc:  # no one could find, cancel or adopt this child: stop it now
        error = f"could not record the run's start in {files.child} ({exc}); it was stopped"
        log.write(f"nbrunner: {error}\n".encode())
        guard = None
        platform.signal_group(child.pid, graceful=False)  # what it left: below
    while (ended := platform.wait_child(child, guard.wait_s() if guard else None)) is None:
        assert guard is not None
        guard.check()
    code, usage = ended
    ended_at = time.time()
    if shared is not None:
        shared.pids.discard(child.pid)
        if not spec.keep_leftovers and shared.may_have_leftovers(child.pid):
            stop_leftovers(child.pid, shared_by=spec.run_id)
    elif not spec.keep_leftovers and _may_have_leftovers():
        stop_leftovers(child.pid)
    pump.join(KEPT_LEFTOVER_DRAIN_S if spec.keep_leftovers else None)
    drained = not pump.is_alive()
    if drained:
        log.close()
    outcome: dict[str, Any] = {
        "exit_code": code, "ended_at": ended_at, "log_dropped": log.dropped, **usage
    }  # fmt: skip
    if error is not None:
        outcome["error"] = error
    elif guard is not None and guard.ending is not None:
        outcome["ending"] = guard.ending
    _write_exit(spec.home, files, outcome)
    link.tell(spec.home, started=False)
    if not drained:  # a kept leftover still writes: it keeps a reader (a closed pipe would
        lock.release()  # kill it with SIGPIPE), and its output keeps going to the log
        pump.join()
        log.close()
    return 0


def _close_inherited_files() -> None:
    """Drop every descriptor the service had open but stdio: above all its lock, which
    would otherwise stay held, for the service, by every recorder alive."""
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd > 2:
            with suppress(OSError):
                os.close(fd)


class ForkedRecorder:
    """A recorder forked by this process: polled (and reaped) by its own pid only, so
    that no one else's exit status (a hook's) is ever taken."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def fork_recorder(spec: RecorderSpec, link: ServiceLink) -> ForkedRecorder:
    """POSIX: a recorder forked from the warm service (no interpreter to start).

    The fork leaves the service's session at once, so signals meant for the service's
    group never reach a run's recorder. The service's objects are frozen for the fork
    (the recorder shares their pages untouched) and thawed after it in the service, so
    its garbage is still collected.
    """
    gc.freeze()
    pid = os.fork()
    if pid:
        gc.unfreeze()
        return ForkedRecorder(pid)
    status = 1
    try:
        gc.disable()  # collecting would touch, and so copy, the service's shared pages
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the service's handler is not ours
        os.setsid()
        _close_inherited_files()
        status = record(spec, link)
    except BaseException:  # a forked child must never return into the service
        with suppress(Exception):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(status)


def spawn_recorder(spec: RecorderSpec) -> subprocess.Popen[bytes]:
    """Windows: a recorder started as its own interpreter, handed its spec on stdin."""
    proc = platform.popen_detached(
        [sys.executable, "-m", "nbrunner.recording"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **platform.recorder_popen_kwargs(),
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec.as_json()).encode())
    proc.stdin.close()
    return proc


class KeeperHandle:
    """The launching service's handle on a run handed to the home's keeper: alive while a
    keeper holds the keeper lock, or, just after one was started, has had no time to."""

    def __init__(self, home: str, started_one: bool, pid: int = 0) -> None:
        self.lock = Path(home) / "runs" / KEEPER_LOCK
        self.born = time.monotonic() if started_one else None
        self.returncode: int | None = None
        self.pid = pid  # 0: not known yet (no pidfd; polled)

    def poll(self) -> int | None:
        if self.returncode is None:
            if platform.is_locked(self.lock):
                self.born = None
                home = str(self.lock.parent.parent)
                self.pid = self.pid or living_keeper(home)
                _keepers_started.pop(home, None)  # it came: the next one may be started
            elif self.born is None or time.monotonic() - self.born > KEEPER_START_S:
                self.returncode = 0
        return self.returncode


def keeper_info(home: str) -> dict[str, Any]:
    """What the home's keeper announced (its pid, start marker and port), or {}."""
    return RunFiles.of(home, 0).read(Path(home) / "runs" / KEEPER_INFO) or {}


def living_keeper(home: str, found: dict[str, Any] | None = None) -> int:
    """The pid of the home's keeper, if the one its info file names lives; else 0."""
    found = keeper_info(home) if found is None else found
    pid = int(found.get("pid") or 0)
    return pid if platform.is_same_process(pid, found.get("marker")) else 0


def wake_keeper(found: dict[str, Any]) -> None:
    """A datagram to the port the keeper announced (`found`): look at runs/ now (a lost one
    costs a pass)."""
    import socket

    with (
        suppress(OSError, ValueError, TypeError, KeyError),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sock.sendto(b"w", ("127.0.0.1", int(found["port"])))


# home → when this process started a keeper that no handle has yet seen holding its lock
_keepers_started: dict[str, float] = {}
# home → keeper.json's identity (inode, mtime, size), what it says, and the pid of the
# keeper it names if that one lived when read: a keeper announces itself once, so while
# the file is the same, so is its keeper.
_keepers_announced: dict[str, tuple[tuple[int, int, int], dict[str, Any], int]] = {}


def _announced_keeper(home: str) -> tuple[dict[str, Any], int]:
    """Where to wake the home's keeper, and its pid (0: not known), read again only when
    its info file changed: a burst of runs is handed over every few milliseconds."""
    try:
        found = os.stat(Path(home) / "runs" / KEEPER_INFO)
    except OSError:
        return {}, 0
    identity = (found.st_ino, found.st_mtime_ns, found.st_size)
    known = _keepers_announced.get(home)
    if known is None or known[0] != identity or not known[2]:
        info = keeper_info(home)
        known = (identity, info, living_keeper(home, info))
        _keepers_announced[home] = known
    return known[1], known[2]


def hand_to_keeper(spec: RecorderSpec) -> KeeperHandle:
    """Write the run's spec, then wake the home's keeper, or start one unless one started
    here is still on its way (it takes every spec it finds). The spec comes first: a keeper
    on its way out looks for specs after letting go of its lock."""
    files = RunFiles.of(spec.home, spec.run_id)
    write_atomically(files.spec, spec.as_json(), CHILD_FILE_PATIENCE_S)
    if platform.is_locked(files.directory / KEEPER_LOCK):
        found, pid = _announced_keeper(spec.home)
        wake_keeper(found)
        return KeeperHandle(spec.home, False, pid)
    started_at = _keepers_started.get(spec.home)
    if started_at is None or time.monotonic() - started_at >= KEEPER_START_S:
        argv = [sys.executable, "-m", "nbrunner.keeper", spec.home]
        platform.spawn_detached(argv, str(files.directory / KEEPER_LOG))
        _keepers_started[spec.home] = time.monotonic()
    return KeeperHandle(spec.home, started_one=True)


def start_recorder(
    spec: RecorderSpec, link: ServiceLink
) -> ForkedRecorder | subprocess.Popen[bytes] | KeeperHandle:
    """Hand the run to the home's keeper (POSIX), or start a recorder of its own: an
    interpreter on Windows until its CI job has run the keeper; `NBRUNNER_RECORDER=fork` or
    `spawn` for the designs the bench compares. A handle to poll whether it has ended; a
    spawned recorder and the keeper make their own link (nbrunner.recording, .keeper)."""
    chosen = os.environ.get(RECORDER_ENV) or ("spawn" if platform.IS_WINDOWS else "keeper")
    if chosen == "spawn" or (chosen == "fork" and platform.IS_WINDOWS):
        return spawn_recorder(spec)
    if chosen == "fork":
        return fork_recorder(spec, link)
    return hand_to_keeper(spec)
