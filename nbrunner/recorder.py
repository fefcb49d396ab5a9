"""The recorder: one tiny process per local run that owns its child and writes how it ended.

The home's service forks a recorder for each run it launches (POSIX; Windows spawns
`python -m nbrunner.recorder`). The recorder outlives the service: the service may be
killed at any moment and a later one adopts the run, so everything the recorder learns goes
to small files beside the store, written atomically:

    runs/ID.lock   held for the recorder's whole life: the proof that it is alive
    runs/ID.child  the child's pid and start marker, once it is started
    runs/ID.exit   the exit code (or why the child could not start), once it has ended

Like Slurm's stepd, it does one thing: it starts the child in a session of its own, copies
its output into the run's log under the size cap, waits for the true exit code, then stops
whatever the child left behind (it is the child subreaper of its run on Linux), unless the
module asked to keep it. Limits, timeouts, cancels and the store are the service's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import platform

PUMP_CHUNK = 64 * 1024
LEFTOVER_GRACE_S = 2.0  # what a leftover gets to exit on SIGTERM before SIGKILL
KEPT_LEFTOVER_DRAIN_S = 1.0  # a kept daemon may hold the output pipe open for good
WRITE_RETRY_MAX_S = 5.0


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
    memory_limit: int = 0  # bytes; backs the service's limit with a Windows job's own


@dataclass(frozen=True)
class RunFiles:
    """The files through which a run's recorder speaks to whichever service is alive."""

    directory: Path
    run_id: int

    @classmethod
    def of(cls, home: str | Path, run_id: int) -> RunFiles:
        return cls(Path(home) / "runs", run_id)

    @property
    def lock(self) -> Path:
        return self.directory / f"{self.run_id}.lock"

    @property
    def child(self) -> Path:
        return self.directory / f"{self.run_id}.child"

    @property
    def exit(self) -> Path:
        return self.directory / f"{self.run_id}.exit"

    def read(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def recorder_alive(self) -> bool:
        return platform.is_locked(self.lock)

    def remove(self) -> None:
        for path in (self.child, self.exit, self.lock):
            with suppress(OSError):
                path.unlink()


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


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Readers see the whole file or none of it; retried until written (a full disk frees)."""
    temporary = path.with_name(path.name + ".tmp")
    delay = 0.05
    while True:
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(data, out)
            os.replace(temporary, path)
            return
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, WRITE_RETRY_MAX_S)


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


def stop_leftovers(child_pid: int, grace: float = LEFTOVER_GRACE_S) -> None:
    """Stop what the run's child left behind: its process group, and every descendant of
    this recorder (orphans are re-parented to it as the subreaper on Linux; on Windows they
    are in the run's job object)."""
    import psutil

    from .backends.tree import signal_tree

    def leftovers() -> list[psutil.Process]:
        with suppress(psutil.Error):
            found = psutil.Process().children(recursive=True)
            found += [psutil.Process(pid) for pid in platform.job_pids(child_pid)]
            return [p for p in found if p.status() != psutil.STATUS_ZOMBIE]
        return []

    signal_tree(child_pid, True, leftovers())
    deadline = time.monotonic() + grace
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.05)
    signal_tree(child_pid, False, leftovers())
    _reap_all()


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


def _tell_service(home: str, started: bool) -> None:
    """Wake the service; at the end, start one if none lives (it was killed meanwhile), so
    the exit code is recorded with nothing else alive."""
    from . import service

    if started:
        service.wake(home)
    else:
        service.notify(home)


def record(spec: RecorderSpec) -> int:
    """Run the child to its end and write how it ended; returns the recorder's exit status."""
    files = RunFiles.of(spec.home, spec.run_id)
    lock = platform.try_lock(files.lock)
    if lock is None:
        return 3  # another recorder has this run
    platform.become_subreaper()
    log = CappedLog(spec.log_path, spec.max_log_size)
    _pin(spec.cores)
    try:
        child = _start(spec)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        what = spec.argv[0] if spec.argv else "(empty command)"
        reason = f"could not start {what}: {exc}"
        log.write(f"nbrunner: {reason}\n".encode())
        log.close()
        write_atomically(files.exit, {"exit_code": None, "error": reason, "ended_at": time.time()})
        _tell_service(spec.home, started=False)
        return 0
    platform.contain(child, spec.keep_leftovers, spec.memory_limit)
    started = {"pid": child.pid, "marker": platform.start_marker(child.pid), "at": time.time()}
    write_atomically(files.child, started)
    _tell_service(spec.home, started=True)
    pump = threading.Thread(target=_pump, args=(child.stdout, log), daemon=True)
    pump.start()
    code = child.wait()
    ended_at = time.time()
    if not spec.keep_leftovers and _may_have_leftovers():
        stop_leftovers(child.pid)
    pump.join(KEPT_LEFTOVER_DRAIN_S if spec.keep_leftovers else None)
    log.close()
    write_atomically(
        files.exit, {"exit_code": code, "ended_at": ended_at, "log_dropped": log.dropped}
    )
    _tell_service(spec.home, started=False)
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


def fork_recorder(spec: RecorderSpec) -> int:
    """POSIX: a recorder forked from the warm service (no interpreter to start); its pid.

    The fork leaves the service's session at once, so signals meant for the service's
    group never reach a run's recorder.
    """
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        import gc

        gc.disable()  # collecting would touch, and so copy, the service's shared pages
        os.setsid()
        _close_inherited_files()
        status = record(spec)
    except BaseException:  # a forked child must never return into the service
        with suppress(Exception):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(status)


def spawn_recorder(spec: RecorderSpec) -> int:  # pragma: no cover - Windows path
    """Windows: a recorder started as its own interpreter, handed its spec on stdin."""
    proc = platform.popen_detached(
        [sys.executable, "-m", "nbrunner.recorder"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        creationflags=platform.RECORDER_FLAGS,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(asdict(spec)).encode())
    proc.stdin.close()
    return proc.pid


def start_recorder(spec: RecorderSpec) -> int:
    if platform.IS_WINDOWS:  # pragma: no cover
        return spawn_recorder(spec)
    return fork_recorder(spec)


if __name__ == "__main__":  # pragma: no cover - the Windows recorder
    sys.exit(record(RecorderSpec(**json.load(sys.stdin))))
